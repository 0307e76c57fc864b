//! Checkpoint key maps, kept as data: which source key becomes which of our parameters and how
//! its layout changes. Sources are first brought to the SegCLIP release's layout
//! (docs/segclip.md, "Checkpoint layout"), so one table serves all three.

use std::collections::{BTreeMap, BTreeSet};

use std::sync::LazyLock;

use regex::Regex;

use super::format::HostTensor;
use crate::model::SegClipConfig;

/// Which layout a checkpoint is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceLayout {
    /// The SegCLIP release: `clip.` + OpenAI keys, visual blocks in `layers0` / `layers2`.
    SegClip,
    /// An OpenAI CLIP state dict (`visual.transformer.resblocks.N`, `transformer.resblocks.N`).
    OpenAiClip,
    /// Hugging Face `CLIPModel` (`vision_model.encoder.layers.N.self_attn.q_proj`, ...).
    HuggingFaceClip,
}

impl std::fmt::Display for SourceLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SourceLayout::SegClip => "SegCLIP release",
            SourceLayout::OpenAiClip => "OpenAI CLIP",
            SourceLayout::HuggingFaceClip => "Hugging Face CLIP",
        })
    }
}

/// Why a checkpoint's keys or tensors do not map onto the model, naming the key or tensor.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum KeymapError {
    #[error(
        "unrecognised checkpoint layout (first keys: {0:?}); expected a SegCLIP release state dict (clip.visual.*), \
         an OpenAI CLIP state dict (visual.transformer.resblocks.*) or Hugging Face CLIP (vision_model.*)"
    )]
    Layout(Vec<String>),
    #[error("{} checkpoint key(s) match no {what}: {}", keys.len(), keys.iter().take(8).cloned().collect::<Vec<_>>().join(", "))]
    UnknownKeys { what: &'static str, keys: Vec<String> },
    /// A tensor whose shape its transform cannot take.
    #[error("expected {expected}, found shape {found:?}")]
    Shape { expected: String, found: Vec<usize> },
    #[error("{key}: {source}")]
    Tensor { key: String, source: Box<KeymapError> },
    #[error("{0}.self_attn: q, k and v projections must all be present")]
    Unpacked(String),
    #[error("checkpoint lacks '{0}'")]
    Missing(String),
    /// The config cannot be read off the shapes (the message says what to pass instead).
    #[error("{0}")]
    Config(String),
}

fn shape_error(expected: impl Into<String>, found: &[usize]) -> KeymapError {
    KeymapError::Shape { expected: expected.into(), found: found.to_vec() }
}

/// Tells the layout from the keys.
pub fn detect_layout(keys: &BTreeSet<String>) -> Result<SourceLayout, KeymapError> {
    if keys.iter().any(|k| k.starts_with("clip.visual.")) {
        Ok(SourceLayout::SegClip)
    } else if keys.iter().any(|k| k.starts_with("vision_model.")) {
        Ok(SourceLayout::HuggingFaceClip)
    } else if keys.iter().any(|k| k.starts_with("visual.transformer.resblocks.")) {
        Ok(SourceLayout::OpenAiClip)
    } else {
        Err(KeymapError::Layout(keys.iter().take(5).cloned().collect()))
    }
}


/// How a tensor's layout changes on the way in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transform {
    /// Same layout.
    Keep,
    /// PyTorch Linear [out, in] -> burn Linear [in, out].
    Transpose,
    /// Grouped 1x1 conv [W, d, 1] (groups = heads) -> block-diagonal [H, d_in, d_out].
    GroupedConv,
    /// Scalar [] -> [1].
    Scalar,
    /// [1, L, W] or [L, W] -> [L, W].
    Matrix,
}

