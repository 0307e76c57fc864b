//! The semantic group module (docs/segclip.md, "Semantic group module"): L learnable centers
//! gather the stage-1 patch tokens through cross-attention, each patch is assigned to a center,
//! and each center's patches are mean-pooled into a group token.

use burn::module::{Module, Param};
use burn::nn::{LayerNorm, Linear};
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::{Device, Distribution, Int, Tensor};

use super::layers::{apply_linear, dequantized, lazy_param, layer_norm, linear, quick_gelu, random_param, Attention, Mlp};

/// One pre-norm cross-attention layer updating the centers:
/// `C = C + MHA(ln_x(C), ln_k([C; P]), ln_k([C; P]))`, then `C = C + MLP(ln_2(C))`.
#[derive(Module, Debug)]
pub struct CrossAttentionLayer {
    pub ln_x: LayerNorm,
    pub ln_k: LayerNorm,
    pub attn: Attention,
    pub ln_2: LayerNorm,
    pub mlp: Mlp,
}

impl CrossAttentionLayer {
    fn new(width: usize, heads: usize, mlp_ratio: usize, device: &Device) -> Self {
        Self {
            ln_x: layer_norm(width, device),
            ln_k: layer_norm(width, device),
            attn: Attention::new(width, heads, device),
            ln_2: layer_norm(width, device),
            mlp: Mlp::new(width, mlp_ratio, device),
        }
    }

    /// `centers` [B, L, W], `patches` [B, P, W] (un-normalised stage-1 output).
    fn forward(&self, centers: Tensor<3>, patches: Tensor<3>) -> Tensor<3> {
        let context = self.ln_k.forward(Tensor::cat(vec![centers.clone(), patches], 1));
        let centers = centers.clone() + self.attn.cross_attention(self.ln_x.forward(centers), context);
        centers.clone() + self.mlp.forward(self.ln_2.forward(centers))
    }
}

/// `Z = QuickGELU(fc2(GELU(fc1(LN(x)))))`, no residual (the release's `proj_o`).
#[derive(Module, Debug)]
pub struct GroupProjection {
    pub ln: LayerNorm,
    pub fc1: Linear,
    pub fc2: Linear,
}

impl GroupProjection {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        quick_gelu(apply_linear(&self.fc2, gelu(apply_linear(&self.fc1, self.ln.forward(x)))))
    }
}

/// How patches are assigned to centers.
#[derive(Clone, Debug)]
pub enum Assignment {
    /// Evaluation: `softmax(A)` and its hard one-hot; no noise, no temperature.
    Eval,
    /// Training: Gumbel-softmax `softmax((A + g) / tau)` with a straight-through hard one-hot,
    /// `g = -log(-log(u))` for `u` drawn from the device's generator.
    Gumbel { tau: f64 },
    /// The same with `u` given ([B, L, P], in (0, 1)): how the training-step parity test feeds
    /// PyTorch's noise (tests/train_parity.rs).
    GumbelGiven { tau: f64, uniform: Tensor<3> },
}

/// What the group module produces for a batch.
pub struct GroupOutput {
    /// Group tokens Z [B, L, W].
    pub tokens: Tensor<3>,
    /// Soft assignment [B, L, P]: softmax over the centers (what inference paints with).
    pub soft: Tensor<3>,
    /// Hard assignment [B, L, P]: one-hot over the centers (straight-through in training).
    pub hard: Tensor<3>,
}

#[derive(Module, Debug)]
pub struct GroupModule {
    /// Learnable centers C [L, W].
    pub semantic_center: Param<Tensor<2>>,
    /// LayerNorm on the patches before the K/V projections.
    pub norm: LayerNorm,
    pub cross_att: Vec<CrossAttentionLayer>,
    pub cross_ln: LayerNorm,
    /// Block-diagonal key projection, one [d_in, d_out] block per head: [H, d, d]
    /// (the release stores it as a grouped 1x1 conv, weight [W, d, 1]).
    pub k_proj: Param<Tensor<3>>,
    pub k_ln: LayerNorm,
    /// Block-diagonal value projection, as `k_proj`.
    pub v_proj: Param<Tensor<3>>,
    pub proj_o: GroupProjection,
}

