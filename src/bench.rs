//! What `segclip bench` measures: medians after warm-up of image encode, text encode per label,
//! full segmentation and one training step, for the reference ViT-B/16 config (random weights)
//! and the page's small config, with the FLOPs of each call so every figure comes with its
//! achieved GFLOP/s. Native only.

use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};
use serde::Serialize;

use crate::model::{Assignment, SegClip, SegClipConfig, TokenBatch};
use crate::pipeline::{self, Rgb, Segmenter};
use crate::tokenizer::ClipTokenizer;

/// FLOPs (2 per multiply-add) of one pre-LN transformer block over `n` tokens of width `w`.
fn block_flops(n: f64, w: f64, ratio: f64) -> f64 {
    // q, k, v, out projections (8 n w^2), MLP (4 ratio n w^2), scores and mixing (4 n^2 w).
    8.0 * n * w * w + 4.0 * ratio * n * w * w + 4.0 * n * n * w
}

/// FLOPs of one image encode with a `grid x grid` patch grid.
pub fn image_flops(c: &SegClipConfig, grid: usize) -> f64 {
    let (w, r, l) = (c.vision_width as f64, c.mlp_ratio as f64, c.num_centers as f64);
    let n = (grid * grid) as f64;
    let p2 = (c.patch_size * c.patch_size) as f64;
    let embed = if c.conv_stem > 0 {
        // Two 3x3 convolutions at full resolution (n * p2 pixels), then the patch conv reads
        // their channels instead of RGB.
        let s = c.conv_stem as f64;
        2.0 * n * p2 * 9.0 * (3.0 * s + s * s) + 2.0 * n * s * p2 * w
    } else if c.patchify_stem > 0 {
        // Stride-2 3x3 convolutions, conv i at p2 / 4^(i+1) positions per patch, then a 1x1
        // projection.
        let widths = c.patchify_widths();
        let inputs = std::iter::once(3).chain(widths.iter().copied());
        let convs: f64 = inputs
            .zip(&widths)
            .enumerate()
            .map(|(i, (input, &output))| 2.0 * n * p2 / 4f64.powi(i as i32 + 1) * 9.0 * input as f64 * output as f64)
            .sum();
        convs + 2.0 * n * c.patchify_stem as f64 * w
    } else {
        2.0 * n * 3.0 * p2 * w
    };
    let stage1 = c.group_after as f64 * block_flops(n, w, r);
    // Cross-attention layers: queries from L centers, keys/values over L + n tokens.
    let kv = l + n;
    let cross = c.cross_layers as f64 * (2.0 * l * w * w * 2.0 + 4.0 * kv * w * w + 4.0 * l * kv * w + 4.0 * r * l * w * w);
    let d = w / c.vision_heads as f64;
    let assign = 2.0 * 2.0 * n * w * d + 2.0 * l * n * w * 2.0 + 4.0 * r * l * w * w;
    let stage3 = c.stage3_layers() as f64 * block_flops(l, w, r);
    let proj = 2.0 * (l + 1.0) * w * c.embed_dim as f64;
    embed + stage1 + cross + assign + stage3 + proj
}

/// FLOPs of encoding `labels` prompts of `tokens` tokens each.
pub fn text_flops(c: &SegClipConfig, labels: usize, tokens: usize) -> f64 {
    let w = c.text_width as f64;
    labels as f64 * (c.text_layers as f64 * block_flops(tokens as f64, w, c.mlp_ratio as f64) + 2.0 * w * c.embed_dim as f64)
}

#[derive(Clone, Debug, Serialize)]
pub struct Measurement {
    pub config: String,
    pub backend: String,
    pub what: String,
    pub median_ms: f64,
    pub gflop: f64,
    pub gflops_per_s: f64,
    pub runs: usize,
}

fn median_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up: kernel compilation, allocator growth
    let times: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    median(&times)
}

/// The middle value (the upper one of an even count); `values` must not be empty.
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    sorted[sorted.len() / 2]
}

fn image_input(size: usize, device: &Device) -> Tensor<4> {
    Tensor::random([1, 3, size, size], Distribution::Normal(0.0, 1.0), device)
}

/// A deterministic photo-like test image (smooth gradients and blocks).
fn test_image(width: usize, height: usize) -> Rgb {
    let pixels = (0..width * height)
        .flat_map(|i| {
            let (x, y) = (i % width, i / width);
            [(x * 255 / width) as u8, (y * 255 / height) as u8, (((x / 32) + (y / 32)) % 2 * 200) as u8]
        })
        .collect();
    Rgb::new(width, height, pixels).unwrap()
}

