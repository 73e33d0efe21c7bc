//! Saving and loading models as `.npz`: named `f32` arrays plus a small text header that
//! records what the arrays are. Files are written to a temporary name and renamed, so a crash
//! never leaves half a model behind.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2};
use ndarray_npy::{NpzReader, NpzWriter};

use crate::error::{Error, Result};

/// Name of the array holding the UTF-8 `key=value` header.
const META: &str = "meta";

/// The named arrays and header of a model file.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFile {
    /// `key=value` pairs describing the model (kind, architecture, format version…).
    pub meta: BTreeMap<String, String>,
    /// Named 2-d parameter arrays, in order.
    pub arrays: Vec<(String, Array2<f32>)>,
}

impl ModelFile {
    /// Writes the file atomically: a temporary sibling, flushed and synced, then renamed.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = temp_sibling(path);
        let result = (|| -> Result<()> {
            let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
            let mut npz = NpzWriter::new(BufWriter::new(file));
            let header: String = self
                .meta
                .iter()
                .map(|(k, v)| format!("{k}={v}\n"))
                .collect();
            let bytes = Array1::from(header.into_bytes());
            let bad = |e: ndarray_npy::WriteNpzError| Error::ModelFile {
                path: path.to_path_buf(),
                problem: format!("cannot write: {e}"),
            };
            npz.add_array(META, &bytes).map_err(bad)?;
            for (name, a) in &self.arrays {
                npz.add_array(name.as_str(), a).map_err(bad)?;
            }
            let mut w = npz.finish().map_err(bad)?;
            w.flush().map_err(|e| Error::io(&tmp, e))?;
            let file = w
                .into_inner()
                .map_err(|e| Error::io(&tmp, e.into_error()))?;
            file.sync_all().map_err(|e| Error::io(&tmp, e))?;
            std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Reads a file written by [`ModelFile::save`]; a missing header, a non-UTF-8 header, or an
    /// unreadable array is a [`Error::ModelFile`] naming the file.
    pub fn load(path: &Path) -> Result<ModelFile> {
        let bad = |problem: String| Error::ModelFile {
            path: path.to_path_buf(),
            problem,
        };
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let mut npz = NpzReader::new(BufReader::new(file))
            .map_err(|e| bad(format!("not an npz archive: {e}")))?;
        let names = npz
            .names()
            .map_err(|e| bad(format!("unreadable archive: {e}")))?;
        let bytes: Array1<u8> = npz
            .by_name(META)
            .map_err(|e| bad(format!("no readable `{META}` header: {e}")))?;
        let text =
            String::from_utf8(bytes.to_vec()).map_err(|_| bad("header is not UTF-8".into()))?;
        let mut meta = BTreeMap::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| bad(format!("header line {line:?} is not key=value")))?;
            meta.insert(k.to_string(), v.to_string());
        }
        let mut arrays = Vec::new();
        for name in names {
            let name = name.strip_suffix(".npy").unwrap_or(&name).to_string();
            if name == META {
                continue;
            }
            let a: Array2<f32> = npz
                .by_name(&name)
                .map_err(|e| bad(format!("array `{name}` is not a 2-d f32 array: {e}")))?;
            arrays.push((name, a));
        }
        Ok(ModelFile { meta, arrays })
    }

    /// The header value for `key`, or an error naming the file and the missing key.
    pub fn meta_value(&self, key: &str, path: &Path) -> Result<&str> {
        self.meta
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| Error::ModelFile {
                path: path.to_path_buf(),
                problem: format!("header has no `{key}`"),
            })
    }

    /// Removes and returns the array called `name`, or an error naming the file.
    pub fn take(&mut self, name: &str, path: &Path) -> Result<Array2<f32>> {
        let i = self
            .arrays
            .iter()
            .position(|(n, _)| n == name)
            .ok_or_else(|| Error::ModelFile {
                path: path.to_path_buf(),
                problem: format!("missing array `{name}`"),
            })?;
        Ok(self.arrays.remove(i).1)
    }
}

/// A temporary name next to `path`, unique per process, so the final rename stays on one
/// file system and is atomic.
pub(crate) fn temp_sibling(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".tmp{}", std::process::id()));
    path.with_file_name(name)
}
