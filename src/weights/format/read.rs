//! Reading a weights file a tensor at a time from any `ByteSource` (a slice, a file on disk, the
//! page's JS heap): the header checked field by field, each tensor decoded straight into the
//! buffer the model keeps, the SHA-256 checked (natively on a second thread).

use std::collections::{BTreeMap, HashMap};

use burn::tensor::TensorData;
use safetensors::tensor::Dtype;
use sha2::{Digest, Sha256};

use super::*;

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
