//! The page's interactive part: weights, image input, label chips, sliders, the overlay canvas,
//! hover read-out and downloads. All computing goes through the shared `pipeline::Segmenter`;
//! image features and label embeddings are cached there, so a label edit re-runs only the text
//! tower for new labels and the cheap combination.

use std::cell::RefCell;
use std::rc::Rc;

use burn::tensor::Device;
use wasm_bindgen::prelude::*;
use wasm_bindgen::{Clamped, JsCast};
use wasm_bindgen_futures::{spawn_local, JsFuture};
use web_sys::{CanvasRenderingContext2d, HtmlCanvasElement, HtmlInputElement};

use super::dom;
use crate::data::{emoji, generate, shape_classes, SceneConfig, Split};
use crate::pipeline::{decode, labels, overlay, preprocess, ImageFeatures, Rgb, Segmentation, Segmenter};
use crate::tokenizer::ClipTokenizer;
use crate::weights::{format, model_io};

/// Images above this many pixels are refused before decoding (a decompression bomb never
/// allocates); images with a long side above `DISPLAY_LONG_SIDE` are downscaled for display.
const MAX_PIXELS: u64 = 40_000_000;
const DISPLAY_LONG_SIDE: usize = 2048;

#[derive(Default)]
struct Timings {
    /// `None` when the run reused the image's cached features.
    image_ms: Option<f64>,
    text_ms: f64,
    combine_ms: f64,
    /// From the request (image, label edit) to the painted overlay, queueing included.
    repaint_ms: f64,
    /// Of that, painting the overlay and the legend.
    paint_ms: f64,
}

#[derive(Default)]
struct App {
    device: Option<Device>,
    tokenizer_json: Vec<u8>,
    /// Taken out while a computation runs (the pipeline is async; no borrow spans an await).
    segmenter: Option<Segmenter>,
    model_name: String,
    image: Option<Rgb>,
    features: Option<ImageFeatures>,
    labels: Vec<String>,
    hidden: Vec<bool>,
    bg_thresh: f32,
    alpha: f32,
    outline: bool,
    result: Option<Segmentation>,
    timings: Timings,
    busy: bool,
    pending: bool,
    sample_index: u64,
    painted_once: bool,
    /// The loaded weights file, kept to rebuild the model on the CPU if the GPU is lost.
    model_bytes: Vec<u8>,
    /// Bumped when the model is replaced; a computation started before is discarded.
    generation: u64,
}

thread_local! {
    static APP: Rc<RefCell<App>> = Rc::new(RefCell::new(App { bg_thresh: 0.8, alpha: 0.55, ..Default::default() }));
}

fn app() -> Rc<RefCell<App>> {
    APP.with(|a| a.clone())
}

fn now() -> f64 {
    web_sys::window().and_then(|w| w.performance()).map(|p| p.now()).unwrap_or(0.0)
}

fn message(text: &str, is_error: bool) {
    dom::set_text("message", text);
    if let Some(el) = dom::element("message") {
        el.set_class_name(if is_error { "note error" } else { "note" });
    }
}

/// Lets the browser paint (busy state, messages) before a long step.
async fn yield_to_browser() {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        if let Some(w) = web_sys::window() {
            let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, 0);
        }
    });
    let _ = JsFuture::from(promise).await;
}

/// Called once the backend is chosen: wires the controls and loads the tokenizer and, when the
/// manifest lists one, the bundled model.
pub async fn init(device: Device, bundled: Option<crate::weights::manifest::ManifestEntry>) -> Result<(), String> {
    let tokenizer_json = dom::fetch_bytes("static/tokenizer.json").await?;
    ClipTokenizer::from_bytes(&tokenizer_json).map_err(|e| e.to_string())?;
    {
        let app = app();
        let mut a = app.borrow_mut();
        a.device = Some(device);
        a.tokenizer_json = tokenizer_json;
    }
    wire_controls()?;
    match bundled {
        Some(entry) => {
            let file = entry.file.clone();
            let path = format!("weights/{file}");
            let (bytes, origin) = dom::fetch_cached_verified(&path, Some(&entry.sha256), "progress", "progress-text").await?;
            dom::merge_status("weights_origin", &serde_json::json!(if origin == dom::Origin::Cache { "cache" } else { "network" }));
            // The model's own default threshold (its model card says how it was chosen).
            if let Some(t) = entry.bg_thresh {
                app().borrow_mut().bg_thresh = t as f32;
                if let Some(slider) = input("bg-slider") {
                    slider.set_value(&format!("{t:.2}"));
                }
                dom::set_text("bg-value", &format!("{t:.2}"));
            }
            load_weights(&bytes, &file)?;
            warm_up().await;
        }
        None => dom::set_text("model", "No bundled model in this build yet: load a weights file with \"Use my own weights\"."),
    }
    publish();
    Ok(())
}

