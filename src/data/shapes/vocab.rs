//! The shape world's vocabulary: shapes (with their point-in-shape tests), colours, sizes,
//! patterns, splits and the held-out colour+shape pairs of the compositional split.

use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

use super::super::rng::mix64;

/// The shape classes, in class-index order (`class_map` value = index + 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    Circle,
    Square,
    Triangle,
    Star,
    Heart,
    Hexagon,
    Ring,
    Cross,
}

/// Shape class names by class index (`0` is background); the values of [`Scene::class_map`].
pub const SHAPE_CLASSES: [&str; 9] = ["background", "circle", "square", "triangle", "star", "heart", "hexagon", "ring", "cross"];

impl Shape {
    pub const ALL: [Shape; 8] =
        [Shape::Circle, Shape::Square, Shape::Triangle, Shape::Star, Shape::Heart, Shape::Hexagon, Shape::Ring, Shape::Cross];
    pub const COUNT: usize = 8;

    /// Position in [`Shape::ALL`] (0-based).
    pub fn index(self) -> usize {
        self as usize
    }
    /// Value in [`Scene::class_map`] (1-based; 0 is background).
    pub fn class_index(self) -> u8 {
        self as u8 + 1
    }
    pub fn from_class_index(class: u8) -> Option<Shape> {
        (class as usize).checked_sub(1).and_then(|i| Shape::ALL.get(i).copied())
    }
    pub fn name(self) -> &'static str {
        SHAPE_CLASSES[self.index() + 1]
    }
    pub fn plural(self) -> &'static str {
        ["circles", "squares", "triangles", "stars", "hearts", "hexagons", "rings", "crosses"][self.index()]
    }
    /// Parses a singular or plural shape word.
    pub fn from_word(word: &str) -> Option<Shape> {
        Shape::ALL.into_iter().find(|s| s.name() == word || s.plural() == word)
    }

    /// Whether the point `(u, v)` in object coordinates (radius 1, `v` pointing down) is inside.
    /// Every shape fits in the disc of radius [`SHAPE_EXTENT`].
    pub(super) fn contains(self, u: f32, v: f32) -> bool {
        match self {
            Shape::Circle => u * u + v * v <= 1.0,
            Shape::Square => u.abs() <= 0.82 && v.abs() <= 0.82,
            Shape::Triangle => in_polygon(u, v, &TRIANGLE),
            Shape::Star => in_polygon(u, v, &STAR),
            Shape::Heart => {
                // (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0, scaled and centred into the unit disc.
                let x = 1.15 * u;
                let y = 0.118 - 1.15 * v;
                let a = x * x + y * y - 1.0;
                a * a * a - x * x * y * y * y <= 0.0
            }
            Shape::Hexagon => {
                let (au, av) = (u.abs(), v.abs());
                av <= 0.866 && 0.866 * au + 0.5 * av <= 0.866
            }
            Shape::Ring => {
                let r2 = u * u + v * v;
                (0.3025..=1.0).contains(&r2)
            }
            Shape::Cross => {
                let (au, av) = (u.abs(), v.abs());
                (au <= 0.3 && av <= 0.95) || (av <= 0.3 && au <= 0.95)
            }
        }
    }

    /// Hearts keep roughly upright (|rotation| <= 0.6 rad); circles and rings need none.
    pub(super) fn rotation_limit(self) -> Option<f64> {
        match self {
            Shape::Heart => Some(0.6),
            Shape::Circle | Shape::Ring => Some(0.0),
            _ => None,
        }
    }
}

/// Radius (in object units) of a disc containing every shape.
pub(super) const SHAPE_EXTENT: f32 = 1.17;

const TRIANGLE: [(f32, f32); 3] = [(0.0, -1.1), (0.952_628, 0.55), (-0.952_628, 0.55)];
const STAR_IN: f32 = 0.45;
const STAR: [(f32, f32); 10] = [
    (0.0, -1.0),
    (0.587_785 * STAR_IN, -0.809_017 * STAR_IN),
    (0.951_057, -0.309_017),
    (0.951_057 * STAR_IN, 0.309_017 * STAR_IN),
    (0.587_785, 0.809_017),
    (0.0, STAR_IN),
    (-0.587_785, 0.809_017),
    (-0.951_057 * STAR_IN, 0.309_017 * STAR_IN),
    (-0.951_057, -0.309_017),
    (-0.587_785 * STAR_IN, -0.809_017 * STAR_IN),
];

