//! `segclip synth --world emoji --split val --count N --out DIR`: a split of the emoji or the
//! shape world in VOC layout, and the world options `segclip eval` shares.

use std::path::PathBuf;
use std::sync::Arc;

use segclip::data::emoji::{Atlas, EmojiConfig};
use segclip::data::world::World;
use segclip::data::{voc, SceneConfig, Split};

/// Which world and how it is drawn.
#[derive(clap::Args, Clone, Debug)]
pub struct WorldArgs {
    /// Image side in pixels (default: 96 for emoji, as the bundled model sees them; 224 for shapes).
    #[arg(long)]
    pub size: Option<usize>,
    /// Shape world mask classes: `shape` (background + 8 shapes) or `pair` (background +
    /// colour+shape); the default is `pair` for the compositional split and `shape` otherwise.
    #[arg(long)]
    pub masks: Option<String>,
    /// Emoji world: atlas art styles to draw from, comma-separated (default: the training styles,
    /// google and twitter; the bundled atlas also holds openmoji; a held-out style's atlas is made by
    /// `scripts/make-emoji-atlas --held-out DIR` and passed with --atlas DIR/atlas.json).
    #[arg(long, value_delimiter = ',')]
    pub style: Vec<String>,
    /// Emoji world: another atlas (its JSON index, the PNG beside it with the same stem), e.g. a
    /// new art style made by scripts/make-emoji-atlas.
    #[arg(long)]
    pub atlas: Option<PathBuf>,
}

impl WorldArgs {
    /// The world (`emoji` or `shapes`), split and first scene index of `world`'s split `split`:
    /// `train`, `val`, `dev` or (shapes only) `compositional`. `dev` is the training split's dev
    /// scenes (from `world::DEV_START`, which no training run reaches): where thresholds are
    /// tuned, so `val` is only reported.
    pub fn world(&self, world: &str, split: &str) -> anyhow::Result<(World, Split, u64)> {
        let emoji = match world {
            "emoji" => true,
            "shapes" => false,
            other => anyhow::bail!("unknown world '{other}': expected emoji or shapes"),
        };
        let (split, start) = match split {
            "dev" => (Split::Train, segclip::data::world::DEV_START),
            other => (parse_split(other).map_err(anyhow::Error::msg)?, 0),
        };
        let world = if emoji {
            anyhow::ensure!(split != Split::Compositional, "the emoji world has no compositional split (it has train, val and dev)");
            anyhow::ensure!(self.masks.is_none(), "--masks is for the shape world; emoji masks are the 19 classes");
            let mut config = EmojiConfig::with_size(self.size.unwrap_or(96));
            let atlas = match &self.atlas {
                Some(path) => {
                    let atlas = Atlas::from_files(path).map_err(anyhow::Error::msg)?;
                    // Another atlas: all of its styles unless some are named.
                    config.styles.clear();
                    Some(Arc::new(atlas))
                }
                None => None,
            };
            if !self.style.is_empty() {
                config.styles = self.style.clone();
            }
            World::Emoji { config, atlas }
        } else {
            anyhow::ensure!(self.style.is_empty() && self.atlas.is_none(), "--style and --atlas are for the emoji world (emoji:...)");
            let pair_masks = mask_kind_is_pair(split, self.masks.as_deref())?;
            World::Shapes { config: SceneConfig::with_size(self.size.unwrap_or(224)), pair_masks }
        };
        world.validate()?;
        Ok((world, split, start))
    }
}

#[derive(clap::Args)]
pub struct SynthArgs {
    /// `emoji` (19 VOC classes drawn as emoji) or `shapes` (8 shapes in 11 colours).
    #[arg(long, default_value = "shapes")]
    pub world: String,
    /// train, val, dev (training scenes no run sees) or compositional (the shape world only).
    #[arg(long)]
    pub split: String,
    /// Number of scenes.
    #[arg(long, default_value_t = 100)]
    pub count: u64,
    /// First scene index (scenes are reproducible by split and index).
    #[arg(long, default_value_t = 0)]
    pub start: u64,
    #[command(flatten)]
    pub options: WorldArgs,
    #[arg(long)]
    pub out: PathBuf,
}

pub fn parse_split(s: &str) -> Result<Split, String> {
    Split::from_name(s).ok_or_else(|| format!("unknown split '{s}': expected train, val or compositional"))
}

fn mask_kind_is_pair(split: Split, masks: Option<&str>) -> anyhow::Result<bool> {
    Ok(match masks {
        None => split == Split::Compositional,
        Some("shape") => false,
        Some("pair") => true,
        Some(other) => anyhow::bail!("unknown --masks '{other}': expected shape or pair"),
    })
}

pub fn run(args: SynthArgs) -> anyhow::Result<()> {
    anyhow::ensure!(["emoji", "shapes"].contains(&args.world.as_str()), "unknown --world '{}': expected emoji or shapes", args.world);
    let (world, split, first) = args.options.world(&args.world, &args.split)?;
    let start = first + args.start;
    let summary = voc::write_split(&args.out, split, start..start + args.count, &world)?;
    println!(
        "wrote {} scenes ({} captions) of the {} world's {} split to {}",
        summary.ids.len(),
        summary.captions,
        args.world,
        split.name(),
        summary.root.display()
    );
    Ok(())
}