/// Peak matmul throughput on `device`: a 1024^3 product, GFLOP/s.
pub fn peak_matmul_gflops(device: &Device) -> f64 {
    let n = 1024;
    let a = Tensor::<2>::random([n, n], Distribution::Normal(0.0, 1.0), device);
    let b = Tensor::<2>::random([n, n], Distribution::Normal(0.0, 1.0), device);
    let ms = median_ms(5, || {
        let _ = a.clone().matmul(b.clone()).into_data();
    });
    2.0 * (n * n * n) as f64 / ms / 1e6
}

/// Runs every measurement for `config` on `device`.
pub fn run(name: &str, config: &SegClipConfig, backend: &str, device: &Device, runs: usize, tokenizer_json: &[u8]) -> Vec<Measurement> {
    let mut out = Vec::new();
    let mut record = |what: &str, ms: f64, flops: f64, runs: usize| {
        let m = Measurement {
            config: name.into(),
            backend: backend.into(),
            what: what.into(),
            median_ms: ms,
            gflop: flops / 1e9,
            gflops_per_s: if flops > 0.0 { flops / ms / 1e6 } else { 0.0 },
            runs,
        };
        println!(
            "{:<10} {:<5} {:<34} {:>10.2} ms {:>9.2} GFLOP {:>8.1} GFLOP/s",
            m.config, m.backend, m.what, m.median_ms, m.gflop, m.gflops_per_s
        );
        out.push(m);
    };
    let model = SegClip::new(config, device);
    let size = config.image_size;
    let image = image_input(size, device);
    let ms = median_ms(runs, || {
        let o = model.image(image.clone());
        let _ = o.image_embed.into_data();
        let _ = o.soft_assign.into_data();
    });
    record(&format!("image encode {size}"), ms, image_flops(config, config.grid()), runs);

    // Text: 10 labels in one batch, reported per label.
    let tokenizer = ClipTokenizer::from_bytes(tokenizer_json).expect("tokenizer");
    let labels: Vec<String> = ["cat", "sofa", "window", "person", "car", "tree", "sky", "road", "dog", "table"]
        .iter()
        .map(|s| format!("a photo of a {s}."))
        .collect();
    let seqs: Vec<Vec<i64>> = labels.iter().map(|l| tokenizer.encode(l, config.context_length).unwrap().0).collect();
    let batch = TokenBatch::new(&seqs).unwrap();
    let ms = median_ms(runs, || {
        let _ = model.text(&batch, device).into_data();
    });
    record("text encode per label", ms / 10.0, text_flops(config, 1, config.context_length), runs);

    // Full segmentation through the shared pipeline (10 labels cached after the warm-up), short
    // side 224 and 448 (one and four windows of 224 on a square image).
    let mut segmenter =
        Segmenter::new(SegClip::new(config, device), config.clone(), ClipTokenizer::from_bytes(tokenizer_json).unwrap(), device.clone())
            .expect("segmenter");
    let words: Vec<String> = labels.iter().map(|l| l.trim_start_matches("a photo of a ").trim_end_matches('.').to_string()).collect();
    for side in [224usize, 448] {
        segmenter.protocol.short_side = side;
        let img = test_image(side, side);
        let windows = (side / config.image_size.max(1)).max(1).pow(2);
        let ms = median_ms(runs.min(5), || {
            pipeline::block_on(segmenter.segment(&img, &words)).expect("segment");
        });
        record(&format!("segmentation {side}x{side} (10 labels)"), ms, windows as f64 * image_flops(config, config.grid()), runs.min(5));
    }

    // One training step: image + text forward on a batch of 2, contrastive loss, backward.
    let ad = device.clone().autodiff();
    let train_model = SegClip::new_for_training(config, &ad);
    let images = Tensor::<4>::random([2, 3, size, size], Distribution::Normal(0.0, 1.0), &ad);
    let two = TokenBatch::new(&seqs[..2]).unwrap();
    let ms = median_ms(runs.min(3), || {
        let v = train_model.visual.forward(images.clone(), Assignment::Gumbel { tau: 0.9 });
        let t = train_model.text(&two, &ad);
        let logits = v.image_embed.matmul(t.transpose()) * train_model.scale().unsqueeze::<2>();
        let loss = logits.powf_scalar(2.0).mean();
        let _ = loss.backward();
    });
    let step_flops = 3.0 * (2.0 * image_flops(config, config.grid()) + text_flops(config, 2, config.context_length));
    record("training step (batch 2, fwd+bwd)", ms, step_flops, runs.min(3));
    out
}

