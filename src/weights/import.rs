//! Importing checkpoints users hold: the SegCLIP release state dict, OpenAI CLIP state dicts and
//! Hugging Face CLIP safetensors (docs/segclip.md, "Checkpoint layout"). Every source is
//! first brought to the release's key layout (`clip.` prefix), then mapped to our parameter
//! names and layouts by the rules in `keymap`. Native only: it reads files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::format::{HostTensor, WeightsError};
use super::keymap::{self, SourceLayout};
use crate::model::SegClipConfig;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: {message}")]
    Read { path: String, message: String },
    #[error(transparent)]
    Keys(#[from] keymap::KeymapError),
    /// A model config read off the checkpoint (or given) that the model cannot take.
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Weights(#[from] WeightsError),
}

/// A checkpoint brought to our parameter names.
pub struct Imported {
    pub layout: SourceLayout,
    pub config: SegClipConfig,
    /// Our parameter name -> tensor (burn layout).
    pub tensors: BTreeMap<String, HostTensor>,
    /// Source keys deliberately not loaded (training-only parts, buffers), with the reason.
    pub unused: Vec<(String, &'static str)>,
}

/// Reads every floating-point tensor of a torch zip-pickle (`.pt`, `.pth`, `.bin`) or a
/// safetensors file, cast to f32.
pub fn read_checkpoint(path: &Path) -> Result<BTreeMap<String, HostTensor>, ImportError> {
    let shown = path.display().to_string();
    let err = |message: String| ImportError::Read { path: shown.clone(), message };
    let mut head = [0u8; 9];
    {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
        let n = f.read(&mut head).map_err(|e| err(e.to_string()))?;
        if n < 9 {
            return Err(err(format!("only {n} bytes long: not a checkpoint")));
        }
    }
    if head[8] == b'{' {
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        return read_safetensors(&bytes).map_err(|e| err(format!("unreadable safetensors: {e}")));
    }
    if &head[..2] != b"PK" {
        return Err(err("neither a torch zip archive nor a safetensors file".into()));
    }
    if is_torchscript(path) {
        return Err(err(
            "this is a TorchScript archive (the OpenAI release format), which holds code, not a \
             state dict. Re-save its weights once with PyTorch:\n  python -c \"import torch; \
             m = torch.jit.load('IN.pt', map_location='cpu'); torch.save({k: v.float() for k, v in \
             m.state_dict().items()}, 'OUT_state_dict.pt')\"\nthen convert OUT_state_dict.pt"
                .into(),
        ));
    }
    let reader = burn::store::pytorch_reader::PytorchReader::new(path).map_err(|e| err(e.to_string()))?;
    let mut out = BTreeMap::new();
    for (name, tensor) in reader.into_tensors() {
        use burn::store::pytorch_reader::DType as D;
        let bytes = tensor.read().map_err(|e| err(e.to_string()))?;
        // The reader hands out native-endian bytes; every target this crate builds for is
        // little-endian, as safetensors is, so one conversion serves both file kinds.
        use safetensors::tensor::Dtype;
        let dtype = match tensor.dtype() {
            D::F32 => Dtype::F32,
            D::F16 => Dtype::F16,
            D::BF16 => Dtype::BF16,
            D::F64 => Dtype::F64,
            _ => continue, // integer buffers (position ids, counters) carry no weights
        };
        let data = super::format::floats_to_f32(dtype, &bytes).expect("a float dtype");
        out.insert(name, HostTensor::new(tensor.shape().to_vec(), data));
    }
    Ok(out)
}

fn is_torchscript(path: &Path) -> bool {
    // TorchScript archives carry `constants.pkl` and a `code/` folder beside `data.pkl`.
    let Ok(bytes) = std::fs::read(path) else { return false };
    let window = &bytes[..bytes.len().min(1 << 20)];
    let has = |needle: &[u8]| window.windows(needle.len()).any(|w| w == needle);
    has(b"constants.pkl") || has(b"/code/__torch__")
}

fn read_safetensors(bytes: &[u8]) -> Result<BTreeMap<String, HostTensor>, safetensors::SafeTensorError> {
    let st = safetensors::SafeTensors::deserialize(bytes)?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        // Integer tensors (position ids, counters) are buffers, not weights.
        let Some(data) = super::format::floats_to_f32(view.dtype(), view.data()) else { continue };
        out.insert(name, HostTensor::new(view.shape().to_vec(), data));
    }
    Ok(out)
}

/// Imports a checkpoint file. `config` overrides the config inferred from tensor shapes (needed
/// when heads are not width / 64, the release's rule).
pub fn import(path: &Path, config: Option<SegClipConfig>) -> Result<Imported, ImportError> {
    let raw = read_checkpoint(path)?;
    import_tensors(raw, config, false)
}

/// As `import`, keeping the training-only reconstruction branch (for `SegClip::new_for_training`).
pub fn import_for_training(path: &Path, config: Option<SegClipConfig>) -> Result<Imported, ImportError> {
    let raw = read_checkpoint(path)?;
    import_tensors(raw, config, true)
}

/// Imports a plain CLIP checkpoint (OpenAI or Hugging Face layout) for dense segmentation
/// (src/model/dense.rs): tensors in `DenseClip`'s names. A SegCLIP checkpoint is refused: its
/// later blocks were trained on group tokens, not patches, and it segments with its groups.
pub fn import_dense(path: &Path, config: Option<SegClipConfig>) -> Result<Imported, ImportError> {
    import_dense_tensors(read_checkpoint(path)?, config)
}

pub fn import_dense_tensors(raw: BTreeMap<String, HostTensor>, config: Option<SegClipConfig>) -> Result<Imported, ImportError> {
    let keys: BTreeSet<String> = raw.keys().cloned().collect();
    if keymap::detect_layout(&keys)? == SourceLayout::SegClip {
        return Err(ImportError::Config(
            "this is a SegCLIP checkpoint: it segments with its own group module, not with a dense method \
             (convert it without --method)"
                .into(),
        ));
    }
    let mut imported = import_tensors(raw, config, false)?;
    let split = imported.config.group_after;
    imported.tensors = keymap::segclip_to_dense(std::mem::take(&mut imported.tensors), split);
    Ok(imported)
}

pub fn import_tensors(
    raw: BTreeMap<String, HostTensor>,
    config: Option<SegClipConfig>,
    training: bool,
) -> Result<Imported, ImportError> {
    let keys: BTreeSet<String> = raw.keys().cloned().collect();
    let layout = keymap::detect_layout(&keys)?;
    let mut unused = Vec::new();
    let clip_like = match layout {
        SourceLayout::SegClip => raw,
        SourceLayout::OpenAiClip => raw.into_iter().map(|(k, v)| (format!("clip.{k}"), v)).collect(),
        SourceLayout::HuggingFaceClip => keymap::huggingface_to_openai(raw, &mut unused)?
            .into_iter()
            .map(|(k, v)| (format!("clip.{k}"), v))
            .collect(),
    };
    let config = match config {
        Some(c) => c,
        None => keymap::infer_config(&clip_like.iter().map(|(k, t)| (k.clone(), t.shape.clone())).collect(), layout, None)?,
    };
    config.validate().map_err(ImportError::Config)?;
    let release = match layout {
        SourceLayout::SegClip => clip_like,
        _ => keymap::split_visual_blocks(clip_like, config.group_after),
    };
    let tensors = keymap::release_to_ours(release, &config, training, &mut unused)?;
    Ok(Imported { layout, config, tensors, unused })
}

/// Converts a plain CLIP checkpoint file (safetensors in either hub layout, or an OpenAI torch
/// zip-pickle) into a dense weights file with the streamed converter the page uses
/// (src/weights/stream.rs): a safetensors file is fed in chunks exactly as a download is.
/// `progress` is called with (bytes read, bytes in all).
pub fn convert_dense_file(
    path: &Path,
    options: super::stream::ConvertOptions,
    mut progress: impl FnMut(u64, u64),
) -> Result<super::stream::Converted, ImportError> {
    use std::io::Read;
    let shown = path.display().to_string();
    let err = |message: String| ImportError::Read { path: shown.clone(), message };
    let conversion_err = |e: super::stream::ConvertError| ImportError::Read { path: shown.clone(), message: e.to_string() };
    let mut file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let total = file.metadata().map_err(|e| err(e.to_string()))?.len();
    let mut head = [0u8; 9];
    let n = file.read(&mut head).map_err(|e| err(e.to_string()))?;
    if n >= 2 && &head[..2] == b"PK" {
        drop(file);
        return convert_dense_zip(path, options).map_err(|e| match e {
            ImportError::Read { message, .. } => err(message),
            other => other,
        });
    }
    let mut converter = super::stream::StreamConverter::new(options);
    converter.push(&head[..n]).map_err(conversion_err)?;
    let mut buffer = vec![0u8; 8 << 20];
    let mut read = n as u64;
    loop {
        let n = file.read(&mut buffer).map_err(|e| err(e.to_string()))?;
        if n == 0 {
            break;
        }
        converter.push(&buffer[..n]).map_err(conversion_err)?;
        read += n as u64;
        progress(read, total);
    }
    converter.finish().map_err(conversion_err)
}

/// The torch zip-pickle case of `convert_dense_file`: the tensors come whole from burn-store's
/// reader, one at a time.
fn convert_dense_zip(path: &Path, options: super::stream::ConvertOptions) -> Result<super::stream::Converted, ImportError> {
    use super::stream::{DenseConversion, SourceTensor};
    use burn::store::pytorch_reader::DType as D;
    use safetensors::tensor::Dtype;
    let shown = path.display().to_string();
    let err = |message: String| ImportError::Read { path: shown.clone(), message };
    if is_torchscript(path) {
        // Refused there, with the one-line command that re-saves its weights.
        read_checkpoint(path)?;
    }
    let reader = burn::store::pytorch_reader::PytorchReader::new(path).map_err(|e| err(e.to_string()))?;
    let mut tensors: Vec<_> = reader.into_tensors().into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let sources: Vec<SourceTensor> = tensors
        .iter()
        .map(|(name, t)| SourceTensor {
            name: name.clone(),
            dtype: match t.dtype() {
                D::F32 => Dtype::F32,
                D::F16 => Dtype::F16,
                D::BF16 => Dtype::BF16,
                D::F64 => Dtype::F64,
                _ => Dtype::I64,
            },
            shape: t.shape().to_vec(),
        })
        .collect();
    let conversion_err = |e: super::stream::ConvertError| ImportError::Read { path: shown.clone(), message: e.to_string() };
    let mut conversion = DenseConversion::plan(&sources, &options).map_err(conversion_err)?;
    for (i, (name, t)) in tensors.iter().enumerate() {
        if matches!(sources[i].dtype, Dtype::I64) {
            continue;
        }
        let bytes = t.read().map_err(|e| err(format!("tensor '{name}': {e}")))?;
        conversion.feed(i, &bytes).map_err(conversion_err)?;
    }
    conversion.finish().map_err(conversion_err)
}

/// The layout of a checkpoint file, read from its keys alone (a safetensors header, or a torch
/// zip-pickle's index).
pub fn sniff_layout(path: &Path) -> Result<SourceLayout, ImportError> {
    use std::io::Read;
    let shown = path.display().to_string();
    let err = |message: String| ImportError::Read { path: shown.clone(), message };
    let mut f = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let mut head = [0u8; 9];
    let n = f.read(&mut head).map_err(|e| err(e.to_string()))?;
    if n < 9 {
        return Err(err(format!("only {n} bytes long: not a checkpoint")));
    }
    let keys: BTreeSet<String> = if head[8] == b'{' {
        let len = u64::from_le_bytes(head[..8].try_into().expect("8 bytes")) as usize;
        if len > super::stream::MAX_HEADER_BYTES {
            return Err(err(format!("a safetensors header of {len} bytes is over the {} limit", super::stream::MAX_HEADER_BYTES)));
        }
        let mut json = vec![b'{'; len];
        f.read_exact(&mut json[1..]).map_err(|e| err(format!("reading its header: {e}")))?;
        let header: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&json).map_err(|e| err(format!("unreadable safetensors header: {e}")))?;
        header.into_iter().map(|(k, _)| k).filter(|k| k != "__metadata__").collect()
    } else if &head[..2] == b"PK" {
        if is_torchscript(path) {
            read_checkpoint(path)?;
        }
        let reader = burn::store::pytorch_reader::PytorchReader::new(path).map_err(|e| err(e.to_string()))?;
        reader.into_tensors().into_keys().collect()
    } else {
        return Err(err("neither a torch zip archive nor a safetensors file".into()));
    };
    keymap::detect_layout(&keys).map_err(|e| err(e.to_string()))
}
