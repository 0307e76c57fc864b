//! The segclip weights file, shared by the CLI and the page: a safetensors file whose
//! `__metadata__` names the format and version, holds the model config, the SHA-256 of the
//! tokenizer it was made with, the storage dtype and a SHA-256 over all tensor bytes. Tensors are
//! named by their path in the burn model (`visual.stage1.0.attn.in_proj.weight`) and stored in
//! burn's layout, as f32, f16, or int8 with per-output-channel scales (see `quant`).
//! Python tools can open it as any safetensors file.

use std::collections::{BTreeMap, HashMap};

use burn::tensor::TensorData;
use safetensors::tensor::Dtype;
use sha2::{Digest, Sha256};

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

/// Parses and verifies a weights file into host tensors (f32). Works on bytes, so the page uses
/// it unchanged.
pub fn read(bytes: &[u8]) -> Result<WeightsFile, WeightsError> {
    read_as(&bytes, Residency::F32, |stored| {
        let data = stored.to_f32();
        HostTensor { shape: stored.shape, data }
    })
}

/// Parses and verifies a weights file into the tensor data a model keeps
/// (`model_io::load_model`): each tensor decoded once, straight into the buffer the model then
/// owns; with `Residency::Int8` the int8 tensors stay int8.
pub fn read_for_model(bytes: &[u8], residency: Residency) -> Result<WeightsFile<TensorData>, WeightsError> {
    read_model_from(&bytes, residency)
}

/// As `read_for_model`, reading the file a tensor at a time from `source` (a file on disk, or a
/// buffer the page holds outside wasm memory): the whole file is never in memory at once.
pub fn read_model_from(source: &impl ByteSource, residency: Residency) -> Result<WeightsFile<TensorData>, WeightsError> {
    read_as(source, residency, |stored| stored.into_data(residency))
}

/// Where a weights file's bytes come from, read a range at a time into the caller's buffer.
pub trait ByteSource {
    /// The file's length in bytes.
    fn len(&self) -> u64;
    /// Fills `buf` with the bytes from `offset` on.
    fn read_into(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
    /// This source as one another thread may read too: the checksum is then worked out beside
    /// the decoding. `None` where there are no threads (the page).
    fn shared(&self) -> Option<&(dyn ByteSource + Sync)> {
        None
    }
}

impl ByteSource for &[u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
    fn read_into(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let start = offset as usize;
        let bytes = self
            .get(start..start + buf.len())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "a range beyond the end"))?;
        buf.copy_from_slice(bytes);
        Ok(())
    }
    #[cfg(not(target_arch = "wasm32"))]
    fn shared(&self) -> Option<&(dyn ByteSource + Sync)> {
        Some(self)
    }
}

/// A file on disk, read with positioned reads (its pages stay in the kernel's cache, not in the
/// process).
#[cfg(not(target_arch = "wasm32"))]
impl ByteSource for std::fs::File {
    fn len(&self) -> u64 {
        self.metadata().map(|m| m.len()).unwrap_or(0)
    }
    fn read_into(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
    fn shared(&self) -> Option<&(dyn ByteSource + Sync)> {
        Some(self)
    }
}

/// SHA-256 over `ranges` of `source`, in order, as lowercase hex.
fn hash_ranges(source: &(impl ByteSource + ?Sized), ranges: &[std::ops::Range<u64>]) -> Result<String, WeightsError> {
    // A few MB at a time: the hashing thread holds no tensor-sized buffer.
    const CHUNK: u64 = 4 << 20;
    let mut hasher = Sha256::new();
    let mut buf = Vec::new();
    for range in ranges {
        let mut at = range.start;
        while at < range.end {
            let end = range.end.min(at + CHUNK);
            buf.resize((end - at) as usize, 0);
            source.read_into(at, &mut buf).map_err(|e| WeightsError::Corrupt(format!("reading the file: {e}")))?;
            hasher.update(&buf);
            at = end;
        }
    }
    Ok(hex(&hasher.finalize()))
}

/// One tensor as a file stores it, about to become a host tensor or tensor data.
pub struct Stored<'a> {
    pub shape: Vec<usize>,
    values: StoredValues<'a>,
}

