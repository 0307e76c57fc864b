//! The emoji world: deterministic scenes of 1-4 emoji glyphs of 19 PASCAL VOC classes over
//! procedural backgrounds, with pixel-exact masks and true captions.
//!
//! Each [`EmojiScene`] is a square RGB image with:
//! * `class_map`: per-pixel class (`u8`), indices into [`CLASSES`] (`0` background, then the 19
//!   VOC classes that have an emoji, named as in VOC evaluation lists);
//! * `instance_map`: per-pixel object (`0` background, `k` = `objects[k - 1]`);
//! * `objects`: class, glyph, style, placement and visible pixels of every object, in drawing order;
//! * `captions`: every one true of the scene, naming each object's class (or a synonym people
//!   type: "plane", "bike", "couch", "tv", ...), counts, positions, and the background in words.
//!
//! Glyphs come from the atlas (`static/emoji/`, see [`atlas`]) in the art styles asked for
//! ([`EmojiConfig::styles`]); each is drawn at a random scale, position, horizontal flip and a
//! small rotation, with a mild per-object brightness/saturation change, by bilinear sampling of
//! its premultiplied texels. The mask is exact: a pixel belongs to object `k` if and only if `k`
//! is the topmost object whose sampled alpha there is at least 1/2. An object is kept only if
//! every object keeps `max(min_visible_pixels, min_visible_fraction * full area)` visible pixels.
//!
//! Scene `i` of split `s` depends only on `(s, i, config, atlas)`; randomness is
//! [`SplitMix64`] and the geometry uses `+ - * / floor` and [`sin_cos`], so the bytes are the
//! same natively and in wasm32 ([`dataset_digest`] checks it). Seeds are those of the shape world
//! ([`crate::data::shapes::scene_seed`]) mixed with a world tag, so the two worlds' scenes are
//! unrelated. There is no compositional split in this world.

pub mod atlas;
mod captions;
mod vocab;

use serde::{Deserialize, Serialize};

pub use atlas::{Atlas, AtlasError};
pub use captions::{background_in_caption, background_prompts};
pub use vocab::{class_words, classes_in_caption, EmojiObject, CLASSES, TRAIN_STYLES};

use super::background::{Background, BackgroundKind};
use super::error::DataError;
use super::rng::{mix64, sin_cos, Fnv1a, SplitMix64};
use super::shapes::{scene_seed, Split};

/// A world tag mixed into the shape world's seeds (ASCII "emoji").
const WORLD_TAG: u64 = 0x656d_6f6a_69;

/// Generation settings. `Default`: 96 px, 1-4 objects, the training styles, 5 captions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmojiConfig {
    /// Image side in pixels (square), at least 32.
    pub size: usize,
    /// Objects per scene, drawn uniformly from `min_objects..=max_objects` (1..=4 at most 8).
    pub min_objects: usize,
    pub max_objects: usize,
    /// Atlas styles glyphs are drawn from; empty means every style of the atlas.
    pub styles: Vec<String>,
    /// Captions per scene (distinct), at least 1.
    pub num_captions: usize,
    /// Every object keeps at least this share of its own full area visible.
    pub min_visible_fraction: f32,
    /// ... and at least this many pixels.
    pub min_visible_pixels: u32,
}

impl Default for EmojiConfig {
    fn default() -> Self {
        Self {
            size: 96,
            min_objects: 1,
            max_objects: 4,
            styles: TRAIN_STYLES.iter().map(|s| s.to_string()).collect(),
            num_captions: 5,
            min_visible_fraction: 0.6,
            min_visible_pixels: 40,
        }
    }
}

impl EmojiConfig {
    pub fn with_size(size: usize) -> Self {
        Self { size, ..Self::default() }
    }

