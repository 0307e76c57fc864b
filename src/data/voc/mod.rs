//! Pascal VOC folder layout (native only: uses `std::fs`).
//!
//! Layout, under a root folder:
//!
//! ```text
//! JPEGImages/<id>.png            RGB images (the reader also accepts .jpg / .jpeg)
//! SegmentationClass/<id>.png     class-index masks: 8-bit grayscale or palette PNG, 255 = ignore
//! ImageSets/Segmentation/<split>.txt   one id per line
//! classes.txt                    one class name per line, in index order
//! captions.jsonl                 {"image": "JPEGImages/<id>.png", "caption": "..."} per caption
//! objects_<split>.jsonl          (written for the worlds' splits) {"id", "background", "objects"}
//! ```
//!
//! [`write_split`] writes scenes of a world's [`Split`] (ids `train_000000`, ...). Several
//! splits may share one root: each split has its own id list, `captions.jsonl` is rewritten
//! keeping the other splits' lines, and `classes.txt` must agree (it is checked).
//!
//! [`VocDataset`] reads any VOC-style folder: it lists ids, finds each image, decodes each mask
//! to class indices (palette PNGs are mapped back to palette indices), and checks that image and
//! mask sizes agree and that mask values are valid class indices or 255. Images are not decoded
//! (only their PNG/JPEG header is read for the size); every error names the file concerned.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::shapes::Split;
use super::world::{LabelledScene, World};

/// Mask value meaning "not labelled".
pub const IGNORE_INDEX: u8 = 255;

/// Errors of this module; each names the file (or folder) concerned.
#[derive(Debug, thiserror::Error)]
pub enum VocError {
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: cannot {action} PNG: {source}", .path.display())]
    Png {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: image::ImageError,
    },
    #[error("missing {what}: {}", .path.display())]
    Missing { what: &'static str, path: PathBuf },
    #[error("missing image for id '{id}': no {id}.jpg, {id}.jpeg or {id}.png in {}", .dir.display())]
    MissingImage { id: String, dir: PathBuf },
    #[error("missing mask for id '{id}': {}", .path.display())]
    MissingMask { id: String, path: PathBuf },
    #[error(
        "size mismatch for id '{id}': image {} is {}x{} but mask {} is {}x{}",
        .image_path.display(), .image_size.0, .image_size.1, .mask_path.display(), .mask_size.0, .mask_size.1
    )]
    SizeMismatch { id: String, image_path: PathBuf, image_size: (u32, u32), mask_path: PathBuf, mask_size: (u32, u32) },
    #[error("{}: invalid mask: {reason}", .path.display())]
    BadMask { path: PathBuf, reason: String },
    #[error("{}: {reason}", .path.display())]
    BadFile { path: PathBuf, reason: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> VocError + '_ {
    move |source| VocError::Io { path: path.to_path_buf(), source }
}

// ------------------------------------------------------------------------------------------------
// Writing

/// What [`write_split`] wrote.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WriteSummary {
    pub root: PathBuf,
    pub split: Split,
    pub ids: Vec<String>,
    pub captions: usize,
}

#[derive(Serialize, Deserialize)]
struct CaptionLine {
    image: String,
    caption: String,
}

fn write_png(path: &Path, data: &[u8], size: (usize, usize), colour: image::ExtendedColorType) -> Result<(), VocError> {
    image::save_buffer_with_format(path, data, size.0 as u32, size.1 as u32, colour, image::ImageFormat::Png)
        .map_err(|source| VocError::Png { path: path.to_path_buf(), action: "write", source })
}

/// Writes one scene's image and mask (`JPEGImages/<id>.png`, `SegmentationClass/<id>.png`).
/// The folders must exist.
pub fn write_scene(root: &Path, scene: &LabelledScene) -> Result<String, VocError> {
    let id = scene.id.clone();
    let dims = (scene.width, scene.height);
    write_png(&root.join("JPEGImages").join(format!("{id}.png")), &scene.image, dims, image::ExtendedColorType::Rgb8)?;
    write_png(&root.join("SegmentationClass").join(format!("{id}.png")), &scene.truth, dims, image::ExtendedColorType::L8)?;
    Ok(id)
}

