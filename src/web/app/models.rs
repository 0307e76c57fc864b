//! The page's models: the presets (weights/presets.json) in a picker with what each knows, a
//! hub download converted as it streams in (src/weights/stream.rs, the CLI's converter), the
//! converted file and the label embeddings kept in the Cache API, and a line for every failure.
//! A failure leaves the loaded model as it was.

use std::cell::Cell;

use js_sys::Reflect;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use super::session::{load_weights, warm_up};
use super::state::*;
use super::view::{message, publish};
use crate::web::{dom, PageError};
use crate::weights::presets::{Preset, Presets, Source};
use crate::weights::stream::{ConvertOptions, StreamConverter};
use crate::weights::{format, StorageDtype};

thread_local! {
    /// Set by the Cancel button; the download loop stops at its next chunk.
    static CANCEL: Cell<bool> = const { Cell::new(false) };
    static DOWNLOADING: Cell<bool> = const { Cell::new(false) };
}

/// Loads the presets (the page's own weights/presets.json, else the ones built in), fills the
/// picker and the cached-model list.
pub(super) async fn init_presets() {
    let presets = match dom::fetch_bytes("weights/presets.json").await {
        Ok(bytes) => Presets::parse(&String::from_utf8_lossy(&bytes), "weights/presets.json").unwrap_or_else(|e| {
            dom::log(&e.to_string());
            Presets::bundled()
        }),
        Err(_) => Presets::bundled(),
    };
    if let Some(select) = dom::element("model-select").and_then(|e| e.dyn_into::<web_sys::HtmlSelectElement>().ok()) {
        let options: String = presets
            .presets
            .iter()
            .map(|p| format!("<option value=\"{}\">{}</option>", super::view::html_escape(&p.id), super::view::html_escape(&p.name)))
            .collect();
        select.set_inner_html(&options);
    }
    app().borrow_mut().presets = Some(presets);
    describe_selected();
    render_cached().await;
}

/// The hub base: `?hub=URL` (a mirror or a local test server), else the presets' own.
fn hub_base(presets: &Presets) -> String {
    dom::query_param("hub").unwrap_or_else(|| presets.hub.clone())
}

fn selected_id() -> Option<String> {
    dom::element("model-select").and_then(|e| e.dyn_into::<web_sys::HtmlSelectElement>().ok()).map(|s| s.value())
}

fn preset(id: &str) -> Option<Preset> {
    app().borrow().presets.as_ref().and_then(|p| p.get(id).ok().cloned())
}

/// The line beside the picker: what the selected model knows and does not, its cost, and
/// where it comes from.
pub(super) fn describe_selected() {
    let Some(p) = selected_id().and_then(|id| preset(&id)) else { return };
    let source = match &p.source {
        Source::Bundled { .. } => "ships with this page".to_string(),
        Source::Hub { repo, .. } => format!("from the model hub ({repo}), converted here and kept in this browser"),
        Source::Release { .. } => match dom::query_param("mirror") {
            Some(m) => format!("from the mirror {m}"),
            None => "GitHub serves it without CORS headers, so this page cannot download it: run `segclip fetch segclip-release` \
                     and drop the file on \"Use my own weights\" (or open the page with ?mirror=URL)"
                .to_string(),
        },
    };
    dom::set_text(
        "model-knows",
        &format!(
            "Knows: {}. Not: {}. {:.0} MB download, about {:.0} MB of memory; {source}.",
            p.knows,
            p.limits,
            p.download_bytes as f64 / 1e6,
            p.memory_bytes as f64 / 1e6
        ),
    );
}

fn cache_key(p: &Preset) -> String {
    format!("models/{}", p.converted_name())
}

fn labels_key(p: &Preset) -> String {
    format!("models/{}.labels.json", p.id)
}

/// Lists the cached models with their sizes and a Forget button each.
pub(super) async fn render_cached() {
    let Some(cache) = dom::open_cache(super::models_cache()).await else {
        dom::set_text("cached-models", "This browser keeps no models here (no Cache API in this context).");
        return;
    };
    let presets = app().borrow().presets.clone().unwrap_or_else(Presets::bundled);
    let mut items = String::new();
    let mut status = Vec::new();
    for p in &presets.presets {
        if matches!(p.source, Source::Bundled { .. }) {
            continue;
        }
        let Some(r) = dom::cached_response(&cache, &cache_key(p)).await else { continue };
        let bytes: f64 = r.headers().get("x-segclip-bytes").ok().flatten().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        items.push_str(&format!(
            "<li>{} ({:.1} MB int8) <button type=\"button\" data-forget=\"{}\">Forget</button></li>",
            super::view::html_escape(&p.name),
            bytes / 1e6,
            super::view::html_escape(&p.id)
        ));
        status.push(serde_json::json!({"id": p.id, "bytes": bytes}));
    }
    if let Some(list) = dom::element("cached-models") {
        list.set_inner_html(if items.is_empty() { "<li class=\"muted\">No model kept in this browser yet.</li>" } else { &items });
    }
    dom::merge_status("cached_models", &serde_json::json!(status));
}