/// Release key pattern -> our name (regex replacement syntax) and transform, first match wins.
const RULES: &[(&str, &str, Transform)] = &[
    // Image tower.
    (r"^clip\.visual\.conv1\.weight$", "visual.conv1.weight", Transform::Keep),
    (r"^clip\.visual\.class_embedding$", "visual.class_embedding", Transform::Keep),
    (r"^clip\.visual\.positional_embedding$", "visual.positional_embedding", Transform::Keep),
    (r"^clip\.visual\.ln_(pre|post)\.weight$", "visual.ln_$1.gamma", Transform::Keep),
    (r"^clip\.visual\.ln_(pre|post)\.bias$", "visual.ln_$1.beta", Transform::Keep),
    (r"^clip\.visual\.proj$", "visual.proj", Transform::Keep),
    (r"^clip\.visual\.transformer\.layers0\.(\d+)\.(.+)$", "visual.stage1.$1.$2", Transform::Keep),
    (r"^clip\.visual\.transformer\.layers2\.(\d+)\.(.+)$", "visual.stage3.$1.$2", Transform::Keep),
    // Semantic group module.
    (r"^clip\.visual\.transformer\.semantic_layer2\.semantic_center$", "visual.group.semantic_center", Transform::Matrix),
    (r"^clip\.visual\.transformer\.semantic_layer2\.(k|v)_conv\.weight$", "visual.group.${1}_proj", Transform::GroupedConv),
    (r"^clip\.visual\.transformer\.semantic_layer2\.proj_o\.mlp\.(fc1|fc2)\.(.+)$", "visual.group.proj_o.$1.$2", Transform::Keep),
    (r"^clip\.visual\.transformer\.semantic_layer2\.(.+)$", "visual.group.$1", Transform::Keep),
    // Text tower.
    (r"^clip\.token_embedding\.weight$", "text.token_embedding.weight", Transform::Keep),
    (r"^clip\.positional_embedding$", "text.positional_embedding", Transform::Keep),
    (r"^clip\.transformer\.resblocks\.(\d+)\.(.+)$", "text.blocks.$1.$2", Transform::Keep),
    (r"^clip\.ln_final\.(.+)$", "text.ln_final.$1", Transform::Keep),
    (r"^clip\.text_projection$", "text.text_projection", Transform::Keep),
    (r"^clip\.logit_scale$", "logit_scale", Transform::Scalar),
];

/// Source keys of the training-only parts (the masked-reconstruction branch): not part of the
/// inference model, reported as unused rather than as errors.
const TRAINING_ONLY: &[&str] = &[
    r"^clip\.visual\.transformer\.layers_mae2\.",
    r"^clip\.visual\.transformer\.reconstruct_layer2\.",
    r"^vis_mae_decoder\.",
];

/// The training-only parts mapped into `SegClip::recon`, for models built for training.
const TRAINING_RULES: &[(&str, &str, Transform)] = &[
    (r"^clip\.visual\.transformer\.layers_mae2\.(\d+)\.(.+)$", "recon.blocks.$1.$2", Transform::Keep),
    (r"^clip\.visual\.transformer\.reconstruct_layer2\.rec_proj_a\.a_fc\.(weight|bias)$", "recon.rec_proj.$1", Transform::Keep),
    (r"^vis_mae_decoder\.decoder_blocks\.(\d+)\.attn\.qkv\.(weight|bias)$", "recon.decoder.decoder_blocks.$1.attn.in_proj.$2", Transform::Keep),
    (r"^vis_mae_decoder\.decoder_blocks\.(\d+)\.attn\.proj\.(weight|bias)$", "recon.decoder.decoder_blocks.$1.attn.out_proj.$2", Transform::Keep),
    (r"^vis_mae_decoder\.decoder_blocks\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)$", "recon.decoder.decoder_blocks.$1.$2.$3", Transform::Keep),
    (r"^vis_mae_decoder\.(.+)$", "recon.decoder.$1", Transform::Keep),
];

