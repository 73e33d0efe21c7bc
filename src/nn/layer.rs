//! The layers a [`Network`](crate::nn::Network) is stacked from, each keeping its parameters
//! and configuration together, with forward and backward passes into caller-owned buffers.
//!
//! # Tensor layout
//!
//! A batch is an `n × d` row-major array, one example per row. An image or feature map of
//! `height × width × channels` is stored in each row *channels last* (HWC): the value at
//! `(i, j, c)` is at column `(i·width + j)·channels + c`. A single-channel image such as an
//! MNIST digit is therefore the usual row-major flat image, and the crate's trait contract
//! (inputs are flat rows) holds unchanged. Channels-last makes a convolution one matrix
//! product: each output position is a row of the unfolded input (im2col), the kernel a
//! `(kernel·kernel·in_channels) × out_channels` matrix, and the product's `(position,
//! channel)` layout is again HWC, so no transposition is ever needed.

use std::sync::OnceLock;

use ndarray::linalg::general_mat_mul;
use ndarray::{s, Array2, ArrayView1, ArrayView2, ArrayViewMut2, Axis, CowArray, Ix4, Order, Zip};

use crate::nn::{gemm, kernels, Activation, InputAffine};

/// Largest im2col buffer of a convolution, in values: 2²⁴ (64 MiB of f32). A batch whose
/// unfolded input is larger runs in chunks of rows, so a large padded kernel on many rows
/// costs time, not gigabytes; real networks (the MNIST convnet: about 5 MB per 256 rows) fit
/// in one chunk (the MNIST convnet at its training batch of 64 needs 20 MB) and run as before. The unfolded gradient is bounded the same way.
pub(crate) const IM2COL_MAX_VALUES: usize = 1 << 24;

/// Longest window row (`k·C` values) of a convolution whose attack passes run the direct
/// kernels ([`gemm::conv_direct`], and for the input gradient
/// [`gemm::conv_direct_input_grad`]): the MNIST convnet's first layer (5) and a 5×5 RGB one
/// (15). Longer rows (its second layer's 80) go through [`gemm::conv_sparse`] or the dense
/// product, and through the row kernel for the input gradient.
const DIRECT_MAX_RUN: usize = 16;

/// A fully connected layer `y = x·W + b` with `W` of shape `in × out` and `b` a `1 × out` row.
#[derive(Debug, Clone, PartialEq)]
pub struct Dense {
    /// Weights, `in × out`.
    pub(crate) weight: Array2<f32>,
    /// Bias, `1 × out`.
    pub(crate) bias: Array2<f32>,
}

/// A 2-D convolution (cross-correlation, as PyTorch computes it) over channels-last maps:
/// `y[i, j, d] = b[d] + Σ_{a, b, c} x[i·s + a − p, j·s + b − p, c] · K[(a·k + b)·C + c, d]`,
/// with zero padding `p` (inputs outside the image are 0) and stride `s`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    /// Kernel as a `(k·k·C) × D` matrix, rows ordered `(a, b, c)`.
    pub(crate) weight: Array2<f32>,
    /// Bias, `1 × D`.
    pub(crate) bias: Array2<f32>,
    /// Input `(height, width, channels)`.
    pub(crate) input: (usize, usize, usize),
    /// Kernel size `k`.
    pub(crate) kernel: usize,
    /// Stride `s`.
    pub(crate) stride: usize,
    /// Zero padding `p`.
    pub(crate) padding: usize,
    /// Output `(height, width)`.
    pub(crate) output: (usize, usize),
    /// The kernel transposed, `D × (k·k·C)` row-major, for the input gradient: made on first
    /// use and dropped by [`Layer::params_mut`], the one way to change the weight in place.
    /// Transposing it at every evaluation was 8% of an attack's evaluation of the MNIST
    /// convnet (17 µs of 212, by `perf`).
    pub(crate) transposed: OnceLock<Vec<f32>>,
}

impl PartialEq for Conv2d {
    /// Equal parameters and geometry (the cached transpose is derived from the weight).
    fn eq(&self, other: &Self) -> bool {
        self.weight == other.weight
            && self.bias == other.bias
            && self.input == other.input
            && self.kernel == other.kernel
            && self.stride == other.stride
            && self.padding == other.padding
            && self.output == other.output
    }
}

/// Max-pooling over `size × size` windows with stride `size` (a window that would stick out
/// of the map is dropped, as PyTorch's default does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool2d {
    /// Input `(height, width, channels)`.
    pub(crate) input: (usize, usize, usize),
    /// Window size and stride.
    pub(crate) size: usize,
}

/// One layer of a network.
#[derive(Debug, Clone, PartialEq)]
pub enum Layer {
    /// Fully connected.
    Dense(Dense),
    /// 2-D convolution.
    Conv2d(Conv2d),
    /// Max-pooling.
    MaxPool2d(MaxPool2d),
    /// Element-wise activation (computed in place on the previous layer's output).
    Activation(Activation),
    /// Fixed per-channel input normalisation (only ever the first layer).
    Affine(InputAffine),
}

/// Per-layer buffers kept between the forward and the backward pass.
#[derive(Debug, Clone, Default)]
pub(crate) struct LayerScratch {
    /// A convolution's unfolded input (im2col): one chunk of rows of the
    /// `(n·positions) × (k·k·C)` matrix, at most [`IM2COL_MAX_VALUES`] values (or one row).
    cols: Vec<f32>,
    /// Whether `cols` holds the whole batch's unfolded input from the last forward pass, so
    /// the backward pass need not unfold it again.
    cols_whole: bool,
    /// One input or gradient row copied out of a non-contiguous view.
    row: Vec<f32>,
    /// A convolution's unfolded input gradient (one chunk, as `cols`).
    dcols: Vec<f32>,
    /// A pooling layer's argmax: for each output value, the column of the input it came from.
    argmax: Vec<u32>,
    /// A convolution's nonzero inputs, for the attack's sparse pass.
    sparse: gemm::SparseRows,
}

