//! Does the image tower see shape? A linear probe on its stage-1 patch features: a softmax
//! classifier (8 shapes) is fitted on the objects of training scenes (each the mean feature of
//! its patches) and scored on those of `val` scenes, for the given weights and for the same
//! architecture freshly initialised.
//! If training taught the tower shape, its probe beats the untrained one by a wide margin.
//! Separates the two halves of a naming failure (docs/training-probe.md): an image side blind
//! to shape versus a text side that cannot name what the image side sees.
//!   segclip export runs/shapes /tmp/f32.safetensors --dtype f32 --no-manifest
//!   cargo run --example shape_probe -- /tmp/f32.safetensors [TRAIN_SCENES] [VAL_SCENES]
use burn::tensor::{Device, Tensor, TensorData};
use segclip::data::{generate, Colour, SceneConfig, Split};
use segclip::model::{SegClip, SegClipConfig};
use segclip::pipeline::preprocess::{prepare, Rgb};

/// (feature row, shape index) of every object: the mean of the stage-1 features of the patches
/// it covers for more than half (a single patch inside a shape is plain colour; the shape is in
/// the set of patches and their context).
fn object_samples(model: &SegClip, config: &SegClipConfig, split: Split, scenes: usize, device: &Device) -> (Vec<Vec<f32>>, Vec<usize>, Vec<usize>) {
    let s = config.image_size;
    let p = config.patch_size;
    let g = s / p;
    let (mut rows, mut labels, mut colours) = (Vec::new(), Vec::new(), Vec::new());
    for chunk in (0..scenes).collect::<Vec<_>>().chunks(16) {
        let generated: Vec<_> = chunk.iter().map(|&i| generate(split, i as u64, &SceneConfig::with_size(s))).collect();
        let mut pixels = Vec::with_capacity(chunk.len() * 3 * s * s);
        for sc in &generated {
            pixels.extend(prepare(&Rgb::new(s, s, sc.image.clone()).unwrap(), s, s).planes);
        }
        let images = Tensor::<4>::from_data(TensorData::new(pixels, [chunk.len(), 3, s, s]), device);
        let (patches, _) = model.visual.embed_patches(images);
        let features = model.visual.stage1(patches);
        let [_, n, w] = features.dims();
        let v = features.into_data().try_to_vec::<f32>().unwrap();
        for (b, sc) in generated.iter().enumerate() {
            let mut sums = vec![(vec![0f32; w], 0usize); sc.objects.len() + 1];
            for q in 0..n {
                let (py, px) = (q / g, q % g);
                let mut counts = [0usize; 10];
                for y in py * p..(py + 1) * p {
                    for x in px * p..(px + 1) * p {
                        counts[sc.instance_map[y * s + x] as usize] += 1;
                    }
                }
                let (instance, &count) = counts.iter().enumerate().skip(1).max_by_key(|(_, &c)| c).unwrap();
                if 2 * count > p * p {
                    let (sum, k) = &mut sums[instance];
                    sum.iter_mut().zip(&v[(b * n + q) * w..(b * n + q + 1) * w]).for_each(|(a, x)| *a += x);
                    *k += 1;
                }
            }
            for o in &sc.objects {
                let (sum, k) = &sums[o.instance as usize];
                if *k > 0 {
                    rows.push(sum.iter().map(|x| x / *k as f32).collect());
                    labels.push(o.shape.index());
                    colours.push(o.colour.index());
                }
            }
        }
    }
    (rows, labels, colours)
}

/// Standardises both sets with the training set's per-feature mean and deviation.
fn standardise(train: &[Vec<f32>], test: &[Vec<f32>]) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let w = train[0].len();
    let n = train.len() as f32;
    let mean: Vec<f32> = (0..w).map(|j| train.iter().map(|r| r[j]).sum::<f32>() / n).collect();
    let std: Vec<f32> = (0..w).map(|j| (train.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f32>() / n).sqrt().max(1e-6)).collect();
    let z = |r: &Vec<f32>| -> Vec<f32> { r.iter().enumerate().map(|(j, x)| (x - mean[j]) / std[j]).collect() };
    (train.iter().map(z).collect(), test.iter().map(z).collect())
}

const ITERATIONS: usize = 1000;

