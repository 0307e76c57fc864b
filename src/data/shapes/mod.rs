//! The shape world: deterministic scenes of coloured shapes with pixel-exact ground truth and
//! true captions.
//!
//! Each [`Scene`] is an RGB image (square, [`SceneConfig::size`] pixels a side) showing 1 to 5
//! flat-shaded objects over a textured background, with:
//!
//! * `class_map`: per-pixel shape class (`u8`), indices into [`shape_classes`]:
//!   `0 background, 1 circle, 2 square, 3 triangle, 4 star, 5 heart, 6 hexagon, 7 ring, 8 cross`;
//! * `pair_map`: per-pixel colour+shape class (`u16`), indices into [`pair_labels`]:
//!   `0 background`, then `1 + colour_index * 8 + shape_index` ("red circle", "red square", ...);
//! * `instance_map`: per-pixel object id (`u8`): 0 background, `k` = `objects[k - 1]`;
//! * `objects`: one [`ObjectInfo`] per visible object (shape, colour, size word, pattern, visible
//!   bounding box and pixel count, ...), in drawing order;
//! * `captions`: several natural-language captions, every one of them true of the visible scene.
//!
//! The ground truth is exact: a pixel is labelled with object `k` if and only if object `k` is the
//! topmost object covering the pixel's centre, and the pixel's colour is object `k`'s colour (or
//! its pattern colour, [`Colour::pattern_rgb`]) plus at most [`OBJECT_NOISE`] of grey-level noise.
//! There is no anti-aliasing. Later objects are drawn over earlier ones; an object is only placed
//! if afterwards every object (itself included) keeps at least
//! `max(min_visible_pixels, min_visible_fraction * its full area)` visible pixels, so no object is
//! ever hidden, and masks, object lists and captions always describe the same set of objects.
//! Objects of the same colour never touch (they would merge into one blob).
//!
//! # Determinism and splits
//!
//! Scene `i` of split `s` is generated from [`scene_seed`]`(s, i)` =
//! `mix64((split_id << 48) | i)` (`split_id`: train 0, val 1, compositional 2; `i < 2^48`), so
//! splits use disjoint seed ranges, and a scene depends only on `(split, index, config)`.
//! Randomness comes from [`SplitMix64`] (integer only) and all geometry uses IEEE `+ - * / sqrt
//! floor` (no `sin`, `exp`, ... from the platform's libm), so the bytes are identical natively and
//! in wasm32 ([`dataset_digest`] hashes a range of scenes to check this; native release, native
//! debug and a wasm32 build run under node agree).
//!
//! # Compositional split
//!
//! [`HELD_OUT_PAIRS`] (16 of the 88 colour+shape pairs, 18%; two colours per shape, every colour
//! at least once) never appear in [`Split::Train`] or [`Split::Val`] scenes (hence never in their
//! captions). Every [`Split::Compositional`] scene contains at least one held-out pair (its first
//! object); its other objects are held-out pairs with probability 1/2 and seen pairs otherwise.
//!
//! | shape    | held-out colours |
//! |----------|------------------|
//! | circle   | green, pink      |
//! | square   | red, purple      |
//! | triangle | blue, white      |
//! | star     | orange, grey     |
//! | heart    | yellow, black    |
//! | hexagon  | brown, green     |
//! | ring     | blue, pink       |
//! | cross    | yellow, purple   |

use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

use super::background::{Background, BackgroundKind};
use super::error::DataError;
use super::rng::{sin_cos, Fnv1a, SplitMix64};

mod captions;
#[cfg(test)]
mod tests;
mod vocab;

use captions::make_captions;
pub use vocab::*;

// ------------------------------------------------------------------------------------------------
// Configuration and output

/// Grey-level noise amplitude on object pixels: every channel of an object pixel is within this
/// of [`Colour::rgb`] or [`Colour::pattern_rgb`].
pub const OBJECT_NOISE: u8 = 5;

/// Largest supported `max_objects`.
pub const MAX_OBJECTS: usize = 9;

