//! What the page shows: the image with its overlay, label chips, legend, messages, the status
//! object tests read, and downloads.

use wasm_bindgen::{Clamped, JsCast};
use web_sys::{CanvasRenderingContext2d, HtmlCanvasElement};

use super::state::*;
use crate::pipeline::overlay;
use crate::web::dom;

pub(super) fn message(text: &str, is_error: bool) {
    dom::set_text("message", text);
    if let Some(el) = dom::element("message") {
        el.set_class_name(if is_error { "note error" } else { "note" });
    }
}


pub(super) fn render_chips() {
    let app = app();
    let a = app.borrow();
    let colours = overlay::label_colours(&a.labels);
    let Some(list) = dom::element("chips") else {
        return;
    };
    list.set_inner_html("");
    let document = dom::document().unwrap();
    for (i, label) in a.labels.iter().enumerate() {
        let li = document.create_element("li").unwrap();
        li.set_class_name(if a.hidden[i] { "chip hidden-label" } else { "chip" });
        let [r, g, b] = colours[i];
        let _ = li.set_attribute("style", &format!("--chip: rgb({r},{g},{b})"));
        let toggle = document.create_element("button").unwrap();
        let _ = toggle.set_attribute("type", "button");
        let _ = toggle.set_attribute("title", "Show or hide this label (double-click to edit)");
        let _ = toggle.set_attribute("aria-pressed", if a.hidden[i] { "false" } else { "true" });
        let _ = toggle.set_attribute("data-label-index", &i.to_string());
        toggle.set_text_content(Some(label));
        let remove = document.create_element("button").unwrap();
        let _ = remove.set_attribute("type", "button");
        let _ = remove.set_attribute("aria-label", &format!("Remove {label}"));
        let _ = remove.set_attribute("data-remove-index", &i.to_string());
        remove.set_text_content(Some("×"));
        let _ = li.append_child(&toggle);
        let _ = li.append_child(&remove);
        let _ = list.append_child(&li);
    }
}

pub(super) fn context() -> Option<(HtmlCanvasElement, CanvasRenderingContext2d)> {
    let canvas: HtmlCanvasElement = dom::element("canvas")?.dyn_into().ok()?;
    let ctx = canvas.get_context("2d").ok()??.dyn_into().ok()?;
    Some((canvas, ctx))
}

/// Paints the image and, when there is a result for it, the overlay; updates the legend.
pub(super) fn paint() {
    let app = app();
    let a = app.borrow();
    let Some(image) = &a.image else { return };
    let Some((canvas, ctx)) = context() else {
        return;
    };
    // Resizing a canvas reallocates and clears its backing store: only when the image changes.
    if canvas.width() != image.width as u32 || canvas.height() != image.height as u32 {
        canvas.set_width(image.width as u32);
        canvas.set_height(image.height as u32);
        // Small images (the 96 px emoji scenes) are shown enlarged with crisp pixels.
        let _ = if image.width.max(image.height) < 320 {
            canvas.set_attribute("data-small", "")
        } else {
            canvas.remove_attribute("data-small")
        };
    }
    let rgba = match &a.result {
        Some(r) if r.width == image.width && r.height == image.height => {
            let colours: Vec<[u8; 3]> = r.labels.iter().map(|l| l.colour).collect();
            overlay::paint(&image.pixels, image.width, image.height, &r.label_map, &colours, a.alpha, a.outline, &a.hidden)
        }
        _ => image.pixels.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect(),
    };
    if let Ok(data) = web_sys::ImageData::new_with_u8_clamped_array_and_sh(Clamped(&rgba), image.width as u32, image.height as u32) {
        let _ = ctx.put_image_data(&data, 0.0, 0.0);
    }
    // One innerHTML write instead of a DOM call per item (the per-item version took 14.5 ms of a 22 ms paint in the page test).
    if let Some(legend) = dom::element("legend") {
        let mut html = String::new();
        if let Some(r) = &a.result {
            for (i, l) in r.labels.iter().enumerate() {
                let [cr, cg, cb] = l.colour;
                let class = if a.hidden.get(i).copied().unwrap_or(false) { " class=\"hidden-label\"" } else { "" };
                html.push_str(&format!(
                    "<li{class}><span class=\"swatch\" style=\"background: rgb({cr},{cg},{cb})\"></span>{} — {:.1}%</li>",
                    html_escape(&l.label),
                    l.area_share * 100.0
                ));
            }
            html.push_str(&format!("<li>background — {:.1}%</li>", r.background_share * 100.0));
        }
        legend.set_inner_html(&html);
    }
    let has_result = a.result.is_some();
    for id in ["download-overlay", "download-mask"] {
        if let Some(el) = dom::element(id) {
            if has_result {
                let _ = el.remove_attribute("disabled");
            } else {
                let _ = el.set_attribute("disabled", "");
            }
        }
    }
    if has_result {
        let t = &a.timings;
        let image = match t.image_ms {
            Some(ms) => format!("image encode {ms:.0} ms"),
            None => "image features cached".to_string(),
        };
        dom::set_text("timings", &format!("Last run: {image}, text encode {:.0} ms, combine {:.0} ms", t.text_ms, t.combine_ms));
    }
}

