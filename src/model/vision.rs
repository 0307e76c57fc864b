//! The image tower (docs/segclip.md, "Image encoder"): patch embedding, `ln_pre`, the class
//! token dropped, stage 1, the group module, stage 3 on the group tokens, max pooling, `ln_post`
//! and `proj`.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::PaddingConfig2d;
use burn::tensor::activation::gelu;
use burn::nn::LayerNorm;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, Distribution, Tensor};

use super::config::SegClipConfig;
use super::group::{Assignment, GroupModule, GroupOutput};
use super::layers::{blocks, dequantized, layer_norm, random_param, ResidualBlock};

/// The optional convolutional stem (`SegClipConfig::conv_stem`; not in the reference).
#[derive(Module, Debug)]
pub struct ConvStem {
    pub conv_a: Conv2d,
    pub conv_b: Conv2d,
}

impl ConvStem {
    fn new(channels: usize, device: &Device) -> Self {
        let conv = |i: usize| Conv2dConfig::new([i, channels], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init(device);
        Self { conv_a: conv(3), conv_b: conv(channels) }
    }

    /// [B, 3, H, W] -> [B, channels, H, W].
    fn forward(&self, images: Tensor<4>) -> Tensor<4> {
        gelu(self.conv_b.forward(gelu(self.conv_a.forward(images))))
    }
}

/// The optional strided stem (`SegClipConfig::patchify_stem`; not in the reference): 3x3
/// convolutions of stride 2 down to the patch grid, GELU after each.
#[derive(Module, Debug)]
pub struct PatchifyStem {
    pub convs: Vec<Conv2d>,
}

impl PatchifyStem {
    /// `widths`: output channels of each convolution (`SegClipConfig::patchify_widths`).
    fn new(widths: &[usize], device: &Device) -> Self {
        let inputs = std::iter::once(3).chain(widths.iter().copied());
        let convs = inputs
            .zip(widths)
            .map(|(input, &output)| {
                Conv2dConfig::new([input, output], [3, 3]).with_stride([2, 2]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init(device)
            })
            .collect();
        Self { convs }
    }

    /// [B, 3, H, W] -> [B, channels, H / patch, W / patch].
    fn forward(&self, mut x: Tensor<4>) -> Tensor<4> {
        for conv in &self.convs {
            x = gelu(conv.forward(x));
        }
        x
    }
}

/// The patch rows of a CLIP positional table [1 + grid^2, W] (row 0 is the class token's) for a
/// `rows x cols` grid [P, W]: the stored grid as it is, or resized bicubically (half-pixel
/// centres, as torch's `align_corners=False`).
pub fn patch_positions(table: Tensor<2>, rows: usize, cols: usize) -> Tensor<2> {
    let [n, w] = table.dims();
    let patches = table.narrow(0, 1, n - 1);
    let base = ((n - 1) as f64).sqrt().round() as usize;
    if base * base != n - 1 {
        panic!("positional table has {} patch rows, not a square grid", n - 1);
    }
    if rows == base && cols == base {
        return patches;
    }
    let grid = patches.reshape([1, base, base, w]).permute([0, 3, 1, 2]);
    let resized = interpolate(
        grid,
        InterpolateOptions::new(InterpolateMode::Bicubic).with_align_corners(false).with_output_size([rows, cols]),
    );
    resized.permute([0, 2, 3, 1]).reshape([rows * cols, w])
}

#[derive(Module, Debug)]
pub struct VisionTower {
    /// Optional convolutional stem before the patch embedding (`None` for released checkpoints).
    pub stem: Option<ConvStem>,
    /// Optional strided stem that does the patching itself (`None` for released checkpoints);
    /// `conv1` is then a 1x1 projection of its channels.
    pub patchify: Option<PatchifyStem>,
    /// Patch embedding: conv patch x patch, stride patch, no bias (over the `stem`'s channels
    /// when there is one, else RGB); with the `patchify` stem a 1x1 projection of its channels.
    pub conv1: Conv2d,
    /// Kept for checkpoint fidelity: the class token is dropped right after `ln_pre`, so it
    /// affects no output.
    pub class_embedding: Param<Tensor<1>>,
    /// [1 + grid^2, W]: row 0 for the class token, then the patch grid row-major.
    pub positional_embedding: Param<Tensor<2>>,
    pub ln_pre: LayerNorm,
    /// Stage 1: CLIP blocks 0..s-1.
    pub stage1: Vec<ResidualBlock>,
    pub group: GroupModule,
    /// Stage 3: CLIP blocks s.. on the group tokens only.
    pub stage3: Vec<ResidualBlock>,
    pub ln_post: LayerNorm,
    /// [W, E], used as `x @ proj`.
    pub proj: Param<Tensor<2>>,
}

/// What the image tower returns for a batch of images.
pub struct VisionOutput {
    /// Row 0 of the projected tokens: the image embedding [B, E] (not normalised).
    pub image_embed: Tensor<2>,
    /// Rows 1..=L: the group (region) embeddings [B, L, E] (not normalised).
    pub group_embed: Tensor<3>,
    /// Soft assignment [B, L, P], softmax over the centers.
    pub soft_assign: Tensor<3>,
    /// Hard assignment [B, L, P].
    pub hard_assign: Tensor<3>,
    /// Patch grid [rows, cols] of this input.
    pub grid: [usize; 2],
}

impl VisionTower {
    pub fn new(c: &SegClipConfig, device: &Device) -> Self {
        let w = c.vision_width;
        let scale = (w as f64).powf(-0.5);
        let stem = (c.conv_stem > 0).then(|| ConvStem::new(c.conv_stem, device));
        let patchify = (c.patchify_stem > 0).then(|| PatchifyStem::new(&c.patchify_widths(), device));
        let (input, kernel) = match (c.conv_stem, c.patchify_stem) {
            (0, 0) => (3, c.patch_size),
            (0, p) => (p, 1),
            (s, _) => (s, c.patch_size),
        };
        Self {
            stem,
            patchify,
            conv1: Conv2dConfig::new([input, w], [kernel, kernel])
                .with_stride([kernel, kernel])
                .with_bias(false)
                .init(device),
            class_embedding: random_param([w], Distribution::Normal(0.0, scale), device),
            positional_embedding: random_param([c.num_patches() + 1, w], Distribution::Normal(0.0, scale), device),
            ln_pre: layer_norm(w, device),
            stage1: blocks(c.group_after, w, c.vision_heads, c.mlp_ratio, device),
            group: GroupModule::new(w, c.vision_heads, c.num_centers, c.cross_layers, c.mlp_ratio, device),
            stage3: blocks(c.stage3_layers(), w, c.vision_heads, c.mlp_ratio, device),
            ln_post: layer_norm(w, device),
            proj: random_param([w, c.embed_dim], Distribution::Normal(0.0, scale), device),
        }
    }

