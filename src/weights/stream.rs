//! Plain CLIP checkpoints as the model hub serves them (Hugging Face `CLIPModel` safetensors, or
//! OpenAI key names in safetensors as open_clip and timm publish them) converted into a dense
//! weights file (src/model/dense.rs) tensor by tensor as their bytes arrive. The page feeds it
//! a download chunk by chunk; `segclip convert` and `segclip fetch` feed it a file the same way,
//! so both produce the same bytes by the same code.
//!
//! Memory: the output file is allocated once, at its final size, when the source header has
//! arrived (`FilePlan`); each source tensor is converted one row (one output channel) at a time
//! where its quantisation allows, so the f32 checkpoint is never held whole: the peak is the
//! output plus one tensor that must be quantised whole (the projections) plus one chunk.

use std::collections::{BTreeMap, BTreeSet};

use safetensors::tensor::{Dtype, Metadata};

use super::format::{self, FileHeader, FilePlan, WeightsError};
use super::keymap::{self, HfKey, KeyTarget, SourceLayout, Transform};
use super::quant::{self, StorageDtype, SCALE_SUFFIX};
use crate::model::dense::{DenseMethod, DenseProtocol};
use crate::model::SegClipConfig;

/// A header longer than this is refused before it is buffered (safetensors' own limit).
pub const MAX_HEADER_BYTES: usize = 100_000_000;

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("not a safetensors file: {0}")]
    NotSafetensors(String),
    #[error("not a CLIP checkpoint: {0}")]
    NotClip(String),
    #[error("not a CLIP checkpoint: {0}")]
    Keys(#[from] keymap::KeymapError),
    #[error("tensor '{tensor}': {message}")]
    Tensor { tensor: String, message: String },
    #[error("the file ended after {received} of the {expected} bytes its header describes (a truncated download?)")]
    Truncated { received: u64, expected: u64 },
    #[error("the file has more bytes than its header describes ({expected}): not a well-formed safetensors file")]
    TooLong { expected: u64 },
    #[error("the download's SHA-256 is {found}, the preset's {expected} (a changed or damaged file)")]
    Checksum { expected: String, found: String },
    #[error(transparent)]
    Weights(#[from] WeightsError),
}

/// What to make of the checkpoint.
#[derive(Clone, Debug)]
pub struct ConvertOptions {
    pub method: DenseMethod,
    pub dtype: StorageDtype,
    pub tokenizer_sha256: String,
    /// Head counts for towers whose width is not 64 per head (the release's rule), as a preset
    /// or `--config` gives them: (image tower, text tower).
    pub heads: Option<(usize, usize)>,
    /// The SHA-256 the source file must have (a preset's pin), checked as it streams.
    pub source_sha256: Option<String>,
}

/// One tensor of the source checkpoint, as its header describes it.
#[derive(Clone, Debug)]
pub struct SourceTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
}

/// Where a source tensor's values go.
#[derive(Clone, Debug)]
struct Target {
    /// Our parameter name.
    name: String,
    transform: Transform,
    /// The parameter's shape in our layout.
    shape: Vec<usize>,
    /// For one of q, k, v: its third of the packed tensor's rows (in the source layout).
    slot: Option<usize>,
    source_dtype: Dtype,
    /// Source rows and elements per row (a 0- or 1-D tensor is one row).
    rows: usize,
    row_len: usize,
    /// Converted a row at a time (else the whole tensor at once).
    by_rows: bool,
    /// Int8 scales per output channel (the tensor is quantised), else stored as floats.
    quantised: bool,
}