pub(super) fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Publishes the state for tests and tools: `window.segclipStatus.app` and, after a result,
/// `window.segclipLabelMap` (a Uint8Array, 0 = background, i = label i).
pub(super) fn publish() {
    let app = app();
    let a = app.borrow();
    let counters = a.segmenter.as_ref().map(|s| s.counters);
    // What the GPU allocator holds (weights, cached features, pooled buffers); `None` on the CPU.
    let gpu_memory =
        a.device.as_ref().and_then(|d| d.memory_pool_usage()).map(
            |u| serde_json::json!({"bytes_in_use": u.bytes_in_use, "bytes_reserved": u.bytes_reserved, "allocations": u.number_allocs}),
        );
    let app_status = serde_json::json!({
        "gpu_memory": gpu_memory,
        // wasm memory only grows: its size is the most the page's wasm side has held at once.
        "wasm_memory_bytes": dom::wasm_memory_bytes(),
        "resident": a.resident.to_string(),
        "model": a.model_name,
        "labels": a.labels,
        "busy": a.busy,
        "counters": counters,
        // 0 = the model's input size / a stride of one window (src/pipeline/mod.rs).
        "windows": a.segmenter.as_ref().map(|s| serde_json::json!({"short_side": s.protocol.short_side, "stride": s.protocol.stride, "extra_short_sides": s.protocol.extra_short_sides})),
        // null when label edges follow the patch grid (src/pipeline/mod.rs `superpixels`).
        "superpixels": a.segmenter.as_ref().and_then(|s| s.protocol.superpixels),
        "flip": a.segmenter.as_ref().map(|s| s.protocol.flip),
        // null when the score map is not refined (src/pipeline/refine.rs).
        "refine": a.segmenter.as_ref().and_then(|s| s.protocol.refine),
        "result": a.result.as_ref().map(|r| serde_json::json!({"width": r.width, "height": r.height, "labels": r.labels, "background_share": r.background_share})),
        "timings_ms": {"image": a.timings.image_ms, "text": a.timings.text_ms, "combine": a.timings.combine_ms, "paint": a.timings.paint_ms, "repaint": a.timings.repaint_ms, "preview": a.timings.preview_ms, "first_scale": a.timings.first_scale_ms},
    });
    dom::merge_status("app", &app_status);
    if let (Some(r), Some(w)) = (&a.result, web_sys::window()) {
        let array = js_sys::Uint8Array::from(r.label_map.as_slice());
        let _ = js_sys::Reflect::set(&w, &"segclipLabelMap".into(), &array);
    }
}

pub(super) fn png_bytes(width: usize, height: usize, data: Vec<u8>, rgba: bool) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let colour = if rgba { image::ExtendedColorType::Rgba8 } else { image::ExtendedColorType::L8 };
    image::ImageEncoder::write_image(image::codecs::png::PngEncoder::new(&mut out), &data, width as u32, height as u32, colour).ok()?;
    Some(out)
}

pub(super) fn download(which: &str) {
    let app = app();
    let a = app.borrow();
    let (Some(image), Some(r)) = (&a.image, &a.result) else {
        return;
    };
    let (bytes, name) = if which == "overlay" {
        let colours: Vec<[u8; 3]> = r.labels.iter().map(|l| l.colour).collect();
        let rgba = overlay::paint(&image.pixels, image.width, image.height, &r.label_map, &colours, a.alpha, a.outline, &a.hidden);
        (png_bytes(image.width, image.height, rgba, true), "segclip-overlay.png")
    } else {
        (png_bytes(image.width, image.height, r.label_map.clone(), false), "segclip-mask.png")
    };
    if let Some(bytes) = bytes {
        dom::save_bytes(&bytes, "image/png", name);
    }
}