    /// Errors name the field at fault, and a style the atlas lacks.
    pub fn validate(&self, atlas: &Atlas) -> Result<(), DataError> {
        if self.size < 32 {
            return Err(DataError::bad_value("size", self.size, "at least 32"));
        }
        if self.min_objects == 0 || self.min_objects > self.max_objects || self.max_objects > 8 {
            let found = format!("{}..={}", self.min_objects, self.max_objects);
            return Err(DataError::bad_value("min_objects..=max_objects", found, "within 1..=8, min <= max"));
        }
        if self.num_captions == 0 {
            return Err(DataError::bad_value("num_captions", self.num_captions, "at least 1"));
        }
        if !(0.0..=1.0).contains(&self.min_visible_fraction) {
            return Err(DataError::bad_value("min_visible_fraction", self.min_visible_fraction, "in [0, 1]"));
        }
        let names = atlas.style_names();
        for s in &self.styles {
            if !names.contains(&s.as_str()) {
                return Err(DataError::UnknownStyle { style: s.clone(), available: names.join(", ") });
            }
        }
        Ok(())
    }
}

/// A generated scene. Maps are row-major, `width * height` long.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmojiScene {
    pub split: Split,
    pub index: u64,
    pub width: usize,
    pub height: usize,
    /// RGB, row-major, `3 * width * height` bytes.
    pub image: Vec<u8>,
    /// Class per pixel, indices into [`CLASSES`] (0 = background).
    pub class_map: Vec<u8>,
    /// Object per pixel: 0 = background, `k` = `objects[k - 1]`.
    pub instance_map: Vec<u8>,
    pub objects: Vec<EmojiObject>,
    pub background: BackgroundKind,
    pub captions: Vec<String>,
}

/// The seed of emoji scene `index` of `split` (disjoint ranges per split, as in the shape world).
pub fn scene_seed_emoji(split: Split, index: u64) -> u64 {
    mix64(scene_seed(split, index) ^ WORLD_TAG)
}

/// An object being placed: its glyph and the inverse map from image to glyph texels.
#[derive(Clone, Debug)]
struct Placed {
    glyph: usize,
    class: u8,
    cx: f32,
    cy: f32,
    side: f32,
    rotation: f32,
    cos: f32,
    sin: f32,
    flipped: bool,
    /// Per-object colour change: saturation and brightness factors.
    saturation: f32,
    brightness: f32,
    full: u32,
    threshold: u32,
}

impl Placed {
    /// Half the diagonal of the rotated glyph square, plus a pixel: every covered pixel lies
    /// within this of the centre.
    fn reach(&self) -> f32 {
        0.7072 * self.side + 1.0
    }

    /// Pixel bounds `[x0, x1) x [y0, y1)` clipped to the image.
    fn bounds(&self, size: usize) -> (usize, usize, usize, usize) {
        let r = self.reach();
        let clip = |v: f32| (v.max(0.0) as usize).min(size);
        (clip((self.cx - r).floor()), clip((self.cx + r).ceil()), clip((self.cy - r).floor()), clip((self.cy + r).ceil()))
    }

    /// Premultiplied RGBA of the glyph at pixel (x, y) (its centre), transparent outside.
    fn sample(&self, atlas: &Atlas, x: usize, y: usize) -> [f32; 4] {
        let dx = x as f32 + 0.5 - self.cx;
        let dy = y as f32 + 0.5 - self.cy;
        // Rotate back by the object's angle into the glyph's frame, then scale to texels.
        let mut u = dx * self.cos + dy * self.sin;
        let v = dy * self.cos - dx * self.sin;
        if self.flipped {
            u = -u;
        }
        let c = atlas.cell as f32;
        atlas.sample(self.glyph, (u / self.side + 0.5) * c, (v / self.side + 0.5) * c)
    }

    /// Straight RGB (0..255) after the object's colour change, from a premultiplied sample.
    fn colour(&self, s: [f32; 4]) -> [f32; 3] {
        let a = s[3].max(1e-6);
        let rgb = [s[0] / a, s[1] / a, s[2] / a];
        let grey = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2];
        rgb.map(|v| ((grey + (v - grey) * self.saturation) * self.brightness).clamp(0.0, 1.0) * 255.0)
    }
}