/// Training steps replayed from a recording of the PyTorch reference's step
/// (scripts/bench/train_step.py `record`; src/train/replay.rs): the same parameters, batch,
/// Gumbel noise, MAE mask and superpixels, all three losses, backward, clipping, one AdamW step,
/// so that samples/s can be set beside PyTorch's for the same work. The data workers are not
/// part of it (PyTorch's side has none either).
#[derive(Clone, Debug, Serialize)]
pub struct TrainingSteps {
    pub name: String,
    pub engine: String,
    pub batch: usize,
    pub threads: usize,
    pub steps: usize,
    pub step_ms: Vec<f64>,
    pub median_ms: f64,
    /// Medians of the step's two parts: forward and backward passes of all three losses, and
    /// the optimiser (clipping, AdamW over every trained parameter, the logit-scale clamp).
    pub gradients_ms: f64,
    pub optimizer_ms: f64,
    pub samples_per_s: f64,
    /// The loss terms of the first (untimed) step, before any update: equal to PyTorch's when
    /// both sides compute the same thing.
    pub losses_step0: std::collections::BTreeMap<String, f64>,
}

/// Replays `recording` for one untimed step and then `steps` timed ones on `device`, calling
/// `progress` after each.
pub fn training_steps(
    recording: &crate::train::replay::Recording,
    device: &Device,
    steps: usize,
    mut progress: impl FnMut(usize, f64),
) -> Result<TrainingSteps, String> {
    if steps == 0 {
        return Err("at least one timed step is needed".into());
    }
    use crate::train::optim::AdamW;
    use crate::train::step_gradients;
    let config = recording.model_config().map_err(|e| e.to_string())?;
    let mut train = recording.train_config().map_err(|e| e.to_string())?;
    // A constant learning rate, as the PyTorch side (the schedule's factor stays ~1).
    train.optim.steps = 1_000_000;
    let ad = device.clone().autodiff();
    let mut model = recording.model(&config, &ad).map_err(|e| e.to_string())?;
    let batch = recording.batch().map_err(|e| e.to_string())?;
    let noise = [recording.noise(device).map_err(|e| e.to_string())?];
    let mut optimizer = AdamW::new(train.optim.clone());
    let mut losses_step0 = std::collections::BTreeMap::new();
    let (mut times, mut gradient_times, mut optimizer_times) = (Vec::new(), Vec::new(), Vec::new());
    for step in 0..=steps {
        let t = Instant::now();
        let (sum, losses) = step_gradients(&model, &config, std::slice::from_ref(&batch), &train, Some(&noise), &ad).map_err(|e| e.to_string())?;
        let gradients_ms = t.elapsed().as_secs_f64() * 1e3;
        // The step's info holds the gradient norm, read back from the device: the update is done.
        let (next, _) = optimizer.step(model, sum, step as u64);
        model = next;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        if step == 0 {
            losses_step0.insert("contrastive".into(), losses.contrastive);
            losses_step0.insert("reconstruction".into(), losses.reconstruction);
            losses_step0.insert("superpixel".into(), losses.superpixel);
            losses_step0.insert("total".into(), losses.contrastive + losses.reconstruction + losses.superpixel);
        } else {
            times.push(ms);
            gradient_times.push(gradients_ms);
            optimizer_times.push(ms - gradients_ms);
        }
        progress(step, ms);
    }
    let median_ms = median(&times);
    Ok(TrainingSteps {
        name: recording.json["name"].as_str().unwrap_or("recording").to_string(),
        engine: format!("segclip {} (burn, {device:?})", env!("CARGO_PKG_VERSION")),
        batch: batch.batch,
        threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        steps,
        step_ms: times,
        median_ms,
        gradients_ms: median(&gradient_times),
        optimizer_ms: median(&optimizer_times),
        samples_per_s: batch.batch as f64 / (median_ms / 1e3),
        losses_step0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patchify_stem_counts_its_convolutions_instead_of_the_patch_conv() {
        let plain = SegClipConfig::bundled();
        let stem = SegClipConfig { patchify_stem: 64, ..SegClipConfig::bundled() };
        // 96 px, patch 8: 3->16 at 48x48, 16->32 at 24x24, 32->64 at 12x12 (3x3 each), then a
        // 1x1 64->128 on 144 tokens; the plain patch conv is 8x8x3->128 on 144 tokens.
        let convs = 2.0 * (2304.0 * 9.0 * 3.0 * 16.0 + 576.0 * 9.0 * 16.0 * 32.0 + 144.0 * 9.0 * 32.0 * 64.0);
        let projection = 2.0 * 144.0 * 64.0 * 128.0;
        let patch_conv = 2.0 * 144.0 * 3.0 * 64.0 * 128.0;
        let difference = image_flops(&stem, 12) - image_flops(&plain, 12);
        assert!((difference - (convs + projection - patch_conv)).abs() < 1.0, "{difference}");
    }
}