/// Generation settings. `Default`: 224 px, 1-5 objects, 5 captions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SceneConfig {
    /// Image side in pixels (square images), at least 32.
    pub size: usize,
    /// Minimum number of objects, at least 1.
    pub min_objects: usize,
    /// Maximum number of objects, at most [`MAX_OBJECTS`]. The count is drawn uniformly from
    /// `min..=max`; an object that finds no valid place in 40 tries is replaced by a newly drawn
    /// one (other size, shape, ...). After 450 draws the scene keeps what it has, which can only
    /// happen with extreme settings (the tests check `min..=max` for the defaults).
    pub max_objects: usize,
    /// Number of captions per scene, at least 3 (fewer only if the scene cannot produce that many
    /// distinct true captions, which does not happen in practice for `<= 8`).
    pub num_captions: usize,
    /// An object must keep at least this many visible pixels...
    pub min_visible_pixels: u32,
    /// ...and at least this fraction of its full (unoccluded, uncropped) area.
    pub min_visible_fraction: f32,
}

impl Default for SceneConfig {
    fn default() -> Self {
        Self { size: 224, min_objects: 1, max_objects: 5, num_captions: 5, min_visible_pixels: 12, min_visible_fraction: 0.4 }
    }
}

impl SceneConfig {
    /// Default settings at another image size.
    pub fn with_size(size: usize) -> Self {
        Self { size, ..Self::default() }
    }

    /// Visible pixels an object with `full` pixels (unoccluded, uncropped) must keep.
    fn visibility_threshold(&self, full: u32) -> u32 {
        self.min_visible_pixels.max((self.min_visible_fraction * full as f32).ceil() as u32).max(1)
    }

    pub fn validate(&self) -> Result<(), DataError> {
        if self.size < 32 || self.size > 4096 {
            return Err(DataError::bad_value("size", self.size, "in 32..=4096"));
        }
        if self.min_objects < 1 || self.min_objects > self.max_objects || self.max_objects > MAX_OBJECTS {
            let found = format!("{}..={}", self.min_objects, self.max_objects);
            return Err(DataError::bad_value("min_objects..=max_objects", found, format!("within 1..={MAX_OBJECTS}, min <= max")));
        }
        if self.num_captions < 1 {
            return Err(DataError::bad_value("num_captions", self.num_captions, "at least 1"));
        }
        if !(0.0..=1.0).contains(&self.min_visible_fraction) {
            return Err(DataError::bad_value("min_visible_fraction", self.min_visible_fraction, "in [0, 1]"));
        }
        Ok(())
    }
}

/// A generated scene. All maps are row-major, `size * size` long.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scene {
    pub split: Split,
    pub index: u64,
    pub seed: u64,
    pub width: usize,
    pub height: usize,
    /// RGB, row-major, `3 * width * height` bytes.
    pub image: Vec<u8>,
    /// Shape class per pixel, indices into [`shape_classes`] (0 = background).
    pub class_map: Vec<u8>,
    /// Colour+shape class per pixel, indices into [`pair_labels`] (0 = background).
    pub pair_map: Vec<u16>,
    /// Object per pixel: 0 = background, `k` = `objects[k - 1]`.
    pub instance_map: Vec<u8>,
    pub objects: Vec<ObjectInfo>,
    pub background: BackgroundKind,
    pub captions: Vec<String>,
}

impl Scene {
    /// RGB of pixel `(x, y)`.
    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let i = 3 * (y * self.width + x);
        [self.image[i], self.image[i + 1], self.image[i + 2]]
    }

    /// A stable identifier such as `train_000042`.
    pub fn id(&self) -> String {
        scene_id(self.split, self.index)
    }
}

/// The identifier of scene `index` of `split`, e.g. `train_000042` (at least 6 digits).
pub fn scene_id(split: Split, index: u64) -> String {
    format!("{}_{index:06}", split.name())
}

/// Scenes `range` of `split`, lazily.
pub fn scenes(split: Split, range: std::ops::Range<u64>, config: &SceneConfig) -> impl Iterator<Item = Scene> + '_ {
    range.map(move |i| generate(split, i, config))
}

/// FNV-1a digest of scenes `range` of `split` (images, class maps, pair maps, captions): a cheap
/// way to check that two builds (e.g. native and wasm32) generate identical data.
pub fn dataset_digest(split: Split, range: std::ops::Range<u64>, config: &SceneConfig) -> u64 {
    let mut h = Fnv1a::new();
    let mut eat = |bytes: &[u8]| h.eat(bytes);
    for scene in scenes(split, range, config) {
        eat(&scene.image);
        eat(&scene.class_map);
        for p in &scene.pair_map {
            eat(&p.to_le_bytes());
        }
        for c in &scene.captions {
            eat(c.as_bytes());
            eat(&[0]);
        }
    }
    h.finish()
}

// ------------------------------------------------------------------------------------------------
// Generation

