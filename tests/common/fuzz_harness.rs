//! The bodies of the fuzz targets (fuzz/fuzz_targets/*.rs), shared with tests/fuzz_corpus.rs,
//! which replays the stored corpus and past crashes through them as ordinary tests. Each
//! function must return (any result is fine) and never panic, abort or allocate without
//! bound, whatever the bytes.

use blindspot::Check;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use blindspot::io::ModelFile;
use blindspot::nn::{Architecture, Autoencoder, Network};
use blindspot::Classifier;
use ndarray::Array2;

/// The IDX reader on arbitrary bytes. If the first byte is odd, the rest is gzipped first, so
/// that the checks behind the gzip layer (claimed size, ratio, trailing payload) are reached
/// by mutations that a CRC would otherwise stop; otherwise the bytes are the file itself, raw
/// or (when they start with the gzip magic) a gzip stream.
pub fn idx(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode & 1 == 1 {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(rest).expect("in memory");
        enc.finish().expect("in memory")
    } else {
        rest.to_vec()
    };
    if let Ok(idx) = blindspot::data::parse_idx_bytes(bytes) {
        let n: usize = idx.dims.iter().product();
        assert_eq!(n, idx.data.len());
    }
}

/// The model-file loader on arbitrary bytes: `ModelFile` parsing (zip directory, npy
/// headers, sizes), then both model kinds rebuilt from whatever parsed, and one forward pass
/// of a model that loads.
pub fn model_file(data: &[u8]) {
    let path = Path::new("fuzz.npz");
    let Ok(file) = ModelFile::from_bytes(data, path) else {
        return;
    };
    if let Ok(mlp) = Network::from_model_file(file.clone()) {
        if mlp.input_dim() <= 4096 {
            let x = Array2::from_elem((1, mlp.input_dim()), 0.5f32);
            let _ = mlp.logits(x.view());
        }
    }
    if let Ok(ae) = Autoencoder::from_model_file(file) {
        if ae.input_dim() <= 4096 {
            let x = Array2::from_elem((1, ae.input_dim()), 0.5f32);
            let _ = ae.reconstruct(x.view());
        }
    }
}

/// The ONNX importer on arbitrary bytes: protobuf decoding, tensor and graph checks, network
/// assembly, and the reference check when the bytes carry one; then one forward pass of a
/// model that imports. The first byte picks verification on (even) or skipped (odd).
pub fn onnx(data: &[u8]) {
    use blindspot::import::onnx::{from_bytes, OnnxParams};
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(params) = OnnxParams::default()
        .with_skip_verification(mode % 2 == 1)
        .check()
    else {
        return;
    };
    if let Ok(m) = from_bytes(rest, Path::new("fuzz.onnx"), &params) {
        if m.network.input_dim() <= 4096 {
            let x = Array2::from_elem((1, m.network.input_dim()), 0.5f32);
            let _ = m.network.logits(x.view());
        }
    }
}

/// Largest array the construction harness builds (elements): the harness itself stays small,
/// the code under test sees arbitrary shapes below the cap.
const CAP: usize = 1 << 10;

