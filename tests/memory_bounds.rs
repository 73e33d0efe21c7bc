//! Small hostile files must not make a load use much memory (issue 13): a model file of at
//! most 4 KB claiming a huge array, and gzip bombs of at most 1 MB (payload inflating far past
//! what the IDX header says, and headers that claim huge payloads), each give a typed error
//! with a peak heap of at most 64 MB. Settings that size an allocation (issue 20: solver
//! memory, pool batch, finite-difference chunk, Fourier grid) are refused above their
//! documented limits before allocating, or cost no more than what they can use.
//!
//! The peak is measured by a counting global allocator, so this file holds a single test:
//! tests in one binary run in parallel threads and would add up in the counter.

use blindspot::Check;
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use blindspot::adapters::{FiniteDifference, MAX_CHUNK};
use blindspot::adversarial_training::{train_with_pools, PoolTrainParams};
use blindspot::attack::BoxLbfgsParams;
use blindspot::data::{read_idx, Dataset};
use blindspot::io::ModelFile;
use blindspot::nn::{Architecture, Autoencoder, Network, TrainParams};
use blindspot::optim::{LBfgsB, LbfgsbError};
use blindspot::spectral::conv_operator_norm;
use blindspot::{Differentiable, Error};
use ndarray::{Array1, Array2, Array4};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator with the caller's arguments, so
// its contract is the system allocator's; the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `realloc`'s contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
            let now = CURRENT.fetch_add(new_size, Ordering::Relaxed) + new_size;
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const LIMIT: usize = 64 << 20;

/// Runs `f` and returns its result with the peak heap growth during the call.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed) - base)
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("blindspot-membound-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An npy member (version 1.0) with the given header dict and payload.
fn npy(dict: &str, payload: &[u8]) -> Vec<u8> {
    let mut h = dict.to_string();
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(' ');
    }
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(payload);
    out
}

/// A stored zip entry with a lying uncompressed size in both headers: hand-written so the
/// sizes can claim anything.
fn zip_with(members: &[(&str, Vec<u8>, Option<u32>)]) -> Vec<u8> {
    let crc = |d: &[u8]| {
        let mut c = flate2::Crc::new();
        c.update(d);
        c.sum()
    };
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data, claim) in members {
        let size = claim.unwrap_or(data.len() as u32);
        let offset = out.len() as u32;
        let mut local = vec![0x50, 0x4b, 0x03, 0x04, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        local.extend_from_slice(&crc(data).to_le_bytes());
        local.extend_from_slice(&size.to_le_bytes()); // compressed
        local.extend_from_slice(&size.to_le_bytes()); // uncompressed
        local.extend_from_slice(&(name.len() as u16).to_le_bytes());
        local.extend_from_slice(&0u16.to_le_bytes());
        local.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&local);
        out.extend_from_slice(data);
        let mut c = vec![0x50, 0x4b, 0x01, 0x02, 20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        c.extend_from_slice(&crc(data).to_le_bytes());
        c.extend_from_slice(&size.to_le_bytes());
        c.extend_from_slice(&size.to_le_bytes());
        c.extend_from_slice(&(name.len() as u16).to_le_bytes());
        c.extend_from_slice(&[0; 12]); // extra, comment, disk, internal and external attributes
        c.extend_from_slice(&offset.to_le_bytes());
        c.extend_from_slice(name.as_bytes());
        central.extend_from_slice(&c);
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    let mut end = vec![0x50, 0x4b, 0x05, 0x06, 0, 0, 0, 0];
    end.extend_from_slice(&(members.len() as u16).to_le_bytes());
    end.extend_from_slice(&(members.len() as u16).to_le_bytes());
    end.extend_from_slice(&(central.len() as u32).to_le_bytes());
    end.extend_from_slice(&cd_offset.to_le_bytes());
    end.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&end);
    out
}

