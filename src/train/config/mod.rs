//! The training configuration: one TOML file (committed examples under `configs/`) plus
//! `--set section.key=value` overrides from the command line.

use serde::{Deserialize, Serialize};

mod validate;

use super::error::TrainError;
use super::superpixels::FelzenszwalbParams;
use crate::model::SegClipConfig;

/// Everything a run needs; saved inside every checkpoint so `--resume` continues the same run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub model: ModelSection,
    pub data: DataSection,
    pub optim: OptimSection,
    pub loss: LossSection,
    pub run: RunSection,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// `bundled`, `small`, `vit-b16` or `tiny` (ignored when `init` is a checkpoint that carries
    /// its own sizes).
    pub preset: String,
    /// `scratch`, or a checkpoint to start from: a SegCLIP release `.pt`, an OpenAI CLIP `.pt`,
    /// a Hugging Face CLIP `.safetensors`, or a segclip weights file.
    #[serde(default = "scratch")]
    pub init: String,
    /// Overrides of single config fields, e.g. `{ vision_layers = 6 }`.
    #[serde(default)]
    pub overrides: toml::Table,
    /// Initial contrastive scale (exp of the logit scale) of a model trained from scratch. CLIP
    /// trains from 1/0.07; a pretrained checkpoint keeps its own (100 for CLIP).
    #[serde(default)]
    pub logit_scale_init: Option<f64>,
}

fn scratch() -> String {
    "scratch".into()
}

/// Where training pairs come from (`data.source`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataSource {
    /// The emoji world (`crate::data::emoji`), drawn in memory.
    Emoji,
    /// The shape world (`crate::data::shapes`), drawn in memory. Configs and checkpoints written
    /// before the worlds had one name each say `synthetic`: the alias keeps them readable.
    #[serde(alias = "synthetic")]
    Shapes,
    /// Lines of `{"image": path, "caption": text}`.
    Jsonl,
    /// A COCO captions JSON; images under `data.images`.
    Coco,
}

impl DataSource {
    /// Whether the source is a world drawn in memory, shapes or emoji (and so has masks to
    /// validate on).
    pub fn is_world(self) -> bool {
        matches!(self, Self::Emoji | Self::Shapes)
    }
}

impl std::fmt::Display for DataSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Emoji => "emoji",
            Self::Shapes => "shapes",
            Self::Jsonl => "jsonl",
            Self::Coco => "coco",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// `emoji` (the emoji world, `crate::data::emoji`), `shapes` (the shape world), `jsonl`
    /// (lines of `{"image": path, "caption": text}`) or `coco` (a COCO captions JSON; images
    /// under `images`).
    pub source: DataSource,
    /// Emoji: the atlas art styles to draw glyphs from (empty: the training styles,
    /// `crate::data::emoji::TRAIN_STYLES`).
    #[serde(default)]
    pub styles: Vec<String>,
    /// The JSONL file or the COCO annotations file.
    #[serde(default)]
    pub path: String,
    /// COCO: the image folder (default: the annotation file's folder).
    #[serde(default)]
    pub images: String,
    /// Shapes and emoji: side of the rendered scenes (before the crop).
    #[serde(default = "default_scene_size")]
    pub scene_size: usize,
    #[serde(default = "one")]
    pub min_objects: usize,
    #[serde(default = "default_max_objects")]
    pub max_objects: usize,
    /// A curriculum (not in the reference; 0 = off): for the first this many steps every
    /// scene of the world holds one object, so a caption names exactly one thing.
    #[serde(default)]
    pub single_object_steps: u64,
    /// Hard negatives (not in the reference; 0 = off): every shape-world scene is followed in its
    /// batch by this many copies with other shapes in the same places, colours and background,
    /// so only shape words tell their captions apart. `batch_size` must be a multiple of
    /// `1 + shape_variants`.
    #[serde(default)]
    pub shape_variants: usize,
    /// Shapes and emoji: how many distinct training scenes to cycle through (0 = a fresh scene for every
    /// sample). A small pool makes a quick overfitting check.
    #[serde(default)]
    pub pool: u64,
    /// Shapes: probability that a sample's caption names only shapes ("a circle and a star"):
    /// colour words alone otherwise solve the contrastive task (docs/training-probe.md).
    #[serde(default = "default_shape_only")]
    pub shape_only_captions: f32,
    /// RandomResizedCrop area scale and aspect ratio ranges (reference: (0.5, 1), (3/4, 4/3)).
    #[serde(default = "default_crop_scale")]
    pub crop_scale: [f32; 2],
    #[serde(default = "default_crop_ratio")]
    pub crop_ratio: [f32; 2],
    /// Not in the reference (off: zeros): colour jitter strengths [brightness, contrast,
    /// saturation, hue] drawn per sample after the crop (src/train/augment.rs), so the model
    /// keys on shapes rather than on its training art styles' palettes.
    #[serde(default)]
    pub color_jitter: [f32; 4],
    /// Token context in training (reference: 32).
    #[serde(default = "default_context")]
    pub context_length: usize,
    /// Threads preparing batches (decode, augmentation, superpixels) off the training thread.
    #[serde(default = "one")]
    pub workers: usize,
}