enum StoredValues<'a> {
    Float(Dtype, &'a [u8]),
    /// The values as the file stores them (two's-complement bytes), to dequantise.
    Int8Bytes { values: &'a [u8], scales: Vec<f32>, scale_shape: Vec<usize> },
    /// The values to keep as int8, in a buffer with room for the scales after them
    /// (`quant::resident_int8`).
    Int8 { values: Vec<i8>, scales: Vec<f32>, scale_shape: Vec<usize> },
}

impl Stored<'_> {
    /// The values as f32 (int8 dequantised).
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.values {
            StoredValues::Float(dtype, bytes) => floats_to_f32(*dtype, bytes).expect("a float dtype"),
            StoredValues::Int8Bytes { values, scales, scale_shape } => quant::dequantize_int8_bytes(values, &self.shape, scales, scale_shape),
            StoredValues::Int8 { values, scales, scale_shape } => quant::dequantize_int8(values, &self.shape, scales, scale_shape),
        }
    }

    /// The values as tensor data: f32, or for int8 with `Residency::Int8` a quantized tensor.
    pub fn into_data(self, residency: Residency) -> TensorData {
        match (self.values, residency) {
            (StoredValues::Int8 { values, scales, scale_shape }, Residency::Int8) => {
                quant::resident_int8(values, &self.shape, &scales, &scale_shape)
            }
            (values, _) => {
                let stored = Stored { shape: self.shape, values };
                let data = stored.to_f32();
                TensorData::new(data, stored.shape)
            }
        }
    }
}

