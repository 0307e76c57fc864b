//! Native training (docs/segclip.md, "Training"): the three losses, AdamW with the
//! reference's groups and schedule, checkpoints with resume, validation signals on the training
//! world's dev scenes (never `val`), a CSV log and a plot of the curves.
//!
//! A loop of our own rather than burn-train's `Learner`: the learning-rate groups and decay rule
//! are per parameter name, a batch is a pure function of (seed, step) so resuming needs no
//! loader state, and the page's and CI's builds stay free of burn-train (this module is
//! native-only).

pub mod augment;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod log;
pub mod losses;
pub mod optim;
pub mod plot;
pub mod replay;
// Felzenszwalb lives with the pipeline, which also snaps label maps to it (src/pipeline/superpixels.rs).
pub use crate::pipeline::superpixels;

use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};

use crate::data::rng::mix64;
use crate::data::Split;
use crate::model::{Assignment, SegClip, SegClipConfig, TokenBatch};
use crate::pipeline::Segmenter;
use crate::tokenizer::ClipTokenizer;
use crate::weights::format::sha256_hex;
use crate::weights::{format, import, model_io};
use config::LossSection;
pub use config::TrainConfig;
pub use log::{read_log, LogRow, ValSignals, LOG_HEADER};
use optim::{AdamW, GradientSum};

/// How a run is driven (the CLI fills this; tests too).
#[derive(Clone)]
pub struct TrainOptions {
    /// Set by Ctrl-C: the loop writes a checkpoint at the next step boundary and returns.
    pub stop: Arc<AtomicBool>,
    /// Stop (as if interrupted) once this many steps are done; for tests of resuming.
    pub stop_after: Option<u64>,
    /// Show a progress bar (off in tests).
    pub progress: bool,
    /// Where the steps run. Checkpoints hold host tensors, so a run may continue on another
    /// backend than it started on.
    pub backend: crate::backend::BackendKind,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self { stop: Arc::new(AtomicBool::new(false)), stop_after: None, progress: false, backend: crate::backend::BackendKind::Cpu }
    }
}

