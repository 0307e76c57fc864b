//! One configuration type for every SegCLIP size: the reference ViT-B/16 release, the small model
//! bundled with the page, and the tiny models of the tests.

use serde::{Deserialize, Serialize};

/// Sizes of a SegCLIP model. Field names are the ones stored in weights files and fixtures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegClipConfig {
    /// Training/evaluation input side (224 in the release); the positional table is this grid.
    pub image_size: usize,
    pub patch_size: usize,
    pub vision_width: usize,
    pub vision_heads: usize,
    /// Total CLIP blocks of the image tower: `group_after` in stage 1, the rest in stage 3.
    pub vision_layers: usize,
    /// The group module sits after this many blocks (s = 10 in the release).
    pub group_after: usize,
    /// Learnable centers L (8 in the release).
    pub num_centers: usize,
    /// Cross-attention layers of the group module (2 in the release).
    pub cross_layers: usize,
    /// Joint embedding width (512 for ViT-B/16).
    pub embed_dim: usize,
    pub text_width: usize,
    pub text_heads: usize,
    pub text_layers: usize,
    /// Positional table length of the text tower (77).
    pub context_length: usize,
    pub vocab_size: usize,
    /// MLP hidden width = mlp_ratio * width in every block (4).
    pub mlp_ratio: usize,
    /// MAE decoder width (384 = 768 / 2 in the release), heads and depth: training only.
    #[serde(default = "default_decoder_width_marker")]
    pub decoder_width: usize,
    #[serde(default = "default_decoder_heads")]
    pub decoder_heads: usize,
    #[serde(default = "default_decoder_layers")]
    pub decoder_layers: usize,
    /// Extra CLIP-style blocks after the reconstruct layer (`layers_mae2`, 2 in the release).
    #[serde(default = "default_mae_blocks")]
    pub mae_blocks: usize,
    /// Channels of an optional convolutional stem before the patch embedding (not in the
    /// reference; 0 = none, as in every released checkpoint): two 3x3 convolutions with GELU at
    /// full resolution, so the patch embedding sees edges and corners rather than raw pixels. An
    /// option for small models trained from scratch (docs/training-probe.md: a from-scratch
    /// patch embedding learns shape slowly). Left out of the file header when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub conv_stem: usize,
    /// Channels of an optional strided convolutional stem that replaces the patch embedding (not
    /// in the reference; 0 = none): log2(patch_size) 3x3 convolutions of stride 2 with GELU,
    /// halving the resolution each time and doubling the channels up to this many, then a 1x1
    /// convolution to the tower's width ("Early convolutions help transformers see better",
    /// Xiao et al. 2021, where such stems made ViTs train faster). Each token then comes from a
    /// hierarchy of local edge and corner detectors, not one linear map of its pixels. On the
    /// synthetic scenes it did not speed up learning shape from labels at the sample counts
    /// measured, nor teach shape from captions (weights/README.md). Needs a power-of-two patch
    /// size; excludes `conv_stem`. Left out of the file header when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub patchify_stem: usize,
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}

// `0` means "half the vision width", resolved by `decoder_width()`.
fn default_decoder_width_marker() -> usize {
    0
}
fn default_decoder_heads() -> usize {
    8
}
fn default_decoder_layers() -> usize {
    3
}
fn default_mae_blocks() -> usize {
    2
}

impl SegClipConfig {
    /// The release: CLIP ViT-B/16 image tower split 10 + 2, 8 centers, 2 cross layers; the
    /// CLIP text tower (512 wide, 12 layers, context 77, vocabulary 49408).
    pub fn vit_b16() -> Self {
        Self {
            image_size: 224,
            patch_size: 16,
            vision_width: 768,
            vision_heads: 12,
            vision_layers: 12,
            group_after: 10,
            num_centers: 8,
            cross_layers: 2,
            embed_dim: 512,
            text_width: 512,
            text_heads: 8,
            text_layers: 12,
            context_length: 77,
            vocab_size: 49408,
            mlp_ratio: 4,
            decoder_width: 384,
            decoder_heads: 8,
            decoder_layers: 3,
            mae_blocks: 2,
            conv_stem: 0,
            patchify_stem: 0,
        }
    }

    /// The page's size: a small SegCLIP at 224 (patch 16, 14x14 grid, as the release), narrow
    /// enough that its int8 file stays near 14 MB and a laptop GPU encodes an image in
    /// milliseconds.
    pub fn small() -> Self {
        Self {
            image_size: 224,
            patch_size: 16,
            vision_width: 256,
            vision_heads: 4,
            vision_layers: 6,
            group_after: 4,
            num_centers: 8,
            cross_layers: 2,
            embed_dim: 256,
            text_width: 128,
            text_heads: 2,
            text_layers: 4,
            context_length: 77,
            vocab_size: 49408,
            mlp_ratio: 4,
            decoder_width: 128,
            decoder_heads: 4,
            decoder_layers: 2,
            mae_blocks: 2,
            conv_stem: 0,
            patchify_stem: 0,
        }
    }