fn meta_member() -> Vec<u8> {
    let text = b"activation=sigmoid\nformat=1\ninput=4\nkind=mlp\nname=FC3\n";
    npy(
        &format!(
            "{{'descr': '|u1', 'fortran_order': False, 'shape': ({},), }}",
            text.len()
        ),
        text,
    )
}

fn check_model_file(path: &Path, what: &str) {
    assert!(
        std::fs::metadata(path).unwrap().len() <= 4096,
        "{what}: file over 4 KB"
    );
    let (res, peak) = peak_during(|| ModelFile::load(path));
    assert!(
        matches!(res, Err(Error::ModelFile { .. })),
        "{what}: expected a ModelFile error, got {res:?}"
    );
    let (mlp, peak_mlp) = peak_during(|| Network::load(path));
    assert!(mlp.is_err());
    let (ae, peak_ae) = peak_during(|| Autoencoder::load(path));
    assert!(ae.is_err());
    let peak = peak.max(peak_mlp).max(peak_ae);
    eprintln!(
        "{what}: {} bytes on disk, peak heap {peak} bytes",
        std::fs::metadata(path).unwrap().len()
    );
    assert!(peak <= LIMIT, "{what}: peak heap {peak} bytes");
}

fn check_idx(path: &Path, what: &str) {
    let size = std::fs::metadata(path).unwrap().len();
    assert!(size <= 1 << 20, "{what}: file of {size} bytes is over 1 MB");
    let (res, peak) = peak_during(|| read_idx(path));
    let err = res.expect_err(what);
    assert!(matches!(err, Error::DataFile { .. }), "{what}: {err}");
    eprintln!("{what}: {size} bytes on disk, peak heap {peak} bytes: {err}");
    assert!(peak <= LIMIT, "{what}: peak heap {peak} bytes");
}

/// `copies` concatenated gzip members, each `chunk` inflated bytes of zeros (the first
/// starting with `header`): MultiGzDecoder reads them as one stream.
fn gzip_bomb(header: &[u8], chunk: usize, copies: usize) -> Vec<u8> {
    let gz = |data: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    };
    let mut first = header.to_vec();
    first.resize(chunk, 0);
    let zeros = gz(&vec![0u8; chunk]);
    let mut out = gz(&first);
    for _ in 1..copies {
        out.extend_from_slice(&zeros);
    }
    out
}

#[test]
fn hostile_files_and_huge_settings_are_typed_errors_with_bounded_memory() {
    small_hostile_files();
    settings_that_size_allocations();
}

