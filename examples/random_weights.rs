//! Writes a model with random weights as an int8 weights file, for timing what real weights of
//! that size cost (no registry here carries trained CLIP weights): a plain CLIP for NACLIP's
//! dense protocol (`scripts/bench-label-cost`, `scripts/bench-load`), or a SegCLIP model.
//!
//! cargo run --release --example random_weights -- vit-b16|tinyclip-8m|segclip-vit-b16 OUT.safetensors

use segclip::model::dense::{DenseClip, DenseMethod, DenseProtocol};
use segclip::model::{SegClip, SegClipConfig};
use segclip::weights::{format, model_io, StorageDtype};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [size, out] = &args[..] else {
        eprintln!("usage: random_weights vit-b16|tinyclip-8m|segclip-vit-b16 OUT.safetensors");
        std::process::exit(2);
    };
    let device = segclip::Device::flex();
    let tokenizer = format::sha256_hex(include_bytes!("../static/tokenizer.json"));
    let dense = |config: SegClipConfig| {
        let tensors = model_io::model_tensors(&DenseClip::new(&config, &device));
        format::write_dense(&config, &DenseProtocol::for_method(DenseMethod::Naclip), &tokenizer, StorageDtype::Int8, &tensors)
    };
    let bytes = match size.as_str() {
        "vit-b16" => dense(SegClipConfig::vit_b16()),
        // TinyCLIP-ViT-8M-16-Text-3M: image width 256 / 4 heads / 10 blocks, text 256 / 4 / 3.
        "tinyclip-8m" => dense(SegClipConfig {
            vision_width: 256,
            vision_heads: 4,
            vision_layers: 10,
            group_after: 8,
            text_width: 256,
            text_heads: 4,
            text_layers: 3,
            ..SegClipConfig::vit_b16()
        }),
        "segclip-vit-b16" => {
            let config = SegClipConfig::vit_b16();
            format::write(&config, &tokenizer, StorageDtype::Int8, &model_io::model_tensors(&SegClip::new(&config, &device)))
        }
        other => {
            eprintln!("unknown size '{other}': vit-b16, tinyclip-8m or segclip-vit-b16");
            std::process::exit(2);
        }
    }
    .expect("a weights file");
    std::fs::write(out, &bytes).expect("write the file");
    println!("wrote {out} ({size}, random weights, {:.1} MB int8)", bytes.len() as f64 / 1e6);
}
