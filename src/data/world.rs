//! One face for the two worlds (shapes and emoji), so evaluation, validation, the VOC writer and training
//! draw labelled samples without caring which world they come from.

use std::sync::Arc;

use super::emoji::{self, Atlas, EmojiConfig};
use super::error::DataError;
use super::shapes::{self, pair_labels, shape_classes, SceneConfig, Split};

/// The first index of the dev scenes: `train`-split scenes from 2^47 on, which no training run
/// reaches (training draws indices from 0 up, one per sample). Validation during training scores
/// these, so recipes are compared without looking at `val`.
pub const DEV_START: u64 = 1 << 47;

/// A world (shapes or emoji) with its settings.
#[derive(Clone, Debug)]
pub enum World {
    /// The shape scenes; `pair_masks` labels colour+shape pairs instead of shapes.
    Shapes { config: SceneConfig, pair_masks: bool },
    /// The emoji scenes, drawn from `atlas` (the bundled one when `None`).
    Emoji { config: EmojiConfig, atlas: Option<Arc<Atlas>> },
}

/// One labelled sample of a world.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelledScene {
    /// e.g. `val_000042`.
    pub id: String,
    pub width: usize,
    pub height: usize,
    /// RGB, row-major.
    pub image: Vec<u8>,
    /// Class per pixel, indices into [`World::classes`] (0 = background).
    pub truth: Vec<u8>,
    pub captions: Vec<String>,
    /// The scene's objects and background as JSON (written beside VOC exports).
    pub objects: serde_json::Value,
}

impl World {
    /// The emoji world at `size` px with the bundled atlas and the training styles.
    pub fn emoji(size: usize) -> World {
        World::Emoji { config: EmojiConfig::with_size(size), atlas: None }
    }

    pub fn atlas(&self) -> Option<&Atlas> {
        match self {
            World::Emoji { atlas: Some(a), .. } => Some(a),
            World::Emoji { atlas: None, .. } => Some(Atlas::bundled()),
            World::Shapes { .. } => None,
        }
    }

    /// Checks the settings (and, for the emoji world, the styles against the atlas).
    pub fn validate(&self) -> Result<(), DataError> {
        match self {
            World::Shapes { config, .. } => config.validate(),
            World::Emoji { config, .. } => config.validate(self.atlas().expect("emoji world has an atlas")),
        }
    }

    /// Class names, background first.
    pub fn classes(&self) -> Vec<String> {
        match self {
            World::Shapes { pair_masks: true, .. } => pair_labels().to_vec(),
            World::Shapes { pair_masks: false, .. } => shape_classes().iter().map(|s| s.to_string()).collect(),
            World::Emoji { .. } => emoji::CLASSES.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Scene `index` of `split`.
    pub fn scene(&self, split: Split, index: u64) -> LabelledScene {
        match self {
            World::Shapes { config, pair_masks } => {
                let s = shapes::generate(split, index, config);
                let truth = if *pair_masks {
                    s.pair_map.iter().map(|&p| u8::try_from(p).expect("pair index < 255")).collect()
                } else {
                    s.class_map.clone()
                };
                let objects = serde_json::json!({ "background": s.background, "objects": s.objects });
                LabelledScene { id: s.id(), width: s.width, height: s.height, image: s.image, truth, captions: s.captions, objects }
            }
            World::Emoji { config, .. } => {
                let s = emoji::generate_with(self.atlas().expect("emoji world has an atlas"), split, index, config);
                let objects = serde_json::json!({ "background": s.background, "objects": s.objects });
                LabelledScene {
                    id: shapes::scene_id(split, index),
                    width: s.width,
                    height: s.height,
                    image: s.image,
                    truth: s.class_map,
                    captions: s.captions,
                    objects,
                }
            }
        }
    }
}
