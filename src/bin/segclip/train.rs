//! `segclip train CONFIG [--set key=value]...` or `segclip train --resume RUN_DIR`.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use anyhow::Context;
use segclip::train::{self, TrainConfig, TrainOptions};

#[derive(clap::Args)]
pub struct TrainArgs {
    /// Training config (TOML; examples in configs/). Not needed with --resume.
    config: Option<PathBuf>,
    /// Override a config value, e.g. `--set optim.steps=500 --set loss.superpixel=false`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Continue the run in this folder from its checkpoint (same config, same schedule).
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "config")]
    resume: Option<PathBuf>,
    /// Stop after this many steps in total, writing a checkpoint (the schedule stays the
    /// config's; resume later to go on).
    #[arg(long)]
    stop_after: Option<u64>,
    /// With --resume: go on to this many steps in all, past the end of the run's schedule. The
    /// old schedule becomes the first cycle (config `optim.first_cycle`) and the steps after it
    /// follow the schedule over the new total, so the learning rate jumps back up from near 0:
    /// a warm restart (SGDR, https://arxiv.org/abs/1608.03983).
    #[arg(long, requires = "resume")]
    extend_to: Option<u64>,
    /// Where the steps run: cpu (burn's flex backend) or wgpu (the GPU through Vulkan, Metal or
    /// DX12). A run may be resumed on another backend than it started on.
    #[arg(long, default_value = "cpu")]
    backend: segclip::backend::BackendKind,
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let (config, resume) = match (&args.config, &args.resume) {
        (Some(path), None) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let config = TrainConfig::parse(&text, &args.overrides).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            (config, false)
        }
        (None, Some(dir)) => {
            anyhow::ensure!(args.overrides.is_empty(), "--set cannot change a resumed run: it continues with the config in its checkpoint");
            let ck = train::checkpoint::read(&train::checkpoint::path_in(dir)).map_err(anyhow::Error::msg)?;
            let mut config = ck.config;
            // The folder may have moved since the run started.
            config.run.out = dir.display().to_string();
            if let Some(n) = args.extend_to {
                anyhow::ensure!(
                    n > config.optim.steps,
                    "--extend-to {n}: the run in {} already has a schedule of {} steps; give a larger total",
                    dir.display(),
                    config.optim.steps
                );
                // The finished schedule becomes the first cycle (src/train/config.rs `first_cycle`).
                // Only one: a second extension would change the schedule the steps after the
                // first cycle were trained with, and the config would no longer describe the run.
                if let Some(c) = config.optim.first_cycle {
                    anyhow::bail!(
                        "--extend-to {n}: the run in {} was already extended once (its first cycle ends at step {c}); \
                         a config has one restart (optim.first_cycle)",
                        dir.display()
                    );
                }
                config.optim.first_cycle = Some(config.optim.steps);
                config.optim.steps = n;
            }
            (config, true)
        }
        _ => {
            anyhow::bail!("give a config file to start a run, or --resume RUN_DIR to continue one")
        }
    };
    let options = TrainOptions { stop_after: args.stop_after, progress: true, backend: args.backend, ..Default::default() };
    let stop = options.stop.clone();
    ctrlc::set_handler(move || {
        if stop.swap(true, Ordering::SeqCst) {
            eprintln!("\nsecond interrupt: exiting without a checkpoint");
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: writing a checkpoint after this step (Ctrl-C again to quit now)");
    })
    .context("installing the Ctrl-C handler")?;
    println!("run folder: {} (backend {})", config.run.out, args.backend);
    let summary = train::train(&config, resume, crate::TOKENIZER_JSON, &options).map_err(anyhow::Error::msg)?;
    println!(
        "steps {}..{} of {} in {:.1} min{}",
        summary.first_step,
        summary.steps_done,
        config.optim.steps,
        summary.wall_s / 60.0,
        if summary.interrupted { " (stopped; continue with --resume)" } else { "" }
    );
    if let Some(last) = &summary.last {
        println!(
            "last step: loss {:.4} (contrastive {:.4}, reconstruction {:.4}, superpixel {:.5})",
            last.loss, last.contrastive, last.reconstruction, last.superpixel
        );
    }
    if let Some(m) = summary.val_miou {
        println!("dev mIoU (the training world's dev scenes): {:.2}", m * 100.0);
    }
    println!("checkpoint: {}", train::checkpoint::path_in(&summary.run_dir).display());
    println!("log: {}  curves: {}", summary.run_dir.join("log.csv").display(), summary.run_dir.join("curves.png").display());
    if summary.interrupted {
        std::process::exit(130);
    }
    Ok(())
}