/// Builds a model from weights bytes; on failure the current model stays.
fn load_weights(bytes: &[u8], name: &str) -> Result<(), String> {
    let app = app();
    let (device, tokenizer_json) = {
        let a = app.borrow();
        (a.device.clone().ok_or("no compute device")?, a.tokenizer_json.clone())
    };
    let file = format::read(bytes).map_err(|e| format!("{name}: {e}"))?;
    let model = model_io::load_model(&file, &device).map_err(|e| format!("{name}: {e}"))?;
    let tokenizer = ClipTokenizer::from_bytes(&tokenizer_json).map_err(|e| e.to_string())?;
    let segmenter = Segmenter::new(model, file.config.clone(), tokenizer, device).map_err(|e| format!("{name}: {e}"))?;
    {
        let mut a = app.borrow_mut();
        a.segmenter = Some(segmenter);
        a.model_name = name.to_string();
        a.model_bytes = bytes.to_vec();
        a.generation += 1;
        a.features = None;
        a.result = None;
    }
    let c = &file.config;
    dom::set_text(
        "model",
        &format!(
            "Model: {name} ({}, image {}px, width {}, {} centers, {:.1} MB)",
            file.dtype,
            c.image_size,
            c.vision_width,
            c.num_centers,
            bytes.len() as f64 / 1e6
        ),
    );
    schedule();
    Ok(())
}

/// Called when the WebGPU device is lost: rebuild the model on the CPU backend and go on.
pub async fn on_device_lost(reason: String) {
    dom::log(&format!("WebGPU device lost: {reason}"));
    let picked = match super::backend::cpu_after_device_loss(&reason).await {
        Ok(p) => p,
        Err(e) => {
            message(&format!("The GPU was lost and the CPU backend failed too: {e}"), true);
            return;
        }
    };
    super::backend::show_backend(&picked.info);
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
    match load_weights(&bytes, &name) {
        Ok(()) => message("The GPU was lost; the model now runs on the CPU (slower, same results).", true),
        Err(e) => message(&format!("The GPU was lost and the model could not be rebuilt on the CPU: {e}"), true),
    }
}

/// Runs the model once on a blank image and one label so shaders compile and buffers are
/// allocated before the user's first image; the counters start from zero afterwards.
async fn warm_up() {
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
    let outcome = async {
        segmenter.encode_image(&blank).await?;
        segmenter.encode_labels(&["object".to_string()]).await
    }
    .await;
    segmenter.counters = Default::default();
    segmenter.clear_label_cache();
    let ms = now() - t0;
    dom::merge_status("warm_up_ms", &serde_json::json!(ms));
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
    if pending {
        schedule();
    }
}

fn set_image(rgb: Rgb, note: Option<String>) {
    let rgb = if rgb.width.max(rgb.height) > DISPLAY_LONG_SIDE {
        let s = DISPLAY_LONG_SIDE as f64 / rgb.width.max(rgb.height) as f64;
        let (w, h) = (((rgb.width as f64 * s) as usize).max(1), ((rgb.height as f64 * s) as usize).max(1));
        let src: Vec<f32> = rgb.pixels.iter().map(|&v| v as f32).collect();
        let out = preprocess::resize_bilinear(&src, rgb.width, rgb.height, 3, w, h);
        message(&format!("Large image ({}x{}) downscaled to {w}x{h} for display and segmentation.", rgb.width, rgb.height), false);
        Rgb::new(w, h, out.iter().map(|v| v.round().clamp(0.0, 255.0) as u8).collect()).expect("resized image")
    } else {
        message(note.as_deref().unwrap_or(""), false);
        rgb
    };
    {
        let app = app();
        let mut a = app.borrow_mut();
        a.image = Some(rgb);
        a.features = None;
        a.result = None;
    }
    if let Some(el) = dom::element("placeholder") {
        let _ = el.set_attribute("hidden", "");
    }
    paint();
    schedule();
}

