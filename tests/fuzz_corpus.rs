//! Replays the stored fuzz corpus (fuzz/corpus/TARGET/: seeds, and every crash the fuzzers
//! found, kept after the fix) through the fuzz targets' bodies, so CI checks that none of
//! them panics again. The fuzzers themselves run with scripts/fuzz.sh.

mod common;

use std::path::PathBuf;

use common::fuzz_harness;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    for f in &files {
        let data = std::fs::read(f).unwrap();
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{} panicked", f.display());
    }
    eprintln!("{target}: replayed {} inputs", files.len());
}

#[test]
fn idx_corpus_replays_without_panics() {
    replay("idx", fuzz_harness::idx);
}

#[test]
fn model_file_corpus_replays_without_panics() {
    replay("model_file", fuzz_harness::model_file);
}

#[test]
fn construct_corpus_replays_without_panics() {
    replay("construct", fuzz_harness::construct);
}

#[test]
fn onnx_corpus_replays_without_panics() {
    replay("onnx", fuzz_harness::onnx);
}

#[test]
fn arch_name_corpus_replays_without_panics() {
    replay("arch_name", fuzz_harness::arch_name);
}

#[test]
fn conv_model_file_corpus_replays_without_panics() {
    replay("conv_model_file", fuzz_harness::conv_model_file);
}
