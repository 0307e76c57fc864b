//! `segclip`: the native companion of the page. Each subcommand is a thin call into the library.

mod bench;
mod convert;
mod eval;
mod export;
mod fetch;
mod progress;
mod segment;
mod synth;
mod train;

/// mimalloc keeps freed tensor buffers for reuse; glibc's malloc returned them to the kernel and
/// faulted fresh zeroed pages in on every op (measured in docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (the enum's 16th entry in libmimalloc-sys's bundled v3
/// header, c_src/mimalloc/v3/include/mimalloc.h; the Rust bindings do not name it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Never hand freed memory back to the kernel. By default mimalloc purges memory that stays free
/// for 10 ms, and a training step frees its activations long enough before the next step wants
/// them again: the kernel then zeroes fresh huge pages for every step (clear_page was 23% of a
/// bundled-config step's profile, and the step took 25% longer; docs/benchmarks.md). The CLI's
/// peak memory is what it keeps.
fn keep_freed_memory() {
    // SAFETY: sets a process-wide allocator option; mimalloc reads it on each purge decision.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// The tokenizer every model of this build uses (static/tokenizer.json, made by
/// scripts/make-fixtures from open_clip's vocabulary).
pub const TOKENIZER_JSON: &[u8] = include_bytes!("../../../static/tokenizer.json");

/// The inference protocol's settings `segment` and `eval` share; unset, the weights' defaults.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ProtocolArgs {
    /// Background threshold. Default: the one the weights' manifest entry records (the bundled
    /// model's own), else a dense file's own (its method's VOC setting), else 0.8 (VOC 0.80, PASCAL
    /// Context 0.25, COCO-Object 0.65 in the SegCLIP release).
    #[arg(long)]
    bg_thresh: Option<f32>,
    /// Background prompts, comma-separated: texts that compete with the labels, a region they win
    /// being background (a dense file: the words of its background class). Default: the ones
    /// the weights file's header carries, else none (the release's threshold rule alone).
    /// "none" turns them off.
    #[arg(long)]
    background_prompts: Option<String>,
    /// Labels kept from the image-level ranking before groups are named (the release: 5).
    #[arg(long)]
    top_k: Option<usize>,
    /// Rescale the image's short side to this many pixels (default: the manifest entry's
    /// `windows`, else the model's input size; NACLIP evaluates VOC at 336, ClearCLIP at 448).
    /// Setting any of --short-side, --window, --stride sets aside the manifest's windows.
    #[arg(long)]
    short_side: Option<usize>,
    /// Sliding-window side in pixels of the rescaled image (default: the model's input size;
    /// ClearCLIP: 448).
    #[arg(long)]
    window: Option<usize>,
    /// Sliding-window stride in pixels (default: the window; a dense file's: half of it;
    /// ClearCLIP: 224).
    #[arg(long)]
    stride: Option<usize>,
    /// Snap label edges to Felzenszwalb superpixels of the rescaled image, "SCALE,SIGMA,MIN_SIZE"
    /// (e.g. 100,0.8,40): each superpixel takes the mean of its pixels' scores. Default: the
    /// manifest entry's `superpixels`, else none. "none" turns it off. SegCLIP models only.
    #[arg(long)]
    superpixels: Option<String>,
    /// Also run the mirrored image and average the two score maps ("on" / "off"). Default: the
    /// manifest entry's `flip`, else off. SegCLIP models only.
    #[arg(long)]
    flip: Option<Switch>,
    /// Refine the score map by averaging each pixel with its neighbours of like colour, this many
    /// times (pixel-adaptive mask refinement; TCL reads its masks with 10). Default: the
    /// manifest entry's `refine`, else none. "none" turns it off. SegCLIP models only.
    #[arg(long)]
    refine: Option<String>,
    /// More short sides, comma-separated (e.g. 128,192,224): the image is also rescaled to each,
    /// run through the same windows, and the score maps are averaged with the --short-side one
    /// (multi-scale). Default: the manifest entry's `windows`, else none; like them, set aside by
    /// --short-side, --window or --stride. "none" turns it off. SegCLIP models only.
    #[arg(long)]
    extra_short_sides: Option<String>,
}

/// An on/off setting that can also be left to the weights' manifest entry.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Switch {
    On,
    Off,
}

