//! Training-free dense segmentation with plain CLIP weights: CLIP's own image tower with its last
//! block changed so that every patch token keeps a local, label-comparable feature. Two methods,
//! each as its authors' code does it:
//!
//! - NACLIP (https://github.com/sinahmr/NACLIP, `clip/model.py`: `VisionTransformer.forward`
//!   with arch "reduced", `custom_attn`, `gaussian_window`, `get_attention_addition`): in the last
//!   block, attention from keys to keys plus a Gaussian neighbourhood bias over the patch grid
//!   (std 5 patches; nothing to or from the class token), no residual, no MLP.
//! - ClearCLIP (https://github.com/mc-lan/ClearCLIP, `open_clip/transformer.py`: `custom_attn`
//!   with model type "ClearCLIP", `ignore_residual`): query-to-query attention, no residual, no
//!   MLP.
//!
//! Blocks 1..L-1 are CLIP's unchanged; the class token goes through all of them (unlike
//! SegCLIP's tower, which drops it after `ln_pre`). After the last block, `ln_post` and `proj`
//! apply to every token and the class token is dropped. scripts/fixtures/make_dense.py is the
//! PyTorch reference that tests/dense_parity.rs holds this to.

use std::fmt;
use std::str::FromStr;

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::LayerNorm;
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::config::SegClipConfig;
use super::layers::{blocks, dequantized, lazy_param, layer_norm, random_param, ResidualBlock};
use super::text::{TextTower, TokenBatch};
use super::MAX_LOGIT_SCALE;

/// Which change of the last block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DenseMethod {
    /// Key-key attention plus a Gaussian neighbourhood bias.
    Naclip,
    /// Query-query attention.
    Clearclip,
}

impl DenseMethod {
    pub const ALL: [DenseMethod; 2] = [DenseMethod::Naclip, DenseMethod::Clearclip];

    pub fn name(self) -> &'static str {
        match self {
            DenseMethod::Naclip => "naclip",
            DenseMethod::Clearclip => "clearclip",
        }
    }
}

impl fmt::Display for DenseMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DenseMethod {
    type Err = crate::choice::UnknownChoice;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| crate::choice::UnknownChoice::new("dense method", s, "naclip or clearclip"))
    }
}

/// NACLIP's neighbourhood width in patches (`gaussian_std=5.` in its naclip.py).
pub const NACLIP_GAUSSIAN_STD: f64 = 5.0;

/// Which prompt templates a dense file's labels are averaged over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TemplateSet {
    /// CLIP's 80 ImageNet templates (`labels::OPENAI_IMAGENET_TEMPLATES`), as both
    /// methods evaluate.
    #[serde(rename = "openai-imagenet-80")]
    OpenAiImagenet80,
}

/// How a dense file segments: the method and the inference settings its authors evaluate VOC
/// with (background included), stored in the weights file's header so that a converted file
/// segments the same way in the CLI and the page. Files written before the windows and the
/// background words were recorded get the method's own on reading (`with_method_defaults`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DenseProtocol {
    pub method: DenseMethod,
    /// NACLIP's Gaussian std in patches (ClearCLIP has none; stored as 0).
    pub gaussian_std: f64,
    /// The cosine logits are multiplied by this before the softmax over labels: NACLIP 40
    /// (`logit_scale=40` in naclip.py), ClearCLIP 50 (clearclip_segmentor.py).
    pub logit_scale: f32,
    /// A pixel whose best class probability is below this is background: the VOC21 configs'
    /// `prob_thd`, NACLIP 0.1 (configs/cfg_voc21.py), ClearCLIP 0.5.
    pub bg_thresh: f32,
    pub templates: TemplateSet,
    /// The image's short side in pixels before inference (long side capped at 2048): NACLIP
    /// 336, ClearCLIP 448 (their VOC21 test pipelines). 0: the model's input size.
    #[serde(default)]
    pub short_side: usize,
    /// Sliding-window side and stride in pixels of the rescaled image: ClearCLIP 448 / 224.
    /// Window 0: the whole image in one pass, positional embeddings interpolated to its grid
    /// (NACLIP's `slide_crop=0`).
    #[serde(default)]
    pub window: usize,
    #[serde(default)]
    pub stride: usize,
    /// The background class (class 0): its words compete with the labels in one softmax, the
    /// class scoring the best of its words, and a pixel it wins is background (the methods'
    /// `configs/cls_voc21.txt` first line). A word typed as a label leaves this list.
    #[serde(default)]
    pub background: Vec<String>,
}

