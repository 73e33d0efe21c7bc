//! The bodies of the fuzz targets (fuzz/fuzz_targets/*.rs), shared with tests/fuzz_corpus.rs,
//! which replays the stored corpus and past crashes through them as ordinary tests. Each
//! function must return (any result is fine) and never panic, abort or allocate without
//! bound, whatever the bytes.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use blindspot::nn::{Architecture, Autoencoder, ModelFile, Network};
use blindspot::Classifier;
use ndarray::Array2;

/// The IDX reader on arbitrary bytes. If the first byte is odd, the rest is gzipped first, so
/// that the checks behind the gzip layer (claimed size, ratio, trailing payload) are reached
/// by mutations that a CRC would otherwise stop; otherwise the bytes are the file itself, raw
/// or (when they start with the gzip magic) a gzip stream.
pub fn idx(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode & 1 == 1 {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(rest).expect("in memory");
        enc.finish().expect("in memory")
    } else {
        rest.to_vec()
    };
    if let Ok(idx) = blindspot::data::parse_idx_bytes(bytes) {
        let n: usize = idx.dims.iter().product();
        assert_eq!(n, idx.data.len());
    }
}

/// The model-file loader on arbitrary bytes: `ModelFile` parsing (zip directory, npy
/// headers, sizes), then both model kinds rebuilt from whatever parsed, and one forward pass
/// of a model that loads.
pub fn model_file(data: &[u8]) {
    let path = Path::new("fuzz.npz");
    let Ok(file) = ModelFile::from_bytes(data, path) else {
        return;
    };
    if let Ok(mlp) = Network::from_model_file(file.clone(), path) {
        if mlp.input_dim() <= 4096 {
            let x = Array2::from_elem((1, mlp.input_dim()), 0.5f32);
            let _ = mlp.logits(x.view());
        }
    }
    if let Ok(ae) = Autoencoder::from_model_file(file, path) {
        if ae.input_dim() <= 4096 {
            let x = Array2::from_elem((1, ae.input_dim()), 0.5f32);
            let _ = ae.reconstruct(x.view());
        }
    }
}

/// The ONNX importer on arbitrary bytes: protobuf decoding, tensor and graph checks, network
/// assembly, and the reference check when the bytes carry one; then one forward pass of a
/// model that imports. The first byte picks verification on (even) or skipped (odd).
pub fn onnx(data: &[u8]) {
    use blindspot::import::onnx::{from_bytes, OnnxParams};
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let params = OnnxParams::default().with_skip_verification(mode % 2 == 1);
    if let Ok(m) = from_bytes(rest, Path::new("fuzz.onnx"), &params) {
        if m.network.input_dim() <= 4096 {
            let x = Array2::from_elem((1, m.network.input_dim()), 0.5f32);
            let _ = m.network.logits(x.view());
        }
    }
}

/// Largest array the construction harness builds (elements): the harness itself stays small,
/// the code under test sees arbitrary shapes below the cap.
const CAP: usize = 1 << 10;

/// Model construction from names and parameters: `Architecture::parse` on an arbitrary name
/// and input width, `Network::from_params` / `Autoencoder::from_params` with arrays whose shapes
/// come from the input (near the architecture's, or not), and `from_model_file` on a header
/// built from the same text.
///
/// Layout: input width (u16 LE), a mode byte (bit 7: shift the width up by 40 bits; bit 0:
/// autoencoder header; the rest picks the activation and code width), the name's length, the
/// name, then pairs of bytes: per layer a signed change of the expected shape, then free
/// shapes.
pub fn construct(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let input = u16::from_le_bytes([data[0], data[1]]) as usize;
    let mode = data[2];
    let split = (data[3] as usize).min(data.len() - 4);
    let (name, shapes) = data[4..].split_at(split);
    let name = String::from_utf8_lossy(name).into_owned();
    let input = if mode & 0x80 != 0 { input << 40 } else { input };
    let arch = Architecture::parse(&name, input);
    let _ = Architecture::parse(&name, 784);

    let mut params = Vec::new();
    let widths = arch.as_ref().map(|a| a.widths()).unwrap_or_default();
    let mut it = shapes.chunks_exact(2);
    for (l, pair) in widths.windows(2).enumerate() {
        let (fan_in, fan_out) = (pair[0], pair[1]);
        let d = it.next().map_or([0, 0], |c| [c[0], c[1]]);
        let r = fan_in.wrapping_add((d[0] as i8) as isize as usize);
        let c = fan_out.wrapping_add((d[1] as i8) as isize as usize);
        for (rows, cols) in [(r, c), (1, c)] {
            // Each side is capped too: ndarray refuses (panics on) shapes such as 0 × 2^64−3,
            // whose non-zero sides overflow isize although the element count is 0. That is the
            // harness's own construction, not the code under test (fuzz/corpus/construct/
            // crash-3b58… was that).
            if rows <= CAP && cols <= CAP && rows * cols <= CAP {
                params.push(Array2::from_elem((rows, cols), (l as f32) * 0.01));
            }
        }
    }
    // Free shapes, capped like the others (at most 255 × 4 and 16 arrays): uncapped 255 × 255
    // arrays made some inputs take seconds, all in the harness's own allocations.
    for c in it.take(16) {
        params.push(Array2::from_elem(
            (c[0] as usize, (c[1] % 5) as usize),
            0.1f32,
        ));
    }
    if let Ok(a) = &arch {
        if let Ok(mlp) = Network::from_params(a.clone(), params.clone()) {
            let x = Array2::from_elem((1, mlp.input_dim()), 0.5f32);
            let _ = mlp.logits(x.view());
        }
    }
    let _ = Autoencoder::from_params(params.clone(), 1e-4);

    let mut meta = BTreeMap::new();
    let kind = if mode & 1 == 0 { "mlp" } else { "autoencoder" };
    meta.insert("kind".to_string(), kind.to_string());
    meta.insert("format".to_string(), "1".to_string());
    meta.insert("name".to_string(), name.clone());
    meta.insert("input".to_string(), input.to_string());
    meta.insert(
        "code".to_string(),
        ((mode & 0x7f) as usize >> 1).to_string(),
    );
    meta.insert("weight_decay".to_string(), "1e-4".to_string());
    let activation = ["sigmoid", "relu", "tanh", name.as_str()][(mode as usize >> 1) % 4];
    meta.insert("activation".to_string(), activation.to_string());
    let names = [
        "W0", "b0", "W1", "b1", "W2", "b2", "W_enc", "b_enc", "W_dec", "b_dec",
    ];
    let arrays = params
        .into_iter()
        .enumerate()
        .map(|(i, a)| (names[(i + mode as usize) % names.len()].to_string(), a))
        .collect();
    let file = ModelFile { meta, arrays };
    let path = Path::new("fuzz.npz");
    let _ = Network::from_model_file(file.clone(), path);
    let _ = Autoencoder::from_model_file(file, path);
}
