//! Training-free dense segmentation against its PyTorch references: scripts/fixtures/make_dense.py
//! runs NACLIP's and ClearCLIP's last blocks (each as its repository formulates it) on a small
//! random open_clip CLIP and records the patch features (tests/fixtures/README.md). Our dense
//! tower, loaded from the same OpenAI-layout state dict through the importer, must give the same
//! features within 1e-4 relative, and the pipeline's dense path the same label maps on at least
//! 99.5% of the pixels, on the CPU backend and on wgpu.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use segclip::model::dense::{dense_patch_positions, gaussian_bias, DenseClip, DenseMethod, DenseProtocol};
use segclip::model::SegClipConfig;
use segclip::pipeline::{block_on, Rgb, Segmenter};
use segclip::tokenizer::ClipTokenizer;
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

/// The fixture's CLIP through the importer, its 64 x 96 image, and its query embeddings as
/// labels "query 1".."query Q".
struct Pipeline {
    f: Recording,
    config: SegClipConfig,
    model: DenseClip,
    image: Rgb,
    queries: Vec<Vec<f32>>,
    labels: Vec<String>,
}

impl Pipeline {
    fn new(device: &Device) -> Self {
        let f = fixture();
        let config: SegClipConfig = f.model_config().unwrap();
        let model = model(&config, device);
        let rgb = f.get("wide_rgb").unwrap();
        let [h, w, 3] = rgb.shape[..] else { panic!("wide_rgb shape {:?}", rgb.shape) };
        let image = Rgb::new(w, h, rgb.data.iter().map(|&v| v as u8).collect()).unwrap();
        let queries: Vec<Vec<f32>> = f.rows("queries", |v| v).unwrap();
        let labels: Vec<String> = (1..=queries.len()).map(|i| format!("query {i}")).collect();
        Self { f, config, model, image, queries, labels }
    }
}

/// A segmenter for the fixture's CLIP with `protocol`. The CLIP has a 320-token vocabulary; no
/// text is encoded (the embeddings are given), so the segmenter is told the real tokenizer's.
fn dense_segmenter(config: &SegClipConfig, model: &DenseClip, protocol: &DenseProtocol, device: &Device) -> Segmenter {
    let tokenizer = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("static/tokenizer.json")).unwrap();
    let config = SegClipConfig { vocab_size: 49408, ..config.clone() };
    Segmenter::new_dense(model.clone(), protocol.clone(), config, ClipTokenizer::from_bytes(&tokenizer).unwrap(), device.clone()).unwrap()
}

/// Our label map against the fixture's `name` on at least 99.5% of the pixels.
fn agree_with(f: &Recording, name: &str, ours: &[u8], what: &str) {
    let want = f.get(name).unwrap();
    let same = ours.iter().zip(&want.data).filter(|(&a, &b)| a as f32 == b).count();
    let share = same as f64 / want.data.len() as f64;
    let background = want.data.iter().filter(|&&v| v == 0.0).count();
    println!("{what}: {:.3}% of pixels as PyTorch's ({background} background there)", share * 100.0);
    assert!(share >= 0.995, "{what}: only {:.2}% of pixels agree with PyTorch's", share * 100.0);
}

/// The whole dense path of the pipeline (preprocessing, sliding windows, the protocol's logit
/// scale and background rule) on the fixture's 64 x 96 image against the reference label maps,
/// with the fixture's query embeddings as the labels'.
fn label_maps_match(device: Device, backend: &str) {
    let Pipeline { f, config, model, image, queries, labels } = Pipeline::new(&device);
    let h = image.height;
    for method in DenseMethod::ALL {
        let protocol = DenseProtocol::for_method(method);
        let settings = &f.json[method.name()];
        assert_eq!(protocol.logit_scale, settings["logit_scale"].as_f64().unwrap() as f32, "{method}: the fixture's scale");
        assert_eq!(protocol.bg_thresh, settings["prob_thd"].as_f64().unwrap() as f32, "{method}: the fixture's threshold");
        let mut segmenter = dense_segmenter(&config, &model, &protocol, &device);
        segmenter.protocol.short_side = h;
        segmenter.protocol.window = f.json["window"].as_u64().unwrap() as usize;
        segmenter.protocol.stride = f.json["stride"].as_u64().unwrap() as usize;
        // This reference has no background class (the defaults' is `default_protocols_match`).
        segmenter.protocol.whole_image = false;
        segmenter.protocol.background_prompts.clear();
        let features = block_on(segmenter.encode_image(&image)).unwrap();
        assert_eq!(features.windows.len(), 2, "two windows of 64 over 96 columns");
        let result = block_on(segmenter.combine(&features, &labels, &queries)).unwrap();
        agree_with(&f, &format!("{method}_label_map"), &result.label_map, &format!("{backend}: {method} label map"));
    }
}

