//! A training step recorded by the PyTorch reference, for ours to redo with the same parameters
//! and the same random choices. Two writers share the layout: the gradient-parity fixture
//! (scripts/fixtures/make_train_step.py -> tests/fixtures/train_step/, checked by
//! tests/train_parity.rs) and the training rows of scripts/bench-compare
//! (scripts/bench/train_step.py `record`, timed by `segclip bench --train-record`).
//!
//! A recording is a JSON file (the model config in our field names, the batch size, the
//! optimiser and loss settings) and a safetensors file holding the initial parameters under the
//! release's names (`init.<key>`) and every random choice of the step as an input: `input.images`
//! [B, 3, S, S], `input.tokens` [B, T], `input.gumbel_uniform` [B, L, P],
//! `input.gumbel_uniform_recon` [B, L, K], `input.keep` [B, K], `input.superpixels` [B, P].

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};

use super::data::Batch;
use super::error::TrainError;
use super::{GivenNoise, TrainConfig};
use crate::model::{SegClip, SegClipConfig};
use crate::weights::keymap::release_to_ours;
use crate::weights::{model_io, HostTensor};

/// The step's settings that every training config needs but a recording does not state; the
/// recorded ones are laid over them (`Recording::train_config`).
const BASE_CONFIG: &str = include_str!("../../configs/smoke.toml");

pub struct Recording {
    pub json: serde_json::Value,
    /// Every tensor as f32 (the i64 inputs converted; ids and indices stay exact below 2^24).
    pub tensors: BTreeMap<String, HostTensor>,
    /// Where it was read from, for messages.
    pub origin: String,
}

