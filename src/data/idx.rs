//! Reading and writing IDX files, the format MNIST is distributed in.
//!
//! An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of
//! dimensions), then each dimension as a big-endian `u32`, then the payload in row-major
//! order. Only the unsigned-byte type (`0x08`) is supported: it is the only one MNIST uses.
//! Files may be gzipped; compression is recognised by the gzip magic bytes, not by the
//! file name, so a renamed file still loads.

use std::io::{BufReader, Read, Write};
use std::path::Path;

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

use crate::error::{Error, Result};
use crate::io::{open_regular, write_atomic};

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

/// Largest ratio of a gzipped IDX file's claimed payload to the file's compressed length,
/// for files above [`GZIP_SMALL_FILE`] bytes of payload. MNIST compresses about 5:1; a
/// claim far above this is a decompression bomb (or data better stored uncompressed), and
/// rejecting it before inflating bounds the memory a small file can make a load use.
pub const MAX_GZIP_RATIO: u64 = 32;

/// Payloads up to this many bytes are accepted from a gzipped file whatever its
/// compression ratio (tiny label files of one repeated class compress extremely well).
pub const GZIP_SMALL_FILE: u64 = 1 << 20;

/// Reads an unsigned-byte IDX file, raw or gzipped.
///
/// The header is read and checked first, and the payload it claims is allocated only after
/// it is checked against the file: for a raw file the claim must be the file's length minus
/// the header; for a gzipped file it must be at most [`MAX_GZIP_RATIO`] times the compressed
/// length (or at most [`GZIP_SMALL_FILE`] bytes), and what inflates past the claim is only
/// counted (into no buffer, and for at most 1 MiB, for the error message). So a small file can neither claim nor inflate to a huge allocation: memory is at
/// most the file's length plus `MAX_GZIP_RATIO` times it. Highly compressible data beyond
/// that ratio can still be read when stored uncompressed.
///
/// # Errors
///
/// [`Error::Io`] if the file cannot be read; [`Error::NotRegularFile`] if the path is a FIFO,
/// device, directory or socket; [`Error::DataFile`] (naming the file) if it is empty, not an IDX file, of a type other than unsigned byte, has 0 or more than 4
/// dimensions, whose product overflows, is a corrupt gzip stream, claims more than the
/// gzip ratio allows, or if its payload is shorter or longer than the product of its
/// dimensions.
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
    let file = open_regular(path)?;
    let len_hint = file.metadata().map(|m| m.len()).unwrap_or(0);
    // One read_to_end of the compressed file, then inflation from memory: many small reads
    // through the decoder were the slow part of loading MNIST. The buffer is presized from
    // the file's metadata only up to 1 GiB; past that it grows as bytes actually arrive.
    let mut raw = Vec::with_capacity(len_hint.min(1 << 30) as usize);
    BufReader::new(file)
        .read_to_end(&mut raw)
        .map_err(|e| Error::io(path, e))?;
    idx_from_bytes(path, raw)
}

/// Parses the bytes of an IDX file (raw or gzipped) held in memory, with the same checks
/// and memory bound as [`read_idx`]. Errors name the file as `<memory>`.
///
/// # Errors
///
/// As [`read_idx`], except that there is no I/O.
///
/// # Example
///
/// ```
/// use blindspot::data::idx::parse_idx_bytes;
/// let idx = parse_idx_bytes(vec![0, 0, 8, 1, 0, 0, 0, 2, 7, 9])?;
/// assert_eq!((idx.dims, idx.data), (vec![2], vec![7, 9]));
/// assert!(parse_idx_bytes(vec![0, 0, 8, 1, 255, 255, 255, 255]).is_err());
/// # Ok::<(), blindspot::Error>(())
/// ```
pub fn parse_idx_bytes(bytes: Vec<u8>) -> Result<Idx> {
    idx_from_bytes(Path::new("<memory>"), bytes)
}

fn idx_from_bytes(path: &Path, raw: Vec<u8>) -> Result<Idx> {
    if raw.starts_with(&GZIP_MAGIC) {
        let compressed = raw.len() as u64;
        let mut dec = MultiGzDecoder::new(raw.as_slice());
        let limit = compressed
            .saturating_mul(MAX_GZIP_RATIO)
            .max(GZIP_SMALL_FILE);
        read_idx_stream(path, &mut dec, |claim| {
            if claim > limit {
                Err(format!(
                    "the header claims {claim} payload bytes from a gzip stream of \
                     {compressed} bytes: more than {MAX_GZIP_RATIO}:1 (and over \
                     {GZIP_SMALL_FILE} bytes) is refused as a decompression bomb; store \
                     highly compressible data uncompressed"
                ))
            } else {
                Ok(())
            }
        })
    } else {
        parse_idx(path, raw)
    }
}

