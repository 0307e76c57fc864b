//! Single-flight scheduling: one computation at a time; an edit while one runs marks the state
//! pending and re-runs once it ends. Image features are reused while only labels change.

use wasm_bindgen_futures::spawn_local;

use super::state::*;
use super::view::{message, paint, publish};
use crate::pipeline::{ImageFeatures, Segmentation};
use crate::web::dom;

/// Starts a computation, or marks one pending if one runs: the page never runs two at once.
pub(super) fn schedule() {
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
            if let Err(e) = compute(requested).await {
                message(&e.to_string(), true);
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

/// Whether a computation started at (`generation`, `image_serial`) still answers the page's
/// current model and image.
fn still_current(generation: u64, image_serial: u64) -> bool {
    let a = app();
    let a = a.borrow();
    a.generation == generation && a.image_serial == image_serial
}

/// Paints an interim segmentation (a first scale's, an unrefined one) while the final one is
/// computed and lets the browser show it; returns the time from the request to that paint, or
/// `None` (nothing painted) when the model or the image changed meanwhile. The first time in a
/// run, the result it replaced goes to `replaced`, for the run to put back if it fails.
async fn show_interim(
    interim: Segmentation,
    (generation, image_serial): (u64, u64),
    requested: f64,
    replaced: &mut Option<Option<Segmentation>>,
) -> Option<f64> {
    if !still_current(generation, image_serial) {
        return None;
    }
    let before = std::mem::replace(&mut app().borrow_mut().result, Some(interim));
    replaced.get_or_insert(before);
    paint();
    let shown = now() - requested;
    yield_to_browser().await;
    Some(shown)
}

/// Why the work of a run ended without a result.
enum Stop {
    /// The model or the image changed under it: nothing to store, and the pending run starts
    /// over (the checks after the work see the change too).
    Stale,
    /// The pipeline failed; the page says why in one line.
    Failed(crate::pipeline::PipelineError),
}

impl From<crate::pipeline::PipelineError> for Stop {
    fn from(e: crate::pipeline::PipelineError) -> Self {
        Stop::Failed(e)
    }
}

pub(super) async fn compute(requested: f64) -> Result<(), crate::pipeline::PipelineError> {
    let app = app();
    let (mut segmenter, image, features, labels_now, bg, started) = {
        let mut a = app.borrow_mut();
        let started = (a.generation, a.image_serial);
        let Some(s) = a.segmenter.take() else {
            return Ok(());
        };
        let Some(image) = a.image.clone() else {
            a.segmenter = Some(s);
            return Ok(());
        };
        (s, image, a.features.take(), a.labels.clone(), a.bg_thresh, started)
    };
    let prompts_before = segmenter.counters.prompts_encoded;
    dom::set_busy(true);
    // Let the browser show the busy state before a long image encode; a label edit on cached
    // features is short, and yielding there cost ~10 ms of a 51 ms repaint.
    if features.is_none() {
        yield_to_browser().await;
    }
    segmenter.protocol.bg_thresh = bg;
    let mut replaced = None;
    let outcome: Result<(ImageFeatures, Segmentation, Timings), Stop> = async {
        let mut t = Timings::default();
        // The labels first: the first scale's interim map below needs them too.
        let t0 = now();
        let embeddings = segmenter.encode_labels(&labels_now).await?;
        // A dense model's background words go through the text tower here too (once per model:
        // they are cached), so the text time says what the words cost.
        let words = segmenter.background_words(&labels_now);
        if segmenter.kind() == crate::pipeline::Kind::Dense && !words.is_empty() {
            segmenter.encode_labels(&words).await?;
        }
        t.text_ms = now() - t0;
        let features = match features {
            Some(f) => f,
            None => {
                let t0 = now();
                let mut f = segmenter.encode_first_scale(&image).await?;
                let mut encode_ms = now() - t0;
                yield_to_browser().await;
                // A model with more scales (weights/manifest.json `windows.extra_short_sides`)
                // runs more windows than its first scale (the bundled one, on a square scene: 108
                // against 18); the first scale's map is painted meanwhile, and the averaged one
                // replaces it. Painted only, like the refinement's preview below.
                if !segmenter.protocol.extra_short_sides.is_empty() && segmenter.kind() == crate::pipeline::Kind::Groups {
                    let t0 = now();
                    let first = segmenter.combine(&f, &labels_now, &embeddings).await?;
                    t.combine_ms = now() - t0;
                    t.first_scale_ms = show_interim(first, started, requested, &mut replaced).await;
                    if t.first_scale_ms.is_none() {
                        return Err(Stop::Stale);
                    }
                    let t0 = now();
                    segmenter.add_extra_scales(&image, &mut f).await?;
                    encode_ms += now() - t0;
                }
                t.image_ms = Some(encode_ms);
                f
            }
        };
        // A label edit on cached features under the model's refinement (src/pipeline/refine.rs)
        // paints the unrefined map first: the refinement's passes take ~40 ms on the CPU
        // fallback (docs/benchmarks.md), and this way the edit shows at the speed it had without
        // them; the refined map replaces it when ready. The preview is painted only: the status
        // and the label map it publishes are the refined result's.
        // (`combine_ms` sums every combination of the run: the interim one and the final one.)
        let t0 = now();
        let two_steps = if t.image_ms.is_none() { segmenter.combine_unrefined(&features, &labels_now, &embeddings).await? } else { None };
        let result = match two_steps {
            Some((preview, map)) => {
                let unrefined_ms = now() - t0;
                t.preview_ms = show_interim(preview, started, requested, &mut replaced).await;
                if t.preview_ms.is_none() {
                    return Err(Stop::Stale);
                }
                let t0 = now();
                let result = segmenter.refine_combined(&features, &labels_now, map);
                t.combine_ms += unrefined_ms + (now() - t0);
                result
            }
            None => {
                let result = segmenter.combine(&features, &labels_now, &embeddings).await?;
                t.combine_ms += now() - t0;
                result
            }
        };
        Ok((features, result, t))
    }
    .await;
    let mut a = app.borrow_mut();
    if a.generation != started.0 {
        // The model was replaced meanwhile (own weights, or a lost GPU): this result is stale.
        a.pending = true;
        return Ok(());
    }
    a.segmenter = Some(segmenter);
    if a.image_serial != started.1 {
        // A new image (or new default labels) came meanwhile: these features and this result
        // are of the old one.
        a.pending = true;
        return Ok(());
    }
    match outcome {
        Ok((features, result, timings)) => {
            let photo_on_emoji_model = !a.image_is_sample
                && a.segmenter.as_ref().is_some_and(|s| s.kind() == crate::pipeline::Kind::Groups)
                && a.bundled.as_ref().is_some_and(|b| b.file == a.model_name)
                && result.background_share >= PHOTO_HINT_BACKGROUND;
            let share = result.background_share;
            a.features = Some(features);
            a.result = Some(result);
            a.timings = timings;
            let keep_labels = a.labels_cache_key.clone().filter(|_| a.segmenter.as_ref().is_some_and(|s| s.counters.prompts_encoded > prompts_before));
            drop(a);
            message("", false);
            show_photo_hint(photo_on_emoji_model, share);
            if let Some(key) = keep_labels {
                spawn_local(save_label_embeddings(key));
            }
            Ok(())
        }
        Err(stop) => {
            // An interim map painted before the failure is not a result: the page shows and
            // publishes what it had before this run.
            if let Some(before) = replaced {
                a.result = before;
                drop(a);
                paint();
            }
            match stop {
                Stop::Stale => Ok(()),
                Stop::Failed(e) => Err(e),
            }
        }
    }
}

/// The share of a visitor's photo painted as background above which the page says the emoji
/// model does not know photos (the bundled model paints 96.5-100% of photos so).
const PHOTO_HINT_BACKGROUND: f64 = 0.95;

/// Shows or hides the line that offers the photo model.
fn show_photo_hint(show: bool, background_share: f64) {
    let Some(hint) = dom::element("photo-hint") else { return };
    if show {
        dom::set_text(
            "photo-hint-text",
            &format!(
                "The emoji model painted {:.0}% of this photo as background: it knows 19 classes of emoji art, not photos.",
                background_share * 100.0
            ),
        );
        let _ = hint.remove_attribute("hidden");
    } else {
        let _ = hint.set_attribute("hidden", "");
    }
    dom::merge_status("photo_hint", &serde_json::json!(show));
}

/// Keeps the loaded model's label embeddings in the models cache under `key`, so a later visit
/// skips the text tower for them (the background words' 80 prompts each are the costly part).
pub(super) async fn save_label_embeddings(key: String) {
    let embeddings = {
        let a = app();
        let a = a.borrow();
        match a.segmenter.as_ref() {
            Some(s) if a.labels_cache_key.as_deref() == Some(key.as_str()) => s.cached_label_embeddings(),
            _ => return,
        }
    };
    let Some(cache) = dom::open_cache(super::models_cache()).await else { return };
    let json = serde_json::to_vec(&embeddings).unwrap_or_default();
    match dom::cache_put(&cache, &key, &json, "application/json").await {
        Ok(()) => dom::merge_status("saved_label_embeddings", &serde_json::json!(embeddings.len())),
        Err(e) => dom::log(&format!("label embeddings not kept: {e}")),
    }
}
