//! The emoji world's vocabulary: its classes (named as in VOC evaluation lists), the words people
//! type for them, the atlas styles it trains on, and what a scene records of each object.

use serde::{Deserialize, Serialize};

/// Class names by class index (`0` is background): the 19 PASCAL VOC classes that have an emoji
/// (no emoji shows a dining table), spelled as in VOC evaluation class lists.
pub const CLASSES: [&str; 20] = [
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "dog",
    "horse",
    "motorbike",
    "person",
    "potted plant",
    "sheep",
    "sofa",
    "train",
    "tv monitor",
];

/// The atlas styles the bundled model trains on. The atlas's other styles (OpenMoji) are held
/// out, so a scene drawn in them measures how the model carries over to unseen art.
pub const TRAIN_STYLES: [&str; 2] = ["google", "twitter"];

/// One visible object of a scene.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmojiObject {
    /// Value in `instance_map`.
    pub instance: u8,
    /// Index into [`CLASSES`].
    pub class: u8,
    pub style: String,
    pub codepoint: String,
    /// Centre (pixels) and drawn glyph side (pixels).
    pub center: (f32, f32),
    pub side: f32,
    /// Rotation in radians (the glyph is drawn turned by this angle) and horizontal flip.
    pub rotation: f32,
    pub flipped: bool,
    /// Pixels it covers when drawn alone, and pixels left visible in the scene.
    pub full_pixels: u32,
    pub visible_pixels: u32,
    /// Visible bounding box `[x0, y0, x1, y1)` and centroid of the visible pixels.
    pub bbox: [u32; 4],
    pub centroid: (f32, f32),
}

impl EmojiObject {
    pub fn class_name(&self) -> &'static str {
        CLASSES[self.class as usize]
    }
}

/// (singular, plural) words for each class, by class index; the VOC name comes first.
pub fn class_words(class: u8) -> &'static [(&'static str, &'static str)] {
    match CLASSES[class as usize] {
        "aeroplane" => &[("aeroplane", "aeroplanes"), ("airplane", "airplanes"), ("plane", "planes")],
        "bicycle" => &[("bicycle", "bicycles"), ("bike", "bikes")],
        "bird" => &[("bird", "birds")],
        "boat" => &[("boat", "boats"), ("ship", "ships")],
        "bottle" => &[("bottle", "bottles")],
        "bus" => &[("bus", "buses")],
        "car" => &[("car", "cars")],
        "cat" => &[("cat", "cats"), ("kitty", "kitties")],
        "chair" => &[("chair", "chairs")],
        "cow" => &[("cow", "cows")],
        "dog" => &[("dog", "dogs"), ("puppy", "puppies")],
        "horse" => &[("horse", "horses")],
        "motorbike" => &[("motorbike", "motorbikes"), ("motorcycle", "motorcycles")],
        "person" => &[("person", "people"), ("human", "humans")],
        "potted plant" => &[("potted plant", "potted plants"), ("plant", "plants"), ("houseplant", "houseplants")],
        "sheep" => &[("sheep", "sheep")],
        "sofa" => &[("sofa", "sofas"), ("couch", "couches")],
        "train" => &[("train", "trains")],
        "tv monitor" => &[("tv monitor", "tv monitors"), ("tv", "tvs"), ("television", "televisions"), ("monitor", "monitors")],
        _ => &[("thing", "things")],
    }
}