/// Suffix rules inside blocks and norms, applied after the prefix rules.
const SUFFIX_RULES: &[(&str, &str, Transform)] = &[
    (r"attn\.in_proj_weight$", "attn.in_proj.weight", Transform::Transpose),
    (r"attn\.in_proj_bias$", "attn.in_proj.bias", Transform::Keep),
    // PyTorch Linear weights [out, in] -> burn [in, out].
    (r"\.(in_proj|out_proj|c_fc|c_proj|fc1|fc2|rec_proj|decoder_embed|decoder_pred)\.weight$", ".$1.weight", Transform::Transpose),
    // LayerNorms: weight/bias -> gamma/beta.
    (r"(^|\.)(ln_\w+|ln|norm\d?|decoder_norm|cross_ln|k_ln)\.weight$", "$1$2.gamma", Transform::Keep),
    (r"(^|\.)(ln_\w+|ln|norm\d?|decoder_norm|cross_ln|k_ln)\.bias$", "$1$2.beta", Transform::Keep),
];

fn compiled(rules: &[(&'static str, &'static str, Transform)]) -> Vec<(Regex, &'static str, Transform)> {
    rules.iter().map(|(p, r, t)| (Regex::new(p).expect("valid key rule"), *r, *t)).collect()
}

static INFERENCE_RULES: LazyLock<Vec<(Regex, &'static str, Transform)>> = LazyLock::new(|| compiled(RULES));
static ALL_RULES: LazyLock<Vec<(Regex, &'static str, Transform)>> = LazyLock::new(|| {
    let mut all = RULES.to_vec();
    all.extend_from_slice(TRAINING_RULES);
    compiled(&all)
});
static SUFFIXES: LazyLock<Vec<(Regex, &'static str, Transform)>> = LazyLock::new(|| compiled(SUFFIX_RULES));
static TRAINING_ONLY_KEYS: LazyLock<Vec<Regex>> = LazyLock::new(|| TRAINING_ONLY.iter().map(|p| Regex::new(p).unwrap()).collect());

/// Where one source key goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyTarget {
    /// Our parameter name and the layout change on the way.
    Ours(String, Transform),
    /// Deliberately not loaded, with the reason.
    Unused(&'static str),
}

/// One release-layout key -> our name and transform; `None` when no rule knows the key. With
/// `training`, the reconstruction branch is mapped too; otherwise it is unused.
pub fn release_key(key: &str, training: bool) -> Option<KeyTarget> {
    if !training && TRAINING_ONLY_KEYS.iter().any(|r| r.is_match(key)) {
        return Some(KeyTarget::Unused("training-only (masked reconstruction branch)"));
    }
    let rules = if training { &*ALL_RULES } else { &*INFERENCE_RULES };
    let (re, replacement, transform) = rules.iter().find(|(re, _, _)| re.is_match(key))?;
    let mut name = re.replace(key, *replacement).into_owned();
    let mut transform = *transform;
    for (re, replacement, t) in SUFFIXES.iter() {
        if re.is_match(&name) {
            name = re.replace(&name, *replacement).into_owned();
            if transform == Transform::Keep {
                transform = *t;
            }
            break;
        }
    }
    Some(KeyTarget::Ours(name, transform))
}

/// Maps release-layout tensors to our parameter names; unknown keys are an error naming them.
/// With `training`, the reconstruction branch is mapped too; otherwise it is reported unused.
pub fn release_to_ours(
    release: BTreeMap<String, HostTensor>,
    config: &SegClipConfig,
    training: bool,
    unused: &mut Vec<(String, &'static str)>,
) -> Result<BTreeMap<String, HostTensor>, KeymapError> {
    let mut out = BTreeMap::new();
    let mut unknown = Vec::new();
    for (key, tensor) in release {
        match release_key(&key, training) {
            None => unknown.push(key),
            Some(KeyTarget::Unused(reason)) => unused.push((key, reason)),
            Some(KeyTarget::Ours(name, transform)) => {
                let tensor = apply_transform(transform, tensor, config.vision_heads).map_err(|e| KeymapError::Tensor { key: key.clone(), source: Box::new(e) })?;
                out.insert(name, tensor);
            }
        }
    }
    if !unknown.is_empty() {
        return Err(KeymapError::UnknownKeys { what: "SegCLIP parameter", keys: unknown });
    }
    Ok(out)
}

/// The shape a tensor of `shape` takes under `transform` (`heads` for grouped convolutions).
pub fn transformed_shape(transform: Transform, shape: &[usize], heads: usize) -> Result<Vec<usize>, KeymapError> {
    match transform {
        Transform::Keep => Ok(shape.to_vec()),
        Transform::Transpose => match shape {
            [rows, cols] => Ok(vec![*cols, *rows]),
            _ => Err(shape_error("a matrix", shape)),
        },
        Transform::GroupedConv => match shape {
            [w, d, 1] if *w == heads * d => Ok(vec![heads, *d, *d]),
            _ => Err(shape_error(format!("a grouped conv weight [{heads} x d, d, 1]"), shape)),
        },
        Transform::Scalar => match shape.iter().product::<usize>() {
            1 => Ok(vec![1]),
            _ => Err(shape_error("a scalar", shape)),
        },
        Transform::Matrix => {
            let n = shape.len();
            if n < 2 || shape[..n - 2].iter().any(|&d| d != 1) {
                return Err(shape_error("[L, W]", shape));
            }
            Ok(shape[n - 2..].to_vec())
        }
    }
}

/// Changes a tensor's layout (`heads` for grouped convolutions).
pub fn apply_transform(transform: Transform, t: HostTensor, heads: usize) -> Result<HostTensor, KeymapError> {
    match transform {
        Transform::Keep => Ok(t),
        Transform::Transpose => {
            let [rows, cols] = t.shape[..] else { return Err(shape_error("a matrix", &t.shape)) };
            let mut data = vec![0f32; rows * cols];
            for r in 0..rows {
                for c in 0..cols {
                    data[c * rows + r] = t.data[r * cols + c];
                }
            }
            Ok(HostTensor::new(vec![cols, rows], data))
        }
        Transform::GroupedConv => {
            let [w, d, 1] = t.shape[..] else { return Err(shape_error("a grouped conv weight [W, d, 1]", &t.shape)) };
            if w != heads * d {
                return Err(shape_error(format!("a grouped conv weight [{heads} x d, d, 1] ({heads} heads)"), &t.shape));
            }
            // Block g maps inputs g*d.. to outputs g*d..: weight[g*d + o, i] -> out[g, i, o].
            let mut data = vec![0f32; w * d];
            for g in 0..heads {
                for o in 0..d {
                    for i in 0..d {
                        data[g * d * d + i * d + o] = t.data[(g * d + o) * d + i];
                    }
                }
            }
            Ok(HostTensor::new(vec![heads, d, d], data))
        }
        Transform::Scalar => {
            if t.data.len() != 1 {
                return Err(shape_error("a scalar", &t.shape));
            }
            Ok(HostTensor::new(vec![1], t.data))
        }
        Transform::Matrix => {
            let n = t.shape.len();
            if n < 2 || t.shape[..n - 2].iter().any(|&d| d != 1) {
                return Err(shape_error("[L, W]", &t.shape));
            }
            Ok(HostTensor::new(t.shape[n - 2..].to_vec(), t.data))
        }
    }
}

/// OpenAI layout (after the `clip.` prefix): visual `transformer.resblocks.n` becomes `layers0.n`
/// for n < split and `layers2.(n - split)` after (reference, "Checkpoint layout").
pub fn split_visual_blocks(tensors: BTreeMap<String, HostTensor>, split: usize) -> BTreeMap<String, HostTensor> {
    let re = Regex::new(r"^clip\.visual\.transformer\.resblocks\.(\d+)\.(.+)$").unwrap();
    tensors
        .into_iter()
        .map(|(k, v)| match re.captures(&k) {
            Some(c) => {
                let n: usize = c[1].parse().unwrap();
                let key = if n < split {
                    format!("clip.visual.transformer.layers0.{n}.{}", &c[2])
                } else {
                    format!("clip.visual.transformer.layers2.{}.{}", n - split, &c[2])
                };
                (key, v)
            }
            None => (k, v),
        })
        .collect()
}

/// Our SegCLIP names of an imported plain CLIP -> the dense model's (src/model/dense.rs): the
/// image tower's blocks are one list again, `visual.stage1.n` -> `visual.blocks.n` and
/// `visual.stage3.m` -> `visual.blocks.(split + m)`; everything else keeps its name.
pub fn segclip_to_dense(tensors: BTreeMap<String, HostTensor>, split: usize) -> BTreeMap<String, HostTensor> {
    let re = Regex::new(r"^visual\.(stage1|stage3)\.(\d+)\.(.+)$").unwrap();
    tensors
        .into_iter()
        .map(|(k, v)| match re.captures(&k) {
            Some(c) => {
                let n: usize = c[2].parse().unwrap();
                let n = if &c[1] == "stage1" { n } else { split + n };
                (format!("visual.blocks.{n}.{}", &c[3]), v)
            }
            None => (k, v),
        })
        .collect()
}

/// Where one Hugging Face `CLIPModel` key goes in the OpenAI layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HfKey {
    /// An OpenAI key, with the layout change on the way (the projections are Linear weights in
    /// Hugging Face's layout, plain matrices in OpenAI's).
    OpenAi(String, Transform),
    /// One of the q, k, v projections (`slot` 0, 1, 2) that OpenAI packs into
    /// `{prefix}.attn.in_proj_{kind}` along its first axis.
    Packed { prefix: String, kind: String, slot: usize },
    /// A buffer, not a weight.
    Unused(&'static str),
}

impl HfKey {
    /// The OpenAI key this one becomes (the packed key for q, k, v).
    pub fn openai_key(&self) -> Option<String> {
        match self {
            HfKey::OpenAi(k, _) => Some(k.clone()),
            HfKey::Packed { prefix, kind, .. } => Some(format!("{prefix}.attn.in_proj_{kind}")),
            HfKey::Unused(_) => None,
        }
    }
}

static HF_RENAMES: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        (r"^vision_model\.embeddings\.patch_embedding\.weight$", "visual.conv1.weight"),
        (r"^vision_model\.embeddings\.class_embedding$", "visual.class_embedding"),
        (r"^vision_model\.embeddings\.position_embedding\.weight$", "visual.positional_embedding"),
        (r"^vision_model\.pre_layr?norm\.(weight|bias)$", "visual.ln_pre.$1"),
        (r"^vision_model\.post_layernorm\.(weight|bias)$", "visual.ln_post.$1"),
        (r"^vision_model\.encoder\.layers\.(\d+)\.(.+)$", "visual.transformer.resblocks.$1.$2"),
        (r"^text_model\.embeddings\.token_embedding\.weight$", "token_embedding.weight"),
        (r"^text_model\.embeddings\.position_embedding\.weight$", "positional_embedding"),
        (r"^text_model\.final_layer_norm\.(weight|bias)$", "ln_final.$1"),
        (r"^text_model\.encoder\.layers\.(\d+)\.(.+)$", "transformer.resblocks.$1.$2"),
        (r"^logit_scale$", "logit_scale"),
    ]
    .iter()
    .map(|(p, r)| (Regex::new(p).unwrap(), *r))
    .collect()
});
static HF_BLOCK: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        (r"\.self_attn\.out_proj\.", ".attn.out_proj."),
        (r"\.layer_norm1\.", ".ln_1."),
        (r"\.layer_norm2\.", ".ln_2."),
        (r"\.mlp\.fc1\.", ".mlp.c_fc."),
        (r"\.mlp\.fc2\.", ".mlp.c_proj."),
    ]
    .iter()
    .map(|(p, r)| (Regex::new(p).unwrap(), *r))
    .collect()
});
static HF_QKV: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^(.+)\.self_attn\.(q|k|v)_proj\.(weight|bias)$").unwrap());

