//! The building blocks both towers share: CLIP's pre-LN residual block, its packed multi-head
//! attention and its QuickGELU MLP (docs/segclip.md, "Image encoder": blocks).

use burn::module::{Module, Param, ParamId};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig, Initializer};
use burn::tensor::activation::{sigmoid, softmax};
use burn::tensor::quantization::QuantizedBytes;
use burn::tensor::{DType, Device, Distribution, Int, Shape, Tensor, TensorData};

/// CLIP's LayerNorm epsilon.
pub const LN_EPS: f64 = 1e-5;

pub fn layer_norm(width: usize, device: &Device) -> LayerNorm {
    LayerNormConfig::new(width).with_epsilon(LN_EPS).init(device)
}

/// New linear layers: normal(0, 0.02) weights, zero bias (reference "Training": init).
pub fn linear(d_in: usize, d_out: usize, bias: bool, device: &Device) -> Linear {
    LinearConfig::new(d_in, d_out)
        .with_bias(bias)
        .with_initializer(Initializer::Normal { mean: 0.0, std: 0.02 })
        .init(device)
}

/// A parameter of `shape` whose value `init` makes on first use, as burn's own layers do
/// (`Initializer::init_with`). A model built to be loaded from a file never uses its fresh
/// values: the loader replaces each parameter first, so loading draws no random numbers and
/// allocates nothing it throws away.
pub fn lazy_param<const D: usize>(
    shape: [usize; D],
    device: &Device,
    init: impl FnOnce(&Device) -> Tensor<D> + Send + Sync + 'static,
) -> Param<Tensor<D>> {
    Param::uninitialized(
        ParamId::new(),
        move |device, require_grad| {
            let tensor = init(device);
            if require_grad { tensor.require_grad() } else { tensor }
        },
        device.clone(),
        true,
        Shape::new(shape),
    )
}

/// A parameter drawn from `distribution` on first use (`lazy_param`).
pub fn random_param<const D: usize>(shape: [usize; D], distribution: Distribution, device: &Device) -> Param<Tensor<D>> {
    lazy_param(shape, device, move |device| Tensor::random(shape, distribution, device))
}

/// `layer.forward(x)`, with a weight held as int8 (`weights::Residency::Int8`) dequantised
/// first (`dequantized`). Either way the layer computes with the same f32 values through the
/// same kernel, so a model gives the same outputs however its weights are held (burn's own
/// quantized linear takes another kernel).
pub fn apply_linear<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    burn::tensor::module::linear(x, dequantized(layer.weight.val()), layer.bias.as_ref().map(|b| b.val()))
}

/// A weight as f32: itself, or a tensor held as int8 (burn's quantized tensor with one scale per
/// block) dequantised here as `q * scale`, the product the f32-resident load forms. Burn's own
/// dequantisation finds each value's block with a division per axis; here each row (last axis)
/// finds its blocks once, so a layer's weights are ready in about the time it takes to copy
/// them. Reads the int8 values back synchronously: the CPU backend, the only one that holds
/// int8 (`weights::model_io::apply_data`), answers at once, in wasm too.
pub fn dequantized<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    match t.dtype() {
        DType::QFloat(_) => {
            let rows = t.dims()[..D - 1].iter().product();
            dequantize_rows(t, 0..rows)
        }
        _ => t,
    }
}

/// Rows `ids` of a table [N, W] (an embedding lookup) as f32 [ids, W]: a row select, or for a
/// table held as int8 those rows alone dequantised (burn's select on a quantized tensor
/// dequantises and requantises the whole table).
pub fn table_rows(table: Tensor<2>, ids: &[i64]) -> Tensor<2> {
    match table.dtype() {
        DType::QFloat(_) => dequantize_rows(table, ids.iter().map(|&i| i as usize)),
        _ => {
            let device = table.device();
            table.select(0, Tensor::<1, Int>::from_data(TensorData::new(ids.to_vec(), [ids.len()]), &device))
        }
    }
}

