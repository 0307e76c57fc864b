//! The training room's error: every failure of `segclip train` and of the pieces it is made of
//! (config, data, checkpoints, recordings), each naming the file, field or value at fault.

use std::path::PathBuf;

use crate::data::DataError;
use crate::eval::EvalError;
use crate::pipeline::decode::DecodeError;
use crate::tokenizer::TokenizerError;
use crate::weights::format::WeightsError;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A file or folder could not be read or written.
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// A config value at odds with the rules or with another value; `field` is its TOML path
    /// (`optim.batch_size`) or section (`optim`).
    #[error("{field}: {message}")]
    Config { field: &'static str, message: String },
    /// A value outside its range.
    #[error("{field} {found} must be {expected}")]
    BadValue { field: &'static str, found: String, expected: String },
    /// A `--set key.path=value` override that cannot be applied.
    #[error("override '{text}': {message}")]
    Override { text: String, message: String },
    /// The config's TOML, or a value of the wrong type or name (serde lists the choices).
    #[error(transparent)]
    Toml(#[from] toml::de::Error),
    /// The world's settings.
    #[error("data: {0}")]
    Data(#[from] DataError),
    /// A training checkpoint that cannot be written or read back.
    #[error("{}: {message}", path.display())]
    Checkpoint { path: PathBuf, message: String },
    /// Weights that do not fit the model.
    #[error("{}: {source}", path.display())]
    Weights { path: PathBuf, source: WeightsError },
    /// The checkpoint named by `model.init` (read, recognised, imported or applied).
    #[error("model.init {}: {source}", path.display())]
    Init { path: PathBuf, source: Box<dyn std::error::Error + Send + Sync> },
    /// AdamW's moments in a checkpoint.
    #[error("optimizer state: {0}")]
    OptimizerState(String),
    /// A recorded reference step (`replay::Recording`), by where it was read from.
    #[error("{origin}: {message}")]
    Recording { origin: String, message: String },
    /// A JSON file that does not parse.
    #[error("{}: {source}", path.display())]
    Json { path: PathBuf, source: serde_json::Error },
    /// A line of a JSONL caption list.
    #[error("{} line {line}: {message}", path.display())]
    PairsLine { path: PathBuf, line: usize, message: String },
    /// A caption file (JSONL or COCO) without what it must hold.
    #[error("{}: {message}", path.display())]
    Pairs { path: PathBuf, message: String },
    #[error("{count} image files are missing, e.g. {examples}")]
    MissingImages { count: usize, examples: String },
    /// A training image that does not decode.
    #[error("{}: {source}", path.display())]
    Decode { path: PathBuf, source: DecodeError },
    /// An image file that cannot be written.
    #[error("{}: {source}", path.display())]
    Image { path: PathBuf, source: image::ImageError },
    /// A caption the tokenizer refuses.
    #[error("caption '{text}': {source}")]
    Caption { text: String, source: TokenizerError },
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    PatchLabels(#[from] super::superpixel_targets::PatchLabelsError),
    /// Validation's scoring.
    #[error(transparent)]
    Eval(#[from] EvalError),
    #[error("the tokenizer has {tokenizer} tokens but the model's vocabulary is {model}: set model.overrides.vocab_size")]
    VocabTooSmall { tokenizer: usize, model: usize },
    #[error("{} already holds a checkpoint (step {step}): resume it with --resume, or set run.out to another folder", dir.display())]
    RunExists { dir: PathBuf, step: String },
    #[error("{}: the run already finished all {steps} steps", path.display())]
    Finished { path: PathBuf, steps: u64 },
    #[error("{}: made with another tokenizer (sha256 {sha256})", path.display())]
    OtherTokenizer { path: PathBuf, sha256: String },
    #[error("step {step}: the loss is {loss} (contrastive {contrastive}, reconstruction {reconstruction}, superpixel {superpixel}); checkpoint of step {step} kept, lower the learning rate")]
    NonFiniteLoss { step: u64, loss: f64, contrastive: f64, reconstruction: f64, superpixel: f64 },
    #[error("no loss is on")]
    NoLoss,
    #[error("starting a data thread: {0}")]
    Thread(std::io::Error),
    /// A broken promise inside training (a batch without what its config asks for, a thread
    /// gone): a bug rather than bad input.
    #[error("{0}")]
    Internal(&'static str),
    #[error(transparent)]
    Pipeline(#[from] crate::pipeline::PipelineError),
    /// The String errors of rooms not typed yet (model tokens, backend, atomic file writes), as
    /// they read.
    #[error("{0}")]
    Other(String),
}

impl TrainError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| TrainError::Io { path, source }
    }

    pub(crate) fn bad_value(field: &'static str, found: impl ToString, expected: impl Into<String>) -> Self {
        TrainError::BadValue { field, found: found.to_string(), expected: expected.into() }
    }

    pub(crate) fn config(field: &'static str, message: impl Into<String>) -> Self {
        TrainError::Config { field, message: message.into() }
    }
}