/// The finished conversion.
pub struct Converted {
    pub bytes: Vec<u8>,
    pub layout: SourceLayout,
    pub config: SegClipConfig,
    pub protocol: DenseProtocol,
    /// Source tensors deliberately not loaded, with the reason.
    pub unused: Vec<(String, &'static str)>,
}

/// A dense conversion planned from the source tensors' names, dtypes and shapes; each tensor's
/// bytes are then given to `feed` in order, in pieces of any size.
pub struct DenseConversion {
    layout: SourceLayout,
    config: SegClipConfig,
    protocol: DenseProtocol,
    unused: Vec<(String, &'static str)>,
    dtype: StorageDtype,
    plan: FilePlan,
    out: Vec<u8>,
    /// Per source tensor (in the order given to `plan`), `None` for an unused one.
    targets: Vec<Option<Target>>,
    /// Bytes of the source tensor being fed that do not yet make a whole unit (row or tensor).
    partial: Vec<u8>,
    /// Per source tensor, the bytes fed so far and its length.
    fed: Vec<usize>,
    lens: Vec<usize>,
    /// q, k, v parts of a packed tensor that is quantised whole, kept until all three arrived.
    packed_parts: BTreeMap<String, [Option<Vec<f32>>; 3]>,
}

fn element_bytes(dtype: Dtype) -> Option<usize> {
    match dtype {
        Dtype::F32 => Some(4),
        Dtype::F16 | Dtype::BF16 => Some(2),
        Dtype::F64 => Some(8),
        _ => None,
    }
}

impl DenseConversion {
    pub fn plan(sources: &[SourceTensor], options: &ConvertOptions) -> Result<Self, ConvertError> {
        let keys: BTreeSet<String> = sources.iter().map(|s| s.name.clone()).collect();
        let layout = keymap::detect_layout(&keys)?;
        if layout == SourceLayout::SegClip {
            return Err(ConvertError::NotClip(
                "this is a SegCLIP checkpoint, which segments with its own group module: convert it with \
                 `segclip convert` (without --method)"
                    .into(),
            ));
        }
        // Each source key in the OpenAI layout, and its packed slot.
        let mut unused = Vec::new();
        let mut unknown = Vec::new();
        let mut openai: Vec<Option<(String, Transform, Option<usize>)>> = Vec::with_capacity(sources.len());
        for s in sources {
            if element_bytes(s.dtype).is_none() {
                // Integer tensors (position ids, counters) are buffers, not weights.
                unused.push((s.name.clone(), "integer buffer, not a weight"));
                openai.push(None);
                continue;
            }
            let mapped = match layout {
                SourceLayout::HuggingFaceClip => match keymap::hf_key(&s.name) {
                    None => {
                        unknown.push(s.name.clone());
                        None
                    }
                    Some(HfKey::Unused(reason)) => {
                        unused.push((s.name.clone(), reason));
                        None
                    }
                    Some(HfKey::OpenAi(key, transform)) => Some((key, transform, None)),
                    Some(packed @ HfKey::Packed { slot, .. }) => {
                        Some((packed.openai_key().expect("a packed key"), Transform::Keep, Some(slot)))
                    }
                },
                _ => Some((s.name.clone(), Transform::Keep, None)),
            };
            openai.push(mapped);
        }
        if !unknown.is_empty() {
            return Err(keymap::KeymapError::UnknownKeys { what: "CLIP parameter", keys: unknown }.into());
        }
        // Shapes in the OpenAI layout (release prefix) to read the config off.
        let mut shapes = BTreeMap::new();
        for (s, m) in sources.iter().zip(&openai) {
            let Some((key, transform, slot)) = m else { continue };
            let mut shape = keymap::transformed_shape(*transform, &s.shape, 1)
                .map_err(|e| ConvertError::Tensor { tensor: s.name.clone(), message: e.to_string() })?;
            if slot.is_some() && !shape.is_empty() {
                shape[0] *= 3;
            }
            shapes.insert(format!("clip.{key}"), shape);
        }
        let config = keymap::infer_config(&shapes, layout, options.heads)?;
        config.validate().map_err(|e| ConvertError::NotClip(format!("model config: {e}")))?;

        let mut targets = Vec::with_capacity(sources.len());
        let mut stored = BTreeMap::new();
        for (s, m) in sources.iter().zip(&openai) {
            let Some((key, hf_transform, slot)) = m else {
                targets.push(None);
                continue;
            };
            let (name, transform) = match keymap::dense_key(key) {
                Some(KeyTarget::Ours(name, t)) => {
                    let t = match (*hf_transform, t) {
                        (Transform::Keep, t) => t,
                        (t, Transform::Keep) => t,
                        (a, b) => {
                            return Err(ConvertError::Tensor { tensor: s.name.clone(), message: format!("two layout changes ({a:?}, {b:?})") })
                        }
                    };
                    (name, t)
                }
                Some(KeyTarget::Unused(reason)) => {
                    unused.push((s.name.clone(), reason));
                    targets.push(None);
                    continue;
                }
                None => return Err(ConvertError::NotClip(format!("key '{}' matches no CLIP parameter", s.name))),
            };
            let mut packed_shape = s.shape.clone();
            if slot.is_some() {
                if packed_shape.is_empty() {
                    return Err(ConvertError::Tensor { tensor: s.name.clone(), message: "a q/k/v projection must have a first axis".into() });
                }
                packed_shape[0] *= 3;
            }
            let shape = keymap::transformed_shape(transform, &packed_shape, config.vision_heads)
                .map_err(|e| ConvertError::Tensor { tensor: s.name.clone(), message: e.to_string() })?;
            let (rows, row_len): (usize, usize) = match s.shape.split_first() {
                Some((&r, rest)) if !rest.is_empty() => (r, rest.iter().product()),
                _ => (1, s.shape.iter().product()),
            };
            let axes = format::int8_channel_axes(&name, &shape);
            let quantised = options.dtype == StorageDtype::Int8 && axes.is_some();
            // A row is one output channel when the scales run along the source's first axis.
            let by_rows = s.shape.len() >= 2
                && match (&axes, transform) {
                    _ if !quantised => matches!(transform, Transform::Keep | Transform::Transpose),
                    (Some(a), Transform::Keep) => a == &[0],
                    (Some(a), Transform::Transpose) => a == &[1],
                    _ => false,
                };
            if let Some(previous) = stored.insert(name.clone(), shape.clone()) {
                if slot.is_none() || previous != shape {
                    return Err(ConvertError::Tensor { tensor: s.name.clone(), message: format!("gives '{name}' a second time") });
                }
            }
            targets.push(Some(Target { name, transform, shape, slot: *slot, source_dtype: s.dtype, rows, row_len, by_rows, quantised }));
        }
        let protocol = DenseProtocol::for_method(options.method);
        let mut planned = Vec::new();
        for (name, shape) in &stored {
            planned.extend(format::stored_tensors(name, shape, options.dtype));
        }
        let header = FileHeader {
            config: &config,
            dense: Some(&protocol),
            background_prompts: &[],
            tokenizer_sha256: &options.tokenizer_sha256,
            dtype: options.dtype,
        };
        let plan = FilePlan::new(&header, planned)?;
        let out = vec![0u8; plan.total_len()];
        Ok(Self {
            layout,
            config,
            protocol,
            unused,
            dtype: options.dtype,
            plan,
            out,
            fed: vec![0; targets.len()],
            lens: sources.iter().map(|s| s.shape.iter().product::<usize>() * s.dtype.bitsize() / 8).collect(),
            targets,
            partial: Vec::new(),
            packed_parts: BTreeMap::new(),
        })
    }

