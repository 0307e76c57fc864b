//! The page's session: start-up (tokenizer, controls, the bundled model), loading weights,
//! the warm-up run, and moving to the CPU when the GPU device is lost.

use burn::tensor::Device;

use super::schedule::schedule;
use super::state::*;
use super::view::{message, publish};
use crate::pipeline::{Kind, Protocol, Rgb, Segmenter};
use crate::tokenizer::ClipTokenizer;
use crate::web::{dom, PageError};
use crate::weights::format::{self, ByteSource, Residency};

/// Keeps the compute device and loads the tokenizer.
pub(super) async fn prepare(device: Device) -> Result<(), PageError> {
    let tokenizer_json = dom::fetch_bytes("static/tokenizer.json").await?;
    ClipTokenizer::from_bytes(&tokenizer_json)?;
    {
        let app = app();
        let mut a = app.borrow_mut();
        a.device = Some(device);
        a.tokenizer_json = tokenizer_json;
    }
    Ok(())
}

/// Loads, checks and warms up the bundled model, when the manifest lists one.
pub(super) async fn load_bundled(bundled: Option<crate::pipeline::manifest::ManifestEntry>) -> Result<(), PageError> {
    match bundled {
        Some(entry) => {
            let file = entry.file.clone();
            let path = format!("weights/{file}");
            let (bytes, origin) = dom::fetch_cached_verified(&path, Some(&entry.sha256), "progress", "progress-text").await?;
            dom::merge_status("weights_origin", &serde_json::json!(if origin == dom::Origin::Cache { "cache" } else { "network" }));
            load_weights(&bytes.as_slice(), &file)?;
            apply_manifest_entry(&entry)?;
            app().borrow_mut().bundled = Some(entry);
            warm_up().await;
        }
        None => dom::set_text("model", "No bundled model in this build yet: load a weights file with \"Use my own weights\"."),
    }
    Ok(())
}

/// The bundled model's own protocol from its manifest entry (threshold, windows, scales,
/// snapping, refinement). Weights loaded later by the user start from their own again, as the
/// CLI's do without a manifest.
pub(super) fn apply_manifest_entry(entry: &crate::pipeline::manifest::ManifestEntry) -> Result<(), PageError> {
    if let Some(s) = app().borrow_mut().segmenter.as_mut() {
        s.set_protocol(entry.protocol.clone()).map_err(|error| PageError::Model { file: entry.file.clone(), error })?;
    }
    set_bg_thresh(entry.protocol.bg_thresh);
    Ok(())
}

/// All of a source's bytes, in wasm memory.
fn read_all(bytes: &impl ByteSource) -> Result<Vec<u8>, PageError> {
    let mut all = vec![0u8; bytes.len() as usize];
    bytes.read_into(0, &mut all).map_err(|e| PageError::Message(e.to_string()))?;
    Ok(all)
}

/// Sets the background threshold the next combination uses, and shows it on the slider.
fn set_bg_thresh(t: f32) {
    app().borrow_mut().bg_thresh = t;
    if let Some(slider) = dom::input("bg-slider") {
        slider.set_value(&format!("{t:.2}"));
    }
    dom::set_text("bg-value", &format!("{t:.2}"));
}

/// Files from this size on are held as int8 on the CPU path by default: there the f32 copy (four
/// times the int8 file) is what fills wasm memory, which never shrinks. A smaller model (the
/// bundled one is 9 MB) is held as f32, since its many small windows each dequantise it again.
const INT8_RESIDENT_FROM_BYTES: u64 = 48_000_000;

/// How the page holds an int8 file's weights: `?resident=f32|int8`, by default int8 on the CPU
/// path for files of `INT8_RESIDENT_FROM_BYTES` or more, else f32 (always f32 on WebGPU: the
/// weights are in GPU buffers there, and int8 residency is the CPU backend's).
fn residency(on_cpu: bool, file_bytes: u64) -> Residency {
    match dom::query_param("resident").and_then(|r| r.parse().ok()) {
        Some(Residency::Int8) if !on_cpu => {
            dom::log("?resident=int8 holds weights as int8 on the CPU path only; WebGPU holds them as f32");
            Residency::F32
        }
        Some(r) => r,
        None if on_cpu && file_bytes >= INT8_RESIDENT_FROM_BYTES => Residency::Int8,
        None => Residency::F32,
    }
}