impl Recording {
    /// Reads `json` and `tensors` (a safetensors file of f32 and i64 tensors).
    pub fn read(json: &Path, tensors: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(json).map_err(TrainError::io(json))?;
        let json_value: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| TrainError::Json { path: json.to_path_buf(), source })?;
        let bytes = std::fs::read(tensors).map_err(TrainError::io(tensors))?;
        let origin = tensors.display().to_string();
        let bad = |message: String| TrainError::Recording { origin: origin.clone(), message };
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
        let mut out = BTreeMap::new();
        for (name, view) in st.tensors() {
            let b = view.data();
            let data: Vec<f32> = match view.dtype() {
                safetensors::Dtype::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
                safetensors::Dtype::I64 => b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
                other => return Err(bad(format!("tensor '{name}' is {other:?}; expected F32 or I64"))),
            };
            out.insert(name, HostTensor::new(view.shape().to_vec(), data));
        }
        Ok(Self { json: json_value, tensors: out, origin })
    }

    /// An error about this recording.
    fn bad(&self, message: String) -> TrainError {
        TrainError::Recording { origin: self.origin.clone(), message }
    }

    pub fn get(&self, name: &str) -> Result<&HostTensor, TrainError> {
        self.tensors.get(name).ok_or_else(|| self.bad(format!("no tensor '{name}'")))
    }

    /// Rows of a 2-D tensor, each value converted by `f`.
    pub fn rows<T>(&self, name: &str, f: impl Fn(f32) -> T) -> Result<Vec<Vec<T>>, TrainError> {
        let t = self.get(name)?;
        if t.shape.len() != 2 {
            return Err(self.bad(format!("'{name}' has shape {:?}; expected 2 dimensions", t.shape)));
        }
        Ok(t.data.chunks(t.shape[1]).map(|r| r.iter().map(|&v| f(v)).collect()).collect())
    }

    pub fn tensor3(&self, name: &str, device: &Device) -> Result<Tensor<3>, TrainError> {
        let t = self.get(name)?;
        let [a, b, c] = t.shape[..] else {
            return Err(self.bad(format!("'{name}' has shape {:?}; expected 3 dimensions", t.shape)));
        };
        Ok(Tensor::from_data(TensorData::new(t.data.clone(), [a, b, c]), device))
    }

    pub fn model_config(&self) -> Result<SegClipConfig, TrainError> {
        serde_json::from_value(self.json["model"].clone()).map_err(|e| self.bad(format!("field 'model': {e}")))
    }

    /// The step's training config: the recording's optimiser and loss settings (one step at
    /// schedule factor 1, no warm-up, all three losses at weight 1, no center-usage term).
    pub fn train_config(&self) -> Result<TrainConfig, TrainError> {
        let o = &self.json["optim"];
        let l = &self.json["loss"];
        let number = |v: &serde_json::Value, field: &str| {
            v.as_f64().ok_or_else(|| self.bad(format!("field '{field}' is missing or not a number")))
        };
        let betas = o["betas"].as_array().and_then(|b| Some((b.first()?.as_f64()?, b.get(1)?.as_f64()?)));
        let (beta1, beta2) = betas.ok_or_else(|| self.bad("field 'optim.betas' must be two numbers".into()))?;
        // The parity fixture follows the release (embeddings frozen) and does not say so.
        let freeze = o["freeze_embeddings"].as_bool().unwrap_or(true);
        let overrides = vec![
            format!("optim.lr_new={}", number(&o["lr_new"], "optim.lr_new")?),
            format!("optim.lr_pretrained={}", number(&o["lr_pretrained"], "optim.lr_pretrained")?),
            format!("optim.weight_decay={}", number(&o["weight_decay"], "optim.weight_decay")?),
            format!("optim.eps={}", number(&o["eps"], "optim.eps")?),
            format!("optim.clip_norm={}", number(&o["clip_norm"], "optim.clip_norm")?),
            format!("optim.batch_size={}", number(&self.json["batch"], "batch")?),
            format!("optim.betas=[{beta1}, {beta2}]"),
            format!("optim.freeze_embeddings={freeze}"),
            "optim.accumulation=1".into(),
            "optim.warmup_fraction=0.0".into(),
            "optim.steps=1".into(),
            format!("loss.gumbel_tau={}", number(&l["gumbel_tau"], "loss.gumbel_tau")?),
            format!("loss.mask_ratio={}", number(&l["mask_ratio"], "loss.mask_ratio")?),
            "loss.contrastive=true".into(),
            "loss.reconstruction=true".into(),
            "loss.superpixel=true".into(),
            "loss.reconstruction_weight=1.0".into(),
            "loss.superpixel_weight=1.0".into(),
            "loss.center_usage_weight=0.0".into(),
            "run.out=\"unused\"".into(),
        ];
        TrainConfig::parse(BASE_CONFIG, &overrides).map_err(|e| self.bad(e.to_string()))
    }

    /// The tensors `kind.<release key>` (kind: init, grad, after) in our parameter names and
    /// layouts, each with its release key: every key goes through the importer's key map alone,
    /// so a key it does not map is an error rather than silently dropped.
    pub fn ours(&self, kind: &str, config: &SegClipConfig) -> Result<BTreeMap<String, (String, HostTensor)>, TrainError> {
        let prefix = format!("{kind}.");
        let mut out = BTreeMap::new();
        for (name, host) in &self.tensors {
            let Some(key) = name.strip_prefix(&prefix) else { continue };
            let mut unused = Vec::new();
            let mapped = release_to_ours(BTreeMap::from([(key.to_string(), host.clone())]), config, true, &mut unused)
                .map_err(|e| self.bad(format!("{key}: {e}")))?;
            if !unused.is_empty() {
                return Err(self.bad(format!("{key} has no place in our model ({:?})", unused)));
            }
            for (ours, t) in mapped {
                out.insert(ours, (key.to_string(), t));
            }
        }
        Ok(out)
    }

    /// Our model with the recording's initial parameters, on `device` (an autodiff device to
    /// train). Every parameter of ours must be in the recording.
    pub fn model(&self, config: &SegClipConfig, device: &Device) -> Result<SegClip, TrainError> {
        let init = self.ours("init", config)?;
        let mut model = SegClip::new_for_training(config, device);
        let tensors: BTreeMap<String, HostTensor> = init.into_iter().map(|(k, (_, t))| (k, t)).collect();
        let missing: Vec<String> = model_io::model_tensors(&model).into_keys().filter(|n| !tensors.contains_key(n)).collect();
        if !missing.is_empty() {
            return Err(self.bad(format!("lacks the parameters {missing:?}")));
        }
        model_io::apply_tensors(&mut model, &tensors, false).map_err(|e| self.bad(e.to_string()))?;
        Ok(model)
    }

    /// The batch the step trains on (captions are not recorded: the tokens are).
    pub fn batch(&self) -> Result<Batch, TrainError> {
        let images = self.get("input.images")?;
        let [batch, 3, size, _] = images.shape[..] else {
            return Err(self.bad(format!("input.images has shape {:?}; expected [B, 3, S, S]", images.shape)));
        };
        Ok(Batch {
            images: images.data.clone(),
            batch,
            size,
            tokens: self.rows("input.tokens", |v| v as i64)?,
            captions: Vec::new(),
            superpixels: Some(self.rows("input.superpixels", |v| v as u32)?),
            keep: self.rows("input.keep", |v| v as usize)?,
            nouns: None,
        })
    }

    /// The Gumbel noise of both passes, as drawn by the reference.
    pub fn noise(&self, device: &Device) -> Result<GivenNoise, TrainError> {
        Ok(GivenNoise { full: self.tensor3("input.gumbel_uniform", device)?, masked: self.tensor3("input.gumbel_uniform_recon", device)? })
    }
}
