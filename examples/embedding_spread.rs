//! The training probe's cheap signals for a weights file (docs/training-probe.md): how far apart
//! the image embeddings of different shape-world scenes are, and the shape prompts' text
//! embeddings. Cosines near 1 mean the tower ignores its input.
//!   segclip export runs/shapes /tmp/f32.safetensors --dtype f32 --no-manifest
//!   cargo run --example embedding_spread -- /tmp/f32.safetensors
use burn::tensor::{Device, Tensor, TensorData};
use segclip::data::{generate, shape_classes, SceneConfig, Split};
use segclip::model::text::TokenBatch;
use segclip::pipeline::preprocess::{prepare, Rgb};

fn normalised_rows(t: Tensor<2>) -> Vec<Vec<f32>> {
    let [n, e] = t.dims();
    let v = t.into_data().try_to_vec::<f32>().unwrap();
    (0..n)
        .map(|i| {
            let row = &v[i * e..(i + 1) * e];
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            row.iter().map(|x| x / norm).collect()
        })
        .collect()
}

fn cosine_stats(rows: &[Vec<f32>]) -> (f32, f32) {
    let (mut sum, mut min, mut n) = (0.0, f32::MAX, 0);
    for i in 0..rows.len() {
        for j in i + 1..rows.len() {
            let c: f32 = rows[i].iter().zip(&rows[j]).map(|(a, b)| a * b).sum();
            sum += c;
            min = min.min(c);
            n += 1;
        }
    }
    (sum / n as f32, min)
}

fn main() {
    let path = std::env::args().nth(1).expect("usage: embedding_spread WEIGHTS");
    let bytes = std::fs::read(&path).unwrap();
    let file = segclip::weights::format::read_for_model(&bytes, segclip::weights::Residency::F32).unwrap();
    let config = file.config.clone();
    let device = Device::flex();
    let model = segclip::weights::model_io::load_model(file, &device).unwrap();
    let c = &config;
    let s = c.image_size;
    let scenes = 16;
    let mut pixels = Vec::with_capacity(scenes * 3 * s * s);
    for i in 0..scenes {
        let sc = generate(Split::Val, i as u64, &SceneConfig::with_size(s));
        // The inference pipeline's normalisation (the scene is already the model's size).
        pixels.extend(prepare(&Rgb::new(s, s, sc.image).unwrap(), s, s).planes);
    }
    let images = Tensor::<4>::from_data(TensorData::new(pixels, [scenes, 3, s, s]), &device);
    let out = model.image(images);
    let (mean, min) = cosine_stats(&normalised_rows(out.image_embed));
    println!("image embeddings of {scenes} val scenes: pairwise cosine mean {mean:.4}, min {min:.4}");
    let used: Vec<f32> = {
        let [b, l, p] = out.hard_assign.dims();
        let hard = out.hard_assign.into_data().try_to_vec::<f32>().unwrap();
        (0..l).map(|g| (0..b).map(|i| (0..p).map(|q| hard[(i * l + g) * p + q]).sum::<f32>()).sum::<f32>() / (b * p) as f32).collect()
    };
    println!("share of patches per center: {:?}", used.iter().map(|u| format!("{u:.3}")).collect::<Vec<_>>());
    let tokenizer = segclip::tokenizer::ClipTokenizer::from_bytes(include_bytes!("../static/tokenizer.json")).unwrap();
    let shapes = &shape_classes()[1..]; // without "background"
    let seqs: Vec<Vec<i64>> = shapes.iter().map(|w| tokenizer.encode(&format!("a photo of a {w}."), c.context_length).unwrap().0).collect();
    let text = model.text(&TokenBatch::new(&seqs).unwrap(), &device);
    let (mean, min) = cosine_stats(&normalised_rows(text));
    println!("shape prompts' text embeddings: pairwise cosine mean {mean:.4}, min {min:.4}");
}
