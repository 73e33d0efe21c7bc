//! Opening a file for reading only if it is a regular file, so that no reader can be made to
//! block on a FIFO or read a device without end.

use std::fs::File;
use std::path::Path;

use crate::error::{Error, Result};

/// Opens `path` for reading if it is a regular file (symbolic links followed), and refuses
/// anything else with [`Error::NotRegularFile`]: every file the crate reads goes through here.
///
/// Opening a FIFO for reading blocks until a writer appears, and a device such as
/// `/dev/zero` never ends, so the type is checked before opening. So that a swap between the
/// check and the open cannot block either, the open itself does not wait (`O_NONBLOCK` on
/// Unix, which does not affect reads of a regular file) and the opened file's own metadata
/// is checked again.
///
/// # Errors
///
/// [`Error::Io`] if the path cannot be inspected or opened (missing, no permission);
/// [`Error::NotRegularFile`] for anything but a regular file.
pub(crate) fn open_regular(path: &Path) -> Result<File> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    check_regular(path, &meta.file_type())?;
    let file = open_without_waiting(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    check_regular(path, &meta.file_type())?;
    Ok(file)
}

#[cfg(unix)]
fn open_without_waiting(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

#[cfg(not(unix))]
fn open_without_waiting(path: &Path) -> std::io::Result<File> {
    File::open(path)
}

fn check_regular(path: &Path, kind: &std::fs::FileType) -> Result<()> {
    if kind.is_file() {
        return Ok(());
    }
    let what = if kind.is_dir() {
        "a directory"
    } else {
        special_kind(kind)
    };
    Err(Error::NotRegularFile {
        path: path.to_path_buf(),
        kind: what,
    })
}

#[cfg(unix)]
fn special_kind(kind: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

#[cfg(not(unix))]
fn special_kind(_: &std::fs::FileType) -> &'static str {
    "not a file"
}