/// An object being placed.
#[derive(Clone, Debug)]
struct Placed {
    shape: Shape,
    colour: Colour,
    size: SizeClass,
    pattern: Pattern,
    cx: f32,
    cy: f32,
    r: f32,
    inv_r: f32,
    cos: f32,
    sin: f32,
    pat_cos: f32,
    pat_sin: f32,
    pat_period: f32,
    full: u32,
    threshold: u32,
    visible: u32,
}

impl Placed {
    fn covers(&self, px: i32, py: i32) -> bool {
        let dx = px as f32 + 0.5 - self.cx;
        let dy = py as f32 + 0.5 - self.cy;
        let u = (dx * self.cos + dy * self.sin) * self.inv_r;
        let v = (dy * self.cos - dx * self.sin) * self.inv_r;
        self.shape.contains(u, v)
    }

    /// Unclipped pixel bounds `[x0, x1) x [y0, y1)` of a disc that contains the shape.
    fn bounds(&self) -> (i32, i32, i32, i32) {
        let e = SHAPE_EXTENT * self.r + 1.0;
        ((self.cx - e).floor() as i32, (self.cx + e).ceil() as i32, (self.cy - e).floor() as i32, (self.cy + e).ceil() as i32)
    }

    /// Whether pixel (x, y) shows the pattern colour rather than the main colour.
    fn pattern_at(&self, x: usize, y: usize) -> bool {
        let dx = x as f32 + 0.5 - self.cx;
        let dy = y as f32 + 0.5 - self.cy;
        let pu = (dx * self.pat_cos + dy * self.pat_sin) / self.pat_period;
        match self.pattern {
            Pattern::Plain => false,
            Pattern::Striped => pu - pu.floor() < 0.4,
            Pattern::Dotted => {
                let pv = (dy * self.pat_cos - dx * self.pat_sin) / self.pat_period;
                let fu = pu - (pu + 0.5).floor();
                let fv = pv - (pv + 0.5).floor();
                fu * fu + fv * fv < 0.3 * 0.3
            }
        }
    }
}

/// Generates scene `index` of `split`. Deterministic: depends only on the arguments.
/// Panics if `config` is invalid (see [`SceneConfig::validate`]) or `index >= MAX_SCENE_INDEX`.
pub fn generate(split: Split, index: u64, config: &SceneConfig) -> Scene {
    build(split, index, config, None).expect("a scene without reshaping always builds")
}

/// Scene `index` of `split` with object `k` (drawing order) drawn as `reshape(k, its shape)`:
/// same place, size, colour, pattern, background, pixel noise and caption choices. Scenes that
/// differ only in their shapes are the hard negatives of contrastive training: only shape words
/// tell their captions apart (docs/training-probe.md: colour alone otherwise solves the task).
/// Rotations are clamped to the new shape's limit (hearts stay upright). `None` when a new
/// shape would leave an object less visible than `config`'s thresholds.
pub fn generate_reshaped(split: Split, index: u64, config: &SceneConfig, reshape: &mut dyn FnMut(usize, Shape) -> Shape) -> Option<Scene> {
    build(split, index, config, Some(reshape))
}