/// Reads the header from `r`, lets `check_claim` veto the claimed payload size, then reads
/// exactly that many bytes and checks that nothing follows.
fn read_idx_stream(
    path: &Path,
    r: &mut impl Read,
    check_claim: impl FnOnce(u64) -> std::result::Result<(), String>,
) -> Result<Idx> {
    let corrupt = |e: std::io::Error| bad(path, format!("corrupt gzip stream: {e}"));
    let mut magic = [0u8; 4];
    let got = read_up_to(r, &mut magic).map_err(corrupt)?;
    let (ndims, header_len) = check_magic(path, &magic[..got])?;
    let mut dim_bytes = [0u8; 4 * MAX_DIMS];
    let want = header_len - 4;
    let got = read_up_to(r, &mut dim_bytes[..want]).map_err(corrupt)?;
    if got < want {
        return Err(bad(
            path,
            format!(
                "truncated IDX header: expected {header_len} bytes for {ndims} dimensions, got {}",
                4 + got
            ),
        ));
    }
    let (dims, expected) = parse_dims(path, &dim_bytes[..want])?;
    check_claim(expected as u64).map_err(|p| bad(path, p))?;
    let mut data = Vec::with_capacity(expected);
    r.take(expected as u64)
        .read_to_end(&mut data)
        .map_err(corrupt)?;
    if data.len() < expected {
        return Err(payload_mismatch(path, &dims, expected, Some(data.len())));
    }
    // Reading on to the end of the stream verifies the gzip trailer (CRC and length); one
    // byte more than the header claims is already an error, so a stream that inflates far
    // beyond its claim is inflated at most 1 MiB further, into no buffer.
    let mut extra = [0u8; 1];
    if read_up_to(r, &mut extra).map_err(corrupt)? > 0 {
        // Count what follows, without keeping it, up to a bound: the exact count helps for a
        // file with a few stray bytes, and a bomb is not inflated past the bound.
        let more = std::io::copy(&mut r.take(TRAILING_COUNT_LIMIT), &mut std::io::sink())
            .map_err(corrupt)?;
        let got = (more < TRAILING_COUNT_LIMIT).then(|| expected + 1 + more as usize);
        return Err(payload_mismatch(path, &dims, expected, got));
    }
    Ok(Idx { dims, data })
}

/// Reads until `buf` is full or the stream ends; the number of bytes read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Checks the 4-byte magic (given fewer if the file is shorter); the number of dimensions
/// and the header's length.
fn check_magic(path: &Path, magic: &[u8]) -> Result<(usize, usize)> {
    if magic.is_empty() {
        return Err(bad(path, "empty file (expected an IDX header)"));
    }
    if magic.len() < 4 {
        return Err(bad(
            path,
            format!(
                "truncated IDX header: expected at least 4 bytes, got {}",
                magic.len()
            ),
        ));
    }
    if magic[0] != 0 || magic[1] != 0 {
        return Err(bad(
            path,
            format!(
                "bad IDX magic {:02x} {:02x} {:02x} {:02x}: expected the first two bytes to be zero",
                magic[0], magic[1], magic[2], magic[3]
            ),
        ));
    }
    let type_code = magic[2];
    if type_code != TYPE_U8 {
        return Err(bad(
            path,
            format!(
                "unsupported IDX type code 0x{type_code:02x} (only 0x{TYPE_U8:02x}, unsigned byte, is supported)"
            ),
        ));
    }
    let ndims = magic[3] as usize;
    if !(1..=MAX_DIMS).contains(&ndims) {
        return Err(bad(
            path,
            format!("unsupported number of IDX dimensions {ndims} (expected 1 to {MAX_DIMS})"),
        ));
    }
    Ok((ndims, 4 + 4 * ndims))
}

/// The dimensions and their product (the payload length), with checked arithmetic.
fn parse_dims(path: &Path, bytes: &[u8]) -> Result<(Vec<usize>, usize)> {
    let dims: Vec<usize> = bytes
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
    Ok((dims, expected))
}

/// How far past the claimed payload trailing bytes are counted for the error message.
const TRAILING_COUNT_LIMIT: u64 = 1 << 20;

/// The error for a payload of `got` bytes (`None`: more than the claim plus
/// [`TRAILING_COUNT_LIMIT`]) where the header claims `expected`.
fn payload_mismatch(path: &Path, dims: &[usize], expected: usize, got: Option<usize>) -> Error {
    let (what, got) = match got {
        Some(g) if g < expected => ("truncated payload", g.to_string()),
        Some(g) => ("trailing bytes after payload", g.to_string()),
        None => (
            "trailing bytes after payload",
            format!("more than {}", expected as u64 + TRAILING_COUNT_LIMIT),
        ),
    };
    bad(
        path,
        format!(
            "{what}: expected {expected} payload bytes for dimensions {}, got {got}",
            format_dims(dims)
        ),
    )
}

/// Parses the header of an in-memory (raw) IDX file and checks the payload length.
fn parse_idx(path: &Path, mut bytes: Vec<u8>) -> Result<Idx> {
    let (_, header_len) = check_magic(path, &bytes[..bytes.len().min(4)])?;
    if bytes.len() < header_len {
        return Err(bad(
            path,
            format!(
                "truncated IDX header: expected {header_len} bytes for {} dimensions, got {}",
                (header_len - 4) / 4,
                bytes.len()
            ),
        ));
    }
    let (dims, expected) = parse_dims(path, &bytes[4..header_len])?;
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
