//! Moving tensors between a model (`SegClip`, or `DenseClip` for plain CLIP weights) and host
//! tensors named by their burn module path.

use std::collections::BTreeMap;

use burn::store::{bridge, ModuleSnapshot};
use burn::tensor::{Device, TensorData};

use super::format::{HostTensor, WeightsError, WeightsFile};
use crate::model::dense::DenseClip;
use crate::model::{SegClip, SegClipConfig};

/// Names and shapes of every parameter of a model of this config, without reading any data.
pub fn expected_shapes<M: ModuleSnapshot>(model: &M) -> BTreeMap<String, Vec<usize>> {
    model.collect(None, None, false).into_iter().map(|t| (t.name.clone(), t.shape.iter().copied().collect())).collect()
}

/// Reads every parameter back to the host (native; a sync read is not allowed in wasm).
#[cfg(not(target_arch = "wasm32"))]
pub fn model_tensors<M: ModuleSnapshot>(model: &M) -> BTreeMap<String, HostTensor> {
    model
        .collect(None, None, false)
        .into_iter()
        .map(|t| {
            let name = t.name.clone();
            let data = bridge::into_data(t).unwrap_or_else(|e| panic!("reading parameter {name}: {e}"));
            let shape = data.shape().iter().copied().collect();
            let values = data.convert::<f32>().try_to_vec::<f32>().expect("f32 parameter");
            (name, HostTensor::new(shape, values))
        })
        .collect()
}

/// What an import did with the source tensors.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Parameters not in the source: they keep their fresh initialisation.
    pub initialised: Vec<String>,
}

/// Writes `tensors` into `model`. With `allow_missing`, parameters absent from `tensors` keep
/// their fresh initialisation and are reported; otherwise they are an error. Tensors the model
/// does not have are always an error (importers drop known training-only keys before this).
pub fn apply_tensors<M: ModuleSnapshot>(
    model: &mut M,
    tensors: &BTreeMap<String, HostTensor>,
    allow_missing: bool,
) -> Result<LoadReport, WeightsError> {
    let expected = expected_shapes(model);
    let unexpected: Vec<String> = tensors.keys().filter(|k| !expected.contains_key(*k)).cloned().collect();
    if !unexpected.is_empty() {
        return Err(WeightsError::Unexpected(unexpected));
    }
    let missing: Vec<String> = expected.keys().filter(|k| !tensors.contains_key(*k)).cloned().collect();
    if !missing.is_empty() && !allow_missing {
        return Err(WeightsError::Missing(missing));
    }
    for (name, t) in tensors {
        let want = &expected[name];
        if &t.shape != want {
            return Err(WeightsError::Shape { tensor: name.clone(), expected: want.clone(), found: t.shape.clone() });
        }
    }
    let packs =
        tensors.iter().map(|(name, t)| bridge::from_data(TensorData::new(t.data.clone(), t.shape.clone()), name.clone(), None)).collect();
    let result = model.apply(packs, None, None, false);
    if let Some(e) = result.errors.first() {
        return Err(WeightsError::Corrupt(format!("applying tensors: {e:?}")));
    }
    Ok(LoadReport { initialised: missing })
}

/// Builds the SegCLIP model a weights file describes, on `device` (a dense file is refused: it
/// holds a `DenseClip`; `pipeline::Segmenter::from_file` takes either).
pub fn load_model(file: &WeightsFile, device: &Device) -> Result<SegClip, WeightsError> {
    if let Some(p) = &file.dense {
        return Err(WeightsError::Field {
            field: "dense",
            message: format!("this is a plain CLIP for the {} method, not a SegCLIP model", p.method),
        });
    }
    let mut model = SegClip::new(&file.config, device);
    apply_tensors(&mut model, &file.tensors, false)?;
    Ok(model)
}

/// Builds the dense CLIP a weights file with a `dense` protocol describes, on `device`.
pub fn load_dense_model(file: &WeightsFile, device: &Device) -> Result<DenseClip, WeightsError> {
    let mut model = DenseClip::new(&file.config, device);
    apply_tensors(&mut model, &file.tensors, false)?;
    Ok(model)
}