/// Model construction from names and parameters: `Architecture::parse` on an arbitrary name
/// and input width, `Network::from_params` / `Autoencoder::from_params` with arrays whose shapes
/// come from the input (near the architecture's, or not), and `from_model_file` on a header
/// built from the same text.
///
/// Layout: input width (u16 LE), a mode byte (bit 7: shift the width up by 40 bits; bit 0:
/// autoencoder header; the rest picks the activation and code width), the name's length, the
/// name, then pairs of bytes: per layer a signed change of the expected shape, then free
/// shapes.
pub fn construct(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let input = u16::from_le_bytes([data[0], data[1]]) as usize;
    let mode = data[2];
    let split = (data[3] as usize).min(data.len() - 4);
    let (name, shapes) = data[4..].split_at(split);
    let name = String::from_utf8_lossy(name).into_owned();
    let input = if mode & 0x80 != 0 { input << 40 } else { input };
    let arch = Architecture::parse(&name, input);
    let _ = Architecture::parse(&name, 784);

    let mut params = Vec::new();
    let widths = arch.as_ref().map(|a| a.widths()).unwrap_or_default();
    let mut it = shapes.chunks_exact(2);
    for (l, pair) in widths.windows(2).enumerate() {
        let (fan_in, fan_out) = (pair[0], pair[1]);
        let d = it.next().map_or([0, 0], |c| [c[0], c[1]]);
        let r = fan_in.wrapping_add((d[0] as i8) as isize as usize);
        let c = fan_out.wrapping_add((d[1] as i8) as isize as usize);
        for (rows, cols) in [(r, c), (1, c)] {
            // Each side is capped too: ndarray refuses (panics on) shapes such as 0 × 2^64−3,
            // whose non-zero sides overflow isize although the element count is 0. That is the
            // harness's own construction, not the code under test (fuzz/corpus/construct/
            // crash-3b58… was that).
            if rows <= CAP && cols <= CAP && rows * cols <= CAP {
                params.push(Array2::from_elem((rows, cols), (l as f32) * 0.01));
            }
        }
    }
    // Free shapes, capped like the others (at most 255 × 4 and 16 arrays): uncapped 255 × 255
    // arrays made some inputs take seconds, all in the harness's own allocations.
    for c in it.take(16) {
        params.push(Array2::from_elem(
            (c[0] as usize, (c[1] % 5) as usize),
            0.1f32,
        ));
    }
    if let Ok(a) = &arch {
        if let Ok(mlp) = Network::from_params(a.clone(), params.clone()) {
            let x = Array2::from_elem((1, mlp.input_dim()), 0.5f32);
            let _ = mlp.logits(x.view());
        }
    }
    let _ = Autoencoder::from_params(params.clone(), 1e-4);

    let mut meta = BTreeMap::new();
    let kind = if mode & 1 == 0 { "mlp" } else { "autoencoder" };
    meta.insert("kind".to_string(), kind.to_string());
    meta.insert("format".to_string(), "1".to_string());
    meta.insert("name".to_string(), name.clone());
    meta.insert("input".to_string(), input.to_string());
    meta.insert(
        "code".to_string(),
        ((mode & 0x7f) as usize >> 1).to_string(),
    );
    meta.insert("weight_decay".to_string(), "1e-4".to_string());
    let activation = ["sigmoid", "relu", "tanh", name.as_str()][(mode as usize >> 1) % 4];
    meta.insert("activation".to_string(), activation.to_string());
    let names = [
        "W0", "b0", "W1", "b1", "W2", "b2", "W_enc", "b_enc", "W_dec", "b_dec",
    ];
    let arrays = params
        .into_iter()
        .enumerate()
        .map(|(i, a)| (names[(i + mode as usize) % names.len()].to_string(), a))
        .collect();
    let file = ModelFile::new(meta, arrays);
    let _ = Network::from_model_file(file.clone());
    let _ = Autoencoder::from_model_file(file);
}

/// Largest work the conv harnesses run a network for: parameters plus multiply-adds of one
/// example's forward pass. Bigger architectures are still parsed, checked and built into a
/// file header, only not evaluated, so that one input never takes long (at 2^21 the
/// fuzzers managed ~450 executions/s on the shared machine). Small networks take the same
/// paths: layouts, padding, strides, pooling; only the im2col chunking needs 64 MiB, and
/// tests/conv_safety.rs covers it.
const WORK: u128 = 1 << 17;

/// Parameters and one example's multiply-adds of `arch`, in exact (u128) arithmetic.
fn work(arch: &Architecture) -> u128 {
    let (h, w, c) = arch.image();
    let (mut size, mut channels) = ((h, w), c as u128);
    let mut total: u128 = 0;
    for stage in arch.conv_stages() {
        let Some((ch, cw)) = stage.conv_output(size) else {
            return u128::MAX;
        };
        let k = stage.kernel as u128;
        let params = k * k * channels * stage.channels as u128;
        total += params + params * (ch as u128) * (cw as u128);
        size = (ch / stage.pool.max(1), cw / stage.pool.max(1));
        channels = stage.channels as u128;
    }
    for pair in arch.widths().windows(2) {
        total += 2 * pair[0] as u128 * pair[1] as u128;
    }
    total
}

/// Everything a network must survive once built: logits, the input gradient (also into a
/// Fortran-order buffer from a Fortran-order input), every representation, the last layer's
/// output, and a round trip through its model file, which must give the same network.
fn exercise(net: &Network, pixel: f32) {
    use blindspot::{Differentiable, Representation};
    use ndarray::ShapeBuilder;
    let d = net.input_dim();
    let x = Array2::from_shape_fn((2, d), |(i, j)| if (i + j) % 3 == 0 { pixel } else { 0.25 });
    let _ = net.logits(x.view());
    let labels = [0, net.num_classes() - 1];
    let _ = net.loss_and_input_grad(x.view(), &labels);
    let mut xf = Array2::zeros((2, d).f());
    xf.assign(&x);
    let mut grad = Array2::zeros((2, d).f());
    let mut losses = ndarray::Array1::zeros(2);
    let mut ws = net.workspace(2);
    let _ = net.loss_and_input_grad_into(
        xf.view(),
        &labels,
        &mut ws,
        losses.view_mut(),
        grad.view_mut(),
    );
    for k in 0..net.num_layers() {
        let _ = net.representation(x.view(), k);
    }
    let _ = net.layer_output(x.view(), net.layers().len() - 1);
    let back =
        Network::from_model_file(net.to_model_file()).expect("a network's own model file loads");
    assert_eq!(&back, net, "model file round trip");
}

