//! How fast can the image tower learn shape when it is *told* the shapes? Trains the patch
//! embedding and stage 1 with a direct label per object: each object's feature is the mean of
//! the stage-1 patch features weighted by how many of its pixels each patch holds, projected as
//! the image tower projects a group, and scored by cosine against fixed random directions of the
//! joint space, one per shape (per colour with `colour=1`); cross-entropy on the true class.
//! `transformer=0` leaves stage 1 out, so only the patch embedding and its stem learn. (Fixed
//! directions rather than the text tower's prompt embeddings: those start nearly parallel, and
//! how fast the text tower separates them is another question, `examples/embedding_spread`'s.)
//! Prints the `val` accuracy over the run. Caption-only training gets a far weaker signal than
//! this, so if a tower needs N samples here, captions presumably need many more: this picks the
//! architecture before a full run is spent on it (docs/training-probe.md, "slow shape vision").
//!   cargo run --example shape_supervised -- [stem=C] [patchify=C] [steps=N] [batch=B] [lr=X] [size=S] [patch=P] [transformer=0|1] [colour=0|1] [eval_every=N]
use std::time::Instant;

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use segclip::data::{generate, Colour, SceneConfig, Shape, Split};
use segclip::model::{SegClip, SegClipConfig};
use segclip::pipeline::preprocess::{prepare, Rgb};
use segclip::train::config::OptimSection;
use segclip::train::losses::l2_normalise;
use segclip::train::optim::{AdamW, GradientSum};

/// A batch: images [B, 3, S, S], pooling weights [B, O, P] (row o of image b: the share of
/// object o's pixels in each patch; zero rows pad), and the (row in B*O, class) of each object.
struct Batch {
    images: Tensor<4>,
    pool: Tensor<3>,
    rows: Vec<i64>,
    labels: Vec<i64>,
    /// Size class (small, medium, large) of each object.
    sizes: Vec<usize>,
}

const MAX_OBJECTS: usize = segclip::data::shapes::MAX_OBJECTS;

/// `colour`: label each object by its colour instead (the control: plain in the pixels).
fn batch(split: Split, first: u64, n: usize, config: &SegClipConfig, colour: bool, device: &Device) -> Batch {
    let s = config.image_size;
    let p = config.patch_size;
    let g = s / p;
    let mut pixels = Vec::with_capacity(n * 3 * s * s);
    let mut pool = vec![0f32; n * MAX_OBJECTS * g * g];
    let (mut rows, mut labels, mut sizes) = (Vec::new(), Vec::new(), Vec::new());
    for b in 0..n {
        let scene = generate(split, first + b as u64, &SceneConfig::with_size(s));
        pixels.extend(prepare(&Rgb::new(s, s, scene.image.clone()).unwrap(), s, s).planes);
        for (o, object) in scene.objects.iter().enumerate() {
            let row = &mut pool[(b * MAX_OBJECTS + o) * g * g..(b * MAX_OBJECTS + o + 1) * g * g];
            let mut total = 0f32;
            for (i, &inst) in scene.instance_map.iter().enumerate() {
                if inst == object.instance {
                    row[(i / s / p) * g + (i % s) / p] += 1.0;
                    total += 1.0;
                }
            }
            if total > 0.0 {
                row.iter_mut().for_each(|w| *w /= total);
                rows.push((b * MAX_OBJECTS + o) as i64);
                labels.push(if colour { object.colour.index() } else { object.shape.index() } as i64);
                sizes.push(object.size as usize);
            }
        }
    }
    Batch {
        images: Tensor::from_data(TensorData::new(pixels, [n, 3, s, s]), device),
        pool: Tensor::from_data(TensorData::new(pool, [n, MAX_OBJECTS, g * g]), device),
        rows,
        labels,
        sizes,
    }
}

/// Shape logits [objects, 8] of a batch against the class directions [8, E].
/// `transformer` false skips stage 1: the patch embedding (with its stem) alone.
fn logits(model: &SegClip, b: &Batch, classes: &Tensor<2>, transformer: bool, device: &Device) -> Tensor<2> {
    let (patches, _) = model.visual.embed_patches(b.images.clone());
    let features = if transformer { model.visual.stage1(patches) } else { patches }; // [B, P, W]
    let [n, _, w] = features.dims();
    let pooled = b.pool.clone().matmul(features).reshape([n * MAX_OBJECTS, w]);
    let rows = Tensor::<1, Int>::from_data(TensorData::new(b.rows.clone(), [b.rows.len()]), device);
    let objects = model.visual.ln_post.forward(pooled.select(0, rows)).matmul(model.visual.proj.val());
    // A fixed temperature: the classifier's scale is not what is being measured.
    l2_normalise(objects).matmul(classes.clone().transpose()) * 10.0
}