impl GroupModule {
    pub fn new(width: usize, heads: usize, centers: usize, layers: usize, mlp_ratio: usize, device: &Device) -> Self {
        let d = width / heads;
        // Conv1d default (kaiming-uniform, a = sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = d.
        let bound = 1.0 / (d as f64).sqrt();
        let block_diag = || random_param([heads, d, d], Distribution::Uniform(-bound, bound), device);
        Self {
            // Truncated normal (std 0.02): values beyond 2 std are rare enough that a plain normal
            // clipped to +-0.04 matches it for training purposes.
            semantic_center: lazy_param([centers, width], device, move |device| {
                Tensor::random([centers, width], Distribution::Normal(0.0, 0.02), device).clamp(-0.04, 0.04)
            }),
            norm: layer_norm(width, device),
            cross_att: (0..layers).map(|_| CrossAttentionLayer::new(width, heads, mlp_ratio, device)).collect(),
            cross_ln: layer_norm(width, device),
            k_proj: block_diag(),
            k_ln: layer_norm(width, device),
            v_proj: block_diag(),
            proj_o: GroupProjection {
                ln: layer_norm(width, device),
                fc1: linear(width, width * mlp_ratio, true, device),
                fc2: linear(width * mlp_ratio, width, true, device),
            },
        }
    }

    /// Applies a block-diagonal projection ([H, d, d]) to `x` [B, N, W].
    fn block_diagonal(weight: Tensor<3>, x: Tensor<3>) -> Tensor<3> {
        let [b, n, w] = x.dims();
        let [h, d, _] = weight.dims();
        let per_head = x.reshape([b * n, h, d]).swap_dims(0, 1); // [H, B*N, d]
        per_head.matmul(weight).swap_dims(0, 1).reshape([b, n, w])
    }

    /// `patches` [B, P, W]: the stage-1 output.
    pub fn forward(&self, patches: Tensor<3>, assignment: Assignment) -> GroupOutput {
        let [b, _, w] = patches.dims();
        let l = self.semantic_center.dims()[0];
        let mut centers = self.semantic_center.val().unsqueeze::<3>().expand([b, l, w]);
        for layer in &self.cross_att {
            centers = layer.forward(centers, patches.clone());
        }
        let q = self.cross_ln.forward(centers);

        let pn = self.norm.forward(patches);
        let k = self.k_ln.forward(Self::block_diagonal(dequantized(self.k_proj.val()), pn.clone()));
        let v = Self::block_diagonal(dequantized(self.v_proj.val()), pn);

        // Un-scaled logits A = Q K^T [B, L, P]; assignment over the centers (dim 1).
        let logits = q.clone().matmul(k.swap_dims(1, 2));
        let (soft, hard) = match assignment {
            Assignment::Eval => {
                let soft = softmax(logits, 1);
                let hard = one_hot_over_centers(soft.clone());
                (soft, hard)
            }
            noisy => {
                let (tau, uniform) = match noisy {
                    Assignment::GumbelGiven { tau, uniform } => (tau, uniform),
                    Assignment::Gumbel { tau } => (tau, logits.random_like(Distribution::Uniform(1e-10, 1.0))),
                    Assignment::Eval => unreachable!("handled above"),
                };
                let gumbel = -(-uniform.log()).log();
                let soft = softmax((logits + gumbel) / tau, 1);
                let one_hot = one_hot_over_centers(soft.clone().detach());
                // Straight-through: forward is the one-hot, gradients flow through `soft`.
                let hard = one_hot - soft.clone().detach() + soft.clone();
                (soft, hard)
            }
        };

        // Mean of V over each center's patches; an empty center pools to 0.
        let counts = hard.clone().sum_dim(2).clamp_min(1.0); // [B, L, 1]
        let pooled = hard.clone().matmul(v) / counts;
        GroupOutput { tokens: self.proj_o.forward(q + pooled), soft, hard }
    }
}

/// One-hot of the argmax over dim 1 of [B, L, P] (ties go to the first maximum, as torch.argmax).
fn one_hot_over_centers(scores: Tensor<3>) -> Tensor<3> {
    let [b, l, p] = scores.dims();
    let index = scores.argmax(1).expand([b, l, p]); // [B, 1, P] -> [B, L, P]
    let centers = Tensor::<1, Int>::arange(0..l as i64, &index.device()).reshape([1, l, 1]).expand([b, l, p]);
    index.equal(centers).float()
}