/// Scene `index` of `split` drawn from the bundled atlas.
/// Panics if `config` is invalid for the bundled atlas or `split` is compositional.
pub fn generate(split: Split, index: u64, config: &EmojiConfig) -> EmojiScene {
    generate_with(Atlas::bundled(), split, index, config)
}

/// Scene `index` of `split` drawn from `atlas` (another art style, say). Panics if `config` is
/// invalid for `atlas` (see [`EmojiConfig::validate`]) or `split` is compositional.
pub fn generate_with(atlas: &Atlas, split: Split, index: u64, config: &EmojiConfig) -> EmojiScene {
    if let Err(e) = config.validate(atlas) {
        panic!("invalid EmojiConfig: {e}");
    }
    assert!(split != Split::Compositional, "the emoji world has no compositional split");
    let size = config.size;
    let n_pix = size * size;
    let mut rng = SplitMix64::new(scene_seed_emoji(split, index));
    let mut layout_rng = rng.fork();
    let mut bg_rng = rng.fork();
    let mut noise_rng = rng.fork();
    let mut caption_rng = rng.fork();

    // Place objects one by one; a placement that would hide too much of any object is redrawn.
    let want = layout_rng.range_inclusive(config.min_objects, config.max_objects);
    let (lo, hi) = match want {
        1 => (0.45, 0.80),
        2 => (0.35, 0.60),
        _ => (0.28, 0.50),
    };
    let mut placed: Vec<Placed> = Vec::new();
    let mut owner = vec![0u8; n_pix];
    let mut coverage = vec![0u8; n_pix];
    let mut draws = 0;
    while placed.len() < want && draws < 40 * want {
        draws += 1;
        let class = 1 + layout_rng.below(CLASSES.len() - 1) as u8;
        let choices = atlas.glyphs_of(class, &config.styles);
        let glyph = *layout_rng.pick(&choices);
        let side = layout_rng.uniform(lo, hi) * size as f32;
        // Keep the glyph's cell inside the image (the art has margins, so edges stay clear).
        let half = 0.5 * side;
        let cx = layout_rng.uniform(half, size as f32 - half);
        let cy = layout_rng.uniform(half, size as f32 - half);
        let rotation = layout_rng.uniform(-0.3, 0.3);
        let (sin, cos) = sin_cos(rotation as f64);
        let flipped = layout_rng.chance(0.5);
        let saturation = layout_rng.uniform(0.75, 1.25);
        let brightness = layout_rng.uniform(0.85, 1.15);
        let mut p =
            Placed { glyph, class, cx, cy, side, rotation, cos: cos as f32, sin: sin as f32, flipped, saturation, brightness, full: 0, threshold: 0 };
        // Full area: pixels whose sampled alpha reaches 1/2.
        let (x0, x1, y0, y1) = p.bounds(size);
        coverage.iter_mut().for_each(|c| *c = 0);
        let mut full = 0u32;
        for y in y0..y1 {
            for x in x0..x1 {
                if p.sample(atlas, x, y)[3] >= 0.5 {
                    coverage[y * size + x] = 1;
                    full += 1;
                }
            }
        }
        p.full = full;
        p.threshold = config.min_visible_pixels.max((config.min_visible_fraction * full as f32).ceil() as u32);
        if full < p.threshold {
            continue;
        }
        // Would every object keep enough of itself visible?
        let id = (placed.len() + 1) as u8;
        let mut visible = vec![0u32; placed.len() + 1];
        for i in 0..n_pix {
            let o = if coverage[i] == 1 { id } else { owner[i] };
            if o > 0 {
                visible[o as usize - 1] += 1;
            }
        }
        placed.push(p);
        if placed.iter().zip(&visible).all(|(q, &v)| v >= q.threshold) {
            for i in 0..n_pix {
                if coverage[i] == 1 {
                    owner[i] = id;
                }
            }
        } else {
            placed.pop();
        }
    }

    let object_rgbs: Vec<[f32; 3]> = placed.iter().map(|p| atlas.glyphs[p.glyph].mean_rgb).collect();
    let background = Background::sample(&mut bg_rng, size as f32, &object_rgbs);

    // Background, then each glyph composited over it in drawing order.
    let mut canvas = vec![[0f32; 3]; n_pix];
    for y in 0..size {
        for x in 0..size {
            let c = background.colour_at(x as f32 + 0.5, y as f32 + 0.5);
            let n = noise_rng.uniform(-background.noise, background.noise);
            canvas[y * size + x] = c.map(|v| v + n);
        }
    }
    for p in &placed {
        let (x0, x1, y0, y1) = p.bounds(size);
        for y in y0..y1 {
            for x in x0..x1 {
                let s = p.sample(atlas, x, y);
                if s[3] <= 0.0 {
                    continue;
                }
                let rgb = p.colour(s);
                let px = &mut canvas[y * size + x];
                for k in 0..3 {
                    px[k] = px[k] * (1.0 - s[3]) + rgb[k] * s[3];
                }
            }
        }
    }
    let mut image = vec![0u8; 3 * n_pix];
    for (i, px) in canvas.iter().enumerate() {
        for k in 0..3 {
            image[3 * i + k] = (px[k] + 0.5).floor().clamp(0.0, 255.0) as u8;
        }
    }

    let mut class_map = vec![0u8; n_pix];
    let mut stats = vec![(0u64, 0u64, 0u32, [u32::MAX, u32::MAX, 0u32, 0u32]); placed.len()];
    for y in 0..size {
        for x in 0..size {
            let o = owner[y * size + x] as usize;
            if o > 0 {
                class_map[y * size + x] = placed[o - 1].class;
                let s = &mut stats[o - 1];
                s.0 += x as u64;
                s.1 += y as u64;
                s.2 += 1;
                s.3 = [s.3[0].min(x as u32), s.3[1].min(y as u32), s.3[2].max(x as u32 + 1), s.3[3].max(y as u32 + 1)];
            }
        }
    }
    let objects: Vec<EmojiObject> = placed
        .iter()
        .zip(&stats)
        .enumerate()
        .map(|(k, (p, s))| EmojiObject {
            instance: (k + 1) as u8,
            class: p.class,
            style: atlas.glyphs[p.glyph].style.clone(),
            codepoint: atlas.glyphs[p.glyph].codepoint.clone(),
            center: (p.cx, p.cy),
            side: p.side,
            rotation: p.rotation,
            flipped: p.flipped,
            full_pixels: p.full,
            visible_pixels: s.2,
            bbox: s.3,
            centroid: ((s.0 as f32 / s.2 as f32 + 0.5) / size as f32, (s.1 as f32 / s.2 as f32 + 0.5) / size as f32),
        })
        .collect();
    let captions = captions::make_captions(&objects, background.kind, config.num_captions, &mut caption_rng);
    EmojiScene {
        split,
        index,
        width: size,
        height: size,
        image,
        class_map,
        instance_map: owner,
        objects,
        background: background.kind,
        captions,
    }
}

/// FNV-1a digest of scenes `range` of `split` (images, class maps, captions): checks that two
/// builds (native and wasm32) draw identical scenes.
pub fn dataset_digest(split: Split, range: std::ops::Range<u64>, config: &EmojiConfig) -> u64 {
    let mut h = Fnv1a::new();
    let mut eat = |bytes: &[u8]| h.eat(bytes);
    for i in range {
        let scene = generate(split, i, config);
        eat(&scene.image);
        eat(&scene.class_map);
        for c in &scene.captions {
            eat(c.as_bytes());
            eat(&[0]);
        }
    }
    h.finish()
}

#[cfg(test)]
mod tests;
