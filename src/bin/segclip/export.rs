//! `segclip export CHECKPOINT OUT --dtype int8|f16|f32`: the weights file the page loads, plus
//! its entry (file, dtype, size, SHA-256, config) in the `manifest.json` beside it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use segclip::train::{checkpoint, inference_tensors};
use segclip::weights::format;
use segclip::pipeline::manifest::{Manifest, ManifestEntry};
use segclip::weights::quant::StorageDtype;

#[derive(clap::Args)]
pub struct ExportArgs {
    /// A training checkpoint (`checkpoint.safetensors`, or its run folder).
    checkpoint: PathBuf,
    /// The weights file to write.
    out: PathBuf,
    #[arg(long, default_value = "int8")]
    dtype: StorageDtype,
    /// The protocol recorded in the manifest as the model's own (`segclip eval --help` says what
    /// each flag does): the model's defaults with these flags over them.
    #[command(flatten)]
    protocol: crate::ProtocolFlags,
    /// Do not touch manifest.json.
    #[arg(long)]
    no_manifest: bool,
}

pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    let path = if args.checkpoint.is_dir() { checkpoint::path_in(&args.checkpoint) } else { args.checkpoint.clone() };
    let ck = checkpoint::read(&path).map_err(anyhow::Error::msg)?;
    let tensors = inference_tensors(&ck);
    // A model trained to match its backgrounds' words carries them as its background prompts.
    let background = if ck.config.loss.group_nouns_background { segclip::data::emoji::background_prompts() } else { Vec::new() };
    let protocol = args.protocol.over(segclip::pipeline::Protocol { background_prompts: background.clone(), ..Default::default() })?;
    protocol.check(segclip::pipeline::Kind::Groups, ck.model_config.image_size)?;
    let bytes = format::write_with_background(&ck.model_config, &background, &ck.tokenizer_sha256, args.dtype, &tensors)?;
    // Prove the file loads before anyone ships it.
    let file = format::read_for_model(&bytes, format::Residency::F32).context("re-reading the exported file")?;
    segclip::weights::model_io::load_model(file, &segclip::backend::training_device().without_autodiff())
        .context("building a model from the exported file")?;
    segclip::files::write_atomic(&args.out, &bytes).map_err(anyhow::Error::msg)?;
    let sha = format::sha256_hex(&bytes);
    println!("wrote {} ({} bytes, {}, step {}, sha256 {sha})", args.out.display(), bytes.len(), args.dtype, ck.step);
    if !args.no_manifest {
        let manifest = update_manifest(&args.out, &bytes, &sha, args.dtype, &ck, protocol)?;
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
    protocol: segclip::pipeline::Protocol,
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
        protocol,
    });
    segclip::files::write_atomic(&path, manifest.to_json().as_bytes()).map_err(anyhow::Error::msg)?;
    Ok(path)
}
