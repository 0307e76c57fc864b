//! SegCLIP in burn: generic over the backend through `Device`; no I/O, no DOM, no files.
//! Each layer follows a section of `docs/segclip.md` (named in its module docs).

pub mod config;
pub mod dense;
pub mod group;
pub mod layers;
pub mod reconstruct;
pub mod text;
pub mod vision;

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};

pub use config::SegClipConfig;
pub use group::Assignment;
pub use text::TokenBatch;
pub use vision::VisionOutput;

/// The logit scale is stored as its log and clamped to at most 100 after `exp`.
pub const MAX_LOGIT_SCALE: f64 = 100.0;

#[derive(Module, Debug)]
pub struct SegClip {
    pub visual: vision::VisionTower,
    pub text: text::TextTower,
    /// log of the contrastive temperature's inverse, [1]; initialised to ln 100 as CLIP's.
    pub logit_scale: Param<Tensor<1>>,
    /// The training-only reconstruction branch; `None` in inference models and weights files.
    pub recon: Option<reconstruct::ReconstructionHeads>,
}

impl SegClip {
    /// A freshly initialised inference model of the given size.
    pub fn new(config: &SegClipConfig, device: &Device) -> Self {
        Self {
            visual: vision::VisionTower::new(config, device),
            text: text::TextTower::new(config, device),
            logit_scale: layers::lazy_param([1], device, |device| Tensor::from_floats([MAX_LOGIT_SCALE.ln() as f32], device)),
            recon: None,
        }
    }

    /// A freshly initialised model with the training-only reconstruction branch.
    pub fn new_for_training(config: &SegClipConfig, device: &Device) -> Self {
        Self { recon: Some(reconstruct::ReconstructionHeads::new(config, device)), ..Self::new(config, device) }
    }

    /// The masked-reconstruction pass (training models only).
    pub fn reconstruct(&self, images: Tensor<4>, keep: &[Vec<usize>], assignment: Assignment) -> Option<reconstruct::Reconstruction> {
        self.recon.as_ref().map(|r| r.forward(&self.visual, images, keep, assignment))
    }

    /// Encodes normalised images [B, 3, H, W] (evaluation assignment).
    pub fn image(&self, images: Tensor<4>) -> VisionOutput {
        self.visual.forward(images, Assignment::Eval)
    }

    /// Encodes token sequences into text embeddings [T, E] (not normalised).
    pub fn text(&self, tokens: &TokenBatch, device: &Device) -> Tensor<2> {
        self.text.forward(tokens, device)
    }

    /// `exp(logit_scale)` clamped to at most 100, as a [1] tensor.
    pub fn scale(&self) -> Tensor<1> {
        self.logit_scale.val().exp().clamp_max(MAX_LOGIT_SCALE)
    }
}
