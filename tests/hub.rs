//! CLIP from a model hub, natively: the streamed converter (src/weights/stream.rs) on both hub
//! layouts gives the same bytes whatever the chunk sizes and the same bytes as the importer's
//! path; its failures name what went wrong; `segclip fetch` against a local server in the
//! hub's URL layout (redirects, CORS, a cut-short body, 404, 401) writes the same file as
//! `segclip convert` of the same download.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use segclip::model::dense::{DenseMethod, DenseProtocol};
use segclip::weights::stream::{ConvertError, ConvertOptions, StreamConverter};
use segclip::weights::{format, import, StorageDtype};
use support::hub::{tiny_hub_file, Behaviour, HubServer};

fn options(method: DenseMethod, dtype: StorageDtype) -> ConvertOptions {
    ConvertOptions { method, dtype, tokenizer_sha256: "t".into(), heads: Some((2, 2)), source_sha256: None }
}

fn convert_in_chunks(bytes: &[u8], chunk: usize, options: ConvertOptions) -> Result<Vec<u8>, ConvertError> {
    let mut c = StreamConverter::new(options);
    for piece in bytes.chunks(chunk.max(1)) {
        c.push(piece)?;
    }
    c.finish().map(|done| done.bytes)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("segclip-hub-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn streamed_conversion_is_the_same_in_any_chunks_and_equals_the_import_path() {
    for openai in [false, true] {
        let source = tiny_hub_file(openai, false);
        for dtype in [StorageDtype::Int8, StorageDtype::F16, StorageDtype::F32] {
            let whole = convert_in_chunks(&source, source.len(), options(DenseMethod::Naclip, dtype)).unwrap();
            for chunk in [1, 7, 4096, 65536] {
                let pieces = convert_in_chunks(&source, chunk, options(DenseMethod::Naclip, dtype)).unwrap();
                assert!(pieces == whole, "layout openai={openai} {dtype}: chunks of {chunk} bytes give other bytes");
            }
            // The importer's path (whole tensors in memory, `format::write_dense`) on the same file.
            let dir = scratch(&format!("import-{openai}-{dtype}"));
            let path = dir.join("in.safetensors");
            std::fs::write(&path, &source).unwrap();
            let file = format::read(&whole).unwrap();
            let imported = import::import_dense(&path, Some(file.config.clone())).unwrap();
            let protocol = DenseProtocol::for_method(DenseMethod::Naclip);
            let old = format::write_dense(&file.config, &protocol, "t", dtype, &imported.tensors).unwrap();
            assert!(old == whole, "layout openai={openai} {dtype}: the streamed file differs from the importer's");
        }
    }
    // Both layouts of the same CLIP give the same file.
    let hf = convert_in_chunks(&tiny_hub_file(false, false), 1000, options(DenseMethod::Clearclip, StorageDtype::Int8)).unwrap();
    let openai = convert_in_chunks(&tiny_hub_file(true, false), 1000, options(DenseMethod::Clearclip, StorageDtype::Int8)).unwrap();
    let (a, b) = (format::read(&hf).unwrap(), format::read(&openai).unwrap());
    assert_eq!(a.tensors.keys().collect::<Vec<_>>(), b.tensors.keys().collect::<Vec<_>>());
    for (name, t) in &a.tensors {
        let worst = t.data.iter().zip(&b.tensors[name].data).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(worst < 1e-6, "{name}: the layouts differ by {worst}");
    }
    assert_eq!(a.dense.unwrap().method, DenseMethod::Clearclip);
}

#[test]
fn conversion_failures_name_what_is_wrong() {
    let source = tiny_hub_file(false, false);
    let opts = || options(DenseMethod::Naclip, StorageDtype::Int8);
    // Cut short: the bytes received and expected.
    let e = convert_in_chunks(&source[..source.len() - 100], 4096, opts()).unwrap_err().to_string();
    assert!(e.contains(&format!("after {} of the {} bytes", source.len() - 100, source.len())), "{e}");
    // One byte too many.
    let mut long = source.clone();
    long.push(0);
    let e = convert_in_chunks(&long, 4096, opts()).unwrap_err().to_string();
    assert!(e.contains("more bytes than its header describes"), "{e}");
    // Not safetensors at all.
    let e = convert_in_chunks(b"PK\x03\x04 a zip file, not safetensors", 8, opts()).unwrap_err().to_string();
    assert!(e.starts_with("not a safetensors file"), "{e}");
    // Safetensors, but not a CLIP: the keys are named.
    let other = {
        use safetensors::tensor::{Dtype, TensorView};
        let data = vec![0u8; 16];
        safetensors::serialize([("encoder.layer.0.weight".to_string(), TensorView::new(Dtype::F32, vec![2, 2], &data).unwrap())], None).unwrap()
    };
    let e = convert_in_chunks(&other, 3, opts()).unwrap_err().to_string();
    assert!(e.contains("not a CLIP checkpoint") && e.contains("encoder.layer.0.weight"), "{e}");
    // A source that is not the pinned file.
    let e = convert_in_chunks(&source, 4096, ConvertOptions { source_sha256: Some("0".repeat(64)), ..opts() }).unwrap_err().to_string();
    assert!(e.contains("SHA-256") && e.contains(&"0".repeat(64)), "{e}");
    // A header that claims to be enormous is refused before anything is buffered.
    let mut huge = u64::MAX.to_le_bytes().to_vec();
    huge.extend_from_slice(b"{}");
    let e = convert_in_chunks(&huge, 4096, opts()).unwrap_err().to_string();
    assert!(e.contains("header of"), "{e}");
}

fn segclip(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_segclip")).args(args).output().expect("run segclip")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A presets file naming the tiny CLIP on the test hub (and its failing variants).
fn test_presets(dir: &Path, sha: &str, size: usize) -> PathBuf {
    let entry = |id: &str, repo: &str, sha: &str| {
        serde_json::json!({
            "id": id, "name": format!("test {id}"), "method": "naclip",
            "source": {"kind": "hub", "repo": repo, "revision": "main", "file": "model.safetensors", "bytes": size, "sha256": sha, "layout": "huggingface"},
            "knows": "random weights", "limits": "everything", "licence": "test", "download_bytes": size, "memory_bytes": 1, "heads": [2, 2]
        })
    };
    let presets = serde_json::json!({
        "format": "segclip-presets", "version": 1, "hub": "http://127.0.0.1:9",
        "presets": [
            entry("tiny", "test/tiny-clip", sha),
            entry("missing", "test/missing", sha),
            entry("gated", "test/gated", sha),
            entry("cut", "test/cut", sha),
            entry("changed", "test/tiny-clip", &"a".repeat(64)),
        ]
    });
    let path = dir.join("presets.json");
    std::fs::write(&path, serde_json::to_string_pretty(&presets).unwrap()).unwrap();
    path
}

#[test]
fn fetch_downloads_from_a_hub_layout_and_writes_what_convert_writes() {
    let dir = scratch("fetch");
    let source = tiny_hub_file(false, false);
    let sha = format::sha256_hex(&source);
    let hub = HubServer::start();
    hub.add("test/tiny-clip", "main", "model.safetensors", source.clone(), Behaviour::default());
    hub.add("test/gated", "main", "model.safetensors", source.clone(), Behaviour { unauthorized: true, ..Behaviour::default() });
    hub.add("test/cut", "main", "model.safetensors", source.clone(), Behaviour { cut_at: Some(source.len() / 2), ..Behaviour::default() });
    let presets = test_presets(&dir, &sha, source.len());
    let p = presets.to_str().unwrap();
    let out = dir.join("tiny-int8.safetensors");
    let run = segclip(&["fetch", "tiny", "--presets", p, "--hub", &hub.base, "--out", out.to_str().unwrap()]);
    assert!(run.status.success(), "{}", text(&run));
    let requests = hub.requests.lock().unwrap().clone();
    assert!(
        requests.iter().any(|r| r.starts_with("/cdn/")),
        "the hub's redirect to its download path was not followed: {requests:?}"
    );

    // `segclip convert` of the same file: the same bytes, by the same converter.
    let input = dir.join("model.safetensors");
    std::fs::write(&input, &source).unwrap();
    let converted = dir.join("converted.safetensors");
    let config = dir.join("config.json");
    let fetched = std::fs::read(&out).unwrap();
    std::fs::write(&config, serde_json::to_string(&format::read(&fetched).unwrap().config).unwrap()).unwrap();
    let run = segclip(&[
        "convert", input.to_str().unwrap(), converted.to_str().unwrap(), "--dtype", "int8", "--config", config.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", text(&run));
    assert!(std::fs::read(&converted).unwrap() == fetched, "fetch and convert wrote different files");

    for (preset, expected) in [
        ("missing", "HTTP 404"),
        ("gated", "HTTP 401"),
        ("cut", &format!("of {} bytes", source.len()) as &str),
        ("changed", "SHA-256"),
    ] {
        let target = dir.join(format!("{preset}.safetensors"));
        let run = segclip(&["fetch", preset, "--presets", p, "--hub", &hub.base, "--out", target.to_str().unwrap()]);
        let log = text(&run);
        assert!(!run.status.success(), "{preset}: {log}");
        assert!(log.contains(expected), "{preset}: expected '{expected}' in: {log}");
        assert!(!target.exists(), "{preset}: a failed fetch left a file");
    }
    let run = segclip(&["fetch", "--list"]);
    assert!(run.status.success() && text(&run).contains("tinyclip-8m"), "{}", text(&run));
    drop(hub);
    let run = segclip(&["fetch", "tiny", "--presets", p, "--hub", "http://127.0.0.1:9", "--out", out.to_str().unwrap()]);
    assert!(text(&run).contains("cannot be reached"), "{}", text(&run));
}
