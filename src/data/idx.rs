//! Reading and writing IDX files, the format MNIST is distributed in.
//!
//! An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of
//! dimensions), then each dimension as a big-endian `u32`, then the payload in row-major
//! order. Only the unsigned-byte type (`0x08`) is supported: it is the only one MNIST uses.
//! Files may be gzipped; compression is recognised by the gzip magic bytes, not by the
//! file name, so a renamed file still loads.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

use crate::error::{Error, Result};

/// The IDX type code of unsigned bytes, the only one supported.
const TYPE_U8: u8 = 0x08;

/// The first two bytes of every gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Largest number of dimensions accepted; MNIST uses 1 (labels) and 3 (images).
const MAX_DIMS: usize = 4;

/// The contents of an unsigned-byte IDX file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idx {
    /// The dimensions, outermost first (e.g. `[60000, 28, 28]` for MNIST training images).
    pub dims: Vec<usize>,
    /// The payload in row-major order; its length is the product of `dims`.
    pub data: Vec<u8>,
}

fn bad(path: &Path, problem: impl Into<String>) -> Error {
    Error::DataFile {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// Reads an unsigned-byte IDX file, raw or gzipped.
///
/// # Errors
///
/// [`Error::Io`] if the file cannot be read; [`Error::DataFile`] (naming the file) if it is
/// empty, not an IDX file, of a type other than unsigned byte, has 0 or more than 4
/// dimensions, is a corrupt gzip stream, or if its payload is shorter or longer than the
/// product of its dimensions.
///
/// # Example
///
/// ```no_run
/// use blindspot::data::idx::read_idx;
/// let labels = read_idx("data/mnist/train-labels-idx1-ubyte.gz".as_ref())?;
/// assert_eq!(labels.dims, vec![60_000]);
/// # Ok::<(), blindspot::Error>(())
/// ```
pub fn read_idx(path: &Path) -> Result<Idx> {
    let bytes = read_maybe_gzipped(path)?;
    parse_idx(path, bytes)
}

/// Reads the whole file, inflating it if it starts with the gzip magic bytes.
fn read_maybe_gzipped(path: &Path) -> Result<Vec<u8>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let len_hint = file.metadata().map(|m| m.len() as usize).unwrap_or(0);
    // One read_to_end into a presized buffer: many small reads through the decoder were the
    // slow part of loading MNIST.
    let mut raw = Vec::with_capacity(len_hint);
    BufReader::new(file)
        .read_to_end(&mut raw)
        .map_err(|e| Error::io(path, e))?;
    if !raw.starts_with(&GZIP_MAGIC) {
        return Ok(raw);
    }
    let mut out = Vec::with_capacity(gzip_size_hint(&raw));
    MultiGzDecoder::new(raw.as_slice())
        .read_to_end(&mut out)
        .map_err(|e| bad(path, format!("corrupt gzip stream: {e}")))?;
    Ok(out)
}

/// The uncompressed size recorded in the gzip trailer (ISIZE, modulo 2^32), used only to
/// presize the output buffer. A corrupt trailer must not trigger a huge allocation, so the
/// hint is capped at a generous multiple of the compressed size (deflate cannot expand data
/// by more than about 1032:1, and MNIST compresses about 5:1).
fn gzip_size_hint(compressed: &[u8]) -> usize {
    let n = compressed.len();
    if n < 18 {
        return 0;
    }
    let mut isize_bytes = [0u8; 4];
    isize_bytes.copy_from_slice(&compressed[n - 4..]);
    let isize = u32::from_le_bytes(isize_bytes) as usize;
    isize.min(n.saturating_mul(64))
}

/// Parses the header of an in-memory IDX file and checks the payload length.
fn parse_idx(path: &Path, mut bytes: Vec<u8>) -> Result<Idx> {
    if bytes.is_empty() {
        return Err(bad(path, "empty file (expected an IDX header)"));
    }
    if bytes.len() < 4 {
        return Err(bad(
            path,
            format!(
                "truncated IDX header: expected at least 4 bytes, got {}",
                bytes.len()
            ),
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad(
            path,
            format!(
                "bad IDX magic {:02x} {:02x} {:02x} {:02x}: expected the first two bytes to be zero",
                bytes[0], bytes[1], bytes[2], bytes[3]
            ),
        ));
    }
    let type_code = bytes[2];
    if type_code != TYPE_U8 {
        return Err(bad(
            path,
            format!(
                "unsupported IDX type code 0x{type_code:02x} (only 0x{TYPE_U8:02x}, unsigned byte, is supported)"
            ),
        ));
    }
    let ndims = bytes[3] as usize;
    if !(1..=MAX_DIMS).contains(&ndims) {
        return Err(bad(
            path,
            format!("unsupported number of IDX dimensions {ndims} (expected 1 to {MAX_DIMS})"),
        ));
    }
    let header_len = 4 + 4 * ndims;
    if bytes.len() < header_len {
        return Err(bad(
            path,
            format!(
                "truncated IDX header: expected {header_len} bytes for {ndims} dimensions, got {}",
                bytes.len()
            ),
        ));
    }
    let dims: Vec<usize> = bytes[4..header_len]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            bad(
                path,
                format!("IDX dimensions {dims:?} overflow the address space"),
            )
        })?;
    let got = bytes.len() - header_len;
    if got != expected {
        let what = if got < expected {
            "truncated payload"
        } else {
            "trailing bytes after payload"
        };
        return Err(bad(
            path,
            format!(
                "{what}: expected {expected} payload bytes for dimensions {}, got {got}",
                format_dims(&dims)
            ),
        ));
    }
    // Drop the header in place: no second allocation of the (up to 47 MB) payload.
    bytes.drain(..header_len);
    Ok(Idx { dims, data: bytes })
}

