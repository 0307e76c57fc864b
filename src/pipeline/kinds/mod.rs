//! One segmenter per model kind behind one small trait: what a SegCLIP file (`groups.rs`) and a
//! plain CLIP run densely (`dense.rs`) each do for the shared pipeline (src/pipeline/mod.rs:
//! preprocess, windows, label cache, combine, overlay). A kind keeps only its own state.

pub mod dense;
pub mod groups;

use std::future::Future;
use std::pin::Pin;

use burn::tensor::{Device, Tensor};

use super::combine::{EncodedWindows, ScoreMap};
use super::protocol::{Kind, Protocol};
use super::windows::Window;
use super::{ImageFeatures, PipelineError};
use crate::model::TokenBatch;

/// A future the pipeline awaits on the calling thread (device reads are asynchronous in wasm).
pub type LocalFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// What a kind's scoring produced.
pub enum Scored {
    /// Per-pixel scores at the rescaled size; the pipeline refines them (when the protocol says)
    /// and takes the label map at the image's size.
    Map(ScoreMap),
    /// The label map and each pixel's winning score at the image's size.
    Labels(Vec<u8>, Vec<f32>),
}

/// One model kind, as the shared pipeline drives it.
pub trait KindModel {
    /// Which kind this is: it decides which protocol settings apply (`Protocol::check`).
    fn kind(&self) -> Kind;
    /// One line naming the model for a front end.
    fn describe(&self) -> String;
    /// Its own protocol: the settings it runs with unless a manifest or the user says otherwise.
    fn protocol(&self) -> Protocol;
    /// The text tower over prompts (embeddings not yet normalised).
    fn embed_text(&self, tokens: &TokenBatch, device: &Device) -> Tensor<2>;
    /// The scale of the cosine logits (read from the device once; the pipeline keeps it).
    fn logit_scale(&self) -> LocalFuture<'_, Result<f32, PipelineError>>;
    /// The image tower over `windows` of one size, stacked in `input` in their order.
    fn encode_windows<'a>(&'a self, input: Tensor<4>, windows: &'a [Window]) -> LocalFuture<'a, Result<EncodedWindows, PipelineError>>;
    /// Scores an image's features against normalised label and background embeddings.
    fn score(
        &self,
        features: &ImageFeatures,
        labels: &[Vec<f32>],
        background: &[Vec<f32>],
        protocol: &Protocol,
        logit_scale: f32,
    ) -> Result<Scored, PipelineError>;
}

/// L2-normalises `v` in place.
pub(crate) fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
}

/// A tensor's values on the host.
pub(crate) async fn read<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, PipelineError> {
    let data = t.into_data_async().await.map_err(|e| PipelineError::Device(format!("{e:?}")))?;
    data.try_to_vec::<f32>().map_err(|e| PipelineError::Model(format!("unexpected tensor dtype: {e:?}")))
}