fn build(split: Split, index: u64, config: &SceneConfig, reshape: Option<&mut dyn FnMut(usize, Shape) -> Shape>) -> Option<Scene> {
    if let Err(e) = config.validate() {
        panic!("invalid SceneConfig: {e}");
    }
    let seed = scene_seed(split, index);
    let mut rng = SplitMix64::new(seed);
    let mut layout_rng = rng.fork();
    let mut bg_rng = rng.fork();
    let mut noise_rng = rng.fork();
    let mut caption_rng = rng.fork();

    let size = config.size;
    let n_pix = size * size;
    let mut owner = vec![0u8; n_pix];
    let mut placed = place_objects(split, config, &mut layout_rng, &mut owner);
    if let Some(reshape) = reshape {
        for (k, p) in placed.iter_mut().enumerate() {
            p.shape = reshape(k, p.shape);
            if let Some(limit) = p.shape.rotation_limit() {
                let angle = (p.sin as f64).atan2(p.cos as f64);
                // Only out-of-range rotations change, so an unchanged shape keeps its exact pixels.
                if angle.abs() > limit + 1e-6 {
                    let (s, c) = sin_cos(angle.clamp(-limit, limit));
                    (p.cos, p.sin) = (c as f32, s as f32);
                }
            }
        }
        repaint(config, &mut placed, &mut owner)?;
    }

    let object_rgbs: Vec<[f32; 3]> =
        placed.iter().flat_map(|p| [p.colour.rgb(), p.colour.pattern_rgb()]).map(|c| c.map(|v| v as f32)).collect();
    let background = Background::sample(&mut bg_rng, size as f32, &object_rgbs);

    // Render and label.
    let mut image = vec![0u8; 3 * n_pix];
    let mut class_map = vec![0u8; n_pix];
    let mut pair_map = vec![0u16; n_pix];
    let main_rgb: Vec<[u8; 3]> = placed.iter().map(|p| p.colour.rgb()).collect();
    let pat_rgb: Vec<[u8; 3]> = placed.iter().map(|p| p.colour.pattern_rgb()).collect();
    let class_of: Vec<u8> = placed.iter().map(|p| p.shape.class_index()).collect();
    let pair_of: Vec<u16> = placed.iter().map(|p| pair_index(p.colour, p.shape)).collect();
    let mut sums = vec![(0u64, 0u64, 0u32, [u32::MAX, u32::MAX, 0, 0]); placed.len()];
    let bg_noise = background.noise;
    for y in 0..size {
        for x in 0..size {
            let i = y * size + x;
            let o = owner[i] as usize;
            let rgb = if o == 0 {
                let c = background.colour_at(x as f32 + 0.5, y as f32 + 0.5);
                let n = noise_rng.uniform(-bg_noise, bg_noise);
                c.map(|v| (v + n + 0.5).floor().clamp(0.0, 255.0) as u8)
            } else {
                let k = o - 1;
                let p = &placed[k];
                class_map[i] = class_of[k];
                pair_map[i] = pair_of[k];
                let s = &mut sums[k];
                s.0 += x as u64;
                s.1 += y as u64;
                s.2 += 1;
                s.3 = [s.3[0].min(x as u32), s.3[1].min(y as u32), s.3[2].max(x as u32 + 1), s.3[3].max(y as u32 + 1)];
                let base = if p.pattern_at(x, y) { pat_rgb[k] } else { main_rgb[k] };
                let n = noise_rng.below(2 * OBJECT_NOISE as usize + 1) as i32 - OBJECT_NOISE as i32;
                base.map(|v| (v as i32 + n).clamp(0, 255) as u8)
            };
            image[3 * i..3 * i + 3].copy_from_slice(&rgb);
        }
    }

    let objects: Vec<ObjectInfo> = placed
        .iter()
        .zip(&sums)
        .enumerate()
        .map(|(k, (p, s))| {
            debug_assert_eq!(s.2, p.visible);
            ObjectInfo {
                instance: (k + 1) as u8,
                shape: p.shape,
                colour: p.colour,
                size: p.size,
                pattern: p.pattern,
                held_out: is_held_out(p.colour, p.shape),
                center: [p.cx, p.cy],
                radius: p.r,
                rotation: [p.cos, p.sin],
                bbox: s.3,
                visible_pixels: s.2,
                full_pixels: p.full,
                centroid: [(s.0 as f64 / s.2 as f64 + 0.5) as f32 / size as f32, (s.1 as f64 / s.2 as f64 + 0.5) as f32 / size as f32],
            }
        })
        .collect();

    let captions = make_captions(&objects, background.kind, config.num_captions, &mut caption_rng);

    Some(Scene {
        split,
        index,
        seed,
        width: size,
        height: size,
        image,
        class_map,
        pair_map,
        instance_map: owner,
        objects,
        background: background.kind,
        captions,
    })
}

/// Redraws `placed` in order into `owner` (later objects cover earlier ones, as when placing)
/// and recounts each object's pixels; `None` if one falls below its visibility threshold.
fn repaint(config: &SceneConfig, placed: &mut [Placed], owner: &mut [u8]) -> Option<()> {
    let side = config.size as i32;
    owner.fill(0);
    for (k, p) in placed.iter_mut().enumerate() {
        let (x0, x1, y0, y1) = p.bounds();
        let mut full = 0u32;
        for py in y0..y1 {
            for px in x0..x1 {
                if p.covers(px, py) {
                    full += 1;
                    if px >= 0 && py >= 0 && px < side && py < side {
                        owner[py as usize * config.size + px as usize] = (k + 1) as u8;
                    }
                }
            }
        }
        p.full = full;
        p.threshold = config.visibility_threshold(full);
    }
    let mut visible = vec![0u32; placed.len() + 1];
    for &o in owner.iter() {
        visible[o as usize] += 1;
    }
    for (k, p) in placed.iter_mut().enumerate() {
        p.visible = visible[k + 1];
        if p.visible < p.threshold {
            return None;
        }
    }
    Some(())
}

