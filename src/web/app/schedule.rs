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

/// Paints an interim segmentation (a first scale's, an unrefined one) while the final one is
/// computed, unless the model was replaced meanwhile, and lets the browser show it; returns the
/// time from the request to that paint.
async fn show_interim(interim: Segmentation, generation: u64, requested: f64) -> Option<f64> {
    if app().borrow().generation != generation {
        return None;
    }
    app().borrow_mut().result = Some(interim);
    paint();
    let shown = now() - requested;
    yield_to_browser().await;
    Some(shown)
}

pub(super) async fn compute(requested: f64) -> Result<(), String> {
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
                let mut f = segmenter.encode_first_scale(&image).await?;
                let mut encode_ms = now() - t0;
                yield_to_browser().await;
                // A model with more scales (weights/manifest.json `windows.extra_short_sides`)
                // runs ~6 times the windows of its first scale (the bundled one: 108 against 18);
                // the first scale's map is painted meanwhile, and the averaged one replaces it.
                // Painted only, like the refinement's preview below.
                if !segmenter.options.extra_short_sides.is_empty() && segmenter.dense_protocol().is_none() {
                    let embeddings = segmenter.encode_labels(&labels_now).await?;
                    let first = segmenter.combine(&f, &labels_now, &embeddings).await?;
                    t.first_scale_ms = show_interim(first, generation, requested).await;
                    let t0 = now();
                    segmenter.add_extra_scales(&image, &mut f).await?;
                    encode_ms += now() - t0;
                }
                t.image_ms = Some(encode_ms);
                f
            }
        };
        let t0 = now();
        let embeddings = segmenter.encode_labels(&labels_now).await?;
        t.text_ms = now() - t0;
        // A label edit on cached features under the model's refinement (src/pipeline/refine.rs)
        // paints the unrefined map first: the refinement's passes take ~40 ms on the CPU
        // fallback (docs/benchmarks.md), and this way the edit shows at the speed it had without
        // them; the refined map replaces it when ready. The preview is painted only: the status
        // and the label map it publishes are the refined result's.
        let t0 = now();
        let two_steps = if t.image_ms.is_none() { segmenter.combine_unrefined(&features, &labels_now, &embeddings).await? } else { None };
        let result = match two_steps {
            Some((preview, map)) => {
                let unrefined_ms = now() - t0;
                t.preview_ms = show_interim(preview, generation, requested).await;
                let t0 = now();
                let result = segmenter.refine_combined(&features, &labels_now, map);
                t.combine_ms = unrefined_ms + (now() - t0);
                result
            }
            None => {
                let result = segmenter.combine(&features, &labels_now, &embeddings).await?;
                t.combine_ms = now() - t0;
                result
            }
        };
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
