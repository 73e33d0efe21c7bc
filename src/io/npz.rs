//! `.npz` archives of named arrays, read without trusting the file, and [`ModelFile`]: named
//! `f32` arrays plus a small text header that records what the arrays are. Files are written
//! to a temporary name and renamed, so a crash never leaves half a file behind.
//!
//! Reading does not trust the file: the zip directory and every npy header are read first,
//! and each member's claimed shape × element size must match the member's actual size, which
//! must fit in the file, before anything is allocated. A small file claiming a huge array is
//! therefore an [`Error::ModelFile`], and loading a file never allocates much more than the
//! file's own length.

use std::collections::BTreeMap;
use std::io::{BufReader, Read, Seek, Write};
use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2, ShapeBuilder};
use ndarray_npy::NpzWriter;

use crate::error::{Error, Result};
use crate::io::{open_regular, write_atomic};

/// Name of the array holding the UTF-8 `key=value` header.
const META: &str = "meta";

/// Most members accepted in one archive (a model has a handful of arrays).
const MAX_MEMBERS: usize = 4096;

/// Largest npy header accepted; writers pad it to a multiple of 64 bytes, so real headers
/// are well under 1 KB.
const MAX_NPY_HEADER: usize = 64 * 1024;

/// The named arrays and header of a model file, and the path it was read from.
///
/// Two model files are equal when their headers and arrays are: the path only names the file
/// in errors.
#[derive(Debug, Clone)]
pub struct ModelFile {
    /// `key=value` pairs describing the model (kind, architecture, format version…).
    pub meta: BTreeMap<String, String>,
    /// Named 2-d parameter arrays, in order.
    pub arrays: Vec<(String, Array2<f32>)>,
    /// Where the file was read from (named in errors); `None` for one built in memory.
    path: Option<PathBuf>,
}

impl PartialEq for ModelFile {
    fn eq(&self, other: &Self) -> bool {
        self.meta == other.meta && self.arrays == other.arrays
    }
}

impl ModelFile {
    /// A model file built in memory from a header and arrays; errors about it name the file
    /// `<memory>` (see [`ModelFile::path`]).
    pub fn new(meta: BTreeMap<String, String>, arrays: Vec<(String, Array2<f32>)>) -> ModelFile {
        ModelFile {
            meta,
            arrays,
            path: None,
        }
    }

    /// The path the file was read from ([`ModelFile::load`], [`ModelFile::from_bytes`]), or
    /// `None` for one built with [`ModelFile::new`]. Saving does not change it.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// An [`Error::ModelFile`] naming this file (`<memory>` if it was built in memory).
    pub(crate) fn error(&self, problem: String) -> Error {
        Error::ModelFile {
            path: self
                .path
                .clone()
                .unwrap_or_else(|| PathBuf::from("<memory>")),
            problem,
        }
    }

    /// Writes the file atomically: a temporary sibling, flushed and synced, then renamed.
    ///
    /// The temporary name carries the process id, the thread and a counter, so concurrent
    /// saves of the same path (from threads or processes) never share one; it is removed on
    /// every error path. A reader sees either the old file or the new one, never half of one.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the file cannot be written (the message names the path and, for an
    /// encoding failure, what could not be written).
    pub fn save(&self, path: &Path) -> Result<()> {
        let header: String = self
            .meta
            .iter()
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect();
        let bytes = Array1::from(header.into_bytes());
        write_atomic(path, |w| {
            let bad = |e: ndarray_npy::WriteNpzError| std::io::Error::other(format!("npz: {e}"));
            let mut npz = NpzWriter::new(w);
            npz.add_array(META, &bytes).map_err(bad)?;
            for (name, a) in &self.arrays {
                npz.add_array(name.as_str(), a).map_err(bad)?;
            }
            npz.finish().map_err(bad)?.flush()
        })
    }

