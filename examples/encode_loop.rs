//! A loop of ViT-B/16 image encodes (random weights, 224 px) and nothing else, to profile the hot
//! path without the model's set-up in the picture:
//!   cargo build --example encode_loop && perf record -g target/debug/examples/encode_loop 20
use burn::tensor::{Device, Distribution, Tensor};
use segclip::model::{SegClip, SegClipConfig};
use std::time::Instant;

// The CLI's allocator, so the profile is the CLI's (remove these two lines to profile glibc's).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let runs: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let device = Device::flex();
    let config = SegClipConfig::vit_b16();
    let model = SegClip::new(&config, &device);
    let image = Tensor::<4>::random([1, 3, 224, 224], Distribution::Normal(0.0, 1.0), &device);
    for i in 0..runs {
        let t = Instant::now();
        let out = model.image(image.clone());
        let _ = out.image_embed.into_data();
        let _ = out.soft_assign.into_data();
        println!("encode {i}: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    }
}
