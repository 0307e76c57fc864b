//! `segclip convert IN OUT [--dtype f32|f16|int8] [--config FILE]`

use std::path::PathBuf;

use anyhow::{bail, Context};
use segclip::model::{SegClip, SegClipConfig};
use segclip::weights::{format, import, model_io, StorageDtype};

#[derive(clap::Args)]
pub struct ConvertArgs {
    /// Checkpoint to read: SegCLIP release or OpenAI CLIP state dict (.pt/.pth/.bin zip-pickle),
    /// or Hugging Face CLIP (.safetensors).
    input: PathBuf,
    /// Weights file to write.
    output: PathBuf,
    /// Storage dtype of the output.
    #[arg(long, default_value = "f32")]
    dtype: StorageDtype,
    /// Model config (JSON) to use instead of the one read off the tensor shapes; needed when the
    /// head count is not width / 64.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The tokenizer the weights are meant for (default: this build's); its SHA-256 goes into
    /// the file.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
}

pub fn run(args: ConvertArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let c: SegClipConfig =
                serde_json::from_str(&text).with_context(|| format!("{} is not a model config", path.display()))?;
            Some(c)
        }
        None => None,
    };
    let tokenizer = match &args.tokenizer {
        Some(path) => std::fs::read(path).with_context(|| format!("reading the tokenizer {}", path.display()))?,
        None => crate::TOKENIZER_JSON.to_vec(),
    };
    let imported = import::import(&args.input, config)?;
    println!("{}: {} checkpoint", args.input.display(), imported.layout);
    println!("config: {}", serde_json::to_string(&imported.config)?);

    // Build the inference model and write the checkpoint into it; what the checkpoint lacks (the
    // group module, for a CLIP checkpoint) keeps its fresh initialisation and is reported.
    let device = segclip::backend::device(segclip::backend::BackendKind::Cpu).map_err(anyhow::Error::msg)?;
    let mut model = SegClip::new(&imported.config, &device);
    let allow_fresh = imported.layout != segclip::weights::keymap::SourceLayout::SegClip;
    let report = model_io::apply_tensors(&mut model, &imported.tensors, allow_fresh)?;
    println!("loaded {} tensors", imported.tensors.len());
    if !report.initialised.is_empty() {
        println!(
            "freshly initialised ({} tensors, not in a {} checkpoint): {}",
            report.initialised.len(),
            imported.layout,
            summarise(&report.initialised)
        );
    }
    if !imported.unused.is_empty() {
        let mut by_reason: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
        for (key, reason) in &imported.unused {
            by_reason.entry(reason).or_default().push(key.clone());
        }
        for (reason, keys) in by_reason {
            println!("unused, {reason}: {} keys ({})", keys.len(), summarise(&keys));
        }
    }

    let tensors = model_io::model_tensors(&model);
    let bytes = format::write(&imported.config, &format::sha256_hex(&tokenizer), args.dtype, &tensors)?;
    if bytes.is_empty() {
        bail!("nothing to write");
    }
    // An interrupted convert never leaves half a file.
    segclip::files::write_atomic(&args.output, &bytes).map_err(anyhow::Error::msg)?;
    println!(
        "wrote {} ({}, {:.2} MB, sha256 {})",
        args.output.display(),
        args.dtype,
        bytes.len() as f64 / 1e6,
        format::sha256_hex(&bytes)
    );
    Ok(())
}

fn summarise(keys: &[String]) -> String {
    let shown: Vec<&str> = keys.iter().take(4).map(|s| s.as_str()).collect();
    if keys.len() > 4 {
        format!("{}, …", shown.join(", "))
    } else {
        shown.join(", ")
    }
}