/// Even-odd point-in-polygon test.
fn in_polygon(x: f32, y: f32, verts: &[(f32, f32)]) -> bool {
    let mut inside = false;
    let mut j = verts.len() - 1;
    for i in 0..verts.len() {
        let (xi, yi) = verts[i];
        let (xj, yj) = verts[j];
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

/// Object colours, in colour-index order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Colour {
    Red,
    Orange,
    Yellow,
    Green,
    Blue,
    Purple,
    Pink,
    Brown,
    Black,
    White,
    Grey,
}

/// Colour names by colour index.
pub const COLOUR_NAMES: [&str; 11] = ["red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "grey"];

const COLOUR_RGB: [[u8; 3]; 11] = [
    [215, 25, 30],   // red
    [245, 130, 15],  // orange
    [245, 215, 30],  // yellow
    [40, 160, 50],   // green
    [30, 80, 215],   // blue
    [120, 45, 165],  // purple
    [245, 125, 185], // pink
    [125, 75, 35],   // brown
    [20, 20, 20],    // black
    [245, 245, 245], // white
    [130, 130, 130], // grey
];

impl Colour {
    pub const ALL: [Colour; 11] = [
        Colour::Red,
        Colour::Orange,
        Colour::Yellow,
        Colour::Green,
        Colour::Blue,
        Colour::Purple,
        Colour::Pink,
        Colour::Brown,
        Colour::Black,
        Colour::White,
        Colour::Grey,
    ];
    pub const COUNT: usize = 11;

    pub fn index(self) -> usize {
        self as usize
    }
    pub fn name(self) -> &'static str {
        COLOUR_NAMES[self.index()]
    }
    pub fn from_word(word: &str) -> Option<Colour> {
        Colour::ALL.into_iter().find(|c| c.name() == word)
    }
    /// The object's main colour.
    pub fn rgb(self) -> [u8; 3] {
        COLOUR_RGB[self.index()]
    }
    /// The colour of stripes and dots on a patterned object: the main colour moved 35% towards
    /// black (light colours) or white (dark colours), so the object keeps its colour name.
    pub fn pattern_rgb(self) -> [u8; 3] {
        let [r, g, b] = self.rgb();
        let luma = 299 * r as u32 + 587 * g as u32 + 114 * b as u32; // x1000
        let target = if luma > 140_000 { 0.0 } else { 255.0 };
        [r, g, b].map(|c| (c as f32 + 0.35 * (target - c as f32) + 0.5).floor() as u8)
    }
}

/// Size words. Object radius as a fraction of the image side: small 0.055-0.085, medium
/// 0.10-0.14, large 0.17-0.23 (the gaps keep the words unambiguous).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SizeClass {
    Small,
    Medium,
    Large,
}

impl SizeClass {
    pub const ALL: [SizeClass; 3] = [SizeClass::Small, SizeClass::Medium, SizeClass::Large];
    pub fn name(self) -> &'static str {
        ["small", "medium", "large"][self as usize]
    }
    pub fn from_word(word: &str) -> Option<SizeClass> {
        SizeClass::ALL.into_iter().find(|s| s.name() == word)
    }
    /// Radius range as a fraction of the image side.
    pub fn radius_range(self) -> (f32, f32) {
        [(0.055, 0.085), (0.10, 0.14), (0.17, 0.23)][self as usize]
    }
}

/// Surface pattern of an object (stripes/dots use [`Colour::pattern_rgb`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    Plain,
    Striped,
    Dotted,
}

impl Pattern {
    pub const ALL: [Pattern; 3] = [Pattern::Plain, Pattern::Striped, Pattern::Dotted];
    pub fn name(self) -> &'static str {
        ["plain", "striped", "dotted"][self as usize]
    }
    pub fn from_word(word: &str) -> Option<Pattern> {
        Pattern::ALL.into_iter().find(|p| p.name() == word)
    }
}

