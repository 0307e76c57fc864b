//! `segclip eval --weights FILE DATASET`: mIoU, per-class IoU and pixel accuracy.
//! DATASET is `synth:val`, `synth:train`, `synth:compositional` (generated in memory) or a folder
//! in VOC layout (`JPEGImages/`, `SegmentationClass/`, `classes.txt`).

use std::path::PathBuf;

use anyhow::Context;
use segclip::data::{generate, pair_labels, shape_classes, voc, SceneConfig, Split};
use segclip::eval::ConfusionMatrix;
use segclip::pipeline::{self, decode, Rgb};

use crate::synth::{mask_kind, parse_split};

#[derive(clap::Args)]
pub struct EvalArgs {
    /// `synth:val`, `synth:compositional`, `synth:train`, or a VOC-layout folder.
    dataset: String,
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Scenes of a synthetic split to score (from index 0).
    #[arg(long, default_value_t = 200)]
    count: u64,
    /// Image side of synthetic scenes.
    #[arg(long, default_value_t = 224)]
    size: usize,
    /// Synthetic mask classes: shape or pair (default: pair for compositional).
    #[arg(long)]
    masks: Option<String>,
    /// Background threshold (VOC 0.80, PASCAL Context 0.25, COCO-Object 0.65).
    #[arg(long, default_value_t = 0.8)]
    bg_thresh: f32,
    /// Where to write the confusion matrix and per-class numbers (JSON).
    #[arg(long, default_value = "confusion.json")]
    out: PathBuf,
    #[arg(long, default_value = "cpu")]
    backend: segclip::backend::BackendKind,
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let mut segmenter = crate::load_segmenter(args.weights.as_deref(), args.backend)?;
    segmenter.options.bg_thresh = args.bg_thresh;

    // (class names with background first, samples as (name, image, truth)).
    let mut samples: Box<dyn Iterator<Item = anyhow::Result<(String, Rgb, Vec<u8>)>>>;
    let classes: Vec<String>;
    if let Some(split) = args.dataset.strip_prefix("synth:") {
        let split: Split = parse_split(split).map_err(anyhow::Error::msg)?;
        let kind = mask_kind(split, args.masks.as_deref())?;
        classes = match kind {
            voc::MaskKind::Shape => shape_classes().iter().map(|s| s.to_string()).collect(),
            voc::MaskKind::Pair => pair_labels().to_vec(),
        };
        let config = SceneConfig::with_size(args.size);
        samples = Box::new((0..args.count).map(move |i| {
            let scene = generate(split, i, &config);
            let truth = match kind {
                voc::MaskKind::Shape => scene.class_map.clone(),
                voc::MaskKind::Pair => scene.pair_map.iter().map(|&p| p as u8).collect(),
            };
            let image = Rgb::new(scene.width, scene.height, scene.image).map_err(anyhow::Error::msg)?;
            Ok((format!("{split:?} {i}"), image, truth))
        }));
    } else {
        let root = PathBuf::from(&args.dataset);
        let dataset = voc::VocDataset::open_all(&root).with_context(|| format!("opening {}", root.display()))?;
        classes = dataset.classes().to_vec();
        let ids = dataset.ids().to_vec();
        samples = Box::new(ids.into_iter().map(move |id| {
            let sample = dataset.load(&id)?;
            let bytes = std::fs::read(&sample.image_path).with_context(|| sample.image_path.display().to_string())?;
            let image = decode::decode_image(&bytes, decode::DEFAULT_MAX_PIXELS)
                .with_context(|| sample.image_path.display().to_string())?;
            Ok((id, image, sample.mask))
        }));
    }
    anyhow::ensure!(classes.len() >= 2, "the class list needs background and at least one class");
    let labels: Vec<String> = classes[1..].to_vec();
    let embeddings = pipeline::block_on(segmenter.encode_labels(&labels)).map_err(anyhow::Error::msg)?;

    let mut matrix = ConfusionMatrix::new(classes.len());
    let mut scored = 0;
    let bar = indicatif::ProgressBar::new_spinner();
    for sample in &mut samples {
        let (name, image, truth) = sample?;
        bar.set_message(name.clone());
        let features = pipeline::block_on(segmenter.encode_image(&image)).map_err(anyhow::Error::msg)?;
        let result = pipeline::block_on(segmenter.combine(&features, &labels, &embeddings)).map_err(anyhow::Error::msg)?;
        matrix.add(&result.label_map, &truth).with_context(|| name.clone())?;
        scored += 1;
        bar.inc(1);
    }
    bar.finish_and_clear();
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