impl Dense {
    /// Input width.
    pub fn inputs(&self) -> usize {
        self.weight.nrows()
    }

    /// Output width.
    pub fn outputs(&self) -> usize {
        self.weight.ncols()
    }

    /// The weights, `in × out`.
    pub fn weight(&self) -> ArrayView2<'_, f32> {
        self.weight.view()
    }

    /// The bias, `1 × out`.
    pub fn bias(&self) -> ArrayView2<'_, f32> {
        self.bias.view()
    }

    fn forward(
        &self,
        x: ArrayView2<'_, f32>,
        mut y: ArrayViewMut2<'_, f32>,
        tmp: &mut Vec<f32>,
        single: bool,
    ) {
        y.assign(&self.bias);
        if single {
            self.forward_rows(x, y, tmp);
            return;
        }
        general_mat_mul(1.0, &x, &self.weight, 1.0, &mut y);
    }

    /// The attack path's forward pass: the one-row vector kernel applied to every row, so
    /// that a row's output does not depend on the batch around it (a matrix product rounds
    /// differently and by blocks of rows). `y` holds the bias.
    fn forward_rows(
        &self,
        x: ArrayView2<'_, f32>,
        mut y: ArrayViewMut2<'_, f32>,
        tmp: &mut Vec<f32>,
    ) {
        let width = self.outputs();
        let Some(w) = self.weight.as_slice() else {
            // Weights replaced through `params_mut` by a non-standard array: a product per
            // row still keeps rows apart.
            for (xr, mut yr) in x
                .axis_chunks_iter(Axis(0), 1)
                .zip(y.axis_chunks_iter_mut(Axis(0), 1))
            {
                general_mat_mul(1.0, &xr, &self.weight, 1.0, &mut yr);
            }
            return;
        };
        if let (Some(xs), Some(ys)) = (x.as_slice(), y.as_slice_mut()) {
            kernels::vecmat_acc_rows(xs, x.ncols(), w, width, ys);
            return;
        }
        // A caller's input that is not row-major: each row copied out (the layer outputs it
        // writes are always contiguous workspace rows).
        for (r, mut yr) in y.rows_mut().into_iter().enumerate() {
            let xs = contiguous(x.row(r), tmp);
            match yr.as_slice_mut() {
                Some(o) => kernels::vecmat_acc(xs, w, width, o),
                None => {
                    let mut o = yr.to_vec();
                    kernels::vecmat_acc(xs, w, width, &mut o);
                    yr.iter_mut().zip(&o).for_each(|(d, &v)| *d = v);
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        x: ArrayView2<'_, f32>,
        dy: ArrayView2<'_, f32>,
        dx: Option<ArrayViewMut2<'_, f32>>,
        grads: Option<&mut [Array2<f32>]>,
        tmp: &mut Vec<f32>,
        single: bool,
        skip_zero: bool,
    ) {
        if let Some(g) = grads {
            general_mat_mul(1.0, &x.t(), &dy, 1.0, &mut g[0]);
            add_column_sums(dy, &mut g[1]);
        }
        if let Some(mut dx) = dx {
            if single {
                self.backward_rows(x, dy, dx, tmp, skip_zero);
                return;
            }
            general_mat_mul(1.0, &dy, &self.weight.t(), 0.0, &mut dx);
        }
    }

    /// The attack path's input gradient, each row as the one-row kernel computes it (see
    /// [`Dense::forward_rows`]).
    ///
    /// With `skip_zero` (the layer's input comes from a ReLU: see `Layer::backward`), the
    /// gradient of each input that is zero is left zero instead of computed. Behind the MNIST
    /// convnet's second ReLU and max-pooling about 79% of the first dense layer's 1,568
    /// inputs are zero, and each skipped input saves reading a 128-value weight row.
    fn backward_rows(
        &self,
        x: ArrayView2<'_, f32>,
        dy: ArrayView2<'_, f32>,
        mut dx: ArrayViewMut2<'_, f32>,
        tmp: &mut Vec<f32>,
        skip_zero: bool,
    ) {
        let (width, len) = (self.outputs(), self.inputs());
        let Some(w) = self.weight.as_slice() else {
            for (dr, mut xr) in dy
                .axis_chunks_iter(Axis(0), 1)
                .zip(dx.axis_chunks_iter_mut(Axis(0), 1))
            {
                general_mat_mul(1.0, &dr, &self.weight.t(), 0.0, &mut xr);
            }
            return;
        };
        if skip_zero {
            if let (Some(d), Some(o), Some(xs)) = (dy.as_slice(), dx.as_slice_mut(), x.as_slice()) {
                for ((dr, or), xr) in d
                    .chunks_exact(width)
                    .zip(o.chunks_exact_mut(len))
                    .zip(xs.chunks_exact(len))
                {
                    kernels::matvec_where_nonzero(w, width, dr, xr, or);
                }
                return;
            }
        }
        if let (Some(d), Some(o)) = (dy.as_slice(), dx.as_slice_mut()) {
            kernels::matvec_rows(w, width, d, len, o);
            return;
        }
        // The input gradient of the first layer is the caller's buffer, which may have any
        // layout; the deltas are workspace rows.
        let mut row = vec![0.0; len];
        for (r, mut xr) in dx.rows_mut().into_iter().enumerate() {
            let d = contiguous(dy.row(r), tmp);
            kernels::matvec(w, width, d, &mut row);
            xr.iter_mut().zip(&row).for_each(|(o, &v)| *o = v);
        }
    }
}

/// Adds the column sums of `d` (`n × k`) into the `1 × k` bias gradient, row by row (the
/// order every model has always summed in, so results stay bit-identical).
fn add_column_sums(d: ArrayView2<'_, f32>, g: &mut Array2<f32>) {
    let mut gb = g.row_mut(0);
    for row in d.axis_iter(Axis(0)) {
        gb += &row;
    }
}

impl Conv2d {
    /// Input `(height, width, channels)`.
    pub fn input_shape(&self) -> (usize, usize, usize) {
        self.input
    }

    /// Output `(height, width, channels)`.
    pub fn output_shape(&self) -> (usize, usize, usize) {
        (self.output.0, self.output.1, self.weight.ncols())
    }

    /// Kernel size, stride and padding.
    pub fn geometry(&self) -> (usize, usize, usize) {
        (self.kernel, self.stride, self.padding)
    }

    /// The kernel as a `(k·k·C) × D` matrix, rows ordered `(row, column, input channel)`.
    pub fn weight(&self) -> ArrayView2<'_, f32> {
        self.weight.view()
    }

    /// The kernel as a `(k, k, C, D)` array (kernel row, kernel column, input channel, output
    /// channel): [`weight`](Self::weight) with its rows split into `(row, column, input
    /// channel)`, the layout [`spectral::conv`](crate::spectral::conv) takes. A view of the
    /// layer's own storage (a copy only if that storage is not in standard order).
    ///
    /// # Errors
    ///
    /// [`Error::Shape`](crate::Error::Shape) if the weight no longer has `k·k·C` rows (it was
    /// replaced through [`Trainable::params_mut`](crate::nn::Trainable::params_mut)).
    pub fn kernel(&self) -> crate::Result<CowArray<'_, f32, Ix4>> {
        let (k, c, d) = (self.kernel, self.input.2, self.weight.ncols());
        if self.weight.nrows() != k * k * c {
            return Err(crate::Error::shape(
                "convolution weight",
                format!("{} × {d} (k·k·C × D)", k * k * c),
                format!("{:?}", self.weight.dim()),
            ));
        }
        self.weight
            .to_shape(((k, k, c, d), Order::RowMajor))
            .map_err(|_| crate::Error::Internal {
                what: "a k·k·C × D weight splits into (k, k, C, D)",
            })
    }

    /// The bias, `1 × D`.
    pub fn bias(&self) -> ArrayView2<'_, f32> {
        self.bias.view()
    }

    /// The geometry the direct kernels take.
    fn shape(&self) -> gemm::ConvShape {
        gemm::ConvShape {
            input: self.input,
            kernel: self.kernel,
            stride: self.stride,
            padding: self.padding,
            output: self.output,
            channels: self.weight.ncols(),
        }
    }

    pub(crate) fn positions(&self) -> usize {
        self.output.0 * self.output.1
    }

    pub(crate) fn patch(&self) -> usize {
        self.kernel * self.kernel * self.input.2
    }

    /// Rows of the unfolded input (one per example and output position) per chunk, for a
    /// buffer of at most `cap` values: at least one row, so a single patch larger than `cap`
    /// (never larger than the kernel itself, which has `patch × D` values) still runs.
    fn chunk_rows(&self, cap: usize) -> usize {
        (cap / self.patch().max(1)).max(1)
    }

    /// Unfolds rows `r0..r1` of the whole batch's im2col matrix (`(n·positions) × patch`)
    /// into `cols`: row `(e, i, j)` holds the padded input window of output position `(i, j)`
    /// of example `e`, in `(a, b, c)` order. Within one kernel row `a` the window is a
    /// contiguous run of the input row, so it is copied as one slice (with zeros where it
    /// leaves the image). A row of `x` that is not contiguous (a Fortran-order array, a
    /// column-strided view) is first copied into `tmp`.
    fn im2col(
        &self,
        x: ArrayView2<'_, f32>,
        (r0, r1): (usize, usize),
        cols: &mut [f32],
        tmp: &mut Vec<f32>,
    ) {
        let positions = self.positions();
        let mut rows = cols.chunks_exact_mut(self.patch());
        let mut r = r0;
        while r < r1 {
            let (e, p0) = (r / positions, r % positions);
            let p1 = positions.min(p0 + (r1 - r));
            let xe = contiguous(x.row(e), tmp);
            for pos in p0..p1 {
                let row = rows.next().expect("cols sized for r1 - r0 rows");
                self.unfold(xe, pos, row);
            }
            r += p1 - p0;
        }
    }

    /// The window of output position `pos` of one example `xe` into `row`.
    fn unfold(&self, xe: &[f32], pos: usize, row: &mut [f32]) {
        let (h, w, c) = self.input;
        let (k, st, p) = (self.kernel, self.stride, self.padding as isize);
        let wo = self.output.1;
        let (i, j) = (pos / wo, pos % wo);
        let j0 = (j * st) as isize - p;
        for a in 0..k {
            let ii = (i * st) as isize - p + a as isize;
            let dst = &mut row[a * k * c..(a + 1) * k * c];
            if ii < 0 || ii >= h as isize {
                dst.fill(0.0);
                continue;
            }
            let lo = j0.max(0);
            let hi = (j0 + k as isize).min(w as isize);
            // Architecture keeps padding below the kernel, so the skip is within the window;
            // clamped all the same, since slicing past it would panic.
            let skip = (((lo - j0) as usize) * c).min(dst.len());
            let len = ((hi - lo).max(0) as usize) * c;
            // Guarded: most windows lie inside the image, and an empty `fill` still costs a
            // call to `memset`.
            if skip > 0 {
                dst[..skip].fill(0.0);
            }
            if len > 0 {
                let start = (ii as usize * w + lo as usize) * c;
                dst[skip..skip + len].copy_from_slice(&xe[start..start + len]);
            }
            if skip + len < dst.len() {
                dst[skip + len..].fill(0.0);
            }
        }
    }

    /// Adds the unfolded gradient of rows `r0..r1` (`dcols`) into `dx` (the adjoint of
    /// [`Self::im2col`]); `dx` must have been zeroed before the first chunk. A row of `dx`
    /// that is not contiguous is accumulated in `tmp` and written back.
    fn col2im(
        &self,
        dcols: &[f32],
        (r0, r1): (usize, usize),
        dx: &mut ArrayViewMut2<'_, f32>,
        tmp: &mut Vec<f32>,
    ) {
        let positions = self.positions();
        let mut rows = dcols.chunks_exact(self.patch());
        let mut r = r0;
        while r < r1 {
            let (e, p0) = (r / positions, r % positions);
            let p1 = positions.min(p0 + (r1 - r));
            let mut de = dx.row_mut(e);
            let strided = de.as_slice_mut().is_none();
            if strided {
                tmp.clear();
                tmp.extend(de.iter());
            }
            let target: &mut [f32] = match de.as_slice_mut() {
                Some(s) => s,
                None => tmp,
            };
            for pos in p0..p1 {
                let row = rows.next().expect("dcols sized for r1 - r0 rows");
                self.fold(row, pos, target);
            }
            if strided {
                de.iter_mut().zip(tmp.iter()).for_each(|(d, &t)| *d = t);
            }
            r += p1 - p0;
        }
    }

    /// Adds the window gradient `row` of output position `pos` into one example's `de`.
    fn fold(&self, row: &[f32], pos: usize, de: &mut [f32]) {
        let (h, w, c) = self.input;
        let (k, st, p) = (self.kernel, self.stride, self.padding as isize);
        let wo = self.output.1;
        let (i, j) = (pos / wo, pos % wo);
        let j0 = (j * st) as isize - p;
        for a in 0..k {
            let ii = (i * st) as isize - p + a as isize;
            if ii < 0 || ii >= h as isize {
                continue;
            }
            let lo = j0.max(0);
            let hi = (j0 + k as isize).min(w as isize);
            if hi <= lo {
                continue;
            }
            let skip = ((lo - j0) as usize) * c;
            let len = ((hi - lo) as usize) * c;
            let start = (ii as usize * w + lo as usize) * c;
            let src = &row[a * k * c + skip..a * k * c + skip + len];
            for (d, &s) in de[start..start + len].iter_mut().zip(src) {
                *d += s;
            }
        }
    }

    /// The im2col buffer's size for a pass. Training unfolds the whole batch at once (up to
    /// [`IM2COL_MAX_VALUES`]). The attack path (`single`) unfolds one image at a time, so that
    /// its unfolded input (313 KB for the MNIST convnet's second layer) stays in cache: 20
    /// images unfolded together (6 MB) made a batched attack 1.12× slower per image than one
    /// image at a time (results/lockstep). Each row's products are the same either way (tests/lockstep.rs).
    fn im2col_cap(&self, single: bool) -> usize {
        if single {
            (self.positions() * self.patch()).clamp(1, IM2COL_MAX_VALUES)
        } else {
            IM2COL_MAX_VALUES
        }
    }

    /// `y = im2col(x)·K + b`, in chunks of at most `cap` unfolded values. When one chunk
    /// holds the whole batch, its unfolded input stays in `sc` for the backward pass.
    fn forward(
        &self,
        x: ArrayView2<'_, f32>,
        y: ArrayViewMut2<'_, f32>,
        sc: &mut LayerScratch,
        cap: usize,
    ) {
        let rows = x.nrows() * self.positions();
        let patch = self.patch();
        let step = self.chunk_rows(cap).min(rows);
        sc.cols.resize(step * patch, 0.0);
        let mut y = as_positions(y, rows, self.weight.ncols());
        y.assign(&self.bias);
        for r0 in (0..rows).step_by(step.max(1)) {
            let r1 = (r0 + step).min(rows);
            let len = (r1 - r0) * patch;
            self.im2col(x, (r0, r1), &mut sc.cols[..len], &mut sc.row);
            let cols = ArrayView2::from_shape((r1 - r0, patch), &sc.cols[..len])
                .expect("cols sized above");
            gemm::matmul(cols, self.weight.view(), y.slice_mut(s![r0..r1, ..]), true);
        }
        sc.cols_whole = step == rows;
    }

    /// [`Self::forward`] for the attack's passes, one example at a time, straight from the
    /// image with the im2col product's values: short window rows by [`gemm::conv_direct`],
    /// longer ones by [`gemm::conv_sparse`] (the MNIST convnet's second layer, whose input is
    /// three quarters zero behind a ReLU and pooling); through im2col where neither applies.
    fn forward_direct(
        &self,
        x: ArrayView2<'_, f32>,
        mut y: ArrayViewMut2<'_, f32>,
        sc: &mut LayerScratch,
    ) {
        let shape = self.shape();
        let per = self.positions() * shape.channels;
        let narrow = self.kernel * self.input.2 <= DIRECT_MAX_RUN;
        let (Some(w), Some(b), true) = (
            self.weight.as_slice(),
            self.bias.as_slice(),
            y.is_standard_layout(),
        ) else {
            return self.forward(x, y, sc, self.im2col_cap(true));
        };
        for e in 0..x.nrows() {
            let done = {
                let ye = &mut y.as_slice_mut().unwrap_or_default()[e * per..(e + 1) * per];
                let xe = contiguous(x.row(e), &mut sc.row);
                if narrow {
                    gemm::conv_direct(&shape, xe, w, b, ye)
                } else {
                    gemm::conv_sparse(&shape, xe, w, b, ye, &mut sc.sparse)
                }
            };
            if !done {
                let ye = y.slice_mut(s![e..e + 1, ..]);
                self.forward(x.slice(s![e..e + 1, ..]), ye, sc, self.im2col_cap(true));
            }
        }
        sc.cols_whole = false;
    }

    /// Gradients of the kernel and bias (into `grads`) and of the input (into `dx`), in the
    /// forward pass's chunks: the unfolded input is the one kept from the forward pass when
    /// it held the whole batch, else unfolded again chunk by chunk from `x`.
    fn backward(
        &self,
        x: ArrayView2<'_, f32>,
        dy: ArrayView2<'_, f32>,
        dx: Option<ArrayViewMut2<'_, f32>>,
        grads: Option<&mut [Array2<f32>]>,
        sc: &mut LayerScratch,
        cap: usize,
    ) {
        let rows = dy.nrows() * self.positions();
        let patch = self.patch();
        let d = self.weight.ncols();
        let step = self.chunk_rows(cap).min(rows).max(1);
        let dy = dy
            .into_shape_with_order((rows, d))
            .expect("layer outputs are contiguous rows");
        if let Some(g) = grads {
            let reuse = sc.cols_whole && step == rows && sc.cols.len() >= rows * patch;
            if !reuse {
                sc.cols.resize(step * patch, 0.0);
            }
            for r0 in (0..rows).step_by(step) {
                let r1 = (r0 + step).min(rows);
                let len = (r1 - r0) * patch;
                if !reuse {
                    self.im2col(x, (r0, r1), &mut sc.cols[..len], &mut sc.row);
                }
                let cols = ArrayView2::from_shape((r1 - r0, patch), &sc.cols[..len])
                    .expect("cols sized above");
                gemm::matmul_tn_acc(cols, dy.slice(s![r0..r1, ..]), g[0].view_mut());
            }
            add_column_sums(dy, &mut g[1]);
        }
        if let Some(mut dx) = dx {
            dx.fill(0.0);
            match dy.as_slice() {
                Some(dys) => self.input_grad_sparse(dys, &mut dx, sc),
                None => {
                    sc.dcols.resize(step * patch, 0.0);
                    let wt = ArrayView2::from_shape((d, patch), self.transposed())
                        .expect("wt is d × patch");
                    for r0 in (0..rows).step_by(step) {
                        let r1 = (r0 + step).min(rows);
                        let len = (r1 - r0) * patch;
                        let dcols =
                            ArrayViewMut2::from_shape((r1 - r0, patch), &mut sc.dcols[..len])
                                .expect("dcols sized above");
                        gemm::matmul(dy.slice(s![r0..r1, ..]), wt, dcols, false);
                        self.col2im(&sc.dcols[..len], (r0, r1), &mut dx, &mut sc.row);
                    }
                }
            }
        }
    }

    /// The kernel transposed, `D × (k·k·C)` row-major (contiguous, so the input gradient's
    /// product streams it in order), made on first use.
    fn transposed(&self) -> &[f32] {
        self.transposed
            .get_or_init(|| self.weight.t().iter().copied().collect())
    }

    /// The input gradient from a row-major `dy` (`(n·positions) × D`), one output position at
    /// a time, skipping the channels whose gradient is zero and the positions where all are.
    ///
    /// Behind a max-pooling layer and a ReLU most of `dy` is zero (pooling routes each
    /// output's gradient to one of four positions), so this does about a quarter of the dense
    /// product's multiply-adds. With the cached transpose, it took the zoo convnet's loss and
    /// input gradient from about 249 to 171 µs per image, and a training step of 64 images
    /// (criterion `mlp`) from 23.9 to 19.0 ms. Each unfolded value is still the sum over
    /// channels in order from zero, with the same fused multiply-adds as [`gemm::matmul`] (a skipped term would only
    /// have added a zero), and positions are folded in the same order, so `dx` has the dense
    /// path's bits.
    fn input_grad_sparse(
        &self,
        dy: &[f32],
        dx: &mut ArrayViewMut2<'_, f32>,
        sc: &mut LayerScratch,
    ) {
        let positions = self.positions();
        let patch = self.patch();
        let d = self.weight.ncols();
        let wt = self.transposed();
        let shape = self.shape();
        let narrow = self.kernel * self.input.2 <= DIRECT_MAX_RUN;
        sc.dcols.resize(patch, 0.0);
        for (e, dye) in dy.chunks_exact(positions * d).enumerate() {
            let mut de = dx.row_mut(e);
            let strided = de.as_slice_mut().is_none();
            if strided {
                sc.row.clear();
                sc.row.extend(de.iter());
            }
            let target: &mut [f32] = match de.as_slice_mut() {
                Some(s) => s,
                None => &mut sc.row,
            };
            let direct = if narrow {
                gemm::conv_direct_input_grad(&shape, dye, wt, target)
            } else {
                gemm::conv_wide_input_grad(&shape, dye, wt, target)
            };
            for (pos, dyr) in dye.chunks_exact(d).enumerate().filter(|_| !direct) {
                if dyr.iter().all(|&v| v == 0.0) {
                    continue;
                }
                sc.dcols.fill(0.0);
                kernels::vecmat_acc(dyr, wt, patch, &mut sc.dcols);
                self.fold(&sc.dcols, pos, target);
            }
            if strided {
                de.iter_mut().zip(sc.row.iter()).for_each(|(d, &t)| *d = t);
            }
        }
    }
}