fn default_scene_size() -> usize {
    96
}
fn one() -> usize {
    1
}
fn default_max_objects() -> usize {
    4
}
fn default_shape_only() -> f32 {
    0.5
}
fn default_crop_scale() -> [f32; 2] {
    [0.5, 1.0]
}
fn default_crop_ratio() -> [f32; 2] {
    [0.75, 4.0 / 3.0]
}
fn default_context() -> usize {
    32
}

/// `loss.silent_background`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SilentBackground {
    #[default]
    Negative,
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimSection {
    /// Optimiser steps (each of `batch_size * accumulation` samples).
    pub steps: u64,
    pub batch_size: usize,
    #[serde(default = "one")]
    pub accumulation: usize,
    /// Learning rate of the parts SegCLIP adds to CLIP (reference: 4e-3).
    pub lr_new: f64,
    /// Learning rate of the CLIP-initialised parts: stage 1, text tower, logit scale
    /// (reference: 4e-6; from scratch there is nothing to preserve, so the same as `lr_new`).
    pub lr_pretrained: f64,
    #[serde(default = "default_wd")]
    pub weight_decay: f64,
    #[serde(default = "default_betas")]
    pub betas: [f64; 2],
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Share of the steps spent in the linear warm-up (reference: 0.15), then cosine to 0.
    #[serde(default = "default_warmup")]
    pub warmup_fraction: f64,
    /// Not in the reference: when set, the schedule's first cycle (warm-up, then cosine to 0)
    /// spans only this many steps; the steps after it follow the schedule over all `steps` from
    /// where that stands, so the learning rate jumps back up: a warm restart (SGDR,
    /// https://arxiv.org/abs/1608.03983). It is what `segclip train --resume --extend-to` makes
    /// of a finished run, written so a fresh run can repeat it. 0: none (`--set optim.first_cycle=0`
    /// turns a config's off, e.g. for a shorter ablation run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_cycle: Option<u64>,
    /// Global gradient-norm clip (reference: 1.0; 0 = off).
    #[serde(default = "default_clip")]
    pub clip_norm: f64,
    /// Freeze the patch conv, positional/class embeddings, `ln_pre`, token and text positional
    /// embeddings, as the reference does when starting from CLIP.
    #[serde(default)]
    pub freeze_embeddings: bool,
}

