//! AdamW as the reference configures it (docs/segclip.md, "Training"): two learning-rate
//! groups, decoupled weight decay skipped for biases, frozen embeddings, a global gradient-norm
//! clip, gradient accumulation, and a linear warm-up then cosine schedule.
//!
//! Written over burn's module visitor/mapper rather than `burn::optim`: the groups and the decay
//! rule are decided per parameter *name*, and the moment estimates are saved into our own
//! checkpoint (with the step and the run's config) and restored bit for bit on `--resume`.

use std::collections::{BTreeMap, HashMap};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Gradients;
use burn::tensor::{Device, Tensor, TensorData};

use super::config::OptimSection;
use super::error::TrainError;
use crate::model::SegClip;
use crate::weights::format::HostTensor;

/// Which learning rate a parameter gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    /// Parts SegCLIP adds to CLIP: stage 3, the group module, `ln_post`, `proj`, the
    /// reconstruction heads (reference: 4e-3).
    New,
    /// CLIP-initialised parts: stage 1, the text tower, the logit scale (reference: 4e-6).
    Pretrained,
    /// Not trained: the patch conv, positional and class embeddings, `ln_pre`, the token and
    /// text positional embeddings (when `freeze_embeddings`).
    Frozen,
}

/// The group and whether decoupled weight decay applies, from a parameter's module path.
pub fn classify(name: &str, freeze_embeddings: bool) -> (Group, bool) {
    let frozen_prefixes = [
        "visual.conv1.",
        "visual.class_embedding",
        "visual.positional_embedding",
        "visual.ln_pre.",
        "text.token_embedding.",
        "text.positional_embedding",
    ];
    let group = if freeze_embeddings && frozen_prefixes.iter().any(|p| name.starts_with(p)) {
        Group::Frozen
    } else if ["visual.stem.", "visual.patchify.", "visual.group.", "visual.stage3.", "visual.ln_post.", "visual.proj", "recon."].iter().any(|p| name.starts_with(p)) {
        Group::New
    } else {
        Group::Pretrained
    };
    // The reference skips decay for names containing "bias"; burn calls LayerNorm's bias `beta`.
    let decay = !(name.contains("bias") || name.ends_with(".beta"));
    (group, decay)
}

/// ln 100: the largest stored logit scale (CLIP's temperature cap).
pub const MAX_LOGIT_SCALE_LN: f64 = 4.605_170_185_988_092;

/// Learning-rate factor at `step` (0-based) of `total`: linear warm-up over the first
/// `warmup_fraction` of the steps, then cosine to 0.
pub fn schedule(step: u64, total: u64, warmup_fraction: f64) -> f64 {
    let warmup = (total as f64 * warmup_fraction).round() as u64;
    if step < warmup {
        return (step + 1) as f64 / warmup as f64;
    }
    let span = (total - warmup).max(1) as f64;
    let t = ((step - warmup) as f64 / span).min(1.0);
    0.5 * (1.0 + (std::f64::consts::PI * t).cos())
}

/// The learning-rate factor of `config` at `step`: `schedule` over the first cycle while in it
/// (`first_cycle`), else over all the steps.
pub fn run_schedule(step: u64, config: &OptimSection) -> f64 {
    match config.first_cycle {
        Some(cycle) if step < cycle => schedule(step, cycle, config.warmup_fraction),
        _ => schedule(step, config.steps, config.warmup_fraction),
    }
}

/// Moment estimates of every trained parameter, flattened, on the inner (non-autodiff) device.
pub struct AdamW {
    pub config: OptimSection,
    /// Optimiser steps taken (for the bias corrections).
    pub t: u64,
    moments: HashMap<String, (Tensor<1>, Tensor<1>)>,
}

/// Gradients summed over micro-batches, by parameter name, flattened.
#[derive(Default)]
pub struct GradientSum {
    grads: BTreeMap<String, Tensor<1>>,
    micro_batches: usize,
}

struct PathTracker(Vec<String>);

impl PathTracker {
    fn enter(&mut self, name: &str) {
        self.0.push(name.to_string());
    }
    fn exit(&mut self) {
        self.0.pop();
    }
    fn path(&self) -> String {
        self.0.join(".")
    }
}

struct Collect<'a> {
    path: PathTracker,
    grads: &'a Gradients,
    sum: &'a mut GradientSum,
    freeze_embeddings: bool,
}

impl ModuleVisitor for Collect<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let name = self.path.path();
        if classify(&name, self.freeze_embeddings).0 == Group::Frozen {
            return;
        }
        if let Some(g) = param.val().grad(self.grads) {
            let n = g.shape().num_elements();
            let g = g.reshape([n]);
            let entry = self.sum.grads.remove(&name);
            self.sum.grads.insert(name, match entry {
                Some(acc) => acc + g,
                None => g,
            });
        }
    }
}

