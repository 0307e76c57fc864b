//! The page's controls: event wiring for every input, file reading (pick, drop, paste), samples
//! and label entry.

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::{spawn_local, JsFuture};

use super::models;
use super::schedule::schedule;
use super::session::load_weights;
use super::state::*;
use super::view::{context, download, message, paint, publish, render_chips};
use crate::data::{emoji, generate, shape_classes, SceneConfig, Split};
use crate::labels;
use crate::pipeline::{decode, Rgb};
use crate::web::dom;
use crate::web::dom::input;
use crate::web::PageError;

/// Reads a picked, dropped or pasted image file locally and shows it.
pub(super) fn load_image_file(file: web_sys::File) {
    spawn_local(async move {
        let name = file.name();
        match file_bytes(file).await {
            Ok(bytes) => handle_image_bytes(&bytes, &name),
            Err(e) => message(&e.to_string(), true),
        }
    });
}

pub(super) fn handle_image_bytes(bytes: &[u8], name: &str) {
    // Scaled to the display size as it is decoded: the page never holds a large photo's
    // full-size pixels beyond the decoder's own buffer.
    match decode::decode_image_within(bytes, MAX_PIXELS, Some(DISPLAY_LONG_SIDE as u32)) {
        Ok((rgb, (w, h))) if (rgb.width, rgb.height) != (w as usize, h as usize) => {
            let note = format!("Large image ({w}x{h}) downscaled to {}x{} for display and segmentation.", rgb.width, rgb.height);
            set_image(rgb, Some(note), false);
        }
        Ok((rgb, _)) => set_image(rgb, None, false),
        Err(e) => message(&format!("{name}: {e}"), true),
    }
}

/// A sample's world names its classes: they become the labels when there are none yet or the
/// labels are another world's class list; labels the user typed stay.
pub(super) fn use_default_labels(defaults: &[&str]) {
    let worlds: [Vec<&str>; 2] = [shape_classes()[1..].to_vec(), emoji::CLASSES[1..].to_vec()];
    {
        let app = app();
        let mut a = app.borrow_mut();
        let current: Vec<&str> = a.labels.iter().map(String::as_str).collect();
        if !(current.is_empty() || worlds.iter().any(|w| *w == current)) || current == defaults {
            return;
        }
        a.labels = defaults.iter().map(|s| s.to_string()).collect();
        a.hidden = vec![false; a.labels.len()];
        a.forget_features();
    }
    render_chips();
}

pub(super) fn add_labels(text: &str) {
    let parsed = labels::split_labels(text);
    if parsed.is_empty() {
        return;
    }
    let app = app();
    let problems = {
        let mut a = app.borrow_mut();
        let (added, problems) = labels::add_labels(&mut a.labels, parsed);
        let shown = a.hidden.len() + added;
        a.hidden.resize(shown, false);
        problems
    };
    message(&problems.join("; "), !problems.is_empty());
    render_chips();
    schedule();
}

pub(super) fn on<E: wasm_bindgen::convert::FromWasmAbi + 'static>(id: &str, event: &str, handler: impl FnMut(E) + 'static) -> Result<(), PageError> {
    let el = dom::element(id).ok_or_else(|| PageError::NoElement(id.to_string()))?;
    let closure = Closure::<dyn FnMut(E)>::new(handler);
    el.add_event_listener_with_callback(event, closure.as_ref().unchecked_ref()).map_err(|e| PageError::browser("addEventListener", e))?;
    closure.forget(); // lives as long as the page
    Ok(())
}


/// Reads a picked or dropped file's bytes locally.
pub(super) async fn file_bytes(file: web_sys::File) -> Result<Vec<u8>, PageError> {
    Ok(file_array(file).await?.0.to_vec())
}

/// A dropped file's bytes, left in the JS heap (`dom::JsBytes`).
pub(super) async fn file_array(file: web_sys::File) -> Result<crate::web::dom::JsBytes, PageError> {
    let buffer = JsFuture::from(file.array_buffer()).await.map_err(|e| PageError::read(&file.name(), e))?;
    Ok(crate::web::dom::JsBytes(js_sys::Uint8Array::new(&buffer)))
}

