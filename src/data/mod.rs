//! Training and evaluation data: two deterministic worlds drawn in memory, `shapes` and `emoji`,
//! and the VOC layout.
//!
//! * [`emoji`]: scenes of emoji glyphs of 19 PASCAL VOC classes over procedural backgrounds
//!   (pixel-exact masks, true captions with synonyms, counts, positions and background words);
//!   what the bundled model learns from.
//! * [`shapes`]: the shape world (images, pixel-exact shape and colour+shape label maps, true
//!   captions) with train / val / compositional splits.
//! * [`rng`] and [`background`]: the randomness, libm-free math and procedural backgrounds both
//!   worlds share. Pure computation, so both worlds are identical natively and in wasm32.
//! * [`world`]: one face for both worlds (classes, labelled scenes) for eval, validation and
//!   the VOC writer.
//! * [`voc`] (native only): writes either world's splits in Pascal VOC layout and reads VOC-layout
//!   folders (images, class-index masks, class list) with errors that name the offending file.

pub mod background;
pub mod emoji;
pub mod error;
pub mod rng;
pub mod shapes;
#[cfg(not(target_arch = "wasm32"))]
pub mod voc;
pub mod world;

pub use background::BackgroundKind;
pub use error::DataError;
pub use rng::SplitMix64;
pub use shapes::{
    colour_names, dataset_digest, generate, generate_reshaped, is_held_out, pair_from_index, pair_index, pair_labels, scene_id,
    scene_seed, scenes, shape_classes, Colour, ObjectInfo, Pattern, Scene, SceneConfig, Shape, SizeClass, Split, HELD_OUT_PAIRS,
};