impl GradientSum {
    /// The summed gradient of parameter `name` (flattened), if it got one.
    pub fn get(&self, name: &str) -> Option<&Tensor<1>> {
        self.grads.get(name)
    }

    /// Gradients given by name (flattened), as one micro-batch's: how the parity test feeds
    /// PyTorch's gradients to the optimiser.
    pub fn from_tensors(grads: BTreeMap<String, Tensor<1>>) -> Self {
        Self { grads, micro_batches: 1 }
    }

    /// Names of the parameters with a gradient.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.grads.keys().map(String::as_str)
    }

    /// Adds the gradients of one backward pass over part of a micro-batch's loss (a micro-batch
    /// is differentiated in several: src/train/mod.rs `micro_batch_gradients`); then
    /// `count_micro_batch`.
    pub fn add_part(&mut self, model: &SegClip, grads: &Gradients, freeze_embeddings: bool) {
        model.visit(&mut Collect { path: PathTracker(Vec::new()), grads, sum: self, freeze_embeddings });
    }

    /// Counts one micro-batch whose parts were added with `add_part`.
    pub fn count_micro_batch(&mut self) {
        self.micro_batches += 1;
    }

    /// Global L2 norm of the averaged gradient.
    pub fn norm(&self) -> f64 {
        let parts: Vec<Tensor<1>> = self.grads.values().map(|g| g.clone().powf_scalar(2.0).sum()).collect();
        if parts.is_empty() {
            return 0.0;
        }
        let total: f32 = Tensor::cat(parts, 0).sum().into_scalar();
        (total as f64).sqrt() / self.micro_batches.max(1) as f64
    }
}

struct Update<'a> {
    path: PathTracker,
    optim: &'a mut AdamW,
    grads: &'a mut GradientSum,
    /// Multiplies every summed gradient: 1 / micro-batches, times the clip factor.
    grad_factor: f64,
    lr_new: f64,
    lr_pretrained: f64,
}

impl ModuleMapper for Update<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let name = self.path.path();
        let Some(grad) = self.grads.grads.remove(&name) else {
            return param;
        };
        let (group, decay) = classify(&name, self.optim.config.freeze_embeddings);
        let lr = match group {
            Group::New => self.lr_new,
            Group::Pretrained => self.lr_pretrained,
            Group::Frozen => return param,
        };
        let c = &self.optim.config;
        let (b1, b2, eps, wd) = (c.betas[0], c.betas[1], c.eps, c.weight_decay);
        let t = self.optim.t as i32;
        param.map(|tensor| {
            let dims = tensor.dims();
            let n = tensor.shape().num_elements();
            let require_grad = tensor.is_require_grad();
            let value = tensor.inner().reshape([n]);
            let g = grad * self.grad_factor;
            let (m, v) = match self.optim.moments.remove(&name) {
                Some((m, v)) => (m * b1 + g.clone() * (1.0 - b1), v * b2 + g.powf_scalar(2.0) * (1.0 - b2)),
                None => (g.clone() * (1.0 - b1), g.powf_scalar(2.0) * (1.0 - b2)),
            };
            // PyTorch's AdamW: p *= 1 - lr * wd; p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps).
            let bc1 = 1.0 - b1.powi(t);
            let bc2 = 1.0 - b2.powi(t);
            let denom = (v.clone().sqrt() / bc2.sqrt()) + eps;
            let mut updated = if decay { value * (1.0 - lr * wd) } else { value };
            updated = updated - (m.clone() / denom) * (lr / bc1);
            self.optim.moments.insert(name.clone(), (m, v));
            // The release clamps the stored temperature to ln 100 after every step, so the scale
            // can rest at its cap (docs/segclip.md, "Training").
            if name == "logit_scale" {
                updated = updated.clamp_max(MAX_LOGIT_SCALE_LN);
            }
            let updated = Tensor::from_inner(updated.reshape(dims));
            if require_grad {
                updated.require_grad()
            } else {
                updated
            }
        })
    }
}

impl AdamW {
    pub fn new(config: OptimSection) -> Self {
        Self { config, t: 0, moments: HashMap::new() }
    }

    /// One optimiser step at `step` of the schedule with the summed gradients; returns the
    /// gradient norm before clipping and the two learning rates used.
    pub fn step(&mut self, model: SegClip, mut grads: GradientSum, step: u64) -> (SegClip, StepInfo) {
        self.t += 1;
        let norm = grads.norm();
        let clip = if self.config.clip_norm > 0.0 && norm > self.config.clip_norm { self.config.clip_norm / (norm + 1e-6) } else { 1.0 };
        let factor = run_schedule(step, &self.config);
        let (lr_new, lr_pretrained) = (self.config.lr_new * factor, self.config.lr_pretrained * factor);
        let grad_factor = clip / grads.micro_batches.max(1) as f64;
        let mut update = Update { path: PathTracker(Vec::new()), optim: self, grads: &mut grads, grad_factor, lr_new, lr_pretrained };
        let model = model.map(&mut update);
        (model, StepInfo { grad_norm: norm, lr_new, lr_pretrained })
    }