    /// Positional embeddings of the patches for a `rows x cols` grid [P, W] (`patch_positions`).
    pub fn patch_positions(&self, rows: usize, cols: usize) -> Tensor<2> {
        patch_positions(self.positional_embedding.val(), rows, cols)
    }

    /// Patch tokens after `ln_pre`, class token dropped: [B, P, W].
    pub fn embed_patches(&self, images: Tensor<4>) -> (Tensor<3>, [usize; 2]) {
        let images = match (&self.stem, &self.patchify) {
            (Some(stem), _) => stem.forward(images),
            (None, Some(patchify)) => patchify.forward(images),
            (None, None) => images,
        };
        let x = self.conv1.forward(images); // [B, W, rows, cols]
        let [b, w, rows, cols] = x.dims();
        let tokens = x.reshape([b, w, rows * cols]).swap_dims(1, 2);
        let tokens = tokens + self.patch_positions(rows, cols).unsqueeze::<3>();
        (self.ln_pre.forward(tokens), [rows, cols])
    }

    /// Stage 1 on patch tokens [B, P, W].
    pub fn stage1(&self, mut x: Tensor<3>) -> Tensor<3> {
        for block in &self.stage1 {
            x = block.forward(x, None);
        }
        x
    }

    /// Stage 3, max pool, `ln_post`, `proj` on the group tokens: [B, L+1, E] (row 0 the image).
    pub fn head(&self, group_tokens: Tensor<3>) -> Tensor<3> {
        let mut z = group_tokens;
        for block in &self.stage3 {
            z = block.forward(z, None);
        }
        let pooled = z.clone().max_dim(1); // [B, 1, W]
        let tokens = self.ln_post.forward(Tensor::cat(vec![pooled, z], 1));
        tokens.matmul(dequantized(self.proj.val()).unsqueeze::<3>())
    }

    /// Full image encoding; `images` [B, 3, H, W] already normalised with CLIP's mean and std.
    pub fn forward(&self, images: Tensor<4>, assignment: Assignment) -> VisionOutput {
        let (patches, grid) = self.embed_patches(images);
        let GroupOutput { tokens, soft, hard } = self.group.forward(self.stage1(patches), assignment);
        let projected = self.head(tokens);
        let [b, l1, e] = projected.dims();
        VisionOutput {
            image_embed: projected.clone().narrow(1, 0, 1).reshape([b, e]),
            group_embed: projected.narrow(1, 1, l1 - 1),
            soft_assign: soft,
            hard_assign: hard,
            grid,
        }
    }
}