    /// Reads a file written by [`ModelFile::save`].
    ///
    /// Only what `save` writes is accepted: a zip archive of uncompressed (stored) npy
    /// members, a 1-d `u8` member `meta` and 2-d `f32` members (little- or big-endian, C or
    /// Fortran order). Sizes are checked before allocating (see the module docs), so the
    /// memory used is bounded by the file's length.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the file cannot be opened or read; [`Error::NotRegularFile`] if the path
    /// is a FIFO, device, directory or socket; [`Error::ModelFile`] naming the
    /// file if it is not a zip archive, has too many members, a compressed or encrypted member,
    /// a member whose npy header is malformed or whose shape does not match its size, an
    /// array that is not 2-d `f32`, or a missing, non-UTF-8 or malformed `meta` header.
    pub fn load(path: &Path) -> Result<ModelFile> {
        let file = open_regular(path)?;
        let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        ModelFile::read_from(BufReader::new(file), file_len, path)
    }

    /// Reads a model file held in memory, with the same checks as [`ModelFile::load`];
    /// `path` only names the file (in errors and [`ModelFile::path`]).
    ///
    /// # Errors
    ///
    /// As [`ModelFile::load`].
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<ModelFile> {
        ModelFile::read_from(std::io::Cursor::new(bytes), bytes.len() as u64, path)
    }

    fn read_from(reader: impl Read + Seek, file_len: u64, path: &Path) -> Result<ModelFile> {
        let bad = |problem: String| Error::ModelFile {
            path: path.to_path_buf(),
            problem,
        };
        let mut meta_bytes: Option<Vec<u8>> = None;
        let mut arrays = Vec::new();
        read_members(reader, file_len, path, |name, member, header| {
            if name == META {
                if meta_bytes.is_some() {
                    return Err("a second `meta` member".into());
                }
                meta_bytes = Some(read_u8_array(member, header)?);
            } else {
                let a = read_f32_array(member, header)
                    .map_err(|e| format!("not a 2-d f32 array: {e}"))?;
                arrays.push((name.to_string(), a));
            }
            Ok(())
        })?;
        let bytes = meta_bytes.ok_or_else(|| bad(format!("no `{META}` header member")))?;
        let text = String::from_utf8(bytes).map_err(|_| bad("header is not UTF-8".into()))?;
        let mut meta = BTreeMap::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| bad(format!("header line {line:?} is not key=value")))?;
            meta.insert(k.to_string(), v.to_string());
        }
        Ok(ModelFile {
            meta,
            arrays,
            path: Some(path.to_path_buf()),
        })
    }

    /// The header value for `key`, or an error naming the file and the missing key.
    ///
    /// # Errors
    ///
    /// [`Error::ModelFile`] if the header has no `key`.
    pub fn meta_value(&self, key: &str) -> Result<&str> {
        self.meta
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| self.error(format!("header has no `{key}`")))
    }

    /// Removes and returns the array called `name`, or an error naming the file.
    ///
    /// # Errors
    ///
    /// [`Error::ModelFile`] if there is no array called `name`.
    pub fn take(&mut self, name: &str) -> Result<Array2<f32>> {
        let i = self
            .arrays
            .iter()
            .position(|(n, _)| n == name)
            .ok_or_else(|| self.error(format!("missing array `{name}`")))?;
        Ok(self.arrays.remove(i).1)
    }
}