fn arg(args: &[String], key: &str, default: f64) -> f64 {
    args.iter()
        .find_map(|a| a.strip_prefix(&format!("{key}=")))
        .map_or(default, |v| v.parse().unwrap_or_else(|_| panic!("{key}: not a number: {v}")))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut config = SegClipConfig::bundled();
    config.conv_stem = arg(&args, "stem", 0.0) as usize;
    config.patchify_stem = arg(&args, "patchify", 0.0) as usize;
    config.image_size = arg(&args, "size", config.image_size as f64) as usize;
    config.patch_size = arg(&args, "patch", config.patch_size as f64) as usize;
    let steps = arg(&args, "steps", 600.0) as u64;
    let batch_size = arg(&args, "batch", 32.0) as usize;
    let eval_every = arg(&args, "eval_every", 100.0) as u64;
    let lr = arg(&args, "lr", 5e-4);
    let transformer = arg(&args, "transformer", 1.0) != 0.0;
    let colour = arg(&args, "colour", 0.0) != 0.0;
    let n_classes = if colour { Colour::COUNT } else { Shape::COUNT };
    config.validate().unwrap();
    let device = segclip::backend::training_device();
    device.seed(42);
    let mut model = SegClip::new(&config, &device);
    let mut optim = AdamW::new(OptimSection {
        steps,
        batch_size,
        accumulation: 1,
        lr_new: lr,
        lr_pretrained: lr,
        weight_decay: 0.05,
        betas: [0.9, 0.98],
        eps: 1e-6,
        warmup_fraction: 0.05,
        first_cycle: None,
        clip_norm: 1.0,
        freeze_embeddings: false,
    });
    // Constants: never marked as needing a gradient, so nothing is learnt on this side.
    let classes = l2_normalise(Tensor::<2>::random([n_classes, config.embed_dim], Distribution::Normal(0.0, 1.0), &device));
    let val: Vec<Batch> = (0..4).map(|i| batch(Split::Val, i * 50, 50, &config, colour, &device)).collect();
    println!(
        "image {} px, patch {}, conv stem {}, patchify stem {}, stage 1 {}, batch {batch_size}, lr {lr}, {steps} steps; val: {} objects",
        config.image_size,
        config.patch_size,
        config.conv_stem,
        config.patchify_stem,
        if transformer { "on" } else { "skipped" },
        val.iter().map(|b| b.labels.len()).sum::<usize>()
    );
    let start = Instant::now();
    let (mut loss_sum, mut loss_n) = (0.0, 0);
    for step in 0..steps {
        let b = batch(Split::Train, step * batch_size as u64, batch_size, &config, colour, &device);
        let labels = Tensor::<2, Int>::from_data(TensorData::new(b.labels.clone(), [b.labels.len(), 1]), &device);
        let loss = -log_softmax(logits(&model, &b, &classes, transformer, &device), 1).gather(1, labels).mean();
        loss_sum += loss.clone().into_scalar::<f32>() as f64;
        loss_n += 1;
        let grads = loss.backward();
        let mut sum = GradientSum::default();
        sum.add_part(&model, &grads, false);
        sum.count_micro_batch();
        model = optim.step(model, sum, step).0;
        if (step + 1) % eval_every == 0 || step + 1 == steps {
            let (mut right, mut total) = (0usize, 0usize);
            let (mut right_by_size, mut total_by_size) = ([0usize; 3], [0usize; 3]);
            for v in &val {
                let l = logits(&model, v, &classes, transformer, &device);
                let [n, k] = l.dims();
                let data = l.into_data().try_to_vec::<f32>().unwrap();
                for (i, &y) in v.labels.iter().enumerate() {
                    let row = &data[i * k..(i + 1) * k];
                    let best = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
                    right += (best as i64 == y) as usize;
                    right_by_size[v.sizes[i]] += (best as i64 == y) as usize;
                    total_by_size[v.sizes[i]] += 1;
                }
                total += n;
            }
            println!(
                "step {:5} ({:6} samples, {:5.0} s): train loss {:.3} (mean since last), val {} accuracy {:.1}% (chance {:.1}%; small / medium / large {})",
                step + 1,
                (step + 1) * batch_size as u64,
                start.elapsed().as_secs_f64(),
                loss_sum / loss_n as f64,
                if colour { "colour" } else { "shape" },
                100.0 * right as f64 / total as f64,
                100.0 / n_classes as f64,
                (0..3).map(|k| format!("{:.1}%", 100.0 * right_by_size[k] as f64 / total_by_size[k].max(1) as f64)).collect::<Vec<_>>().join(" / ")
            );
            (loss_sum, loss_n) = (0.0, 0);
        }
    }
}