/// Writes scenes `range` of `split` of `world` under `root` in VOC layout (see the module docs),
/// creating folders as needed and replacing earlier output for the same split.
pub fn write_split(root: &Path, split: Split, range: Range<u64>, world: &World) -> Result<WriteSummary, VocError> {
    for dir in ["JPEGImages", "SegmentationClass", "ImageSets/Segmentation"] {
        let d = root.join(dir);
        fs::create_dir_all(&d).map_err(io_err(&d))?;
    }
    // classes.txt: create, or check that it agrees.
    let classes_path = root.join("classes.txt");
    let classes = world.classes();
    if classes_path.exists() {
        let existing = read_class_list(&classes_path)?;
        if existing != classes {
            return Err(VocError::BadFile {
                path: classes_path,
                reason: format!(
                    "class list ({} classes) differs from the classes being written ({}); use another folder",
                    existing.len(),
                    classes.len()
                ),
            });
        }
    } else {
        fs::write(&classes_path, classes.join("\n") + "\n").map_err(io_err(&classes_path))?;
    }

    let mut ids = Vec::with_capacity(range.end.saturating_sub(range.start) as usize);
    let mut captions = Vec::new();
    let mut objects = String::new();
    for index in range {
        let scene = world.scene(split, index);
        let id = write_scene(root, &scene)?;
        for c in &scene.captions {
            captions.push(CaptionLine { image: format!("JPEGImages/{id}.png"), caption: c.clone() });
        }
        let mut line = serde_json::json!({ "id": id });
        if let (Some(line), Some(fields)) = (line.as_object_mut(), scene.objects.as_object()) {
            line.extend(fields.clone());
        }
        objects.push_str(&serde_json::to_string(&line).expect("serialisable"));
        objects.push('\n');
        ids.push(id);
    }

    let list_path = root.join("ImageSets/Segmentation").join(format!("{}.txt", split.name()));
    fs::write(&list_path, ids.iter().map(|i| format!("{i}\n")).collect::<String>()).map_err(io_err(&list_path))?;
    let objects_path = root.join(format!("objects_{}.jsonl", split.name()));
    fs::write(&objects_path, objects).map_err(io_err(&objects_path))?;

    // captions.jsonl: keep other splits' lines, replace this split's.
    let captions_path = root.join("captions.jsonl");
    let own_prefix = format!("JPEGImages/{}_", split.name());
    let mut out = String::new();
    if captions_path.exists() {
        let text = fs::read_to_string(&captions_path).map_err(io_err(&captions_path))?;
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let parsed: CaptionLine = serde_json::from_str(line)
                .map_err(|e| VocError::BadFile { path: captions_path.clone(), reason: format!("line {}: {e}", n + 1) })?;
            if !parsed.image.starts_with(&own_prefix) {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    for c in &captions {
        out.push_str(&serde_json::to_string(c).expect("serialisable"));
        out.push('\n');
    }
    let mut f = fs::File::create(&captions_path).map_err(io_err(&captions_path))?;
    f.write_all(out.as_bytes()).map_err(io_err(&captions_path))?;

    Ok(WriteSummary { root: root.to_path_buf(), split, ids, captions: captions.len() })
}

// ------------------------------------------------------------------------------------------------
// Reading

/// Reads a class list: one name per line (surrounding whitespace trimmed), index order. Trailing
/// blank lines are ignored; blank lines in between, or more than 255 classes, are errors.
pub fn read_class_list(path: &Path) -> Result<Vec<String>, VocError> {
    let text = fs::read_to_string(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => VocError::Missing { what: "class list", path: path.to_path_buf() },
        _ => VocError::Io { path: path.to_path_buf(), source },
    })?;
    let mut names: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
    while names.last().is_some_and(|n| n.is_empty()) {
        names.pop();
    }
    let bad = |reason: String| VocError::BadFile { path: path.to_path_buf(), reason };
    if let Some(i) = names.iter().position(|n| n.is_empty()) {
        return Err(bad(format!("line {} is blank (class indices would shift)", i + 1)));
    }
    if names.is_empty() {
        return Err(bad("no class names".into()));
    }
    if names.len() > 255 {
        return Err(bad(format!("{} classes; at most 255 fit in 8-bit masks (255 = ignore)", names.len())));
    }
    Ok(names)
}

const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];

fn be32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// Width, height, bit depth and colour type from a PNG's IHDR.
fn png_header(bytes: &[u8]) -> Option<(u32, u32, u8, u8)> {
    (bytes.len() >= 33 && bytes[..8] == PNG_SIGNATURE && &bytes[12..16] == b"IHDR")
        .then(|| (be32(bytes, 16), be32(bytes, 20), bytes[24], bytes[25]))
}

