//! The page's state: one `App` per page (weights, image, cached features, labels, settings, the
//! last result and its timings), and the clock.

use std::cell::RefCell;
use std::rc::Rc;

use burn::tensor::Device;
use wasm_bindgen_futures::JsFuture;

use crate::pipeline::{ImageFeatures, Rgb, Segmentation, Segmenter};

/// Images above this many pixels are refused before decoding (a decompression bomb never
/// allocates); images with a long side above `DISPLAY_LONG_SIDE` are downscaled for display.
pub(super) const MAX_PIXELS: u64 = 40_000_000;

pub(super) const DISPLAY_LONG_SIDE: usize = 2048;

#[derive(Default)]
pub(super) struct Timings {
    /// `None` when the run reused the image's cached features.
    pub(super) image_ms: Option<f64>,
    pub(super) text_ms: f64,
    pub(super) combine_ms: f64,
    /// From the request (image, label edit) to the painted overlay, queueing included.
    pub(super) repaint_ms: f64,
    /// Of that, painting the overlay and the legend.
    pub(super) paint_ms: f64,
    /// From the request to the unrefined map painted, when a label edit painted one before the
    /// model's refinement (src/web/app/schedule.rs `compute`).
    pub(super) preview_ms: Option<f64>,
    /// From the request to the first scale's map painted, when a new image's model has more
    /// scales (src/web/app/schedule.rs `compute`).
    pub(super) first_scale_ms: Option<f64>,
}

#[derive(Default)]
pub(super) struct App {
    pub(super) device: Option<Device>,
    pub(super) tokenizer_json: Vec<u8>,
    /// Taken out while a computation runs (the pipeline is async; no borrow spans an await).
    pub(super) segmenter: Option<Segmenter>,
    pub(super) model_name: String,
    pub(super) image: Option<Rgb>,
    pub(super) features: Option<ImageFeatures>,
    pub(super) labels: Vec<String>,
    pub(super) hidden: Vec<bool>,
    pub(super) bg_thresh: f32,
    pub(super) alpha: f32,
    pub(super) outline: bool,
    pub(super) result: Option<Segmentation>,
    pub(super) timings: Timings,
    pub(super) busy: bool,
    pub(super) pending: bool,
    pub(super) sample_index: u64,
    pub(super) painted_once: bool,
    /// The loaded weights file, kept to rebuild the model on the CPU if the GPU is lost.
    pub(super) model_bytes: Vec<u8>,
    /// How the loaded model holds an int8 file's weights (`session::load_weights`).
    pub(super) resident: crate::weights::format::Residency,
    /// Bumped when the model is replaced; a computation started before is discarded.
    pub(super) generation: u64,
    /// The presets (weights/presets.json).
    pub(super) presets: Option<crate::weights::presets::Presets>,
    /// Where the loaded model's label embeddings are kept between visits (Cache API key).
    pub(super) labels_cache_key: Option<String>,
    /// The bundled model's manifest entry, to load it again from the picker.
    pub(super) bundled: Option<crate::pipeline::manifest::ManifestEntry>,
    /// The image is one of the page's generated samples (not a visitor's photo).
    pub(super) image_is_sample: bool,
    /// Bumped when the image (or the default labels) change and the cached features are
    /// dropped; a computation started before paints and stores nothing, and runs again.
    pub(super) image_serial: u64,
}

impl App {
    /// Drops the cached image features and the result made from them (a new image, new default
    /// labels, a new model); a computation running meanwhile sees `image_serial` change and
    /// stores nothing.
    pub(super) fn forget_features(&mut self) {
        self.features = None;
        self.result = None;
        self.image_serial += 1;
    }
}

thread_local! {
    static APP: Rc<RefCell<App>> = Rc::new(RefCell::new(App { bg_thresh: 0.8, alpha: 0.55, ..Default::default() }));
}

pub(super) fn app() -> Rc<RefCell<App>> {
    APP.with(|a| a.clone())
}

pub(super) fn now() -> f64 {
    web_sys::window().and_then(|w| w.performance()).map(|p| p.now()).unwrap_or(0.0)
}

/// Lets the browser paint (busy state, messages) before a long step.
pub(super) async fn yield_to_browser() {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        if let Some(w) = web_sys::window() {
            let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, 0);
        }
    });
    let _ = JsFuture::from(promise).await;
}
