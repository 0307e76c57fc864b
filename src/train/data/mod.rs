//! Training batches: where samples come from (the shape or emoji world drawn on the fly, a JSONL
//! image-caption list, COCO captions), the reference augmentation (RandomResizedCrop, bicubic), tokens,
//! superpixel patch labels and the reconstruction masks, prepared by worker threads so the
//! training thread only computes.
//!
//! Every batch is a pure function of (seed, step): a resumed run sees exactly the batches the
//! uninterrupted run would have seen, with no loader state to checkpoint.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use image::imageops::FilterType;
use image::RgbImage;

mod nouns;
mod pairs;

use super::augment::ColorJitter;
use super::config::{DataSource, SilentBackground, TrainConfig};
use super::error::TrainError;
use super::superpixel_targets::patch_labels;
use super::superpixels::felzenszwalb;
use crate::data::emoji::{self, EmojiConfig};
use crate::data::rng::mix64;
use crate::data::{generate, generate_reshaped, SceneConfig, Shape, Split, SplitMix64};
use crate::model::SegClipConfig;
use crate::pipeline::decode;
use crate::pipeline::preprocess::normalise_into;
use crate::tokenizer::ClipTokenizer;
use nouns::tokenize_trimmed;
pub use nouns::NounPrompts;
pub use pairs::{read_coco, read_jsonl};

/// One micro-batch, ready for the model.
#[derive(Clone, Debug)]
pub struct Batch {
    /// Normalised images, planar [B, 3, S, S].
    pub images: Vec<f32>,
    pub batch: usize,
    pub size: usize,
    /// Token ids, each row padded to the longest in the batch.
    pub tokens: Vec<Vec<i64>>,
    pub captions: Vec<String>,
    /// Superpixel label of every patch [B][P] (when the superpixel loss is on).
    pub superpixels: Option<Vec<Vec<u32>>>,
    /// Visible patch indices of the masked reconstruction pass [B][K].
    pub keep: Vec<Vec<usize>>,
    /// The captions' nouns as prompts (when the group-noun term is on).
    pub nouns: Option<NounPrompts>,
}

/// Where images and captions come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// The shape world; consecutive samples are a scene and its `variants` reshaped copies.
    Shapes {
        scene: SceneConfig,
        pool: u64,
        shape_only: f32,
        variants: usize,
    },
    /// The emoji world (bundled atlas); a caption drawn uniformly from the scene's true ones.
    Emoji {
        scene: EmojiConfig,
        pool: u64,
    },
    /// (image path, caption) pairs from a JSONL file or a COCO captions file.
    Pairs(Arc<Vec<(PathBuf, String)>>),
}

impl Source {
    pub fn from_config(config: &TrainConfig) -> Result<Self, TrainError> {
        let d = &config.data;
        match d.source {
            DataSource::Shapes => {
                let scene =
                    SceneConfig { size: d.scene_size, min_objects: d.min_objects, max_objects: d.max_objects, ..SceneConfig::default() };
                scene.validate()?;
                Ok(Source::Shapes { scene, pool: d.pool, shape_only: d.shape_only_captions, variants: d.shape_variants })
            }
            DataSource::Emoji => Ok(Source::Emoji { scene: config.emoji_config(), pool: d.pool }),
            DataSource::Jsonl => Ok(Source::Pairs(Arc::new(read_jsonl(Path::new(&d.path))?))),
            DataSource::Coco => {
                let images = if d.images.is_empty() {
                    Path::new(&d.path).parent().unwrap_or(Path::new(".")).to_path_buf()
                } else {
                    PathBuf::from(&d.images)
                };
                Ok(Source::Pairs(Arc::new(read_coco(Path::new(&d.path), &images)?)))
            }
        }
    }
}

/// torchvision's RandomResizedCrop box: 10 tries at a random area share and log-uniform aspect
/// ratio, else the centre crop clamped to the ratio range. Returns (x, y, w, h).
pub fn random_resized_crop_box(
    width: usize,
    height: usize,
    scale: [f32; 2],
    ratio: [f32; 2],
    rng: &mut SplitMix64,
) -> (usize, usize, usize, usize) {
    let area = (width * height) as f32;
    let (lr0, lr1) = (ratio[0].ln(), ratio[1].ln());
    for _ in 0..10 {
        let target = area * rng.uniform(scale[0], scale[1].max(scale[0] + 1e-6));
        let aspect = rng.uniform(lr0, lr1.max(lr0 + 1e-6)).exp();
        let w = (target * aspect).sqrt().round() as usize;
        let h = (target / aspect).sqrt().round() as usize;
        if w > 0 && h > 0 && w <= width && h <= height {
            let x = rng.below(width - w + 1);
            let y = rng.below(height - h + 1);
            return (x, y, w, h);
        }
    }
    let in_ratio = width as f32 / height as f32;
    let (w, h) = if in_ratio < ratio[0] {
        (width, (width as f32 / ratio[0]).round() as usize)
    } else if in_ratio > ratio[1] {
        ((height as f32 * ratio[1]).round() as usize, height)
    } else {
        (width, height)
    };
    ((width - w) / 2, (height - h) / 2, w, h)
}