/// `row` as a slice: itself if contiguous, else a copy in `tmp`.
fn contiguous<'a>(row: ArrayView1<'a, f32>, tmp: &'a mut Vec<f32>) -> &'a [f32] {
    match row.to_slice() {
        Some(s) => s,
        None => {
            tmp.clear();
            tmp.extend(row.iter());
            tmp
        }
    }
}

/// Views an `n × (positions·channels)` block of contiguous rows as `(n·positions) × channels`.
fn as_positions(y: ArrayViewMut2<'_, f32>, rows: usize, channels: usize) -> ArrayViewMut2<'_, f32> {
    y.into_shape_with_order((rows, channels))
        .expect("layer outputs are contiguous rows")
}

impl MaxPool2d {
    /// Input `(height, width, channels)`.
    pub fn input_shape(&self) -> (usize, usize, usize) {
        self.input
    }

    /// Output `(height, width, channels)`.
    pub fn output_shape(&self) -> (usize, usize, usize) {
        let (h, w, c) = self.input;
        (h / self.size, w / self.size, c)
    }

    /// Window size (and stride).
    pub fn size(&self) -> usize {
        self.size
    }

    fn forward(
        &self,
        x: ArrayView2<'_, f32>,
        mut y: ArrayViewMut2<'_, f32>,
        sc: &mut LayerScratch,
    ) {
        let c = self.input.2;
        let (ho, wo, _) = self.output_shape();
        let q = self.size;
        let per = ho * wo * c;
        sc.argmax.resize(x.nrows() * per, 0);
        for ((xe, mut ye), arg) in x
            .axis_iter(Axis(0))
            .zip(y.axis_iter_mut(Axis(0)))
            .zip(sc.argmax.chunks_exact_mut(per))
        {
            let xe = xe.as_slice().expect("layer outputs are contiguous rows");
            let ye = ye
                .as_slice_mut()
                .expect("layer outputs are contiguous rows");
            kernels::max_pool(xe, self.input, q, ye, arg);
        }
    }

    fn backward(&self, dy: ArrayView2<'_, f32>, dx: ArrayViewMut2<'_, f32>, sc: &LayerScratch) {
        let per = dy.ncols();
        let mut dx = dx;
        dx.fill(0.0);
        for ((de, mut dxe), arg) in dy
            .axis_iter(Axis(0))
            .zip(dx.axis_iter_mut(Axis(0)))
            .zip(sc.argmax.chunks_exact(per))
        {
            match (de.as_slice(), dxe.as_slice_mut()) {
                // Plain slices in the attack's one-image passes: ndarray's indexing checked
                // every scattered add.
                (Some(de), Some(dxe)) => {
                    for (&g, &a) in de.iter().zip(arg) {
                        if let Some(d) = dxe.get_mut(a as usize) {
                            *d += g;
                        }
                    }
                }
                _ => {
                    for (&g, &a) in de.iter().zip(arg) {
                        dxe[a as usize] += g;
                    }
                }
            }
        }
    }
}

impl Layer {
    /// Width of one example's input.
    pub fn input_dim(&self, prev: usize) -> usize {
        match self {
            Layer::Dense(d) => d.inputs(),
            Layer::Conv2d(c) => c.input.0 * c.input.1 * c.input.2,
            Layer::MaxPool2d(p) => p.input.0 * p.input.1 * p.input.2,
            Layer::Affine(a) => a.width(),
            Layer::Activation(_) => prev,
        }
    }

    /// Width of one example's output, given the input width (which only an activation needs).
    pub fn output_dim(&self, input: usize) -> usize {
        match self {
            Layer::Dense(d) => d.outputs(),
            Layer::Conv2d(c) => c.positions() * c.weight.ncols(),
            Layer::MaxPool2d(p) => {
                let (h, w, c) = p.output_shape();
                h * w * c
            }
            Layer::Affine(a) => a.width(),
            Layer::Activation(_) => input,
        }
    }

    /// The layer's parameters (weight then bias), empty for parameter-free layers.
    pub fn params(&self) -> Vec<&Array2<f32>> {
        match self {
            Layer::Dense(Dense { weight, bias }) | Layer::Conv2d(Conv2d { weight, bias, .. }) => {
                vec![weight, bias]
            }
            _ => Vec::new(),
        }
    }

    pub(crate) fn params_mut(&mut self) -> Vec<&mut Array2<f32>> {
        match self {
            Layer::Dense(Dense { weight, bias }) => vec![weight, bias],
            Layer::Conv2d(Conv2d {
                weight,
                bias,
                transposed,
                ..
            }) => {
                // The caller may change the weight: the transpose is made again when needed.
                transposed.take();
                vec![weight, bias]
            }
            _ => Vec::new(),
        }
    }

    /// Number of parameter arrays (2 for dense and convolution layers, else 0).
    pub fn num_params(&self) -> usize {
        match self {
            Layer::Dense(_) | Layer::Conv2d(_) => 2,
            _ => 0,
        }
    }

    /// Forward pass into `y` (not for activations, which run in place).
    pub(crate) fn forward(
        &self,
        x: ArrayView2<'_, f32>,
        y: ArrayViewMut2<'_, f32>,
        sc: &mut LayerScratch,
        single: bool,
    ) {
        match self {
            Layer::Dense(d) => d.forward(x, y, &mut sc.row, single),
            Layer::Conv2d(c) if single => c.forward_direct(x, y, sc),
            Layer::Conv2d(c) => c.forward(x, y, sc, c.im2col_cap(single)),
            Layer::MaxPool2d(p) => p.forward(x, y, sc),
            Layer::Affine(a) => a.forward(x, y),
            Layer::Activation(_) => unreachable!("activations run in place"),
        }
    }

    /// Backward pass: from `dy` (gradient at the output) adds parameter gradients into
    /// `grads` (this layer's slice) and writes the input gradient into `dx`, each if given.
    /// `x` is the layer's input as seen in the forward pass. `dead_at_zero` says that the
    /// gradient at a zero input is discarded further back (a ReLU before it), so the attack
    /// path may leave it zero.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward(
        &self,
        x: ArrayView2<'_, f32>,
        dy: ArrayView2<'_, f32>,
        dx: Option<ArrayViewMut2<'_, f32>>,
        grads: Option<&mut [Array2<f32>]>,
        sc: &mut LayerScratch,
        single: bool,
        dead_at_zero: bool,
    ) {
        match self {
            Layer::Dense(d) => {
                let skip_zero = single && dead_at_zero;
                d.backward(x, dy, dx, grads, &mut sc.row, single, skip_zero)
            }
            Layer::Conv2d(c) => c.backward(x, dy, dx, grads, sc, c.im2col_cap(single)),
            Layer::MaxPool2d(p) => {
                if let Some(dx) = dx {
                    p.backward(dy, dx, sc)
                }
            }
            Layer::Affine(a) => {
                if let Some(dx) = dx {
                    a.backward(dy, dx)
                }
            }
            Layer::Activation(_) => unreachable!("activations run in place"),
        }
    }
}

