//! Which compute backend the page runs on, decided once at start-up.
//!
//! WebGPU first. The page falls back to burn's flex CPU backend (compiled to wasm) when the
//! browser has no WebGPU, refuses an adapter, fails to initialise it, or computes a wrong
//! self-check result; `?backend=cpu` / `?backend=webgpu` choose explicitly. A software adapter
//! (e.g. SwiftShader) still runs WebGPU when asked, but the page tells the user that the CPU
//! path is faster there (~3.5 vs ~0.15 GFLOP/s measured on SwiftShader).

use burn::tensor::Device;
use js_sys::{Promise, Reflect};
use serde::Serialize;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::selfcheck;

/// What the page reports about its backend (shown to the user and exposed for tests).
#[derive(Clone, Debug, Serialize)]
pub struct BackendInfo {
    /// "webgpu" or "cpu".
    pub kind: &'static str,
    /// The WebGPU adapter's own description, when there is one.
    pub adapter: Option<AdapterSummary>,
    /// Why the page is on the CPU backend, when it is.
    pub fallback_reason: Option<String>,
    /// The adapter is a software renderer: the CPU backend is the faster choice.
    pub software_adapter: bool,
    pub selfcheck_max_error: f32,
    pub selfcheck_ms: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct AdapterSummary {
    pub vendor: String,
    pub architecture: String,
    pub device: String,
    pub description: String,
    pub is_fallback_adapter: bool,
}

pub struct Picked {
    pub device: Device,
    pub info: BackendInfo,
}

/// Picks the backend: `requested` is the `backend` query parameter, if any.
pub async fn pick(requested: Option<&str>) -> Result<Picked, String> {
    let reason = match requested {
        Some("cpu") => "CPU backend requested (?backend=cpu)".to_string(),
        Some(other) if other != "webgpu" => {
            return Err(format!("unknown backend '{other}' in the address: use ?backend=webgpu or ?backend=cpu"));
        }
        _ => match try_webgpu().await {
            Ok(picked) => return Ok(picked),
            Err(reason) => reason,
        },
    };
    let device = Device::flex();
    let (err, ms) = self_check(&device).await?;
    if err > selfcheck::TOLERANCE {
        return Err(format!("the CPU backend failed its self-check (error {err:.2e})"));
    }
    Ok(Picked {
        device,
        info: BackendInfo {
            kind: "cpu",
            adapter: None,
            fallback_reason: Some(reason),
            software_adapter: false,
            selfcheck_max_error: err,
            selfcheck_ms: ms,
        },
    })
}

thread_local! {
    /// The WebGPU device in use, kept so tests can destroy it (`segclipLoseDeviceForTests`).
    static GPU_DEVICE: std::cell::RefCell<Option<Box<dyn Fn()>>> = std::cell::RefCell::new(None);
}

/// Test hook: destroys the WebGPU device, as a driver reset or a lost GPU would.
#[wasm_bindgen::prelude::wasm_bindgen(js_name = segclipLoseDeviceForTests)]
pub fn lose_device_for_tests() -> bool {
    GPU_DEVICE.with(|d| d.borrow().as_ref().map(|destroy| destroy()).is_some())
}

/// The CPU backend after the WebGPU device was lost mid-session.
pub async fn cpu_after_device_loss(reason: &str) -> Result<Picked, String> {
    let device = Device::flex();
    let (err, ms) = self_check(&device).await?;
    Ok(Picked {
        device,
        info: BackendInfo {
            kind: "cpu",
            adapter: None,
            fallback_reason: Some(format!("the WebGPU device was lost ({reason})")),
            software_adapter: false,
            selfcheck_max_error: err,
            selfcheck_ms: ms,
        },
    })
}

async fn try_webgpu() -> Result<Picked, String> {
    let adapter = describe_adapter().await?;
    let (device, setup) = Device::wgpu_options()
        .init_with_setup_async()
        .await
        .map_err(|e| format!("WebGPU failed to initialise: {e}"))?;
    // A lost device (driver reset, GPU removed, tab in the background too long) moves the page
    // to the CPU backend; the model is rebuilt there from the bytes it was loaded from.
    setup.device.set_device_lost_callback(|reason, message| {
        let reason = format!("{reason:?}: {message}");
        wasm_bindgen_futures::spawn_local(super::app::on_device_lost(reason));
    });
    let gpu = setup.device.clone();
    GPU_DEVICE.with(|d| *d.borrow_mut() = Some(Box::new(move || gpu.destroy())));
    let (err, ms) = self_check(&device).await.map_err(|e| format!("WebGPU self-check failed: {e}"))?;
    if err > selfcheck::TOLERANCE {
        return Err(format!("WebGPU computed a wrong self-check result (max error {err:.2e})"));
    }
    let software = adapter.is_fallback_adapter
        || adapter.architecture.to_lowercase().contains("swiftshader")
        || adapter.description.to_lowercase().contains("swiftshader");
    Ok(Picked {
        device,
        info: BackendInfo {
            kind: "webgpu",
            adapter: Some(adapter),
            fallback_reason: None,
            software_adapter: software,
            selfcheck_max_error: err,
            selfcheck_ms: ms,
        },
    })
}

/// Asks `navigator.gpu` for an adapter to learn what it is (web-sys's WebGPU bindings are behind
/// an unstable cfg, so this reads the few fields it needs through `Reflect`).
async fn describe_adapter() -> Result<AdapterSummary, String> {
    let window = web_sys::window().ok_or("no window")?;
    let gpu = Reflect::get(&window.navigator(), &"gpu".into()).unwrap_or(JsValue::UNDEFINED);
    if gpu.is_undefined() || gpu.is_null() {
        return Err("this browser does not offer WebGPU".into());
    }
    let request = Reflect::get(&gpu, &"requestAdapter".into())
        .ok()
        .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
        .ok_or("navigator.gpu.requestAdapter is missing")?;
    let promise: Promise = request
        .call0(&gpu)
        .map_err(|e| format!("requestAdapter threw: {e:?}"))?
        .dyn_into()
        .map_err(|_| "requestAdapter did not return a promise")?;
    let adapter = JsFuture::from(promise)
        .await
        .map_err(|e| format!("requestAdapter failed: {e:?}"))?;
    if adapter.is_null() || adapter.is_undefined() {
        return Err("the browser refused a WebGPU adapter".into());
    }
    let info = Reflect::get(&adapter, &"info".into()).unwrap_or(JsValue::UNDEFINED);
    let text = |obj: &JsValue, key: &str| {
        Reflect::get(obj, &key.into()).ok().and_then(|v| v.as_string()).unwrap_or_default()
    };
    let flag = |obj: &JsValue, key: &str| {
        Reflect::get(obj, &key.into()).ok().and_then(|v| v.as_bool()).unwrap_or(false)
    };
    Ok(AdapterSummary {
        vendor: text(&info, "vendor"),
        architecture: text(&info, "architecture"),
        device: text(&info, "device"),
        description: text(&info, "description"),
        // Newer browsers report it on `info`, older ones on the adapter itself.
        is_fallback_adapter: flag(&info, "isFallbackAdapter") || flag(&adapter, "isFallbackAdapter"),
    })
}

/// Runs the shared self-check on `device`, reading back asynchronously (a sync read panics in wasm).
async fn self_check(device: &Device) -> Result<(f32, f64), String> {
    let started = now_ms();
    let data = selfcheck::on_device(device)
        .into_data_async()
        .await
        .map_err(|e| format!("read-back failed: {e:?}"))?;
    let err = selfcheck::max_abs_error(&data)?;
    Ok((err, now_ms() - started))
}

fn now_ms() -> f64 {
    web_sys::window().and_then(|w| w.performance()).map(|p| p.now()).unwrap_or(0.0)
}