/// Opens the `.npz` at `path` and calls `each` with every member's name (without `.npy`), a
/// reader positioned at its payload and its npy header, after checking — before anything is
/// allocated — that the member is stored uncompressed, that all members together fit in the
/// file, and that the header's shape times its element size is exactly the payload. Each
/// member is then read to its end, so its CRC-32 is checked.
fn read_members(
    reader: impl Read + Seek,
    file_len: u64,
    path: &Path,
    mut each: impl FnMut(&str, &mut dyn Read, &NpyHeader) -> std::result::Result<(), String>,
) -> Result<()> {
    let bad = |problem: String| Error::ModelFile {
        path: path.to_path_buf(),
        problem,
    };
    let mut zip =
        zip::ZipArchive::new(reader).map_err(|e| bad(format!("not an npz archive: {e}")))?;
    if zip.len() > MAX_MEMBERS {
        return Err(bad(format!(
            "{} members (at most {MAX_MEMBERS} accepted)",
            zip.len()
        )));
    }
    // Stored members do not overlap in a well-formed archive, so together they fit in the
    // file; overlapping members (one payload named many times) cannot multiply memory.
    let mut total: u64 = 0;
    for i in 0..zip.len() {
        let mut member = zip
            .by_index(i)
            .map_err(|e| bad(format!("unreadable member {i}: {e}")))?;
        let raw_name = member.name().to_string();
        let name = raw_name
            .strip_suffix(".npy")
            .unwrap_or(&raw_name)
            .to_string();
        let bad_member = |problem: String| bad(format!("array `{name}`: {problem}"));
        if member.compression() != zip::CompressionMethod::Stored {
            return Err(bad_member(format!(
                "compression {} is not supported (only stored members: numpy.savez, not \
                 savez_compressed)",
                member.compression()
            )));
        }
        if member.encrypted() {
            return Err(bad_member("encrypted members are not supported".into()));
        }
        let size = member.size();
        total = total.saturating_add(size);
        if size != member.compressed_size() || total > file_len {
            return Err(bad_member(format!(
                "claims {size} bytes ({} stored; {total} in all members so far) in a file \
                 of {file_len} bytes",
                member.compressed_size()
            )));
        }
        let header = read_npy_header(&mut member, size).map_err(&bad_member)?;
        each(&name, &mut member, &header).map_err(&bad_member)?;
        let mut end = [0u8; 1];
        match member.read(&mut end) {
            Ok(0) => {}
            Ok(_) => return Err(bad_member("bytes after the array".into())),
            Err(e) => return Err(bad_member(format!("corrupt member: {e}"))),
        }
    }
    Ok(())
}

/// Every array of a plain `.npz` (as `numpy.savez` writes it; no header member needed) by
/// name, as `f32` of any dimension (`f64`, `i64` and `u8` members are converted), with the same checks as
/// [`ModelFile::load`]: a file's claimed sizes are checked against its real length before
/// anything is allocated.
pub(crate) fn read_named_arrays(path: &Path) -> Result<Vec<(String, ndarray::ArrayD<f32>)>> {
    let file = open_regular(path)?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut arrays = Vec::new();
    read_members(BufReader::new(file), len, path, |name, member, header| {
        arrays.push((name.to_string(), read_float_array(member, header)?));
        Ok(())
    })?;
    Ok(arrays)
}

/// Element type of an npy member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dtype {
    U8,
    F32 {
        big_endian: bool,
    },
    F64 {
        big_endian: bool,
    },
    /// Integers (PyTorch's `num_batches_tracked`), read by the `.npz` importer as floats.
    I64 {
        big_endian: bool,
    },
}

impl Dtype {
    fn size(self) -> u64 {
        match self {
            Dtype::U8 => 1,
            Dtype::F32 { .. } => 4,
            Dtype::F64 { .. } | Dtype::I64 { .. } => 8,
        }
    }
}

/// A parsed npy header, with the payload length already checked against the member's size.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NpyHeader {
    dtype: Dtype,
    fortran_order: bool,
    shape: Vec<usize>,
    /// Number of elements (the product of `shape`).
    len: usize,
}