    /// The output file's size in bytes (known once planned).
    pub fn output_len(&self) -> usize {
        self.out.len()
    }

    pub fn config(&self) -> &SegClipConfig {
        &self.config
    }

    /// The next `bytes` of source tensor `index` (one tensor after another, in any order, each
    /// in pieces of any size).
    pub fn feed(&mut self, index: usize, mut bytes: &[u8]) -> Result<(), ConvertError> {
        let total = self.lens[index];
        if self.fed[index] + bytes.len() > total {
            let tensor = self.targets[index].as_ref().map_or_else(|| format!("#{index}"), |t| t.name.clone());
            return Err(ConvertError::Tensor { tensor, message: format!("more than its {total} bytes") });
        }
        let Some(target) = self.targets[index].clone() else {
            self.fed[index] += bytes.len();
            return Ok(());
        };
        let element = element_bytes(target.source_dtype).expect("checked when planned");
        let unit = if target.by_rows { target.row_len * element } else { total };
        while !bytes.is_empty() {
            let row = self.fed[index] / unit.max(1);
            if self.partial.is_empty() && bytes.len() >= unit {
                let (whole, rest) = bytes.split_at(unit);
                self.convert_unit(&target, row, whole)?;
                self.fed[index] += unit;
                bytes = rest;
                continue;
            }
            let take = (unit - self.partial.len()).min(bytes.len());
            self.partial.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.partial.len() == unit {
                let whole = std::mem::take(&mut self.partial);
                self.convert_unit(&target, row, &whole)?;
                self.fed[index] += unit;
            }
        }
        Ok(())
    }

    /// One row (or the whole tensor) of source bytes into the output.
    fn convert_unit(&mut self, t: &Target, row: usize, bytes: &[u8]) -> Result<(), ConvertError> {
        let values = format::floats_to_f32(t.source_dtype, bytes).expect("a float dtype");
        if t.by_rows {
            self.write_row(t, row, &values);
            return Ok(());
        }
        match t.slot {
            None => self.write_whole(t, values),
            Some(slot) => {
                // All three parts are needed before a tensor quantised whole can be written.
                let parts = self.packed_parts.entry(t.name.clone()).or_default();
                parts[slot] = Some(values);
                if parts.iter().all(Option::is_some) {
                    let parts = self.packed_parts.remove(&t.name).expect("present");
                    let data = parts.into_iter().flatten().flatten().collect();
                    self.write_whole(t, data)
                } else {
                    Ok(())
                }
            }
        }
    }

