//! `segclip export CHECKPOINT OUT --dtype int8|f16|f32`: the weights file the page loads, plus
//! its entry (file, dtype, size, SHA-256, config) in the `manifest.json` beside it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use segclip::train::{checkpoint, inference_tensors};
use segclip::weights::format;
use segclip::weights::manifest::{Manifest, ManifestEntry, WindowProtocol};
use segclip::weights::quant::StorageDtype;

#[derive(clap::Args)]
pub struct ExportArgs {
    /// A training checkpoint (`checkpoint.safetensors`, or its run folder).
    checkpoint: PathBuf,
    /// The weights file to write.
    out: PathBuf,
    #[arg(long, default_value = "int8")]
    dtype: StorageDtype,
    /// Background threshold recorded in the manifest as the model's default.
    #[arg(long)]
    bg_thresh: Option<f32>,
    /// Sliding-window protocol recorded in the manifest as the model's default: the image's
    /// short side in pixels (with --stride; see `segclip eval --short-side`).
    #[arg(long, requires = "stride")]
    short_side: Option<usize>,
    /// Stride in pixels of that protocol's windows (of the model's input size).
    #[arg(long, requires = "short_side")]
    stride: Option<usize>,
    /// More short sides of that protocol, comma-separated (see `segclip eval
    /// --extra-short-sides`; "none": one scale).
    #[arg(long, requires = "short_side")]
    extra_short_sides: Option<String>,
    /// Superpixel snapping recorded in the manifest as the model's default, "SCALE,SIGMA,MIN_SIZE"
    /// (see `segclip eval --superpixels`).
    #[arg(long)]
    superpixels: Option<String>,
    /// Record the mirrored-image averaging (see `segclip eval --flip`) as the model's default.
    #[arg(long)]
    flip: bool,
    /// Record the score map's refinement, ITERATIONS (see `segclip eval --refine`), as the
    /// model's default.
    #[arg(long)]
    refine: Option<String>,
    /// Do not touch manifest.json.
    #[arg(long)]
    no_manifest: bool,
}

pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    let path = if args.checkpoint.is_dir() { checkpoint::path_in(&args.checkpoint) } else { args.checkpoint.clone() };
    let ck = checkpoint::read(&path).map_err(anyhow::Error::msg)?;
    let windows = match (args.short_side, args.stride) {
        (Some(short_side), Some(stride)) => {
            let extra_short_sides = match &args.extra_short_sides {
                Some(t) if t.trim().eq_ignore_ascii_case("none") => Vec::new(),
                Some(t) => segclip::pipeline::windows::parse_short_sides(t).map_err(|e| anyhow::anyhow!("--extra-short-sides: {e}"))?,
                None => Vec::new(),
            };
            let w = WindowProtocol { short_side, stride, extra_short_sides };
            w.validate(ck.model_config.image_size).map_err(|e| anyhow::anyhow!("--short-side/--stride/--extra-short-sides: {e}"))?;
            Some(w)
        }
        _ => None,
    };
    let superpixels = match &args.superpixels {
        Some(t) => Some(segclip::pipeline::superpixels::FelzenszwalbParams::parse(t).map_err(|e| anyhow::anyhow!("--superpixels: {e}"))?),
        None => None,
    };
    let refine = match &args.refine {
        Some(t) => Some(segclip::pipeline::refine::RefineParams::parse(t).map_err(|e| anyhow::anyhow!("--refine: {e}"))?),
        None => None,
    };
    let tensors = inference_tensors(&ck);
    // A model trained to match its backgrounds' words carries them as its background prompts.
    let background = if ck.config.loss.group_nouns_background { segclip::data::emoji::background_prompts() } else { Vec::new() };
    let bytes = format::write_with_background(&ck.model_config, &background, &ck.tokenizer_sha256, args.dtype, &tensors)?;
    // Prove the file loads before anyone ships it.
    let file = format::read_for_model(&bytes, format::Residency::F32).context("re-reading the exported file")?;
    segclip::weights::model_io::load_model(file, &segclip::backend::training_device().without_autodiff())
        .context("building a model from the exported file")?;
    segclip::files::write_atomic(&args.out, &bytes).map_err(anyhow::Error::msg)?;
    let sha = format::sha256_hex(&bytes);
    println!("wrote {} ({} bytes, {}, step {}, sha256 {sha})", args.out.display(), bytes.len(), args.dtype, ck.step);
    if !args.no_manifest {
        let manifest = update_manifest(&args.out, &bytes, &sha, args.dtype, &ck, args.bg_thresh, windows, superpixels, args.flip, refine)?;
        println!("manifest: {}", manifest.display());
    }
    Ok(())
}

fn update_manifest(
    out: &Path,
    bytes: &[u8],
    sha: &str,
    dtype: StorageDtype,
    ck: &checkpoint::Checkpoint,
    bg_thresh: Option<f32>,
    windows: Option<WindowProtocol>,
    superpixels: Option<segclip::pipeline::superpixels::FelzenszwalbParams>,
    flip: bool,
    refine: Option<segclip::pipeline::refine::RefineParams>,
) -> anyhow::Result<PathBuf> {
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let path = dir.join("manifest.json");
    let mut manifest = if path.exists() {
        let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
        Manifest::parse(&text, &path.display().to_string()).map_err(anyhow::Error::msg)?
    } else {
        Manifest::default()
    };
    let file = out.file_name().and_then(|n| n.to_str()).context("output file name")?.to_string();
    manifest.upsert(ManifestEntry {
        file,
        dtype: dtype.to_string(),
        size: bytes.len() as u64,
        sha256: sha.to_string(),
        config: ck.model_config.clone(),
        trained_steps: ck.step,
        tokenizer_sha256: ck.tokenizer_sha256.clone(),
        // f32 -> f64 would write 0.20000000298...; the threshold is a two-decimal setting.
        bg_thresh: bg_thresh.map(|t| (t as f64 * 1e4).round() / 1e4),
        windows,
        superpixels,
        flip,
        refine,
    });
    segclip::files::write_atomic(&path, manifest.to_json().as_bytes()).map_err(anyhow::Error::msg)?;
    Ok(path)
}