/// NACLIP's background words for VOC21 (sinahmr/NACLIP `configs/cls_voc21.txt`, first line).
pub const NACLIP_VOC_BACKGROUND: [&str; 26] = [
    "sky", "wall", "tree", "wood", "grass", "road", "sea", "river", "mountain", "sands", "desk", "bed", "building", "cloud",
    "lamp", "door", "window", "wardrobe", "ceiling", "shelf", "curtain", "stair", "floor", "hill", "rail", "fence",
];

impl DenseProtocol {
    /// The method's own VOC21 settings.
    pub fn for_method(method: DenseMethod) -> Self {
        match method {
            DenseMethod::Naclip => Self {
                method,
                gaussian_std: NACLIP_GAUSSIAN_STD,
                logit_scale: 40.0,
                bg_thresh: 0.1,
                templates: TemplateSet::OpenAiImagenet80,
                short_side: 336,
                window: 0,
                stride: 0,
                background: NACLIP_VOC_BACKGROUND.iter().map(|w| w.to_string()).collect(),
            },
            DenseMethod::Clearclip => Self {
                method,
                gaussian_std: 0.0,
                logit_scale: 50.0,
                bg_thresh: 0.5,
                templates: TemplateSet::OpenAiImagenet80,
                short_side: 448,
                window: 448,
                stride: 224,
                background: vec!["background".to_string()],
            },
        }
    }

    /// A protocol read from a file written before `short_side`, the windows and the background
    /// words were recorded (`short_side` 0) takes the method's own.
    pub fn with_method_defaults(self) -> Self {
        if self.short_side != 0 {
            return self;
        }
        let own = Self::for_method(self.method);
        Self { short_side: own.short_side, window: own.window, stride: own.stride, background: own.background, ..self }
    }

    /// The prompt templates, ready for `SegmentOptions::templates`.
    pub fn template_strings(&self) -> Vec<String> {
        match self.templates {
            TemplateSet::OpenAiImagenet80 => crate::labels::OPENAI_IMAGENET_TEMPLATES.iter().map(|t| t.to_string()).collect(),
        }
    }

    /// Checks values read from a file.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.logit_scale.is_finite() && self.logit_scale > 0.0) {
            return Err(format!("logit_scale must be a positive number, found {}", self.logit_scale));
        }
        if !(0.0..=1.0).contains(&self.bg_thresh) {
            return Err(format!("bg_thresh must be in [0, 1], found {}", self.bg_thresh));
        }
        if self.method == DenseMethod::Naclip && !(self.gaussian_std.is_finite() && self.gaussian_std > 0.0) {
            return Err(format!("NACLIP's gaussian_std must be positive, found {}", self.gaussian_std));
        }
        if self.window > 0 && !(1..=self.window).contains(&self.stride) {
            return Err(format!("stride must be in 1..={} (the window), found {}", self.window, self.stride));
        }
        if self.short_side > 8192 || self.window > 8192 {
            return Err(format!("short_side and window must be at most 8192 px, found {} and {}", self.short_side, self.window));
        }
        if self.background.len() > 256 || self.background.iter().any(|w| w.trim().is_empty() || w.len() > 200) {
            return Err("background must be at most 256 non-empty words of at most 200 bytes".into());
        }
        Ok(())
    }
}

/// The positional table for a `rows x cols` patch grid as NACLIP's and ClearCLIP's
/// `interpolate_pos_encoding` makes it: the square `base x base` table resized bicubically
/// (PyTorch's kernel, A = -0.75, `align_corners=False`) with scale factors `(n + 0.1) / base`
/// per axis, which PyTorch uses as given (`recompute_scale_factor` unset): output position `i`
/// samples the table at `(i + 0.5) * base / (n + 0.1) - 0.5`. Unchanged for the native square
/// grid. Runs on the device as two products with host-made weight matrices. [rows * cols, W].
pub fn dense_patch_positions(table: Tensor<2>, rows: usize, cols: usize) -> Tensor<2> {
    let [n, w] = table.dims();
    let device = table.device();
    let patches = table.narrow(0, 1, n - 1);
    let base = ((n - 1) as f64).sqrt().round() as usize;
    assert_eq!(base * base, n - 1, "positional table of {} patch rows, not a square grid", n - 1);
    if rows == base && cols == base {
        return patches;
    }
    let wy = Tensor::<2>::from_data(TensorData::new(bicubic_weights(base, rows), [rows, base]), &device);
    let wx = Tensor::<2>::from_data(TensorData::new(bicubic_weights(base, cols), [cols, base]), &device);
    // [base, base * W] -> rows: [rows, base, W]
    let by_rows = wy.matmul(patches.reshape([base, base * w])).reshape([rows, base, w]);
    // Each row's base positions -> cols: [rows, cols, base] x [rows, base, W].
    let wx = wx.unsqueeze::<3>().expand([rows, cols, base]);
    wx.matmul(by_rows).reshape([rows * cols, w])
}