/// Forgets a cached model and its label embeddings.
pub(super) async fn forget(id: &str) {
    let Some(p) = preset(id) else { return };
    if let Some(cache) = dom::open_cache(super::models_cache()).await {
        let _ = JsFuture::from(cache.delete_with_str(&cache_key(&p))).await;
        let _ = JsFuture::from(cache.delete_with_str(&labels_key(&p))).await;
    }
    message(&format!("Forgot {}: the next load downloads it again.", p.name), false);
    render_cached().await;
}

pub(super) fn cancel_download() {
    if DOWNLOADING.with(Cell::get) {
        CANCEL.with(|c| c.set(true));
    }
}

/// Loads the selected preset: from the cache with no request, else downloaded and converted.
pub(super) async fn load_selected() {
    let Some(id) = selected_id() else { return };
    load_preset(&id).await;
}

/// The photo model the page suggests when the emoji model sees a photo: the smallest hub
/// preset.
pub(super) async fn load_photo_preset() {
    let id = app()
        .borrow()
        .presets
        .as_ref()
        .and_then(|p| p.presets.iter().filter(|p| p.page_can_fetch()).min_by_key(|p| p.download_bytes).map(|p| p.id.clone()));
    let Some(id) = id else { return };
    if let Some(select) = dom::element("model-select").and_then(|e| e.dyn_into::<web_sys::HtmlSelectElement>().ok()) {
        select.set_value(&id);
    }
    describe_selected();
    if let Some(hint) = dom::element("photo-hint") {
        let _ = hint.set_attribute("hidden", "");
    }
    load_preset(&id).await;
}

pub(super) async fn load_preset(id: &str) {
    let Some(p) = preset(id) else { return };
    if DOWNLOADING.with(Cell::get) {
        message("A download is running: cancel it first.", true);
        return;
    }
    DOWNLOADING.with(|d| d.set(true));
    CANCEL.with(|c| c.set(false));
    let outcome = load(&p).await;
    DOWNLOADING.with(|d| d.set(false));
    show_progress(false);
    match outcome {
        Ok((origin, note)) => {
            app().borrow_mut().labels_cache_key = (!matches!(p.source, Source::Bundled { .. })).then(|| labels_key(&p));
            dom::merge_status("model_origin", &serde_json::json!(origin));
            // The note stays beside the model (a later run clears the message line).
            let line = match &note {
                Some(note) => format!("Loaded {} ({origin}), {note}", p.name),
                None => format!("Loaded {} ({origin}).", p.name),
            };
            dom::set_text("model-note", if note.is_some() { &line } else { "" });
            message(&line, note.is_some());
            warm_up().await;
            // After the warm-up, which starts the label cache afresh.
            if let Some(cache) = dom::open_cache(super::models_cache()).await {
                restore_label_embeddings(&cache, &p).await;
            }
        }
        Err(e) => {
            dom::merge_status("model_error", &serde_json::json!(e.to_string()));
            message(&format!("{}: {e} The current model stays.", p.name), true);
        }
    }
    render_cached().await;
    publish();
}

