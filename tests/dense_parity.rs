//! Training-free dense segmentation against its PyTorch references: scripts/fixtures/make_dense.py
//! runs NACLIP's and ClearCLIP's last blocks (each as its repository formulates it) on a small
//! random open_clip CLIP and records the patch features (tests/fixtures/README.md). Our dense
//! tower, loaded from the same OpenAI-layout state dict through the importer, must give the same
//! features within 1e-4 relative, on the CPU backend and on wgpu.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use segclip::model::dense::{gaussian_bias, DenseClip, DenseMethod};
use segclip::model::SegClipConfig;
use segclip::train::replay::Recording;
use segclip::weights::{import, model_io};

const TOLERANCE: f64 = 1e-4;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dense")
}

fn fixture() -> Recording {
    Recording::read(&dir().join("dense.json"), &dir().join("dense_io.safetensors")).unwrap()
}

/// The fixture's CLIP through the importer, as `DenseClip` on `device`.
fn model(config: &SegClipConfig, device: &Device) -> DenseClip {
    let imported = import::import_dense(&dir().join("clip_dense.pt"), Some(config.clone())).unwrap();
    let mut model = DenseClip::new(config, device);
    let report = model_io::apply_tensors(&mut model, &imported.tensors, false).unwrap();
    assert!(report.initialised.is_empty(), "parameters the CLIP file lacks: {:?}", report.initialised);
    let ours = model_io::model_tensors(&model);
    assert_eq!(ours.len(), imported.tensors.len(), "every imported tensor has a place");
    model
}

/// max |got - want| / max |want|.
fn rel_error(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
    got.iter().zip(want).fold(0f64, |m, (&a, &b)| m.max((a as f64 - b as f64).abs())) / scale
}

fn features_match(device: Device, backend: &str) {
    let f = fixture();
    let config: SegClipConfig = f.model_config().unwrap();
    let model = model(&config, &device);
    let images = f.get("images").unwrap();
    let input = Tensor::<4>::from_data(TensorData::new(images.data.clone(), images.shape.clone()), &device);
    let std = f.json["naclip"]["gaussian_std"].as_f64().unwrap();
    let narrow = f.json["naclip_narrow_std"].as_f64().unwrap();
    for (name, method, std) in [
        ("naclip_features", DenseMethod::Naclip, std),
        ("naclip_narrow_features", DenseMethod::Naclip, narrow),
        ("clearclip_features", DenseMethod::Clearclip, 0.0),
    ] {
        let want = f.get(name).unwrap();
        let out = model.visual.forward(input.clone(), method, std);
        assert_eq!(out.grid, [8, 8]);
        assert_eq!(out.patch_embed.dims().to_vec(), want.shape, "{name}: shape");
        let got = out.patch_embed.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        let err = rel_error(&got, &want.data);
        println!("{backend}: {name}: {err:.1e} relative");
        assert!(err <= TOLERANCE, "{backend}: {name} differs from PyTorch by {err:.2e} relative");
    }
    // A wrong neighbourhood must show: std 1 and std 5 give different features.
    let wide = f.get("naclip_features").unwrap();
    let narrow = f.get("naclip_narrow_features").unwrap();
    assert!(rel_error(&narrow.data, &wide.data) > 100.0 * TOLERANCE, "the fixture's two widths are too alike to test the bias");
}

#[test]
fn the_gaussian_bias_is_naclips() {
    let f = fixture();
    let want = f.get("naclip_bias").unwrap();
    let got = gaussian_bias(8, 8, f.json["naclip"]["gaussian_std"].as_f64().unwrap());
    assert_eq!(want.shape, vec![65, 65]);
    assert!(rel_error(&got, &want.data) < 1e-6);
}

#[test]
fn dense_features_match_pytorch_on_the_cpu() {
    features_match(Device::flex(), "cpu");
}

#[test]
fn dense_features_match_pytorch_on_wgpu() {
    let device = segclip::backend::device(segclip::backend::BackendKind::Wgpu).expect("a wgpu device (lavapipe in the tests)");
    features_match(device, "wgpu");
}

#[test]
fn a_segclip_checkpoint_is_not_run_densely() {
    let segclip = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity/segclip_tiny.pt");
    let Err(err) = import::import_dense(&segclip, None) else { panic!("a SegCLIP checkpoint was imported for a dense method") };
    let err = err.to_string();
    assert!(err.contains("SegCLIP checkpoint"), "{err}");
}
