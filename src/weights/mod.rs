//! Bytes <-> model: the weights file format, its quantisation, and checkpoint import.

pub mod format;
#[cfg(not(target_arch = "wasm32"))]
pub mod import;
pub mod keymap;
pub mod model_io;
pub mod presets;
pub mod quant;
pub mod stream;

pub use format::{HostTensor, Residency, WeightsError, WeightsFile};
pub use quant::StorageDtype;
