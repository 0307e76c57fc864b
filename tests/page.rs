//! The page end to end in headless Chromium: own weights, an uploaded synthetic scene, labels,
//! the label map checked against ground truth and against `segclip segment`, label edits that
//! reuse the image features, bad files, and no network traffic after load.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fantoccini::Locator;
use segclip::data::{generate, shape_classes, SceneConfig, Split};
use segclip::eval::ConfusionMatrix;
use segclip::model::{SegClip, SegClipConfig};
use segclip::weights::{format, model_io, StorageDtype};
use support::{dist_dir, output_dir, serve, Browser};

static BROWSER_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const TIMEOUT: Duration = Duration::from_secs(240);

/// A small random model with CLIP's vocabulary whose 224-pixel input is one window of a 7x7 grid,
/// so a software WebGPU adapter segments an image in seconds.
fn test_weights(dir: &Path) -> PathBuf {
    let config = SegClipConfig {
        image_size: 224,
        patch_size: 32,
        vision_width: 64,
        vision_heads: 2,
        vocab_size: 49408,
        context_length: 77,
        ..SegClipConfig::tiny()
    };
    let model = SegClip::new(&config, &segclip::Device::flex());
    let tokenizer = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("static/tokenizer.json")).unwrap();
    let bytes = format::write(&config, &format::sha256_hex(&tokenizer), StorageDtype::Int8, &model_io::model_tensors(&model)).unwrap();
    let path = dir.join("page-test-model.safetensors");
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A synthetic validation scene as PNG, with its ground-truth class map.
fn scene_png(dir: &Path) -> (PathBuf, Vec<u8>) {
    let scene = generate(Split::Val, 3, &SceneConfig::with_size(96));
    let path = dir.join("page-test-scene.png");
    image::RgbImage::from_raw(scene.width as u32, scene.height as u32, scene.image).unwrap().save(&path).unwrap();
    (path, scene.class_map)
}

fn miou(pred: &[u8], truth: &[u8]) -> f64 {
    let mut m = ConfusionMatrix::new(shape_classes().len());
    m.add(pred, truth).unwrap();
    m.mean_iou().unwrap_or(0.0) * 100.0
}

