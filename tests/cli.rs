//! The CLI end to end: help and version, convert on the PyTorch fixtures, segment, synth and
//! eval on a converted tiny model, and the clear failures users meet.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn segclip(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_segclip")).args(args).output().expect("run segclip")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity").join(name).display().to_string()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("segclip-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A small randomly initialised model with CLIP's full vocabulary (the parity fixtures have a
/// 320-token one, which the real tokenizer's ids do not fit), written as a weights file.
fn tiny_weights(dir: &Path, dtype: &str) -> String {
    use segclip::model::{SegClip, SegClipConfig};
    use segclip::weights::{format, model_io};
    let config = SegClipConfig { vocab_size: 49408, context_length: 77, ..SegClipConfig::tiny() };
    let model = SegClip::new(&config, &segclip::Device::flex());
    let tokenizer = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("static/tokenizer.json")).unwrap();
    let bytes = format::write(&config, &format::sha256_hex(&tokenizer), dtype.parse().unwrap(), &model_io::model_tensors(&model)).unwrap();
    let out = dir.join(format!("tiny-{dtype}.safetensors"));
    std::fs::write(&out, bytes).unwrap();
    out.display().to_string()
}

#[test]
fn weights_for_another_vocabulary_are_refused_with_the_reason() {
    let dir = scratch("vocab");
    let out = dir.join("w.safetensors").display().to_string();
    let run = segclip(&["convert", &fixture("segclip_tiny.pt"), &out, "--config", &fixture("config.json")]);
    assert!(run.status.success(), "{}", text(&run));
    let seg = segclip(&["segment", &out, "--labels", "cat", "--weights", &out]);
    assert!(!seg.status.success());
    assert!(text(&seg).contains("320 tokens"), "{}", text(&seg));
}

