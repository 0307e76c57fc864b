//! The page's interactive part: state and scheduling here; the session (start-up, weights,
//! device loss), the view (painting, chips, legend, messages) and the controls (event wiring, file
//! input) in their own rooms. All computing goes through the shared `pipeline::Segmenter`;
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

mod controls;
mod session;
mod view;

use controls::*;
pub use session::{init, on_device_lost};
use session::*;
use view::*;

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

/// Lets the browser paint (busy state, messages) before a long step.
async fn yield_to_browser() {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        if let Some(w) = web_sys::window() {
            let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, 0);
        }
    });
    let _ = JsFuture::from(promise).await;
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
