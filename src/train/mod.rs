//! Native training (docs/segclip.md, "Training"): the three losses, AdamW with the
//! reference's groups and schedule, checkpoints with resume, validation signals on the training
//! world's dev scenes (never `val`), a CSV log and a plot of the curves.
//!
//! A loop of our own rather than burn-train's `Learner`: the learning-rate groups and decay rule
//! are per parameter name, a batch is a pure function of (seed, step) so resuming needs no
//! loader state, and the page's and CI's builds stay free of burn-train (this module is
//! native-only).

pub mod augment;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod error;
pub mod log;
pub mod losses;
pub mod optim;
pub mod plot;
pub mod replay;
mod run;
mod step;
pub mod superpixel_targets;
// Felzenszwalb lives with the pipeline, which also snaps label maps to it (src/pipeline/superpixels/).
pub use crate::pipeline::superpixels;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use burn::module::Module;
use burn::tensor::Device;

use crate::data::Split;
use crate::model::{SegClip, SegClipConfig};
use crate::pipeline::Segmenter;
use crate::tokenizer::ClipTokenizer;
use crate::weights::format;
pub use config::TrainConfig;
pub use error::TrainError;
pub use log::{read_log, LogRow, ValSignals, LOG_HEADER};
pub use run::train;
pub use step::{step_gradients, GivenNoise, StepLosses};

/// How a run is driven (the CLI fills this; tests too).
#[derive(Clone)]
pub struct TrainOptions {
    /// Set by Ctrl-C: the loop writes a checkpoint at the next step boundary and returns.
    pub stop: Arc<AtomicBool>,
    /// Stop (as if interrupted) once this many steps are done; for tests of resuming.
    pub stop_after: Option<u64>,
    /// Show a progress bar (off in tests).
    pub progress: bool,
    /// Where the steps run. Checkpoints hold host tensors, so a run may continue on another
    /// backend than it started on.
    pub backend: crate::backend::BackendKind,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self { stop: Arc::new(AtomicBool::new(false)), stop_after: None, progress: false, backend: crate::backend::BackendKind::Cpu }
    }
}

/// What a run did.
#[derive(Debug)]
pub struct TrainSummary {
    pub run_dir: PathBuf,
    pub first_step: u64,
    pub steps_done: u64,
    pub interrupted: bool,
    pub last: Option<LogRow>,
    pub val_miou: Option<f64>,
    pub wall_s: f64,
}

/// The signals of the current model on `run.val_scenes` dev scenes of the training world,
/// through the same pipeline the CLI and the page use, on `device` (an inference device).
pub fn validate(
    model: &SegClip,
    model_config: &SegClipConfig,
    tokenizer_json: &[u8],
    config: &TrainConfig,
    device: &Device,
) -> Result<ValSignals, TrainError> {
    let inference = model.valid();
    let tokenizer = ClipTokenizer::from_bytes(tokenizer_json)?;
    let mut segmenter = Segmenter::new(inference, model_config.clone(), tokenizer, device.clone())?;
    segmenter.protocol.bg_thresh = config.run.val_bg_thresh;
    // The rule the exported file will carry (src/bin/segclip/export.rs).
    if config.loss.group_nouns_background {
        segmenter.protocol.background_prompts = crate::data::emoji::background_prompts();
    }
    let world = config.val_world();
    let dev = crate::data::world::DEV_START;
    let s = crate::eval::score_world(&mut segmenter, &world, Split::Train, dev..dev + config.run.val_scenes, |_| {})?;
    Ok(ValSignals {
        miou: s.pipeline.mean_iou().unwrap_or(0.0),
        miou_true_bg: s.true_background.mean_iou().unwrap_or(0.0),
        naming: s.naming_accuracy(),
        centers: s.centers_used,
        prompt_cos: s.prompt_cosine,
    })
}

/// The inference weights of a checkpoint: the reconstruction heads dropped.
pub fn inference_tensors(ck: &checkpoint::Checkpoint) -> std::collections::BTreeMap<String, format::HostTensor> {
    ck.model.iter().filter(|(k, _)| !k.starts_with("recon.")).map(|(k, v)| (k.clone(), v.clone())).collect()
}