    /// The model trained on the synthetic scenes and bundled with the page: 96 px input with
    /// patch 8, so a 12x12 grid (the probe's measured ceiling says mIoU 70 needs at least 12x12),
    /// and narrow enough to train on a 2-core CPU. Its text tower keeps the full CLIP vocabulary
    /// so any typed label tokenizes; the token table dominates the file.
    pub fn bundled() -> Self {
        Self {
            image_size: 96,
            patch_size: 8,
            vision_width: 128,
            vision_heads: 4,
            vision_layers: 5,
            group_after: 4,
            num_centers: 8,
            cross_layers: 2,
            embed_dim: 128,
            text_width: 128,
            text_heads: 2,
            text_layers: 3,
            context_length: 77,
            vocab_size: 49408,
            mlp_ratio: 4,
            decoder_width: 64,
            decoder_heads: 2,
            decoder_layers: 2,
            mae_blocks: 1,
            conv_stem: 0,
            patchify_stem: 0,
        }
    }

    /// A tiny model for unit tests (same shape as the parity fixtures' config).
    pub fn tiny() -> Self {
        Self {
            image_size: 32,
            patch_size: 8,
            vision_width: 64,
            vision_heads: 2,
            vision_layers: 3,
            group_after: 2,
            num_centers: 4,
            cross_layers: 2,
            embed_dim: 32,
            text_width: 32,
            text_heads: 2,
            text_layers: 2,
            context_length: 16,
            vocab_size: 1000,
            mlp_ratio: 4,
            decoder_width: 32,
            decoder_heads: 2,
            decoder_layers: 3,
            mae_blocks: 2,
            conv_stem: 0,
            patchify_stem: 0,
        }
    }

    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    pub fn num_patches(&self) -> usize {
        self.grid() * self.grid()
    }

    /// Output channels of each stride-2 convolution of the `patchify_stem`, one per halving of
    /// the resolution (log2 of a power-of-two patch size), doubling up to `patchify_stem`; empty
    /// without that stem.
    pub fn patchify_widths(&self) -> Vec<usize> {
        if self.patchify_stem == 0 {
            return Vec::new();
        }
        let k = self.patch_size.max(2).trailing_zeros() as usize;
        (0..k).map(|i| self.patchify_stem >> (k - 1 - i)).collect()
    }

    pub fn stage3_layers(&self) -> usize {
        self.vision_layers - self.group_after
    }

    pub fn decoder_width(&self) -> usize {
        if self.decoder_width == 0 {
            self.vision_width / 2
        } else {
            self.decoder_width
        }
    }

    /// Checks the sizes fit together; every loader calls this before building a model.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        let mut need = |ok: bool, what: String| {
            if !ok {
                problems.push(what)
            }
        };
        need(self.patch_size > 0 && self.image_size % self.patch_size == 0, format!(
            "image_size {} must be a positive multiple of patch_size {}", self.image_size, self.patch_size));
        need(self.vision_heads > 0 && self.vision_width % self.vision_heads == 0, format!(
            "vision_width {} must be divisible by vision_heads {}", self.vision_width, self.vision_heads));
        need(self.text_heads > 0 && self.text_width % self.text_heads == 0, format!(
            "text_width {} must be divisible by text_heads {}", self.text_width, self.text_heads));
        need(self.group_after >= 1 && self.group_after <= self.vision_layers, format!(
            "group_after {} must be in 1..={}", self.group_after, self.vision_layers));
        need(self.num_centers >= 1, "num_centers must be at least 1".into());
        need(self.context_length >= 2, "context_length must be at least 2 (start and end tokens)".into());
        need(self.vocab_size >= 3, "vocab_size is too small".into());
        need(self.embed_dim >= 1 && self.mlp_ratio >= 1, "embed_dim and mlp_ratio must be positive".into());
        need(self.patchify_stem == 0 || (self.patch_size >= 2 && self.patch_size.is_power_of_two()), format!(
            "patchify_stem needs a power-of-two patch_size, not {}", self.patch_size));
        need(self.patchify_stem == 0 || self.conv_stem == 0, "conv_stem and patchify_stem exclude each other".into());
        // The first convolution gets patchify_stem / 2^(halvings - 1) channels: at least one.
        let widths = self.patchify_widths();
        need(widths.first().map_or(true, |&w| w >= 1), format!(
            "patchify_stem {} must be at least {} (it halves once per stride-2 convolution)", self.patchify_stem,
            1usize << widths.len().saturating_sub(1)));
        let dw = self.decoder_width();
        need(self.decoder_heads > 0 && dw % self.decoder_heads == 0, format!(
            "decoder width {dw} must be divisible by decoder_heads {}", self.decoder_heads));
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("invalid model config: {}", problems.join("; ")))
        }
    }
}
