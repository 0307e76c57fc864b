//! Writes a plain CLIP with random weights as a dense weights file (NACLIP's protocol), for
//! timing what real weights of that size cost: `scripts/bench-label-cost` uses it, since no
//! registry here carries trained CLIP weights.
//!
//! cargo run --release --example random_dense -- vit-b16|tinyclip-8m OUT.safetensors

use segclip::model::dense::{DenseClip, DenseMethod, DenseProtocol};
use segclip::model::SegClipConfig;
use segclip::weights::{format, model_io, StorageDtype};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [size, out] = &args[..] else {
        eprintln!("usage: random_dense vit-b16|tinyclip-8m OUT.safetensors");
        std::process::exit(2);
    };
    let config = match size.as_str() {
        "vit-b16" => SegClipConfig::vit_b16(),
        // TinyCLIP-ViT-8M-16-Text-3M: image width 256 / 4 heads / 10 blocks, text 256 / 4 / 3.
        "tinyclip-8m" => SegClipConfig {
            vision_width: 256,
            vision_heads: 4,
            vision_layers: 10,
            group_after: 8,
            text_width: 256,
            text_heads: 4,
            text_layers: 3,
            ..SegClipConfig::vit_b16()
        },
        other => {
            eprintln!("unknown size '{other}': vit-b16 or tinyclip-8m");
            std::process::exit(2);
        }
    };
    let model = DenseClip::new(&config, &segclip::Device::flex());
    let tokenizer = include_bytes!("../static/tokenizer.json");
    let protocol = DenseProtocol::for_method(DenseMethod::Naclip);
    let bytes = format::write_dense(&config, &protocol, &format::sha256_hex(tokenizer), StorageDtype::Int8, &model_io::model_tensors(&model))
        .expect("a weights file");
    std::fs::write(out, &bytes).expect("write the file");
    println!("wrote {out} ({size}, random weights, {:.1} MB int8)", bytes.len() as f64 / 1e6);
}