/// The rows `rows` (over all axes but the last) of a tensor held as int8, dequantised: the
/// result has those rows in that order, the leading axes folded into one when not all rows are
/// taken in order.
fn dequantize_rows<const D: usize>(t: Tensor<D>, rows: impl ExactSizeIterator<Item = usize>) -> Tensor<D> {
    let DType::QFloat(scheme) = t.dtype() else { unreachable!("called for quantized tensors only") };
    let device = t.device();
    let shape: Vec<usize> = t.dims().to_vec();
    let bytes = QuantizedBytes { bytes: t.into_data().into_bytes(), scheme, shape: Shape::from(shape.clone()) };
    let (values, scales) = bytes.into_vec_i8();
    let multiplier = scales.global.unwrap_or(1.0);
    let block: Vec<usize> = match scheme.block_size() {
        Some(b) => b.to_dim_vec(D).into_iter().map(usize::from).collect(),
        // One scale for the whole tensor: one block as large as the tensor.
        None => shape.clone(),
    };
    let grid: Vec<usize> = shape.iter().zip(&block).map(|(&d, &b)| d / b).collect();
    let last = shape[D - 1].max(1);
    let count = rows.len();
    let mut out = Vec::with_capacity(count * last);
    let mut row_scales = vec![0f32; last];
    let mut previous_base = usize::MAX;
    for r in rows {
        // The block grid index of this row's first value: the leading axes' block coordinates.
        let (mut rest, mut base, mut stride) = (r, 0, grid[D - 1]);
        for axis in (0..D - 1).rev() {
            base += (rest % shape[axis]) / block[axis] * stride;
            rest /= shape[axis];
            stride *= grid[axis];
        }
        if base != previous_base {
            for (j, s) in row_scales.iter_mut().enumerate() {
                *s = multiplier * scales.block[base + j / block[D - 1]];
            }
            previous_base = base;
        }
        let row = &values[r * last..(r + 1) * last];
        out.extend(row.iter().zip(&row_scales).map(|(&q, &s)| q as f32 * s));
    }
    let rows_total: usize = shape[..D - 1].iter().product();
    let mut out_shape = shape;
    if count != rows_total {
        // A subset of rows: [count, 1, ..., W].
        out_shape[..D - 1].fill(1);
        out_shape[0] = count;
    }
    Tensor::from_data(TensorData::new(out, out_shape), &device)
}

/// QuickGELU: x * sigmoid(1.702 x), CLIP's activation.
pub fn quick_gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x.clone() * sigmoid(x * 1.702)
}

/// CLIP MLP: `c_fc` (w -> ratio*w), QuickGELU, `c_proj` (back to w).
#[derive(Module, Debug)]
pub struct Mlp {
    pub c_fc: Linear,
    pub c_proj: Linear,
}

impl Mlp {
    pub fn new(width: usize, ratio: usize, device: &Device) -> Self {
        Self { c_fc: linear(width, width * ratio, true, device), c_proj: linear(width * ratio, width, true, device) }
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        apply_linear(&self.c_proj, quick_gelu(apply_linear(&self.c_fc, x)))
    }
}

/// Multi-head attention with PyTorch's packed projection: `in_proj` maps width -> 3 x width
/// (query, key, value in that order), `out_proj` back. Scale 1/sqrt(head_dim).
/// Attention is always per sample: batch rows never see each other (see reference, group module).
#[derive(Module, Debug)]
pub struct Attention {
    pub in_proj: Linear,
    pub out_proj: Linear,
    pub heads: usize,
}

impl Attention {
    pub fn new(width: usize, heads: usize, device: &Device) -> Self {
        Self { in_proj: linear(width, 3 * width, true, device), out_proj: linear(width, width, true, device), heads }
    }

    fn width(&self) -> usize {
        self.out_proj.weight.dims()[0]
    }

