//! PNG output of grayscale images and grids of them, for figures like the paper's
//! (an example, its perturbation magnified, and the adversarial image side by side).

use std::path::Path;

use ndarray::ArrayView1;

use crate::error::{check_nonzero, Error, Result};
use crate::io::write_atomic;
use crate::model::check_finite;

/// Largest image [`Grid::render`] draws, in pixels (256 Mi, one byte each).
pub const MAX_PIXELS: usize = 1 << 28;

/// Gray level of the separator lines and of unused cells in the last row.
const DEFAULT_SEPARATOR: u8 = 255;

/// A grid of equally sized grayscale tiles, laid out row by row and saved as one PNG.
///
/// Pixel values are drawn with 0 as black and 1 as white. Tiles are separated by 1-pixel
/// lines (also at [`Grid::try_with_scale`] > 1, so that the tiles themselves are magnified but
/// the grid stays tight).
///
/// # Example
///
/// ```
/// use blindspot::image::Grid;
/// use ndarray::array;
///
/// let mut grid = Grid::new(2, 2, 3)?.try_with_scale(4)?;
/// grid.push(array![0.0, 1.0, 0.5, 0.25].view())?; // an image
/// grid.push_perturbation(array![0.0, 0.1, -0.2, 0.0].view())?; // a signed perturbation
/// assert_eq!(grid.dimensions(), (2 * 8 + 1, 8));
/// # let path = std::env::temp_dir().join(format!("doc-grid-{}.png", std::process::id()));
/// grid.save(&path)?;
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), blindspot::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Grid {
    tile_rows: usize,
    tile_cols: usize,
    cols_per_row: usize,
    scale: usize,
    separator: u8,
    /// Each tile already quantised to gray levels, `tile_rows * tile_cols` bytes.
    tiles: Vec<Vec<u8>>,
}

impl Grid {
    /// An empty grid of `tile_rows × tile_cols` tiles with at most `cols_per_row` tiles per
    /// row.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] if any argument is 0 or a tile alone has more than
    /// [`MAX_PIXELS`] pixels.
    pub fn new(tile_rows: usize, tile_cols: usize, cols_per_row: usize) -> Result<Grid> {
        for (name, v) in [
            ("tile_rows", tile_rows),
            ("tile_cols", tile_cols),
            ("cols_per_row", cols_per_row),
        ] {
            check_nonzero(name, v)?;
        }
        if tile_rows
            .checked_mul(tile_cols)
            .is_none_or(|n| n > MAX_PIXELS)
        {
            return Err(Error::param(
                "tile_cols",
                format!("a {tile_rows} × {tile_cols} tile has more than {MAX_PIXELS} pixels"),
            ));
        }
        Ok(Grid {
            tile_rows,
            tile_cols,
            cols_per_row,
            scale: 1,
            separator: DEFAULT_SEPARATOR,
            tiles: Vec::new(),
        })
    }

    /// Draws every tile pixel as a `scale × scale` block (separators stay 1 pixel wide).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] if `scale` is 0 or one magnified tile would have more than
    /// [`MAX_PIXELS`] pixels.
    pub fn try_with_scale(mut self, scale: usize) -> Result<Grid> {
        check_nonzero("scale", scale)?;
        let side = |n: usize| n.checked_mul(scale);
        let fits = match (side(self.tile_rows), side(self.tile_cols)) {
            (Some(h), Some(w)) => h.checked_mul(w).is_some_and(|n| n <= MAX_PIXELS),
            _ => false,
        };
        if !fits {
            return Err(Error::param(
                "scale",
                format!(
                    "{scale} makes a {} × {} tile larger than {MAX_PIXELS} pixels",
                    self.tile_rows, self.tile_cols
                ),
            ));
        }
        self.scale = scale;
        Ok(self)
    }

    /// Sets the gray level (0 black to 255 white) of the separators and of empty cells;
    /// white by default.
    pub fn with_separator(mut self, gray: u8) -> Grid {
        self.separator = gray;
        self
    }

    /// Number of tiles pushed so far.
    pub fn len(&self) -> usize {
        self.tiles.len()
    }

    /// Whether no tile has been pushed yet.
    pub fn is_empty(&self) -> bool {
        self.tiles.is_empty()
    }

