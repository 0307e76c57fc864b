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
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(dir) = &args.train_record {
        return train_record(dir, &args);
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
