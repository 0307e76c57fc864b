//! The few DOM touches the page makes: text into elements, a status object for tests and tools,
//! query parameters and fetching JSON assets.

use js_sys::Reflect;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use super::backend::BackendInfo;

fn document() -> Option<web_sys::Document> {
    web_sys::window()?.document()
}

pub fn set_text(id: &str, text: &str) {
    if let Some(el) = document().and_then(|d| d.get_element_by_id(id)) {
        el.set_text_content(Some(text));
    }
}

pub fn log(message: &str) {
    web_sys::console::log_1(&format!("[segclip] {message}").into());
}

/// Publishes the page's state as `window.segclipStatus` (a plain object) and mirrors the state
/// and backend on `<body data-state data-backend>`, so tests and users' tools can read them.
pub fn publish_status(status: &serde_json::Value) {
    let Some(window) = web_sys::window() else { return };
    if let Ok(js) = js_sys::JSON::parse(&status.to_string()) {
        let _ = Reflect::set(&window, &"segclipStatus".into(), &js);
    }
    if let Some(body) = document().and_then(|d| d.body()) {
        if let Some(state) = status.get("state").and_then(|v| v.as_str()) {
            let _ = body.set_attribute("data-state", state);
        }
        if let Some(kind) = status.pointer("/backend/kind").and_then(|v| v.as_str()) {
            let _ = body.set_attribute("data-backend", kind);
        }
    }
}

pub fn query_param(name: &str) -> Option<String> {
    let search = web_sys::window()?.location().search().ok()?;
    web_sys::UrlSearchParams::new_with_str(&search).ok()?.get(name)
}

pub fn show_backend(info: &BackendInfo) {
    let summary = match (&info.adapter, info.kind) {
        (Some(a), "webgpu") => {
            let name = [&a.vendor, &a.architecture, &a.description]
                .iter()
                .filter(|s| !s.is_empty())
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" ");
            format!("WebGPU ({})", if name.is_empty() { "adapter details hidden by the browser" } else { &name })
        }
        _ => "CPU (WebAssembly)".to_string(),
    };
    set_text("backend", &format!("Compute: {summary}, self-check {:.0} ms", info.selfcheck_ms));
    let note = if let Some(reason) = &info.fallback_reason {
        format!("Running on the CPU: {reason}.")
    } else if info.software_adapter {
        "Your WebGPU adapter is a software renderer; the CPU backend is faster on this machine \
         (open the page with ?backend=cpu)."
            .to_string()
    } else {
        String::new()
    };
    set_text("backend-note", &note);
}

/// Fetches a JSON asset relative to the page.
pub async fn fetch_json(path: &str) -> Result<serde_json::Value, String> {
    let window = web_sys::window().ok_or("no window")?;
    let response: web_sys::Response = JsFuture::from(window.fetch_with_str(path))
        .await
        .map_err(|e| format!("fetch {path}: {e:?}"))?
        .dyn_into()
        .map_err(|_| format!("fetch {path}: not a response"))?;
    if !response.ok() {
        return Err(format!("fetch {path}: HTTP {}", response.status()));
    }
    let text = JsFuture::from(response.text().map_err(|e| format!("{path}: {e:?}"))?)
        .await
        .map_err(|e| format!("{path}: {e:?}"))?
        .as_string()
        .unwrap_or_default();
    serde_json::from_str(&text).map_err(|e| format!("{path} is not valid JSON: {e}"))
}

