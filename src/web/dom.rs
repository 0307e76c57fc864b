//! The few DOM touches the page makes: text into elements, a status object for tests and tools,
//! query parameters and fetching assets.

use js_sys::Reflect;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use super::PageError;

pub fn set_text(id: &str, text: &str) {
    if let Some(el) = element(id) {
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

pub fn document() -> Option<web_sys::Document> {
    web_sys::window()?.document()
}

pub fn element(id: &str) -> Option<web_sys::Element> {
    document()?.get_element_by_id(id)
}

/// Marks the page busy (`<body data-busy>`; the styles show a progress cursor).
pub fn set_busy(busy: bool) {
    if let Some(body) = document().and_then(|d| d.body()) {
        let _ = body.set_attribute("data-busy", if busy { "true" } else { "false" });
    }
}

/// Sets `window.segclipStatus[key] = value`, keeping the rest of the status.
pub fn merge_status(key: &str, value: &serde_json::Value) {
    let Some(window) = web_sys::window() else { return };
    let status = Reflect::get(&window, &"segclipStatus".into()).unwrap_or(wasm_bindgen::JsValue::UNDEFINED);
    if !status.is_object() {
        return;
    }
    if let Ok(js) = js_sys::JSON::parse(&value.to_string()) {
        let _ = Reflect::set(&status, &key.into(), &js);
    }
}

async fn fetch_response(path: &str) -> Result<web_sys::Response, PageError> {
    let window = web_sys::window().ok_or(PageError::Missing("window"))?;
    let response: web_sys::Response = JsFuture::from(window.fetch_with_str(path))
        .await
        .map_err(|e| PageError::Network { url: path.to_string(), detail: format!("{e:?}") })?
        .dyn_into()
        .map_err(|_| PageError::Network { url: path.to_string(), detail: "not a response".to_string() })?;
    if !response.ok() {
        return Err(PageError::Fetch { url: path.to_string(), status: response.status() });
    }
    Ok(response)
}

/// Fetches an asset's bytes.
pub async fn fetch_bytes(path: &str) -> Result<Vec<u8>, PageError> {
    let response = fetch_response(path).await?;
    let buffer = JsFuture::from(response.array_buffer().map_err(|e| PageError::read(path, e))?)
        .await
        .map_err(|e| PageError::read(path, e))?;
    Ok(js_sys::Uint8Array::new(&buffer).to_vec())
}

/// Fetches an asset's bytes, reporting bytes received of the total on a `<progress>` element.
pub async fn fetch_bytes_with_progress(path: &str, progress_id: &str, text_id: &str) -> Result<Vec<u8>, PageError> {
    let response = fetch_response(path).await?;
    let total: f64 = response
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    if let Some(wrap) = element("progress-wrap") {
        let _ = wrap.remove_attribute("hidden");
    }
    let body = response.body().ok_or_else(|| PageError::Read { what: path.to_string(), detail: "empty response".to_string() })?;
    let reader: web_sys::ReadableStreamDefaultReader = body
        .get_reader()
        .dyn_into()
        .map_err(|_| PageError::Read { what: path.to_string(), detail: "no stream reader".to_string() })?;
    let mut bytes = Vec::with_capacity(total as usize);
    loop {
        let chunk = JsFuture::from(reader.read()).await.map_err(|e| PageError::read(path, e))?;
        let done = Reflect::get(&chunk, &"done".into()).ok().and_then(|v| v.as_bool()).unwrap_or(true);
        if done {
            break;
        }
        let value = Reflect::get(&chunk, &"value".into()).map_err(|e| PageError::read(path, e))?;
        bytes.extend(js_sys::Uint8Array::new(&value).to_vec());
        if let Some(p) = element(progress_id) {
            let _ = p.set_attribute("value", &(if total > 0.0 { bytes.len() as f64 / total } else { 0.0 }).to_string());
        }
        set_text(text_id, &format!("{:.1} of {:.1} MB", bytes.len() as f64 / 1e6, total / 1e6));
    }
    if let Some(wrap) = element("progress-wrap") {
        let _ = wrap.set_attribute("hidden", "");
    }
    Ok(bytes)
}

/// Where a cached asset came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Cache,
    Network,
}

const WEIGHTS_CACHE: &str = "segclip-weights-v1";

/// Fetches `path` through the Cache API: a cached copy whose SHA-256 matches `sha` is used with
/// no request at all (a reload starts at once and works offline); otherwise it is downloaded
/// with progress, checked against `sha`, and stored. A stale or damaged cached copy is replaced.
/// Without the Cache API (an insecure context), it is a plain checked download.
pub async fn fetch_cached_verified(path: &str, sha: Option<&str>, progress_id: &str, text_id: &str) -> Result<(Vec<u8>, Origin), PageError> {
    let cache = open_cache(WEIGHTS_CACHE).await;
    if let Some(cache) = &cache {
        if let Some(bytes) = cached_bytes(cache, path).await {
            if sha.is_none_or(|s| crate::weights::format::sha256_hex(&bytes) == s) {
                return Ok((bytes, Origin::Cache));
            }
            log(&format!("{path}: the cached copy does not match the manifest; downloading it again"));
            let _ = JsFuture::from(cache.delete_with_str(path)).await;
        }
    }
    let bytes = fetch_bytes_with_progress(path, progress_id, text_id).await?;
    if let Some(sha) = sha {
        let found = crate::weights::format::sha256_hex(&bytes);
        if found != sha {
            return Err(PageError::Checksum { url: path.to_string(), found, expected: sha.to_string() });
        }
    }
    if let Some(cache) = &cache {
        let body = js_sys::Uint8Array::from(bytes.as_slice());
        if let Ok(response) = web_sys::Response::new_with_opt_buffer_source(Some(&body)) {
            if let Err(e) = JsFuture::from(cache.put_with_str(path, &response)).await {
                log(&format!("{path}: not cached ({e:?})"));
            }
        }
    }
    Ok((bytes, Origin::Network))
}

/// The bytes of `path`'s cached response, if there is one.
async fn cached_bytes(cache: &web_sys::Cache, path: &str) -> Option<Vec<u8>> {
    let response: web_sys::Response = JsFuture::from(cache.match_with_str(path)).await.ok()?.dyn_into().ok()?;
    let buffer = JsFuture::from(response.array_buffer().ok()?).await.ok()?;
    Some(js_sys::Uint8Array::new(&buffer).to_vec())
}


/// Offers `bytes` as a download named `name`.
pub fn save_bytes(bytes: &[u8], mime: &str, name: &str) {
    let array = js_sys::Array::of1(&js_sys::Uint8Array::from(bytes));
    let options = web_sys::BlobPropertyBag::new();
    options.set_type(mime);
    let Ok(blob) = web_sys::Blob::new_with_u8_array_sequence_and_options(&array, &options) else { return };
    let Ok(url) = web_sys::Url::create_object_url_with_blob(&blob) else { return };
    if let Some(a) = document().and_then(|d| d.create_element("a").ok()) {
        let _ = a.set_attribute("href", &url);
        let _ = a.set_attribute("download", name);
        if let Some(a) = a.dyn_ref::<web_sys::HtmlElement>() {
            a.click();
        }
    }
    let _ = web_sys::Url::revoke_object_url(&url);
}

/// The `<input>` element with this id.
pub fn input(id: &str) -> Option<web_sys::HtmlInputElement> {
    element(id)?.dyn_into().ok()
}

/// The Cache API cache `name`, where the page has one (secure contexts only).
pub async fn open_cache(name: &str) -> Option<web_sys::Cache> {
    // `caches` is missing outside secure contexts; reading it then throws.
    let storage = web_sys::window()?.caches().ok()?;
    JsFuture::from(storage.open(name)).await.ok()?.dyn_into().ok()
}

/// The cached response for `key`, if any.
pub async fn cached_response(cache: &web_sys::Cache, key: &str) -> Option<web_sys::Response> {
    let r = JsFuture::from(cache.match_with_str(key)).await.ok()?;
    r.dyn_into().ok()
}

/// A byte array in the JS heap (a response body, a dropped file) read as a weights file a
/// range at a time: a model loads from it with one tensor at a time in wasm memory.
pub struct JsBytes(pub js_sys::Uint8Array);

impl crate::weights::format::ByteSource for JsBytes {
    fn len(&self) -> u64 {
        self.0.length() as u64
    }
    fn read_into(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let end = offset + buf.len() as u64;
        if end > self.len() {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, format!("bytes {offset}..{end} of {}", self.len())));
        }
        self.0.subarray(offset as u32, end as u32).copy_to(buf);
        Ok(())
    }
}

