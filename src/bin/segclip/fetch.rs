//! `segclip fetch PRESET [--hub URL] [--url URL] [--out FILE] [--dtype int8]`: downloads a model
//! the presets list (weights/presets.json) and converts it as it streams in, with the converter
//! the page uses (src/weights/stream.rs). `segclip fetch --list` shows the presets.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context};
use segclip::weights::presets::{Layout, Presets, Source};
use segclip::weights::stream::{ConvertOptions, StreamConverter};
use segclip::weights::{format, StorageDtype};

#[derive(clap::Args)]
pub struct FetchArgs {
    /// The preset's id (`--list` shows them).
    preset: Option<String>,
    /// List the presets: what each knows, its download and memory.
    #[arg(long)]
    list: bool,
    /// The hub's base URL (a mirror or a local server in the hub's layout); default: the
    /// presets' own (https://huggingface.co).
    #[arg(long)]
    hub: Option<String>,
    /// Download a release preset from this URL instead of its own.
    #[arg(long)]
    url: Option<String>,
    /// The weights file to write (default: the preset's converted file name, here).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Storage dtype of the output.
    #[arg(long, default_value = "int8")]
    dtype: StorageDtype,
    /// Another presets file (the format of weights/presets.json) instead of the built-in one.
    #[arg(long)]
    presets: Option<PathBuf>,
}

pub fn run(args: FetchArgs) -> anyhow::Result<()> {
    let presets = match &args.presets {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            Presets::parse(&text, &path.display().to_string()).map_err(anyhow::Error::msg)?
        }
        None => Presets::bundled(),
    };
    if args.list || args.preset.is_none() {
        for p in &presets.presets {
            println!("{:<16} {}  [{}, {:.0} MB download, ~{:.1} GB in the page]", p.id, p.name, p.method, p.download_bytes as f64 / 1e6, p.memory_bytes as f64 / 1e9);
            println!("{:<16} knows: {}; not: {}", "", p.knows, p.limits);
        }
        if args.preset.is_none() && !args.list {
            bail!("name a preset to fetch (above)");
        }
        return Ok(());
    }
    let preset = presets.get(args.preset.as_deref().expect("checked")).map_err(anyhow::Error::msg)?;
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from(preset.converted_name()));
    match &preset.source {
        Source::Bundled { file } => {
            println!("'{}' ships with segclip: weights/{file}; nothing to fetch", preset.id);
            Ok(())
        }
        Source::Hub { sha256, .. } => {
            let hub = args.hub.clone().unwrap_or_else(|| presets.hub.clone());
            let url = preset.url(&hub).expect("a hub preset has a URL");
            let method = preset.dense_method().map_err(anyhow::Error::msg)?.context("a hub preset is a plain CLIP for a dense method")?;
            let options = ConvertOptions {
                method,
                dtype: args.dtype,
                tokenizer_sha256: format::sha256_hex(crate::TOKENIZER_JSON),
                heads: preset.heads,
                source_sha256: Some(sha256.clone()),
            };
            let mut converter = StreamConverter::new(options);
            download(&url, |chunk| converter.push(chunk).map_err(anyhow::Error::from))?;
            let converted = converter.finish().with_context(|| url.clone())?;
            println!("{url}: {} checkpoint, {method}", converted.layout);
            crate::convert::check_dense(&converted.bytes)?;
            segclip::files::write_atomic(&out, &converted.bytes).map_err(anyhow::Error::msg)?;
            println!("wrote {} ({}, {:.2} MB, sha256 {})", out.display(), args.dtype, converted.bytes.len() as f64 / 1e6, format::sha256_hex(&converted.bytes));
            println!("segment with: segclip segment PHOTO --labels \"cat, sofa\" --weights {}", out.display());
            Ok(())
        }
        Source::Release { url, layout, .. } => {
            if *layout != Layout::TorchZip {
                bail!("preset '{}': a release in layout {layout:?} is not supported", preset.id);
            }
            let url = args.url.clone().unwrap_or_else(|| url.clone());
            // A torch zip-pickle is read from a file: download it whole, then convert.
            let download_path = out.with_extension("download");
            let mut file = std::fs::File::create(&download_path).with_context(|| download_path.display().to_string())?;
            let result = download(&url, |chunk| std::io::Write::write_all(&mut file, chunk).map_err(anyhow::Error::from));
            drop(file);
            if let Err(e) = result {
                let _ = std::fs::remove_file(&download_path);
                return Err(e);
            }
            let converted = crate::convert::run(crate::convert::ConvertArgs {
                input: download_path.clone(),
                output: out.clone(),
                dtype: args.dtype,
                config: None,
                tokenizer: None,
                method: None,
            });
            let _ = std::fs::remove_file(&download_path);
            converted?;
            println!("the page takes {} by \"Use my own weights\" (drop it there)", out.display());
            Ok(())
        }
    }
}

/// Streams `url` into `sink` chunk by chunk with a progress bar; redirects (the hub's to its
/// CDN) are followed. Errors name the URL and what went wrong.
fn download(url: &str, mut sink: impl FnMut(&[u8]) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let mut response = match ureq::get(url).call() {
        Ok(r) => r,
        Err(ureq::Error::StatusCode(code)) => bail!("{url}: HTTP {code}{}", status_hint(code)),
        Err(e) => bail!("{url}: {e} (offline, or the host cannot be reached?)"),
    };
    let total: Option<u64> = response.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let bar = crate::progress::bytes_bar("downloading");
    if let Some(t) = total {
        bar.set_length(t);
    }
    let mut reader = response.body_mut().as_reader();
    let mut buffer = vec![0u8; 1 << 20];
    let mut received = 0u64;
    loop {
        let n = reader.read(&mut buffer).with_context(|| match total {
            Some(t) => format!("{url}: the download broke off after {received} of {t} bytes"),
            None => format!("{url}: the download broke off after {received} bytes"),
        })?;
        if n == 0 {
            break;
        }
        sink(&buffer[..n])?;
        received += n as u64;
        bar.set_position(received);
    }
    bar.finish_and_clear();
    if let Some(t) = total {
        if received < t {
            bail!("{url}: the download ended after {received} of {t} bytes");
        }
    }
    Ok(())
}

fn status_hint(code: u16) -> &'static str {
    match code {
        401 | 403 => " (the repository is private or gated: it needs a login this tool does not do)",
        404 => " (no such repository, revision or file: check the preset or the --hub mirror)",
        _ => "",
    }
}