pub(super) fn wire_controls() -> Result<(), PageError> {
    on::<web_sys::Event>("image-input", "change", |_| {
        let Some(file) = input("image-input").and_then(|i| i.files()).and_then(|f| f.get(0)) else {
            return;
        };
        load_image_file(file);
    })?;
    on::<web_sys::Event>("weights-input", "change", |_| {
        let Some(file) = input("weights-input").and_then(|i| i.files()).and_then(|f| f.get(0)) else {
            return;
        };
        spawn_local(async move {
            let name = file.name();
            message(&format!("Loading {name}…"), false);
            yield_to_browser().await;
            match file_array(file).await.and_then(|bytes| load_weights(&bytes, &name)) {
                Ok(()) => message(&format!("Loaded {name}."), false),
                Err(e) => message(&format!("{e} — the current model stays."), true),
            }
            publish();
        });
    })?;
    on::<web_sys::Event>("sample-button", "click", |_| {
        let index = {
            let app = app();
            let mut a = app.borrow_mut();
            a.sample_index += 1;
            // Different samples on every visit, reproducible within one.
            (now() as u64).wrapping_mul(2654435761).wrapping_add(a.sample_index) % 100_000
        };
        // The emoji world unless the selector asks for the shape scenes.
        let shapes = dom::element("world-select")
            .and_then(|e| e.dyn_into::<web_sys::HtmlSelectElement>().ok())
            .is_some_and(|s| s.value() == "shapes");
        let (rgb, caption, defaults): (_, _, Vec<&str>) = if shapes {
            let scene = generate(Split::Val, index, &SceneConfig::with_size(224));
            (Rgb::new(scene.width, scene.height, scene.image), scene.captions.first().cloned(), shape_classes()[1..].to_vec())
        } else {
            let scene = emoji::generate(Split::Val, index, &emoji::EmojiConfig::default());
            (Rgb::new(scene.width, scene.height, scene.image), scene.captions.first().cloned(), emoji::CLASSES[1..].to_vec())
        };
        use_default_labels(&defaults);
        if let Ok(rgb) = rgb {
            let world = if shapes { "Shape" } else { "Emoji" };
            set_image(rgb, Some(format!("{world} scene val #{index}: {}", caption.unwrap_or_default())), true);
        }
    })?;
    on::<web_sys::KeyboardEvent>("label-input", "keydown", |e| {
        if e.key() == "Enter" || e.key() == "," {
            e.prevent_default();
            if let Some(i) = input("label-input") {
                add_labels(&i.value());
                i.set_value("");
            }
        }
    })?;
    on::<web_sys::MouseEvent>("chips", "click", |e| {
        let Some(target) = e.target().and_then(|t| t.dyn_into::<web_sys::Element>().ok()) else {
            return;
        };
        let app = app();
        if let Some(i) = target.get_attribute("data-remove-index").and_then(|v| v.parse::<usize>().ok()) {
            let mut a = app.borrow_mut();
            if i < a.labels.len() {
                a.labels.remove(i);
                a.hidden.remove(i);
            }
        } else if let Some(i) = target.get_attribute("data-label-index").and_then(|v| v.parse::<usize>().ok()) {
            let mut a = app.borrow_mut();
            if let Some(h) = a.hidden.get_mut(i) {
                *h = !*h;
            }
            drop(a);
            render_chips();
            paint();
            return;
        } else {
            return;
        }
        render_chips();
        schedule();
    })?;
    on::<web_sys::MouseEvent>("chips", "dblclick", |e| {
        let Some(target) = e.target().and_then(|t| t.dyn_into::<web_sys::Element>().ok()) else {
            return;
        };
        if let Some(i) = target.get_attribute("data-label-index").and_then(|v| v.parse::<usize>().ok()) {
            let app = app();
            let label = {
                let mut a = app.borrow_mut();
                if i >= a.labels.len() {
                    return;
                }
                a.hidden.remove(i);
                a.labels.remove(i)
            };
            if let Some(field) = input("label-input") {
                field.set_value(&label);
                let _ = field.focus();
            }
            render_chips();
            schedule();
        }
    })?;
    on::<web_sys::Event>("bg-slider", "input", |_| {
        let Some(v) = input("bg-slider").map(|i| i.value_as_number() as f32) else {
            return;
        };
        dom::set_text("bg-value", &format!("{v:.2}"));
        app().borrow_mut().bg_thresh = v;
        schedule();
    })?;
    on::<web_sys::Event>("alpha-slider", "input", |_| {
        let Some(v) = input("alpha-slider").map(|i| i.value_as_number() as f32) else {
            return;
        };
        dom::set_text("alpha-value", &format!("{v:.2}"));
        app().borrow_mut().alpha = v;
        paint();
    })?;
    on::<web_sys::Event>("outline-toggle", "change", |_| {
        let checked = input("outline-toggle").map(|i| i.checked()).unwrap_or(false);
        app().borrow_mut().outline = checked;
        paint();
    })?;
    on::<web_sys::MouseEvent>("canvas", "mousemove", |e| {
        let Some((canvas, _)) = context() else { return };
        let app = app();
        let a = app.borrow();
        let Some(r) = &a.result else { return };
        let scale_x = r.width as f64 / canvas.client_width().max(1) as f64;
        let scale_y = r.height as f64 / canvas.client_height().max(1) as f64;
        let x = ((e.offset_x() as f64 * scale_x) as usize).min(r.width - 1);
        let y = ((e.offset_y() as f64 * scale_y) as usize).min(r.height - 1);
        let i = y * r.width + x;
        let l = r.label_map[i] as usize;
        let name = if l == 0 { "background".to_string() } else { r.labels[l - 1].label.clone() };
        dom::set_text("hover", &format!("({x}, {y}): {name}, score {:.3}", r.scores[i]));
    })?;
    on::<web_sys::Event>("model-select", "change", |_| models::describe_selected())?;
    on::<web_sys::MouseEvent>("model-load", "click", |_| spawn_local(models::load_selected()))?;
    on::<web_sys::MouseEvent>("download-cancel", "click", |_| models::cancel_download())?;
    on::<web_sys::MouseEvent>("use-photo-model", "click", |_| spawn_local(models::load_photo_preset()))?;
    on::<web_sys::MouseEvent>("cached-models", "click", |e| {
        let id = e.target().and_then(|t| t.dyn_into::<web_sys::Element>().ok()).and_then(|t| t.get_attribute("data-forget"));
        if let Some(id) = id {
            spawn_local(async move { models::forget(&id).await });
        }
    })?;
    on::<web_sys::MouseEvent>("download-overlay", "click", |_| download("overlay"))?;
    on::<web_sys::MouseEvent>("download-mask", "click", |_| download("mask"))?;
    wire_drop_and_paste()
}