impl ProtocolArgs {
    /// Sets `segmenter`'s options for the weights at `weights` (the bundled model when `None`);
    /// returns the background threshold in use.
    pub fn apply(&self, segmenter: &mut segclip::pipeline::Segmenter, weights: Option<&std::path::Path>) -> anyhow::Result<f32> {
        if segmenter.dense_protocol().is_some() && (self.top_k.is_some() || self.superpixels.is_some() || self.flip.is_some() || self.refine.is_some() || self.extra_short_sides.is_some()) {
            anyhow::bail!(
                "--top-k, --superpixels, --flip, --refine and --extra-short-sides apply to SegCLIP's groups; this weights file is a plain CLIP segmented densely"
            );
        }
        let entry = manifest_entry(weights)?;
        let o = &mut segmenter.options;
        o.bg_thresh = match self.bg_thresh {
            Some(t) => t,
            None => entry.as_ref().and_then(|e| e.bg_thresh).map(|t| t as f32).unwrap_or(o.bg_thresh),
        };
        // The model's own windows (its manifest entry), unless the command line sets any.
        if let Some(w) = entry.as_ref().and_then(|e| e.windows.clone()) {
            if self.short_side.is_none() && self.window.is_none() && self.stride.is_none() {
                o.use_windows(w);
            }
        }
        o.superpixels = match &self.superpixels {
            Some(t) if t.trim().eq_ignore_ascii_case("none") => None,
            Some(t) => Some(
                segclip::pipeline::superpixels::FelzenszwalbParams::parse(t)
                    .map_err(|e| anyhow::anyhow!("--superpixels: {e} (\"none\" turns it off)"))?,
            ),
            None => entry.as_ref().and_then(|e| e.superpixels),
        };
        o.refine = match &self.refine {
            Some(t) if t.trim().eq_ignore_ascii_case("none") => None,
            Some(t) => Some(segclip::pipeline::refine::RefineParams::parse(t).map_err(|e| anyhow::anyhow!("--refine: {e} (\"none\" turns it off)"))?),
            None => entry.as_ref().and_then(|e| e.refine),
        };
        o.flip = match self.flip {
            Some(s) => s == Switch::On,
            None => entry.as_ref().is_some_and(|e| e.flip),
        };
        if let Some(p) = &self.background_prompts {
            o.background_prompts = if p.trim().eq_ignore_ascii_case("none") {
                Vec::new()
            } else {
                let prompts = segclip::labels::split_labels(p);
                segclip::labels::validate_background_prompts(&prompts)
                    .map_err(|e| anyhow::anyhow!("--background-prompts {p:?}: {e} (\"none\" turns them off)"))?;
                prompts
            };
        }
        if let Some(t) = &self.extra_short_sides {
            o.extra_short_sides = if t.trim().eq_ignore_ascii_case("none") {
                Vec::new()
            } else {
                segclip::pipeline::windows::parse_short_sides(t)
                    .map_err(|e| anyhow::anyhow!("--extra-short-sides: {e} (\"none\" turns them off)"))?
            };
        }
        if let Some(k) = self.top_k {
            anyhow::ensure!(k >= 1, "--top-k must be at least 1 (found {k})");
            o.top_k = k;
        }
        if let Some(v) = self.short_side {
            o.short_side = v;
        }
        if let Some(v) = self.window {
            o.window = v;
            o.whole_image = false;
        }
        if let Some(v) = self.stride {
            o.stride = v;
        }
        if self.extra_short_sides.is_some() {
            // Checked here, so a bad list is named by its flag before any image is read.
            let size = segmenter.config.image_size;
            let or_size = |v: usize| if v == 0 { size } else { v };
            segclip::pipeline::windows::validate_extra_short_sides(&o.extra_short_sides, or_size(o.short_side), or_size(o.window))
                .map_err(|e| anyhow::anyhow!("--extra-short-sides: {e}"))?;
        }
        Ok(o.bg_thresh)
    }
}

/// Loads a weights file (or the bundled model) into the shared inference pipeline.
pub fn load_segmenter(
    weights: Option<&std::path::Path>,
    backend: segclip::backend::BackendKind,
    residency: segclip::weights::Residency,
) -> anyhow::Result<segclip::pipeline::Segmenter> {
    use anyhow::Context;
    let bundled;
    let path = match weights {
        Some(p) => p,
        None => {
            bundled = bundled_model()?;
            eprintln!("using the bundled model {} (see weights/README.md; --weights FILE for another)", bundled.display());
            &bundled
        }
    };
    let source = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let device = segclip::backend::device(backend).map_err(anyhow::Error::msg)?;
    // A tensor at a time from the file, each decoded into the buffer the model keeps.
    let file = segclip::weights::format::read_model_from(&source, residency).with_context(|| path.display().to_string())?;
    let tokenizer_sha = segclip::weights::format::sha256_hex(TOKENIZER_JSON);
    if file.tokenizer_sha256 != tokenizer_sha {
        eprintln!(
            "warning: {} was made for another tokenizer (sha256 {}); this build's is {tokenizer_sha}",
            path.display(),
            file.tokenizer_sha256
        );
    }
    let tokenizer = segclip::tokenizer::ClipTokenizer::from_bytes(TOKENIZER_JSON)?;
    let segmenter = segclip::pipeline::Segmenter::from_file(file, tokenizer, device).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if let Some(p) = segmenter.dense_protocol() {
        eprintln!(
            "{}: plain CLIP, segmented densely with {} (logit scale {}, {} templates)",
            path.display(),
            p.method,
            p.logit_scale,
            segmenter.options.templates.len()
        );
    }
    Ok(segmenter)
}

