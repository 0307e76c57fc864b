//! `segclip convert IN OUT [--dtype f32|f16|int8] [--config FILE] [--method segclip|naclip|clearclip]`

use std::path::PathBuf;

use anyhow::{bail, Context};
use segclip::model::dense::DenseMethod;
use segclip::model::{SegClip, SegClipConfig};
use segclip::weights::keymap::SourceLayout;
use segclip::weights::stream::ConvertOptions;
use segclip::weights::{format, import, model_io, StorageDtype};

#[derive(clap::Args)]
pub struct ConvertArgs {
    /// Checkpoint to read: SegCLIP release or OpenAI CLIP state dict (.pt/.pth/.bin zip-pickle),
    /// or Hugging Face CLIP (.safetensors).
    pub input: PathBuf,
    /// Weights file to write.
    pub output: PathBuf,
    /// Storage dtype of the output.
    #[arg(long, default_value = "f32")]
    pub dtype: StorageDtype,
    /// Model config (JSON) to use instead of the one read off the tensor shapes; needed when the
    /// head count is not width / 64. For a plain CLIP converted for a dense method only its
    /// head counts are taken (the rest is read off the shapes).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The tokenizer the weights are meant for (default: this build's); its SHA-256 goes into
    /// the file.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// How the file segments, recorded in its header. A plain CLIP checkpoint defaults to
    /// `naclip` (training-free, every patch named; `clearclip` is the other dense method);
    /// `segclip` gives it a freshly initialised group module instead (a start for training).
    /// A SegCLIP checkpoint always segments with its own groups.
    #[arg(long)]
    pub method: Option<String>,
}

pub fn run(args: ConvertArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let c: SegClipConfig = serde_json::from_str(&text).with_context(|| format!("{} is not a model config", path.display()))?;
            Some(c)
        }
        None => None,
    };
    let tokenizer = match &args.tokenizer {
        Some(path) => std::fs::read(path).with_context(|| format!("reading the tokenizer {}", path.display()))?,
        None => crate::TOKENIZER_JSON.to_vec(),
    };
    let method = dense_method(&args)?;
    if let Some(method) = method {
        let heads = config.as_ref().map(|c| (c.vision_heads, c.text_heads));
        return convert_dense(&args, method, heads, &tokenizer);
    }
    let raw = import::read_checkpoint(&args.input)?;
    let imported = import::import_tensors(raw, config, false)?;
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
    report_unused(&imported.unused);

    let tensors = model_io::model_tensors(&model);
    let bytes = format::write(&imported.config, &format::sha256_hex(&tokenizer), args.dtype, &tensors)?;
    write_output(&args, &bytes, "")
}

/// Keys of the checkpoint the model has no place for, grouped by why.
fn report_unused(unused: &[(String, &'static str)]) {
    let mut by_reason: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for (key, reason) in unused {
        by_reason.entry(reason).or_default().push(key.clone());
    }
    for (reason, keys) in by_reason {
        println!("unused, {reason}: {} keys ({})", keys.len(), summarise(&keys));
    }
}

/// Writes the weights file; an interrupted convert never leaves half a file.
fn write_output(args: &ConvertArgs, bytes: &[u8], what: &str) -> anyhow::Result<()> {
    if bytes.is_empty() {
        bail!("nothing to write");
    }
    segclip::files::write_atomic(&args.output, bytes).map_err(anyhow::Error::msg)?;
    println!("wrote {} ({}{what}, {:.2} MB, sha256 {})", args.output.display(), args.dtype, bytes.len() as f64 / 1e6, format::sha256_hex(bytes));
    Ok(())
}

/// The method the output segments with: `None` for SegCLIP (a SegCLIP checkpoint, or a CLIP
/// given a fresh group module with `--method segclip`), else the dense method (NACLIP unless
/// `--method` says otherwise).
fn dense_method(args: &ConvertArgs) -> anyhow::Result<Option<DenseMethod>> {
    let layout = import::sniff_layout(&args.input)?;
    Ok(match (args.method.as_deref(), layout) {
        (Some("segclip"), _) | (None, SourceLayout::SegClip) => None,
        (Some(m), SourceLayout::SegClip) => bail!(
            "{}: a SegCLIP checkpoint segments with its own group module; --method {m} is for plain CLIP checkpoints",
            args.input.display()
        ),
        (Some(m), _) => Some(m.parse::<DenseMethod>().map_err(|e| anyhow::anyhow!("--method: {e}, or segclip"))?),
        (None, _) => Some(DenseMethod::Naclip),
    })
}

/// A plain CLIP for a dense method, through the streamed converter the page uses
/// (src/weights/stream.rs): CLIP's own towers, every tensor from the checkpoint, the method's
/// protocol in the header. The result is loaded once to check it before it is written.
fn convert_dense(args: &ConvertArgs, method: DenseMethod, heads: Option<(usize, usize)>, tokenizer: &[u8]) -> anyhow::Result<()> {
    let options = ConvertOptions {
        method,
        dtype: args.dtype,
        tokenizer_sha256: format::sha256_hex(tokenizer),
        heads,
        source_sha256: None,
    };
    let bar = crate::progress::bytes_bar("converting");
    let converted = import::convert_dense_file(&args.input, options, |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })?;
    bar.finish_and_clear();
    println!("{}: {} checkpoint, for dense segmentation with {method}", args.input.display(), converted.layout);
    println!("config: {}", serde_json::to_string(&converted.config)?);
    println!("protocol: {}", serde_json::to_string(&converted.protocol)?);
    check_dense(&converted.bytes).with_context(|| format!("{}: the converted file does not load", args.input.display()))?;
    report_unused(&converted.unused);
    write_output(args, &converted.bytes, &format!(", {method}"))
}

/// Loads a converted dense file once: every parameter present, with its shape.
pub fn check_dense(bytes: &[u8]) -> anyhow::Result<()> {
    let file = format::read_for_model(bytes, format::Residency::F32)?;
    let count = file.tensors.len();
    let device = segclip::backend::device(segclip::backend::BackendKind::Cpu).map_err(anyhow::Error::msg)?;
    model_io::load_dense_model(file, &device)?;
    println!("loaded {count} tensors");
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