    /// The moment estimates as host tensors (`m.<name>`, `v.<name>`), for checkpoints.
    pub fn state_tensors(&self) -> BTreeMap<String, HostTensor> {
        let mut out = BTreeMap::new();
        for (name, (m, v)) in &self.moments {
            for (prefix, t) in [("m", m), ("v", v)] {
                let data = t.clone().into_data().try_to_vec::<f32>().expect("f32 moments");
                out.insert(format!("{prefix}.{name}"), HostTensor::new(vec![data.len()], data));
            }
        }
        out
    }

    /// Restores moment estimates saved by [`AdamW::state_tensors`].
    pub fn load_state(&mut self, t: u64, tensors: &BTreeMap<String, HostTensor>, device: &Device) -> Result<(), TrainError> {
        self.t = t;
        self.moments.clear();
        for (key, m) in tensors.iter().filter(|(k, _)| k.starts_with("m.")) {
            let name = &key[2..];
            let v = tensors.get(&format!("v.{name}")).ok_or_else(|| TrainError::OptimizerState(format!("'v.{name}' is missing")))?;
            if v.data.len() != m.data.len() {
                return Err(TrainError::OptimizerState(format!("'m.{name}' and 'v.{name}' differ in size")));
            }
            let to = |h: &HostTensor| Tensor::<1>::from_data(TensorData::new(h.data.clone(), [h.data.len()]), device);
            self.moments.insert(name.to_string(), (to(m), to(v)));
        }
        Ok(())
    }
}

/// What a step did, for the log.
#[derive(Clone, Copy, Debug)]
pub struct StepInfo {
    pub grad_norm: f64,
    pub lr_new: f64,
    pub lr_pretrained: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_and_decay_follow_the_reference() {
        assert_eq!(classify("visual.stage1.0.attn.in_proj_weight", true), (Group::Pretrained, true));
        assert_eq!(classify("visual.stage1.0.attn.in_proj_bias", true), (Group::Pretrained, false));
        assert_eq!(classify("visual.group.semantic_center", true), (Group::New, true));
        assert_eq!(classify("visual.stage3.0.ln_1.beta", true), (Group::New, false));
        assert_eq!(classify("visual.stage3.0.ln_1.gamma", true), (Group::New, true));
        assert_eq!(classify("visual.proj", true), (Group::New, true));
        assert_eq!(classify("recon.decoder.mask_token", true), (Group::New, true));
        assert_eq!(classify("logit_scale", true), (Group::Pretrained, true));
        assert_eq!(classify("text.token_embedding.weight", true).0, Group::Frozen);
        assert_eq!(classify("visual.conv1.weight", true).0, Group::Frozen);
        assert_eq!(classify("visual.conv1.weight", false).0, Group::Pretrained);
    }

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        assert!((schedule(0, 100, 0.15) - 1.0 / 15.0).abs() < 1e-12);
        assert!((schedule(14, 100, 0.15) - 1.0).abs() < 1e-12);
        assert!((schedule(15, 100, 0.15) - 1.0).abs() < 1e-12);
        assert!(schedule(57, 100, 0.15) > 0.49 && schedule(57, 100, 0.15) < 0.51);
        assert!(schedule(99, 100, 0.15) < 0.001);
        assert_eq!(schedule(0, 10, 0.0), 1.0);
    }

    #[test]
    fn a_first_cycle_ends_at_zero_then_restarts_on_the_whole_schedule() {
        let config = |first_cycle| crate::train::TrainConfig::parse(
            include_str!("../../configs/smoke.toml"),
            &["optim.steps=120".to_string(), "optim.warmup_fraction=0.1".to_string(), format!("optim.first_cycle={first_cycle}")],
        );
        let c = config(80).unwrap().optim;
        for step in 0..80 {
            assert_eq!(run_schedule(step, &c), schedule(step, 80, 0.1), "step {step}");
        }
        assert!(run_schedule(79, &c) < 0.001);
        for step in 80..120 {
            assert_eq!(run_schedule(step, &c), schedule(step, 120, 0.1), "step {step}");
        }
        assert!(run_schedule(80, &c) > 0.2, "the restart");
        // 0: no restart, the plain schedule.
        let none = config(0).unwrap().optim;
        assert_eq!(none.first_cycle, None, "0 is read as no restart");
        for step in 0..120 {
            assert_eq!(run_schedule(step, &none), schedule(step, 120, 0.1), "step {step}");
        }
        for bad in [120, 200] {
            let e = config(bad).unwrap_err().to_string();
            assert!(e.contains("optim.first_cycle") && e.contains("1..120"), "{e}");
        }
    }
}