/// Reads a picked, dropped or pasted image file locally and shows it.
fn load_image_file(file: web_sys::File) {
    spawn_local(async move {
        let name = file.name();
        match file_bytes(file).await {
            Ok(bytes) => handle_image_bytes(&bytes, &name),
            Err(e) => message(&e, true),
        }
    });
}

fn handle_image_bytes(bytes: &[u8], name: &str) {
    match decode::decode_image(bytes, MAX_PIXELS) {
        Ok(rgb) => set_image(rgb, None),
        Err(e) => message(&format!("{name}: {e}"), true),
    }
}

/// A sample's world names its classes: they become the labels when there are none yet or the
/// labels are another world's class list; labels the user typed stay.
fn use_default_labels(defaults: &[&str]) {
    let worlds: [Vec<&str>; 2] = [shape_classes()[1..].to_vec(), emoji::CLASSES[1..].to_vec()];
    {
        let app = app();
        let mut a = app.borrow_mut();
        let current: Vec<&str> = a.labels.iter().map(String::as_str).collect();
        if !(current.is_empty() || worlds.iter().any(|w| *w == current)) || current == defaults {
            return;
        }
        a.labels = defaults.iter().map(|s| s.to_string()).collect();
        a.hidden = vec![false; a.labels.len()];
        a.features = None;
        a.result = None;
    }
    render_chips();
}

fn add_labels(text: &str) {
    let parsed: Vec<String> =
        text.split([',', '\n', ';']).map(|s| s.split_whitespace().collect::<Vec<_>>().join(" ")).filter(|s| !s.is_empty()).collect();
    if parsed.is_empty() {
        return;
    }
    let app = app();
    let mut problems = Vec::new();
    {
        let mut a = app.borrow_mut();
        for label in parsed {
            if a.labels.iter().any(|l| l.to_lowercase() == label.to_lowercase()) {
                problems.push(format!("\"{label}\" is already a label"));
                continue;
            }
            if a.labels.len() >= labels::MAX_LABELS {
                problems.push(format!("at most {} labels", labels::MAX_LABELS));
                break;
            }
            a.labels.push(label);
            a.hidden.push(false);
        }
    }
    message(&problems.join("; "), !problems.is_empty());
    render_chips();
    schedule();
}

fn render_chips() {
    let app = app();
    let a = app.borrow();
    let colours = overlay::label_colours(&a.labels);
    let Some(list) = dom::element("chips") else {
        return;
    };
    list.set_inner_html("");
    let document = dom::document().unwrap();
    for (i, label) in a.labels.iter().enumerate() {
        let li = document.create_element("li").unwrap();
        li.set_class_name(if a.hidden[i] { "chip hidden-label" } else { "chip" });
        let [r, g, b] = colours[i];
        let _ = li.set_attribute("style", &format!("--chip: rgb({r},{g},{b})"));
        let toggle = document.create_element("button").unwrap();
        let _ = toggle.set_attribute("type", "button");
        let _ = toggle.set_attribute("title", "Show or hide this label (double-click to edit)");
        let _ = toggle.set_attribute("aria-pressed", if a.hidden[i] { "false" } else { "true" });
        let _ = toggle.set_attribute("data-label-index", &i.to_string());
        toggle.set_text_content(Some(label));
        let remove = document.create_element("button").unwrap();
        let _ = remove.set_attribute("type", "button");
        let _ = remove.set_attribute("aria-label", &format!("Remove {label}"));
        let _ = remove.set_attribute("data-remove-index", &i.to_string());
        remove.set_text_content(Some("×"));
        let _ = li.append_child(&toggle);
        let _ = li.append_child(&remove);
        let _ = list.append_child(&li);
    }
}