/// Applies an activation in place. In the attack path (`single`) sigmoids use the vector
/// kernel one row at a time, so each row gets what it gets alone (the kernel's scalar tail
/// covers the last `width % 8` values of a row, wherever the row sits in the batch); training
/// uses the scalar function, kept bit-identical to earlier releases.
pub(crate) fn activate(act: Activation, mut z: ArrayViewMut2<'_, f32>, single: bool) {
    if single && act == Activation::Sigmoid {
        for mut row in z.rows_mut() {
            match row.as_slice_mut() {
                Some(s) => kernels::sigmoid_inplace(s),
                None => {
                    let mut v = row.to_vec();
                    kernels::sigmoid_inplace(&mut v);
                    row.iter_mut().zip(&v).for_each(|(d, &s)| *d = s);
                }
            }
        }
        return;
    }
    act.apply(z.view_mut());
}

/// Multiplies `grad` by the activation's derivative, given its output `a`.
pub(crate) fn activate_backward(
    act: Activation,
    a: ArrayView2<'_, f32>,
    grad: ArrayViewMut2<'_, f32>,
) {
    act.backprop(a, grad);
}

/// Adds `λ·θ` into each gradient and returns `λ/2 · Σ θ²`: weight decay over every parameter,
/// biases included.
pub(crate) fn weight_decay(lambda: f32, params: &[&Array2<f32>], grads: &mut [Array2<f32>]) -> f32 {
    if lambda == 0.0 {
        return 0.0;
    }
    let mut penalty = 0.0;
    for (g, w) in grads.iter_mut().zip(params) {
        Zip::from(g).and(*w).for_each(|g, &w| {
            *g += lambda * w;
            penalty += w * w;
        });
    }
    0.5 * lambda * penalty
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::ShapeBuilder;

    fn conv(input: (usize, usize, usize), k: usize, st: usize, p: usize, d: usize) -> Conv2d {
        let (h, w, c) = input;
        let output = ((h + 2 * p - k) / st + 1, (w + 2 * p - k) / st + 1);
        let patch = k * k * c;
        Conv2d {
            weight: Array2::from_shape_fn((patch, d), |(i, j)| {
                ((i * 7 + j * 3) % 11) as f32 / 11.0 - 0.4
            }),
            bias: Array2::from_shape_fn((1, d), |(_, j)| j as f32 * 0.1),
            input,
            kernel: k,
            stride: st,
            padding: p,
            output,
            transposed: Default::default(),
        }
    }

    /// Forward output, kernel and bias gradients and input gradient of `layer` on `x` with
    /// im2col chunks of at most `cap` values.
    fn run(layer: &Conv2d, x: ArrayView2<'_, f32>, cap: usize) -> [Array2<f32>; 4] {
        let n = x.nrows();
        let out = layer.positions() * layer.weight.ncols();
        let mut sc = LayerScratch::default();
        let mut y = Array2::zeros((n, out));
        layer.forward(x, y.view_mut(), &mut sc, cap);
        let dy = y.mapv(|v| v.sin());
        let mut grads = [
            Array2::zeros(layer.weight.raw_dim()),
            Array2::zeros(layer.bias.raw_dim()),
        ];
        let mut dx = Array2::zeros(x.raw_dim());
        layer.backward(
            x,
            dy.view(),
            Some(dx.view_mut()),
            Some(&mut grads),
            &mut sc,
            cap,
        );
        let [gw, gb] = grads;
        [y, gw, gb, dx]
    }

    fn close(a: &Array2<f32>, b: &Array2<f32>, what: &str) {
        assert_eq!(a.dim(), b.dim(), "{what}");
        for (u, v) in a.iter().zip(b) {
            // The kernel gradient sums over rows; chunks may regroup that sum in the
            // portable matrix product (the AVX2 one adds rows in order either way).
            assert!(
                (u - v).abs() <= 1e-5 * (1.0 + u.abs().max(v.abs())),
                "{what}: {u} vs {v}"
            );
        }
    }

    /// Chunks of one row, of a few rows that split examples, and of one example give what
    /// the whole batch in one chunk gives, for outputs and all gradients; a Fortran-order
    /// input (and gradient buffer) gives what its contiguous copy gives.
    #[test]
    fn chunked_and_strided_convolutions_equal_the_one_chunk_result() {
        for (input, k, st, p, d) in [
            ((5, 6, 2), 3, 1, 1, 4),
            ((7, 5, 1), 4, 2, 3, 3),
            ((4, 4, 3), 1, 1, 0, 2),
        ] {
            let layer = conv(input, k, st, p, d);
            let n = 5;
            let width = input.0 * input.1 * input.2;
            let x = Array2::from_shape_fn((n, width), |(i, j)| {
                ((i * 31 + j * 17) % 13) as f32 / 6.5 - 1.0
            });
            let whole = run(&layer, x.view(), usize::MAX);
            let patch = layer.patch();
            for cap in [
                1,
                3 * patch,
                layer.positions() * patch,
                2 * layer.positions() * patch + patch,
            ] {
                let chunked = run(&layer, x.view(), cap);
                for (a, (b, what)) in whole
                    .iter()
                    .zip(chunked.iter().zip(["y", "dK", "db", "dx"]))
                {
                    close(
                        a,
                        b,
                        &format!("{input:?} k{k} s{st} p{p}, cap {cap}: {what}"),
                    );
                }
            }
            let mut f = Array2::zeros((n, width).f());
            f.assign(&x);
            let strided = run(&layer, f.view(), 3 * patch);
            for (a, b) in whole.iter().zip(&strided) {
                close(a, b, "Fortran-order input");
            }
        }
    }

    /// The input gradient skipping zero channels (through the direct kernel for short window
    /// rows, the wide kernel for inputs of 8·j channels, the row kernel otherwise) has the bits
    /// of the dense product (`dy · Kᵀ` folded back, as the layer computed it before), on a `dy`
    /// three quarters zero as behind max-pooling, with whole positions zero too.
    #[test]
    fn sparse_input_gradient_equals_the_dense_product() {
        // Window rows of 9, 5 and 12 values take the direct kernel; 80, 24 and 72 (8·j input
        // channels, up to 64 output channels) the wide one; 36 (12 channels) and 72 with 72
        // output channels the row kernel.
        for (input, k, st, p, d) in [
            ((6, 5, 3), 3, 1, 1, 8),
            ((28, 28, 1), 5, 1, 2, 16),
            ((9, 7, 3), 4, 2, 1, 12),
            ((9, 9, 16), 5, 1, 2, 32),
            ((8, 7, 8), 3, 2, 1, 64),
            ((6, 9, 24), 3, 1, 0, 8),
            ((7, 7, 12), 3, 1, 1, 16),
            ((6, 9, 24), 3, 2, 1, 72),
        ] {
            let layer = conv(input, k, st, p, d);
            let n = 2;
            let width = input.0 * input.1 * input.2;
            let x = Array2::from_shape_fn((n, width), |(i, j)| ((i * 5 + j * 3) % 7) as f32 - 3.0);
            let out = layer.positions() * d;
            let dy = Array2::from_shape_fn((n, out), |(i, j)| {
                let keep = (i + j) % 4 == 0 && (j / d) % 3 != 1;
                if keep {
                    ((i * 13 + j * 7) % 11) as f32 / 5.5 - 1.0
                } else {
                    0.0
                }
            });
            let mut sc = LayerScratch::default();
            let mut sparse = Array2::from_elem(x.raw_dim(), f32::NAN);
            layer.backward(
                x.view(),
                dy.view(),
                Some(sparse.view_mut()),
                None,
                &mut sc,
                usize::MAX,
            );

            let rows = n * layer.positions();
            let patch = layer.patch();
            let wt = layer.weight.t().as_standard_layout().into_owned();
            let mut dcols = Array2::zeros((rows, patch));
            let dy_rows = dy.view().into_shape_with_order((rows, d)).unwrap();
            gemm::matmul(dy_rows, wt.view(), dcols.view_mut(), false);
            let mut dense = Array2::zeros(x.raw_dim());
            let flat = dcols.as_slice().unwrap();
            layer.col2im(flat, (0, rows), &mut dense.view_mut(), &mut Vec::new());

            if super::kernels::has_avx2_fma() {
                assert_eq!(sparse, dense, "{input:?} k{k}");
            } else {
                close(&sparse, &dense, "portable kernels");
            }
            assert!(sparse.iter().any(|&v| v != 0.0));
        }
    }

    /// The attack's convolutions straight from the image give the im2col product's values:
    /// short window rows (direct, by single positions and blocks of four) and long ones
    /// (sparse, by pairs of positions, or the dense product past its density limit), with
    /// padding, strides and 8 to 32 output channels, on inputs 3/4 and 1/3 zero.
    #[test]
    fn direct_convolution_equals_the_im2col_product() {
        for (input, k, st, p, d) in [
            ((28, 28, 1), 5, 1, 2, 16),
            ((9, 7, 3), 5, 2, 2, 8),
            ((6, 6, 2), 3, 1, 0, 32),
            ((5, 8, 1), 4, 3, 1, 24),
            ((12, 20, 2), 3, 2, 1, 16),
            ((14, 14, 16), 5, 1, 2, 32),
            ((10, 9, 8), 3, 2, 1, 24),
            ((7, 7, 12), 4, 1, 0, 8),
        ] {
            let layer = conv(input, k, st, p, d);
            let n = 3;
            let width = input.0 * input.1 * input.2;
            for zero_one_in in [4, 3] {
                let keep = |i: usize, j: usize| {
                    let z = (i * 7 + j * 3) % zero_one_in;
                    if zero_one_in == 4 {
                        z == 0
                    } else {
                        z != 0
                    }
                };
                let x = Array2::from_shape_fn((n, width), |(i, j)| {
                    if keep(i, j) {
                        ((i * 31 + j * 17) % 13) as f32 / 6.5 - 1.0
                    } else {
                        0.0
                    }
                });
                let out = layer.positions() * d;
                let mut via_im2col = Array2::from_elem((n, out), f32::NAN);
                let mut direct = Array2::from_elem((n, out), f32::NAN);
                let mut sc = LayerScratch::default();
                layer.forward(x.view(), via_im2col.view_mut(), &mut sc, usize::MAX);
                layer.forward_direct(x.view(), direct.view_mut(), &mut sc);
                if super::kernels::has_avx2_fma() {
                    assert_eq!(direct, via_im2col, "{input:?} k{k} s{st} p{p} d{d}");
                } else {
                    close(&direct, &via_im2col, "portable kernels");
                }
            }
        }
    }
}
