//! Why the native CPU backend is flex: times one CLIP transformer block of width 512 (8 heads,
//! MLP 2048), forward and forward+backward, on flex and on ndarray, in one process.
//!
//! cargo run --release --example cpu_backend_choice --features cpu-backend-comparison

use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};
use segclip::model::layers::ResidualBlock;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Median milliseconds of `runs` calls after 2 warm-up calls.
fn time(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    f();
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    )
}

fn bench(name: &str, device: Device) {
    let width = 512;
    let block = ResidualBlock::new(width, 8, 4, &device);
    for (batch, tokens) in [(1usize, 197usize), (8, 77)] {
        let x = Tensor::<3>::random([batch, tokens, width], Distribution::Normal(0.0, 1.0), &device);
        // FLOPs of a block: 4 projections (qkv + out) and the MLP (2 x 4w^2) per token = 24 w^2,
        // plus attention scores and mixing 4 n^2 w per sample.
        let flops = batch as f64 * (24.0 * (width * width * tokens) as f64 + 4.0 * (tokens * tokens * width) as f64);
        let fwd = time(10, || {
            let _ = block.forward(x.clone(), None).into_data();
        });
        println!(
            "{name:8} forward   [{batch}x{tokens}x{width}]: {fwd:8.2} ms  {:6.1} GFLOP/s",
            flops / fwd / 1e6
        );
    }
    let ad = device.clone().autodiff();
    let block = ResidualBlock::new(width, 8, 4, &ad);
    let x = Tensor::<3>::random([8, 77, width], Distribution::Normal(0.0, 1.0), &ad);
    let step = time(5, || {
        let loss = block.forward(x.clone(), None).powf_scalar(2.0).mean();
        let _ = loss.backward();
    });
    println!("{name:8} fwd+bwd   [8x77x{width}]: {step:8.2} ms");
}

#[allow(deprecated)] // ndarray is measured here precisely to justify not using it
fn main() {
    println!("threads available: {}", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    bench("flex", Device::flex());
    bench("ndarray", Device::ndarray());
}