#[test]
fn help_lists_every_subcommand() {
    let out = segclip(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for sub in ["segment", "eval", "synth", "train", "export", "convert", "bench", "backend"] {
        assert!(help.contains(sub), "--help does not mention `{sub}`:\n{help}");
    }
}

#[test]
fn version_is_the_crate_version() {
    let out = segclip(&["--version"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("segclip {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn unknown_backend_is_named_in_the_error() {
    let out = segclip(&["backend", "--backend", "quantum"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("unknown backend 'quantum'"));
}

#[test]
fn cpu_backend_self_check_passes() {
    let out = segclip(&["backend", "--backend", "cpu"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("self-check: ok"));
}

#[test]
fn convert_reports_layout_unused_and_fresh_parts() {
    let dir = scratch("convert");
    let out = dir.join("w.safetensors").display().to_string();
    let run = segclip(&["convert", &fixture("segclip_tiny.pt"), &out, "--config", &fixture("config.json")]);
    let log = text(&run);
    assert!(run.status.success(), "{log}");
    assert!(log.contains("SegCLIP release checkpoint"), "{log}");
    assert!(log.contains("unused, training-only"), "{log}");
    // Every dtype writes a file that reads back with the fixture's config; smaller for f16/int8.
    let mut sizes = Vec::new();
    for dtype in ["f32", "f16", "int8"] {
        let path = dir.join(format!("w-{dtype}.safetensors"));
        let run = segclip(&["convert", &fixture("segclip_tiny.pt"), path.to_str().unwrap(), "--dtype", dtype, "--config", &fixture("config.json")]);
        assert!(run.status.success(), "{dtype}: {}", text(&run));
        let file = segclip::weights::format::read(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(file.dtype.to_string(), dtype);
        assert_eq!(file.config.vision_width, 32);
        sizes.push(std::fs::metadata(&path).unwrap().len());
    }
    assert!(sizes[0] > sizes[1] && sizes[1] > sizes[2], "sizes f32/f16/int8: {sizes:?}");
    assert!(!dir.join("w-f32.safetensors.partial").exists(), "a temporary file was left behind");
    // A plain CLIP as a SegCLIP start: its group module is new.
    let clip = segclip(&["convert", &fixture("openai_clip_tiny.pt"), &out, "--config", &fixture("config.json"), "--method", "segclip"]);
    let log = text(&clip);
    assert!(clip.status.success(), "{log}");
    assert!(log.contains("freshly initialised") && log.contains("visual.group."), "{log}");
    // Heads cannot be derived from a width that is not a multiple of 64: the error says what to do.
    let derive = segclip(&["convert", &fixture("segclip_tiny.pt"), &out]);
    assert!(!derive.status.success());
    assert!(text(&derive).contains("--config"), "{}", text(&derive));
    // Not a checkpoint at all.
    let junk = dir.join("junk.pt");
    std::fs::write(&junk, b"PK\x03\x04 definitely not a zip").unwrap();
    let bad = segclip(&["convert", junk.to_str().unwrap(), &out, "--config", &fixture("config.json")]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("junk.pt"), "{}", text(&bad));
}

/// The dense fixture's CLIP config (tests/fixtures/dense/dense.json), as a `--config` file.
fn dense_config(dir: &Path) -> String {
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dense/dense.json")).unwrap(),
    )
    .unwrap();
    let path = dir.join("dense-config.json");
    std::fs::write(&path, meta["model"].to_string()).unwrap();
    path.display().to_string()
}

#[test]
fn convert_makes_a_plain_clip_a_dense_segmenter_by_default() {
    let dir = scratch("convert-dense");
    let clip = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dense/clip_dense.pt").display().to_string();
    let config = dense_config(&dir);
    for (method, want) in [(None, "naclip"), (Some("clearclip"), "clearclip"), (Some("naclip"), "naclip")] {
        let out = dir.join(format!("{want}.safetensors"));
        let mut args = vec!["convert", clip.as_str(), out.to_str().unwrap(), "--config", config.as_str()];
        if let Some(m) = method {
            args.extend(["--method", m]);
        }
        let run = segclip(&args);
        assert!(run.status.success(), "{}", text(&run));
        let file = segclip::weights::format::read(&std::fs::read(&out).unwrap()).unwrap();
        let protocol = file.dense.expect("a dense protocol in the header");
        assert_eq!(protocol.method.to_string(), want);
        assert!(file.tensors.keys().any(|k| k == "visual.blocks.2.attn.in_proj.weight"), "CLIP's blocks in one list");
        assert!(!file.tensors.keys().any(|k| k.starts_with("visual.group.")), "no group module");
    }
    // A SegCLIP checkpoint keeps its groups; an unknown method names the choices.
    let out = dir.join("x.safetensors").display().to_string();
    let run = segclip(&["convert", &fixture("segclip_tiny.pt"), &out, "--config", &fixture("config.json"), "--method", "naclip"]);
    assert!(!run.status.success() && text(&run).contains("own group module"), "{}", text(&run));
    let run = segclip(&["convert", &clip, &out, "--config", &config, "--method", "sclip"]);
    assert!(!run.status.success() && text(&run).contains("naclip or clearclip"), "{}", text(&run));
}

#[test]
fn segment_runs_a_dense_file_with_its_own_protocol() {
    use segclip::model::dense::{DenseClip, DenseMethod, DenseProtocol};
    use segclip::model::SegClipConfig;
    use segclip::weights::{format, model_io};
    let dir = scratch("segment-dense");
    // A random CLIP with the real vocabulary, so the tokenizer's ids fit.
    let config = SegClipConfig { vocab_size: 49408, context_length: 77, ..SegClipConfig::tiny() };
    let model = DenseClip::new(&config, &segclip::Device::flex());
    let tokenizer = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("static/tokenizer.json")).unwrap();
    let protocol = DenseProtocol::for_method(DenseMethod::Clearclip);
    let bytes =
        format::write_dense(&config, &protocol, &format::sha256_hex(&tokenizer), "int8".parse().unwrap(), &model_io::model_tensors(&model))
            .unwrap();
    let weights = dir.join("dense.safetensors");
    std::fs::write(&weights, bytes).unwrap();
    let image = dir.join("in.png");
    image::RgbImage::from_fn(48, 40, |x, y| image::Rgb([(x * 5) as u8, (y * 6) as u8, 90])).save(&image).unwrap();
    let out = dir.join("out");
    let run = segclip(&[
        "segment", image.to_str().unwrap(), "--labels", "cat, dog", "--weights", weights.to_str().unwrap(), "--out", out.to_str().unwrap(),
    ]);
    let log = text(&run);
    assert!(run.status.success(), "{log}");
    assert!(log.contains("segmented densely with clearclip") && log.contains("80 templates"), "{log}");
    assert!(std::fs::read_dir(&out).unwrap().count() >= 2, "overlay and mask written");
}

#[test]
fn synth_writes_a_reproducible_voc_split() {
    let a = scratch("synth-a");
    let b = scratch("synth-b");
    for dir in [&a, &b] {
        let run = segclip(&["synth", "--split", "val", "--count", "3", "--size", "64", "--out", dir.to_str().unwrap()]);
        assert!(run.status.success(), "{}", text(&run));
    }
    let list = std::fs::read_to_string(a.join("ImageSets/Segmentation/val.txt")).unwrap();
    assert_eq!(list.lines().count(), 3);
    for id in list.lines() {
        let rel = format!("JPEGImages/{id}.png");
        assert_eq!(std::fs::read(a.join(&rel)).unwrap(), std::fs::read(b.join(&rel)).unwrap(), "{rel} differs");
    }
    assert!(std::fs::read_to_string(a.join("classes.txt")).unwrap().starts_with("background"));
}

#[test]
fn segment_writes_overlay_mask_and_summary_and_survives_bad_files() {
    let dir = scratch("segment");
    let weights = tiny_weights(&dir, "f32");
    let scenes = dir.join("scenes");
    assert!(segclip(&["synth", "--split", "val", "--count", "1", "--size", "48", "--out", scenes.to_str().unwrap()]).status.success());
    let image = scenes.join("JPEGImages/val_000000.png");
    let not_image = dir.join("notes.png");
    std::fs::write(&not_image, b"this is text").unwrap();
    let out = dir.join("out");
    let run = segclip(&[
        "segment", image.to_str().unwrap(), not_image.to_str().unwrap(), "--labels", "circle, square, star",
        "--weights", &weights, "--out", out.to_str().unwrap(), "--outline",
    ]);
    let log = text(&run);
    // The good image is done, the bad one reported by name, and the run fails overall.
    assert!(!run.status.success(), "{log}");
    assert!(log.contains("notes.png") && log.contains("1 of 2 image(s) failed"), "{log}");
    let mask = image::open(out.join("val_000000.mask.png")).unwrap().to_luma8();
    assert_eq!(mask.dimensions(), (48, 48));
    assert!(mask.pixels().all(|p| p.0[0] <= 3), "mask values beyond the 3 labels");
    assert!(out.join("val_000000.overlay.png").is_file());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("val_000000.json")).unwrap()).unwrap();
    let labels = summary["result"]["labels"].as_array().unwrap();
    assert_eq!(labels.len(), 3);
    let share: f64 = labels.iter().map(|l| l["area_share"].as_f64().unwrap()).sum::<f64>()
        + summary["result"]["background_share"].as_f64().unwrap();
    assert!((share - 1.0).abs() < 1e-9, "area shares sum to {share}");

    for (labels, expect) in [(" , ", "no labels"), ("cat, Cat", "twice")] {
        let run = segclip(&["segment", image.to_str().unwrap(), "--labels", labels, "--weights", &weights]);
        assert!(!run.status.success());
        assert!(text(&run).contains(expect), "{labels:?}: {}", text(&run));
    }
    let long = "word ".repeat(100);
    let run = segclip(&["segment", image.to_str().unwrap(), "--labels", &long, "--weights", &weights]);
    assert!(text(&run).contains("too long"), "{}", text(&run));
}

#[test]
fn eval_prints_miou_and_writes_the_confusion_matrix() {
    let dir = scratch("eval");
    let weights = tiny_weights(&dir, "int8");
    let json = dir.join("confusion.json");
    let run = segclip(&["eval", "shapes:val", "--weights", &weights, "--count", "2", "--size", "48", "--out", json.to_str().unwrap()]);
    let log = text(&run);
    assert!(run.status.success(), "{log}");
    assert!(log.contains("mIoU:") && log.contains("circle"), "{log}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["num_classes"], 9);
    assert_eq!(report["total_pixels"], 2 * 48 * 48);
}

#[test]
fn emoji_world_in_voc_layout_and_in_eval() {
    let dir = scratch("emoji");
    let out = dir.join("val");
    let run = segclip(&["synth", "--world", "emoji", "--split", "val", "--count", "3", "--out", out.to_str().unwrap()]);
    assert!(run.status.success(), "{}", text(&run));
    let classes = std::fs::read_to_string(out.join("classes.txt")).unwrap();
    assert_eq!(classes.lines().count(), 20);
    assert!(classes.lines().any(|l| l == "tv monitor") && classes.starts_with("background\naeroplane\n"), "{classes}");
    let mask = image::open(out.join("SegmentationClass/val_000000.png")).unwrap().to_luma8();
    assert_eq!(mask.dimensions(), (96, 96));
    assert!(mask.pixels().any(|p| p[0] > 0) && mask.pixels().all(|p| p[0] < 20));

    let weights = tiny_weights(&dir, "int8");
    let json = dir.join("confusion.json");
    let run = segclip(&["eval", "emoji:val", "--weights", &weights, "--count", "2", "--size", "48", "--out", json.to_str().unwrap()]);
    let log = text(&run);
    assert!(run.status.success(), "{log}");
    for line in ["mIoU:", "mIoU with the true background", "centers in use", "tv monitor", "background threshold: 0.8"] {
        assert!(log.contains(line), "'{line}' missing from:\n{log}");
    }
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["num_classes"], 20);
    // The shape world has a compositional split; the emoji world does not, and says so.
    let bad = segclip(&["eval", "emoji:compositional", "--weights", &weights, "--count", "1"]);
    assert!(!bad.status.success() && text(&bad).contains("no compositional split"), "{}", text(&bad));
    // The name from before the worlds had one name each still works, with a note.
    let old = segclip(&["eval", "synth:emoji-val", "--weights", &weights, "--count", "1", "--size", "48", "--out", json.to_str().unwrap()]);
    assert!(old.status.success() && text(&old).contains("deprecated; it is 'emoji:val' now"), "{}", text(&old));
    let bad = segclip(&["synth", "--world", "emoji", "--split", "val", "--style", "comic", "--out", dir.join("x").to_str().unwrap()]);
    assert!(!bad.status.success() && text(&bad).contains("comic"), "{}", text(&bad));
    // Background prompts given by hand are used and printed; a duplicate is refused by name.
    let run = segclip(&[
        "eval", "emoji:val", "--weights", &weights, "--count", "1", "--size", "48", "--top-k", "19",
        "--background-prompts", "plain background, striped background", "--out", json.to_str().unwrap(),
    ]);
    assert!(run.status.success() && text(&run).contains("background prompts: plain background, striped background"), "{}", text(&run));
    let bad = segclip(&["eval", "emoji:val", "--weights", &weights, "--count", "1", "--background-prompts", "sky,Sky"]);
    assert!(!bad.status.success() && text(&bad).contains("--background-prompts") && text(&bad).contains("Sky"), "{}", text(&bad));
}

#[test]
fn bench_reports_every_measurement_with_its_throughput() {
    let dir = scratch("bench");
    let json = dir.join("bench.json");
    let run = segclip(&["bench", "--config", "small", "--runs", "1", "--json", json.to_str().unwrap()]);
    assert!(run.status.success(), "{}", text(&run));
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(doc["cores"].as_u64().unwrap() >= 1);
    assert!(doc["peak_matmul_gflops"]["cpu"].as_f64().unwrap() > 0.0);
    let measurements = doc["measurements"].as_array().unwrap();
    let names: Vec<&str> = measurements.iter().map(|m| m["what"].as_str().unwrap()).collect();
    for want in ["image encode 224", "text encode per label", "segmentation 224x224", "segmentation 448x448", "training step"] {
        assert!(names.iter().any(|n| n.starts_with(want)), "{want} missing from {names:?}");
    }
    for m in measurements {
        assert!(m["median_ms"].as_f64().unwrap() > 0.0 && m["gflops_per_s"].as_f64().unwrap() > 0.0, "{m}");
    }
}

/// The bundled model on a photo-like image paints it background and says why, with the photo
/// preset to fetch instead.
#[test]
fn segment_says_when_the_bundled_model_does_not_know_a_photo() {
    let dir = scratch("photo-hint");
    let image = dir.join("photo.png");
    image::RgbImage::from_fn(96, 72, |x, y| image::Rgb([(100 + x / 2) as u8, (120 + y / 3) as u8, 140])).save(&image).unwrap();
    let out = dir.join("out");
    let run = segclip(&["segment", image.to_str().unwrap(), "--labels", "cat, sofa", "--out", out.to_str().unwrap()]);
    let log = text(&run);
    assert!(run.status.success(), "{log}");
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("photo.json")).unwrap()).unwrap();
    let share = summary["result"]["background_share"].as_f64().unwrap();
    assert_eq!(share >= 0.95, log.contains("knows 19 classes of emoji art"), "background {share}: {log}");
    assert!(share >= 0.95, "the bundled model named {:.0}% of a plain gradient", (1.0 - share) * 100.0);
    assert!(log.contains("segclip fetch tinyclip-8m"), "{log}");
}