/// The PLTE chunk's colours.
fn png_palette(bytes: &[u8]) -> Option<Vec<[u8; 3]>> {
    let mut i = 8;
    while i + 8 <= bytes.len() {
        let len = be32(bytes, i) as usize;
        let kind = &bytes[i + 4..i + 8];
        let data = bytes.get(i + 8..i + 8 + len)?;
        if kind == b"PLTE" {
            return Some(data.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect());
        }
        if kind == b"IDAT" || kind == b"IEND" {
            return None;
        }
        i += 12 + len;
    }
    None
}

/// An image's width and height from its header, read by `image` (the format is sniffed from
/// the bytes, not the extension). The pixel data is not decoded.
pub fn image_dimensions(path: &Path) -> Result<(u32, u32), VocError> {
    let reader = image::ImageReader::open(path).map_err(io_err(path))?.with_guessed_format().map_err(io_err(path))?;
    reader.into_dimensions().map_err(|_| VocError::BadFile { path: path.to_path_buf(), reason: "not a readable PNG or JPEG image".into() })
}

/// A decoded class-index mask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mask {
    pub width: u32,
    pub height: u32,
    /// Row-major class indices (255 = ignore).
    pub data: Vec<u8>,
}

/// Reads a mask PNG as class indices: 8-bit (or 1/2/4-bit) grayscale values, or palette
/// indices of a palette PNG (as VOC's `SegmentationClass` files are; a pixel maps to the first
/// palette entry of its colour). Other PNG kinds are rejected.
pub fn read_mask(path: &Path) -> Result<Mask, VocError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    let bad = |reason: String| VocError::BadMask { path: path.to_path_buf(), reason };
    let Some((width, height, depth, colour_type)) = png_header(&bytes) else {
        return Err(bad("not a PNG file (masks must be PNG)".into()));
    };
    let decode = || {
        image::load_from_memory_with_format(&bytes, image::ImageFormat::Png).map_err(|source| VocError::Png {
            path: path.to_path_buf(),
            action: "decode",
            source,
        })
    };
    let data = match colour_type {
        0 => {
            if depth == 16 {
                return Err(bad("16-bit grayscale; class masks must be 8-bit".into()));
            }
            let raw = decode()?.into_luma8().into_raw();
            // The decoder scales 1/2/4-bit grey to 0..=255; undo that.
            let scale = 255 / ((1u16 << depth.min(8)) - 1) as u8;
            if scale > 1 {
                raw.into_iter().map(|v| v / scale).collect()
            } else {
                raw
            }
        }
        3 => {
            let palette = png_palette(&bytes).ok_or_else(|| bad("palette PNG without a PLTE chunk".into()))?;
            let mut lookup: HashMap<[u8; 3], u8> = HashMap::new();
            for (i, c) in palette.iter().enumerate().take(256) {
                lookup.entry(*c).or_insert(i as u8);
            }
            let rgb = decode()?.into_rgb8();
            let mut out = Vec::with_capacity(rgb.len() / 3);
            for px in rgb.pixels() {
                match lookup.get(&px.0) {
                    Some(&i) => out.push(i),
                    None => return Err(bad(format!("colour {:?} not in the palette", px.0))),
                }
            }
            out
        }
        2 | 6 => return Err(bad("RGB(A) PNG; class masks must be 8-bit grayscale or palette PNGs".into())),
        4 => return Err(bad("grayscale+alpha PNG; class masks must be 8-bit grayscale or palette PNGs".into())),
        t => return Err(bad(format!("unknown PNG colour type {t}"))),
    };
    Ok(Mask { width, height, data })
}

/// One labelled image of a [`VocDataset`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VocSample {
    pub id: String,
    pub image_path: PathBuf,
    pub mask_path: PathBuf,
    pub width: u32,
    pub height: u32,
    /// Row-major class indices, `width * height` long; values `< num_classes` or 255 (ignore).
    pub mask: Vec<u8>,
}

/// A VOC-layout folder: `classes.txt`, `JPEGImages/`, `SegmentationClass/`, and the ids of one
/// split (or of every mask).
#[derive(Clone, Debug)]
pub struct VocDataset {
    root: PathBuf,
    classes: Vec<String>,
    ids: Vec<String>,
}

