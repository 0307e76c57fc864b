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
    #[error("{0}")]
    Layout(String),
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
        return read_safetensors(&bytes).map_err(err);
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

fn read_safetensors(bytes: &[u8]) -> Result<BTreeMap<String, HostTensor>, String> {
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| format!("unreadable safetensors: {e}"))?;
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
    if keymap::detect_layout(&keys).map_err(ImportError::Layout)? == SourceLayout::SegClip {
        return Err(ImportError::Layout(
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
    let layout = keymap::detect_layout(&keys).map_err(ImportError::Layout)?;
    let mut unused = Vec::new();
    let clip_like = match layout {
        SourceLayout::SegClip => raw,
        SourceLayout::OpenAiClip => raw.into_iter().map(|(k, v)| (format!("clip.{k}"), v)).collect(),
        SourceLayout::HuggingFaceClip => keymap::huggingface_to_openai(raw, &mut unused)
            .map_err(ImportError::Layout)?
            .into_iter()
            .map(|(k, v)| (format!("clip.{k}"), v))
            .collect(),
    };
    let config = match config {
        Some(c) => c,
        None => keymap::infer_config(&clip_like, layout).map_err(ImportError::Layout)?,
    };
    config.validate().map_err(ImportError::Layout)?;
    let release = match layout {
        SourceLayout::SegClip => clip_like,
        _ => keymap::split_visual_blocks(clip_like, config.group_after),
    };
    let tensors = keymap::release_to_ours(release, &config, training, &mut unused).map_err(ImportError::Layout)?;
    Ok(Imported { layout, config, tensors, unused })
}
