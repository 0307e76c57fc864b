//! The segclip weights file, shared by the CLI and the page: a safetensors file whose
//! `__metadata__` names the format and version, holds the model config, the SHA-256 of the
//! tokenizer it was made with, the storage dtype and a SHA-256 over all tensor bytes. Tensors are
//! named by their path in the burn model (`visual.stage1.0.attn.in_proj.weight`) and stored in
//! burn's layout, as f32, f16, or int8 with per-output-channel scales (see `quant`).
//! Python tools can open it as any safetensors file.

use std::collections::{BTreeMap, HashMap};

use safetensors::tensor::Dtype;
use sha2::{Digest, Sha256};

mod read;

pub use read::*;
use super::quant::{self, StorageDtype, SCALE_SUFFIX};
use crate::model::dense::DenseProtocol;
use crate::model::SegClipConfig;

pub const FORMAT_NAME: &str = "segclip-weights";
pub const FORMAT_VERSION: u32 = 1;

/// A tensor on the host, f32, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Self { shape, data }
    }
}

/// A decoded weights file; its tensors are host tensors (`read`), or tensor data ready for a
/// model (`read_for_model`).
#[derive(Clone, Debug)]
pub struct WeightsFile<T = HostTensor> {
    pub config: SegClipConfig,
    /// `None`: a SegCLIP model (segments with its groups). `Some`: a plain CLIP run densely
    /// (src/model/dense.rs), with its method and protocol (header field `dense`).
    pub dense: Option<DenseProtocol>,
    /// Background prompts the model was trained to match (header field `background_prompts`,
    /// absent when empty): the pipeline lets them compete with the labels
    /// (src/pipeline/combine.rs `group_scores`). Empty for the release's checkpoints.
    pub background_prompts: Vec<String>,
    pub tokenizer_sha256: String,
    pub dtype: StorageDtype,
    pub tensors: BTreeMap<String, T>,
}

/// How a loaded model holds the tensors a file stores as int8.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Residency {
    /// Dequantised once at load: the fastest encode, four bytes per weight.
    #[default]
    F32,
    /// Kept as int8 and dequantised per layer as it runs (burn's quantized tensors): a quarter
    /// of the memory, for some encode time. Only the int8 tensors of an int8 file; the rest
    /// (and every tensor of an f32 or f16 file) load as f32.
    Int8,
}

impl std::str::FromStr for Residency {
    type Err = crate::choice::UnknownChoice;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f32" => Ok(Self::F32),
            "int8" | "i8" => Ok(Self::Int8),
            other => Err(crate::choice::UnknownChoice::new("residency", other, "f32 or int8")),
        }
    }
}

impl std::fmt::Display for Residency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::Int8 => "int8",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("not a segclip weights file: {0}")]
    NotSegclip(String),
    #[error("weights file format version {found} is not supported (this build reads version {supported}); \
             re-export it with a matching `segclip export` or update segclip")]
    UnsupportedVersion { found: String, supported: u32 },
    #[error("weights file is truncated or corrupt: {0}")]
    Corrupt(String),
    #[error("weights file checksum mismatch: the header records {expected}, the tensor data hashes to {found} \
             (the file was modified or damaged)")]
    Checksum { expected: String, found: String },
    #[error("weights file field '{field}': {message}")]
    Field { field: &'static str, message: String },
    #[error("tensor '{tensor}': expected shape {expected:?}, found {found:?}")]
    Shape { tensor: String, expected: Vec<usize>, found: Vec<usize> },
    #[error("tensor '{tensor}': stored as {found}, expected {expected}")]
    Dtype { tensor: String, expected: String, found: String },
    #[error("weights file lacks {} tensor(s) the model needs: {}", .0.len(), preview(.0))]
    Missing(Vec<String>),
    #[error("weights file has {} tensor(s) the model does not use: {}", .0.len(), preview(.0))]
    Unexpected(Vec<String>),
}

fn preview(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(8).map(|s| s.as_str()).collect();
    if names.len() > shown.len() {
        format!("{}, … ({} more)", shown.join(", "), names.len() - shown.len())
    } else {
        shown.join(", ")
    }
}

/// Axes that keep their own int8 scale ("output channels") for a tensor of this name and rank;
/// `None` keeps the tensor in f32 (small or position-like tensors, where 8 bits cost accuracy
/// for no size gain).
pub fn int8_channel_axes(name: &str, shape: &[usize]) -> Option<Vec<usize>> {
    let numel: usize = shape.iter().product();
    if numel < 1024 || name.contains("positional_embedding") || name.contains("semantic_center") {
        return None;
    }
    match shape.len() {
        // Embedding tables: one scale per token row. Matmul weights ([in, out]): per output column.
        2 if name.ends_with("token_embedding.weight") => Some(vec![0]),
        2 => Some(vec![1]),
        // Block-diagonal projections [H, d_in, d_out]: per head and output.
        3 => Some(vec![0, 2]),
        // Convolutions [out, in, kh, kw]: per output channel.
        4 => Some(vec![0]),
        _ => None,
    }
}