/// Builds a model from a weights file, read a tensor at a time from `bytes` (wasm memory, or a
/// buffer in the JS heap); on failure the current model stays.
pub(super) fn load_weights(bytes: &impl ByteSource, name: &str) -> Result<(), PageError> {
    let app = app();
    let (device, tokenizer_json) = {
        let a = app.borrow();
        (a.device.clone().ok_or(PageError::Missing("compute device"))?, a.tokenizer_json.clone())
    };
    // On the CPU path an int8 file stays int8 (dequantised per layer as it runs, the same label
    // maps). On WebGPU the bytes are kept to rebuild the model on the CPU should the GPU be lost.
    let on_cpu = crate::backend::is_cpu(&device);
    let residency = residency(on_cpu, bytes.len());
    let file = format::read_model_from(bytes, residency).map_err(|error| PageError::Weights { file: name.to_string(), error })?;
    let (config, dtype) = (file.config.clone(), file.dtype);
    let tokenizer = ClipTokenizer::from_bytes(&tokenizer_json)?;
    // A SegCLIP file or a plain CLIP converted for a dense method: the file says which.
    let segmenter = Segmenter::from_file(file, tokenizer, device).map_err(|error| PageError::Model { file: name.to_string(), error })?;
    if segmenter.kind() == Kind::Dense {
        // The method's own background threshold (its VOC setting); a SegCLIP file keeps the
        // slider where it is.
        set_bg_thresh(segmenter.protocol.bg_thresh);
    }
    let kind = match segmenter.kind() {
        Kind::Dense => format!("{} ({} templates)", segmenter.describe(), segmenter.protocol.templates.len()),
        Kind::Groups => segmenter.describe(),
    };
    {
        let mut a = app.borrow_mut();
        a.segmenter = Some(segmenter);
        a.labels_cache_key = None;
        a.model_name = name.to_string();
        a.model_bytes = if on_cpu { Vec::new() } else { read_all(bytes)? };
        a.resident = residency;
        a.generation += 1;
        a.forget_features();
    }
    let c = &config;
    dom::set_text(
        "model",
        &format!(
            "Model: {name} ({}, image {}px, width {}, {kind}, {:.1} MB)",
            dtype,
            c.image_size,
            c.vision_width,
            bytes.len() as f64 / 1e6
        ),
    );
    schedule();
    Ok(())
}

/// Called when the WebGPU device is lost: rebuild the model on the CPU backend and go on.
pub async fn on_device_lost(reason: String) {
    dom::log(&format!("WebGPU device lost: {reason}"));
    let picked = match crate::web::backend::cpu_after_device_loss(&reason).await {
        Ok(p) => p,
        Err(e) => {
            message(&format!("The GPU was lost and the CPU backend failed too: {e}"), true);
            return;
        }
    };
    crate::web::backend::show_backend(&picked.info);
    dom::merge_status("backend", &serde_json::to_value(&picked.info).unwrap_or_default());
    let (bytes, name) = {
        let state = app();
        let mut a = state.borrow_mut();
        a.device = Some(picked.device);
        (std::mem::take(&mut a.model_bytes), a.model_name.clone())
    };
    if bytes.is_empty() {
        message("The GPU was lost; computing continues on the CPU.", true);
        return;
    }
    match load_weights(&bytes.as_slice(), &name) {
        Ok(()) => message("The GPU was lost; the model now runs on the CPU (slower, same results).", true),
        Err(e) => message(&format!("The GPU was lost and the model could not be rebuilt on the CPU: {e}"), true),
    }
}

/// Runs the model once on a blank image and one label so shaders compile and buffers are
/// allocated before the user's first image; the counters start from zero afterwards.
pub(super) async fn warm_up() {
    let app = app();
    let taken = {
        let mut a = app.borrow_mut();
        if a.busy {
            None
        } else {
            a.busy = true;
            a.segmenter.take()
        }
    };
    let Some(mut segmenter) = taken else { return };
    dom::set_text("timings", "Warming up the model...");
    let t0 = now();
    let size = segmenter.config.image_size;
    let blank = Rgb { width: size, height: size, pixels: vec![128; size * size * 3] };
    // One window of the model's input size is enough to compile the shaders and size the
    // buffers every later window reuses; the model's own settings (the bundled one: 3x3 windows
    // and three more scales, mirrored, superpixels, refinement, weights/manifest.json) would run
    // 108 windows of the blank image instead of one before the page is ready, for nothing. They
    // are restored afterwards.
    let settings = segmenter.protocol.clone();
    segmenter.protocol = Protocol {
        short_side: 0,
        window: 0,
        stride: 0,
        whole_image: false,
        flip: false,
        superpixels: None,
        refine: None,
        extra_short_sides: Vec::new(),
        ..settings.clone()
    };
    let mut label_ms = 0.0;
    let outcome = async {
        segmenter.encode_image(&blank).await?;
        let t0 = now();
        let r = segmenter.encode_labels(&["object".to_string()]).await;
        label_ms = now() - t0;
        r
    }
    .await;
    let prompts = segmenter.protocol.templates.len();
    segmenter.protocol = settings;
    segmenter.counters = Default::default();
    segmenter.clear_label_cache();
    let ms = now() - t0;
    dom::merge_status("warm_up_ms", &serde_json::json!(ms));
    dom::merge_status("label_cost_ms", &serde_json::json!(label_ms));
    // The GPU allocator reports its pool; the CPU backend has none.
    let on_cpu = crate::backend::is_cpu(&segmenter.device);
    let advice = if label_ms > 1000.0 && on_cpu {
        " That is slow: a browser with WebGPU, or a smaller model, makes it faster."
    } else {
        ""
    };
    dom::set_text(
        "label-cost",
        &format!("A new label costs about {:.1} s here ({prompts} prompt{} through the text tower; each is computed once).{advice}", label_ms / 1e3, if prompts == 1 { "" } else { "s" }),
    );
    dom::set_text("timings", &format!("Warm-up: {ms:.0} ms"));
    if let Err(e) = outcome {
        dom::log(&format!("warm-up: {e}"));
    }
    let pending = {
        let mut a = app.borrow_mut();
        a.segmenter = Some(segmenter);
        a.busy = false;
        std::mem::take(&mut a.pending)
    };
    // The status shows the segmenter again (its windows; the counters were reset above).
    publish();
    if pending {
        schedule();
    }
}
