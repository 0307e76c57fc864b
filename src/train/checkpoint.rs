//! Training checkpoints: model parameters (reconstruction heads included), AdamW moments, the
//! step and the run's full config, in one safetensors file written atomically (a temporary
//! file, flushed, then renamed over the old one), so a killed run loses at most the steps since
//! the last checkpoint and never leaves a half-written file behind.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use super::config::TrainConfig;
use super::error::TrainError;
use crate::model::SegClipConfig;
use crate::weights::format::HostTensor;

pub const FORMAT_NAME: &str = "segclip-checkpoint";
pub const FORMAT_VERSION: u32 = 1;

pub struct Checkpoint {
    /// Optimiser steps completed; training resumes at this step.
    pub step: u64,
    /// AdamW's step counter (bias corrections).
    pub adam_t: u64,
    pub config: TrainConfig,
    pub model_config: SegClipConfig,
    pub tokenizer_sha256: String,
    /// Model parameters by burn module path.
    pub model: BTreeMap<String, HostTensor>,
    /// AdamW moments (`m.<name>`, `v.<name>`).
    pub optim: BTreeMap<String, HostTensor>,
}

/// The checkpoint file of a run folder.
pub fn path_in(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoint.safetensors")
}

pub fn write(path: &Path, c: &Checkpoint) -> Result<(), TrainError> {
    let bad = |message: String| TrainError::Checkpoint { path: path.to_path_buf(), message };
    let mut entries: Vec<(String, &HostTensor)> = Vec::new();
    entries.extend(c.model.iter().map(|(k, v)| (format!("model.{k}"), v)));
    entries.extend(c.optim.iter().map(|(k, v)| (format!("optim.{k}"), v)));
    let bytes: Vec<Vec<u8>> = entries.iter().map(|(_, t)| t.data.iter().flat_map(|v| v.to_le_bytes()).collect()).collect();
    let views = entries
        .iter()
        .zip(&bytes)
        .map(|((name, t), b)| TensorView::new(Dtype::F32, t.shape.clone(), b).map(|v| (name.clone(), v)).map_err(|e| bad(format!("tensor {name}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let metadata: HashMap<String, String> = [
        ("format", FORMAT_NAME.to_string()),
        ("format_version", FORMAT_VERSION.to_string()),
        ("step", c.step.to_string()),
        ("adam_t", c.adam_t.to_string()),
        ("train_config", c.config.to_toml()),
        ("model_config", serde_json::to_string(&c.model_config).expect("config serialises")),
        ("tokenizer_sha256", c.tokenizer_sha256.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let data = safetensors::serialize(views, Some(metadata)).map_err(|e| bad(e.to_string()))?;
    crate::files::write_atomic(path, &data).map_err(TrainError::Other)
}

pub fn read(path: &Path) -> Result<Checkpoint, TrainError> {
    let bytes = std::fs::read(path).map_err(TrainError::io(path))?;
    let bad = |message: String| TrainError::Checkpoint { path: path.to_path_buf(), message };
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("not a readable checkpoint: truncated, damaged or another kind of file ({e})")))?;
    let meta = header.metadata().clone().unwrap_or_default();
    if meta.get("format").map(|s| s.as_str()) != Some(FORMAT_NAME) {
        return Err(bad(format!(
            "not a segclip training checkpoint (format {:?}, expected '{FORMAT_NAME}')",
            meta.get("format")
        )));
    }
    let version = meta.get("format_version").cloned().unwrap_or_default();
    if version != FORMAT_VERSION.to_string() {
        return Err(bad(format!("checkpoint format version '{version}', this build reads {FORMAT_VERSION}")));
    }
    let field = |name: &str| meta.get(name).cloned().ok_or_else(|| bad(format!("metadata field '{name}' is missing")));
    let number = |name: &str| field(name)?.parse::<u64>().map_err(|e| bad(format!("metadata field '{name}': {e}")));
    let config = TrainConfig::parse(&field("train_config")?, &[]).map_err(|e| bad(format!("train_config: {e}")))?;
    let model_config: SegClipConfig = serde_json::from_str(&field("model_config")?).map_err(|e| bad(format!("model_config: {e}")))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("truncated or damaged ({e})")))?;
    let mut model = BTreeMap::new();
    let mut optim = BTreeMap::new();
    for name in st.names() {
        let view = st.tensor(name).map_err(|e| bad(e.to_string()))?;
        if view.dtype() != Dtype::F32 {
            return Err(bad(format!("tensor {name}: dtype {:?}, expected F32", view.dtype())));
        }
        let data = crate::weights::format::floats_to_f32(Dtype::F32, view.data()).expect("F32 is a float dtype");
        let t = HostTensor::new(view.shape().to_vec(), data);
        if let Some(k) = name.strip_prefix("model.") {
            model.insert(k.to_string(), t);
        } else if let Some(k) = name.strip_prefix("optim.") {
            optim.insert(k.to_string(), t);
        } else {
            return Err(bad(format!("unexpected tensor '{name}'")));
        }
    }
    Ok(Checkpoint {
        step: number("step")?,
        adam_t: number("adam_t")?,
        config,
        model_config,
        tokenizer_sha256: field("tokenizer_sha256")?,
        model,
        optim,
    })
}
