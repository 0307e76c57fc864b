use super::*;
use crate::data::shapes::{self, SceneConfig};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("segclip-voc-test-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn round_trip() {
    let dir = temp_dir("roundtrip");
    let cfg = SceneConfig::with_size(64);
    let train = write_split(&dir, Split::Train, 0..6, &World::Shapes { config: cfg.clone(), pair_masks: false }).unwrap();
    let val = write_split(&dir, Split::Val, 0..3, &World::Shapes { config: cfg.clone(), pair_masks: false }).unwrap();
    // Writing train again replaces its captions rather than duplicating them.
    write_split(&dir, Split::Train, 0..6, &World::Shapes { config: cfg.clone(), pair_masks: false }).unwrap();
    assert_eq!(train.ids[0], "train_000000");

    let ds = VocDataset::open(&dir, "train").unwrap();
    assert_eq!(ds.classes(), shapes::shape_classes());
    assert_eq!(ds.ids(), &train.ids[..]);
    for (i, sample) in ds.iter().enumerate() {
        let sample = sample.unwrap();
        let scene = shapes::generate(Split::Train, i as u64, &cfg);
        assert_eq!((sample.width, sample.height), (64, 64));
        assert_eq!(sample.mask, scene.class_map);
        assert!(sample.image_path.ends_with(format!("JPEGImages/{}.png", scene.id())));
        let img = image::open(&sample.image_path).unwrap().into_rgb8();
        assert_eq!(img.into_raw(), scene.image);
    }
    let caps = ds.captions().unwrap();
    assert_eq!(caps.len(), train.captions);
    let all = fs::read_to_string(dir.join("captions.jsonl")).unwrap();
    assert_eq!(all.lines().count(), train.captions + val.captions);
    assert!(all.lines().next().unwrap().starts_with("{\"image\":\"JPEGImages/"));
    assert_eq!(VocDataset::open(&dir, "val").unwrap().len(), 3);
    assert_eq!(VocDataset::open_all(&dir).unwrap().len(), 9);

    // A different class list in the same folder is refused.
    let err = write_split(&dir, Split::Compositional, 0..1, &World::Shapes { config: cfg.clone(), pair_masks: true }).unwrap_err();
    assert!(err.to_string().contains("classes.txt"), "{err}");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn pair_masks() {
    let dir = temp_dir("pairs");
    let cfg = SceneConfig::with_size(48);
    write_split(&dir, Split::Compositional, 0..2, &World::Shapes { config: cfg.clone(), pair_masks: true }).unwrap();
    let ds = VocDataset::open(&dir, "compositional").unwrap();
    assert_eq!(ds.classes().len(), 89);
    let s = ds.load("compositional_000001").unwrap();
    let scene = shapes::generate(Split::Compositional, 1, &cfg);
    assert_eq!(s.mask, scene.pair_map.iter().map(|&p| p as u8).collect::<Vec<_>>());
    fs::remove_dir_all(&dir).unwrap();
}

/// Hand-written encoders for files `image` cannot write: palette and 4-bit grayscale PNGs.
fn png_file(width: u32, height: u32, depth: u8, colour_type: u8, palette: Option<&[[u8; 3]]>, rows: &[Vec<u8>]) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut c = 0xFFFF_FFFFu32;
        for &b in data {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            }
        }
        !c
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend(data);
        out.extend(&body);
        out.extend(crc32(&body).to_be_bytes());
    }
    // zlib stream with stored (uncompressed) deflate blocks.
    let mut raw = Vec::new();
    for row in rows {
        raw.push(0); // filter: none
        raw.extend(row);
    }
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65535).collect();
    for (i, b) in blocks.iter().enumerate() {
        z.push((i + 1 == blocks.len()) as u8);
        z.extend((b.len() as u16).to_le_bytes());
        z.extend((!(b.len() as u16)).to_le_bytes());
        z.extend(*b);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in &raw {
        a = (a + x as u32) % 65521;
        b = (b + a) % 65521;
    }
    z.extend(((b << 16) | a).to_be_bytes());
    let mut out = PNG_SIGNATURE.to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([depth, colour_type, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    if let Some(p) = palette {
        chunk(&mut out, b"PLTE", &p.concat());
    }
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

fn layout(name: &str, classes: &str, ids: &[&str]) -> PathBuf {
    let dir = temp_dir(name);
    fs::create_dir_all(dir.join("JPEGImages")).unwrap();
    fs::create_dir_all(dir.join("SegmentationClass")).unwrap();
    fs::create_dir_all(dir.join("ImageSets/Segmentation")).unwrap();
    fs::write(dir.join("classes.txt"), classes).unwrap();
    fs::write(dir.join("ImageSets/Segmentation/val.txt"), ids.join("\n")).unwrap();
    dir
}

/// A minimal JPEG header (SOI, APP0, SOF0) is enough for the size check.
/// A real JPEG of `w` x `h` grey pixels, encoded by `image`.
fn jpeg_file(w: u32, h: u32) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::GrayImage::from_pixel(w, h, image::Luma([90])).write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

#[test]
fn reads_palette_and_grey_masks_and_jpeg_sizes() {
    let dir = layout("palette", "background\naeroplane\nbicycle\n\n", &["a", "b"]);
    // Palette mask, VOC style: index 255 (ignore) has its own colour.
    let mut palette = vec![[0, 0, 0], [128, 0, 0], [0, 128, 0]];
    palette.resize(255, [0, 0, 0]); // duplicates of index 0: first entry wins
    palette.push([224, 224, 192]);
    let rows = vec![vec![0, 1, 2], vec![255, 1, 0]];
    fs::write(dir.join("SegmentationClass/a.png"), png_file(3, 2, 8, 3, Some(&palette), &rows)).unwrap();
    fs::write(dir.join("JPEGImages/a.jpg"), jpeg_file(3, 2)).unwrap();
    // 4-bit grayscale mask: values 0, 1, 2 packed two per byte.
    let grey_rows = vec![vec![0x01, 0x20], vec![0x21, 0x00]]; // 4 px per row
    fs::write(dir.join("SegmentationClass/b.png"), png_file(4, 2, 4, 0, None, &grey_rows)).unwrap();
    let rgb = vec![0u8; 4 * 2 * 3];
    image::save_buffer(dir.join("JPEGImages/b.png"), &rgb, 4, 2, image::ExtendedColorType::Rgb8).unwrap();

    let ds = VocDataset::open(&dir, "val").unwrap();
    assert_eq!(ds.classes().len(), 3);
    let samples: Vec<VocSample> = ds.iter().collect::<Result<_, _>>().unwrap();
    assert_eq!(samples[0].mask, vec![0, 1, 2, 255, 1, 0]);
    assert!(samples[0].image_path.ends_with("a.jpg"));
    assert_eq!(samples[1].mask, vec![0, 1, 2, 0, 2, 1, 0, 0]);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn errors_name_the_file() {
    let dir = layout("errors", "background\nthing\n", &["nomask", "noimage", "mismatch", "corrupt", "badvalue", "rgb"]);
    let grey = |w: u32, h: u32, v: u8| {
        let data = vec![v; (w * h) as usize];
        move |p: &Path| image::save_buffer(p, &data, w, h, image::ExtendedColorType::L8).unwrap()
    };
    let img = |p: &Path, w: u32, h: u32| {
        image::save_buffer(p, &vec![0u8; (w * h * 3) as usize], w, h, image::ExtendedColorType::Rgb8).unwrap()
    };
    let j = |n: &str| dir.join("JPEGImages").join(n);
    let s = |n: &str| dir.join("SegmentationClass").join(n);
    img(&j("nomask.png"), 4, 4);
    grey(4, 4, 0)(&s("noimage.png"));
    img(&j("mismatch.png"), 4, 4);
    grey(5, 4, 0)(&s("mismatch.png"));
    img(&j("corrupt.png"), 4, 4);
    grey(4, 4, 1)(&s("corrupt.png"));
    let mut bytes = fs::read(s("corrupt.png")).unwrap();
    let n = bytes.len();
    bytes.truncate(n - 20);
    fs::write(s("corrupt.png"), bytes).unwrap();
    img(&j("badvalue.png"), 4, 4);
    grey(4, 4, 7)(&s("badvalue.png"));
    img(&j("rgb.png"), 4, 4);
    img(&s("rgb.png"), 4, 4);

    let ds = VocDataset::open(&dir, "val").unwrap();
    let errs: Vec<String> = ds.iter().map(|r| r.unwrap_err().to_string()).collect();
    assert!(errs[0].contains("missing mask") && errs[0].contains("nomask.png"), "{}", errs[0]);
    assert!(errs[1].contains("missing image") && errs[1].contains("noimage"), "{}", errs[1]);
    assert!(errs[2].contains("size mismatch") && errs[2].contains("4x4") && errs[2].contains("5x4"), "{}", errs[2]);
    assert!(errs[3].contains("corrupt.png") && errs[3].contains("decode"), "{}", errs[3]);
    assert!(errs[4].contains("badvalue.png") && errs[4].contains("value 7"), "{}", errs[4]);
    assert!(errs[5].contains("rgb.png") && errs[5].contains("RGB"), "{}", errs[5]);

    let err = VocDataset::open(&dir, "nosuchsplit").unwrap_err().to_string();
    assert!(err.contains("nosuchsplit.txt"), "{err}");
    fs::write(dir.join("classes.txt"), "a\n\nb\n").unwrap();
    let err = VocDataset::open(&dir, "val").unwrap_err().to_string();
    assert!(err.contains("classes.txt") && err.contains("line 2"), "{err}");
    fs::remove_file(dir.join("classes.txt")).unwrap();
    let err = VocDataset::open(&dir, "val").unwrap_err().to_string();
    assert!(err.contains("missing class list") && err.contains("classes.txt"), "{err}");
    fs::remove_dir_all(&dir).unwrap();
}

/// Writes a few scenes for a visual check: `SEGCLIP_DUMP=/tmp/x cargo test dump -- --ignored`.
#[test]
#[ignore]
fn dump() {
    let dir = PathBuf::from(std::env::var("SEGCLIP_DUMP").unwrap_or_else(|_| "/tmp/segclip-dump".into()));
    let cfg = SceneConfig::default();
    write_split(&dir.join("shape"), Split::Train, 0..24, &World::Shapes { config: cfg.clone(), pair_masks: false }).unwrap();
    write_split(&dir.join("pair"), Split::Compositional, 0..8, &World::Shapes { config: cfg.clone(), pair_masks: true }).unwrap();
}