fn default_wd() -> f64 {
    0.05
}
fn default_betas() -> [f64; 2] {
    [0.9, 0.98]
}
fn default_eps() -> f64 {
    1e-6
}
fn default_warmup() -> f64 {
    0.15
}
fn default_clip() -> f64 {
    1.0
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossSection {
    #[serde(default = "yes")]
    pub contrastive: bool,
    #[serde(default = "yes")]
    pub reconstruction: bool,
    #[serde(default = "yes")]
    pub superpixel: bool,
    #[serde(default = "unit")]
    pub reconstruction_weight: f64,
    /// The reference weighs the KL term 1 at its normalisation (by B * P * L), where it is tiny
    /// (docs/training-probe.md); a larger weight makes it matter.
    #[serde(default = "unit")]
    pub superpixel_weight: f64,
    /// Not in the reference (0 = off): weight of a term that keeps every center in use, log L
    /// minus the entropy of the batch's mean assignment over the L centers. Meant against the
    /// collapse onto one center seen in the shape-world runs (the superpixel KL is exactly 0 there);
    /// at weight 1 and lr 1e-3 it did not prevent it (weights/README.md).
    #[serde(default)]
    pub center_usage_weight: f64,
    /// Not in the reference (0 = off): weight of a group-noun contrastive term. The paper's
    /// losses only train the max-pooled image embedding; at inference each group embedding is
    /// named on its own, and from scratch the groups never learnt to be named (weights/README.md:
    /// 20-26% of object pixels). This term reads the classes a caption names (its nouns, through
    /// the world's words for them) and prompts each as "a photo of a {noun}."; an image scores a
    /// noun by its best-matching group, and the image's nouns must outscore the batch's other
    /// nouns (and the noun must pick out the images that name it) - GroupViT's multi-label
    /// prompts (arXiv 2202.11094, sec. 3.2) scored per group rather than on the pooled image.
    /// Needs the contrastive loss and a world with a caption vocabulary (`data.source = "emoji"`).
    #[serde(default)]
    pub group_nouns_weight: f64,
    /// Not in the reference (off by default): the backgrounds captions describe ("on a striped
    /// backdrop") join the group-noun targets, so some group of each image learns to match its
    /// background's words. The release decides background by a threshold on the labels' scores
    /// alone, which cannot tell a background group leaning to "cat" from the cat's group; a
    /// model trained with this carries the background prompts in its weights file and the
    /// pipeline lets them compete with the labels (src/pipeline/combine.rs `group_scores`).
    /// Known flaw, kept so the shipped model reproduces: a caption that says nothing of its
    /// background (most do not) counts every background target as not named, so a silent image
    /// on stripes is pushed away from "striped backdrop" like one on checks;
    /// `silent_background = "unknown"` masks those columns (no gain at 2400 steps, one seed:
    /// weights/README.md).
    /// Needs `group_nouns_weight` > 0.
    #[serde(default)]
    pub group_nouns_background: bool,
    /// With `group_nouns_background`: what a caption that says nothing of its background counts
    /// the background targets as. "negative" (the default, the shipped recipe): not named, like
    /// a class the caption does not name. "unknown": neither named nor a negative, since the
    /// image has some background the caption did not describe.
    #[serde(default)]
    pub silent_background: SilentBackground,
    /// Masked share of the tokens in the reconstruction pass (reference: 0.75).
    #[serde(default = "default_mask_ratio")]
    pub mask_ratio: f64,
    /// Gumbel-softmax temperature of the training assignment (reference: 0.9).
    #[serde(default = "default_tau")]
    pub gumbel_tau: f64,
    #[serde(default)]
    pub felzenszwalb: FelzenszwalbParams,
}

fn yes() -> bool {
    true
}
fn unit() -> f64 {
    1.0
}
fn default_mask_ratio() -> f64 {
    0.75
}
fn default_tau() -> f64 {
    0.9
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Folder for checkpoints, the CSV log and the plot.
    pub out: String,
    /// Steps between checkpoints (also written at the end and on Ctrl-C).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// Steps between validation runs (0 = only at the end).
    #[serde(default)]
    pub val_every: u64,
    /// Dev scenes of the training world scored at each validation.
    #[serde(default = "default_val_scenes")]
    pub val_scenes: u64,
    /// Background threshold used by validation.
    #[serde(default = "default_val_bg")]
    pub val_bg_thresh: f32,
}

fn default_seed() -> u64 {
    42
}
fn default_checkpoint_every() -> u64 {
    200
}
fn default_val_scenes() -> u64 {
    64
}
fn default_val_bg() -> f32 {
    0.5
}

/// The model sizes this run trains, from the preset and the overrides.
impl ModelSection {
    pub fn resolve(&self) -> Result<SegClipConfig, TrainError> {
        let base = match self.preset.as_str() {
            "bundled" => SegClipConfig::bundled(),
            "small" => SegClipConfig::small(),
            "vit-b16" => SegClipConfig::vit_b16(),
            "tiny" => SegClipConfig::tiny(),
            other => return Err(TrainError::config("model.preset", format!("unknown '{other}' (expected bundled, small, vit-b16 or tiny)"))),
        };
        if self.overrides.is_empty() {
            return Ok(base);
        }
        let overrides = |e: &dyn std::fmt::Display| TrainError::config("model.overrides", e.to_string());
        let mut table = toml::Table::try_from(&base).map_err(|e| overrides(&e))?;
        // Serialisation leaves the stem fields out at 0 (headers of stem-less files name no
        // stem); they still take an override.
        for optional in ["conv_stem", "patchify_stem"] {
            table.entry(optional).or_insert(toml::Value::Integer(0));
        }
        for (k, v) in &self.overrides {
            if !table.contains_key(k) {
                return Err(overrides(&format!("unknown model field '{k}'")));
            }
            table.insert(k.clone(), v.clone());
        }
        let config: SegClipConfig = table.try_into().map_err(|e| overrides(&e))?;
        config.validate().map_err(|e| overrides(&e))?;
        Ok(config)
    }
}

impl TrainConfig {
    /// Parses TOML text and applies `key.path=value` overrides (the value is TOML: `0.5`,
    /// `true`, `"text"`; a bare word is taken as a string).
    pub fn parse(text: &str, overrides: &[String]) -> Result<Self, TrainError> {
        let mut doc: toml::Table = text.parse()?;
        for o in overrides {
            let bad = |message: String| TrainError::Override { text: o.clone(), message };
            let (path, value) = o.split_once('=').ok_or_else(|| bad("expected key.path=value".into()))?;
            let value: toml::Value = match format!("v = {value}").parse::<toml::Table>() {
                Ok(mut t) => t.remove("v").unwrap(),
                Err(_) => toml::Value::String(value.to_string()),
            };
            let keys: Vec<&str> = path.trim().split('.').collect();
            let mut table = &mut doc;
            for k in &keys[..keys.len() - 1] {
                table = table
                    .entry(k.to_string())
                    .or_insert_with(|| toml::Value::Table(Default::default()))
                    .as_table_mut()
                    .ok_or_else(|| bad(format!("'{k}' is not a section")))?;
            }
            table.insert(keys[keys.len() - 1].to_string(), value);
        }
        let mut config: TrainConfig = doc.try_into()?;
        // `first_cycle = 0` (a config's restart turned off by --set) is no restart: stored as
        // none here, once, so the schedule and `--extend-to` need no case for it. Checkpoints
        // read their config through here too (src/train/checkpoint.rs).
        config.optim.first_cycle = config.optim.first_cycle.filter(|&c| c > 0);
        config.validate()?;
        Ok(config)
    }

    /// The world validation scores: the training world (emoji or shapes); for caption
    /// files, which have no masks of their own, the shape world.
    pub fn val_world(&self) -> crate::data::world::World {
        use crate::data::world::World;
        let d = &self.data;
        match d.source {
            DataSource::Emoji => World::Emoji { config: self.emoji_config(), atlas: None },
            _ => World::Shapes { config: crate::data::SceneConfig { size: d.scene_size, ..Default::default() }, pair_masks: false },
        }
    }

    /// The emoji world's settings from `data`.
    pub fn emoji_config(&self) -> crate::data::emoji::EmojiConfig {
        let d = &self.data;
        let mut c = crate::data::emoji::EmojiConfig {
            size: d.scene_size,
            min_objects: d.min_objects,
            max_objects: d.max_objects,
            ..Default::default()
        };
        if !d.styles.is_empty() {
            c.styles = d.styles.clone();
        }
        c
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("config serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[model]
preset = "tiny"
[data]
source = "shapes"
context_length = 16
[optim]
steps = 10
batch_size = 4
lr_new = 1e-3
lr_pretrained = 1e-3
[loss]
[run]
out = "runs/x"
"#;

    #[test]
    fn defaults_follow_the_reference() {
        let c = TrainConfig::parse(MINIMAL, &[]).unwrap();
        assert_eq!(c.optim.betas, [0.9, 0.98]);
        assert_eq!(c.optim.eps, 1e-6);
        assert_eq!(c.optim.weight_decay, 0.05);
        assert_eq!(c.optim.warmup_fraction, 0.15);
        assert_eq!(c.optim.clip_norm, 1.0);
        assert_eq!(c.loss.mask_ratio, 0.75);
        assert_eq!(c.data.crop_scale, [0.5, 1.0]);
        assert_eq!(c.run.seed, 42);
        // Round trip through the checkpoint's copy.
        assert_eq!(TrainConfig::parse(&c.to_toml(), &[]).unwrap(), c);
    }

    #[test]
    fn the_data_source_is_one_of_four_and_a_typo_is_named() {
        for (source, world) in [("emoji", true), ("shapes", true), ("jsonl", false), ("coco", false)] {
            let c = TrainConfig::parse(MINIMAL, &[format!("data.source=\"{source}\""), "data.path=\"x\"".into()]).unwrap();
            assert_eq!(c.data.source.to_string(), source);
            assert_eq!(c.data.source.is_world(), world);
        }
        // The shape world's old name, in configs and checkpoints written before it had one.
        let old = TrainConfig::parse(MINIMAL, &["data.source=\"synthetic\"".into()]).unwrap();
        assert_eq!(old.data.source, DataSource::Shapes);
        let err = TrainConfig::parse(MINIMAL, &["data.source=\"cocoa\"".into()]).unwrap_err().to_string();
        assert!(err.contains("data.source") && err.contains("cocoa") && err.contains("expected one of"), "{err}");
    }

    #[test]
    fn overrides_set_nested_values_and_bad_ones_are_named() {
        let c =
            TrainConfig::parse(MINIMAL, &["optim.steps=25".into(), "loss.superpixel=false".into(), "run.out=elsewhere".into()]).unwrap();
        assert_eq!(c.optim.steps, 25);
        assert!(!c.loss.superpixel);
        assert_eq!(c.run.out, "elsewhere");
        let e = TrainConfig::parse(MINIMAL, &["optim.stepz=3".into()]).unwrap_err().to_string();
        assert!(e.contains("stepz"), "{e}");
        let e = TrainConfig::parse(MINIMAL, &["optim.batch_size=1".into()]).unwrap_err().to_string();
        assert!(e.contains("batch_size"), "{e}");
        let e = TrainConfig::parse(MINIMAL, &["model.preset=huge".into()]).unwrap_err().to_string();
        assert!(e.contains("huge"), "{e}");
        let e = TrainConfig::parse(MINIMAL, &["model.overrides.vision_widht=3".into()]).unwrap_err().to_string();
        assert!(e.contains("vision_widht"), "{e}");
        let e = TrainConfig::parse(MINIMAL, &["data.color_jitter=[0.2, 0.2, 0.2, 0.7]".into()]).unwrap_err().to_string();
        assert!(e.contains("data.color_jitter") && e.contains("hue strength 0.7"), "{e}");
        let e = TrainConfig::parse(MINIMAL, &["loss.group_nouns_background=true".into()]).unwrap_err().to_string();
        assert!(e.contains("group_nouns_weight > 0"), "{e}");
        let e = TrainConfig::parse(MINIMAL, &["loss.silent_background=\"maybe\"".into()]).unwrap_err().to_string();
        assert!(e.contains("maybe"), "{e}");
    }

    #[test]
    fn committed_configs_parse() {
        for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/configs")).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            TrainConfig::parse(&text, &[]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }
}