/// One Hugging Face `CLIPModel` key -> the OpenAI layout; `None` when no rule knows it.
pub fn hf_key(key: &str) -> Option<HfKey> {
    match key {
        "visual_projection.weight" => return Some(HfKey::OpenAi("visual.proj".into(), Transform::Transpose)),
        "text_projection.weight" => return Some(HfKey::OpenAi("text_projection".into(), Transform::Transpose)),
        _ if key.ends_with("position_ids") => return Some(HfKey::Unused("buffer (position ids)")),
        _ => {}
    }
    let (re, replacement) = HF_RENAMES.iter().find(|(re, _)| re.is_match(key))?;
    let mut name = re.replace(key, *replacement).into_owned();
    if let Some(c) = HF_QKV.captures(&name) {
        let slot = match &c[2] {
            "q" => 0,
            "k" => 1,
            _ => 2,
        };
        return Some(HfKey::Packed { prefix: c[1].to_string(), kind: c[3].to_string(), slot });
    }
    for (re, replacement) in HF_BLOCK.iter() {
        name = re.replace(&name, *replacement).into_owned();
    }
    Some(HfKey::OpenAi(name, Transform::Keep))
}

/// Hugging Face CLIPModel keys -> OpenAI keys (q/k/v projections packed into `in_proj`).
pub fn huggingface_to_openai(
    hf: BTreeMap<String, HostTensor>,
    unused: &mut Vec<(String, &'static str)>,
) -> Result<BTreeMap<String, HostTensor>, KeymapError> {
    let mut out = BTreeMap::new();
    let mut pending: BTreeMap<(String, String), [Option<HostTensor>; 3]> = BTreeMap::new();
    let mut unknown = Vec::new();
    for (key, t) in hf {
        match hf_key(&key) {
            None => unknown.push(key),
            Some(HfKey::Unused(reason)) => unused.push((key, reason)),
            Some(HfKey::OpenAi(name, transform)) => {
                out.insert(name, apply_transform(transform, t, 1)?);
            }
            Some(HfKey::Packed { prefix, kind, slot }) => pending.entry((prefix, kind)).or_default()[slot] = Some(t),
        }
    }
    for ((prefix, kind), parts) in pending {
        let [Some(q), Some(k), Some(v)] = parts else {
            return Err(KeymapError::Unpacked(prefix));
        };
        let mut shape = q.shape.clone();
        shape[0] *= 3;
        let data = [q.data, k.data, v.data].concat();
        out.insert(format!("{prefix}.attn.in_proj_{kind}"), HostTensor::new(shape, data));
    }
    if !unknown.is_empty() {
        return Err(KeymapError::UnknownKeys { what: "CLIP parameter", keys: unknown });
    }
    Ok(out)
}

static OPENAI_VISUAL_BLOCK: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^visual\.transformer\.resblocks\.(\d+)\.(.+)$").unwrap());
static STAGE1_BLOCK: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^visual\.stage1\.(\d+)\.(.+)$").unwrap());

/// One OpenAI-layout key -> the dense model's name (src/model/dense.rs) and transform: the
/// release's rules with every image block kept in one list (`visual.blocks.n`).
pub fn dense_key(openai_key: &str) -> Option<KeyTarget> {
    let release = match OPENAI_VISUAL_BLOCK.captures(openai_key) {
        Some(c) => format!("clip.visual.transformer.layers0.{}.{}", &c[1], &c[2]),
        None => format!("clip.{openai_key}"),
    };
    match release_key(&release, false)? {
        KeyTarget::Ours(name, transform) => {
            let name = STAGE1_BLOCK.replace(&name, "visual.blocks.$1.$2").into_owned();
            Some(KeyTarget::Ours(name, transform))
        }
        unused => Some(unused),
    }
}

/// Reads the config off tensor shapes (release layout, `clip.` prefix). Heads follow the
/// release's rule, width / 64, unless `heads` gives them (image tower, text tower); pass a
/// config explicitly for models that break it otherwise.
pub fn infer_config(
    t: &BTreeMap<String, Vec<usize>>,
    layout: SourceLayout,
    heads: Option<(usize, usize)>,
) -> Result<SegClipConfig, KeymapError> {
    let shape = |key: &str| t.get(key).cloned().ok_or_else(|| KeymapError::Missing(key.to_string()));
    let count = |pattern: &str| {
        let re = Regex::new(pattern).unwrap();
        t.keys().filter_map(|k| re.captures(k).map(|c| c[1].parse::<usize>().unwrap())).max().map(|m| m + 1).unwrap_or(0)
    };
    let conv = shape("clip.visual.conv1.weight")?;
    let (width, patch) = (conv[0], conv[2]);
    let positions = shape("clip.visual.positional_embedding")?[0] - 1;
    let grid = (positions as f64).sqrt().round() as usize;
    let token = shape("clip.token_embedding.weight")?;
    let text_width = token[1];
    let derive = |given: Option<usize>, w: usize, what: &str| {
        if let Some(h) = given {
            return Ok(h);
        }
        if w % 64 == 0 {
            Ok(w / 64)
        } else {
            Err(KeymapError::Config(format!(
                "{what} width {w} is not a multiple of 64, so the head count cannot be derived (the \
                 release's rule is width / 64): pass the model config with --config"
            )))
        }
    };
    let (vision_layers, group_after) = match layout {
        SourceLayout::SegClip => {
            let s1 = count(r"^clip\.visual\.transformer\.layers0\.(\d+)\.");
            (s1 + count(r"^clip\.visual\.transformer\.layers2\.(\d+)\."), s1)
        }
        _ => {
            let n = count(r"^clip\.visual\.transformer\.resblocks\.(\d+)\.");
            // The release splits ViT-B/16's 12 blocks 10 + 2: the group module before the last two.
            (n, n.saturating_sub(2).max(1))
        }
    };
    let centers = t.get("clip.visual.transformer.semantic_layer2.semantic_center").map(|c| c[c.len().saturating_sub(2)]);
    let fc = shape("clip.transformer.resblocks.0.mlp.c_fc.weight")?;
    Ok(SegClipConfig {
        image_size: grid * patch,
        patch_size: patch,
        vision_width: width,
        vision_heads: derive(heads.map(|h| h.0), width, "image tower")?,
        vision_layers,
        group_after,
        num_centers: centers.unwrap_or(8),
        cross_layers: match count(r"^clip\.visual\.transformer\.semantic_layer2\.cross_att\.(\d+)\.") {
            0 => 2,
            n => n,
        },
        embed_dim: shape("clip.visual.proj")?[1],
        text_width,
        text_heads: derive(heads.map(|h| h.1), text_width, "text tower")?,
        text_layers: count(r"^clip\.transformer\.resblocks\.(\d+)\."),
        context_length: shape("clip.positional_embedding")?[0],
        vocab_size: token[0],
        mlp_ratio: fc[0] / text_width,
        // The reconstruction branch's sizes where the file has it (heads are not stored: the
        // release's decoder uses 8).
        decoder_width: t.get("vis_mae_decoder.decoder_embed.weight").map(|w| w[0]).unwrap_or(width / 2),
        decoder_heads: 8,
        conv_stem: 0,
        patchify_stem: 0,
        decoder_layers: match count(r"^vis_mae_decoder\.decoder_blocks\.(\d+)\.") {
            0 => 3,
            n => n,
        },
        mae_blocks: match count(r"^clip\.visual\.transformer\.layers_mae2\.(\d+)\.") {
            0 => 2,
            n => n,
        },
    })
}
