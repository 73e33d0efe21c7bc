//! `Mnist::download` against a local HTTP server started by each test, serving the
//! repository's own MNIST files: good files, a body cut short, content with the wrong
//! checksum, a 404, and a server that never answers (a timeout, not a hang).

use blindspot::Check;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use blindspot::data::download::MNIST_FILES;
use blindspot::data::{DownloadParams, Mnist};
use blindspot::Error;
use flate2::write::GzEncoder;

/// The repository's copy of MNIST, which the server serves.
fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist")
}

/// A fresh, empty directory for one test.
fn empty_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("blindspot-download-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Serves `/<mode>/<file>` on 127.0.0.1 until the test ends, each connection on its own
/// thread: `good` the repository's file, `short` its first half under the full
/// Content-Length, `wrong` a gzip of zeros of the right size, `missing` a 404, `stall`
/// nothing at all. Returns the base URL and a count of the requests served.
fn serve() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let count = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || answer(stream));
        }
    });
    (base, requests)
}

fn answer(mut stream: TcpStream) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (mode, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let file = std::fs::read(source_dir().join(name));
    let (status, body, claimed) = match (mode, file) {
        ("stall", _) => {
            std::thread::sleep(Duration::from_secs(600));
            return;
        }
        ("good", Ok(bytes)) => ("200 OK", bytes.clone(), bytes.len()),
        ("short", Ok(bytes)) => ("200 OK", bytes[..bytes.len() / 2].to_vec(), bytes.len()),
        ("wrong", Ok(_)) => {
            let len = MNIST_FILES
                .iter()
                .find(|f| f.name == name)
                .unwrap()
                .content_len;
            let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&vec![0u8; len as usize]).unwrap();
            let bytes = gz.finish().unwrap();
            ("200 OK", bytes.clone(), bytes.len())
        }
        _ => ("404 Not Found", b"not here".to_vec(), 8),
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: {claimed}\r\nConnection: close\r\n\r\n"
    );
    let _ = stream.write_all(&body);
}

fn params(base: &str, modes: &[&str]) -> DownloadParams {
    DownloadParams::default()
        .with_mirrors(modes.iter().map(|m| format!("{base}/{m}/")))
        .with_timeout_secs(2.0)
}

/// The download error of fetching into a fresh directory from the `mode` mirror, after
/// checking that nothing was left in the directory (a failed file is never written).
fn failure(mode: &str) -> (String, String, String) {
    let (base, _) = serve();
    let dir = empty_dir(mode);
    let config = params(&base, &[mode]).check().unwrap();
    let err = Mnist::download_with(&dir, &config).unwrap_err();
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
    assert!(left.is_empty(), "{mode}: left {left:?}");
    std::fs::remove_dir_all(&dir).unwrap();
    match err {
        Error::Download { file, url, problem } => {
            // The first file fetched is the first that fails.
            assert_eq!(file, "train-images-idx3-ubyte.gz");
            assert_eq!(url, format!("{base}/{mode}/train-images-idx3-ubyte.gz"));
            (file, url, problem)
        }
        other => panic!("{mode}: expected Error::Download, got {other:?}"),
    }
}

#[test]
fn good_files_are_downloaded_checked_and_loaded_and_not_fetched_again() {
    let (base, requests) = serve();
    let dir = empty_dir("good");
    let config = params(&base, &["good"]).check().unwrap();
    let mnist = Mnist::download_with(&dir, &config).unwrap();
    assert_eq!((mnist.train.len(), mnist.test.len()), (60_000, 10_000));
    for f in &MNIST_FILES {
        let got = std::fs::read(dir.join(f.name)).unwrap();
        assert_eq!(
            got,
            std::fs::read(source_dir().join(f.name)).unwrap(),
            "{}",
            f.name
        );
    }
    assert_eq!(requests.load(Ordering::SeqCst), 4);
    // Everything is there and right: nothing is fetched a second time.
    Mnist::download_with(&dir, &config).unwrap();
    Mnist::load_or_download(&dir).unwrap();
    assert_eq!(requests.load(Ordering::SeqCst), 4);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_mirror_that_fails_is_followed_by_the_next() {
    let (base, _) = serve();
    let dir = empty_dir("fallback");
    let config = params(&base, &["missing", "wrong", "good"])
        .check()
        .unwrap();
    let mnist = Mnist::download_with(&dir, &config).unwrap();
    assert_eq!(
        mnist.train.labels(),
        Mnist::load(source_dir()).unwrap().train.labels()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_body_cut_short_is_an_error_naming_file_and_url() {
    let (_, _, problem) = failure("short");
    assert!(
        problem.contains("cut short") || problem.contains("not a whole gzip"),
        "{problem}"
    );
}

#[test]
fn content_with_the_wrong_checksum_is_refused() {
    let (_, _, problem) = failure("wrong");
    assert!(problem.contains("SHA-256"), "{problem}");
    assert!(problem.contains(MNIST_FILES[0].content_sha256), "{problem}");
}

#[test]
fn a_404_is_an_error_with_its_status() {
    let (_, _, problem) = failure("missing");
    assert!(problem.contains("404"), "{problem}");
}

#[test]
fn a_server_that_stalls_times_out() {
    let (_, _, problem) = failure("stall");
    assert!(problem.contains("timed out"), "{problem}");
}

#[test]
fn every_mirror_failing_names_them_all() {
    let (base, _) = serve();
    let dir = empty_dir("all");
    let config = params(&base, &["missing", "wrong"]).check().unwrap();
    match Mnist::download_with(&dir, &config).unwrap_err() {
        Error::Download { url, problem, .. } => {
            assert!(url.contains("/wrong/"), "{url}");
            assert!(
                problem.contains("SHA-256") && problem.contains("/missing/"),
                "{problem}"
            );
            assert!(problem.contains("404"), "{problem}");
        }
        other => panic!("expected Error::Download, got {other:?}"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_settings_are_named() {
    let name = |p: DownloadParams| match p.check() {
        Err(Error::InvalidParameter { name, .. }) => name,
        other => panic!("expected InvalidParameter, got {other:?}"),
    };
    let d = DownloadParams::default;
    assert_eq!(name(d().with_mirrors(Vec::<String>::new())), "mirrors");
    assert_eq!(name(d().with_mirrors(["ftp://example.org/"])), "mirrors");
    assert_eq!(name(d().with_timeout_secs(0.0)), "timeout_secs");
    assert_eq!(name(d().with_timeout_secs(f64::NAN)), "timeout_secs");
    assert_eq!(name(d().with_timeout_secs(1e9)), "timeout_secs");
    assert!(d().check().is_ok());
}