pub(super) fn wire_drop_and_paste() -> Result<(), PageError> {
    let document = dom::document().ok_or(PageError::Missing("document"))?;
    let over = Closure::<dyn FnMut(web_sys::DragEvent)>::new(|e: web_sys::DragEvent| {
        e.prevent_default();
        if let Some(z) = dom::element("drop-zone") {
            z.set_class_name("canvas-wrap dragging");
        }
    });
    document.add_event_listener_with_callback("dragover", over.as_ref().unchecked_ref()).map_err(|e| PageError::browser("addEventListener", e))?;
    over.forget();
    let drop_handler = Closure::<dyn FnMut(web_sys::DragEvent)>::new(|e: web_sys::DragEvent| {
        e.prevent_default();
        if let Some(z) = dom::element("drop-zone") {
            z.set_class_name("canvas-wrap");
        }
        let Some(file) = e.data_transfer().and_then(|d| d.files()).and_then(|f| f.get(0)) else {
            return;
        };
        load_image_file(file);
    });
    document.add_event_listener_with_callback("drop", drop_handler.as_ref().unchecked_ref()).map_err(|e| PageError::browser("addEventListener", e))?;
    drop_handler.forget();
    let paste = Closure::<dyn FnMut(web_sys::ClipboardEvent)>::new(|e: web_sys::ClipboardEvent| {
        let Some(items) = e.clipboard_data().and_then(|d| d.files()) else {
            return;
        };
        let Some(file) = items.get(0) else { return };
        e.prevent_default();
        load_image_file(file);
    });
    document.add_event_listener_with_callback("paste", paste.as_ref().unchecked_ref()).map_err(|e| PageError::browser("addEventListener", e))?;
    paste.forget();
    Ok(())
}

/// Shows a new image (a visitor's, or a drawn sample when `sample`) with `note` under it.
pub(super) fn set_image(rgb: Rgb, note: Option<String>, sample: bool) {
    message(note.as_deref().unwrap_or(""), false);
    {
        let app = app();
        let mut a = app.borrow_mut();
        a.image = Some(rgb);
        a.image_is_sample = sample;
        a.forget_features();
    }
    if let Some(el) = dom::element("placeholder") {
        let _ = el.set_attribute("hidden", "");
    }
    paint();
    schedule();
}