    /// A whole tensor (source layout, packed parts concatenated) into the output.
    fn write_whole(&mut self, t: &Target, values: Vec<f32>) -> Result<(), ConvertError> {
        let mut source_shape = t.shape.clone();
        if t.transform == Transform::Transpose {
            source_shape.reverse();
        }
        let host = format::HostTensor::new(source_shape, values);
        let ours = keymap::apply_transform(t.transform, host, self.config.vision_heads)
            .map_err(|e| ConvertError::Tensor { tensor: t.name.clone(), message: e.to_string() })?;
        format::encode_tensor(&self.plan, &mut self.out, &t.name, &ours.data, &ours.shape, self.dtype);
        Ok(())
    }

    /// Source row `row` (one output channel) into its places: the same positions in our layout
    /// for `Keep`, a column for `Transpose`; a q/k/v part is offset by its third.
    fn write_row(&mut self, t: &Target, row: usize, values: &[f32]) {
        let packed_row = t.slot.map_or(row, |slot| slot * t.rows + row);
        let range = self.plan.range(&t.name).expect("a planned tensor");
        let scale = if t.quantised {
            let max = values.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
            let at = self.plan.range(&format!("{}{SCALE_SUFFIX}", t.name)).expect("planned scales").start + 4 * packed_row;
            self.out[at..at + 4].copy_from_slice(&scale.to_le_bytes());
            Some(scale)
        } else {
            None
        };
        // Element positions of this row in our layout.
        let columns = t.shape.last().copied().unwrap_or(1);
        let position = |i: usize| match t.transform {
            Transform::Transpose => i * columns + packed_row,
            _ => packed_row * t.row_len + i,
        };
        let data = &mut self.out[range];
        match (scale, self.dtype) {
            (Some(scale), _) => {
                for (i, &v) in values.iter().enumerate() {
                    data[position(i)] = quant::quantize_value(v, scale) as u8;
                }
            }
            (None, StorageDtype::F16) => {
                for (i, &v) in values.iter().enumerate() {
                    let p = 2 * position(i);
                    data[p..p + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
                }
            }
            (None, _) => {
                for (i, &v) in values.iter().enumerate() {
                    let p = 4 * position(i);
                    data[p..p + 4].copy_from_slice(&v.to_le_bytes());
                }
            }
        }
    }

    /// Completes the file once every tensor was fed whole.
    pub fn finish(mut self) -> Result<Converted, ConvertError> {
        if let Some(i) = (0..self.lens.len()).find(|&i| self.fed[i] != self.lens[i]) {
            let tensor = self.targets[i].as_ref().map_or_else(|| format!("#{i}"), |t| t.name.clone());
            return Err(ConvertError::Tensor { tensor, message: format!("only {} of its {} bytes arrived", self.fed[i], self.lens[i]) });
        }
        if let Some(name) = self.packed_parts.keys().next() {
            return Err(ConvertError::Tensor { tensor: name.clone(), message: "q, k and v projections must all be present".into() });
        }
        self.plan.finish(&mut self.out);
        Ok(Converted { bytes: self.out, layout: self.layout, config: self.config, protocol: self.protocol, unused: self.unused })
    }
}

/// Parses a safetensors byte stream and feeds its tensors to a `DenseConversion` as the bytes
/// arrive: the header first (bounded), then each tensor in the order of its data offsets.
pub struct StreamConverter {
    options: ConvertOptions,
    received: u64,
    header: Vec<u8>,
    hasher: Option<sha2::Sha256>,
    /// Once the header is read: the conversion, the tensors in data order,
    /// the data bytes consumed and the whole file's expected length.
    state: Option<Streaming>,
}

struct Streaming {
    conversion: DenseConversion,
    /// (source index, end offset) in data order.
    order: Vec<(usize, usize)>,
    current: usize,
    data_pos: usize,
    expected: u64,
}

impl StreamConverter {
    pub fn new(options: ConvertOptions) -> Self {
        let hasher = options.source_sha256.as_ref().map(|_| <sha2::Sha256 as sha2::Digest>::new());
        Self { options, received: 0, header: Vec::new(), hasher, state: None }
    }

