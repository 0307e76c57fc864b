//! A training run from start to end: set up (a fresh run or a checkpoint's continuation), then
//! step by step train, validate, log and checkpoint, and report.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use burn::tensor::{Device, Tensor};

use super::log::{read_log, LogRow, LOG_HEADER};
use super::optim::AdamW;
use super::step::{step_gradients, StepLosses};
use super::{checkpoint, data, plot, validate, TrainConfig, TrainError, TrainOptions, TrainSummary};
use crate::data::rng::mix64;
use crate::model::{SegClip, SegClipConfig};
use crate::tokenizer::ClipTokenizer;
use crate::weights::format::sha256_hex;
use crate::weights::{format, import, model_io};

/// Trains as `config` says, writing into `config.run.out`; with `resume`, continues the run
/// folder's checkpoint (whose stored config then governs the run).
/// Batches are a pure function of (seed, step) and the device generator is reseeded every step,
/// but burn's CPU backend keeps one generator for the whole process: a run is bit-reproducible
/// only while nothing else in the process draws random numbers meanwhile (the CLI runs one).
pub fn train(config: &TrainConfig, resume: bool, tokenizer_json: &[u8], options: &TrainOptions) -> Result<TrainSummary, TrainError> {
    let started = Instant::now();
    let (mut run, mut model) = Run::set_up(config, resume, tokenizer_json, options)?;
    let mut interrupted = false;
    while run.step < run.config.optim.steps {
        if options.stop.load(Ordering::SeqCst) || options.stop_after.is_some_and(|n| run.step >= n) {
            interrupted = true;
            break;
        }
        let (next, mut done) = run.one_step(model)?;
        model = next;
        run.validate_if_due(&model, &mut done.row)?;
        run.record(done)?;
        run.checkpoint_if_due(&model)?;
    }
    run.report(&model, interrupted, started)
}

/// A run in progress: everything its steps share but the model, which each step takes and
/// gives back (the optimiser consumes it).
struct Run<'a> {
    /// The run's config (the checkpoint's when resumed).
    config: TrainConfig,
    model_config: SegClipConfig,
    optimizer: AdamW,
    tokenizer_json: &'a [u8],
    tokenizer_sha: String,
    /// The training device (autodiff).
    device: Device,
    run_dir: PathBuf,
    ckpt_path: PathBuf,
    log_path: PathBuf,
    log: std::fs::File,
    /// The log's rows so far (those the checkpoint covers when resumed, then one per step).
    rows: Vec<LogRow>,
    loader: data::Loader,
    bar: indicatif::ProgressBar,
    first_step: u64,
    /// Steps done.
    step: u64,
    /// The last validation's dev mIoU.
    val_miou: Option<f64>,
}

/// What one step did: its log row (validation signals not yet filled in) and the center-usage
/// term, which the progress bar shows but the log does not keep.
struct StepDone {
    row: LogRow,
    center_usage: f64,
}

impl<'a> Run<'a> {
    /// Opens the run (fresh or resumed), its log, data loader and progress bar; the model to
    /// train comes back beside it.
    fn set_up(config: &TrainConfig, resume: bool, tokenizer_json: &'a [u8], options: &TrainOptions) -> Result<(Self, SegClip), TrainError> {
        let run_dir = PathBuf::from(&config.run.out);
        let ckpt_path = checkpoint::path_in(&run_dir);
        let tokenizer = ClipTokenizer::from_bytes(tokenizer_json)?;
        let tokenizer_sha = sha256_hex(tokenizer_json);
        let device = crate::backend::device(options.backend).map_err(TrainError::Other)?.autodiff();

        // A fresh run or the continuation of a checkpoint.
        let OpenRun { config, model, model_config, optimizer, first_step } =
            open_run(config, resume, &tokenizer_sha, &run_dir, &ckpt_path, &device)?;
        if tokenizer.vocab_size() > model_config.vocab_size {
            return Err(TrainError::VocabTooSmall { tokenizer: tokenizer.vocab_size(), model: model_config.vocab_size });
        }
        let total = config.optim.steps;
        if first_step >= total {
            return Err(TrainError::Finished { path: ckpt_path, steps: total });
        }
        let (log_path, log, rows) = open_log(&run_dir, resume, first_step)?;
        let loader = data::Loader::start(&config, &model_config, tokenizer_json, first_step)?;
        let bar = progress_bar(options.progress, total, first_step);
        let run = Run {
            config,
            model_config,
            optimizer,
            tokenizer_json,
            tokenizer_sha,
            device,
            run_dir,
            ckpt_path,
            log_path,
            log,
            rows,
            loader,
            bar,
            first_step,
            step: first_step,
            val_miou: None,
        };
        Ok((run, model))
    }