fn small_hostile_files() {
    let dir = temp_dir();

    // --- Model files of at most 4 KB.
    // An npy header claiming 2^20 × 2^20 f32 (4 TiB) over 16 bytes of data.
    let huge = npy(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1048576, 1048576), }",
        &[0; 16],
    );
    let p = dir.join("huge_shape.npz");
    std::fs::write(
        &p,
        zip_with(&[("meta.npy", meta_member(), None), ("W0.npy", huge, None)]),
    )
    .unwrap();
    check_model_file(&p, "npy header claiming 4 TiB");

    // A claim of 1 GiB: large enough to hurt, small enough that an allocation would succeed.
    let gib = npy(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (16384, 16384), }",
        &[0; 64],
    );
    let p = dir.join("gib_shape.npz");
    std::fs::write(
        &p,
        zip_with(&[("meta.npy", meta_member(), None), ("W0.npy", gib, None)]),
    )
    .unwrap();
    check_model_file(&p, "npy header claiming 1 GiB");

    // The zip directory lying: a member claiming 4 GB, with a consistent npy header.
    let lie = npy(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1000, 1000000), }",
        &[0; 64],
    );
    let p = dir.join("zip_size_lie.npz");
    std::fs::write(
        &p,
        zip_with(&[
            ("meta.npy", meta_member(), None),
            ("W0.npy", lie, Some(0xffff_fff0)),
        ]),
    )
    .unwrap();
    check_model_file(&p, "zip member claiming 4 GB");

    // Many members in 4 KB.
    let many: Vec<_> = (0..15)
        .map(|i| {
            (
                if i == 0 { "meta.npy" } else { "W0.npy" },
                meta_member(),
                None,
            )
        })
        .collect();
    let bytes = zip_with(&many);
    let p = dir.join("many_members.npz");
    assert!(bytes.len() <= 4096);
    std::fs::write(&p, &bytes).unwrap();
    let (res, peak) = peak_during(|| ModelFile::load(&p));
    assert!(res.is_err());
    assert!(peak <= LIMIT);

    // --- Gzipped IDX files of at most 1 MB.
    // Header says 10 labels; the payload inflates to 1 GiB.
    let p = dir.join("bomb_small_header.gz");
    std::fs::write(&p, gzip_bomb(&[0, 0, 8, 1, 0, 0, 0, 10], 16 << 20, 64)).unwrap();
    check_idx(&p, "gzip bomb, header says 10 bytes, inflates to 1 GiB");

    // Header says 1 GiB and the payload really is 1 GiB of zeros: consistent, but far past
    // the ratio a 1 MB file may claim.
    let p = dir.join("bomb_consistent.gz");
    std::fs::write(&p, gzip_bomb(&[0, 0, 8, 1, 0x40, 0, 0, 0], 16 << 20, 64)).unwrap();
    check_idx(&p, "gzip bomb, header says 1 GiB and inflates to it");

    // Header says (2^32 − 1)^2 bytes.
    let p = dir.join("bomb_huge_header.gz");
    std::fs::write(
        &p,
        gzip_bomb(
            &[0, 0, 8, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            1 << 20,
            1,
        ),
    )
    .unwrap();
    check_idx(&p, "gzip, header says 2^64 bytes");

    // Four dimensions whose product overflows.
    let mut header = vec![0, 0, 8, 4];
    header.extend_from_slice(&[0xff; 16]);
    let p = dir.join("overflow.gz");
    std::fs::write(&p, gzip_bomb(&header, 1 << 16, 1)).unwrap();
    check_idx(&p, "gzip, dimensions overflow");

    // Raw (not gzipped) file claiming 4 GiB.
    let p = dir.join("raw_claim.idx");
    std::fs::write(&p, [0, 0, 8, 1, 0xff, 0xff, 0xff, 0xff, 1, 2, 3]).unwrap();
    check_idx(&p, "raw file claiming 4 GiB");

    std::fs::remove_dir_all(&dir).ok();
}

/// `Err(InvalidParameter)` named `name`, with a peak heap within [`LIMIT`].
fn refused<T: std::fmt::Debug>(name: &str, what: &str, f: impl FnOnce() -> Result<T, Error>) {
    let (res, peak) = peak_during(f);
    match res {
        Err(Error::InvalidParameter { name: n, reason }) => {
            assert_eq!(n, name, "{what}: {reason}");
            eprintln!("{what}: refused ({reason}), peak heap {peak} bytes");
        }
        other => panic!("{what}: expected InvalidParameter({name}), got {other:?}"),
    }
    assert!(peak <= LIMIT, "{what}: peak heap {peak} bytes");
}