    /// Self-attention over `x` [B, N, W]; `mask` is an additive [N, N] bias (causal text mask).
    pub fn self_attention(&self, x: Tensor<3>, mask: Option<Tensor<2>>) -> Tensor<3> {
        let w = self.width();
        let qkv = apply_linear(&self.in_proj, x);
        let q = qkv.clone().narrow(2, 0, w);
        let k = qkv.clone().narrow(2, w, w);
        let v = qkv.narrow(2, 2 * w, w);
        self.attend(q, k, v, mask)
    }

    /// Cross-attention: queries from `query` [B, Nq, W], keys and values from `context` [B, Nk, W].
    pub fn cross_attention(&self, query: Tensor<3>, context: Tensor<3>) -> Tensor<3> {
        let w = self.width();
        let weight = dequantized(self.in_proj.weight.val());
        let bias = self.in_proj.bias.as_ref().map(|b| b.val());
        let project = |x: Tensor<3>, start: usize| {
            let y = x.matmul(weight.clone().narrow(1, start, w).unsqueeze::<3>());
            match &bias {
                Some(b) => y + b.clone().narrow(0, start, w).unsqueeze::<3>(),
                None => y,
            }
        };
        let q = project(query, 0);
        let k = project(context.clone(), w);
        let v = project(context, 2 * w);
        self.attend(q, k, v, None)
    }

    /// Self-attention whose scores compare each token's key with the other keys (`keys`, NACLIP)
    /// or its query with the other queries (ClearCLIP) instead of query with key; `bias` [N, N]
    /// is added to every head's scores before the softmax (NACLIP's Gaussian neighbourhood).
    /// Same packed projections, head split, scale and `out_proj` as `self_attention`
    /// (src/model/dense.rs says where each method does this).
    pub fn same_side_attention(&self, x: Tensor<3>, keys: bool, bias: Option<Tensor<2>>) -> Tensor<3> {
        let w = self.width();
        let qkv = apply_linear(&self.in_proj, x);
        let side = qkv.clone().narrow(2, if keys { w } else { 0 }, w);
        let v = qkv.narrow(2, 2 * w, w);
        self.attend(side.clone(), side, v, bias)
    }

    fn attend(&self, q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, mask: Option<Tensor<2>>) -> Tensor<3> {
        let [b, nq, w] = q.dims();
        let nk = k.dims()[1];
        let h = self.heads;
        let d = w / h;
        let split = |x: Tensor<3>, n: usize| x.reshape([b, n, h, d]).swap_dims(1, 2);
        let q = split(q, nq) * (1.0 / (d as f64).sqrt());
        let k = split(k, nk);
        let v = split(v, nk);
        let mut scores = q.matmul(k.swap_dims(2, 3));
        if let Some(mask) = mask {
            scores = scores + mask.unsqueeze::<4>();
        }
        let out = softmax(scores, 3).matmul(v).swap_dims(1, 2).reshape([b, nq, w]);
        apply_linear(&self.out_proj, out)
    }
}

/// CLIP's residual block: `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))`.
#[derive(Module, Debug)]
pub struct ResidualBlock {
    pub ln_1: LayerNorm,
    pub attn: Attention,
    pub ln_2: LayerNorm,
    pub mlp: Mlp,
}

impl ResidualBlock {
    pub fn new(width: usize, heads: usize, mlp_ratio: usize, device: &Device) -> Self {
        Self {
            ln_1: layer_norm(width, device),
            attn: Attention::new(width, heads, device),
            ln_2: layer_norm(width, device),
            mlp: Mlp::new(width, mlp_ratio, device),
        }
    }

    pub fn forward(&self, x: Tensor<3>, mask: Option<Tensor<2>>) -> Tensor<3> {
        let x = x.clone() + self.attn.self_attention(self.ln_1.forward(x), mask);
        x.clone() + self.mlp.forward(self.ln_2.forward(x))
    }
}

pub fn blocks(n: usize, width: usize, heads: usize, mlp_ratio: usize, device: &Device) -> Vec<ResidualBlock> {
    (0..n).map(|_| ResidualBlock::new(width, heads, mlp_ratio, device)).collect()
}