    /// One optimiser step on the next step's batches. A loss that is not finite writes the
    /// checkpoint of the step before it and ends the run with an error.
    fn one_step(&mut self, model: SegClip) -> Result<(SegClip, StepDone), TrainError> {
        let t0 = Instant::now();
        let (config, step) = (&self.config, self.step);
        let l = &config.loss;
        // Gumbel noise and any other device randomness: a function of (seed, step).
        self.device.seed(mix64(config.run.seed ^ mix64(step + 1)));
        let micro_batches = self.loader.next_step()?;
        let (sum, StepLosses { contrastive: lc, reconstruction: lr, superpixel: ls, center_usage: usage, group_nouns: gn }) =
            step_gradients(&model, &self.model_config, &micro_batches, config, None, &self.device)?;
        let loss =
            lc + lr * l.reconstruction_weight + ls * l.superpixel_weight + usage * l.center_usage_weight + gn * l.group_nouns_weight;
        if !loss.is_finite() {
            self.save(&model)?;
            return Err(TrainError::NonFiniteLoss { step, loss, contrastive: lc, reconstruction: lr, superpixel: ls });
        }
        let (model, info) = self.optimizer.step(model, sum, step);
        self.step += 1;
        let samples_per_step = (config.optim.batch_size * config.optim.accumulation) as f64;
        let row = LogRow {
            step: self.step,
            lr_new: info.lr_new,
            loss,
            contrastive: lc,
            reconstruction: lr,
            superpixel: ls,
            group_nouns: gn,
            grad_norm: info.grad_norm,
            samples_per_s: samples_per_step / t0.elapsed().as_secs_f64(),
            ..LogRow::default()
        };
        Ok((model, StepDone { row, center_usage: usage }))
    }

    /// Validates every `run.val_every` steps and after the last, the signals going into `row`.
    fn validate_if_due(&mut self, model: &SegClip, row: &mut LogRow) -> Result<(), TrainError> {
        let (step, every) = (self.step, self.config.run.val_every);
        if !(step == self.config.optim.steps || (every > 0 && step % every == 0)) {
            return Ok(());
        }
        self.bar.set_message("validating");
        let v = validate(model, &self.model_config, self.tokenizer_json, &self.config, &self.device.clone().without_autodiff())?;
        row.set_signals(&v);
        self.val_miou = Some(v.miou);
        self.bar.println(format!(
            "step {step}: dev mIoU {:.2} (true background {:.2}), naming {:.1}%, centers {:.1}, prompt cosine {:.3}",
            v.miou * 100.0,
            v.miou_true_bg * 100.0,
            v.naming * 100.0,
            v.centers,
            v.prompt_cos
        ));
        Ok(())
    }

    /// Appends the step's row to the log and shows its losses.
    fn record(&mut self, done: StepDone) -> Result<(), TrainError> {
        let StepDone { row, center_usage } = done;
        writeln!(self.log, "{}", row.to_csv()).map_err(TrainError::io(&self.log_path))?;
        self.bar.set_message(format!(
            "loss {:.3} (c {:.3} r {:.3} s {:.4} u {:.3}) {:.1} samples/s",
            row.loss, row.contrastive, row.reconstruction, row.superpixel, center_usage, row.samples_per_s
        ));
        self.bar.set_position(self.step);
        self.rows.push(row);
        Ok(())
    }

