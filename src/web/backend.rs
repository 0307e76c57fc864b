//! Which compute backend the page runs on, decided once at start-up.
//!
//! WebGPU first. The page falls back to burn's flex CPU backend (compiled to wasm) when the
//! browser has no WebGPU, refuses an adapter, fails to initialise it, or computes a wrong
//! self-check result; `?backend=cpu` / `?backend=webgpu` choose explicitly.
//!
//! A software adapter (`isFallbackAdapter`, or adapter info naming SwiftShader, llvmpipe or
//! lavapipe) is slower than the CPU path (~0.15 vs ~3.5 GFLOP/s measured on SwiftShader,
//! docs/benchmarks.md), so without `?backend=` the page takes the CPU path and says why. Where the
//! browser hides what the adapter is, a short measured check decides: the self-check is timed
//! warm on both backends (a few milliseconds of work each) and the CPU path is taken only when it
//! is more than twice as fast. `?backend=webgpu` always runs WebGPU.

use burn::tensor::Device;
use js_sys::{Promise, Reflect};
use serde::Serialize;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use super::dom;
use super::PageError;
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
    /// The warm self-check times (ms) on WebGPU and the CPU when they were raced, else `None`.
    pub measured_ms: Option<[f64; 2]>,
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

/// Picks the backend: `requested` is the `backend` query parameter, if any; `on_device_lost`
/// runs when a WebGPU device in use goes away (the app moves to the CPU then).
pub async fn pick(requested: Option<&str>, on_device_lost: fn(String)) -> Result<Picked, PageError> {
    let forced = match requested {
        None => false,
        Some("webgpu") => true,
        Some("cpu") => return cpu("CPU backend requested (?backend=cpu)".into(), None, false).await,
        Some(other) => return Err(PageError::UnknownBackend(other.to_string())),
    };
    let adapter = match describe_adapter().await {
        Ok(a) => a,
        Err(reason) => return cpu(reason.to_string(), None, false).await,
    };
    let software = is_software(&adapter);
    if software && !forced {
        let name = adapter_name(&adapter);
        let reason = format!(
            "the WebGPU adapter{} is a software renderer, slower than the CPU path here (?backend=webgpu uses it anyway)",
            if name.is_empty() { String::new() } else { format!(" ({name})") }
        );
        return cpu(reason, Some(adapter), true).await;
    }
    let unclear = !forced && adapter_name(&adapter).is_empty();
    let mut picked = match try_webgpu(adapter, software, on_device_lost).await {
        Ok(picked) => picked,
        Err(reason) => return cpu(reason.to_string(), None, false).await,
    };
    if unclear {
        // The browser hides what the adapter is: time a warm self-check on both and keep WebGPU
        // unless the CPU is clearly faster.
        let (_, gpu_ms) = self_check(&picked.device).await?;
        let flex = Device::flex();
        self_check(&flex).await?;
        let (_, cpu_ms) = self_check(&flex).await?;
        picked.info.measured_ms = Some([gpu_ms, cpu_ms]);
        if cpu_ms * 2.0 < gpu_ms {
            release_gpu();
            let reason = format!("a measured check found the CPU path faster (self-check {cpu_ms:.1} ms vs {gpu_ms:.1} ms on WebGPU)");
            let mut info = cpu(reason, picked.info.adapter.take(), false).await?;
            info.info.measured_ms = Some([gpu_ms, cpu_ms]);
            return Ok(info);
        }
    }
    Ok(picked)
}

/// Whether an adapter is a software renderer: the browser says so, or its name does.
fn is_software(a: &AdapterSummary) -> bool {
    let name = adapter_name(a).to_lowercase();
    a.is_fallback_adapter || ["swiftshader", "llvmpipe", "lavapipe", "software", "microsoft basic render"].iter().any(|s| name.contains(s))
}

/// The adapter's own words (vendor, architecture, device, description), empty when hidden.
fn adapter_name(a: &AdapterSummary) -> String {
    [&a.vendor, &a.architecture, &a.device, &a.description].iter().filter(|s| !s.is_empty()).map(|s| s.as_str()).collect::<Vec<_>>().join(" ")
}

/// The CPU path, self-checked, with the reason the page is on it.
async fn cpu(reason: String, adapter: Option<AdapterSummary>, software_adapter: bool) -> Result<Picked, PageError> {
    let device = Device::flex();
    let (err, ms) = self_check(&device).await?;
    if err > selfcheck::TOLERANCE {
        return Err(PageError::CpuWrong(err));
    }
    Ok(Picked {
        device,
        info: BackendInfo {
            kind: "cpu",
            adapter,
            fallback_reason: Some(reason),
            software_adapter,
            measured_ms: None,
            selfcheck_max_error: err,
            selfcheck_ms: ms,
        },
    })
}

