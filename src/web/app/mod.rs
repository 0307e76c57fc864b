//! The page's interactive part: each room in its own file: the state, the scheduling,
//! the session (start-up, weights, device loss), the view (painting, chips, legend, messages) and
//! the controls (event wiring, file input). Imports run one way: controls -> models (presets, hub
//! downloads, the models cache) -> session ->
//! schedule -> view -> state. All computing goes through the shared `pipeline::Segmenter`;
//! image features and label embeddings are cached there, so a label edit re-runs only the text
//! tower for new labels and the cheap combination.

mod controls;
mod models;
mod schedule;
mod session;
mod state;
mod view;

use burn::tensor::Device;

use crate::web::PageError;

pub use session::on_device_lost;

/// Called once the backend is chosen: loads the tokenizer, wires the controls and loads the
/// bundled model when the manifest lists one.
pub async fn init(device: Device, bundled: Option<crate::pipeline::manifest::ManifestEntry>) -> Result<(), PageError> {
    session::prepare(device).await?;
    controls::wire_controls()?;
    models::init_presets().await;
    session::load_bundled(bundled).await?;
    view::publish();
    Ok(())
}

/// The Cache API cache of converted models and their label embeddings.
fn models_cache() -> &'static str {
    "segclip-models-v1"
}
