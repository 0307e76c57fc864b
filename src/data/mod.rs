//! Training and evaluation data.
//!
//! * [`synth`]: deterministic synthetic shape scenes (images, pixel-exact shape and colour+shape
//!   label maps, true captions) with train / val / compositional splits. Pure computation, so it
//!   runs natively and in wasm32.
//! * [`voc`] (native only): writes synthetic splits in Pascal VOC layout and reads VOC-layout
//!   folders (images, class-index masks, class list) with errors that name the offending file.

pub mod synth;
#[cfg(not(target_arch = "wasm32"))]
pub mod voc;

pub use synth::{
    colour_names, dataset_digest, generate, generate_reshaped, is_held_out, pair_from_index, pair_index, pair_labels, scene_id,
    scene_seed, scenes, shape_classes, BackgroundKind, Colour, ObjectInfo, Pattern, Scene, SceneConfig, Shape,
    SizeClass, Split, SplitMix64, HELD_OUT_PAIRS,
};