fn format_dims(dims: &[usize]) -> String {
    dims.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("×")
}

/// Writes an unsigned-byte IDX file, gzipped if `gzip` is true.
///
/// The file is written to a temporary file in the same directory and then renamed over
/// `path`, so a reader never sees a half-written file.
///
/// # Errors
///
/// [`Error::InvalidParameter`] if `dims` has 0 or more than 4 entries or a dimension does
/// not fit in a `u32`; [`Error::Shape`] if `data.len()` is not the product of `dims`;
/// [`Error::Io`] if writing fails.
///
/// # Example
///
/// ```
/// use blindspot::data::idx::{read_idx, write_idx};
/// let path = std::env::temp_dir().join(format!("doc-idx-{}.idx", std::process::id()));
/// write_idx(&path, &[2, 3], &[0, 1, 2, 3, 4, 5], true)?;
/// let idx = read_idx(&path)?;
/// assert_eq!(idx.dims, vec![2, 3]);
/// assert_eq!(idx.data, vec![0, 1, 2, 3, 4, 5]);
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), blindspot::Error>(())
/// ```
pub fn write_idx(path: &Path, dims: &[usize], data: &[u8], gzip: bool) -> Result<()> {
    if !(1..=MAX_DIMS).contains(&dims.len()) {
        return Err(Error::param(
            "dims",
            format!(
                "an IDX file has 1 to {MAX_DIMS} dimensions, got {}",
                dims.len()
            ),
        ));
    }
    let mut header = Vec::with_capacity(4 + 4 * dims.len());
    header.extend_from_slice(&[0, 0, TYPE_U8, dims.len() as u8]);
    for &d in dims {
        let d = u32::try_from(d)
            .map_err(|_| Error::param("dims", format!("dimension {d} does not fit in a u32")))?;
        header.extend_from_slice(&d.to_be_bytes());
    }
    let expected = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if expected != Some(data.len()) {
        return Err(Error::shape(
            "IDX payload",
            format!("{} bytes", format_dims(dims)),
            format!("{} bytes", data.len()),
        ));
    }
    write_atomic(path, |w| {
        if gzip {
            let mut enc = GzEncoder::new(w, Compression::default());
            enc.write_all(&header)?;
            enc.write_all(data)?;
            enc.finish()?;
        } else {
            w.write_all(&header)?;
            w.write_all(data)?;
        }
        Ok(())
    })
}

/// Writes a file through `write` into a temporary sibling, then renames it over `path`.
///
/// Same directory so the rename stays on one file system and is atomic; the temporary name
/// carries the process id and a counter so concurrent writers never share one. On any
/// failure the temporary file is removed and `path` is left untouched.
pub(crate) fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let file_name = path.file_name().ok_or_else(|| {
        Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no file name"),
        )
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = dir.join(tmp_name);

    let result = (|| {
        let file = File::create(&tmp)?;
        let mut w = BufWriter::new(file);
        write(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}