    /// Writes the checkpoint every `run.checkpoint_every` steps and after the last.
    fn checkpoint_if_due(&self, model: &SegClip) -> Result<(), TrainError> {
        if self.step % self.config.run.checkpoint_every == 0 || self.step == self.config.optim.steps {
            self.save(model)?;
        }
        Ok(())
    }

    /// The checkpoint of the steps done so far.
    fn save(&self, model: &SegClip) -> Result<(), TrainError> {
        checkpoint::write(
            &self.ckpt_path,
            &checkpoint::Checkpoint {
                step: self.step,
                adam_t: self.optimizer.t,
                config: self.config.clone(),
                model_config: self.model_config.clone(),
                tokenizer_sha256: self.tokenizer_sha.clone(),
                model: model_io::model_tensors(model),
                optim: self.optimizer.state_tensors(),
            },
        )
    }

    /// Ends the run: a checkpoint when interrupted, the curves plot, and what was done.
    fn report(self, model: &SegClip, interrupted: bool, started: Instant) -> Result<TrainSummary, TrainError> {
        if interrupted {
            self.save(model)?;
            self.bar.abandon_with_message(format!("interrupted: checkpoint of step {} written to {}", self.step, self.ckpt_path.display()));
        } else {
            self.bar.finish();
        }
        plot::write_curves(&self.rows, &self.run_dir.join("curves.png"))?;
        Ok(TrainSummary {
            run_dir: self.run_dir,
            first_step: self.first_step,
            steps_done: self.step,
            interrupted,
            last: self.rows.last().cloned(),
            val_miou: self.val_miou,
            wall_s: started.elapsed().as_secs_f64(),
        })
    }
}

/// The run's `log.csv`, rewritten to keep only the rows the checkpoint covers (steps after it
/// are redone), and open for appending; with those rows.
fn open_log(run_dir: &Path, resume: bool, first_step: u64) -> Result<(PathBuf, std::fs::File, Vec<LogRow>), TrainError> {
    let log_path = run_dir.join("log.csv");
    let rows: Vec<LogRow> =
        if resume { read_log(run_dir).unwrap_or_default().into_iter().filter(|r| r.step <= first_step).collect() } else { Vec::new() };
    let mut text = String::from(LOG_HEADER);
    text.push('\n');
    for r in &rows {
        text.push_str(&r.to_csv());
        text.push('\n');
    }
    std::fs::write(&log_path, text).map_err(TrainError::io(&log_path))?;
    let log = std::fs::OpenOptions::new().append(true).open(&log_path).map_err(TrainError::io(&log_path))?;
    Ok((log_path, log, rows))
}

/// The progress bar over all `total` steps, at `first_step` (hidden without `progress`).
fn progress_bar(progress: bool, total: u64, first_step: u64) -> indicatif::ProgressBar {
    let bar = if progress { indicatif::ProgressBar::new(total) } else { indicatif::ProgressBar::hidden() };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed_precise} < {eta_precise}] {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_position(first_step);
    bar
}

/// A run ready to train: its config (the checkpoint's when resumed), model, optimiser and the
/// step it starts at.
struct OpenRun {
    config: TrainConfig,
    model: SegClip,
    model_config: SegClipConfig,
    optimizer: AdamW,
    first_step: u64,
}

