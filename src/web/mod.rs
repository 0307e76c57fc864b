//! The page's wasm entry: picks a backend (WebGPU first, the CPU backend as the fallback), proves
//! it computes correctly, and reports what it got. DOM wiring lives here and nowhere else.

mod app;
mod backend;
mod dom;
mod error;

pub use error::PageError;

use wasm_bindgen::prelude::*;

/// Called by the `segclip-web` binary's `main` when the module loads.
pub fn start() {
    console_error_panic_hook::set_once();
    wasm_bindgen_futures::spawn_local(async {
        if let Err(e) = run().await {
            dom::log(&format!("start-up failed: {e}"));
            dom::publish_status(&serde_json::json!({ "state": "error", "error": e.to_string() }));
            dom::set_text("backend", &format!("Start-up failed: {e}"));
        }
    });
}

async fn run() -> Result<(), PageError> {
    dom::publish_status(&serde_json::json!({ "state": "starting" }));
    let requested = dom::query_param("backend");
    let picked = backend::pick(requested.as_deref(), |reason| wasm_bindgen_futures::spawn_local(app::on_device_lost(reason))).await?;
    let info = &picked.info;
    dom::log(&format!("backend: {}", serde_json::to_string(info).unwrap_or_default()));
    backend::show_backend(info);

    let manifest = dom::fetch_bytes("weights/manifest.json").await.and_then(|bytes| {
        crate::pipeline::manifest::Manifest::parse(&String::from_utf8_lossy(&bytes), "weights/manifest.json").map_err(PageError::from)
    });
    let bundled = match &manifest {
        Ok(m) => m.default_model().cloned(),
        Err(e) => {
            dom::log(&format!("weights manifest: {e}"));
            None
        }
    };
    let has_bundled = bundled.is_some();
    dom::publish_status(&serde_json::json!({ "state": "loading-model", "backend": info }));
    app::init(picked.device, bundled).await?;
    let ready_ms = web_sys::window().and_then(|w| w.performance()).map(|p| p.now()).unwrap_or(0.0);
    dom::merge_status("ready_ms", &serde_json::json!(ready_ms));
    dom::merge_status("state", &serde_json::json!("ready"));
    dom::merge_status("bundled_model", &serde_json::json!(has_bundled));
    if let Some(body) = dom::document().and_then(|d| d.body()) {
        let _ = body.set_attribute("data-state", "ready");
    }
    Ok(())
}

/// The crate version, for the page's diagnostics and tests.
#[wasm_bindgen(js_name = segclipVersion)]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

/// For tests: the digest of the emoji world's first four `val` scenes as this wasm build draws
/// them (hex), which must equal the native generator's (`data::emoji::dataset_digest`).
#[wasm_bindgen(js_name = segclipEmojiDigestForTests)]
pub fn emoji_digest_for_tests() -> String {
    let digest = crate::data::emoji::dataset_digest(crate::data::Split::Val, 0..4, &crate::data::emoji::EmojiConfig::default());
    format!("{digest:016x}")
}