/// PyTorch's bicubic interpolation weights from `input` positions to `output` ones with the
/// scale factor `(output + 0.1) / input`: [output, input], each row summing to 1, taps beyond
/// the edge folded onto it.
pub fn bicubic_weights(input: usize, output: usize) -> Vec<f32> {
    const A: f64 = -0.75;
    let cubic1 = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let cubic2 = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    // PyTorch keeps the reciprocal of the given scale factor in float.
    let scale = (1.0 / ((output as f64 + 0.1) / input as f64)) as f32 as f64;
    let mut out = vec![0f32; output * input];
    for i in 0..output {
        let real = scale * (i as f64 + 0.5) - 0.5;
        let floor = real.floor();
        let t = real - floor;
        let taps = [cubic2(t + 1.0), cubic1(t), cubic1(1.0 - t), cubic2(2.0 - t)];
        for (k, weight) in taps.iter().enumerate() {
            let at = (floor as i64 - 1 + k as i64).clamp(0, input as i64 - 1) as usize;
            out[i * input + at] += *weight as f32;
        }
    }
    out
}

/// NACLIP's attention addition for a `rows x cols` patch grid, [1 + P, 1 + P] row-major with the
/// class token first: exp(-d^2 / (2 std^2)) for the squared grid distance d^2 between two
/// patches (peak 1, not normalised), 0 in the class token's row and column. NACLIP builds it by
/// convolving a window with one-hot maps; the window covers the whole grid, so this closed form
/// is the same matrix.
pub fn gaussian_bias(rows: usize, cols: usize, std: f64) -> Vec<f32> {
    let p = rows * cols;
    let n = p + 1;
    let mut out = vec![0f32; n * n];
    for a in 0..p {
        let (ra, ca) = ((a / cols) as f64, (a % cols) as f64);
        for b in 0..p {
            let (rb, cb) = ((b / cols) as f64, (b % cols) as f64);
            let d2 = (ra - rb).powi(2) + (ca - cb).powi(2);
            out[(a + 1) * n + b + 1] = (-d2 / (2.0 * std * std)).exp() as f32;
        }
    }
    out
}

/// CLIP's image tower, run densely.
#[derive(Module, Debug)]
pub struct DenseVisionTower {
    /// Patch embedding: conv patch x patch, stride patch, no bias.
    pub conv1: Conv2d,
    pub class_embedding: Param<Tensor<1>>,
    /// [1 + grid^2, W]: row 0 for the class token, then the patch grid row-major.
    pub positional_embedding: Param<Tensor<2>>,
    pub ln_pre: LayerNorm,
    /// CLIP's blocks; the last one runs with the method's attention only.
    pub blocks: Vec<ResidualBlock>,
    pub ln_post: LayerNorm,
    /// [W, E], used as `x @ proj`.
    pub proj: Param<Tensor<2>>,
}

/// What the dense tower returns for a batch of images.
pub struct DenseOutput {
    /// Projected patch features [B, P, E], row-major over the grid (not normalised).
    pub patch_embed: Tensor<3>,
    /// Patch grid [rows, cols] of this input.
    pub grid: [usize; 2],
}

impl DenseVisionTower {
    pub fn new(c: &SegClipConfig, device: &Device) -> Self {
        let w = c.vision_width;
        let scale = (w as f64).powf(-0.5);
        let p = c.patch_size;
        Self {
            conv1: Conv2dConfig::new([3, w], [p, p]).with_stride([p, p]).with_bias(false).init(device),
            class_embedding: random_param([w], Distribution::Normal(0.0, scale), device),
            positional_embedding: random_param([c.num_patches() + 1, w], Distribution::Normal(0.0, scale), device),
            ln_pre: layer_norm(w, device),
            blocks: blocks(c.vision_layers, w, c.vision_heads, c.mlp_ratio, device),
            ln_post: layer_norm(w, device),
            proj: random_param([w, c.embed_dim], Distribution::Normal(0.0, scale), device),
        }
    }