impl VocDataset {
    /// Opens `root` with the ids of `ImageSets/Segmentation/<split>.txt` (blank lines skipped;
    /// only the first whitespace-separated field of a line is used).
    pub fn open(root: impl AsRef<Path>, split: &str) -> Result<Self, VocError> {
        let root = root.as_ref().to_path_buf();
        let classes = read_class_list(&root.join("classes.txt"))?;
        let list = root.join("ImageSets/Segmentation").join(format!("{split}.txt"));
        let text = fs::read_to_string(&list).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => VocError::Missing { what: "split list", path: list.clone() },
            _ => VocError::Io { path: list.clone(), source },
        })?;
        let ids = text.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect();
        Ok(Self { root, classes, ids })
    }

    /// Opens `root` with every `SegmentationClass/*.png` as an id (sorted), for folders without
    /// `ImageSets`.
    pub fn open_all(root: impl AsRef<Path>) -> Result<Self, VocError> {
        let root = root.as_ref().to_path_buf();
        let classes = read_class_list(&root.join("classes.txt"))?;
        let dir = root.join("SegmentationClass");
        if !dir.is_dir() {
            return Err(VocError::Missing { what: "mask folder", path: dir });
        }
        let mut ids = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let path = entry.map_err(io_err(&dir))?.path();
            if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")) {
                if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                    ids.push(stem.to_string());
                }
            }
        }
        ids.sort();
        Ok(Self { root, classes, ids })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    /// Class names by index (from `classes.txt`).
    pub fn classes(&self) -> &[String] {
        &self.classes
    }
    pub fn ids(&self) -> &[String] {
        &self.ids
    }
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// `JPEGImages/<id>.jpg`, `.jpeg` or `.png`, whichever exists (in that order).
    pub fn image_path(&self, id: &str) -> Result<PathBuf, VocError> {
        let dir = self.root.join("JPEGImages");
        ["jpg", "jpeg", "png", "JPG", "JPEG", "PNG"]
            .iter()
            .map(|ext| dir.join(format!("{id}.{ext}")))
            .find(|p| p.is_file())
            .ok_or_else(|| VocError::MissingImage { id: id.to_string(), dir })
    }

    /// `SegmentationClass/<id>.png` (may not exist).
    pub fn mask_path(&self, id: &str) -> PathBuf {
        self.root.join("SegmentationClass").join(format!("{id}.png"))
    }

    /// Finds the image, reads the mask, and checks sizes and mask values.
    pub fn load(&self, id: &str) -> Result<VocSample, VocError> {
        let image_path = self.image_path(id)?;
        let mask_path = self.mask_path(id);
        if !mask_path.is_file() {
            return Err(VocError::MissingMask { id: id.to_string(), path: mask_path });
        }
        let image_size = image_dimensions(&image_path)?;
        let mask = read_mask(&mask_path)?;
        if image_size != (mask.width, mask.height) {
            return Err(VocError::SizeMismatch {
                id: id.to_string(),
                image_path,
                image_size,
                mask_path,
                mask_size: (mask.width, mask.height),
            });
        }
        let n = self.classes.len();
        if let Some(i) = mask.data.iter().position(|&v| v as usize >= n && v != IGNORE_INDEX) {
            return Err(VocError::BadMask {
                path: mask_path,
                reason: format!(
                    "value {} at pixel ({}, {}) but classes.txt lists {n} classes (255 = ignore)",
                    mask.data[i],
                    i % mask.width as usize,
                    i / mask.width as usize
                ),
            });
        }
        Ok(VocSample { id: id.to_string(), image_path, mask_path, width: mask.width, height: mask.height, mask: mask.data })
    }

    /// Every sample in id order.
    pub fn iter(&self) -> impl Iterator<Item = Result<VocSample, VocError>> + '_ {
        self.ids.iter().map(|id| self.load(id))
    }

    /// `(image path relative to the root, caption)` pairs from `captions.jsonl` for this
    /// dataset's ids; empty if the file does not exist.
    pub fn captions(&self) -> Result<Vec<(String, String)>, VocError> {
        let path = self.root.join("captions.jsonl");
        if !path.exists() {
            return Ok(Vec::new());
        }
        let text = fs::read_to_string(&path).map_err(io_err(&path))?;
        let ids: std::collections::HashSet<&str> = self.ids.iter().map(String::as_str).collect();
        let mut out = Vec::new();
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let c: CaptionLine =
                serde_json::from_str(line).map_err(|e| VocError::BadFile { path: path.clone(), reason: format!("line {}: {e}", n + 1) })?;
            let stem = Path::new(&c.image).file_stem().and_then(|s| s.to_str()).unwrap_or("");
            if ids.contains(stem) {
                out.push((c.image, c.caption));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