/// Starts a computation, or marks one pending if one runs: the page never runs two at once.
fn schedule() {
    {
        let state = app();
        let mut a = state.borrow_mut();
        if a.busy {
            a.pending = true;
            return;
        }
        if a.segmenter.is_none() || a.image.is_none() || a.labels.is_empty() {
            drop(a);
            paint();
            publish();
            return;
        }
        a.busy = true;
    }
    let requested = now();
    spawn_local(async move {
        loop {
            if let Err(e) = compute().await {
                message(&e, true);
            }
            let state = app();
            let mut a = state.borrow_mut();
            if a.pending {
                a.pending = false;
                continue;
            }
            a.busy = false;
            break;
        }
        dom::set_busy(false);
        let paint_start = now();
        paint();
        let painted = now();
        let first = {
            let state = app();
            let mut a = state.borrow_mut();
            a.timings.repaint_ms = painted - requested;
            a.timings.paint_ms = painted - paint_start;
            let first = a.result.is_some() && !a.painted_once;
            a.painted_once |= a.result.is_some();
            first
        };
        if first {
            // Since navigation start: page, wasm, weights (cached or not), warm-up and this run.
            dom::merge_status("first_mask_ms", &serde_json::json!(painted));
        }
        publish();
    });
}

async fn compute() -> Result<(), String> {
    let app = app();
    let (mut segmenter, image, features, labels_now, bg, generation) = {
        let mut a = app.borrow_mut();
        let generation = a.generation;
        let Some(s) = a.segmenter.take() else {
            return Ok(());
        };
        let Some(image) = a.image.clone() else {
            a.segmenter = Some(s);
            return Ok(());
        };
        (s, image, a.features.take(), a.labels.clone(), a.bg_thresh, generation)
    };
    dom::set_busy(true);
    // Let the browser show the busy state before a long image encode; a label edit on cached
    // features is short, and yielding there cost ~10 ms of a 51 ms repaint.
    if features.is_none() {
        yield_to_browser().await;
    }
    segmenter.options.bg_thresh = bg;
    let outcome: Result<(ImageFeatures, Segmentation, Timings), String> = async {
        let mut t = Timings::default();
        let features = match features {
            Some(f) => f,
            None => {
                let t0 = now();
                let f = segmenter.encode_image(&image).await?;
                t.image_ms = Some(now() - t0);
                yield_to_browser().await;
                f
            }
        };
        let t0 = now();
        let embeddings = segmenter.encode_labels(&labels_now).await?;
        t.text_ms = now() - t0;
        let t0 = now();
        let result = segmenter.combine(&features, &labels_now, &embeddings).await?;
        t.combine_ms = now() - t0;
        Ok((features, result, t))
    }
    .await;
    let mut a = app.borrow_mut();
    if a.generation != generation {
        // The model was replaced meanwhile (own weights, or a lost GPU): this result is stale.
        a.pending = true;
        return Ok(());
    }
    a.segmenter = Some(segmenter);
    match outcome {
        Ok((features, result, timings)) => {
            a.features = Some(features);
            a.result = Some(result);
            a.timings = timings;
            drop(a);
            message("", false);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn context() -> Option<(HtmlCanvasElement, CanvasRenderingContext2d)> {
    let canvas: HtmlCanvasElement = dom::element("canvas")?.dyn_into().ok()?;
    let ctx = canvas.get_context("2d").ok()??.dyn_into().ok()?;
    Some((canvas, ctx))
}

/// Paints the image and, when there is a result for it, the overlay; updates the legend.
fn paint() {
    let app = app();
    let a = app.borrow();
    let Some(image) = &a.image else { return };
    let Some((canvas, ctx)) = context() else {
        return;
    };
    // Resizing a canvas reallocates and clears its backing store: only when the image changes.
    if canvas.width() != image.width as u32 || canvas.height() != image.height as u32 {
        canvas.set_width(image.width as u32);
        canvas.set_height(image.height as u32);
        // Small images (the 96 px emoji scenes) are shown enlarged with crisp pixels.
        let _ = if image.width.max(image.height) < 320 {
            canvas.set_attribute("data-small", "")
        } else {
            canvas.remove_attribute("data-small")
        };
    }
    let rgba = match &a.result {
        Some(r) if r.width == image.width && r.height == image.height => {
            let colours: Vec<[u8; 3]> = r.labels.iter().map(|l| l.colour).collect();
            overlay::paint(&image.pixels, image.width, image.height, &r.label_map, &colours, a.alpha, a.outline, &a.hidden)
        }
        _ => image.pixels.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect(),
    };
    if let Ok(data) = web_sys::ImageData::new_with_u8_clamped_array_and_sh(Clamped(&rgba), image.width as u32, image.height as u32) {
        let _ = ctx.put_image_data(&data, 0.0, 0.0);
    }
    // One innerHTML write instead of a DOM call per item (the per-item version took 14.5 ms of a 22 ms paint in the page test).
    if let Some(legend) = dom::element("legend") {
        let mut html = String::new();
        if let Some(r) = &a.result {
            for (i, l) in r.labels.iter().enumerate() {
                let [cr, cg, cb] = l.colour;
                let class = if a.hidden.get(i).copied().unwrap_or(false) { " class=\"hidden-label\"" } else { "" };
                html.push_str(&format!(
                    "<li{class}><span class=\"swatch\" style=\"background: rgb({cr},{cg},{cb})\"></span>{} — {:.1}%</li>",
                    html_escape(&l.label),
                    l.area_share * 100.0
                ));
            }
            html.push_str(&format!("<li>background — {:.1}%</li>", r.background_share * 100.0));
        }
        legend.set_inner_html(&html);
    }
    let has_result = a.result.is_some();
    for id in ["download-overlay", "download-mask"] {
        if let Some(el) = dom::element(id) {
            if has_result {
                let _ = el.remove_attribute("disabled");
            } else {
                let _ = el.set_attribute("disabled", "");
            }
        }
    }
    if has_result {
        let t = &a.timings;
        let image = match t.image_ms {
            Some(ms) => format!("image encode {ms:.0} ms"),
            None => "image features cached".to_string(),
        };
        dom::set_text("timings", &format!("Last run: {image}, text encode {:.0} ms, combine {:.0} ms", t.text_ms, t.combine_ms));
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Publishes the state for tests and tools: `window.segclipStatus.app` and, after a result,
/// `window.segclipLabelMap` (a Uint8Array, 0 = background, i = label i).
fn publish() {
    let app = app();
    let a = app.borrow();
    let counters = a.segmenter.as_ref().map(|s| s.counters);
    // What the GPU allocator holds (weights, cached features, pooled buffers); `None` on the CPU.
    let gpu_memory =
        a.device.as_ref().and_then(|d| d.memory_pool_usage()).map(
            |u| serde_json::json!({"bytes_in_use": u.bytes_in_use, "bytes_reserved": u.bytes_reserved, "allocations": u.number_allocs}),
        );
    let app_status = serde_json::json!({
        "gpu_memory": gpu_memory,
        "model": a.model_name,
        "labels": a.labels,
        "busy": a.busy,
        "counters": counters,
        "result": a.result.as_ref().map(|r| serde_json::json!({"width": r.width, "height": r.height, "labels": r.labels, "background_share": r.background_share})),
        "timings_ms": {"image": a.timings.image_ms, "text": a.timings.text_ms, "combine": a.timings.combine_ms, "paint": a.timings.paint_ms, "repaint": a.timings.repaint_ms},
    });
    dom::merge_status("app", &app_status);
    if let (Some(r), Some(w)) = (&a.result, web_sys::window()) {
        let array = js_sys::Uint8Array::from(r.label_map.as_slice());
        let _ = js_sys::Reflect::set(&w, &"segclipLabelMap".into(), &array);
    }
}

fn png_bytes(width: usize, height: usize, data: Vec<u8>, rgba: bool) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let colour = if rgba { image::ExtendedColorType::Rgba8 } else { image::ExtendedColorType::L8 };
    image::ImageEncoder::write_image(image::codecs::png::PngEncoder::new(&mut out), &data, width as u32, height as u32, colour).ok()?;
    Some(out)
}

fn download(which: &str) {
    let app = app();
    let a = app.borrow();
    let (Some(image), Some(r)) = (&a.image, &a.result) else {
        return;
    };
    let (bytes, name) = if which == "overlay" {
        let colours: Vec<[u8; 3]> = r.labels.iter().map(|l| l.colour).collect();
        let rgba = overlay::paint(&image.pixels, image.width, image.height, &r.label_map, &colours, a.alpha, a.outline, &a.hidden);
        (png_bytes(image.width, image.height, rgba, true), "segclip-overlay.png")
    } else {
        (png_bytes(image.width, image.height, r.label_map.clone(), false), "segclip-mask.png")
    };
    if let Some(bytes) = bytes {
        dom::save_bytes(&bytes, "image/png", name);
    }
}

fn on<E: wasm_bindgen::convert::FromWasmAbi + 'static>(id: &str, event: &str, handler: impl FnMut(E) + 'static) -> Result<(), String> {
    let el = dom::element(id).ok_or_else(|| format!("the page lacks #{id}"))?;
    let closure = Closure::<dyn FnMut(E)>::new(handler);
    el.add_event_listener_with_callback(event, closure.as_ref().unchecked_ref()).map_err(|e| format!("{e:?}"))?;
    closure.forget(); // lives as long as the page
    Ok(())
}

fn input(id: &str) -> Option<HtmlInputElement> {
    dom::element(id)?.dyn_into().ok()
}

/// Reads a picked or dropped file's bytes locally.
async fn file_bytes(file: web_sys::File) -> Result<Vec<u8>, String> {
    let buffer = JsFuture::from(file.array_buffer()).await.map_err(|e| format!("{}: {e:?}", file.name()))?;
    Ok(js_sys::Uint8Array::new(&buffer).to_vec())
}

fn wire_controls() -> Result<(), String> {
    on::<web_sys::Event>("image-input", "change", |_| {
        let Some(file) = input("image-input").and_then(|i| i.files()).and_then(|f| f.get(0)) else {
            return;
        };
        load_image_file(file);
    })?;
    on::<web_sys::Event>("weights-input", "change", |_| {
        let Some(file) = input("weights-input").and_then(|i| i.files()).and_then(|f| f.get(0)) else {
            return;
        };
        spawn_local(async move {
            let name = file.name();
            message(&format!("Loading {name}…"), false);
            yield_to_browser().await;
            match file_bytes(file).await.and_then(|bytes| load_weights(&bytes, &name)) {
                Ok(()) => message(&format!("Loaded {name}."), false),
                Err(e) => message(&format!("{e} — the current model stays."), true),
            }
            publish();
        });
    })?;
    on::<web_sys::Event>("sample-button", "click", |_| {
        let index = {
            let app = app();
            let mut a = app.borrow_mut();
            a.sample_index += 1;
            // Different samples on every visit, reproducible within one.
            (now() as u64).wrapping_mul(2654435761).wrapping_add(a.sample_index) % 100_000
        };
        // The emoji world unless the selector asks for the shape scenes.
        let shapes = dom::element("world-select")
            .and_then(|e| e.dyn_into::<web_sys::HtmlSelectElement>().ok())
            .is_some_and(|s| s.value() == "shapes");
        let (rgb, caption, defaults): (_, _, Vec<&str>) = if shapes {
            let scene = generate(Split::Val, index, &SceneConfig::with_size(224));
            (Rgb::new(scene.width, scene.height, scene.image), scene.captions.first().cloned(), shape_classes()[1..].to_vec())
        } else {
            let scene = emoji::generate(Split::Val, index, &emoji::EmojiConfig::default());
            (Rgb::new(scene.width, scene.height, scene.image), scene.captions.first().cloned(), emoji::CLASSES[1..].to_vec())
        };
        use_default_labels(&defaults);
        if let Ok(rgb) = rgb {
            let world = if shapes { "Shape" } else { "Emoji" };
            set_image(rgb, Some(format!("{world} scene val #{index}: {}", caption.unwrap_or_default())));
        }
    })?;
    on::<web_sys::KeyboardEvent>("label-input", "keydown", |e| {
        if e.key() == "Enter" || e.key() == "," {
            e.prevent_default();
            if let Some(i) = input("label-input") {
                add_labels(&i.value());
                i.set_value("");
            }
        }
    })?;
    on::<web_sys::MouseEvent>("chips", "click", |e| {
        let Some(target) = e.target().and_then(|t| t.dyn_into::<web_sys::Element>().ok()) else {
            return;
        };
        let app = app();
        if let Some(i) = target.get_attribute("data-remove-index").and_then(|v| v.parse::<usize>().ok()) {
            let mut a = app.borrow_mut();
            if i < a.labels.len() {
                a.labels.remove(i);
                a.hidden.remove(i);
            }
        } else if let Some(i) = target.get_attribute("data-label-index").and_then(|v| v.parse::<usize>().ok()) {
            let mut a = app.borrow_mut();
            if let Some(h) = a.hidden.get_mut(i) {
                *h = !*h;
            }
            drop(a);
            render_chips();
            paint();
            return;
        } else {
            return;
        }
        render_chips();
        schedule();
    })?;
    on::<web_sys::MouseEvent>("chips", "dblclick", |e| {
        let Some(target) = e.target().and_then(|t| t.dyn_into::<web_sys::Element>().ok()) else {
            return;
        };
        if let Some(i) = target.get_attribute("data-label-index").and_then(|v| v.parse::<usize>().ok()) {
            let app = app();
            let label = {
                let mut a = app.borrow_mut();
                if i >= a.labels.len() {
                    return;
                }
                a.hidden.remove(i);
                a.labels.remove(i)
            };
            if let Some(field) = input("label-input") {
                field.set_value(&label);
                let _ = field.focus();
            }
            render_chips();
            schedule();
        }
    })?;
    on::<web_sys::Event>("bg-slider", "input", |_| {
        let Some(v) = input("bg-slider").map(|i| i.value_as_number() as f32) else {
            return;
        };
        dom::set_text("bg-value", &format!("{v:.2}"));
        app().borrow_mut().bg_thresh = v;
        schedule();
    })?;
    on::<web_sys::Event>("alpha-slider", "input", |_| {
        let Some(v) = input("alpha-slider").map(|i| i.value_as_number() as f32) else {
            return;
        };
        dom::set_text("alpha-value", &format!("{v:.2}"));
        app().borrow_mut().alpha = v;
        paint();
    })?;
    on::<web_sys::Event>("outline-toggle", "change", |_| {
        let checked = input("outline-toggle").map(|i| i.checked()).unwrap_or(false);
        app().borrow_mut().outline = checked;
        paint();
    })?;
    on::<web_sys::MouseEvent>("canvas", "mousemove", |e| {
        let Some((canvas, _)) = context() else { return };
        let app = app();
        let a = app.borrow();
        let Some(r) = &a.result else { return };
        let scale_x = r.width as f64 / canvas.client_width().max(1) as f64;
        let scale_y = r.height as f64 / canvas.client_height().max(1) as f64;
        let x = ((e.offset_x() as f64 * scale_x) as usize).min(r.width - 1);
        let y = ((e.offset_y() as f64 * scale_y) as usize).min(r.height - 1);
        let i = y * r.width + x;
        let l = r.label_map[i] as usize;
        let name = if l == 0 { "background".to_string() } else { r.labels[l - 1].label.clone() };
        dom::set_text("hover", &format!("({x}, {y}): {name}, score {:.3}", r.scores[i]));
    })?;
    on::<web_sys::MouseEvent>("download-overlay", "click", |_| download("overlay"))?;
    on::<web_sys::MouseEvent>("download-mask", "click", |_| download("mask"))?;
    wire_drop_and_paste()
}

fn wire_drop_and_paste() -> Result<(), String> {
    let document = dom::document().ok_or("no document")?;
    let over = Closure::<dyn FnMut(web_sys::DragEvent)>::new(|e: web_sys::DragEvent| {
        e.prevent_default();
        if let Some(z) = dom::element("drop-zone") {
            z.set_class_name("canvas-wrap dragging");
        }
    });
    document.add_event_listener_with_callback("dragover", over.as_ref().unchecked_ref()).map_err(|e| format!("{e:?}"))?;
    over.forget();
    let drop_handler = Closure::<dyn FnMut(web_sys::DragEvent)>::new(|e: web_sys::DragEvent| {
        e.prevent_default();
        if let Some(z) = dom::element("drop-zone") {
            z.set_class_name("canvas-wrap");
        }
        let Some(file) = e.data_transfer().and_then(|d| d.files()).and_then(|f| f.get(0)) else {
            return;
        };
        load_image_file(file);
    });
    document.add_event_listener_with_callback("drop", drop_handler.as_ref().unchecked_ref()).map_err(|e| format!("{e:?}"))?;
    drop_handler.forget();
    let paste = Closure::<dyn FnMut(web_sys::ClipboardEvent)>::new(|e: web_sys::ClipboardEvent| {
        let Some(items) = e.clipboard_data().and_then(|d| d.files()) else {
            return;
        };
        let Some(file) = items.get(0) else { return };
        e.prevent_default();
        load_image_file(file);
    });
    document.add_event_listener_with_callback("paste", paste.as_ref().unchecked_ref()).map_err(|e| format!("{e:?}"))?;
    paste.forget();
    Ok(())
}