/// Where a loaded model came from ("bundled", "cache" or "network"), and a note when it loaded
/// but could not be kept.
async fn load(p: &Preset) -> Result<(&'static str, Option<String>), PageError> {
    match &p.source {
        Source::Bundled { file } => {
            let entry = app().borrow().bundled.clone();
            let sha = entry.as_ref().filter(|e| &e.file == file).map(|e| e.sha256.clone());
            let (bytes, _) = dom::fetch_cached_verified(&format!("weights/{file}"), sha.as_deref(), "progress", "progress-text").await?;
            load_weights(&bytes.as_slice(), file)?;
            if let Some(entry) = entry {
                super::session::apply_manifest_entry(&entry)?;
            }
            Ok(("bundled", None))
        }
        Source::Hub { .. } | Source::Release { .. } => {
            let cache = dom::open_cache(super::models_cache()).await;
            if let Some(cache) = &cache {
                if let Some(r) = dom::cached_response(cache, &cache_key(p)).await {
                    // Read from the response body a tensor at a time: the file is not copied
                    // into wasm memory.
                    let bytes = dom::response_array(&r).await?;
                    load_weights(&bytes, &p.converted_name())?;
                    return Ok(("cache", None));
                }
            }
            let bytes = match &p.source {
                Source::Hub { .. } => download_and_convert(p).await?,
                _ => match dom::query_param("mirror") {
                    Some(mirror) => fetch_converted(&format!("{}/{}", mirror.trim_end_matches('/'), p.converted_name())).await?,
                    None => return Err(PageError::NeedsMirror),
                },
            };
            load_weights(&bytes.as_slice(), &p.converted_name())?;
            let note = match &cache {
                Some(cache) => {
                    dom::cache_put(cache, &cache_key(p), &bytes, "application/octet-stream").await.err().map(|e| format!("but it is not kept for the next visit: {e}."))
                }
                None => Some("but this browser context has no Cache API: it is not kept for the next visit.".to_string()),
            };
            Ok(("network", note))
        }
    }
}

/// Adds the label embeddings computed in earlier visits (same model, same templates).
async fn restore_label_embeddings(cache: &web_sys::Cache, p: &Preset) {
    let Some(r) = dom::cached_response(cache, &labels_key(p)).await else { return };
    let Ok(bytes) = dom::response_bytes(&r).await else { return };
    let Ok(stored) = serde_json::from_slice::<Vec<(String, Vec<f32>)>>(&bytes) else { return };
    let n = stored.len();
    if let Some(s) = app().borrow_mut().segmenter.as_mut() {
        match s.add_label_embeddings(stored) {
            Ok(()) => dom::merge_status("restored_label_embeddings", &serde_json::json!(n)),
            Err(e) => dom::log(&format!("stored label embeddings: {e}")),
        }
    }
}

/// Fetches `url` and gives each chunk of its body to `sink`, showing bytes, percent and speed;
/// stops at the Cancel button. Errors are one line naming what went wrong.
async fn stream(url: &str, expected: Option<u64>, mut sink: impl FnMut(&[u8]) -> Result<(), PageError>) -> Result<u64, PageError> {
    let window = web_sys::window().ok_or(PageError::Missing("window"))?;
    let response = match JsFuture::from(window.fetch_with_str(url)).await {
        Ok(r) => r.dyn_into::<web_sys::Response>().map_err(|_| PageError::Browser { call: "fetch", detail: "not a response".to_string() })?,
        Err(e) => {
            let online = Reflect::get(&window.navigator(), &"onLine".into()).ok().and_then(|v| v.as_bool()).unwrap_or(true);
            return Err(if !online { PageError::Offline } else { PageError::Unreachable { url: url.to_string(), detail: error_text(&e) } });
        }
    };
    let status = response.status();
    if !response.ok() {
        return Err(PageError::Refused { url: url.to_string(), status });
    }
    let total = response
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|v| v.parse::<u64>().ok())
        .or(expected);
    let body = response.body().ok_or_else(|| PageError::Read { what: url.to_string(), detail: "an empty response".to_string() })?;
    let reader: web_sys::ReadableStreamDefaultReader =
        body.get_reader().dyn_into().map_err(|_| PageError::Browser { call: "getReader", detail: "no stream reader".to_string() })?;
    show_progress(true);
    let started = now();
    let mut received = 0u64;
    loop {
        if CANCEL.with(Cell::get) {
            let _ = reader.cancel();
            return Err(PageError::Cancelled);
        }
        let chunk = JsFuture::from(reader.read())
            .await
            .map_err(|e| PageError::BrokeOff { received, detail: error_text(&e) })?;
        if Reflect::get(&chunk, &"done".into()).ok().and_then(|v| v.as_bool()).unwrap_or(true) {
            break;
        }
        let value: js_sys::Uint8Array = Reflect::get(&chunk, &"value".into()).map_err(|e| PageError::browser("read", e))?.unchecked_into();
        let bytes = value.to_vec();
        received += bytes.len() as u64;
        if let Err(e) = sink(&bytes) {
            let _ = reader.cancel();
            return Err(e);
        }
        report_progress(received, total, now() - started);
    }
    Ok(received)
}

fn error_text(e: &JsValue) -> String {
    Reflect::get(e, &"message".into()).ok().and_then(|m| m.as_string()).unwrap_or_else(|| format!("{e:?}"))
}

