//! The training-only masked-reconstruction branch (docs/segclip.md, "Reconstruction loss"):
//! visible patches go through stage 1 and the group module, the reconstruct layer spreads the
//! group tokens back over the visible patches, two extra CLIP-style blocks and MAE's decoder
//! predict every patch's pixels, and the loss is the MSE over the masked patches.

use burn::module::{Module, Param};
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::tensor::activation::gelu;
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::config::SegClipConfig;
use super::group::Assignment;
use super::layers::{blocks, linear, quick_gelu, random_param, Attention, ResidualBlock};
use super::vision::VisionTower;

/// timm's ViT block, as MAE's decoder uses it: LayerNorm eps 1e-6, GELU MLP.
#[derive(Module, Debug)]
pub struct DecoderBlock {
    pub norm1: LayerNorm,
    /// `qkv` packed as CLIP's `in_proj` (query, key, value), `proj` as its `out_proj`.
    pub attn: Attention,
    pub norm2: LayerNorm,
    pub fc1: Linear,
    pub fc2: Linear,
}

impl DecoderBlock {
    fn new(width: usize, heads: usize, device: &Device) -> Self {
        let ln = || LayerNormConfig::new(width).with_epsilon(1e-6).init(device);
        Self {
            norm1: ln(),
            attn: Attention::new(width, heads, device),
            norm2: ln(),
            fc1: linear(width, 4 * width, true, device),
            fc2: linear(4 * width, width, true, device),
        }
    }

    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let x = x.clone() + self.attn.self_attention(self.norm1.forward(x), None);
        x.clone() + self.fc2.forward(gelu(self.fc1.forward(self.norm2.forward(x))))
    }
}

/// MAE's decoder: embed, mask tokens, positions back in image order, blocks, norm, prediction.
#[derive(Module, Debug)]
pub struct MaeDecoder {
    pub mask_token: Param<Tensor<3>>,
    /// Fixed 2-D sin-cos table [1, 1 + P, D] (row 0 for the prepended token); frozen.
    pub decoder_pos_embed: Param<Tensor<3>>,
    pub decoder_embed: Linear,
    pub decoder_blocks: Vec<DecoderBlock>,
    pub decoder_norm: LayerNorm,
    pub decoder_pred: Linear,
}

/// The reconstruction branch's own parameters.
#[derive(Module, Debug)]
pub struct ReconstructionHeads {
    /// The reconstruct layer's L x L linear (`reconstruct_layer2.rec_proj_a.a_fc`).
    pub rec_proj: Linear,
    /// The extra CLIP-style blocks (`layers_mae2`).
    pub blocks: Vec<ResidualBlock>,
    pub decoder: MaeDecoder,
}

/// MAE's fixed 2-D sin-cos positions for a `grid x grid` patch grid, with a zero row first.
pub fn sincos_positions(dim: usize, grid: usize) -> Vec<f32> {
    let one_d = |d: usize, pos: f64| -> Vec<f64> {
        let half = d / 2;
        let angles: Vec<f64> = (0..half).map(|i| pos / 10000f64.powf(i as f64 / half as f64)).collect();
        angles.iter().map(|a| a.sin()).chain(angles.iter().map(|a| a.cos())).collect()
    };
    let mut out = vec![0f32; dim];
    for row in 0..grid {
        for col in 0..grid {
            // First half encodes the column, second half the row (MAE's meshgrid order).
            out.extend(one_d(dim / 2, col as f64).into_iter().chain(one_d(dim / 2, row as f64)).map(|v| v as f32));
        }
    }
    out
}

/// Patches of normalised images [B, 3, H, W] as MAE's targets [B, P, p*p*3], each patch ordered
/// (row, column, channel).
pub fn patchify(images: Tensor<4>, patch: usize) -> Tensor<3> {
    let [b, c, hh, ww] = images.dims();
    let (h, w) = (hh / patch, ww / patch);
    images
        .reshape([b, c, h, patch, w, patch])
        .permute([0, 2, 4, 3, 5, 1])
        .reshape([b, h * w, patch * patch * c])
}

/// The branch's outputs.
pub struct Reconstruction {
    /// Predicted pixels of every patch [B, P, p*p*3].
    pub pred: Tensor<3>,
    /// MSE over the masked patches (a [1] tensor).
    pub loss: Tensor<1>,
}