/// Produces the micro-batches of every step, in order, from worker threads.
pub struct Loader {
    receivers: Vec<Receiver<Result<Vec<Batch>, TrainError>>>,
    next: u64,
}

/// What a worker needs to build any step's batches.
#[derive(Clone)]
struct Recipe {
    source: Source,
    model: SegClipConfig,
    config: TrainConfig,
    tokenizer_json: Arc<Vec<u8>>,
}

impl Loader {
    /// Starts `config.data.workers` threads producing steps `first_step..`.
    pub fn start(config: &TrainConfig, model: &SegClipConfig, tokenizer_json: &[u8], first_step: u64) -> Result<Self, TrainError> {
        let source = Source::from_config(config)?;
        let recipe = Recipe { source, model: model.clone(), config: config.clone(), tokenizer_json: Arc::new(tokenizer_json.to_vec()) };
        // Fail here, not in a thread, on a bad tokenizer or an undecodable first image.
        recipe.step(first_step, &recipe.tokenizer()?)?;
        let workers = config.data.workers.max(1) as u64;
        let mut receivers = Vec::new();
        for w in 0..workers {
            let (tx, rx) = sync_channel(2);
            let recipe = recipe.clone();
            std::thread::Builder::new()
                .name(format!("segclip-data-{w}"))
                .spawn(move || {
                    let mut step = first_step + w;
                    // One tokenizer per worker: parsing tokenizer.json per step was wasted work.
                    let tokenizer = match recipe.tokenizer() {
                        Ok(t) => t,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    while tx.send(recipe.step(step, &tokenizer)).is_ok() {
                        step += workers;
                    }
                })
                .map_err(TrainError::Thread)?;
            receivers.push(rx);
        }
        Ok(Self { receivers, next: first_step })
    }

    /// The micro-batches of the next step.
    pub fn next_step(&mut self) -> Result<Vec<Batch>, TrainError> {
        let n = self.receivers.len() as u64;
        let rx = &self.receivers[((self.next) % n) as usize];
        self.next += 1;
        rx.recv().map_err(|_| TrainError::Internal("a data thread stopped"))?
    }
}

impl Recipe {
    fn tokenizer(&self) -> Result<ClipTokenizer, TrainError> {
        Ok(ClipTokenizer::from_bytes(&self.tokenizer_json)?)
    }

    fn step(&self, step: u64, tokenizer: &ClipTokenizer) -> Result<Vec<Batch>, TrainError> {
        (0..self.config.optim.accumulation).map(|m| self.micro_batch(step, m as u64, tokenizer)).collect()
    }

    fn micro_batch(&self, step: u64, micro: u64, tokenizer: &ClipTokenizer) -> Result<Batch, TrainError> {
        let c = &self.config;
        let b = c.optim.batch_size;
        let s = self.model.image_size;
        let mut rng = SplitMix64::new(mix64(c.run.seed ^ mix64(step.wrapping_mul(1_000_003) + micro)));
        let mut images = Vec::with_capacity(b * 3 * s * s);
        let mut captions = Vec::with_capacity(b);
        let mut superpixels = c.loss.superpixel.then(Vec::new);
        let mut keep = Vec::with_capacity(b);
        let jitter = ColorJitter::from_array(c.data.color_jitter);
        for i in 0..b {
            let global = (step * c.optim.accumulation as u64 + micro) * b as u64 + i as u64;
            let (img, caption) = self.sample(global, step < c.data.single_object_steps, &mut rng)?;
            let (x, y, w, h) =
                random_resized_crop_box(img.width() as usize, img.height() as usize, c.data.crop_scale, c.data.crop_ratio, &mut rng);
            let crop = image::imageops::crop_imm(&img, x as u32, y as u32, w as u32, h as u32).to_image();
            let mut crop = if (w, h) == (s, s) { crop } else { image::imageops::resize(&crop, s as u32, s as u32, FilterType::CatmullRom) };
            if !jitter.is_off() {
                jitter.apply(&mut crop, &mut rng);
            }
            if let Some(sp) = superpixels.as_mut() {
                let labels = felzenszwalb(crop.as_raw(), s, s, &c.loss.felzenszwalb)?;
                sp.push(patch_labels(&labels, s, s, self.model.patch_size)?);
            }
            let start = images.len();
            images.resize(start + 3 * s * s, 0.0);
            normalise_into(crop.as_raw().iter().map(|&v| v as f32), &mut images[start..]);
            captions.push(caption);
            // MAE masking: the class token always stays, so int((P + 1) * (1 - ratio)) tokens
            // keep int(...) - 1 patches (48 of 196 at the reference size).
            let p = self.model.num_patches();
            let k = ((((p + 1) as f64) * (1.0 - c.loss.mask_ratio)) as usize).saturating_sub(1).clamp(1, p);
            let mut order: Vec<usize> = (0..p).collect();
            rng.shuffle(&mut order);
            order.truncate(k);
            keep.push(order);
        }
        let tokens = tokenize_trimmed(&captions, tokenizer, c.data.context_length)?;
        let nouns = if c.loss.group_nouns_weight > 0.0 {
            NounPrompts::from_captions(
                &captions,
                c.loss.group_nouns_background,
                c.loss.silent_background == SilentBackground::Unknown,
                tokenizer,
                c.data.context_length,
            )?
        } else {
            None
        };
        Ok(Batch { images, batch: b, size: s, tokens, captions, superpixels, keep, nouns })
    }

