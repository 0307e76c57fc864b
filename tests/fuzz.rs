//! Fuzzing on the stable toolchain: each target feeds mutated inputs to a real entry point (the
//! weights reader, the manifest and presets, the checkpoint importer, image decoding, labels and
//! the tokenizer, the training config, the VOC reader, the streamed converter at arbitrary chunk
//! boundaries) and fails on a panic, a case over 1 s (timed twice, so a case the scheduler set
//! aside is not called slow) or an allocation over 256 MB.
//!
//! Inputs are the seeds (made here from the committed fixtures and configs, plus any file under
//! `tests/fuzz/seeds/<target>/`) mutated by a seeded generator: bit flips, interesting bytes,
//! inserted, deleted and repeated ranges, truncation, splices, large decimal numbers. Every
//! crash found is kept under `tests/fuzz/crashes/<target>/` and replayed first, as a regression
//! test, on every run. `scripts/fuzz [target] [seconds]` runs longer; `FUZZ_SECONDS` sets each
//! target's time (default 20 s), `FUZZ_SEED` the generator's start.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use segclip::data::SplitMix64;

/// The most one case may hold at once.
const MAX_CASE_BYTES: usize = 256 << 20;
/// The longest one case may run.
const MAX_CASE_TIME: Duration = Duration::from_secs(1);

/// Counts what each thread holds while it runs a case, and refuses an allocation that would
/// take it over `MAX_CASE_BYTES` (the process then aborts; the case is on disk, see `run`).
struct Counting;