/// A response's body, left in the JS heap.
pub async fn response_array(response: &web_sys::Response) -> Result<JsBytes, PageError> {
    let buffer = JsFuture::from(response.array_buffer().map_err(|e| PageError::browser("arrayBuffer", e))?)
        .await
        .map_err(|e| PageError::browser("arrayBuffer", e))?;
    Ok(JsBytes(js_sys::Uint8Array::new(&buffer)))
}

/// The bytes of wasm memory, which only grows: the high-water mark of everything the page's
/// wasm side has held at once.
pub fn wasm_memory_bytes() -> f64 {
    use wasm_bindgen::JsCast;
    wasm_bindgen::memory()
        .dyn_into::<js_sys::WebAssembly::Memory>()
        .map(|m| m.buffer().unchecked_into::<js_sys::ArrayBuffer>().byte_length() as f64)
        .unwrap_or(0.0)
}

pub async fn response_bytes(response: &web_sys::Response) -> Result<Vec<u8>, PageError> {
    Ok(response_array(response).await?.0.to_vec())
}

/// Stores `bytes` under `key` with their length in an `x-segclip-bytes` header; the error says
/// when the browser's storage quota is full.
pub async fn cache_put(cache: &web_sys::Cache, key: &str, bytes: &[u8], mime: &str) -> Result<(), PageError> {
    // A Blob made from a view into wasm memory: the bytes are copied once, into the browser's
    // blob store, not into the JS heap.
    // SAFETY: the view is consumed by the Blob constructor before anything can allocate.
    let view = unsafe { js_sys::Uint8Array::view(bytes) };
    let options = web_sys::BlobPropertyBag::new();
    options.set_type(mime);
    let blob = web_sys::Blob::new_with_u8_array_sequence_and_options(&js_sys::Array::of1(&view), &options).map_err(|e| PageError::browser("Blob", e))?;
    let init = web_sys::ResponseInit::new();
    let headers = web_sys::Headers::new().map_err(|e| PageError::browser("Headers", e))?;
    let _ = headers.set("x-segclip-bytes", &bytes.len().to_string());
    init.set_headers(&headers);
    let response = web_sys::Response::new_with_opt_blob_and_init(Some(&blob), &init).map_err(|e| PageError::browser("Response", e))?;
    JsFuture::from(cache.put_with_str(key, &response)).await.map(|_| ()).map_err(|e| {
        let name = Reflect::get(&e, &"name".into()).ok().and_then(|n| n.as_string()).unwrap_or_default();
        if name == "QuotaExceededError" {
            PageError::QuotaFull
        } else {
            PageError::browser("cache.put", e)
        }
    })
}
