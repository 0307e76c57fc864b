//! Moving tensors between a model (`SegClip`, or `DenseClip` for plain CLIP weights) and host
//! tensors named by their burn module path.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{DType, Device, Tensor, TensorData};

use super::format::{HostTensor, Residency, WeightsError, WeightsFile};
use crate::model::dense::DenseClip;
use crate::model::{SegClip, SegClipConfig};

/// Names and shapes of every parameter of a model, read from the shapes the parameters were
/// declared with: a parameter not yet initialised stays so (its value is never made).
pub fn expected_shapes<M: Module>(model: &M) -> BTreeMap<String, Vec<usize>> {
    struct Shapes {
        path: Vec<String>,
        found: BTreeMap<String, Vec<usize>>,
    }
    impl ModuleVisitor for Shapes {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.found.insert(self.path.join("."), param.lazy_shape().iter().copied().collect());
        }
    }
    let mut shapes = Shapes { path: Vec::new(), found: BTreeMap::new() };
    model.visit(&mut shapes);
    shapes.found
}

/// The device a model's first parameter lives on (declared, for a parameter not yet made).
fn expected_device<M: Module>(model: &M) -> Option<Device> {
    struct First(Option<Device>);
    impl ModuleVisitor for First {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if self.0.is_none() {
                self.0 = Some(param.lazy_device());
            }
        }
    }
    let mut first = First(None);
    model.visit(&mut first);
    first.0
}

/// Makes every parameter that has no value yet, in module order. A model trained from its fresh
/// values draws them here, on the caller's thread, from the generator as the caller seeded it: a
/// lazy parameter first used inside a training thread would draw in whatever order the threads
/// happened to run, and a run would no longer be a function of its seed.
pub fn initialise_all<M: Module>(model: &M) {
    struct Touch;
    impl ModuleVisitor for Touch {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let _ = param.val();
        }
    }
    model.visit(&mut Touch);
}

/// How many of a model's parameters hold a value (the rest are still lazy: made on first use).
pub fn initialised_parameters<M: Module>(model: &M) -> usize {
    struct Count(usize);
    impl ModuleVisitor for Count {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0 += usize::from(param.is_initialized());
        }
    }
    let mut count = Count(0);
    model.visit(&mut count);
    count.0
}

/// Reads every parameter back to the host (native; a sync read is not allowed in wasm).
#[cfg(not(target_arch = "wasm32"))]
pub fn model_tensors<M: burn::store::ModuleSnapshot>(model: &M) -> BTreeMap<String, HostTensor> {
    use burn::store::bridge;
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
pub fn apply_tensors<M: Module>(
    model: &mut M,
    tensors: &BTreeMap<String, HostTensor>,
    allow_missing: bool,
) -> Result<LoadReport, WeightsError> {
    let data = tensors.iter().map(|(name, t)| (name.clone(), TensorData::new(t.data.clone(), t.shape.clone()))).collect();
    apply_data(model, data, allow_missing)
}

/// As `apply_tensors`, taking the data: each parameter keeps the buffer it is given (no copy),
/// and a parameter that is replaced is never initialised first.
pub fn apply_data<M: Module>(
    model: &mut M,
    tensors: BTreeMap<String, TensorData>,
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
    if let Some((name, _)) = tensors.iter().find(|(_, t)| matches!(t.dtype(), DType::QFloat(_))) {
        if !expected_device(model).as_ref().is_some_and(crate::backend::is_cpu) {
            return Err(WeightsError::Field {
                field: "residency",
                message: format!("tensor '{name}' is held as int8, which runs on the CPU backend only; load it as f32 on a GPU"),
            });
        }
    }
    for (name, t) in &tensors {
        let want = &expected[name];
        let found: Vec<usize> = t.shape().iter().copied().collect();
        if &found != want {
            return Err(WeightsError::Shape { tensor: name.clone(), expected: want.clone(), found });
        }
    }
    let mut loader = Loader { path: Vec::new(), tensors };
    // `Module::map` takes the model by value. A clone shares each parameter's state (a lazy one
    // stays lazy, an initialised one is not copied), and the old model is dropped on assignment.
    *model = model.clone().map(&mut loader);
    Ok(LoadReport { initialised: missing })
}

/// Puts each named tensor into the parameter of that path, on the parameter's device.
struct Loader {
    path: Vec<String>,
    tensors: BTreeMap<String, TensorData>,
}

impl ModuleMapper for Loader {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        match self.tensors.remove(&self.path.join(".")) {
            Some(data) => {
                let id = param.id;
                let tensor = Tensor::from_data(data, &param.lazy_device());
                param.transform_for_load(tensor, id)
            }
            None => param,
        }
    }
}

/// Builds the SegCLIP model a weights file describes, on `device` (a dense file is refused: it
/// holds a `DenseClip`; `pipeline::Segmenter::from_file` takes either).
pub fn load_model(file: WeightsFile<TensorData>, device: &Device) -> Result<SegClip, WeightsError> {
    if let Some(p) = &file.dense {
        return Err(WeightsError::Field {
            field: "dense",
            message: format!("this is a plain CLIP for the {} method, not a SegCLIP model", p.method),
        });
    }
    // Every parameter is declared lazily and replaced by the file's tensor before first use.
    let mut model = SegClip::new(&file.config, device);
    apply_data(&mut model, file.tensors, false)?;
    Ok(model)
}