/// Serialises a SegCLIP model's tensors (burn names and layout) into a weights file.
pub fn write(
    config: &SegClipConfig,
    tokenizer_sha256: &str,
    dtype: StorageDtype,
    tensors: &BTreeMap<String, HostTensor>,
) -> Result<Vec<u8>, WeightsError> {
    write_file(config, None, &[], tokenizer_sha256, dtype, tensors)
}

/// As `write`, for a model trained to match `background_prompts` (recorded in the header).
pub fn write_with_background(
    config: &SegClipConfig,
    background_prompts: &[String],
    tokenizer_sha256: &str,
    dtype: StorageDtype,
    tensors: &BTreeMap<String, HostTensor>,
) -> Result<Vec<u8>, WeightsError> {
    write_file(config, None, background_prompts, tokenizer_sha256, dtype, tensors)
}

/// As `write`, for a plain CLIP run densely with `protocol` (`DenseClip`'s tensors).
pub fn write_dense(
    config: &SegClipConfig,
    protocol: &DenseProtocol,
    tokenizer_sha256: &str,
    dtype: StorageDtype,
    tensors: &BTreeMap<String, HostTensor>,
) -> Result<Vec<u8>, WeightsError> {
    write_file(config, Some(protocol), &[], tokenizer_sha256, dtype, tensors)
}

fn write_file(
    config: &SegClipConfig,
    dense: Option<&DenseProtocol>,
    background_prompts: &[String],
    tokenizer_sha256: &str,
    dtype: StorageDtype,
    tensors: &BTreeMap<String, HostTensor>,
) -> Result<Vec<u8>, WeightsError> {
    let header = FileHeader { config, dense, background_prompts, tokenizer_sha256, dtype };
    let mut planned = Vec::new();
    for (name, t) in tensors {
        planned.extend(stored_tensors(name, &t.shape, dtype));
    }
    let plan = FilePlan::new(&header, planned)?;
    let mut bytes = vec![0u8; plan.total_len()];
    for (name, t) in tensors {
        encode_tensor(&plan, &mut bytes, name, &t.data, &t.shape, dtype);
    }
    plan.finish(&mut bytes);
    Ok(bytes)
}

/// What a weights file's `__metadata__` says about its model.
pub struct FileHeader<'a> {
    pub config: &'a SegClipConfig,
    pub dense: Option<&'a DenseProtocol>,
    pub background_prompts: &'a [String],
    pub tokenizer_sha256: &'a str,
    pub dtype: StorageDtype,
}

impl FileHeader<'_> {
    /// The metadata strings, all but the checksum of the tensor data.
    fn metadata(&self) -> BTreeMap<String, String> {
        let mut m: BTreeMap<String, String> = [
            ("format", FORMAT_NAME.to_string()),
            ("format_version", FORMAT_VERSION.to_string()),
            ("config", serde_json::to_string(self.config).expect("config serialises")),
            ("tokenizer_sha256", self.tokenizer_sha256.to_string()),
            ("dtype", self.dtype.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if let Some(protocol) = self.dense {
            m.insert("dense".into(), serde_json::to_string(protocol).expect("protocol serialises"));
        }
        if !self.background_prompts.is_empty() {
            m.insert("background_prompts".into(), serde_json::to_string(self.background_prompts).expect("strings serialise"));
        }
        m
    }
}

/// One tensor as a weights file stores it: name, dtype, shape; its bytes come later.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
}

/// The tensors a parameter of this name and shape becomes in a file of `dtype`: itself, and for
/// int8 its scales (`int8_channel_axes` decides which tensors are quantised).
pub fn stored_tensors(name: &str, shape: &[usize], dtype: StorageDtype) -> Vec<StoredTensor> {
    let tensor = |name: String, dtype, shape: Vec<usize>| StoredTensor { name, dtype, shape };
    match dtype {
        StorageDtype::F32 => vec![tensor(name.into(), Dtype::F32, shape.to_vec())],
        StorageDtype::F16 => vec![tensor(name.into(), Dtype::F16, shape.to_vec())],
        StorageDtype::Int8 => match int8_channel_axes(name, shape) {
            Some(axes) => {
                let scale_shape = shape.iter().enumerate().map(|(i, &d)| if axes.contains(&i) { d } else { 1 }).collect();
                vec![tensor(name.into(), Dtype::I8, shape.to_vec()), tensor(format!("{name}{SCALE_SUFFIX}"), Dtype::F32, scale_shape)]
            }
            None => vec![tensor(name.into(), Dtype::F32, shape.to_vec())],
        },
    }
}