fn settings_that_size_allocations() {
    // --- L-BFGS-B memory: m and m × n are checked against the documented limits when set.
    let solver = || LBfgsB::new(Array1::zeros(784), Array1::ones(784)).unwrap();
    for m in [
        usize::MAX,
        usize::MAX / 2 + 1,
        1_000_000,
        LBfgsB::MAX_MEMORY + 1,
    ] {
        let (res, peak) = peak_during(|| solver().try_with_memory(m));
        assert!(
            matches!(
                res,
                Err(LbfgsbError::InvalidParameter { name: "memory", .. })
            ),
            "memory {m}: {res:?}"
        );
        assert!(peak <= LIMIT, "memory {m}: peak heap {peak} bytes");
    }
    assert!(solver().try_with_memory(LBfgsB::MAX_MEMORY).is_ok());
    // Within the pair limit, but 1000 pairs of 2^17 variables need 2 GiB.
    let wide = LBfgsB::new(Array1::zeros(1 << 17), Array1::ones(1 << 17)).unwrap();
    let (res, peak) = peak_during(|| wide.try_with_memory(1000));
    assert!(
        matches!(
            res,
            Err(LbfgsbError::InvalidParameter { name: "memory", .. })
        ),
        "{res:?}"
    );
    assert!(peak <= LIMIT);

    // --- Finite-difference chunk: refused above the limit; at the limit, the buffer of
    // perturbed rows stays within MAX_SCRATCH values (64 MiB) however many coordinates the
    // batch has (64 × 784 here, 50,176 coordinates: 315 MB of rows if all went at once).
    let mlp = Network::new(Architecture::parse("FC10", 784).unwrap(), 0);
    refused("chunk", "finite-difference chunk usize::MAX", || {
        FiniteDifference::new(mlp.clone(), 1e-2)?.try_with_chunk(usize::MAX)
    });
    let fd = FiniteDifference::new(mlp.clone(), 1e-2)
        .unwrap()
        .try_with_chunk(MAX_CHUNK)
        .unwrap();
    let x = Array2::from_elem((64, 784), 0.5f32);
    let labels: Vec<usize> = (0..64).map(|i| i % 10).collect();
    let (res, peak) = peak_during(|| fd.loss_and_input_grad(x.view(), &labels));
    let (_, grad) = res.unwrap();
    assert!(grad.iter().all(|g| g.is_finite()));
    eprintln!("finite differences with chunk {MAX_CHUNK}: peak heap {peak} bytes");
    assert!(
        peak <= 2 * LIMIT,
        "finite differences: peak heap {peak} bytes"
    );

    // --- Fourier norm: a 16384² grid is within the element limit but its buffers are 12 GB;
    // 4096 output channels on a 256² grid make 2 GB of spectra.
    let one = Array4::<f32>::ones((1, 1, 1, 1));
    refused("size", "Fourier norm on a 16384² grid", || {
        conv_operator_norm(one.view(), 1 << 14, 1 << 14, 1)
    });
    let wide = Array4::<f32>::ones((3, 3, 1, 4096));
    refused("size", "Fourier norm with 4096 output channels", || {
        conv_operator_norm(wide.view(), 256, 256, 1)
    });

    // --- Pool batch: 1,000,000 rows asked of pools of 8 examples. A pool step takes at most
    // the pool's size, and only that is allocated: training runs, within the limit.
    let n = 40;
    let images = Array2::from_shape_fn((n, 784), |(i, j)| ((i * 31 + j * 7) % 97) as f32 / 97.0);
    let data = Dataset::new(images, (0..n).map(|i| i % 10).collect(), (28, 28), 10).unwrap();
    let train = TrainParams {
        epochs: 2,
        batch_size: 10,
        learning_rate: 0.1,
        ..TrainParams::default()
    };
    let config = PoolTrainParams::new(train, vec![0])
        .with_pool_size(8)
        .with_pool_batch(1_000_000)
        .with_warmup_epochs(1)
        .check()
        .unwrap();
    let attack = BoxLbfgsParams::default()
        .with_search_steps(0)
        .with_bracket_steps(1)
        .with_max_iters(5)
        .check()
        .unwrap();
    let mut model = Network::new(Architecture::parse("FC10", 784).unwrap(), 3);
    let (res, peak) =
        peak_during(|| train_with_pools(&mut model, &data, None, &attack, &config, |_| {}));
    let report = res.unwrap();
    let pool_steps: usize = report.plain.epochs.iter().map(|e| e.pool_steps).sum();
    assert!(pool_steps > 0);
    eprintln!("pool batch 1,000,000 on pools of 8: peak heap {peak} bytes");
    assert!(peak <= LIMIT, "pool batch: peak heap {peak} bytes");
}