/// The bundled model: the first int8 entry of `weights/manifest.json` in this checkout (or in
/// `$SEGCLIP_WEIGHTS_DIR`), read from disk; nothing is downloaded.
fn bundled_model() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::var_os("SEGCLIP_WEIGHTS_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("weights"));
    let manifest_path = dir.join("manifest.json");
    let none = || {
        anyhow::anyhow!(
            "no bundled model in {}: pass --weights FILE, a weights file made by `segclip convert` or `segclip export`",
            manifest_path.display()
        )
    };
    let text = std::fs::read_to_string(&manifest_path).map_err(|_| none())?;
    let manifest = segclip::weights::manifest::Manifest::parse(&text, &manifest_path.display().to_string()).map_err(anyhow::Error::msg)?;
    let file = &manifest.default_model().ok_or_else(none)?.file;
    Ok(dir.join(file))
}

/// The manifest entry of the weights at `weights` (`manifest.json` beside the file, entry with
/// the same file name; the bundled model when `None`), so `segclip eval` scores a shipped model
/// by its own rule, threshold and windows. `None` when the file has no manifest entry.
pub fn manifest_entry(weights: Option<&std::path::Path>) -> anyhow::Result<Option<segclip::weights::manifest::ManifestEntry>> {
    let path = match weights {
        Some(p) => p.to_path_buf(),
        None => bundled_model()?,
    };
    let manifest_path = path.with_file_name("manifest.json");
    let Ok(text) = std::fs::read_to_string(&manifest_path) else { return Ok(None) };
    let manifest = segclip::weights::manifest::Manifest::parse(&text, &manifest_path.display().to_string()).map_err(anyhow::Error::msg)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    Ok(manifest.entry(name).cloned())
}

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Prints an error chain and turns it into the exit code.
fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Parser)]
#[command(
    name = "segclip",
    version,
    about = "Open-vocabulary semantic segmentation (SegCLIP): \
segment images, train, evaluate, convert checkpoints and export the weights the page loads"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Segment images with free-form labels; writes overlays, index masks and JSON summaries.
    Segment(segment::SegmentArgs),
    /// Score a weights file on a dataset (synthetic split or VOC layout): mIoU, per-class IoU.
    Eval(eval::EvalArgs),
    /// Write a split of synthetic scenes (the emoji world or the shape world) in VOC layout.
    Synth(synth::SynthArgs),
    /// Train SegCLIP (contrastive, reconstruction and superpixel losses).
    Train(train::TrainArgs),
    /// Export a training checkpoint to the weights file the page loads (f32, f16 or int8).
    Export(export::ExportArgs),
    /// Convert a SegCLIP, OpenAI CLIP or Hugging Face CLIP checkpoint to a segclip weights file.
    Convert(convert::ConvertArgs),
    /// Download a model from the presets (weights/presets.json) and convert it as it streams in.
    Fetch(fetch::FetchArgs),
    /// Measure encode, segmentation and training-step speed on the available backends.
    Bench(bench::BenchArgs),
    /// Run a numeric self-check on a backend and report what it is.
    Backend {
        /// Which backend to check: cpu or wgpu.
        #[arg(long, default_value = "cpu")]
        backend: segclip::backend::BackendKind,
    },
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    match cli.command {
        Command::Segment(args) => report(segment::run(args)),
        Command::Eval(args) => report(eval::run(args)),
        Command::Synth(args) => report(synth::run(args)),
        Command::Train(args) => report(train::run(args)),
        Command::Export(args) => report(export::run(args)),
        Command::Convert(args) => report(convert::run(args)),
        Command::Fetch(args) => report(fetch::run(args)),
        Command::Bench(args) => report(bench::run(args)),
        Command::Backend { backend } => match run_selfcheck(backend) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run_selfcheck(kind: segclip::backend::BackendKind) -> Result<(), String> {
    let device = segclip::backend::device(kind)?;
    let started = std::time::Instant::now();
    let data = segclip::selfcheck::on_device(&device).into_data();
    let err = segclip::selfcheck::max_abs_error(&data)?;
    let ok = err <= segclip::selfcheck::TOLERANCE;
    println!(
        "backend: {kind}\nself-check: {} (max abs error {err:.2e}, {:.1} ms)",
        if ok { "ok" } else { "FAILED" },
        started.elapsed().as_secs_f64() * 1e3
    );
    if ok {
        Ok(())
    } else {
        Err(format!("backend {kind} computed a wrong result (error {err:.2e})"))
    }
}
