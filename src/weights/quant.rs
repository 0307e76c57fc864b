//! Storage dtypes of the weights file: f32, f16, and int8 with symmetric per-output-channel scales.
//!
//! An int8 tensor is stored as I8 values plus a companion F32 tensor `<name>.__scale` whose shape
//! is the tensor's with every reduced axis set to 1, so the file itself says along which axes the
//! scales vary (e.g. a [in, out] matmul weight has scales [1, out]); dequantisation is
//! `q * scale`, broadcast.

use burn::tensor::quantization::{QuantScheme, QuantStore, QuantValue, ScaleDtype};
use burn::tensor::TensorData;
use half::f16;

/// Storage dtype of a weights file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageDtype {
    F32,
    F16,
    Int8,
}

impl std::str::FromStr for StorageDtype {
    type Err = crate::choice::UnknownChoice;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "int8" | "i8" => Ok(Self::Int8),
            other => Err(crate::choice::UnknownChoice::new("dtype", other, "f32, f16 or int8")),
        }
    }
}

impl std::fmt::Display for StorageDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Int8 => "int8",
        })
    }
}

pub const SCALE_SUFFIX: &str = ".__scale";

/// Int8-quantised values with their scales.
pub struct Quantized {
    pub values: Vec<i8>,
    pub scale_shape: Vec<usize>,
    pub scales: Vec<f32>,
}

/// Quantises `data` of `shape`, with one scale per combination of the `kept` axes.
pub fn quantize_int8(data: &[f32], shape: &[usize], kept: &[usize]) -> Quantized {
    let scale_shape: Vec<usize> =
        shape.iter().enumerate().map(|(i, &d)| if kept.contains(&i) { d } else { 1 }).collect();
    let n_scales: usize = scale_shape.iter().product();
    let mut max_abs = vec![0f32; n_scales];
    for (i, &v) in data.iter().enumerate() {
        let s = scale_index(i, shape, &scale_shape);
        max_abs[s] = max_abs[s].max(v.abs());
    }
    let scales: Vec<f32> = max_abs.iter().map(|&m| if m > 0.0 { m / 127.0 } else { 1.0 }).collect();
    let values = data
        .iter()
        .enumerate()
        .map(|(i, &v)| quantize_value(v, scales[scale_index(i, shape, &scale_shape)]))
        .collect();
    Quantized { values, scale_shape, scales }
}

/// One value on its channel's int8 grid.
pub fn quantize_value(v: f32, scale: f32) -> i8 {
    (v / scale).round().clamp(-127.0, 127.0) as i8
}

/// Dequantises int8 `values` of `shape` with `scales` of `scale_shape`.
pub fn dequantize_int8(values: &[i8], shape: &[usize], scales: &[f32], scale_shape: &[usize]) -> Vec<f32> {
    dequantize_rows(values, |q| q, shape, scales, scale_shape)
}

/// As `dequantize_int8`, for the values as a file stores them (bytes holding two's-complement
/// int8).
pub fn dequantize_int8_bytes(values: &[u8], shape: &[usize], scales: &[f32], scale_shape: &[usize]) -> Vec<f32> {
    dequantize_rows(values, |b| b as i8, shape, scales, scale_shape)
}

/// `q * scale` for each value, one row (the last axis) at a time: a row's scales are one value
/// or a run of the scale tensor, so the scale index is worked out once per row, not per value.
fn dequantize_rows<T: Copy>(values: &[T], to_i8: impl Fn(T) -> i8, shape: &[usize], scales: &[f32], scale_shape: &[usize]) -> Vec<f32> {
    let row = shape.last().copied().unwrap_or(1).max(1);
    let per_value = scale_shape.last().is_some_and(|&s| s != 1);
    let mut out = Vec::with_capacity(values.len());
    for (r, chunk) in values.chunks(row).enumerate() {
        let base = scale_index(r * row, shape, scale_shape);
        if per_value {
            out.extend(chunk.iter().zip(&scales[base..base + chunk.len()]).map(|(&q, &s)| to_i8(q) as f32 * s));
        } else {
            let s = scales[base];
            out.extend(chunk.iter().map(|&q| to_i8(q) as f32 * s));
        }
    }
    out
}

/// Burn's largest block extent along one axis (`BlockSize` stores extents as bytes).
const MAX_BLOCK_EXTENT: usize = 255;