    /// Appends an image tile, row-major, values clamped to `[0, 1]` (0 black, 1 white).
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] if `pixels` does not have `tile_rows * tile_cols` values;
    /// [`Error::NonFinite`] if one is NaN or infinite.
    pub fn push(&mut self, pixels: ArrayView1<'_, f32>) -> Result<()> {
        self.check_tile(pixels, "grid image tile")?;
        self.tiles
            .push(pixels.iter().map(|&v| to_gray(v.clamp(0.0, 1.0))).collect());
        Ok(())
    }

    /// Appends a signed perturbation as a tile: 0 is mid-gray (128), and the values are
    /// magnified so that the largest `|r|` maps to black (negative) or white (positive).
    /// Perturbations are tiny in pixel units, so drawn unmagnified they would be invisible;
    /// the paper's figures show them magnified the same way. An all-zero perturbation is
    /// uniformly mid-gray.
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] if `r` does not have `tile_rows * tile_cols` values;
    /// [`Error::NonFinite`] if one is NaN or infinite.
    pub fn push_perturbation(&mut self, r: ArrayView1<'_, f32>) -> Result<()> {
        self.check_tile(r, "grid perturbation tile")?;
        let max = r.iter().fold(0.0f32, |m, &v| m.max(v.abs()));
        let gain = if max > 0.0 { 0.5 / max } else { 0.0 };
        self.tiles.push(
            r.iter()
                .map(|&v| to_gray((0.5 + v * gain).clamp(0.0, 1.0)))
                .collect(),
        );
        Ok(())
    }

    /// Width and height in pixels of the image [`Grid::save`] would write (0 × 0 if empty).
    /// A side too large for `usize` is reported as `usize::MAX` (rendering it is an error).
    pub fn dimensions(&self) -> (usize, usize) {
        self.checked_dimensions()
            .unwrap_or((usize::MAX, usize::MAX))
    }

    /// [`Grid::dimensions`] with checked arithmetic: `None` on overflow.
    fn checked_dimensions(&self) -> Option<(usize, usize)> {
        let n = self.tiles.len();
        if n == 0 {
            return Some((0, 0));
        }
        let cols = n.min(self.cols_per_row);
        let rows = n.div_ceil(self.cols_per_row);
        let tw = self.tile_cols.checked_mul(self.scale)?;
        let th = self.tile_rows.checked_mul(self.scale)?;
        let w = cols.checked_mul(tw)?.checked_add(cols - 1)?;
        let h = rows.checked_mul(th)?.checked_add(rows - 1)?;
        Some((w, h))
    }

    /// Renders the grid to 8-bit gray levels, row-major, `width * height` bytes.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] if no tile has been pushed or the image would have more
    /// than [`MAX_PIXELS`] pixels.
    pub fn render(&self) -> Result<(usize, usize, Vec<u8>)> {
        if self.tiles.is_empty() {
            return Err(Error::param("grid", "no tiles to draw"));
        }
        let too_big = || {
            Error::param(
                "grid",
                format!(
                    "{} tiles of {} × {} at scale {} make an image of more than {MAX_PIXELS} pixels",
                    self.tiles.len(),
                    self.tile_rows,
                    self.tile_cols,
                    self.scale
                ),
            )
        };
        let (width, height) = self.checked_dimensions().ok_or_else(too_big)?;
        if width.checked_mul(height).is_none_or(|n| n > MAX_PIXELS) {
            return Err(too_big());
        }
        let mut out = vec![self.separator; width * height];
        let s = self.scale;
        for (k, tile) in self.tiles.iter().enumerate() {
            let x0 = (k % self.cols_per_row) * (self.tile_cols * s + 1);
            let y0 = (k / self.cols_per_row) * (self.tile_rows * s + 1);
            for (r, row) in tile.chunks_exact(self.tile_cols).enumerate() {
                for dy in 0..s {
                    let start = (y0 + r * s + dy) * width + x0;
                    let line = &mut out[start..start + self.tile_cols * s];
                    for (block, &g) in line.chunks_exact_mut(s).zip(row) {
                        block.fill(g);
                    }
                }
            }
        }
        Ok((width, height, out))
    }

    /// Writes the grid as an 8-bit grayscale PNG, atomically (temporary file in the same
    /// directory, then rename).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] if no tile has been pushed or the image would exceed the
    /// PNG size limit; [`Error::Io`] if writing fails.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let (width, height, pixels) = self.render()?;
        save_gray_png(path, width, height, &pixels)
    }

    fn check_tile(&self, v: ArrayView1<'_, f32>, what: &str) -> Result<()> {
        let want = self.tile_rows * self.tile_cols;
        if v.len() != want {
            return Err(Error::shape(
                what,
                format!("{want} values ({} × {})", self.tile_rows, self.tile_cols),
                v.len(),
            ));
        }
        check_finite(v, what)
    }
}

/// Maps `[0, 1]` to `0..=255`, rounding half up so that 0.5 is 128.
fn to_gray(v: f32) -> u8 {
    (v * 255.0).round() as u8
}

/// Writes `pixels` (`width * height` gray levels, row-major, 0 black) as an 8-bit grayscale
/// PNG, atomically (temporary file in the same directory, then rename).
///
/// # Errors
///
/// [`Error::InvalidParameter`] if `width` or `height` is 0 or above `u32::MAX`;
/// [`Error::Shape`] if `pixels.len() != width * height`; [`Error::Io`] if writing fails.
///
/// # Example
///
/// ```
/// # let path = std::env::temp_dir().join(format!("doc-gray-{}.png", std::process::id()));
/// blindspot::image::save_gray_png(&path, 2, 1, &[0, 255])?;
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), blindspot::Error>(())
/// ```
pub fn save_gray_png(
    path: impl AsRef<Path>,
    width: usize,
    height: usize,
    pixels: &[u8],
) -> Result<()> {
    let path = path.as_ref();
    let w = png_side("width", width)?;
    let h = png_side("height", height)?;
    if width.checked_mul(height) != Some(pixels.len()) {
        return Err(Error::shape(
            "PNG pixels",
            format!("{width} × {height}"),
            pixels.len(),
        ));
    }
    write_atomic(path, |out| {
        let mut enc = png::Encoder::new(out, w, h);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(png_to_io)?;
        writer.write_image_data(pixels).map_err(png_to_io)?;
        writer.finish().map_err(png_to_io)
    })
}

fn png_side(name: &'static str, v: usize) -> Result<u32> {
    // The PNG format caps each side at 2^31 - 1.
    match u32::try_from(v) {
        Ok(s) if s >= 1 && s <= i32::MAX as u32 => Ok(s),
        _ => Err(Error::param(
            name,
            format!("a PNG side must be between 1 and {}, got {v}", i32::MAX),
        )),
    }
}

fn png_to_io(e: png::EncodingError) -> std::io::Error {
    match e {
        png::EncodingError::IoError(e) => e,
        other => std::io::Error::other(other),
    }
}