/// Downloads a hub preset and converts it to the int8 file as the bytes arrive.
async fn download_and_convert(p: &Preset) -> Result<Vec<u8>, PageError> {
    let Source::Hub { sha256, bytes, .. } = &p.source else { unreachable!("a hub preset") };
    let presets = app().borrow().presets.clone().unwrap_or_else(Presets::bundled);
    let url = p.url(&hub_base(&presets)).expect("a hub URL");
    let method = p.dense_method().map_err(|e| PageError::Message(e.to_string()))?.ok_or_else(|| PageError::Message("a hub preset must name a dense method".into()))?;
    let tokenizer_sha256 = format::sha256_hex(&app().borrow().tokenizer_json);
    let mut converter = StreamConverter::new(ConvertOptions {
        method,
        dtype: StorageDtype::Int8,
        tokenizer_sha256,
        heads: p.heads,
        source_sha256: Some(sha256.clone()),
    });
    let mut peak = MemoryPeak::start();
    let received = stream(&url, Some(*bytes), |chunk| {
        converter.push(chunk).map_err(|error| PageError::Convert { url: url.clone(), error })?;
        peak.sample();
        Ok(())
    })
    .await?;
    let converted = converter.finish().map_err(|error| PageError::Convert { url: url.clone(), error })?;
    peak.sample();
    dom::merge_status(
        "conversion",
        &serde_json::json!({
            "source_bytes": received,
            "int8_bytes": converted.bytes.len(),
            "wasm_growth_bytes": peak.wasm_growth(),
            "js_heap_growth_bytes": peak.js_growth(),
            "peak_bytes": peak.wasm_growth() + peak.js_growth(),
        }),
    );
    Ok(converted.bytes)
}

/// A converted file from a mirror (the release preset).
async fn fetch_converted(url: &str) -> Result<Vec<u8>, PageError> {
    let mut bytes = Vec::new();
    stream(url, None, |chunk| {
        bytes.extend_from_slice(chunk);
        Ok(())
    })
    .await?;
    Ok(bytes)
}

/// The page's memory during a conversion: wasm memory (which only grows) and the JS heap
/// (Chromium's `performance.memory`), as growth over their sizes at the start.
struct MemoryPeak {
    wasm_start: f64,
    wasm_peak: f64,
    js_start: f64,
    js_peak: f64,
}

fn js_heap_bytes() -> f64 {
    web_sys::window()
        .and_then(|w| w.performance())
        .and_then(|p| Reflect::get(&p, &"memory".into()).ok())
        .and_then(|m| Reflect::get(&m, &"usedJSHeapSize".into()).ok())
        .and_then(|v| v.as_f64())
        .unwrap_or(0.0)
}

impl MemoryPeak {
    fn start() -> Self {
        let (w, j) = (dom::wasm_memory_bytes(), js_heap_bytes());
        Self { wasm_start: w, wasm_peak: w, js_start: j, js_peak: j }
    }

    fn sample(&mut self) {
        self.wasm_peak = self.wasm_peak.max(dom::wasm_memory_bytes());
        self.js_peak = self.js_peak.max(js_heap_bytes());
    }

    fn wasm_growth(&self) -> f64 {
        self.wasm_peak - self.wasm_start
    }

    fn js_growth(&self) -> f64 {
        self.js_peak - self.js_start
    }
}

fn show_progress(on: bool) {
    if let Some(wrap) = dom::element("progress-wrap") {
        let _ = if on { wrap.remove_attribute("hidden") } else { wrap.set_attribute("hidden", "") };
    }
    if let Some(b) = dom::element("download-cancel") {
        let _ = if on { b.remove_attribute("hidden") } else { b.set_attribute("hidden", "") };
    }
}

fn report_progress(received: u64, total: Option<u64>, elapsed_ms: f64) {
    let speed = received as f64 / 1e6 / (elapsed_ms / 1e3).max(1e-3);
    let text = match total {
        Some(t) if t > 0 => {
            if let Some(p) = dom::element("progress") {
                let _ = p.set_attribute("value", &(received as f64 / t as f64).to_string());
            }
            format!("{:.1} of {:.1} MB ({:.0}%), {speed:.1} MB/s", received as f64 / 1e6, t as f64 / 1e6, 100.0 * received as f64 / t as f64)
        }
        _ => format!("{:.1} MB, {speed:.1} MB/s", received as f64 / 1e6),
    };
    dom::set_text("progress-text", &text);
    dom::merge_status("download", &serde_json::json!({"received": received, "total": total}));
}