/// A zeroed buffer for `len` int8 values (as bytes) of `shape` whose capacity also holds the
/// block scales `resident_int8` appends, so the values are read into the buffer the tensor
/// keeps and never copied to a larger one.
pub fn int8_buffer(len: usize, shape: &[usize], scale_shape: &[usize]) -> Vec<u8> {
    let blocks: usize = block_extents(shape, scale_shape).iter().zip(shape).map(|(&b, &d)| d / b).product();
    let mut values = Vec::with_capacity(len + 64 + 4 * blocks);
    values.resize(len, 0);
    values
}

/// Each axis's block extent for per-channel `scale_shape`: a reduced axis (one scale along it)
/// in equal pieces of at most 255 values, a kept axis 1.
fn block_extents(shape: &[usize], scale_shape: &[usize]) -> Vec<usize> {
    shape
        .iter()
        .zip(scale_shape)
        .map(|(&d, &s)| if s == 1 { (1..=d.min(MAX_BLOCK_EXTENT)).rev().find(|b| d % b == 0).unwrap_or(1) } else { 1 })
        .collect()
}

/// An int8 tensor with per-channel scales as a burn quantized tensor, so a model can keep it as
/// int8 and dequantise it per layer as it runs. A channel's scale covers its whole extent of
/// each reduced axis; burn's blocks are at most 255 long, so a reduced axis is cut into equal
/// blocks that each repeat the channel's scale. Burn dequantises a value as `scale * q` in f32,
/// the product `dequantize_int8` forms: the values a layer computes with are the same.
pub fn resident_int8(values: Vec<i8>, shape: &[usize], scales: &[f32], scale_shape: &[usize]) -> TensorData {
    let block = block_extents(shape, scale_shape);
    let grid: Vec<usize> = shape.iter().zip(&block).map(|(&d, &b)| d / b).collect();
    // Each block's channel scale: the grid equals the tensor's shape on the kept axes, and a
    // reduced axis has one scale, so a block's grid index finds its scale as an element's does.
    let blocks: usize = grid.iter().product();
    let block_scales: Vec<f32> = (0..blocks).map(|i| scales[scale_index(i, &grid, scale_shape)]).collect();
    let extents: Vec<u8> = block.iter().map(|&b| b as u8).collect();
    let scheme = QuantScheme::default()
        .with_value(QuantValue::Q8S)
        .with_store(QuantStore::Native)
        .per_block(extents, ScaleDtype::F32);
    TensorData::quantized(values, shape.to_vec(), scheme, &block_scales, None)
}

/// Index into the scale tensor of the element at flat index `i` of a `shape` tensor.
fn scale_index(mut i: usize, shape: &[usize], scale_shape: &[usize]) -> usize {
    let mut index = 0;
    let mut stride = 1;
    for axis in (0..shape.len()).rev() {
        let coord = i % shape[axis];
        i /= shape[axis];
        if scale_shape[axis] != 1 {
            index += coord * stride;
        }
        stride *= scale_shape[axis];
    }
    index
}

pub fn to_f16_bytes(data: &[f32]) -> Vec<u8> {
    data.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect()
}

pub fn from_f16_bytes(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_round_trip_is_within_half_a_step_per_channel() {
        // [in = 3, out = 2]: scales per output column.
        let data = [1.0, -0.01, -2.0, 0.02, 0.5, 0.0];
        let q = quantize_int8(&data, &[3, 2], &[1]);
        assert_eq!(q.scale_shape, vec![1, 2]);
        assert!((q.scales[0] - 2.0 / 127.0).abs() < 1e-7);
        assert!((q.scales[1] - 0.02 / 127.0).abs() < 1e-9);
        let back = dequantize_int8(&q.values, &[3, 2], &q.scales, &q.scale_shape);
        for (i, (a, b)) in data.iter().zip(&back).enumerate() {
            let step = q.scales[i % 2];
            assert!((a - b).abs() <= step / 2.0 + 1e-7, "element {i}: {a} vs {b}");
        }
    }

    #[test]
    fn zero_channel_dequantises_to_zero() {
        let q = quantize_int8(&[0.0, 0.0, 1.0, 1.0], &[2, 2], &[0]);
        assert_eq!(dequantize_int8(&q.values, &[2, 2], &q.scales, &q.scale_shape), vec![0.0, 0.0, 1.0, 1.0]);
    }

    #[test]
    fn f16_round_trip() {
        let data = [1.0f32, -0.333, 65504.0];
        let back = from_f16_bytes(&to_f16_bytes(&data));
        assert_eq!(back[0], 1.0);
        assert!((back[1] + 0.333).abs() < 1e-3);
        assert_eq!(back[2], 65504.0);
    }
}