    /// Sample `global` of the stream (RGB image and its caption).
    fn sample(&self, global: u64, single_object: bool, rng: &mut SplitMix64) -> Result<(RgbImage, String), TrainError> {
        match &self.source {
            Source::Shapes { scene, pool, shape_only, variants } => {
                // Consecutive samples form groups: a scene, then its `variants` reshaped copies.
                let group = 1 + *variants as u64;
                let (base, variant) = (global / group, global % group);
                let index = if *pool > 0 { base % pool } else { base };
                let one_object;
                let config = if single_object {
                    one_object = SceneConfig { min_objects: 1, max_objects: 1, ..scene.clone() };
                    &one_object
                } else {
                    scene
                };
                let sc = match variant {
                    0 => generate(Split::Train, index, config),
                    v => reshaped(index, v, config),
                };
                // captions[1] is the colour-free list of every object: shape words are the only
                // way to match it.
                let caption =
                    if sc.captions.len() > 1 && rng.chance(*shape_only) { sc.captions[1].clone() } else { rng.pick(&sc.captions).clone() };
                let img = RgbImage::from_raw(sc.width as u32, sc.height as u32, sc.image).ok_or(TrainError::Internal("scene buffer size"))?;
                Ok((img, caption))
            }
            Source::Emoji { scene, pool } => {
                let index = if *pool > 0 { global % pool } else { global };
                let one_object;
                let config = if single_object {
                    one_object = EmojiConfig { min_objects: 1, max_objects: 1, ..scene.clone() };
                    &one_object
                } else {
                    scene
                };
                let sc = emoji::generate(Split::Train, index, config);
                let caption = rng.pick(&sc.captions).clone();
                let img = RgbImage::from_raw(sc.width as u32, sc.height as u32, sc.image).ok_or(TrainError::Internal("scene buffer size"))?;
                Ok((img, caption))
            }
            Source::Pairs(pairs) => {
                // A fresh permutation every epoch, fixed by the seed.
                let n = pairs.len() as u64;
                let epoch = global / n;
                let mut order: Vec<usize> = (0..pairs.len()).collect();
                SplitMix64::new(mix64(self.config.run.seed ^ mix64(epoch + 1))).shuffle(&mut order);
                let (path, caption) = &pairs[order[(global % n) as usize]];
                let bytes = std::fs::read(path).map_err(TrainError::io(path))?;
                let rgb = decode::decode_image(&bytes, decode::DEFAULT_MAX_PIXELS)
                    .map_err(|source| TrainError::Decode { path: path.clone(), source })?;
                let img = RgbImage::from_raw(rgb.width as u32, rgb.height as u32, rgb.pixels).ok_or(TrainError::Internal("decoded buffer size"))?;
                // Stored images are pre-resized to a short side of the input size in the
                // reference; do the same here so the crop's scale range means the same.
                let s = self.model.image_size as f32;
                let short = img.width().min(img.height()) as f32;
                let img = if short > s * 1.5 {
                    let f = s / short;
                    image::imageops::resize(
                        &img,
                        ((img.width() as f32 * f).round() as u32).max(1),
                        ((img.height() as f32 * f).round() as u32).max(1),
                        FilterType::Triangle,
                    )
                } else {
                    img
                };
                Ok((img, caption.clone()))
            }
        }
    }
}

/// Variant `v` of training scene `index`: every object gets another shape, drawn from (index,
/// v) alone. A few draws are tried because a new shape can hide a neighbour; if all fail the
/// scene itself is used (rare; a duplicate in the batch, not an error).
fn reshaped(index: u64, v: u64, config: &SceneConfig) -> crate::data::Scene {
    let mut rng = SplitMix64::new(mix64(index ^ mix64(v.wrapping_mul(0x9e37_79b9))));
    for _ in 0..8 {
        let mut other_shape = |_: usize, old: Shape| {
            let k = rng.below(Shape::COUNT - 1);
            Shape::ALL[if k >= old.index() { k + 1 } else { k }]
        };
        if let Some(scene) = generate_reshaped(Split::Train, index, config, &mut other_shape) {
            return scene;
        }
    }
    generate(Split::Train, index, config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_object_curriculum_draws_one_object_scenes_until_its_step() {
        let overrides = ["data.single_object_steps=2", "data.max_objects=4", "data.pool=0"].map(String::from);
        let config = TrainConfig::parse(include_str!("../../../configs/smoke.toml"), &overrides).unwrap();
        let model = config.model.resolve().unwrap();
        let recipe = Recipe { source: Source::from_config(&config).unwrap(), model, config, tokenizer_json: Arc::new(Vec::new()) };
        let scene = SceneConfig { size: 32, min_objects: recipe.config.data.min_objects, max_objects: 4, ..SceneConfig::default() };
        let one = SceneConfig { min_objects: 1, max_objects: 1, ..scene.clone() };
        let mut multi = 0;
        for global in 0..16u64 {
            let (early, _) = recipe.sample(global, true, &mut SplitMix64::new(1)).unwrap();
            let expected = generate(Split::Train, global, &one);
            assert_eq!(expected.objects.len(), 1);
            assert_eq!(early.as_raw(), &expected.image, "scene {global} during the curriculum");
            let (late, _) = recipe.sample(global, false, &mut SplitMix64::new(1)).unwrap();
            let full = generate(Split::Train, global, &scene);
            assert_eq!(late.as_raw(), &full.image, "scene {global} after the curriculum");
            multi += (full.objects.len() > 1) as usize;
        }
        assert!(multi > 0, "after the curriculum some scenes hold several objects");
    }

    #[test]
    fn shape_variants_follow_their_scene_in_the_batch() {
        let overrides = ["data.shape_variants=3", "optim.batch_size=8", "data.pool=0"].map(String::from);
        let config = TrainConfig::parse(include_str!("../../../configs/smoke.toml"), &overrides).unwrap();
        let model = config.model.resolve().unwrap();
        let scene = SceneConfig {
            size: config.data.scene_size,
            min_objects: config.data.min_objects,
            max_objects: config.data.max_objects,
            ..SceneConfig::default()
        };
        let recipe = Recipe { source: Source::from_config(&config).unwrap(), model, config, tokenizer_json: Arc::new(Vec::new()) };
        let mut redrawn = 0;
        for global in 0..12u64 {
            let (img, _) = recipe.sample(global, false, &mut SplitMix64::new(1)).unwrap();
            let (base, v) = (global / 4, global % 4);
            let expected = if v == 0 { generate(Split::Train, base, &scene) } else { reshaped(base, v, &scene) };
            assert_eq!(img.as_raw(), &expected.image, "sample {global}");
            let original = generate(Split::Train, base, &scene);
            let colours = |s: &crate::data::Scene| s.objects.iter().map(|o| o.colour).collect::<Vec<_>>();
            assert_eq!(colours(&expected), colours(&original));
            if v > 0 && expected.image != original.image {
                assert!(expected.objects.iter().zip(&original.objects).all(|(a, b)| a.shape != b.shape), "sample {global}");
                redrawn += 1;
            }
        }
        assert!(redrawn >= 6, "only {redrawn} of 9 variants were redrawn");
        let bad = ["data.shape_variants=3", "optim.batch_size=6"].map(String::from);
        let e = TrainConfig::parse(include_str!("../../../configs/smoke.toml"), &bad).unwrap_err().to_string();
        assert!(e.contains("batch_size 6") && e.contains("multiple of 4"), "{e}");
    }

    #[test]
    fn crop_box_stays_inside_and_respects_scale() {
        let mut rng = SplitMix64::new(7);
        for _ in 0..500 {
            let (x, y, w, h) = random_resized_crop_box(120, 90, [0.5, 1.0], [0.75, 4.0 / 3.0], &mut rng);
            assert!(x + w <= 120 && y + h <= 90 && w > 0 && h > 0);
            let share = (w * h) as f32 / (120.0 * 90.0);
            assert!(share > 0.4 && share <= 1.0, "{share}");
        }
        // Impossible ratios fall back to the centre crop.
        let (x, y, w, h) = random_resized_crop_box(300, 10, [0.9, 1.0], [1.0, 1.0], &mut rng);
        assert_eq!((w, h), (10, 10));
        assert_eq!((x, y), (145, 0));
    }
}
