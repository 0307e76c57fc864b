//! `segclip eval --weights FILE DATASET`: mIoU, per-class IoU and pixel accuracy.
//! DATASET is a split of a world drawn in memory, named `WORLD:SPLIT` (`emoji:val`, `emoji:train`,
//! `emoji:dev`, `shapes:val`, `shapes:train`, `shapes:dev`, `shapes:compositional`), or a folder
//! in VOC layout (`JPEGImages/`, `SegmentationClass/`, `classes.txt`). The old names
//! (`synth:emoji-val`, `synth:val`, ...) still work, with a note on stderr.

use std::path::PathBuf;

use anyhow::Context;
use segclip::data::voc;
use segclip::eval::ConfusionMatrix;
use segclip::pipeline::{self, decode};

use crate::synth::WorldArgs;

#[derive(clap::Args)]
pub struct EvalArgs {
    /// `emoji:val`, `emoji:train`, `emoji:dev`, `shapes:val`, `shapes:compositional`,
    /// `shapes:train`, `shapes:dev`, or a VOC-layout folder.
    dataset: String,
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Scenes of a world's split to score (from index 0).
    #[arg(long, default_value_t = 200)]
    count: u64,
    #[command(flatten)]
    protocol: crate::ProtocolFlags,
    #[command(flatten)]
    world: WorldArgs,
    /// Where to write the confusion matrix and per-class numbers (JSON).
    #[arg(long, default_value = "confusion.json")]
    out: PathBuf,
    #[arg(long, default_value = "cpu")]
    backend: segclip::backend::BackendKind,
    /// How the model holds an int8 file's weights: f32 (dequantised once at load; the fastest
    /// encode) or int8 (a quarter of the memory, dequantised per layer as it runs; the same
    /// label maps).
    #[arg(long, default_value = "f32")]
    resident: segclip::weights::Residency,
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let mut segmenter = crate::load_segmenter(args.weights.as_deref(), args.backend, args.resident)?;
    let bg_thresh = args.protocol.apply(&mut segmenter, args.weights.as_deref())?;
    println!("background threshold: {bg_thresh}");
    let o = &segmenter.protocol;
    if o.short_side != 0 || o.window != 0 || o.stride != 0 {
        let or_input = |v: usize| if v == 0 { "the model's input size".to_string() } else { format!("{v} px") };
        let stride = if o.stride == 0 { "side by side".to_string() } else { format!("every {} px", o.stride) };
        println!("windows: short side {}, windows of {} {stride}", or_input(o.short_side), or_input(o.window));
    }
    if !o.extra_short_sides.is_empty() {
        let sides: Vec<String> = o.extra_short_sides.iter().map(|s| s.to_string()).collect();
        println!("more scales: short sides {} px, their score maps averaged in", sides.join(", "));
    }
    if let Some(p) = &o.superpixels {
        println!("superpixels: scale {}, sigma {}, min size {}", p.scale, p.sigma, p.min_size);
    }
    if o.flip {
        println!("flip: the mirrored image averaged in");
    }
    if let Some(r) = &o.refine {
        println!("refine: {} passes of averaging over neighbours of like colour", r.iterations);
    }
    if !segmenter.protocol.background_prompts.is_empty() {
        println!("background prompts: {}", segmenter.protocol.background_prompts.join(", "));
    }

    let (matrix, classes, scored) = if let Some((world, split)) = world_dataset(&args.dataset) {
        let (world, split, start) = args.world.world(world, &split)?;
        let classes = world.classes();
        let bar = indicatif::ProgressBar::new(args.count);
        let scores = segclip::eval::score_world(&mut segmenter, &world, split, start..start + args.count, |n| bar.set_position(n))
            .map_err(anyhow::Error::msg)?;
        bar.finish_and_clear();
        println!("object pixels named correctly (no background rule): {:.2}%", scores.naming_accuracy() * 100.0);
        println!("mIoU with the true background: {:.2}", scores.true_background.mean_iou().unwrap_or(f64::NAN) * 100.0);
        println!("centers in use per window: {:.2}", scores.centers_used);
        println!("mean pairwise cosine of the class prompts: {:.3}", scores.prompt_cosine);
        (scores.pipeline, classes, args.count)
    } else {
        score_voc(&mut segmenter, &args.dataset)?
    };
    let report = matrix.report(Some(&classes));
    println!("images: {scored}");
    println!("mIoU: {:.2}", report.mean_iou.unwrap_or(f64::NAN) * 100.0);
    println!("pixel accuracy: {:.2}", report.pixel_accuracy.unwrap_or(f64::NAN) * 100.0);
    println!("per-class IoU:");
    for c in &report.classes {
        match c.iou {
            Some(iou) => println!("  {:<24} {:6.2}", c.name.as_deref().unwrap_or("?"), iou * 100.0),
            None => println!("  {:<24}    n/a (absent)", c.name.as_deref().unwrap_or("?")),
        }
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?).with_context(|| args.out.display().to_string())?;
    println!("confusion matrix: {}", args.out.display());
    Ok(())
}

/// The world and split a dataset name means (`emoji:val`, `shapes:dev`), or `None` for a folder.
/// The names from before the worlds had one name each (`synth:emoji-val` for `emoji:val`,
/// `synth:val` for `shapes:val`) are still read, with a note on stderr.
fn world_dataset(name: &str) -> Option<(&'static str, String)> {
    for world in ["emoji", "shapes"] {
        if let Some(split) = name.strip_prefix(world).and_then(|rest| rest.strip_prefix(':')) {
            return Some((world, split.to_string()));
        }
    }
    let old = name.strip_prefix("synth:")?;
    let (world, split) = match old.strip_prefix("emoji-") {
        Some(split) => ("emoji", split),
        None => ("shapes", old),
    };
    eprintln!("note: the dataset name '{name}' is deprecated; it is '{world}:{split}' now");
    Some((world, split.to_string()))
}

/// Scores every image of a VOC-layout folder.
fn score_voc(segmenter: &mut pipeline::Segmenter, dataset: &str) -> anyhow::Result<(ConfusionMatrix, Vec<String>, u64)> {
    let root = PathBuf::from(dataset);
    let dataset = voc::VocDataset::open_all(&root).with_context(|| format!("opening {}", root.display()))?;
    let classes = dataset.classes().to_vec();
    anyhow::ensure!(classes.len() >= 2, "{}: the class list needs background and at least one class", root.display());
    let labels: Vec<String> = classes[1..].to_vec();
    let embeddings = pipeline::block_on(segmenter.encode_labels(&labels)).map_err(anyhow::Error::msg)?;
    let mut matrix = ConfusionMatrix::new(classes.len());
    let bar = indicatif::ProgressBar::new(dataset.len() as u64);
    for id in dataset.ids() {
        let sample = dataset.load(id)?;
        let bytes = std::fs::read(&sample.image_path).with_context(|| sample.image_path.display().to_string())?;
        let image = decode::decode_image(&bytes, decode::DEFAULT_MAX_PIXELS).with_context(|| sample.image_path.display().to_string())?;
        let features = pipeline::block_on(segmenter.encode_image(&image)).map_err(anyhow::Error::msg)?;
        let result = pipeline::block_on(segmenter.combine(&features, &labels, &embeddings)).map_err(anyhow::Error::msg)?;
        matrix.add(&result.label_map, &sample.mask).with_context(|| id.clone())?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok((matrix, classes, dataset.len() as u64))
}
