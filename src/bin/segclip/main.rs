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

/// The protocol's flags (`segclip::pipeline::Protocol`, each field's doc comment its help),
/// kept as given: `apply` changes only the settings named on the command line, over the model's
/// own (its manifest entry, else its file's).
#[derive(Clone, Debug)]
pub struct ProtocolFlags(clap::ArgMatches);

impl clap::FromArgMatches for ProtocolFlags {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        Ok(Self(matches.clone()))
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        self.0 = matches.clone();
        Ok(())
    }
}

impl clap::Args for ProtocolFlags {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        <segclip::pipeline::Protocol as clap::Args>::augment_args(cmd)
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        <segclip::pipeline::Protocol as clap::Args>::augment_args_for_update(cmd)
    }
}

impl ProtocolFlags {
    /// The flags given on the command line (`--bg-thresh`, ...).
    fn given(&self) -> Vec<String> {
        let cmd = <segclip::pipeline::Protocol as clap::Args>::augment_args(clap::Command::new("protocol"));
        cmd.get_arguments()
            .filter(|a| self.0.value_source(a.get_id().as_str()) == Some(clap::parser::ValueSource::CommandLine))
            .filter_map(|a| a.get_long())
            .map(|long| format!("--{long}"))
            .collect()
    }

    /// `protocol` with the given flags' values.
    pub fn over(&self, mut protocol: segclip::pipeline::Protocol) -> anyhow::Result<segclip::pipeline::Protocol> {
        use clap::FromArgMatches;
        protocol.update_from_arg_matches(&self.0)?;
        let given = self.given();
        protocol.after_flags(&given.iter().map(String::as_str).collect::<Vec<_>>());
        Ok(protocol)
    }

    /// Sets `segmenter`'s protocol for the weights at `weights` (the bundled model when `None`):
    /// its manifest entry's when it has one, else the model's own, with the given flags over
    /// it. A flag the model's kind does not use is refused. Returns the background threshold.
    pub fn apply(&self, segmenter: &mut segclip::pipeline::Segmenter, weights: Option<&std::path::Path>) -> anyhow::Result<f32> {
        let own = match manifest_entry(weights)? {
            Some(entry) => entry.protocol,
            None => segmenter.own_protocol(),
        };
        segmenter.set_protocol(self.over(own)?)?;
        Ok(segmenter.protocol.bg_thresh)
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
    let segmenter = segclip::pipeline::Segmenter::from_file(file, tokenizer, device).with_context(|| path.display().to_string())?;
    if segmenter.kind() == segclip::pipeline::Kind::Dense {
        eprintln!("{}: {} ({} templates)", path.display(), segmenter.describe(), segmenter.protocol.templates.len());
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
    let manifest = segclip::pipeline::manifest::Manifest::parse(&text, &manifest_path.display().to_string()).map_err(anyhow::Error::msg)?;
    let file = &manifest.default_model().ok_or_else(none)?.file;
    Ok(dir.join(file))
}

/// The manifest entry of the weights at `weights` (`manifest.json` beside the file, entry with
/// the same file name; the bundled model when `None`), so `segclip eval` scores a shipped model
/// by its own rule, threshold and windows. `None` when the file has no manifest entry.
pub fn manifest_entry(weights: Option<&std::path::Path>) -> anyhow::Result<Option<segclip::pipeline::manifest::ManifestEntry>> {
    let path = match weights {
        Some(p) => p.to_path_buf(),
        None => bundled_model()?,
    };
    let manifest_path = path.with_file_name("manifest.json");
    let Ok(text) = std::fs::read_to_string(&manifest_path) else { return Ok(None) };
    let manifest = segclip::pipeline::manifest::Manifest::parse(&text, &manifest_path.display().to_string()).map_err(anyhow::Error::msg)?;
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
    /// Score a weights file on a dataset (a world's split, emoji:val or shapes:val, or a VOC-layout folder): mIoU, per-class IoU.
    Eval(eval::EvalArgs),
    /// Write a split of scenes of the emoji world or the shapes world in VOC layout.
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
