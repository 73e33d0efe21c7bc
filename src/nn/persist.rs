//! Models as records: what a [`Network`] and an [`Autoencoder`] write into a [`ModelFile`]
//! (array names, header keys, architecture strings) and how each is rebuilt from one, kept
//! beside each other and apart from the models themselves, with one save and one load for
//! both through [`crate::io`]. The models' `save`, `load`, `to_model_file` and
//! `from_model_file` delegate here.

use std::collections::BTreeMap;
use std::path::Path;

use ndarray::Array2;

use crate::error::Result;
use crate::io::ModelFile;
use crate::nn::autoencoder::PARAM_NAMES;
use crate::nn::{Activation, Architecture, Autoencoder, InputAffine, Network, Trainable};

/// The format version in the header of every model file.
const FORMAT: &str = "1";

/// Array names of an input normalisation in a saved network.
const INPUT_SCALE: &str = "input_scale";
const INPUT_SHIFT: &str = "input_shift";

/// A model's side of its file. The header's `kind` and `format`, common to every model file,
/// are written and checked by [`to_file`] and [`from_file`], not by each model.
pub(super) trait Record: Sized {
    /// The header's `kind`.
    const KIND: &'static str;

    /// The model's arrays, in file order, after adding its header keys to `meta`.
    fn write(&self, meta: &mut BTreeMap<String, String>) -> Vec<(String, Array2<f32>)>;

    /// The model from a file whose `kind` and `format` were checked.
    fn read(file: &mut ModelFile) -> Result<Self>;
}

pub(super) fn to_file<R: Record>(record: &R) -> ModelFile {
    let mut meta = BTreeMap::new();
    meta.insert("kind".to_string(), R::KIND.to_string());
    meta.insert("format".to_string(), FORMAT.to_string());
    let arrays = record.write(&mut meta);
    ModelFile::new(meta, arrays)
}

pub(super) fn from_file<R: Record>(mut file: ModelFile) -> Result<R> {
    let kind = file.meta_value("kind")?;
    if kind != R::KIND {
        return Err(file.error(format!("kind is {kind:?}, not {:?}", R::KIND)));
    }
    let format = file.meta_value("format")?;
    if format != FORMAT {
        return Err(file.error(format!("unsupported format {format:?}")));
    }
    R::read(&mut file)
}

pub(super) fn save<R: Record>(record: &R, path: &Path) -> Result<()> {
    to_file(record).save(path)
}

pub(super) fn load<R: Record>(path: &Path) -> Result<R> {
    from_file(ModelFile::load(path)?)
}

impl Record for Network {
    const KIND: &'static str = "mlp";

    fn write(&self, meta: &mut BTreeMap<String, String>) -> Vec<(String, Array2<f32>)> {
        let arch = self.arch();
        meta.insert("name".to_string(), arch.to_string());
        meta.insert("input".to_string(), arch.input().to_string());
        meta.insert("activation".to_string(), arch.activation().to_string());
        // A network without stages may still have been built for images (new_conv with no
        // stage, an import): its image shape is part of the architecture, so it is written
        // whenever it is not the dense default, and the file loads back equal.
        if arch.is_conv() || arch.image() != (1, arch.input(), 1) {
            let (h, w, c) = arch.image();
            meta.insert("image".to_string(), format!("{h},{w},{c}"));
        }
        let mut arrays = Network::param_shapes(arch)
            .into_iter()
            .zip(self.params())
            .map(|((name, _), a)| (name, a.clone()))
            .collect::<Vec<_>>();
        if let Some(a) = self.input_affine() {
            let row = |v: &[f32]| Array2::from_shape_vec((1, v.len()), v.to_vec());
            arrays.push((
                INPUT_SCALE.to_string(),
                row(a.scale()).expect("one row of channels"),
            ));
            arrays.push((
                INPUT_SHIFT.to_string(),
                row(a.shift()).expect("one row of channels"),
            ));
        }
        arrays
    }

