//! `segclip segment IMAGE... --labels "cat, sofa, window" [--weights FILE] [--out DIR]`

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use segclip::labels;
use segclip::pipeline::{self, decode, overlay, Segmenter};

#[derive(clap::Args)]
pub struct SegmentArgs {
    /// Images to segment (PNG, JPEG, WebP, BMP, GIF).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Labels, separated by commas.
    #[arg(long, short)]
    labels: String,
    /// Weights file (from `segclip convert` or `segclip export`); default: the bundled model.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Output folder for `<name>.overlay.png`, `<name>.mask.png` and `<name>.json`.
    #[arg(long, default_value = "segments")]
    out: PathBuf,
    /// Overlay opacity, 0..1.
    #[arg(long, default_value_t = 0.55)]
    alpha: f32,
    /// Draw region outlines on the overlay.
    #[arg(long)]
    outline: bool,
    /// Refuse images with more pixels than this (checked before decoding).
    #[arg(long, default_value_t = decode::DEFAULT_MAX_PIXELS)]
    max_pixels: u64,
    #[command(flatten)]
    protocol: crate::ProtocolFlags,
    /// Compute backend: cpu or wgpu.
    #[arg(long, default_value = "cpu")]
    backend: segclip::backend::BackendKind,
    /// How the model holds an int8 file's weights: f32 (dequantised once at load; the fastest
    /// encode) or int8 (a quarter of the memory, dequantised per layer as it runs; the same
    /// label maps).
    #[arg(long, default_value = "f32")]
    resident: segclip::weights::Residency,
}

/// The share of an image painted as background above which the bundled model is said not to
/// know it (it paints 96.5-100% of photos so).
const PHOTO_HINT_BACKGROUND: f64 = 0.95;

pub fn run(args: SegmentArgs) -> anyhow::Result<()> {
    let label_list = labels::parse_labels(&args.labels).map_err(anyhow::Error::msg)?;
    if !(0.0..=1.0).contains(&args.alpha) {
        bail!("--alpha must be between 0 and 1, got {}", args.alpha);
    }
    let mut segmenter = crate::load_segmenter(args.weights.as_deref(), args.backend, args.resident)?;
    args.protocol.apply(&mut segmenter, args.weights.as_deref())?;
    if label_list.len() > overlay::PALETTE.len() {
        eprintln!("note: {} labels; beyond {} the overlay colours start to repeat at other shades", label_list.len(), overlay::PALETTE.len());
    }
    // Label embeddings once for all images.
    let embeddings = pipeline::block_on(segmenter.encode_labels(&label_list)).map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;

    let bar = indicatif::ProgressBar::new(args.images.len() as u64);
    bar.set_style(indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").unwrap());
    let mut failures = Vec::new();
    for path in &args.images {
        bar.set_message(path.display().to_string());
        if let Err(e) = segment_one(&mut segmenter, path, &label_list, &embeddings, &args) {
            bar.suspend(|| eprintln!("error: {}: {e:#}", path.display()));
            failures.push((path.clone(), format!("{e:#}")));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let done = args.images.len() - failures.len();
    println!("segmented {done} of {} image(s) into {}", args.images.len(), args.out.display());
    if !failures.is_empty() {
        eprintln!("{} image(s) failed:", failures.len());
        for (path, e) in &failures {
            eprintln!("  {}: {e}", path.display());
        }
        bail!("{} of {} image(s) failed", failures.len(), args.images.len());
    }
    Ok(())
}

fn segment_one(
    segmenter: &mut Segmenter,
    path: &Path,
    label_list: &[String],
    embeddings: &[Vec<f32>],
    args: &SegmentArgs,
) -> anyhow::Result<()> {
    let bytes = std::fs::read(path).context("reading the file")?;
    let image = decode::decode_image(&bytes, args.max_pixels)?;
    let features = pipeline::block_on(segmenter.encode_image(&image)).map_err(anyhow::Error::msg)?;
    let result = pipeline::block_on(segmenter.combine(&features, label_list, embeddings)).map_err(anyhow::Error::msg)?;
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("image");
    let colours: Vec<[u8; 3]> = result.labels.iter().map(|l| l.colour).collect();
    let rgba = overlay::paint(&image.pixels, image.width, image.height, &result.label_map, &colours, args.alpha, args.outline, &[]);
    let (w, h) = (image.width as u32, image.height as u32);
    image::RgbaImage::from_raw(w, h, rgba).unwrap().save(args.out.join(format!("{stem}.overlay.png")))?;
    image::GrayImage::from_raw(w, h, result.label_map.clone()).unwrap().save(args.out.join(format!("{stem}.mask.png")))?;
    let summary = serde_json::json!({
        "image": path.display().to_string(),
        "mask_values": "0 = background, i = labels[i - 1]",
        "result": result,
    });
    std::fs::write(args.out.join(format!("{stem}.json")), serde_json::to_string_pretty(&summary)?)?;
    if segmenter.kind() == segclip::pipeline::Kind::Groups && args.weights.is_none() && result.background_share >= PHOTO_HINT_BACKGROUND {
        eprintln!(
            "note: {}: the bundled model painted {:.0}% of it as background. It knows 19 classes of emoji art, not photos; \
             for photos: `segclip fetch tinyclip-8m`, then --weights tinyclip-8m-int8.safetensors",
            path.display(),
            result.background_share * 100.0
        );
    }
    Ok(())
}
