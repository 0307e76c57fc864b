//! The page in headless Chromium: the wasm module starts, picks a backend, proves it computes
//! correctly and says which one it got. Needs the Trunk-built page (`scripts/test` builds it).

mod support;

use std::time::Duration;
use support::{dist_dir, serve, Browser};

/// Start-up includes compiling the self-check's kernels on SwiftShader, which is slow.
const START_TIMEOUT: Duration = Duration::from_secs(180);

// One browser at a time: two Chromiums on a 2-core machine starve each other.
static BROWSER_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_starts_on_webgpu() {
    let _one_at_a_time = BROWSER_LOCK.lock().await;
    let (url, _) = serve(dist_dir());
    let browser = Browser::start(true).await;

    // The test browser's only adapter is SwiftShader, a software renderer: a plain load takes the
    // CPU path by itself and says why.
    browser.client.goto(&url).await.expect("load page");
    let status = browser.wait_for_state(&["ready", "error"], START_TIMEOUT).await;
    let console = browser.console().await;
    assert_eq!(status["state"], "ready", "page failed to start: {status}\n{console}");
    assert_eq!(status["backend"]["kind"], "cpu", "a software adapter should send the page to the CPU path: {status}\n{console}");
    assert_eq!(status["backend"]["software_adapter"], true, "{status}");
    let reason = status["backend"]["fallback_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("software renderer") && reason.contains("?backend=webgpu"), "{reason}");
    let shown = browser.eval("document.getElementById('backend-note').textContent").await;
    assert!(shown.as_str().unwrap_or_default().contains("software renderer"), "the page must say why: {shown}");
    println!("plain load: {reason}");

    // ?backend=webgpu still runs WebGPU on it.
    browser.client.goto(&format!("{url}/?backend=webgpu")).await.expect("load page");
    let status = browser.wait_for_state(&["ready", "error"], START_TIMEOUT).await;
    let console = browser.console().await;
    println!("status: {status:#}\n--- console ---\n{console}");
    assert_eq!(status["state"], "ready", "page failed to start: {status}\n{console}");
    assert_eq!(status["backend"]["kind"], "webgpu", "expected the WebGPU backend: {status}\n{console}");
    assert!(status["backend"]["adapter"].is_object(), "no adapter description: {status}");
    let error = status["backend"]["selfcheck_max_error"].as_f64().unwrap();
    assert!(error <= 1e-4, "WebGPU self-check error {error}");
    assert_eq!(browser.eval("document.body.dataset.backend").await, "webgpu");
    let shot = browser.screenshot("page-webgpu.png").await;
    println!("screenshot: {}", shot.display());
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_falls_back_to_cpu_without_webgpu() {
    let _one_at_a_time = BROWSER_LOCK.lock().await;
    let (url, _) = serve(dist_dir());
    let browser = Browser::start(false).await;
    browser.client.goto(&url).await.expect("load page");
    let status = browser.wait_for_state(&["ready", "error"], START_TIMEOUT).await;
    let console = browser.console().await;
    println!("status: {status:#}\n--- console ---\n{console}");
    assert_eq!(status["state"], "ready", "page failed to start: {status}\n{console}");
    assert_eq!(status["backend"]["kind"], "cpu", "expected the CPU fallback: {status}");
    let reason = status["backend"]["fallback_reason"].as_str().unwrap_or_default();
    assert!(!reason.is_empty(), "the fallback must say why: {status}");
    let shown = browser.eval("document.getElementById('backend-note').textContent").await;
    assert!(
        shown.as_str().unwrap_or_default().contains("Running on the CPU"),
        "the page must tell the user it runs on the CPU, showed {shown}"
    );
    browser.screenshot("page-cpu-fallback.png").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_backend_can_be_requested() {
    let _one_at_a_time = BROWSER_LOCK.lock().await;
    let (url, _) = serve(dist_dir());
    let browser = Browser::start(true).await;
    browser.client.goto(&format!("{url}/?backend=cpu")).await.expect("load page");
    let status = browser.wait_for_state(&["ready", "error"], START_TIMEOUT).await;
    assert_eq!(status["backend"]["kind"], "cpu", "?backend=cpu was ignored: {status}");

    // An unknown backend in the address is an error the page states, not a silent default.
    browser.client.goto(&format!("{url}/?backend=quantum")).await.expect("load page");
    let status = browser.wait_for_state(&["ready", "error"], START_TIMEOUT).await;
    assert_eq!(status["state"], "error", "unknown backend accepted: {status}");
    let error = status["error"].as_str().unwrap_or_default();
    assert!(error.contains("quantum"), "error should name the bad value: {error}");
    browser.close().await;
}