    fn read(file: &mut ModelFile) -> Result<Self> {
        let input: usize = file
            .meta_value("input")?
            .parse()
            .map_err(|_| file.error("input width is not a number".into()))?;
        let activation: Activation = file.meta_value("activation")?.parse()?;
        let name = file.meta_value("name")?;
        let arch = match file.meta.get("image") {
            Some(image) => {
                let dims: Vec<usize> = image
                    .split(',')
                    .map(|v| v.trim().parse::<usize>())
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|_| file.error(format!("image {image:?} is not `h,w,c`")))?;
                let &[h, w, c] = dims.as_slice() else {
                    return Err(file.error(format!("image {image:?} is not `h,w,c`")));
                };
                let arch = Architecture::parse_image(name, (h, w, c))?;
                if arch.is_conv() {
                    arch
                } else {
                    arch.with_dense_image((h, w, c))
                        .map_err(|e| file.error(e.to_string()))?
                }
            }
            None => Architecture::parse(name, input)?,
        }
        .with_activation(activation);
        if arch.input() != input {
            return Err(file.error(format!(
                "input width {input} does not match the architecture's {}",
                arch.input()
            )));
        }
        let params = Network::param_shapes(&arch)
            .iter()
            .map(|(name, _)| file.take(name))
            .collect::<Result<Vec<_>>>()?;
        let net = Network::from_params(arch, params).map_err(|e| file.error(e.to_string()))?;
        if !file.arrays.iter().any(|(n, _)| n == INPUT_SCALE) {
            return Ok(net);
        }
        let scale = file.take(INPUT_SCALE)?;
        let shift = file.take(INPUT_SHIFT)?;
        let affine = InputAffine::new(
            scale.iter().copied().collect(),
            shift.iter().copied().collect(),
            net.arch().input(),
        )
        .map_err(|e| file.error(e.to_string()))?;
        net.try_with_input_affine(affine)
            .map_err(|e| file.error(e.to_string()))
    }
}

impl Record for Autoencoder {
    const KIND: &'static str = "autoencoder";

    fn write(&self, meta: &mut BTreeMap<String, String>) -> Vec<(String, Array2<f32>)> {
        meta.insert("input".to_string(), self.input_dim().to_string());
        meta.insert("code".to_string(), self.code_dim().to_string());
        // `{:e}` prints the shortest representation that parses back to the same f32.
        meta.insert(
            "weight_decay".to_string(),
            format!("{:e}", self.weight_decay()),
        );
        PARAM_NAMES
            .iter()
            .zip(self.params())
            .map(|(n, a)| (n.to_string(), a.clone()))
            .collect()
    }

    fn read(file: &mut ModelFile) -> Result<Self> {
        let number = |key: &str, file: &ModelFile| -> Result<usize> {
            file.meta_value(key)?
                .parse()
                .map_err(|_| file.error(format!("`{key}` is not a number")))
        };
        let (input, code) = (number("input", file)?, number("code", file)?);
        let weight_decay: f32 = file
            .meta_value("weight_decay")?
            .parse()
            .map_err(|_| file.error("`weight_decay` is not a number".into()))?;
        let params = PARAM_NAMES
            .iter()
            .map(|n| file.take(n))
            .collect::<Result<Vec<_>>>()?;
        if params[0].dim() != (input, code) {
            return Err(file.error(format!(
                "W_enc is {:?} but the header says {input} × {code}",
                params[0].dim()
            )));
        }
        Autoencoder::from_params(params, weight_decay).map_err(|e| file.error(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Models saved before the records moved here (tests/fixtures, written by the old
    /// `Network::save` and `Autoencoder::save`): loading and saving them again, and saving
    /// the same freshly built models, gives the same bytes.
    #[test]
    fn files_saved_before_load_and_save_to_the_same_bytes() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let dir = std::env::temp_dir().join(format!("blindspot-persist-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let same_bytes = |name: &str, save: &dyn Fn(&Path) -> Result<()>| {
            let out = dir.join(name);
            save(&out).unwrap();
            let (old, new) = (
                std::fs::read(fixtures.join(name)).unwrap(),
                std::fs::read(&out).unwrap(),
            );
            assert!(old == new, "{name}: the bytes differ from the old save");
        };

        let fc = Network::new(Architecture::parse("FC3-2", 4).unwrap(), 7);
        same_bytes("fc3-2.npz", &|p| fc.save(p));
        let loaded = Network::load(fixtures.join("fc3-2.npz")).unwrap();
        assert_eq!(loaded, fc);
        same_bytes("fc3-2.npz", &|p| loaded.save(p));

        let affine = InputAffine::new(vec![0.5], vec![-0.25], 36).unwrap();
        let conv = Network::new(
            Architecture::parse_image("CONV2-FC3-2", (6, 6, 1)).unwrap(),
            11,
        )
        .try_with_input_affine(affine)
        .unwrap();
        same_bytes("conv2-fc3-2.npz", &|p| conv.save(p));
        let loaded = Network::load(fixtures.join("conv2-fc3-2.npz")).unwrap();
        assert_eq!(loaded, conv);
        same_bytes("conv2-fc3-2.npz", &|p| loaded.save(p));

        let ae = Autoencoder::new(4, 2, 1e-6, 5).unwrap();
        same_bytes("ae4-2.npz", &|p| ae.save(p));
        let loaded = Autoencoder::load(fixtures.join("ae4-2.npz")).unwrap();
        assert_eq!(loaded, ae);
        same_bytes("ae4-2.npz", &|p| loaded.save(p));

        // A file of one kind is refused as the other, naming the file.
        let err = Autoencoder::load(fixtures.join("fc3-2.npz")).unwrap_err();
        assert!(
            err.to_string().contains("fc3-2.npz") && err.to_string().contains("\"mlp\""),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