/// What a run did.
#[derive(Debug)]
pub struct TrainSummary {
    pub run_dir: PathBuf,
    pub first_step: u64,
    pub steps_done: u64,
    pub interrupted: bool,
    pub last: Option<LogRow>,
    pub val_miou: Option<f64>,
    pub wall_s: f64,
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
fn initial_model(config: &TrainConfig, model_config: &SegClipConfig, device: &Device) -> Result<(SegClip, SegClipConfig), String> {
    let with_recon = config.loss.reconstruction;
    let fresh = |c: &SegClipConfig| fresh_model(c, with_recon, device);
    let init = config.model.init.as_str();
    if init == "scratch" {
        let mut model = fresh(model_config);
        model_io::initialise_all(&model);
        if let Some(scale) = config.model.logit_scale_init {
            if !(scale > 0.0 && scale <= crate::model::MAX_LOGIT_SCALE) {
                return Err(format!("model.logit_scale_init {scale} must be in (0, {}]", crate::model::MAX_LOGIT_SCALE));
            }
            model.logit_scale = burn::module::Param::from_tensor(Tensor::from_floats([scale.ln() as f32], device));
        }
        return Ok((model, model_config.clone()));
    }
    let path = Path::new(init);
    let bytes = std::fs::read(path).map_err(|e| format!("model.init {}: {e}", path.display()))?;
    // A segclip weights file, else a checkpoint the importer knows; a damaged segclip file keeps
    // its own error rather than the importer's.
    let (tensors, found) = match format::read(&bytes) {
        Ok(file) => (file.tensors, file.config),
        Err(format::WeightsError::NotSegclip(_)) => {
            let imported = import::import_for_training(path, None).map_err(|e| format!("model.init {}: {e}", path.display()))?;
            (imported.tensors, imported.config)
        }
        Err(e) => return Err(format!("model.init {}: {e}", path.display())),
    };
    let mut model = fresh(&found);
    let report = model_io::apply_tensors(&mut model, &tensors, true).map_err(|e| format!("model.init {}: {e}", path.display()))?;
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

fn scalar(t: Tensor<1>) -> f64 {
    t.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 scalar")[0] as f64
}

/// Trains as `config` says, writing into `config.run.out`; with `resume`, continues the run
/// folder's checkpoint (whose stored config then governs the run).
/// Batches are a pure function of (seed, step) and the device generator is reseeded every step,
/// but burn's CPU backend keeps one generator for the whole process: a run is bit-reproducible
/// only while nothing else in the process draws random numbers meanwhile (the CLI runs one).
pub fn train(config: &TrainConfig, resume: bool, tokenizer_json: &[u8], options: &TrainOptions) -> Result<TrainSummary, String> {
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
    fn set_up(config: &TrainConfig, resume: bool, tokenizer_json: &'a [u8], options: &TrainOptions) -> Result<(Self, SegClip), String> {
        let run_dir = PathBuf::from(&config.run.out);
        let ckpt_path = checkpoint::path_in(&run_dir);
        let tokenizer = ClipTokenizer::from_bytes(tokenizer_json).map_err(|e| e.to_string())?;
        let tokenizer_sha = sha256_hex(tokenizer_json);
        let device = crate::backend::device(options.backend)?.autodiff();

        // A fresh run or the continuation of a checkpoint.
        let OpenRun { config, model, model_config, optimizer, first_step } =
            open_run(config, resume, &tokenizer_sha, &run_dir, &ckpt_path, &device)?;
        if tokenizer.vocab_size() > model_config.vocab_size {
            return Err(format!(
                "the tokenizer has {} tokens but the model's vocabulary is {}: set model.overrides.vocab_size",
                tokenizer.vocab_size(),
                model_config.vocab_size
            ));
        }
        let total = config.optim.steps;
        if first_step >= total {
            return Err(format!("{}: the run already finished all {total} steps", ckpt_path.display()));
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
    fn one_step(&mut self, model: SegClip) -> Result<(SegClip, StepDone), String> {
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
            return Err(format!("step {step}: the loss is {loss} (contrastive {lc}, reconstruction {lr}, superpixel {ls}); checkpoint of step {step} kept, lower the learning rate"));
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
    fn validate_if_due(&mut self, model: &SegClip, row: &mut LogRow) -> Result<(), String> {
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
    fn record(&mut self, done: StepDone) -> Result<(), String> {
        let StepDone { row, center_usage } = done;
        writeln!(self.log, "{}", row.to_csv()).map_err(|e| format!("{}: {e}", self.log_path.display()))?;
        self.bar.set_message(format!(
            "loss {:.3} (c {:.3} r {:.3} s {:.4} u {:.3}) {:.1} samples/s",
            row.loss, row.contrastive, row.reconstruction, row.superpixel, center_usage, row.samples_per_s
        ));
        self.bar.set_position(self.step);
        self.rows.push(row);
        Ok(())
    }

    /// Writes the checkpoint every `run.checkpoint_every` steps and after the last.
    fn checkpoint_if_due(&self, model: &SegClip) -> Result<(), String> {
        if self.step % self.config.run.checkpoint_every == 0 || self.step == self.config.optim.steps {
            self.save(model)?;
        }
        Ok(())
    }

    /// The checkpoint of the steps done so far.
    fn save(&self, model: &SegClip) -> Result<(), String> {
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
    fn report(self, model: &SegClip, interrupted: bool, started: Instant) -> Result<TrainSummary, String> {
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
fn open_log(run_dir: &Path, resume: bool, first_step: u64) -> Result<(PathBuf, std::fs::File, Vec<LogRow>), String> {
    let log_path = run_dir.join("log.csv");
    let rows: Vec<LogRow> =
        if resume { read_log(run_dir).unwrap_or_default().into_iter().filter(|r| r.step <= first_step).collect() } else { Vec::new() };
    let mut text = String::from(LOG_HEADER);
    text.push('\n');
    for r in &rows {
        text.push_str(&r.to_csv());
        text.push('\n');
    }
    std::fs::write(&log_path, text).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let log = std::fs::OpenOptions::new().append(true).open(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
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
fn open_run(config: &TrainConfig, resume: bool, tokenizer_sha: &str, run_dir: &Path, ckpt_path: &Path, device: &Device) -> Result<OpenRun, String> {
    Ok(if resume {
        let ck = checkpoint::read(ckpt_path)?;
        if ck.tokenizer_sha256 != tokenizer_sha {
            return Err(format!("{}: made with another tokenizer (sha256 {})", ckpt_path.display(), ck.tokenizer_sha256));
        }
        let mut model = fresh_model(&ck.model_config, ck.config.loss.reconstruction, device);
        model_io::apply_tensors(&mut model, &ck.model, false).map_err(|e| format!("{}: {e}", ckpt_path.display()))?;
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
            return Err(format!(
                "{} already holds a checkpoint (step {step}): resume it with --resume, or set run.out to another folder",
                run_dir.display()
            ));
        }
        std::fs::create_dir_all(run_dir).map_err(|e| format!("{}: {e}", run_dir.display()))?;
        device.seed(config.run.seed);
        let model_config = config.model.resolve()?;
        let (model, model_config) = initial_model(config, &model_config, device)?;
        std::fs::write(run_dir.join("config.toml"), config.to_toml()).map_err(|e| format!("{}: {e}", run_dir.display()))?;
        OpenRun { config: config.clone(), model, model_config, optimizer: AdamW::new(config.optim.clone()), first_step: 0 }
    })
}

/// One step's loss terms, averaged over its micro-batches (unweighted).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepLosses {
    pub contrastive: f64,
    pub reconstruction: f64,
    pub superpixel: f64,
    pub center_usage: f64,
    /// The group-noun term (0 when off, or when no caption of the batch names a class).
    pub group_nouns: f64,
}

/// The Gumbel noise of one micro-batch, given rather than drawn: uniform samples for the full
/// pass [B, L, P] and for the masked reconstruction pass [B, L, K] (the parity test feeds
/// PyTorch's).
#[derive(Clone, Debug)]
pub struct GivenNoise {
    pub full: Tensor<3>,
    pub masked: Tensor<3>,
}

/// One step's forward and backward passes: the gradients of every loss that is on, summed over
/// the micro-batches, and the loss terms. The Gumbel noise is drawn from the device's generator,
/// or taken from `noise` (one per micro-batch).
pub fn step_gradients(
    model: &SegClip,
    model_config: &SegClipConfig,
    micro_batches: &[data::Batch],
    config: &TrainConfig,
    noise: Option<&[GivenNoise]>,
    device: &Device,
) -> Result<(GradientSum, StepLosses), String> {
    let l = &config.loss;
    let mut sum = GradientSum::default();
    let (mut lc, mut lr, mut ls, mut usage, mut gn) = (0.0, 0.0, 0.0, 0.0, 0.0);
    if !(l.contrastive || l.superpixel || l.center_usage_weight > 0.0 || l.reconstruction) {
        return Err("no loss is on".into());
    }
    for (micro, b) in micro_batches.iter().enumerate() {
        let terms = micro_batch_gradients(model, b, config, model_config, noise.and_then(|n| n.get(micro)), device, &mut sum)?;
        sum.count_micro_batch();
        lc += terms.contrastive;
        lr += terms.reconstruction;
        ls += terms.superpixel;
        usage += terms.center_usage;
        gn += terms.group_nouns;
    }
    let k = micro_batches.len() as f64;
    Ok((sum, StepLosses { contrastive: lc / k, reconstruction: lr / k, superpixel: ls / k, center_usage: usage / k, group_nouns: gn / k }))
}

/// A copy of `model` whose parameters are new autodiff leaves over the same values (nothing is
/// copied but the bookkeeping): gradients taken through it are found on it, under the same names.
fn own_leaves(model: &SegClip) -> SegClip {
    struct OwnLeaves;
    impl burn::module::ModuleMapper for OwnLeaves {
        fn map_float<const D: usize>(&mut self, param: burn::module::Param<Tensor<D>>) -> burn::module::Param<Tensor<D>> {
            param.map(|t| {
                let tracked = t.is_require_grad();
                let t = t.detach();
                if tracked {
                    t.require_grad()
                } else {
                    t
                }
            })
        }
    }
    model.clone().map(&mut OwnLeaves)
}

/// What a part sends the step's thread (its embeddings, detached) and gets back (the loss
/// gradients with respect to them), by the same names: image [n, E], text [n, E], and the group
/// embeddings [n, L, E] when the group-noun term is on.
struct Embeddings {
    image: Tensor<2>,
    text: Tensor<2>,
    groups: Option<Tensor<3>>,
}

/// The gradient of a loss with respect to `t`, back on the training device as a constant: what a
/// part's surrogate multiplies its own embeddings by.
fn gradient_constant<const D: usize>(t: &Tensor<D>, grads: &burn::tensor::Gradients, device: &Device) -> Tensor<D> {
    let g = t.grad(grads).expect("the embeddings took part in the loss");
    Tensor::from_data(g.into_data(), device)
}

/// Why a part of a micro-batch stopped short.
enum PartFailure {
    /// Its own error.
    Failed(String),
    /// Another part failed and closed this one's gradient channel: nothing of its own to report.
    Released,
}

impl<E: Into<String>> From<E> for PartFailure {
    fn from(e: E) -> Self {
        Self::Failed(e.into())
    }
}

/// One micro-batch's forward and backward passes, its gradients added to `sum`; the loss terms
/// (unweighted, as the whole micro-batch's).
///
/// The samples are split into two parts that run on two threads: burn's element-wise kernels are
/// single-threaded, and one pass alone kept one of this machine's two cores busy
/// (docs/benchmarks.md, "Training step"). Every loss but the contrastive one is a mean over
/// samples (superpixel KL, reconstruction), so the whole batch's is the parts' weighted by their
/// share. The contrastive loss couples all samples through their embeddings: each part sends its
/// embeddings here, the loss and its gradient with respect to the embeddings are computed here on
/// the whole batch, and each part back-propagates `<embedding, that gradient>` through its own
/// graph. The gradients add up to the whole batch's (tests/train_parity.rs holds them to
/// PyTorch's). All random draws happen on this thread, in a fixed order, so a run stays a
/// function of its seed. The center-usage term is not a per-sample mean: with it on, one part.
/// The group-noun term couples the samples like the contrastive loss and goes the same way: the
/// parts send their group embeddings too, and the noun prompts are encoded here.
fn micro_batch_gradients(
    model: &SegClip,
    b: &data::Batch,
    config: &TrainConfig,
    model_config: &SegClipConfig,
    given: Option<&GivenNoise>,
    device: &Device,
    sum: &mut GradientSum,
) -> Result<StepLosses, String> {
    let l = &config.loss;
    let inputs = PartInputs::new(model, b, l, model_config, given, device);
    let nouns = b.nouns.as_ref().filter(|_| l.group_nouns_weight > 0.0 && l.contrastive);
    let n = b.batch;
    let parts: Vec<Range<usize>> = if n >= 2 && l.center_usage_weight == 0.0 { vec![0..n / 2, n / 2..n] } else { vec![0..n] };

    std::thread::scope(|scope| -> Result<StepLosses, String> {
        let mut exchange = Exchange { to_parts: Vec::new(), from_parts: Vec::new(), parts: parts.clone() };
        let mut handles = Vec::new();
        for range in parts {
            // Image, text and (for the group-noun term) group embeddings, detached, to this
            // thread, their loss gradients back. A part that fails drops its sender; its error
            // comes back through `join`.
            let (embed_tx, embed_rx) = mpsc::channel::<Embeddings>();
            let (grad_tx, grad_rx) = mpsc::channel::<Embeddings>();
            exchange.to_parts.push(grad_tx);
            exchange.from_parts.push(embed_rx);
            let part = Part { model, batch: b, loss: l, range, inputs: inputs.clone(), group_nouns: nouns.is_some(), device };
            handles.push(scope.spawn(move || part.gradients(embed_tx, grad_rx)));
        }
        let (contrastive, group_nouns) = exchange.contrastive_gradients(model, config, nouns, device, sum)?;
        drop(exchange);
        let results: Vec<_> = handles.into_iter().map(|h| h.join().expect("a training thread panicked")).collect();
        sum_parts(results, StepLosses { contrastive, group_nouns, ..StepLosses::default() }, config.optim.freeze_embeddings, sum)
    })
}

/// The whole micro-batch's tensors that its parts narrow to their samples: the images and the
/// Gumbel noise of the full pass and (when the reconstruction loss is on) the masked one.
#[derive(Clone)]
struct PartInputs {
    images: Tensor<4>,
    full_noise: Tensor<3>,
    masked_noise: Option<Tensor<3>>,
}

impl PartInputs {
    /// The images of `b` on `device`, and the noise given, or drawn here (full pass first).
    fn new(model: &SegClip, b: &data::Batch, l: &LossSection, model_config: &SegClipConfig, given: Option<&GivenNoise>, device: &Device) -> Self {
        let n = b.batch;
        let images = Tensor::<4>::from_data(TensorData::new(b.images.clone(), [n, 3, b.size, b.size]), device);
        let centers = model.visual.group.semantic_center.dims()[0];
        let grid = b.size / model_config.patch_size;
        let uniform = |shape: [usize; 3]| Tensor::<3>::random(shape, burn::tensor::Distribution::Uniform(1e-10, 1.0), device);
        let full_noise = match given {
            Some(g) => g.full.clone(),
            None => uniform([n, centers, grid * grid]),
        };
        let masked_noise = match (l.reconstruction, given) {
            (false, _) => None,
            (true, Some(g)) => Some(g.masked.clone()),
            (true, None) => Some(uniform([n, centers, b.keep.first().map_or(0, Vec::len)])),
        };
        Self { images, full_noise, masked_noise }
    }
}

/// One part of a micro-batch: the samples `range` of `batch`, run on a thread of its own.
struct Part<'a> {
    model: &'a SegClip,
    batch: &'a data::Batch,
    loss: &'a LossSection,
    range: Range<usize>,
    inputs: PartInputs,
    /// Whether the step's thread wants the group embeddings too (the group-noun term is on).
    group_nouns: bool,
    device: &'a Device,
}

/// What a part hands back: its loss terms (weighted by its share of the micro-batch), its
/// gradients, and the model copy they were taken on.
type PartOutput = (StepLosses, Vec<burn::tensor::Gradients>, SegClip);

impl Part<'_> {
    /// The part's forward and backward passes. Its embeddings go to the step's thread through
    /// `embed_tx` and their contrastive gradients come back through `grad_rx`.
    fn gradients(self, embed_tx: mpsc::Sender<Embeddings>, grad_rx: mpsc::Receiver<Embeddings>) -> Result<PartOutput, PartFailure> {
        // burn's autodiff merges graphs that share a leaf, and a graph's backward pass holds its
        // lock throughout: on the shared parameters the two parts would take turns. Each part
        // works on its own leaves over the same values.
        let model = &own_leaves(self.model);
        let mut out = StepLosses::default();
        let mut grads = Vec::new();
        let images = self.inputs.images.clone().narrow(0, self.range.start, self.range.len());
        let terms = self.full_pass(model, images.clone(), &embed_tx, &grad_rx, &mut out)?;
        if let Some(total) = terms.into_iter().reduce(|a, b| a + b) {
            grads.push(total.backward());
        }
        if let Some(g) = self.reconstruction(model, images, &mut out)? {
            grads.push(g);
        }
        Ok((out, grads, model.clone()))
    }

    /// The full pass's weighted loss terms: superpixel KL, center usage, and the contrastive
    /// surrogate (`<embedding, its gradient>` from the step's thread).
    fn full_pass(
        &self,
        model: &SegClip,
        images: Tensor<4>,
        embed_tx: &mpsc::Sender<Embeddings>,
        grad_rx: &mpsc::Receiver<Embeddings>,
        out: &mut StepLosses,
    ) -> Result<Vec<Tensor<1>>, PartFailure> {
        let (l, range, device) = (self.loss, self.range.clone(), self.device);
        let (start, len) = (range.start, range.len());
        let share = len as f64 / self.batch.batch as f64;
        let uniform = self.inputs.full_noise.clone().narrow(0, start, len);
        let vision = model.visual.forward(images, Assignment::GumbelGiven { tau: l.gumbel_tau, uniform });
        let text = if l.contrastive { Some(model.text(&TokenBatch::new(&self.batch.tokens[range.clone()])?.trimmed(), device)) } else { None };
        let mut terms: Vec<Tensor<1>> = Vec::new();
        if l.superpixel {
            let sp = self.batch.superpixels.as_ref().ok_or("batch without superpixels")?;
            let loss = losses::superpixel_kl(vision.hard_assign.clone(), &sp[range.clone()], device);
            out.superpixel = scalar(loss.clone()) * share;
            terms.push(loss * (l.superpixel_weight * share));
        }
        if l.center_usage_weight > 0.0 {
            let loss = losses::center_usage(vision.soft_assign.clone());
            out.center_usage = scalar(loss.clone());
            terms.push(loss * l.center_usage_weight);
        }
        if let Some(text) = &text {
            let groups = self.group_nouns.then(|| vision.group_embed.clone().detach());
            let _ = embed_tx.send(Embeddings { image: vision.image_embed.clone().detach(), text: text.clone().detach(), groups });
            let g = grad_rx.recv().map_err(|_| PartFailure::Released)?;
            let mut surrogate = (vision.image_embed.clone() * g.image).sum() + (text.clone() * g.text).sum();
            if let Some(g_groups) = g.groups {
                surrogate = surrogate + (vision.group_embed.clone() * g_groups).sum();
            }
            terms.push(surrogate);
        }
        Ok(terms)
    }

    /// The masked reconstruction pass's gradients (none when that loss is off).
    fn reconstruction(&self, model: &SegClip, images: Tensor<4>, out: &mut StepLosses) -> Result<Option<burn::tensor::Gradients>, PartFailure> {
        let Some(masked) = &self.inputs.masked_noise else { return Ok(None) };
        let (l, range) = (self.loss, self.range.clone());
        let (start, len) = (range.start, range.len());
        let share = len as f64 / self.batch.batch as f64;
        let uniform = masked.clone().narrow(0, start, len);
        let recon = model
            .reconstruct(images, &self.batch.keep[range], Assignment::GumbelGiven { tau: l.gumbel_tau, uniform })
            .ok_or("reconstruction is on but the model has no reconstruction heads")?;
        out.reconstruction = scalar(recon.loss.clone()) * share;
        Ok(Some((recon.loss * (l.reconstruction_weight * share)).backward()))
    }
}

/// The step's thread's ends of the parts' channels, in the parts' order.
struct Exchange {
    to_parts: Vec<mpsc::Sender<Embeddings>>,
    from_parts: Vec<mpsc::Receiver<Embeddings>>,
    parts: Vec<Range<usize>>,
}

impl Exchange {
    /// The contrastive loss (and the group-noun term) over the whole micro-batch, on the parts'
    /// embeddings: each part gets its rows of the gradients back, and the gradients of this
    /// thread's graph (the logit scale, the noun prompts' text tower) go into `sum`. Returns the
    /// two terms (0 when the contrastive loss is off). When a part fails, the others are
    /// released (their gradient channels close as this is dropped) and `join` reports it.
    fn contrastive_gradients(
        &self,
        model: &SegClip,
        config: &TrainConfig,
        nouns: Option<&data::NounPrompts>,
        device: &Device,
        sum: &mut GradientSum,
    ) -> Result<(f64, f64), String> {
        let l = &config.loss;
        let received: Option<Vec<Embeddings>> = if l.contrastive { self.from_parts.iter().map(|rx| rx.recv().ok()).collect() } else { None };
        let Some(received) = received else { return Ok((0.0, 0.0)) };
        let cat2 = |f: fn(&Embeddings) -> &Tensor<2>| Tensor::cat(received.iter().map(|e| f(e).clone()).collect(), 0).require_grad();
        let image = cat2(|e| &e.image);
        let text = cat2(|e| &e.text);
        let loss = losses::contrastive(image.clone(), text.clone(), model.scale());
        let contrastive = scalar(loss.clone());
        let mut total = loss;
        let mut group_nouns = 0.0;
        let groups = match nouns {
            Some(nouns) => {
                let groups: Option<Vec<Tensor<3>>> = received.iter().map(|e| e.groups.clone()).collect();
                let groups = Tensor::cat(groups.ok_or("a part sent no group embeddings")?, 0).require_grad();
                let prompts = model.text(&TokenBatch::new(&nouns.tokens)?.trimmed(), device);
                let term = losses::group_nouns(groups.clone(), prompts, &nouns.named, &nouns.unknown, model.scale());
                group_nouns = scalar(term.clone());
                total = total + term * l.group_nouns_weight;
                Some(groups)
            }
            None => None,
        };
        let grads = total.backward();
        self.send_back(&image, &text, groups.as_ref(), &grads, device);
        sum.add_part(model, &grads, config.optim.freeze_embeddings);
        Ok((contrastive, group_nouns))
    }

    /// Sends each part its rows of the loss gradients with respect to the embeddings.
    fn send_back(&self, image: &Tensor<2>, text: &Tensor<2>, groups: Option<&Tensor<3>>, grads: &burn::tensor::Gradients, device: &Device) {
        let (g_image, g_text) = (gradient_constant(image, grads, device), gradient_constant(text, grads, device));
        let g_groups = groups.map(|g| gradient_constant(g, grads, device));
        for (tx, range) in self.to_parts.iter().zip(&self.parts) {
            let (start, len) = (range.start, range.len());
            let _ = tx.send(Embeddings {
                image: g_image.clone().narrow(0, start, len),
                text: g_text.clone().narrow(0, start, len),
                groups: g_groups.as_ref().map(|g| g.clone().narrow(0, start, len)),
            });
        }
    }
}

/// The micro-batch's loss terms: `total` (the contrastive and group-noun terms) plus the parts'
/// own, their gradients added to `sum`. A failing part's own error is reported, not the release
/// of a part it stopped.
fn sum_parts(results: Vec<Result<PartOutput, PartFailure>>, mut total: StepLosses, freeze: bool, sum: &mut GradientSum) -> Result<StepLosses, String> {
    let mut released = false;
    for r in &results {
        match r {
            Err(PartFailure::Failed(e)) => return Err(e.clone()),
            Err(PartFailure::Released) => released = true,
            Ok(_) => {}
        }
    }
    if released {
        return Err("a part of the batch was released, but no part reported a failure".into());
    }
    for (part, grads, own) in results.into_iter().flatten() {
        total.reconstruction += part.reconstruction;
        total.superpixel += part.superpixel;
        total.center_usage += part.center_usage;
        for g in &grads {
            sum.add_part(&own, g, freeze);
        }
    }
    Ok(total)
}

/// The signals of the current model on `run.val_scenes` dev scenes of the training world,
/// through the same pipeline the CLI and the page use, on `device` (an inference device).
pub fn validate(
    model: &SegClip,
    model_config: &SegClipConfig,
    tokenizer_json: &[u8],
    config: &TrainConfig,
    device: &Device,
) -> Result<ValSignals, String> {
    let inference = model.valid();
    let tokenizer = ClipTokenizer::from_bytes(tokenizer_json).map_err(|e| e.to_string())?;
    let mut segmenter = Segmenter::new(inference, model_config.clone(), tokenizer, device.clone())?;
    segmenter.options.bg_thresh = config.run.val_bg_thresh;
    // The rule the exported file will carry (src/bin/segclip/export.rs).
    if config.loss.group_nouns_background {
        segmenter.options.background_prompts = crate::data::emoji::background_prompts();
    }
    let world = config.val_world();
    let dev = crate::data::world::DEV_START;
    let s = crate::eval::score_world(&mut segmenter, &world, Split::Train, dev..dev + config.run.val_scenes, |_| {})?;
    Ok(ValSignals {
        miou: s.pipeline.mean_iou().unwrap_or(0.0),
        miou_true_bg: s.true_background.mean_iou().unwrap_or(0.0),
        naming: s.naming_accuracy(),
        centers: s.centers_used,
        prompt_cos: s.prompt_cosine,
    })
}

/// The inference weights of a checkpoint: the reconstruction heads dropped.
pub fn inference_tensors(ck: &checkpoint::Checkpoint) -> std::collections::BTreeMap<String, format::HostTensor> {
    ck.model.iter().filter(|(k, _)| !k.starts_with("recon.")).map(|(k, v)| (k.clone(), v.clone())).collect()
}