thread_local! {
    static HELD: Cell<isize> = const { Cell::new(0) };
    static WATCHED: Cell<bool> = const { Cell::new(false) };
}
static OVER: AtomicBool = AtomicBool::new(false);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !account(layout.size() as isize) {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = HELD.try_with(|h| h.set(h.get() - layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !account(new_size as isize - layout.size() as isize) {
            return std::ptr::null_mut();
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Adds `bytes` to this thread's count; false when a watched case would go over the limit.
fn account(bytes: isize) -> bool {
    HELD.try_with(|h| {
        let now = h.get() + bytes;
        if WATCHED.try_with(|w| w.get()).unwrap_or(false) && now > MAX_CASE_BYTES as isize {
            OVER.store(true, Ordering::SeqCst);
            return false;
        }
        h.set(now);
        true
    })
    .unwrap_or(true)
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn scratch(target: &str) -> PathBuf {
    let dir = repo().join("target/fuzz").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The files in `dir`, sorted.
fn kept(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
    files.retain(|p| p.is_file() && !p.file_name().is_some_and(|n| n == "README.md"));
    files.sort();
    files.into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect()
}

/// One mutation of `input` (another seed given for splices).
fn mutate(input: &mut Vec<u8>, other: &[u8], rng: &mut SplitMix64) {
    let below = |rng: &mut SplitMix64, n: usize| if n == 0 { 0 } else { (rng.next_u64() % n as u64) as usize };
    let len = input.len();
    match rng.next_u64() % 9 {
        0 if len > 0 => {
            let i = below(rng, len);
            input[i] ^= 1 << (rng.next_u64() % 8);
        }
        1 if len > 0 => {
            const INTERESTING: [u8; 10] = [0, 1, 0x7f, 0x80, 0xff, b'0', b'9', b'"', b'{', b'-'];
            let i = below(rng, len);
            input[i] = INTERESTING[below(rng, INTERESTING.len())];
        }
        2 => {
            let at = below(rng, len + 1);
            let n = 1 + below(rng, 16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            input.splice(at..at, bytes);
        }
        3 if len > 0 => {
            let at = below(rng, len);
            let n = 1 + below(rng, (len - at).min(4096));
            input.drain(at..at + n);
        }
        4 if len > 0 => {
            let at = below(rng, len);
            let n = 1 + below(rng, (len - at).min(256));
            let copy = input[at..at + n].to_vec();
            let to = below(rng, len + 1);
            input.splice(to..to, copy);
        }
        5 => input.truncate(below(rng, len + 1)),
        6 if !other.is_empty() => {
            let at = below(rng, len + 1);
            let from = below(rng, other.len());
            let n = 1 + below(rng, (other.len() - from).min(4096));
            input.splice(at..len.min(at + n), other[from..from + n].iter().copied());
        }
        7 if len > 0 => {
            // A decimal number turned huge or negative: sizes, offsets and counts in text formats.
            let digits = input.iter().enumerate().filter(|(_, b)| b.is_ascii_digit()).map(|(i, _)| i).collect::<Vec<_>>();
            if let Some(&i) = digits.get(below(rng, digits.len())) {
                const BIG: [&[u8]; 4] = [b"99999999999999999999", b"4294967296", b"-1", b"18446744073709551615"];
                input.splice(i..i + 1, BIG[below(rng, BIG.len())].iter().copied());
            }
        }
        _ if len >= 8 => {
            // A little-endian u64 (a safetensors header length, a zip offset) set to an extreme.
            let i = below(rng, len - 7);
            let v: u64 = [u64::MAX, 1 << 40, 0, u32::MAX as u64][below(rng, 4)];
            input[i..i + 8].copy_from_slice(&v.to_le_bytes());
        }
        _ => input.push(rng.next_u64() as u8),
    }
}

/// What a fuzz run found.
struct Report {
    cases: u64,
    slowest: Duration,
    failures: Vec<String>,
}

/// Runs `case` on every kept crash, then on mutated seeds for `seconds`; a panic or a slow case
/// is kept under `tests/fuzz/crashes/<target>/` and reported.
fn run(target: &str, crashes: &Path, seeds: Vec<Vec<u8>>, seconds: f64, case: impl Fn(&[u8])) -> Report {
    assert!(!seeds.is_empty(), "{target}: no seeds");
    let current = scratch(target).join("current-case.bin");
    let mut report = Report { cases: 0, slowest: Duration::ZERO, failures: Vec::new() };
    let try_one = |input: &[u8], report: &mut Report, keep: bool| {
        // On disk first: if the allocator refuses a case the process aborts, and this names it.
        std::fs::write(&current, input).unwrap();
        let started = Instant::now();
        WATCHED.with(|w| w.set(true));
        HELD.with(|h| h.set(0));
        let mut outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(input)));
        let mut took = started.elapsed();
        if outcome.is_ok() && took > MAX_CASE_TIME {
            // Once more before calling it slow: a case the scheduler set aside (other jobs on
            // the cores) is fast the second time; a real hang is not.
            let again = Instant::now();
            outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(input)));
            took = took.min(again.elapsed());
        }
        WATCHED.with(|w| w.set(false));
        report.cases += 1;
        report.slowest = report.slowest.max(took);
        let problem = match outcome {
            Err(e) => Some(format!("panic: {}", e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default())),
            Ok(()) if took > MAX_CASE_TIME => Some(format!("took {:.2} s", took.as_secs_f64())),
            Ok(()) => None,
        };
        if let Some(problem) = problem {
            let mut name = format!("{:016x}", input.iter().fold(0xcbf29ce484222325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100000001b3)));
            if keep {
                std::fs::create_dir_all(crashes).unwrap();
                std::fs::write(crashes.join(&name), input).unwrap();
            } else {
                name = "a kept crash".into();
            }
            report.failures.push(format!("{target}: {problem} ({name})"));
        }
    };
    for (path, input) in kept(crashes) {
        let before = report.failures.len();
        try_one(&input, &mut report, false);
        if report.failures.len() > before {
            report.failures.push(format!("{target}: regression on {}", path.display()));
        }
    }
    let mut corpus = seeds;
    corpus.extend(kept(&repo().join("tests/fuzz/seeds").join(target)).into_iter().map(|(_, b)| b));
    let start: u64 = std::env::var("FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let mut rng = SplitMix64::new(start ^ target.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64)));
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    for seed in corpus.clone() {
        try_one(&seed, &mut report, true);
    }
    while Instant::now() < until && report.failures.len() < 5 {
        let i = (rng.next_u64() % corpus.len() as u64) as usize;
        let other = &corpus[(rng.next_u64() % corpus.len() as u64) as usize];
        let mut input = corpus[i].clone();
        for _ in 0..1 + rng.next_u64() % 8 {
            mutate(&mut input, other, &mut rng);
        }
        try_one(&input, &mut report, true);
    }
    std::panic::set_hook(quiet);
    report
}

fn seconds() -> f64 {
    std::env::var("FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(30.0)
}

/// Runs a target unless `FUZZ_TARGET` names another, and fails on what it found.
fn fuzz(target: &str, seeds: impl FnOnce() -> Vec<Vec<u8>>, case: impl Fn(&[u8])) {
    if std::env::var("FUZZ_TARGET").is_ok_and(|t| t != target) {
        return;
    }
    let report = run(target, &repo().join("tests/fuzz/crashes").join(target), seeds(), seconds(), case);
    println!(
        "fuzz {target}: {} cases in {:.0} s, slowest {:.3} s, {} failure(s)",
        report.cases,
        seconds(),
        report.slowest.as_secs_f64(),
        report.failures.len()
    );
    assert!(!OVER.load(Ordering::SeqCst), "{target}: a case asked for more than 256 MB");
    assert!(report.failures.is_empty(), "{}", report.failures.join("\n"));
}

fn text(input: &[u8]) -> String {
    String::from_utf8_lossy(input).into_owned()
}

#[test]
fn fuzz_weights_reader() {
    use segclip::weights::format::{self, Residency};
    fuzz(
        "weights",
        || vec![fixture("weights/segclip-emoji-int8.safetensors")[..].to_vec(), fixture("tests/fixtures/parity/segclip_tiny_io.safetensors")],
        |input| {
            let _ = format::read(input);
            let _ = format::read_for_model(input, Residency::Int8);
        },
    );
}

#[test]
fn fuzz_manifest_and_presets() {
    use segclip::pipeline::manifest::Manifest;
    use segclip::weights::presets::Presets;
    fuzz(
        "manifest",
        || vec![fixture("weights/manifest.json"), fixture("weights/presets.json")],
        |input| {
            let _ = Manifest::parse(&text(input), "fuzz");
            let _ = Presets::parse(&text(input), "fuzz");
        },
    );
}

#[test]
fn fuzz_checkpoint_importer() {
    use segclip::weights::import;
    let file = scratch("checkpoint").join("input");
    fuzz(
        "checkpoint",
        || vec![fixture("tests/fixtures/parity/openai_clip_tiny.pt"), fixture("tests/fixtures/parity/hf_clip_tiny.safetensors")],
        |input| {
            std::fs::write(&file, input).unwrap();
            let _ = import::sniff_layout(&file);
            let _ = import::import(&file, None);
            let _ = import::import_dense(&file, None);
        },
    );
}

#[test]
fn fuzz_image_decode_and_preprocess() {
    use segclip::pipeline::{decode, preprocess};
    let seeds = || {
        let mut out = Vec::new();
        let img = image::RgbImage::from_fn(19, 13, |x, y| image::Rgb([(x * 13) as u8, (y * 19) as u8, 77]));
        for format in [image::ImageFormat::Png, image::ImageFormat::Jpeg, image::ImageFormat::Gif, image::ImageFormat::Bmp, image::ImageFormat::WebP] {
            let mut bytes = std::io::Cursor::new(Vec::new());
            image::DynamicImage::ImageRgb8(img.clone()).write_to(&mut bytes, format).unwrap();
            out.push(bytes.into_inner());
        }
        out
    };
    fuzz("image", seeds, |input| {
        if let Ok(rgb) = decode::decode_image(input, 4_000_000) {
            let _ = preprocess::prepare(&rgb, 96, 2048);
        }
    });
}

#[test]
fn fuzz_labels_and_tokenizer() {
    use segclip::{labels, tokenizer::ClipTokenizer};
    let tokenizer = ClipTokenizer::from_bytes(&fixture("static/tokenizer.json")).unwrap();
    let seeds = || {
        let mut out: Vec<Vec<u8>> = ["cat, sofa, tv", "a photo of a {}.\nwindow;door", "ünïcödé, 猫, 🐱, e\u{301}", "\u{0}\u{ffff}, ,,;"]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        out.push(vec![0xff, 0xfe, b'c', b'a', b't', 0xc3, 0x28]);
        out
    };
    fuzz("tokenizer", seeds, |input| {
        let typed = text(input);
        if let Ok(list) = labels::parse_labels(&typed) {
            for label in list.iter().take(64) {
                for prompt in labels::prompts(label, &["a photo of a {}.".to_string(), "{}".to_string()]) {
                    let _ = tokenizer.encode(&prompt, 77);
                }
            }
        }
    });
}

#[test]
fn fuzz_training_config() {
    use segclip::train::config::TrainConfig;
    let seeds = || ["emoji", "shapes", "smoke", "reference", "emoji-long"].iter().map(|c| fixture(&format!("configs/{c}.toml"))).collect();
    fuzz("config", seeds, |input| {
        let _ = TrainConfig::parse(&text(input), &[]);
    });
}

#[test]
fn fuzz_voc_reader() {
    use segclip::data::voc::{self, VocDataset};
    use segclip::data::world::World;
    let root = scratch("voc").join("split");
    let _ = std::fs::remove_dir_all(&root);
    voc::write_split(&root, segclip::data::shapes::Split::Val, 0..2, &World::emoji(48)).unwrap();
    let ids = VocDataset::open(&root, "val").unwrap().ids().to_vec();
    // The first byte picks the file an input replaces; the rest is its content.
    let files: Vec<PathBuf> = vec![
        root.join("classes.txt"),
        root.join("ImageSets/Segmentation/val.txt"),
        root.join("JPEGImages").join(format!("{}.png", ids[0])),
        root.join("SegmentationClass").join(format!("{}.png", ids[0])),
    ];
    let originals: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    let seeds = || originals.iter().enumerate().map(|(i, b)| [vec![i as u8], b.clone()].concat()).collect();
    fuzz("voc", seeds, |input| {
        let Some((&which, content)) = input.split_first() else { return };
        let which = which as usize % files.len();
        std::fs::write(&files[which], content).unwrap();
        if let Ok(set) = VocDataset::open(&root, "val") {
            for sample in set.iter().take(8) {
                let _ = sample;
            }
        }
        std::fs::write(&files[which], &originals[which]).unwrap();
    });
}

#[test]
fn fuzz_streamed_converter_at_any_chunk_boundary() {
    use segclip::model::dense::DenseMethod;
    use segclip::weights::stream::{ConvertOptions, StreamConverter};
    use segclip::weights::StorageDtype;
    fuzz(
        "stream",
        || vec![fixture("tests/fixtures/parity/hf_clip_tiny.safetensors")],
        |input| {
            let options = ConvertOptions { method: DenseMethod::Naclip, dtype: StorageDtype::Int8, tokenizer_sha256: "t".into(), heads: Some((2, 2)), source_sha256: None };
            let mut c = StreamConverter::new(options);
            // Chunk sizes drawn from the input itself, so a case replays the same boundaries.
            let mut rng = SplitMix64::new(input.len() as u64);
            let mut rest = input;
            while !rest.is_empty() {
                let n = (1 + rng.next_u64() % 70_000) as usize;
                let (piece, tail) = rest.split_at(n.min(rest.len()));
                if c.push(piece).is_err() {
                    return;
                }
                rest = tail;
            }
            let _ = c.finish();
        },
    );
}

/// The harness itself: a panic and a slow case are caught, kept, and replayed next time.
#[test]
fn the_harness_keeps_what_fails_and_replays_it() {
    let crashes = scratch("selftest").join("crashes");
    let _ = std::fs::remove_dir_all(&crashes);
    let case = |input: &[u8]| {
        if input.len() > 12 {
            panic!("too long");
        }
        if input.first() == Some(&b'z') {
            std::thread::sleep(Duration::from_millis(1100));
        }
    };
    let found = run("selftest", &crashes, vec![b"abcdefghijklmnop".to_vec(), b"zz".to_vec(), b"ok".to_vec()], 0.5, case);
    assert!(found.failures.iter().any(|f| f.contains("took")), "{:?}", found.failures);
    assert!(found.failures.iter().any(|f| f.contains("panic: too long")), "{:?}", found.failures);
    let kept_now = kept(&crashes).len();
    assert!(kept_now >= 2, "{kept_now} inputs kept");
    // Next run: the kept inputs are replayed first and fail again.
    let again = run("selftest", &crashes, vec![b"a".to_vec()], 0.0, case);
    assert!(again.failures.iter().filter(|f| f.contains("regression on")).count() >= 2, "{:?}", again.failures);
}