/// Multinomial logistic regression by full-batch gradient descent on standardised features;
/// returns (train accuracy, test accuracy).
fn probe(xs: &[Vec<f32>], ys: &[usize], xt: &[Vec<f32>], yt: &[usize], classes: usize) -> (f32, f32) {
    let w = xs[0].len();
    let n = xs.len() as f32;
    let mut weights = vec![vec![0f32; w + 1]; classes];
    let logits = |weights: &[Vec<f32>], x: &[f32]| -> Vec<f32> {
        weights.iter().map(|c| c[w] + c[..w].iter().zip(x).map(|(a, b)| a * b).sum::<f32>()).collect()
    };
    for it in 0..ITERATIONS {
        let mut loss = 0f32;
        let mut grad = vec![vec![0f32; w + 1]; classes];
        for (x, &y) in xs.iter().zip(ys) {
            let l = logits(&weights, x);
            let m = l.iter().cloned().fold(f32::MIN, f32::max);
            let e: Vec<f32> = l.iter().map(|v| (v - m).exp()).collect();
            let sum: f32 = e.iter().sum();
            loss += sum.ln() + m - l[y];
            for k in 0..classes {
                let d = e[k] / sum - (k == y) as u8 as f32;
                for j in 0..w {
                    grad[k][j] += d * x[j];
                }
                grad[k][w] += d;
            }
        }
        if it % 100 == 0 && std::env::var_os("PROBE_VERBOSE").is_some() {
            eprintln!("iteration {it}: cross-entropy {:.4}", loss / n);
        }
        for k in 0..classes {
            for j in 0..=w {
                // A small step: the standardised features are strongly correlated, and 0.5 diverged.
                let l2 = if j < w { 1e-3 * weights[k][j] } else { 0.0 };
                weights[k][j] -= 0.05 * (grad[k][j] / n + l2);
            }
        }
    }
    let accuracy = |x: &[Vec<f32>], y: &[usize]| {
        let right = x.iter().zip(y).filter(|(r, &t)| {
            let l = logits(&weights, r);
            l.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 == t
        });
        right.count() as f32 / y.len().max(1) as f32
    };
    (accuracy(xs, ys), accuracy(xt, yt))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).expect("usage: shape_probe WEIGHTS [TRAIN_SCENES] [VAL_SCENES]");
    let n_train: usize = args.get(2).map_or(400, |a| a.parse().expect("TRAIN_SCENES: a number"));
    let n_val: usize = args.get(3).map_or(200, |a| a.parse().expect("VAL_SCENES: a number"));
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let file = segclip::weights::format::read_for_model(&bytes, segclip::weights::Residency::F32).unwrap();
    let config = file.config.clone();
    let device = Device::flex();
    let trained = segclip::weights::model_io::load_model(file, &device).unwrap();
    // Seeded, so the untrained figures repeat from run to run.
    device.seed(42);
    let fresh = SegClip::new(&config, &device);
    for (name, model) in [("untrained (fresh initialisation)", &fresh), ("these weights", &trained)] {
        let (train_x, train_shape, train_colour) = object_samples(model, &config, Split::Train, n_train, &device);
        let (test_x, test_shape, test_colour) = object_samples(model, &config, Split::Val, n_val, &device);
        let (xs, xt) = standardise(&train_x, &test_x);
        // Colour is the control: it is plain in the pixels, so a probe that finds colour but not
        // shape says shape is missing from the features, not that the probe is too weak.
        for (what, classes, train_y, test_y) in [("shape", segclip::data::Shape::COUNT, train_shape, test_shape), ("colour", Colour::COUNT, train_colour, test_colour)] {
            let mut share = vec![0usize; classes];
            test_y.iter().for_each(|&y| share[y] += 1);
            let majority = *share.iter().max().unwrap() as f32 / test_y.len() as f32;
            let (tr, te) = probe(&xs, &train_y, &xt, &test_y, classes);
            println!(
                "{name}: {what} of each object from its patches' mean stage-1 features, linear probe: train {:.1}%, val {:.1}% ({} / {} objects; majority class {:.1}%)",
                100.0 * tr,
                100.0 * te,
                train_x.len(),
                test_x.len(),
                100.0 * majority
            );
        }
    }
}