/// Opens a run: resumes the checkpoint in `run_dir`, or starts a fresh one there (refusing a
/// folder that already holds a checkpoint).
fn open_run(config: &TrainConfig, resume: bool, tokenizer_sha: &str, run_dir: &Path, ckpt_path: &Path, device: &Device) -> Result<OpenRun, TrainError> {
    Ok(if resume {
        let ck = checkpoint::read(ckpt_path)?;
        if ck.tokenizer_sha256 != tokenizer_sha {
            return Err(TrainError::OtherTokenizer { path: ckpt_path.to_path_buf(), sha256: ck.tokenizer_sha256 });
        }
        let mut model = fresh_model(&ck.model_config, ck.config.loss.reconstruction, device);
        model_io::apply_tensors(&mut model, &ck.model, false).map_err(|source| TrainError::Weights { path: ckpt_path.to_path_buf(), source })?;
        // The checkpoint's config, but the caller's schedule: `segclip train --resume --extend-to`
        // lengthens it to go on past its end (src/bin/segclip/train.rs).
        let mut run_config = ck.config;
        run_config.optim.steps = config.optim.steps;
        run_config.optim.first_cycle = config.optim.first_cycle;
        let mut optimizer = AdamW::new(run_config.optim.clone());
        optimizer.load_state(ck.adam_t, &ck.optim, &device.clone().without_autodiff())?;
        OpenRun { config: run_config, model, model_config: ck.model_config, optimizer, first_step: ck.step }
    } else {
        if ckpt_path.exists() {
            let step = checkpoint::read(ckpt_path).map(|c| c.step.to_string()).unwrap_or_else(|_| "?".into());
            return Err(TrainError::RunExists { dir: run_dir.to_path_buf(), step });
        }
        std::fs::create_dir_all(run_dir).map_err(TrainError::io(run_dir))?;
        device.seed(config.run.seed);
        let model_config = config.model.resolve()?;
        let (model, model_config) = initial_model(config, &model_config, device)?;
        std::fs::write(run_dir.join("config.toml"), config.to_toml()).map_err(TrainError::io(run_dir))?;
        OpenRun { config: config.clone(), model, model_config, optimizer: AdamW::new(config.optim.clone()), first_step: 0 }
    })
}


/// A new model, with the reconstruction heads when that loss is on.
fn fresh_model(config: &SegClipConfig, with_reconstruction: bool, device: &Device) -> SegClip {
    if with_reconstruction {
        SegClip::new_for_training(config, device)
    } else {
        SegClip::new(config, device)
    }
}

/// Builds the model to train: fresh, or from a checkpoint named by `model.init`.
fn initial_model(config: &TrainConfig, model_config: &SegClipConfig, device: &Device) -> Result<(SegClip, SegClipConfig), TrainError> {
    let with_recon = config.loss.reconstruction;
    let fresh = |c: &SegClipConfig| fresh_model(c, with_recon, device);
    let init = config.model.init.as_str();
    if init == "scratch" {
        let mut model = fresh(model_config);
        model_io::initialise_all(&model);
        if let Some(scale) = config.model.logit_scale_init {
            if !(scale > 0.0 && scale <= crate::model::MAX_LOGIT_SCALE) {
                return Err(TrainError::bad_value("model.logit_scale_init", scale, format!("in (0, {}]", crate::model::MAX_LOGIT_SCALE)));
            }
            model.logit_scale = burn::module::Param::from_tensor(Tensor::from_floats([scale.ln() as f32], device));
        }
        return Ok((model, model_config.clone()));
    }
    let path = Path::new(init);
    let init_error = |e: Box<dyn std::error::Error + Send + Sync>| TrainError::Init { path: path.to_path_buf(), source: e };
    let bytes = std::fs::read(path).map_err(|e| init_error(e.into()))?;
    // A segclip weights file, else a checkpoint the importer knows; a damaged segclip file keeps
    // its own error rather than the importer's.
    let (tensors, found) = match format::read(&bytes) {
        Ok(file) => (file.tensors, file.config),
        Err(format::WeightsError::NotSegclip(_)) => {
            let imported = import::import_for_training(path, None).map_err(|e| init_error(e.into()))?;
            (imported.tensors, imported.config)
        }
        Err(e) => return Err(init_error(e.into())),
    };
    let mut model = fresh(&found);
    let report = model_io::apply_tensors(&mut model, &tensors, true).map_err(|e| init_error(e.into()))?;
    // The parameters the file did not have start fresh, drawn here in module order.
    model_io::initialise_all(&model);
    if !report.initialised.is_empty() {
        eprintln!(
            "model.init: {} parameters not in {} start fresh (e.g. {})",
            report.initialised.len(),
            path.display(),
            report.initialised[0]
        );
    }
    Ok((model, found))
}