/// The largest header this reader accepts (safetensors' own limit).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Parses and verifies a weights file from `source`, making each tensor with `make`. Reads the
/// header, then each tensor's bytes in name order (the order the checksum covers); the bytes of
/// one tensor are all it holds at a time.
fn read_as<T>(source: &impl ByteSource, residency: Residency, mut make: impl FnMut(Stored<'_>) -> T) -> Result<WeightsFile<T>, WeightsError> {
    let len = source.len();
    if len < 8 {
        return Err(WeightsError::NotSegclip(format!("only {len} bytes long")));
    }
    let read_into = |source: &_, offset: u64, buf: &mut [u8]| -> Result<(), WeightsError> {
        ByteSource::read_into(source, offset, buf).map_err(|e| WeightsError::Corrupt(format!("reading the file: {e}")))
    };
    let read = |source: &_, range: std::ops::Range<u64>| -> Result<Vec<u8>, WeightsError> {
        let mut buf = vec![0u8; (range.end - range.start) as usize];
        read_into(source, range.start, &mut buf)?;
        Ok(buf)
    };
    let start = read(source, 0..9.min(len))?;
    let header_len = u64::from_le_bytes(start[..8].try_into().unwrap());
    if header_len > MAX_HEADER_BYTES || start.get(8).copied() != Some(b'{') {
        return Err(WeightsError::NotSegclip(
            "no safetensors header (is this a PyTorch checkpoint? convert it with `segclip convert`)".into(),
        ));
    }
    if 8 + header_len > len {
        return Err(WeightsError::Corrupt(format!("the header is {header_len} bytes long but the file holds {len} bytes in all")));
    }
    let header_json = read(source, 8..8 + header_len)?;
    let header: safetensors::tensor::Metadata = serde_json::from_slice(&header_json)
        .map_err(|e| WeightsError::NotSegclip(format!("unreadable safetensors header ({e})")))?;
    let data_start = 8 + header_len;
    if data_start + header.data_len() as u64 != len {
        return Err(WeightsError::Corrupt(format!(
            "the header describes {} bytes of tensor data but the file holds {} after its header",
            header.data_len(),
            len - data_start
        )));
    }
    let meta = header.metadata().clone().unwrap_or_default();
    match meta.get("format").map(|s| s.as_str()) {
        Some(FORMAT_NAME) => {}
        Some(other) => return Err(WeightsError::NotSegclip(format!("its format is '{other}', expected '{FORMAT_NAME}'"))),
        None => {
            return Err(WeightsError::NotSegclip(
                "a safetensors file without segclip metadata (a raw checkpoint? convert it with `segclip convert`)".into(),
            ))
        }
    }
    let version = meta.get("format_version").cloned().unwrap_or_default();
    if version != FORMAT_VERSION.to_string() {
        return Err(WeightsError::UnsupportedVersion { found: version, supported: FORMAT_VERSION });
    }
    let field = |name: &'static str| {
        meta.get(name).cloned().ok_or(WeightsError::Field { field: name, message: "missing".into() })
    };
    let config: SegClipConfig = serde_json::from_str(&field("config")?)
        .map_err(|e| WeightsError::Field { field: "config", message: e.to_string() })?;
    config.validate().map_err(|message| WeightsError::Field { field: "config", message })?;
    let dtype: StorageDtype =
        field("dtype")?.parse().map_err(|e: crate::choice::UnknownChoice| WeightsError::Field { field: "dtype", message: e.to_string() })?;
    let expected_sha = field("data_sha256")?;
    let tokenizer_sha256 = field("tokenizer_sha256")?;
    let dense = match meta.get("dense") {
        None => None,
        Some(text) => {
            let protocol: DenseProtocol =
                serde_json::from_str(text).map_err(|e| WeightsError::Field { field: "dense", message: e.to_string() })?;
            let protocol = protocol.with_method_defaults();
            protocol.validate().map_err(|message| WeightsError::Field { field: "dense", message })?;
            Some(protocol)
        }
    };
    let background_prompts = match meta.get("background_prompts") {
        None => Vec::new(),
        Some(text) => {
            let prompts: Vec<String> = serde_json::from_str(text).map_err(|e| WeightsError::Field {
                field: "background_prompts",
                message: format!("expected a JSON list of strings: {e}"),
            })?;
            crate::labels::validate_background_prompts(&prompts)
                .map_err(|e| WeightsError::Field { field: "background_prompts", message: e.to_string() })?;
            prompts
        }
    };

    let infos = header.tensors();
    let mut names: Vec<&String> = infos.keys().collect();
    names.sort();
    let range = |name: &str| {
        let (s, e) = infos[name].data_offsets;
        data_start + s as u64..data_start + e as u64
    };
    // The scales first (small, and an int8 tensor's values need them), then every tensor in
    // name order: hashed as the checksum covers them, and each non-scale one decoded.
    let mut scales = HashMap::new();
    for name in names.iter().filter(|n| n.ends_with(SCALE_SUFFIX)) {
        let info = infos[name.as_str()];
        if info.dtype != Dtype::F32 {
            return Err(WeightsError::Dtype { tensor: name.to_string(), expected: "F32".into(), found: format!("{:?}", info.dtype) });
        }
        let bytes = read(source, range(name))?;
        let values = floats_to_f32(Dtype::F32, &bytes).expect("F32 is a float dtype");
        scales.insert(name.as_str(), (bytes, values, info.shape.clone()));
    }
    // The checksum covers every tensor's bytes in name order. With a second reader a thread of
    // its own reads and hashes them while this one decodes; otherwise the decoding hashes as
    // it reads.
    let ordered: Vec<std::ops::Range<u64>> = names.iter().map(|n| range(n)).collect();
    let second = source.shared();
    let mut hasher = second.is_none().then(Sha256::new);
    let mut tensors = BTreeMap::new();
    let hashed = std::thread::scope(|scope| -> Result<Option<Result<String, WeightsError>>, WeightsError> {
        let hashing = second.map(|reader| scope.spawn(|| hash_ranges(reader, &ordered)));
        // One buffer for every float tensor's bytes (they are decoded into a buffer of their own);
        // an int8 tensor's values are read straight into the buffer its tensor keeps.
        let mut buffer = Vec::new();
        for name in &names {
            let info = infos[name.as_str()];
            let range = range(name);
            let size = (range.end - range.start) as usize;
            if let Some((bytes, _, _)) = scales.get(name.as_str()) {
                if let Some(h) = hasher.as_mut() {
                    h.update(bytes);
                }
                continue;
            }
            let shape = info.shape.clone();
            let values = match info.dtype {
                Dtype::F32 | Dtype::F16 => {
                    buffer.resize(size, 0);
                    read_into(source, range.start, &mut buffer)?;
                    if let Some(h) = hasher.as_mut() {
                        h.update(&buffer);
                    }
                    StoredValues::Float(info.dtype, &buffer)
                }
                Dtype::I8 => {
                    let scale_name = format!("{name}{SCALE_SUFFIX}");
                    let (scales, scale_shape) = scales.get(scale_name.as_str()).map(|(_, s, shape)| (s.clone(), shape.clone())).ok_or_else(|| WeightsError::Missing(vec![scale_name.clone()]))?;
                    let ok_shape = scale_shape.len() == shape.len() && scale_shape.iter().zip(&shape).all(|(&s, &d)| s == 1 || s == d);
                    if !ok_shape {
                        return Err(WeightsError::Shape { tensor: scale_name, expected: shape.clone(), found: scale_shape });
                    }
                    let mut bytes = match residency {
                        Residency::Int8 => quant::int8_buffer(size, &shape, &scale_shape),
                        Residency::F32 => std::mem::take(&mut buffer),
                    };
                    bytes.resize(size, 0);
                    read_into(source, range.start, &mut bytes)?;
                    if let Some(h) = hasher.as_mut() {
                        h.update(&bytes);
                    }
                    match residency {
                        Residency::Int8 => {
                            // Same size and alignment: the collect reuses the buffer and its capacity.
                            let values: Vec<i8> = bytes.into_iter().map(|b| b as i8).collect();
                            StoredValues::Int8 { values, scales, scale_shape }
                        }
                        Residency::F32 => {
                            buffer = bytes;
                            StoredValues::Int8Bytes { values: &buffer, scales, scale_shape }
                        }
                    }
                }
                other => {
                    return Err(WeightsError::Dtype { tensor: name.to_string(), expected: "F32, F16 or I8".into(), found: format!("{other:?}") })
                }
            };
            tensors.insert(name.to_string(), make(Stored { shape, values }));
        }
        Ok(hashing.map(|h| h.join().unwrap_or_else(|_| Err(WeightsError::Corrupt("the checksum thread failed".into())))))
    })?;
    let found_sha = match hasher {
        Some(h) => hex(&h.finalize()),
        None => hashed.expect("a hashing thread when there is no hasher here")?,
    };
    if found_sha != expected_sha {
        return Err(WeightsError::Checksum { expected: expected_sha, found: found_sha });
    }
    Ok(WeightsFile { config, dense, background_prompts, tokenizer_sha256, dtype, tensors })
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
mod canonical_tests {
    use super::*;

    #[test]
    fn the_same_tensors_give_the_same_bytes() {
        let config = SegClipConfig::tiny();
        let mut tensors = BTreeMap::new();
        tensors.insert("a.weight".to_string(), HostTensor::new(vec![2, 3], vec![0.5, -1.0, 2.0, 3.0, 0.25, -0.75]));
        tensors.insert("b.bias".to_string(), HostTensor::new(vec![3], vec![1.0, 2.0, 3.0]));
        let first = write(&config, "abc", StorageDtype::Int8, &tensors).unwrap();
        for _ in 0..8 {
            assert_eq!(write(&config, "abc", StorageDtype::Int8, &tensors).unwrap(), first);
        }
        let file = read(&first).unwrap();
        assert_eq!(file.tensors["b.bias"].data, vec![1.0, 2.0, 3.0]);
    }

    /// The planned writer gives the bytes `safetensors::serialize` gives for the same tensors,
    /// with the header's keys sorted (how files were written before the plan existed, so their
    /// manifest hashes stay reproducible).
    #[test]
    fn the_planned_layout_is_safetensors_own_with_sorted_keys() {
        use safetensors::tensor::TensorView;
        let config = SegClipConfig::tiny();
        let mut tensors = BTreeMap::new();
        let big: Vec<f32> = (0..2048).map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0).collect();
        tensors.insert("z.mlp.weight".to_string(), HostTensor::new(vec![32, 64], big.clone()));
        tensors.insert("a.weight".to_string(), HostTensor::new(vec![64, 32], big));
        tensors.insert("b.bias".to_string(), HostTensor::new(vec![3], vec![1.0, 2.0, 3.0]));
        let ours = write(&config, "abc", StorageDtype::Int8, &tensors).unwrap();

        let mut entries: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        for (name, t) in &tensors {
            match int8_channel_axes(name, &t.shape) {
                Some(axes) => {
                    let q = quant::quantize_int8(&t.data, &t.shape, &axes);
                    entries.push((name.clone(), Dtype::I8, t.shape.clone(), q.values.iter().map(|&v| v as u8).collect()));
                    let scales = q.scales.iter().flat_map(|v| v.to_le_bytes()).collect();
                    entries.push((format!("{name}{SCALE_SUFFIX}"), Dtype::F32, q.scale_shape, scales));
                }
                None => entries.push((name.clone(), Dtype::F32, t.shape.clone(), t.data.iter().flat_map(|v| v.to_le_bytes()).collect())),
            }
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut hasher = Sha256::new();
        entries.iter().for_each(|e| hasher.update(&e.3));
        let header = FileHeader { config: &config, dense: None, background_prompts: &[], tokenizer_sha256: "abc", dtype: StorageDtype::Int8 };
        let mut metadata: HashMap<String, String> = header.metadata().into_iter().collect();
        metadata.insert("data_sha256".into(), hex(&hasher.finalize()));
        let views = entries.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()));
        let mut theirs = safetensors::serialize(views, Some(metadata)).unwrap();
        // Their header with its keys sorted, same length and padding.
        let n = u64::from_le_bytes(theirs[..8].try_into().unwrap()) as usize;
        let sorted = serde_json::from_slice::<serde_json::Value>(&theirs[8..8 + n]).unwrap().to_string().into_bytes();
        theirs[8..8 + sorted.len()].copy_from_slice(&sorted);
        theirs[8 + sorted.len()..8 + n].fill(b' ');
        assert_eq!(ours, theirs);
    }
}