/// Drops the test hook's hold on a WebGPU device the page decided not to use.
fn release_gpu() {
    GPU_DEVICE.with(|d| *d.borrow_mut() = None);
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
pub async fn cpu_after_device_loss(reason: &str) -> Result<Picked, PageError> {
    let device = Device::flex();
    let (err, ms) = self_check(&device).await?;
    Ok(Picked {
        device,
        info: BackendInfo {
            kind: "cpu",
            adapter: None,
            fallback_reason: Some(format!("the WebGPU device was lost ({reason})")),
            software_adapter: false,
            measured_ms: None,
            selfcheck_max_error: err,
            selfcheck_ms: ms,
        },
    })
}

async fn try_webgpu(adapter: AdapterSummary, software: bool, on_device_lost: fn(String)) -> Result<Picked, PageError> {
    let (device, setup) = Device::wgpu_options()
        .init_with_setup_async()
        .await
        .map_err(|e| PageError::WebGpuInit(e.to_string()))?;
    // A lost device (driver reset, GPU removed, tab in the background too long) moves the page
    // to the CPU backend; the model is rebuilt there from the bytes it was loaded from.
    setup.device.set_device_lost_callback(move |reason, message| on_device_lost(format!("{reason:?}: {message}")));
    let gpu = setup.device.clone();
    GPU_DEVICE.with(|d| *d.borrow_mut() = Some(Box::new(move || gpu.destroy())));
    let (err, ms) = self_check(&device).await.map_err(|e| PageError::WebGpuSelfCheck(Box::new(e)))?;
    if err > selfcheck::TOLERANCE {
        return Err(PageError::WebGpuWrong(err));
    }
    Ok(Picked {
        device,
        info: BackendInfo {
            kind: "webgpu",
            adapter: Some(adapter),
            fallback_reason: None,
            software_adapter: software,
            measured_ms: None,
            selfcheck_max_error: err,
            selfcheck_ms: ms,
        },
    })
}

/// Asks `navigator.gpu` for an adapter to learn what it is (web-sys's WebGPU bindings are behind
/// an unstable cfg, so this reads the few fields it needs through `Reflect`).
async fn describe_adapter() -> Result<AdapterSummary, PageError> {
    let window = web_sys::window().ok_or(PageError::Missing("window"))?;
    let gpu = Reflect::get(&window.navigator(), &"gpu".into()).unwrap_or(JsValue::UNDEFINED);
    if gpu.is_undefined() || gpu.is_null() {
        return Err(PageError::NoWebGpu("this browser does not offer WebGPU"));
    }
    let request = Reflect::get(&gpu, &"requestAdapter".into())
        .ok()
        .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
        .ok_or(PageError::NoWebGpu("navigator.gpu.requestAdapter is missing"))?;
    let promise: Promise = request
        .call0(&gpu)
        .map_err(|e| PageError::RequestAdapter { outcome: "threw", detail: format!("{e:?}") })?
        .dyn_into()
        .map_err(|_| PageError::NoWebGpu("requestAdapter did not return a promise"))?;
    let adapter = JsFuture::from(promise)
        .await
        .map_err(|e| PageError::RequestAdapter { outcome: "failed", detail: format!("{e:?}") })?;
    if adapter.is_null() || adapter.is_undefined() {
        return Err(PageError::NoWebGpu("the browser refused a WebGPU adapter"));
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
async fn self_check(device: &Device) -> Result<(f32, f64), PageError> {
    let started = now_ms();
    let data = selfcheck::on_device(device)
        .into_data_async()
        .await
        .map_err(|e| PageError::ReadBack(format!("{e:?}")))?;
    let err = selfcheck::max_abs_error(&data).map_err(PageError::Message)?;
    Ok((err, now_ms() - started))
}

fn now_ms() -> f64 {
    web_sys::window().and_then(|w| w.performance()).map(|p| p.now()).unwrap_or(0.0)
}

/// Tells the user which backend the page computes on, and why when it is the CPU.
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
    dom::set_text("backend", &format!("Compute: {summary}, self-check {:.0} ms", info.selfcheck_ms));
    let note = if let Some(reason) = &info.fallback_reason {
        format!("Running on the CPU: {reason}.")
    } else if info.software_adapter {
        "Your WebGPU adapter is a software renderer; the CPU path is faster on this machine \
         (open the page without ?backend=webgpu)."
            .to_string()
    } else {
        String::new()
    };
    dom::set_text("backend-note", &note);
}