/// Convenience: parse bytes and build the model.
pub fn load_model_from_bytes(bytes: &[u8], device: &Device) -> Result<(SegClip, SegClipConfig), WeightsError> {
    let file = super::format::read(bytes)?;
    let model = load_model(&file, device)?;
    Ok((model, file.config))
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::weights::format::{read, write};
    use crate::weights::quant::StorageDtype;
    use burn::tensor::{Distribution, Tensor};

    #[test]
    fn a_conv_stem_survives_a_weights_file_and_is_absent_from_headers_without_one() {
        let device = Device::flex();
        let config = SegClipConfig { conv_stem: 4, ..SegClipConfig::tiny() };
        let model = SegClip::new(&config, &device);
        let shapes = expected_shapes(&model);
        assert_eq!(shapes["visual.stem.conv_a.weight"], vec![4, 3, 3, 3]);
        assert_eq!(shapes["visual.conv1.weight"][1], 4, "the patch embedding reads the stem's channels");
        let bytes = write(&config, "t", StorageDtype::F32, &model_tensors(&model)).unwrap();
        let file = read(&bytes).unwrap();
        assert_eq!(file.config.conv_stem, 4);
        let loaded = load_model(&file, &device).unwrap();
        let s = config.image_size;
        let images = Tensor::<4>::random([1, 3, s, s], Distribution::Normal(0.0, 1.0), &device);
        let a = model.image(images.clone()).image_embed.into_data().try_to_vec::<f32>().unwrap();
        let b = loaded.image(images).image_embed.into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(a, b);

        // Without a stem the header names no stem field, so files of the released layout read
        // by any version of this crate.
        let plain = serde_json::to_string(&SegClipConfig::tiny()).unwrap();
        assert!(!plain.contains("conv_stem"), "{plain}");
        let back: SegClipConfig = serde_json::from_str(&plain).unwrap();
        assert_eq!(back.conv_stem, 0);
        assert!(!expected_shapes(&SegClip::new(&SegClipConfig::tiny(), &device)).keys().any(|k| k.contains("stem")));
    }

    #[test]
    fn a_patchify_stem_replaces_the_patch_conv_and_survives_a_weights_file() {
        let device = Device::flex();
        // tiny: 32 px, patch 8 -> three stride-2 convolutions (2, 4, 8 channels), then 1x1.
        let config = SegClipConfig { patchify_stem: 8, ..SegClipConfig::tiny() };
        config.validate().unwrap();
        let model = SegClip::new(&config, &device);
        let shapes = expected_shapes(&model);
        assert_eq!(shapes["visual.patchify.convs.0.weight"], vec![2, 3, 3, 3]);
        assert_eq!(shapes["visual.patchify.convs.1.weight"], vec![4, 2, 3, 3]);
        assert_eq!(shapes["visual.patchify.convs.2.weight"], vec![8, 4, 3, 3]);
        assert!(!shapes.contains_key("visual.patchify.convs.3.weight"));
        assert_eq!(shapes["visual.conv1.weight"][1..], [8, 1, 1], "a 1x1 projection of the stem's channels");
        let s = config.image_size;
        let images = Tensor::<4>::random([2, 3, s, s], Distribution::Normal(0.0, 1.0), &device);
        let (tokens, grid) = model.visual.embed_patches(images.clone());
        assert_eq!(grid, [s / 8, s / 8]);
        assert_eq!(tokens.dims(), [2, (s / 8) * (s / 8), config.vision_width]);
        let bytes = write(&config, "t", StorageDtype::F32, &model_tensors(&model)).unwrap();
        let file = read(&bytes).unwrap();
        assert_eq!(file.config.patchify_stem, 8);
        let loaded = load_model(&file, &device).unwrap();
        let a = model.image(images.clone()).image_embed.into_data().try_to_vec::<f32>().unwrap();
        let b = loaded.image(images.clone()).image_embed.into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(a, b);
        assert!(!serde_json::to_string(&SegClipConfig::tiny()).unwrap().contains("patchify_stem"));

        // The training-only reconstruction branch takes its patch size from the grid (the patch
        // conv is 1x1 here): predictions of p*p*3 pixels per patch and a finite loss.
        let training = SegClip::new_for_training(&config, &device);
        let keep: Vec<Vec<usize>> = vec![vec![0, 5, 9, 15]; 2];
        let recon = training.reconstruct(images.clone(), &keep, crate::model::Assignment::Eval).unwrap();
        assert_eq!(recon.pred.dims(), [2, (s / 8) * (s / 8), 8 * 8 * 3]);
        assert!(recon.loss.into_scalar::<f32>().is_finite());

        for (bad, expected) in [
            (SegClipConfig { patchify_stem: 8, patch_size: 6, image_size: 36, ..SegClipConfig::tiny() }, "power-of-two patch_size"),
            (SegClipConfig { patchify_stem: 8, conv_stem: 4, ..SegClipConfig::tiny() }, "exclude each other"),
            (SegClipConfig { patchify_stem: 2, ..SegClipConfig::tiny() }, "must be at least 4"),
        ] {
            let err = bad.validate().unwrap_err();
            assert!(err.contains(expected), "{err}");
        }
    }
}