#[cfg(test)]
/// Optional header fields: `dense` and `background_prompts`.
mod header_tests {
    use super::*;
    use crate::model::dense::{DenseMethod, DenseProtocol};

    fn tensors() -> BTreeMap<String, HostTensor> {
        BTreeMap::from([("b.bias".to_string(), HostTensor::new(vec![3], vec![1.0, 2.0, 3.0]))])
    }

    #[test]
    fn a_dense_file_keeps_its_protocol_and_a_segclip_file_has_none() {
        let protocol = DenseProtocol::for_method(DenseMethod::Naclip);
        let bytes = write_dense(&SegClipConfig::tiny(), &protocol, "abc", StorageDtype::F32, &tensors()).unwrap();
        assert_eq!(read(&bytes).unwrap().dense, Some(protocol));
        let plain = write(&SegClipConfig::tiny(), "abc", StorageDtype::F32, &tensors()).unwrap();
        assert_eq!(read(&plain).unwrap().dense, None);
    }

    #[test]
    fn a_bad_protocol_is_named_by_its_field() {
        let protocol = DenseProtocol { bg_thresh: 1.5, ..DenseProtocol::for_method(DenseMethod::Clearclip) };
        let bytes = write_dense(&SegClipConfig::tiny(), &protocol, "abc", StorageDtype::F32, &tensors()).unwrap();
        let err = read(&bytes).unwrap_err().to_string();
        assert!(err.contains("'dense'") && err.contains("bg_thresh must be in [0, 1], found 1.5"), "{err}");
    }

    #[test]
    fn background_prompts_travel_with_the_file() {
        let prompts = vec!["striped background".to_string(), "plain background".to_string()];
        let bytes = write_with_background(&SegClipConfig::tiny(), &prompts, "abc", StorageDtype::Int8, &tensors()).unwrap();
        assert_eq!(read(&bytes).unwrap().background_prompts, prompts);
        let plain = write(&SegClipConfig::tiny(), "abc", StorageDtype::Int8, &tensors()).unwrap();
        assert!(read(&plain).unwrap().background_prompts.is_empty());
        assert!(!String::from_utf8_lossy(&plain).contains("background_prompts"));
    }

    #[test]
    fn an_empty_background_prompt_is_named_by_its_field() {
        let bytes = write_with_background(&SegClipConfig::tiny(), &[" ".to_string()], "abc", StorageDtype::F32, &tensors()).unwrap();
        let err = read(&bytes).unwrap_err().to_string();
        assert!(err.contains("'background_prompts'") && err.contains("is empty"), "{err}");
    }
}