/// Reads the npy preamble and header of a member of `member_size` bytes and checks that the
/// payload the header claims is exactly what is left of the member.
fn read_npy_header(r: &mut impl Read, member_size: u64) -> std::result::Result<NpyHeader, String> {
    let mut pre = [0u8; 8];
    r.read_exact(&mut pre)
        .map_err(|e| format!("truncated npy preamble: {e}"))?;
    if &pre[..6] != b"\x93NUMPY" {
        return Err("not an npy array (bad magic)".into());
    }
    let (header_len, prefix) = match pre[6] {
        1 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b)
                .map_err(|e| format!("truncated npy preamble: {e}"))?;
            (u16::from_le_bytes(b) as usize, 10u64)
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            r.read_exact(&mut b)
                .map_err(|e| format!("truncated npy preamble: {e}"))?;
            (u32::from_le_bytes(b) as usize, 12u64)
        }
        v => return Err(format!("unsupported npy version {v}.{}", pre[7])),
    };
    if header_len > MAX_NPY_HEADER || prefix + header_len as u64 > member_size {
        return Err(format!(
            "npy header of {header_len} bytes in a member of {member_size} bytes"
        ));
    }
    let mut text = vec![0u8; header_len];
    r.read_exact(&mut text)
        .map_err(|e| format!("truncated npy header: {e}"))?;
    let text = std::str::from_utf8(&text).map_err(|_| "npy header is not UTF-8".to_string())?;
    let (descr, fortran_order, shape) = parse_npy_dict(text)?;
    let dtype = match descr.as_str() {
        "|u1" | "<u1" | ">u1" | "u1" => Dtype::U8,
        "<f4" => Dtype::F32 { big_endian: false },
        ">f4" => Dtype::F32 { big_endian: true },
        "<f8" => Dtype::F64 { big_endian: false },
        ">f8" => Dtype::F64 { big_endian: true },
        "<i8" => Dtype::I64 { big_endian: false },
        ">i8" => Dtype::I64 { big_endian: true },
        other => return Err(format!("unsupported dtype {other:?}")),
    };
    let len = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} overflows"))?;
    let payload = member_size - prefix - header_len as u64;
    let claimed = (len as u64).checked_mul(dtype.size());
    if claimed != Some(payload) {
        return Err(format!(
            "shape {shape:?} of {descr} needs {} bytes but the member holds {payload}",
            claimed.map_or_else(|| "more than 2^64".to_string(), |c| c.to_string())
        ));
    }
    Ok(NpyHeader {
        dtype,
        fortran_order,
        shape,
        len,
    })
}

