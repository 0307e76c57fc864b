//! `segclip synth --split val --count N --out DIR`: a synthetic split in VOC layout.

use std::path::PathBuf;

use segclip::data::{voc, SceneConfig, Split};

#[derive(clap::Args)]
pub struct SynthArgs {
    /// train, val or compositional.
    #[arg(long, value_parser = parse_split)]
    pub split: Split,
    /// Number of scenes.
    #[arg(long, default_value_t = 100)]
    pub count: u64,
    /// First scene index (scenes are reproducible by split and index).
    #[arg(long, default_value_t = 0)]
    pub start: u64,
    /// Image side in pixels.
    #[arg(long, default_value_t = 224)]
    pub size: usize,
    /// Mask classes: `shape` (background + 8 shapes) or `pair` (background + colour+shape); the
    /// default is `pair` for the compositional split and `shape` otherwise.
    #[arg(long)]
    pub masks: Option<String>,
    #[arg(long)]
    pub out: PathBuf,
}

pub fn parse_split(s: &str) -> Result<Split, String> {
    match s {
        "train" => Ok(Split::Train),
        "val" => Ok(Split::Val),
        "compositional" => Ok(Split::Compositional),
        other => Err(format!("unknown split '{other}': expected train, val or compositional")),
    }
}

pub fn mask_kind(split: Split, masks: Option<&str>) -> anyhow::Result<voc::MaskKind> {
    Ok(match masks {
        None if split == Split::Compositional => voc::MaskKind::Pair,
        None | Some("shape") => voc::MaskKind::Shape,
        Some("pair") => voc::MaskKind::Pair,
        Some(other) => anyhow::bail!("unknown --masks '{other}': expected shape or pair"),
    })
}

pub fn run(args: SynthArgs) -> anyhow::Result<()> {
    let config = SceneConfig::with_size(args.size);
    config.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    let kind = mask_kind(args.split, args.masks.as_deref())?;
    let summary = voc::write_split(&args.out, args.split, args.start..args.start + args.count, &config, kind)?;
    println!(
        "wrote {} scenes ({} captions) of split {:?} to {}",
        summary.ids.len(),
        summary.captions,
        args.split,
        summary.root.display()
    );
    Ok(())
}