    /// Bytes received so far, and the whole file's length once the header has told it.
    pub fn progress(&self) -> (u64, Option<u64>) {
        (self.received, self.state.as_ref().map(|s| s.expected))
    }

    /// The output file's length, once the header has been read.
    pub fn output_len(&self) -> Option<usize> {
        self.state.as_ref().map(|s| s.conversion.output_len())
    }

    /// The model config, once the header has been read.
    pub fn config(&self) -> Option<&SegClipConfig> {
        self.state.as_ref().map(|s| s.conversion.config())
    }

    /// The next chunk of the file, of any size.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), ConvertError> {
        if let Some(h) = &mut self.hasher {
            sha2::Digest::update(h, chunk);
        }
        self.take(chunk)
    }

    fn take(&mut self, mut chunk: &[u8]) -> Result<(), ConvertError> {
        self.received += chunk.len() as u64;
        if self.state.is_none() {
            let need = if self.header.len() < 8 {
                8
            } else {
                let n = u64::from_le_bytes(self.header[..8].try_into().expect("8 bytes"));
                if n as usize > MAX_HEADER_BYTES || n < 2 {
                    return Err(ConvertError::NotSafetensors(format!("its first 8 bytes give a header of {n} bytes")));
                }
                8 + n as usize
            };
            let take = (need - self.header.len()).min(chunk.len());
            self.header.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            if self.header.len() < need {
                return Ok(());
            }
            if need == 8 {
                // The length is known now; read the header itself.
                self.received -= chunk.len() as u64;
                return self.take(chunk);
            }
            self.start()?;
        }
        let state = self.state.as_mut().expect("started");
        while !chunk.is_empty() {
            let Some(&(index, end)) = state.order.get(state.current) else {
                return Err(ConvertError::TooLong { expected: state.expected });
            };
            let take = (end - state.data_pos).min(chunk.len());
            state.conversion.feed(index, &chunk[..take])?;
            state.data_pos += take;
            chunk = &chunk[take..];
            if state.data_pos == end {
                state.current += 1;
            }
        }
        Ok(())
    }

    fn start(&mut self) -> Result<(), ConvertError> {
        let json = &self.header[8..];
        if json.first() != Some(&b'{') {
            return Err(ConvertError::NotSafetensors("no JSON header (is this a PyTorch checkpoint? `segclip convert` reads those)".into()));
        }
        let metadata: Metadata =
            serde_json::from_slice(json).map_err(|e| ConvertError::NotSafetensors(format!("unreadable header: {e}")))?;
        let mut entries: Vec<(String, Dtype, Vec<usize>, usize, usize)> = metadata
            .tensors()
            .into_iter()
            .map(|(name, info)| (name, info.dtype, info.shape.clone(), info.data_offsets.0, info.data_offsets.1))
            .collect();
        entries.sort_by_key(|e| (e.3, e.4));
        let sources: Vec<SourceTensor> =
            entries.iter().map(|(name, dtype, shape, _, _)| SourceTensor { name: name.clone(), dtype: *dtype, shape: shape.clone() }).collect();
        let conversion = DenseConversion::plan(&sources, &self.options)?;
        let order = entries.iter().enumerate().map(|(i, e)| (i, e.4)).collect();
        let expected = (self.header.len() + metadata.data_len()) as u64;
        self.state = Some(Streaming { conversion, order, current: 0, data_pos: 0, expected });
        Ok(())
    }

    /// Completes the conversion once the whole file was pushed.
    pub fn finish(self) -> Result<Converted, ConvertError> {
        let hint = self.header_hint();
        let Some(state) = self.state else {
            return Err(ConvertError::Truncated { received: self.received, expected: hint });
        };
        if self.received < state.expected {
            return Err(ConvertError::Truncated { received: self.received, expected: state.expected });
        }
        if let (Some(h), Some(expected)) = (self.hasher, &self.options.source_sha256) {
            let found = format::hex(&sha2::Digest::finalize(h));
            if &found != expected {
                return Err(ConvertError::Checksum { expected: expected.clone(), found });
            }
        }
        state.conversion.finish()
    }

    fn header_hint(&self) -> u64 {
        if self.header.len() >= 8 {
            8 + u64::from_le_bytes(self.header[..8].try_into().expect("8 bytes"))
        } else {
            8
        }
    }
}