impl ReconstructionHeads {
    pub fn new(c: &SegClipConfig, device: &Device) -> Self {
        let d = c.decoder_width();
        let grid = c.grid();
        let positions = Tensor::<1>::from_data(TensorData::new(sincos_positions(d, grid), [(grid * grid + 1) * d]), device)
            .reshape([1, grid * grid + 1, d]);
        Self {
            rec_proj: linear(c.num_centers, c.num_centers, true, device),
            blocks: blocks(c.mae_blocks, c.vision_width, c.vision_heads, c.mlp_ratio, device),
            decoder: MaeDecoder {
                mask_token: random_param([1, 1, d], burn::tensor::Distribution::Normal(0.0, 0.02), device),
                decoder_pos_embed: Param::from_tensor(positions).set_require_grad(false),
                decoder_embed: linear(c.vision_width, d, true, device),
                decoder_blocks: (0..c.decoder_layers).map(|_| DecoderBlock::new(d, c.decoder_heads, device)).collect(),
                decoder_norm: LayerNormConfig::new(d).with_epsilon(1e-6).init(device),
                decoder_pred: linear(d, c.patch_size * c.patch_size * 3, true, device),
            },
        }
    }

    /// The masked pass. `keep[b]` lists the visible patch indices of sample b (class token
    /// excluded; every sample keeps the same number).
    pub fn forward(&self, visual: &VisionTower, images: Tensor<4>, keep: &[Vec<usize>], assignment: Assignment) -> Reconstruction {
        let device = images.device();
        // From the grid, not the patch conv's kernel: with a strided stem that conv is 1x1.
        let (tokens, [rows, _]) = visual.embed_patches(images.clone());
        let patch = images.dims()[2] / rows;
        let [b, p, w] = tokens.dims();
        let k = keep[0].len();
        assert!(keep.iter().all(|v| v.len() == k), "every sample must keep the same number of patches");
        let index: Vec<i64> = keep.iter().flatten().map(|&i| i as i64).collect();
        let index = Tensor::<1, Int>::from_data(TensorData::new(index, [b * k]), &device).reshape([b, k, 1]);
        let visible = tokens.gather(1, index.expand([b, k, w]));

        let group = visual.group.forward(visual.stage1(visible), assignment);
        // A' = Linear_LxL(Hard^T) [B, K, L]; X = QuickGELU(A' Z) [B, K, W].
        let spread = self.rec_proj.forward(group.hard.swap_dims(1, 2));
        let mut x = quick_gelu(spread.matmul(group.tokens));
        for block in &self.blocks {
            x = block.forward(x, None);
        }
        let x = Tensor::cat(vec![x.clone().mean_dim(1), x], 1); // mean-pooled token prepended

        let dec = &self.decoder;
        let y = dec.decoder_embed.forward(x);
        let dd = y.dims()[2];
        // MAE's unshuffle: [visible tokens; mask tokens] in "keep first" order, then gathered
        // back into image order with the inverse permutation.
        let shuffled = Tensor::cat(vec![y.clone().narrow(1, 1, k), dec.mask_token.val().expand([b, p - k, dd])], 1);
        let mut restore = vec![0i64; b * p];
        for (s, visible) in keep.iter().enumerate() {
            let mut order: Vec<usize> = visible.clone();
            order.extend((0..p).filter(|i| !visible.contains(i)));
            for (position, &patch_index) in order.iter().enumerate() {
                restore[s * p + patch_index] = position as i64;
            }
        }
        let restore = Tensor::<1, Int>::from_data(TensorData::new(restore, [b * p]), &device).reshape([b, p, 1]);
        let full = shuffled.gather(1, restore.expand([b, p, dd]));
        let mut y = Tensor::cat(vec![y.narrow(1, 0, 1), full], 1) + dec.decoder_pos_embed.val();
        for block in &dec.decoder_blocks {
            y = block.forward(y);
        }
        let pred = dec.decoder_pred.forward(dec.decoder_norm.forward(y)).narrow(1, 1, p);

        let target = patchify(images, patch);
        let per_patch = (pred.clone() - target).powf_scalar(2.0).mean_dim(2).reshape([b, p]);
        let mut mask = vec![1f32; b * p];
        for (s, visible) in keep.iter().enumerate() {
            for &i in visible {
                mask[s * p + i] = 0.0;
            }
        }
        let masked = (b * p - b * k) as f64;
        let mask = Tensor::<2>::from_data(TensorData::new(mask, [b, p]), &device);
        let loss = (per_patch * mask).sum() / masked;
        Reconstruction { pred, loss }
    }
}
