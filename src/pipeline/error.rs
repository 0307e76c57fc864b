//! What can go wrong in the inference pipeline, each case naming the setting, label, file or
//! value at fault, so a front end can tell a bad setting from a bad file from a device failure.

use super::protocol::Kind;
use crate::labels::LabelError;
use crate::weights::format::WeightsError;

/// A setting's value that does not parse or is out of its range: the message names the value
/// and what is expected (`--refine ten`: "\"ten\" is not a whole number of iterations").
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadValue(pub String);

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A protocol setting out of its range, named by its flag.
    #[error("{flag}: {message}")]
    Setting { flag: &'static str, message: String },
    /// A setting the loaded model's kind does not use.
    #[error("{flag} applies to SegCLIP's groups; this weights file is a plain CLIP segmented densely")]
    NotForKind { flag: &'static str, kind: Kind },
    #[error(transparent)]
    Labels(#[from] LabelError),
    #[error("label \"{label}\" is too long for the text encoder: its prompt \"{prompt}\" exceeds {context} tokens")]
    LabelTooLong { label: String, prompt: String, context: usize },
    #[error("a stored embedding of \"{label}\" has {found} values, the model's have {expected}")]
    EmbeddingSize { label: String, found: usize, expected: usize },
    #[error(
        "the model's text vocabulary has {model} tokens but the CLIP tokenizer produces ids up to {tokenizer_max}: \
         these weights were not made for this tokenizer"
    )]
    Vocabulary { model: usize, tokenizer_max: usize },
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// A value the model cannot take (a token batch, a tensor of another dtype).
    #[error("{0}")]
    Model(String),
    #[error("reading back from the device: {0}")]
    Device(String),
    /// An image the pipeline cannot work on (its size, its superpixels); the message names the
    /// step.
    #[error("{0}")]
    Image(String),
    /// Features encoded by another kind of model than the one combining them.
    #[error("these image features were encoded by another kind of model; encode the image again")]
    FeaturesOfAnotherKind,
    /// A weights manifest (weights/manifest.json) that cannot be used, naming the file.
    #[error("{file}: {message}")]
    Manifest { file: String, message: String },
}
