//! `segclip bench`: speed of encode, segmentation and a training step, with achieved GFLOP/s.

use std::path::PathBuf;

use segclip::backend::{self, BackendKind};
use segclip::bench;
use segclip::model::SegClipConfig;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Which model sizes: vit-b16, small (the page's), or all.
    #[arg(long, default_value = "all")]
    config: String,
    /// Which backends: cpu, wgpu, or all.
    #[arg(long, default_value = "cpu")]
    backend: String,
    /// Timed runs per measurement (after one warm-up).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Also write the measurements as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Instead: replay the training step recorded in this folder (record.json and
    /// record.safetensors, from scripts/bench/train_step.py) and time it; scripts/bench-compare
    /// sets it beside PyTorch's.
    #[arg(long)]
    train_record: Option<PathBuf>,
    /// Timed training steps with --train-record (after one untimed step; the first few are
    /// slower while the allocator grows).
    #[arg(long, default_value_t = 10)]
    train_steps: usize,
    /// Instead: load this weights file as `segment` does and time it: the load, the first
    /// photo (labels, then the image's windows), and each further photo; with the peak RSS.
    /// scripts/bench-load runs it on ViT-B/16 and TinyCLIP-sized int8 files and the bundled model.
    #[arg(long)]
    load: Option<PathBuf>,
    /// With --load: how the weights are held (f32 or int8; see `segment --resident`).
    #[arg(long, default_value = "f32")]
    resident: segclip::weights::Residency,
    /// With --load: photos segmented in turn (synthetic 640x480, one label, one template).
    #[arg(long, default_value_t = 4)]
    photos: usize,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(dir) = &args.train_record {
        return train_record(dir, &args);
    }
    if let Some(path) = &args.load {
        return load(path, &args);
    }
    let configs: Vec<(&str, SegClipConfig)> = match args.config.as_str() {
        "vit-b16" => vec![("vit-b16", SegClipConfig::vit_b16())],
        "small" => vec![("small", SegClipConfig::small())],
        "all" => vec![("vit-b16", SegClipConfig::vit_b16()), ("small", SegClipConfig::small())],
        other => anyhow::bail!("unknown --config '{other}': expected vit-b16, small or all"),
    };
    let backends: Vec<BackendKind> = match args.backend.as_str() {
        "all" => vec![BackendKind::Cpu, BackendKind::Wgpu],
        one => vec![one.parse().map_err(anyhow::Error::msg)?],
    };
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("cores: {cores}");
    let mut all = Vec::new();
    let mut peaks = serde_json::Map::new();
    for kind in backends {
        let device = backend::device(kind).map_err(anyhow::Error::msg)?;
        let peak = bench::peak_matmul_gflops(&device);
        println!("{kind}: peak matmul (1024^3) {peak:.1} GFLOP/s");
        peaks.insert(kind.to_string(), serde_json::json!(peak));
        for (name, config) in &configs {
            all.extend(bench::run(name, config, &kind.to_string(), &device, args.runs, crate::TOKENIZER_JSON));
        }
    }
    if let Some(path) = args.json {
        let doc = serde_json::json!({ "cores": cores, "peak_matmul_gflops": peaks, "measurements": all });
        std::fs::write(&path, serde_json::to_string_pretty(&doc)?)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// `--load`: what a visitor of the CLI waits for with this file, step by step.
fn load(path: &std::path::Path, args: &BenchArgs) -> anyhow::Result<()> {
    use segclip::pipeline::{block_on, Rgb, Segmenter};
    use std::time::Instant;
    let kind: BackendKind = args.backend.parse().map_err(anyhow::Error::msg)?;
    let device = backend::device(kind).map_err(anyhow::Error::msg)?;
    let start = Instant::now();
    let file = segclip::weights::format::read_model_from(&std::fs::File::open(path)?, args.resident)?;
    let tokenizer = segclip::tokenizer::ClipTokenizer::from_bytes(crate::TOKENIZER_JSON)?;
    let mut segmenter = Segmenter::from_file(file, tokenizer, device).map_err(anyhow::Error::msg)?;
    let load_s = start.elapsed().as_secs_f64();
    let rss_loaded = rss_kb("VmRSS");
    segmenter.protocol.templates = vec!["a photo of a {}.".into()];
    let labels = vec!["cat".to_string()];
    // Synthetic 640x480 photos, each different (gradients and a moving checker).
    let photo = |i: usize| {
        let (w, h) = (640usize, 480usize);
        let pixels = (0..w * h)
            .flat_map(|p| {
                let (x, y) = (p % w, p / w);
                [(x * 255 / w) as u8, (y * 255 / h) as u8, ((((x + 37 * i) / 40) ^ (y / 40)) % 2 * 200) as u8]
            })
            .collect();
        Rgb::new(w, h, pixels).map_err(anyhow::Error::msg)
    };
    let t = Instant::now();
    let embeddings = block_on(segmenter.encode_labels(&labels)).map_err(anyhow::Error::msg)?;
    let labels_s = t.elapsed().as_secs_f64();
    let (mut photo_s, mut encode_s) = (Vec::new(), Vec::new());
    for i in 0..args.photos.max(1) {
        let image = photo(i)?;
        let t = Instant::now();
        let features = block_on(segmenter.encode_image(&image)).map_err(anyhow::Error::msg)?;
        encode_s.push(t.elapsed().as_secs_f64());
        block_on(segmenter.combine(&features, &labels, &embeddings)).map_err(anyhow::Error::msg)?;
        photo_s.push(t.elapsed().as_secs_f64());
    }
    let further: Vec<String> =
        photo_s.iter().zip(&encode_s).skip(1).map(|(p, e)| format!("{p:.3} (encode {e:.3})")).collect();
    println!("file: {} ({:.1} MB), resident {}", path.display(), std::fs::metadata(path)?.len() as f64 / 1e6, args.resident);
    println!("load: {load_s:.3} s");
    println!("labels (1 label, 1 template, the file's background words): {labels_s:.3} s");
    println!("first photo: {:.3} s (its windows encoded: {:.3} s; then combined)", photo_s[0], encode_s[0]);
    println!("further photos: {} s", if further.is_empty() { "-".to_string() } else { further.join(", ") });
    println!("load + labels + first photo: {:.3} s", load_s + labels_s + photo_s[0]);
    if let (Some(loaded), Some(peak)) = (rss_loaded, rss_kb("VmHWM")) {
        println!("RSS once loaded: {:.0} MB; peak RSS: {:.0} MB", loaded as f64 / 1024.0, peak as f64 / 1024.0);
    }
    Ok(())
}

/// A line of Linux's /proc/self/status in KiB: VmRSS (resident now) or VmHWM (the peak).
fn rss_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.strip_prefix(field).is_some_and(|rest| rest.starts_with(':')))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn train_record(dir: &std::path::Path, args: &BenchArgs) -> anyhow::Result<()> {
    let kind: BackendKind = args.backend.parse().map_err(anyhow::Error::msg)?;
    let device = backend::device(kind).map_err(anyhow::Error::msg)?;
    let recording =
        segclip::train::replay::Recording::read(&dir.join("record.json"), &dir.join("record.safetensors")).map_err(anyhow::Error::msg)?;
    let result = bench::training_steps(&recording, &device, args.train_steps, |step, ms| {
        println!("  step {step}: {ms:.0} ms{}", if step == 0 { " (untimed)" } else { "" });
    })
    .map_err(anyhow::Error::msg)?;
    let losses: Vec<String> = result.losses_step0.iter().map(|(k, v)| format!("{k} {v:.6}")).collect();
    println!("ours step 0: {}", losses.join(", "));
    println!(
        "ours: {:.0} ms per step (gradients {:.0} ms, optimiser {:.0} ms), {:.2} samples/s ({} threads)",
        result.median_ms, result.gradients_ms, result.optimizer_ms, result.samples_per_s, result.threads
    );
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&result)?)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