/// Parses the Python dict literal of an npy header:
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`.
fn parse_npy_dict(text: &str) -> std::result::Result<(String, bool, Vec<usize>), String> {
    let bad = || format!("malformed npy header {:?}", truncate(text, 120));
    let body = text
        .trim()
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .ok_or_else(bad)?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    let mut rest = body.trim_start();
    while !rest.is_empty() {
        let (key, after) = parse_py_str(rest).ok_or_else(bad)?;
        let after = after.trim_start().strip_prefix(':').ok_or_else(bad)?;
        let after = after.trim_start();
        rest = match key.as_str() {
            "descr" => {
                let (v, a) = parse_py_str(after).ok_or_else(bad)?;
                descr = Some(v);
                a
            }
            "fortran_order" => {
                if let Some(a) = after.strip_prefix("False") {
                    fortran = Some(false);
                    a
                } else if let Some(a) = after.strip_prefix("True") {
                    fortran = Some(true);
                    a
                } else {
                    return Err(bad());
                }
            }
            "shape" => {
                let a = after.strip_prefix('(').ok_or_else(bad)?;
                let close = a.find(')').ok_or_else(bad)?;
                let mut dims = Vec::new();
                for part in a[..close].split(',') {
                    let part = part.trim();
                    if part.is_empty() {
                        continue;
                    }
                    if dims.len() >= 32 {
                        return Err(bad());
                    }
                    dims.push(part.parse::<usize>().map_err(|_| bad())?);
                }
                shape = Some(dims);
                &a[close + 1..]
            }
            _ => return Err(bad()),
        };
        rest = rest.trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    match (descr, fortran, shape) {
        (Some(d), Some(f), Some(s)) => Ok((d, f, s)),
        _ => Err(bad()),
    }
}

/// A quoted Python string (no escapes) at the start of `s`, and what follows it.
fn parse_py_str(s: &str) -> Option<(String, &str)> {
    let q = s.chars().next().filter(|&c| c == '\'' || c == '"')?;
    let inner = &s[1..];
    let end = inner.find(q)?;
    Some((inner[..end].to_string(), &inner[end + 1..]))
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The payload of a 1-d `u8` member.
fn read_u8_array(
    r: &mut (impl Read + ?Sized),
    h: &NpyHeader,
) -> std::result::Result<Vec<u8>, String> {
    if h.dtype != Dtype::U8 || h.shape.len() != 1 {
        return Err(format!(
            "the header must be a 1-d u8 array, got {:?} of shape {:?}",
            h.dtype, h.shape
        ));
    }
    let mut out = Vec::with_capacity(h.len);
    r.take(h.len as u64)
        .read_to_end(&mut out)
        .map_err(|e| format!("unreadable payload: {e}"))?;
    if out.len() != h.len {
        return Err(format!(
            "truncated payload: {} of {} bytes",
            out.len(),
            h.len
        ));
    }
    Ok(out)
}

/// The payload of an `f32` or `f64` member of any dimension as `f32`, in standard layout.
fn read_float_array(
    r: &mut dyn Read,
    h: &NpyHeader,
) -> std::result::Result<ndarray::ArrayD<f32>, String> {
    let size = h.dtype.size() as usize;
    let decode = |b: &[u8]| -> f32 {
        match h.dtype {
            Dtype::F32 { big_endian } => {
                let b = [b[0], b[1], b[2], b[3]];
                if big_endian {
                    f32::from_be_bytes(b)
                } else {
                    f32::from_le_bytes(b)
                }
            }
            Dtype::F64 { big_endian } => {
                let b = [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]];
                (if big_endian {
                    f64::from_be_bytes(b)
                } else {
                    f64::from_le_bytes(b)
                }) as f32
            }
            Dtype::I64 { big_endian } => {
                let b = [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]];
                (if big_endian {
                    i64::from_be_bytes(b)
                } else {
                    i64::from_le_bytes(b)
                }) as f32
            }
            // Bytes (the `.npz` importer's layer list) as their values.
            Dtype::U8 => f32::from(b[0]),
        }
    };
    // The length was checked against the member's stored size, which fits in the file.
    let mut values = Vec::with_capacity(h.len);
    let mut buf = [0u8; 64 * 1024];
    let mut left = h.len * size;
    while left > 0 {
        let chunk = &mut buf[..left.min(64 * 1024)];
        r.read_exact(chunk)
            .map_err(|e| format!("truncated payload: {e}"))?;
        values.extend(chunk.chunks_exact(size).map(decode));
        left -= chunk.len();
    }
    let shape = ndarray::IxDyn(&h.shape);
    let a = if h.fortran_order {
        ndarray::ArrayD::from_shape_vec(shape.f(), values)
            .map(|a| a.as_standard_layout().into_owned())
    } else {
        ndarray::ArrayD::from_shape_vec(shape, values)
    };
    a.map_err(|e| format!("cannot shape payload: {e}"))
}

/// The payload of a 2-d `f32` member, in standard (row-major) layout.
fn read_f32_array(
    r: &mut (impl Read + ?Sized),
    h: &NpyHeader,
) -> std::result::Result<Array2<f32>, String> {
    let Dtype::F32 { big_endian } = h.dtype else {
        return Err(format!("dtype is {:?}", h.dtype));
    };
    let &[rows, cols] = h.shape.as_slice() else {
        return Err(format!("shape {:?}", h.shape));
    };
    // The length was checked against the member's stored size, which fits in the file.
    let mut values = Vec::with_capacity(h.len);
    let mut buf = [0u8; 64 * 1024];
    let mut left = h.len * 4;
    while left > 0 {
        let chunk = &mut buf[..left.min(64 * 1024)];
        r.read_exact(chunk)
            .map_err(|e| format!("truncated payload: {e}"))?;
        values.extend(chunk.chunks_exact(4).map(|b| {
            let b = [b[0], b[1], b[2], b[3]];
            if big_endian {
                f32::from_be_bytes(b)
            } else {
                f32::from_le_bytes(b)
            }
        }));
        left -= chunk.len();
    }
    let a = if h.fortran_order {
        Array2::from_shape_vec((rows, cols).f(), values)
            .map(|a| a.as_standard_layout().into_owned())
    } else {
        Array2::from_shape_vec((rows, cols), values)
    };
    a.map_err(|e| format!("cannot shape payload: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_dict_parses_what_numpy_writes() {
        let (d, f, s) =
            parse_npy_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }    \n")
                .unwrap();
        assert_eq!((d.as_str(), f, s), ("<f4", false, vec![3, 4]));
        let (_, _, s) =
            parse_npy_dict("{'descr': '|u1', 'fortran_order': True, 'shape': (5,)}").unwrap();
        assert_eq!(s, vec![5]);
        assert!(parse_npy_dict("{'descr': '<f4'}").is_err());
        assert!(
            parse_npy_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 4)}").is_err()
        );
        assert!(parse_npy_dict("").is_err());
    }
}
