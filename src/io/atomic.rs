//! Writing a file so that readers never see half of it: a uniquely named temporary sibling,
//! flushed and synced, then renamed over the target.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Writes a file through `write` into a temporary sibling, then renames it over `path`.
///
/// Same directory so the rename stays on one file system and is atomic; the temporary name,
/// `.{name}.{pid}.{thread}.{counter}.tmp`, carries the process id, the thread and a
/// process-wide counter, so concurrent writers (threads or processes) never share one. On any
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
    // `ThreadId`'s Debug form is `ThreadId(N)`; its digits are unique among live threads.
    let thread: String = format!("{:?}", std::thread::current().id())
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    tmp_name.push(format!(
        ".{}.{thread}.{}.tmp",
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

/// The file name a temporary file called `name` was going to replace, if `name` is the
/// temporary sibling of a save: the current form `.{target}.{pid}.{thread}.{counter}.tmp`
/// (see `write_atomic`) or the older `{target}.tmp{pid}`.
pub(crate) fn temp_target(name: &str) -> Option<&str> {
    if let Some(inner) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) {
        // Strip `.{pid}.{thread}.{counter}`: three dot-separated runs of digits.
        let mut rest = inner;
        for _ in 0..3 {
            let dot = rest.rfind('.')?;
            let digits = &rest[dot + 1..];
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            rest = &rest[..dot];
        }
        return (!rest.is_empty()).then_some(rest);
    }
    let at = name.rfind(".tmp")?;
    let digits = &name[at + 4..];
    (at > 0 && !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .then_some(&name[..at])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_map_back_to_their_target() {
        assert_eq!(temp_target(".m.npz.12.3.7.tmp"), Some("m.npz"));
        assert_eq!(temp_target("m.npz.tmp4242"), Some("m.npz"));
        assert_eq!(temp_target("m.npz"), None);
        assert_eq!(temp_target(".m.npz.x.3.7.tmp"), None);
        assert_eq!(temp_target(".tmp"), None);
        assert_eq!(temp_target("m.npz.tmp"), None);
    }
}