/// The methods' default VOC21 protocols as a converted file carries them, with no setting
/// changed: NACLIP's whole image at short side 336 (positional table interpolated to 42 x 63),
/// ClearCLIP's 448-pixel windows at stride 224 on a 448 short side, and each one's background
/// class in the one softmax. The words' embeddings are the fixture's (its CLIP cannot read the
/// real tokenizer's ids), stored in the segmenter's label cache as the page restores them.
fn default_protocols_match(device: Device, backend: &str) {
    let Pipeline { f, config, model, image, queries, labels } = Pipeline::new(&device);
    let (w, h) = (image.width, image.height);
    for method in DenseMethod::ALL {
        let protocol = DenseProtocol::for_method(method);
        let words: Vec<Vec<f32>> = f.rows(&format!("{method}_background"), |v| v).unwrap();
        let mut segmenter = dense_segmenter(&config, &model, &protocol, &device);
        assert_eq!(segmenter.protocol.whole_image, method == DenseMethod::Naclip);
        assert_eq!(segmenter.protocol.background_prompts, protocol.background, "{method}: the protocol's words");
        let names: Vec<String> = (1..=words.len()).map(|i| format!("background word {i}")).collect();
        segmenter.protocol.background_prompts = names.clone();
        segmenter.add_label_embeddings(names.into_iter().zip(words).collect()).unwrap();
        segmenter.add_label_embeddings(labels.iter().cloned().zip(queries.clone()).collect()).unwrap();
        // One window per call: this CLIP's patches are 8 px, so a 448 window is a 56 x 56 grid
        // whose attention (3 heads, 3137^2) is 118 MB a window, and two at once pass a software
        // Vulkan device's largest buffer.
        segmenter.protocol.batch = 1;
        let features = block_on(segmenter.encode_image(&image)).unwrap();
        let expected_windows = if method == DenseMethod::Naclip { 1 } else { 2 };
        assert_eq!(features.windows.len(), expected_windows, "{method}");
        assert_eq!(features.resized, (w * protocol.short_side / h, protocol.short_side), "{method}");
        let embeddings = block_on(segmenter.encode_labels(&labels)).unwrap();
        assert_eq!(segmenter.counters.prompts_encoded, 0, "every embedding came from the cache");
        let result = block_on(segmenter.combine(&features, &labels, &embeddings)).unwrap();
        agree_with(&f, &format!("{method}_default_label_map"), &result.label_map, &format!("{backend}: {method} default protocol"));
    }
}

#[test]
fn default_protocols_match_pytorch_on_the_cpu() {
    default_protocols_match(Device::flex(), "cpu");
}

#[test]
fn default_protocols_match_pytorch_on_wgpu() {
    let device = segclip::backend::device(segclip::backend::BackendKind::Wgpu).expect("a wgpu device (lavapipe in the tests)");
    default_protocols_match(device, "wgpu");
}

/// The interpolated positional tables (channel 0) of both methods' grids, tight: the label
/// maps alone would miss a slightly different resampling.
#[test]
fn interpolated_positions_are_the_methods() {
    let f = fixture();
    let config: SegClipConfig = f.model_config().unwrap();
    let device = Device::flex();
    let model = model(&config, &device);
    for (name, rows, cols) in [("naclip_default_pos_embed_c0", 42, 63), ("clearclip_default_pos_embed_c0", 56, 56)] {
        let want = f.get(name).unwrap();
        let table = dense_patch_positions(model.visual.positional_embedding.val(), rows, cols);
        let got: Vec<f32> = table.narrow(1, 0, 1).into_data().try_to_vec::<f32>().unwrap();
        let err = got.iter().zip(&want.data).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        println!("{name}: max abs error {err:.1e}");
        assert!(err < 1e-5, "{name}: differs by {err}");
    }
}

#[test]
fn dense_label_maps_match_pytorch_on_the_cpu() {
    label_maps_match(Device::flex(), "cpu");
}

#[test]
fn dense_label_maps_match_pytorch_on_wgpu() {
    let device = segclip::backend::device(segclip::backend::BackendKind::Wgpu).expect("a wgpu device (lavapipe in the tests)");
    label_maps_match(device, "wgpu");
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