/// Dataset splits. Train and val share a distribution (no held-out pairs); compositional scenes
/// each contain at least one of [`HELD_OUT_PAIRS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Val,
    Compositional,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Compositional];
    pub fn name(self) -> &'static str {
        ["train", "val", "compositional"][self as usize]
    }
    pub fn from_name(name: &str) -> Option<Split> {
        Split::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// Scene indices must be below this (`2^48`), so that splits' seed ranges stay disjoint.
pub const MAX_SCENE_INDEX: u64 = 1 << 48;

/// The seed of scene `index` of `split`: `mix64((split_id << 48) | index)`. Distinct for every
/// `(split, index)` pair, since `mix64` is a bijection. Panics if `index >= MAX_SCENE_INDEX`.
pub fn scene_seed(split: Split, index: u64) -> u64 {
    assert!(index < MAX_SCENE_INDEX, "scene index {index} out of range");
    mix64(((split as u64) << 48) | index)
}

/// The colour+shape pairs that never occur in train/val scenes (see the module docs).
pub const HELD_OUT_PAIRS: [(Colour, Shape); 16] = [
    (Colour::Green, Shape::Circle),
    (Colour::Pink, Shape::Circle),
    (Colour::Red, Shape::Square),
    (Colour::Purple, Shape::Square),
    (Colour::Blue, Shape::Triangle),
    (Colour::White, Shape::Triangle),
    (Colour::Orange, Shape::Star),
    (Colour::Grey, Shape::Star),
    (Colour::Yellow, Shape::Heart),
    (Colour::Black, Shape::Heart),
    (Colour::Brown, Shape::Hexagon),
    (Colour::Green, Shape::Hexagon),
    (Colour::Blue, Shape::Ring),
    (Colour::Pink, Shape::Ring),
    (Colour::Yellow, Shape::Cross),
    (Colour::Purple, Shape::Cross),
];

/// Whether `colour shape` is one of [`HELD_OUT_PAIRS`].
pub fn is_held_out(colour: Colour, shape: Shape) -> bool {
    HELD_OUT_PAIRS.contains(&(colour, shape))
}

/// Shape class names by class index, `["background", "circle", ..., "cross"]`.
pub fn shape_classes() -> &'static [&'static str] {
    &SHAPE_CLASSES
}

/// Colour names by colour index, `["red", ..., "grey"]`.
pub fn colour_names() -> &'static [&'static str] {
    &COLOUR_NAMES
}

/// Colour+shape class labels by pair index: `"background"`, then `"<colour> <shape>"` at
/// [`pair_index`]`(colour, shape)` (colour-major: "red circle", "red square", ...). 89 labels.
pub fn pair_labels() -> &'static [String] {
    static LABELS: OnceLock<Vec<String>> = OnceLock::new();
    LABELS.get_or_init(|| {
        let mut labels = vec!["background".to_string()];
        for c in Colour::ALL {
            for s in Shape::ALL {
                labels.push(format!("{} {}", c.name(), s.name()));
            }
        }
        labels
    })
}

/// Index of `colour shape` in [`pair_labels`] (and value in [`Scene::pair_map`]).
pub fn pair_index(colour: Colour, shape: Shape) -> u16 {
    (1 + colour.index() * Shape::COUNT + shape.index()) as u16
}

/// Inverse of [`pair_index`] (`None` for 0 = background or out of range).
pub fn pair_from_index(index: u16) -> Option<(Colour, Shape)> {
    let i = (index as usize).checked_sub(1)?;
    Some((*Colour::ALL.get(i / Shape::COUNT)?, Shape::ALL[i % Shape::COUNT]))
}

/// One visible object of a scene.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObjectInfo {
    /// Value of this object's pixels in [`Scene::instance_map`] (1-based drawing order).
    pub instance: u8,
    pub shape: Shape,
    pub colour: Colour,
    pub size: SizeClass,
    pub pattern: Pattern,
    /// Whether `(colour, shape)` is one of [`HELD_OUT_PAIRS`].
    pub held_out: bool,
    /// Geometric centre, in pixels (x, y).
    pub center: [f32; 2],
    /// Radius in pixels (the shape fits in about 1.17 times this).
    pub radius: f32,
    /// Rotation as `(cos, sin)` (clockwise in image coordinates).
    pub rotation: [f32; 2],
    /// Bounding box of the visible pixels: `[x0, y0, x1, y1]`, `x1`/`y1` exclusive.
    pub bbox: [u32; 4],
    /// Number of visible pixels (equals this object's count in every label map).
    pub visible_pixels: u32,
    /// Area if nothing covered it and the image were unbounded.
    pub full_pixels: u32,
    /// Mean position of the visible pixels, normalised to `[0, 1]` (x, y).
    pub centroid: [f32; 2],
}

impl ObjectInfo {
    /// E.g. "red circle".
    pub fn label(&self) -> String {
        format!("{} {}", self.colour.name(), self.shape.name())
    }
}