/// Writes one parameter's values (f32, our layout) into its place in a planned file, quantised
/// or converted as `stored_tensors` planned it.
pub fn encode_tensor(plan: &FilePlan, file: &mut [u8], name: &str, data: &[f32], shape: &[usize], dtype: StorageDtype) {
    let place = |n: &str| plan.range(n).unwrap_or_else(|| panic!("tensor '{n}' is not in the file's plan"));
    let f32_into = |out: &mut [u8], values: &[f32]| {
        for (o, v) in out.chunks_exact_mut(4).zip(values) {
            o.copy_from_slice(&v.to_le_bytes());
        }
    };
    match (dtype, int8_channel_axes(name, shape)) {
        (StorageDtype::F16, _) => file[place(name)].copy_from_slice(&quant::to_f16_bytes(data)),
        (StorageDtype::Int8, Some(axes)) => {
            let q = quant::quantize_int8(data, shape, &axes);
            for (o, &v) in file[place(name)].iter_mut().zip(&q.values) {
                *o = v as u8;
            }
            f32_into(&mut file[place(&format!("{name}{SCALE_SUFFIX}"))], &q.scales);
        }
        _ => f32_into(&mut file[place(name)], data),
    }
}

/// Where every tensor of a weights file goes, decided from names, dtypes and shapes before any
/// data exists: so a converter can write each tensor into its final place as it arrives
/// (src/weights/stream.rs) and the whole file is allocated once. The layout is the one
/// `safetensors::serialize` gives (tensors by descending dtype, then by name; the JSON header
/// padded with spaces to a multiple of 8), with the header's keys sorted, so that the same
/// tensors always give the same bytes and the manifest's SHA-256 is reproducible.
pub struct FilePlan {
    metadata: BTreeMap<String, String>,
    /// In data order: name, dtype, shape, byte range within the data.
    entries: Vec<(String, Dtype, Vec<usize>, std::ops::Range<usize>)>,
    index: HashMap<String, usize>,
    header_len: usize,
    data_len: usize,
}

impl FilePlan {
    pub fn new(header: &FileHeader, mut tensors: Vec<StoredTensor>) -> Result<Self, WeightsError> {
        tensors.sort_by(|a, b| b.dtype.cmp(&a.dtype).then(a.name.cmp(&b.name)));
        let mut entries = Vec::with_capacity(tensors.len());
        let mut index = HashMap::with_capacity(tensors.len());
        let mut offset = 0usize;
        for t in tensors {
            let len = t.shape.iter().product::<usize>() * t.dtype.bitsize() / 8;
            if index.insert(t.name.clone(), entries.len()).is_some() {
                return Err(WeightsError::Corrupt(format!("tensor '{}' is written twice", t.name)));
            }
            entries.push((t.name, t.dtype, t.shape, offset..offset + len));
            offset += len;
        }
        let mut plan = Self { metadata: header.metadata(), entries, index, header_len: 0, data_len: offset };
        // The checksum is 64 hex digits whatever its value: the header's length is known now.
        plan.header_len = plan.header_json(&"0".repeat(64)).len();
        Ok(plan)
    }

    /// The whole file's length in bytes.
    pub fn total_len(&self) -> usize {
        8 + self.header_len + self.data_len
    }

    /// The byte range of tensor `name` within the whole file.
    pub fn range(&self, name: &str) -> Option<std::ops::Range<usize>> {
        let start = 8 + self.header_len;
        self.index.get(name).map(|&i| {
            let r = &self.entries[i].3;
            start + r.start..start + r.end
        })
    }

    /// The JSON header with this data checksum, keys sorted, padded to a multiple of 8.
    fn header_json(&self, data_sha256: &str) -> Vec<u8> {
        let mut meta = self.metadata.clone();
        meta.insert("data_sha256".into(), data_sha256.into());
        let mut header = serde_json::Map::new();
        header.insert("__metadata__".into(), serde_json::to_value(meta).expect("strings serialise"));
        for (name, dtype, shape, range) in &self.entries {
            header.insert(
                name.clone(),
                serde_json::json!({ "dtype": dtype, "shape": shape, "data_offsets": [range.start, range.end] }),
            );
        }
        // serde_json's Map is a BTreeMap here (no `preserve_order`): keys come out sorted.
        let mut json = serde_json::Value::Object(header).to_string().into_bytes();
        json.resize(json.len().next_multiple_of(8), b' ');
        json
    }

    /// Completes a file whose tensors are all in place: hashes the tensor data in name order
    /// and writes the length and the header in front.
    pub fn finish(&self, file: &mut [u8]) {
        assert_eq!(file.len(), self.total_len(), "a weights file of the planned length");
        let mut names: Vec<&String> = self.index.keys().collect();
        names.sort();
        let mut hasher = Sha256::new();
        for name in names {
            hasher.update(&file[self.range(name).expect("a planned tensor")]);
        }
        let json = self.header_json(&hex(&hasher.finalize()));
        debug_assert_eq!(json.len(), self.header_len);
        file[..8].copy_from_slice(&(self.header_len as u64).to_le_bytes());
        file[8..8 + self.header_len].copy_from_slice(&json);
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of `bytes` as lowercase hex (tokenizer hashes, manifest entries).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The one conversion from a safetensors float tensor's little-endian bytes to f32 (F32, F16,
/// BF16, F64); `None` for other dtypes (integers, I8 quantised data), which callers handle.
pub fn floats_to_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F16 => quant::from_f16_bytes(bytes),
        Dtype::BF16 => bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::F64 => bytes.chunks_exact(8).map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32).collect(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
