//! segclip: open-vocabulary semantic segmentation (SegCLIP) that runs in the browser on WebGPU,
//! with a native companion CLI for training, evaluation, conversion and export.
//!
//! The library is shared by both front ends: `src/bin/segclip` (the CLI) and `src/web` (the page's
//! wasm entry). Model code takes a `&Device` and never names a backend; each front end picks its
//! device in one place (`backend` natively, `web::backend` in the page).

pub mod backend;
pub mod choice;
#[cfg(not(target_arch = "wasm32"))]
pub mod bench;
pub mod data;
pub mod eval;
#[cfg(not(target_arch = "wasm32"))]
pub mod files;
pub mod labels;
pub mod model;
pub mod pipeline;
pub mod selfcheck;
pub mod tokenizer;
#[cfg(not(target_arch = "wasm32"))]
pub mod train;
pub mod weights;

#[cfg(target_arch = "wasm32")]
pub mod web;

pub use burn::tensor::Device;