/// Architecture names on arbitrary text: `Architecture::parse_image` and `parse` on the name
/// (valid UTF-8 or not, any characters), and for a name that parses into a small enough
/// network, building it and running [`exercise`] on it.
///
/// Layout: image height, width and channels (one byte each; bit 7 of the mode byte shifts
/// the height up by 40 bits), a mode byte (bit 0: a huge pixel value), then the name.
pub fn arch_name(data: &[u8]) {
    let [h, w, c, mode, name @ ..] = data else {
        return;
    };
    let h = if mode & 0x80 != 0 {
        (*h as usize) << 40
    } else {
        *h as usize
    };
    let image = (h, *w as usize, *c as usize);
    let name = String::from_utf8_lossy(name);
    let _ = Architecture::parse(&name, image.0.saturating_mul(image.1));
    let Ok(arch) = Architecture::parse_image(&name, image) else {
        return;
    };
    if let Ok(again) = Architecture::parse_image(&arch.to_string(), image) {
        assert_eq!(again, arch, "name round trip of {name:?}");
    } else {
        panic!("{arch} (from {name:?}) does not parse back");
    }
    if work(&arch) <= WORK {
        let pixel = if mode & 1 == 1 { 3e38 } else { 0.5 };
        exercise(&Network::new(arch, u64::from(*mode)), pixel);
    }
}

/// Convolutional model files: a header naming a `CONV` (or any) architecture and an image,
/// with arrays shaped for it (or off by the input's bytes) holding the input's float bits
/// (NaN, infinities and `f32::MAX` included), loaded by `Network::from_model_file`; a network
/// that loads is run through [`exercise`]. With bit 0 of the mode byte set, the rest of the
/// input is an `.npz` file instead, as in [`model_file`] but exercised the same way.
///
/// Layout: a mode byte (bit 0: raw `.npz`; bit 1: put the image in the header; bit 2:
/// perturb one array's shape by the next byte), image height, width, channels, the name's
/// length, the name, then the parameters' bytes (4 per value, repeated as needed).
pub fn conv_model_file(data: &[u8]) {
    let path = Path::new("fuzz.npz");
    let [mode, rest @ ..] = data else {
        return;
    };
    if mode & 1 == 1 {
        if let Ok(file) = ModelFile::from_bytes(rest, path) {
            if let Ok(net) = Network::from_model_file(file) {
                if work(net.arch()) <= WORK {
                    exercise(&net, 0.5);
                }
            }
        }
        return;
    }
    let [h, w, c, len, rest @ ..] = rest else {
        return;
    };
    let split = (*len as usize).min(rest.len());
    let (name, values) = rest.split_at(split);
    let name = String::from_utf8_lossy(name).into_owned();
    let image = (*h as usize, *w as usize, *c as usize);
    let input = image.0 * image.1 * image.2;
    let mut meta = BTreeMap::new();
    meta.insert("kind".to_string(), "mlp".to_string());
    meta.insert("format".to_string(), "1".to_string());
    meta.insert("name".to_string(), name.clone());
    meta.insert("input".to_string(), input.to_string());
    meta.insert("activation".to_string(), "relu".to_string());
    if mode & 2 != 0 {
        meta.insert(
            "image".to_string(),
            format!("{},{},{}", image.0, image.1, image.2),
        );
    }
    // The arrays the header's architecture needs, when it parses and is small; else none
    // (the loader must then name a missing array).
    let arch = Architecture::parse_image(&name, image).ok();
    let mut shapes = Vec::new();
    if let Some(a) = arch.as_ref().filter(|a| work(a) <= WORK) {
        let mut channels = a.image().2;
        for (j, s) in a.conv_stages().iter().enumerate() {
            shapes.push((
                format!("K{j}"),
                (s.kernel * s.kernel * channels, s.channels),
            ));
            shapes.push((format!("c{j}"), (1, s.channels)));
            channels = s.channels;
        }
        for (l, pair) in a.widths().windows(2).enumerate() {
            shapes.push((format!("W{l}"), (pair[0], pair[1])));
            shapes.push((format!("b{l}"), (1, pair[1])));
        }
    }
    if mode & 4 != 0 && !shapes.is_empty() {
        let delta = values.first().copied().unwrap_or(1);
        let i = delta as usize % shapes.len();
        shapes[i].1 .0 = shapes[i].1 .0.wrapping_add(usize::from(delta >> 4)) % (CAP + 1);
    }
    let floats: Vec<f32> = values
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let mut next = 0usize;
    let arrays = shapes
        .into_iter()
        .map(|(name, (r, c))| {
            let a = Array2::from_shape_fn((r, c), |_| {
                next += 1;
                if floats.is_empty() {
                    0.1
                } else {
                    floats[next % floats.len()]
                }
            });
            (name, a)
        })
        .collect();
    let file = ModelFile::new(meta, arrays);
    if let Ok(net) = Network::from_model_file(file) {
        exercise(&net, 0.5);
    }
}