/// Samples the (colour, shape) of the `slot`-th object to place.
fn sample_pair(split: Split, slot: usize, rng: &mut SplitMix64) -> (Colour, Shape) {
    static SEEN: OnceLock<Vec<(Colour, Shape)>> = OnceLock::new();
    let seen = SEEN.get_or_init(|| {
        Colour::ALL.iter().flat_map(|&c| Shape::ALL.iter().map(move |&s| (c, s))).filter(|&(c, s)| !is_held_out(c, s)).collect()
    });
    let held_out = match split {
        Split::Train | Split::Val => false,
        Split::Compositional => slot == 0 || rng.chance(0.5),
    };
    if held_out {
        *rng.pick(&HELD_OUT_PAIRS)
    } else {
        *rng.pick(seen)
    }
}

fn place_objects(split: Split, config: &SceneConfig, rng: &mut SplitMix64, owner: &mut [u8]) -> Vec<Placed> {
    let size = config.size as f32;
    let side = config.size as i32;
    let target = rng.range_inclusive(config.min_objects, config.max_objects);
    let mut placed: Vec<Placed> = Vec::with_capacity(target);
    let mut slot = 0;
    while placed.len() < target.max(config.min_objects) && slot < 50 * MAX_OBJECTS {
        let (colour, shape) = sample_pair(split, placed.len(), rng);
        let size_class = *rng.pick(&SizeClass::ALL);
        let pattern = match rng.below(4) {
            0 => Pattern::Striped,
            1 => Pattern::Dotted,
            _ => Pattern::Plain,
        };
        let (lo, hi) = size_class.radius_range();
        let r = rng.uniform(lo, hi) * size;
        let (cos, sin) = match shape.rotation_limit() {
            None => rng.direction(),
            Some(limit) => {
                let (s, c) = sin_cos(rng.uniform(-1.0, 1.0) as f64 * limit);
                (c as f32, s as f32)
            }
        };
        let (pat_cos, pat_sin) = rng.direction();
        let pat_period = match pattern {
            Pattern::Striped => (0.5 * r).max(4.0),
            _ => (0.55 * r).max(5.0),
        };
        let tries = if placed.is_empty() { 400 } else { 40 };
        slot += 1;
        for _ in 0..tries {
            let margin = 0.9 * r;
            let mut p = Placed {
                shape,
                colour,
                size: size_class,
                pattern,
                cx: rng.uniform(margin, size - margin),
                cy: rng.uniform(margin, size - margin),
                r,
                inv_r: 1.0 / r,
                cos,
                sin,
                pat_cos,
                pat_sin,
                pat_period,
                full: 0,
                threshold: 0,
                visible: 0,
            };
            // Objects of one colour must not touch.
            let clash = placed.iter().any(|q| {
                q.colour == colour && {
                    let (dx, dy) = (q.cx - p.cx, q.cy - p.cy);
                    let gap = SHAPE_EXTENT * (q.r + p.r) + 2.0;
                    dx * dx + dy * dy < gap * gap
                }
            });
            if clash {
                continue;
            }
            let (x0, x1, y0, y1) = p.bounds();
            let mut lost = [0u32; MAX_OBJECTS + 1];
            let (mut full, mut in_frame) = (0u32, 0u32);
            for py in y0..y1 {
                for px in x0..x1 {
                    if p.covers(px, py) {
                        full += 1;
                        if px >= 0 && py >= 0 && px < side && py < side {
                            in_frame += 1;
                            lost[owner[py as usize * config.size + px as usize] as usize] += 1;
                        }
                    }
                }
            }
            let threshold = config.visibility_threshold(full);
            if in_frame < threshold || placed.iter().enumerate().any(|(k, q)| q.visible - lost[k + 1] < q.threshold) {
                continue;
            }
            let id = (placed.len() + 1) as u8;
            for py in y0.max(0)..y1.min(side) {
                for px in x0.max(0)..x1.min(side) {
                    if p.covers(px, py) {
                        owner[py as usize * config.size + px as usize] = id;
                    }
                }
            }
            for (k, q) in placed.iter_mut().enumerate() {
                q.visible -= lost[k + 1];
            }
            p.full = full;
            p.threshold = threshold;
            p.visible = in_frame;
            placed.push(p);
            break;
        }
    }
    placed
}