    /// Patch features of normalised images [B, 3, H, W]; `gaussian_std` is NACLIP's (ignored by
    /// ClearCLIP).
    pub fn forward(&self, images: Tensor<4>, method: DenseMethod, gaussian_std: f64) -> DenseOutput {
        let device = images.device();
        let x = self.conv1.forward(images); // [B, W, rows, cols]
        let [b, w, rows, cols] = x.dims();
        let patches =
            x.reshape([b, w, rows * cols]).swap_dims(1, 2) + dense_patch_positions(self.positional_embedding.val(), rows, cols).unsqueeze::<3>();
        let class = self.class_embedding.val() + self.positional_embedding.val().narrow(0, 0, 1).reshape([w]);
        let class = class.reshape([1, 1, w]).expand([b, 1, w]);
        let mut x = self.ln_pre.forward(Tensor::cat(vec![class, patches], 1));
        let (last, rest) = self.blocks.split_last().expect("a tower with at least one block");
        for block in rest {
            x = block.forward(x, None);
        }
        let h = last.ln_1.forward(x);
        let y = match method {
            DenseMethod::Naclip => {
                let n = rows * cols + 1;
                let bias = Tensor::from_data(TensorData::new(gaussian_bias(rows, cols, gaussian_std), [n, n]), &device);
                last.attn.same_side_attention(h, true, Some(bias))
            }
            DenseMethod::Clearclip => last.attn.same_side_attention(h, false, None),
        };
        let tokens = self.ln_post.forward(y).matmul(dequantized(self.proj.val()).unsqueeze::<3>());
        let e = tokens.dims()[2];
        DenseOutput { patch_embed: tokens.narrow(1, 1, rows * cols).reshape([b, rows * cols, e]), grid: [rows, cols] }
    }
}

/// A plain CLIP for dense segmentation: the dense image tower and CLIP's text tower.
#[derive(Module, Debug)]
pub struct DenseClip {
    pub visual: DenseVisionTower,
    pub text: TextTower,
    /// CLIP's stored logit scale (log); the dense protocol uses the method's own scale instead,
    /// but the file keeps CLIP's.
    pub logit_scale: Param<Tensor<1>>,
}

impl DenseClip {
    pub fn new(config: &SegClipConfig, device: &Device) -> Self {
        Self {
            visual: DenseVisionTower::new(config, device),
            text: TextTower::new(config, device),
            logit_scale: lazy_param([1], device, |device| Tensor::from_floats([MAX_LOGIT_SCALE.ln() as f32], device)),
        }
    }

    /// Encodes token sequences into text embeddings [T, E] (not normalised).
    pub fn text(&self, tokens: &TokenBatch, device: &Device) -> Tensor<2> {
        self.text.forward(tokens, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gaussian_bias_peaks_on_the_diagonal_and_spares_the_class_token() {
        let b = gaussian_bias(2, 3, 1.0);
        let n = 7;
        assert!(b[..n].iter().all(|&v| v == 0.0), "class token row");
        assert!((0..n).all(|i| b[i * n] == 0.0), "class token column");
        assert!((1..n).all(|i| b[i * n + i] == 1.0), "diagonal");
        // Patches 0 (row 0, col 0) and 5 (row 1, col 2): d^2 = 1 + 4.
        assert!((b[n + 6] - (-2.5f32).exp()).abs() < 1e-7);
        assert_eq!(b[n + 6], b[6 * n + 1], "symmetric");
    }

    #[test]
    fn methods_parse_by_their_names() {
        assert_eq!("naclip".parse::<DenseMethod>(), Ok(DenseMethod::Naclip));
        assert_eq!("clearclip".parse::<DenseMethod>(), Ok(DenseMethod::Clearclip));
        assert!("sclip".parse::<DenseMethod>().unwrap_err().to_string().contains("naclip or clearclip"));
    }
}

#[cfg(test)]
mod position_tests {
    use super::*;

    #[test]
    fn bicubic_weights_sum_to_one_and_keep_the_native_grid_near_itself() {
        for (input, output) in [(14, 21), (14, 42), (8, 63), (7, 7)] {
            let w = bicubic_weights(input, output);
            for row in w.chunks(input) {
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{row:?}");
            }
        }
        // n = base: the +0.1 still shifts the samples a little (as NACLIP does for a
        // non-square image with one native side).
        let w = bicubic_weights(7, 7);
        assert!((w[0] - 1.0).abs() < 0.01 && w[0] != 1.0, "{}", w[0]);
        assert!(w[1] != 0.0, "the neighbour takes a little weight");
    }

    #[test]
    fn the_native_square_grid_keeps_its_table() {
        let device = Device::flex();
        let table = Tensor::<2>::random([10, 3], Distribution::Normal(0.0, 1.0), &device);
        let same = dense_patch_positions(table.clone(), 3, 3).into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(same, table.clone().narrow(0, 1, 9).into_data().try_to_vec::<f32>().unwrap());
        let wide = dense_patch_positions(table, 3, 5);
        assert_eq!(wide.dims(), [15, 3]);
    }
}