/// Builds the dense CLIP a weights file with a `dense` protocol describes, on `device`.
pub fn load_dense_model(file: WeightsFile<TensorData>, device: &Device) -> Result<DenseClip, WeightsError> {
    let mut model = DenseClip::new(&file.config, device);
    apply_data(&mut model, file.tensors, false)?;
    Ok(model)
}

/// Convenience: parse bytes and build the model (f32 resident).
pub fn load_model_from_bytes(bytes: &[u8], device: &Device) -> Result<(SegClip, SegClipConfig), WeightsError> {
    let file = super::format::read_for_model(bytes, Residency::F32)?;
    let config = file.config.clone();
    let model = load_model(file, device)?;
    Ok((model, config))
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::weights::format::{read_for_model, write};
    use crate::weights::quant::StorageDtype;
    use burn::tensor::{Distribution, Tensor};

    /// A model is declared without values: building one and loading a file into it makes each
    /// parameter once, from the file (a random draw happens only when a parameter is
    /// initialised, and none is before the file's tensor replaces it).
    #[test]
    fn loading_a_file_initialises_no_parameter_before_the_file_replaces_it() {
        let device = Device::flex();
        let config = SegClipConfig { conv_stem: 4, ..SegClipConfig::tiny() };
        let fresh = SegClip::new(&config, &device);
        assert_eq!(initialised_parameters(&fresh), 0, "a parameter was made at construction");
        let shapes = expected_shapes(&fresh);
        assert_eq!(initialised_parameters(&fresh), 0, "reading the shapes made a parameter");
        let dense = DenseClip::new(&config, &device);
        assert_eq!(initialised_parameters(&dense), 0);
        // A model to train from its fresh values gets them all at once, here, in module order
        // (whether the seed then gives the same values is tests/train.rs's: tests in this process
        // share burn's one generator).
        let trained = SegClip::new(&config, &device);
        initialise_all(&trained);
        assert_eq!(initialised_parameters(&trained), shapes.len());

        // A file of known values: every parameter i filled with i + its element index / 1000.
        let tensors: BTreeMap<String, HostTensor> = shapes
            .iter()
            .enumerate()
            .map(|(i, (name, shape))| {
                let n = shape.iter().product::<usize>();
                (name.clone(), HostTensor::new(shape.clone(), (0..n).map(|j| i as f32 + j as f32 / 1000.0).collect()))
            })
            .collect();
        let bytes = write(&config, "t", StorageDtype::F32, &tensors).unwrap();
        let loaded = load_model(read_for_model(&bytes, Residency::F32).unwrap(), &device).unwrap();
        assert_eq!(initialised_parameters(&loaded), shapes.len(), "every parameter holds the file's tensor");
        assert_eq!(model_tensors(&loaded), tensors);
    }

    /// With `Residency::Int8` the int8 tensors of a file stay int8 in the model (burn quantized
    /// tensors) and dequantise to exactly the values an f32-resident load holds.
    #[test]
    fn int8_residency_keeps_int8_tensors_quantised_with_the_same_values() {
        let device = Device::flex();
        let config = SegClipConfig::tiny();
        let bytes = write(&config, "t", StorageDtype::Int8, &model_tensors(&SegClip::new(&config, &device))).unwrap();
        let as_f32 = load_model(read_for_model(&bytes, Residency::F32).unwrap(), &device).unwrap();
        let as_int8 = load_model(read_for_model(&bytes, Residency::Int8).unwrap(), &device).unwrap();
        let weight = as_int8.visual.stage1[0].attn.in_proj.weight.val();
        assert!(matches!(weight.dtype(), burn::tensor::DType::QFloat(_)), "{:?}", weight.dtype());
        assert!(matches!(as_int8.text.token_embedding.weight.val().dtype(), burn::tensor::DType::QFloat(_)));
        assert!(matches!(as_int8.visual.positional_embedding.val().dtype(), burn::tensor::DType::F32), "kept f32 in the file");
        let a = as_f32.visual.stage1[0].attn.in_proj.weight.val().into_data().try_to_vec::<f32>().unwrap();
        let ours = crate::model::layers::dequantized(weight.clone()).into_data().try_to_vec::<f32>().unwrap();
        let burns = weight.dequantize().into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(a, ours);
        assert_eq!(a, burns);
        // Row-scaled tables too (a scale per token row, blocks along the row).
        let table = as_int8.text.token_embedding.weight.val();
        let want = as_f32.text.token_embedding.weight.val().into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(crate::model::layers::dequantized(table).into_data().try_to_vec::<f32>().unwrap(), want);
    }

    #[test]
    fn a_conv_stem_survives_a_weights_file_and_is_absent_from_headers_without_one() {
        let device = Device::flex();
        let config = SegClipConfig { conv_stem: 4, ..SegClipConfig::tiny() };
        let model = SegClip::new(&config, &device);
        let shapes = expected_shapes(&model);
        assert_eq!(shapes["visual.stem.conv_a.weight"], vec![4, 3, 3, 3]);
        assert_eq!(shapes["visual.conv1.weight"][1], 4, "the patch embedding reads the stem's channels");
        let bytes = write(&config, "t", StorageDtype::F32, &model_tensors(&model)).unwrap();
        let file = read_for_model(&bytes, Residency::F32).unwrap();
        assert_eq!(file.config.conv_stem, 4);
        let loaded = load_model(file, &device).unwrap();
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
        let file = read_for_model(&bytes, Residency::F32).unwrap();
        assert_eq!(file.config.patchify_stem, 8);
        let loaded = load_model(file, &device).unwrap();
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