async fn wait_for_result(browser: &Browser, want_labels: usize) -> serde_json::Value {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let status = browser.eval("window.segclipStatus || null").await;
        let app = &status["app"];
        let done = app["busy"] == false
            && app["result"]["labels"].as_array().map(|l| l.len()) == Some(want_labels);
        if done {
            return status;
        }
        let message = browser.eval("document.getElementById('message').textContent").await;
        if Instant::now() > deadline {
            panic!("no result with {want_labels} labels; status {status}; message {message}\n{}", browser.console().await);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn label_map(browser: &Browser) -> Vec<u8> {
    let v = browser.eval("Array.from(window.segclipLabelMap || [])").await;
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u8).collect()
}

async fn upload(browser: &Browser, input_id: &str, path: &Path) {
    let input = browser.client.find(Locator::Id(input_id)).await.expect("file input");
    input.send_keys(path.to_str().unwrap()).await.expect("choose file");
}

async fn type_labels(browser: &Browser, labels: &str) {
    let input = browser.client.find(Locator::Id("label-input")).await.expect("label input");
    input.send_keys(&format!("{labels}\u{E007}")).await.expect("type labels");
}

async fn message(browser: &Browser) -> String {
    browser.eval("document.getElementById('message').textContent").await.as_str().unwrap_or_default().to_string()
}

/// The labels the CLI is given, in the page's order.
const LABELS: &str = "circle, square, triangle, star, heart, hexagon, ring, cross";

async fn segment_and_check(webgpu: bool) {
    let _one_at_a_time = BROWSER_LOCK.lock().await;
    let dir = output_dir();
    let weights = test_weights(&dir);
    let (image, truth) = scene_png(&dir);

    // The CLI's answer for the same image and weights.
    let cli_out = dir.join(if webgpu { "page-cli-webgpu" } else { "page-cli-cpu" });
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_segclip"))
        .args(["segment", image.to_str().unwrap(), "--labels", LABELS, "--weights", weights.to_str().unwrap()])
        .args(["--out", cli_out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let cli_mask = image::open(cli_out.join("page-test-scene.mask.png")).unwrap().to_luma8().into_raw();

    let (url, requests) = serve(dist_dir());
    let browser = Browser::start(webgpu).await;
    browser.client.goto(&url).await.unwrap();
    let status = browser.wait_for_state(&["ready", "error"], TIMEOUT).await;
    assert_eq!(status["state"], "ready", "{status}\n{}", browser.console().await);
    assert_eq!(status["backend"]["kind"], if webgpu { "webgpu" } else { "cpu" });
    let requests_after_load = requests.lock().unwrap().len();

    upload(&browser, "weights-input", &weights).await;
    upload(&browser, "image-input", &image).await;
    type_labels(&browser, LABELS).await;
    let status = wait_for_result(&browser, 8).await;
    let page_mask = label_map(&browser).await;
    assert_eq!(page_mask.len(), truth.len(), "label map size");
    let (page_miou, cli_miou) = (miou(&page_mask, &truth), miou(&cli_mask, &truth));
    let agree = page_mask.iter().zip(&cli_mask).filter(|(a, b)| a == b).count() as f64 / truth.len() as f64;
    println!(
        "{}: page mIoU {page_miou:.2}, CLI mIoU {cli_miou:.2}, pixel agreement {:.1}%, timings {}",
        if webgpu { "webgpu" } else { "cpu" },
        agree * 100.0,
        status["app"]["timings_ms"]
    );
    assert!((page_miou - cli_miou).abs() <= 1.0, "page {page_miou} vs CLI {cli_miou}");
    let counters = status["app"]["counters"].clone();
    assert_eq!(counters["images_encoded"], 1);
    assert_eq!(counters["prompts_encoded"], 8);
    let shot = browser.screenshot(if webgpu { "page-result-webgpu.png" } else { "page-result-cpu.png" }).await;
    println!("screenshot: {}", shot.display());

    // Adding a label re-uses the image features: one more prompt, no new image encode.
    type_labels(&browser, "spiral").await;
    let status = wait_for_result(&browser, 9).await;
    let counters = &status["app"]["counters"];
    assert_eq!(counters["images_encoded"], 1, "the image was encoded again: {counters}");
    assert_eq!(counters["prompts_encoded"], 9, "{counters}");
    assert!(counters["label_cache_hits"].as_u64().unwrap() >= 8, "{counters}");

    // A file that is not an image gets a clear message.
    let junk = dir.join("not-an-image.png");
    std::fs::write(&junk, b"plain text, not pixels").unwrap();
    upload(&browser, "image-input", &junk).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m = message(&browser).await;
    assert!(m.contains("not-an-image.png") && m.contains("not an image"), "{m}");

    // A corrupt weights file is refused and the current model stays.
    let broken = dir.join("broken.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&broken, &bytes[..bytes.len() / 2]).unwrap();
    upload(&browser, "weights-input", &broken).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let m = loop {
        let m = message(&browser).await;
        if m.contains("current model stays") || Instant::now() > deadline {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(m.contains("broken.safetensors") && m.contains("truncated"), "{m}");
    let model = browser.eval("window.segclipStatus.app.model").await;
    assert_eq!(model, "page-test-model.safetensors");

    // Privacy: everything after load happened on the page; nothing was fetched or sent.
    let after: Vec<String> = requests.lock().unwrap()[requests_after_load..].to_vec();
    assert!(after.is_empty(), "requests after load: {after:?}");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_segments_on_webgpu() {
    segment_and_check(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_segments_on_the_cpu_fallback() {
    segment_and_check(false).await;
}
