//! The emoji glyph atlas: one RGBA PNG of 64 px cells plus a JSON index naming each cell's art
//! style, class and code point (`static/emoji/atlas.{png,json}`, made by
//! `scripts/make-emoji-atlas` from the npm emoji packages named in `static/emoji/LICENSES.md`).
//! The bundled atlas is compiled into the crate, so the generator needs no file or network
//! access and draws the same scenes natively and in wasm32.

use std::sync::OnceLock;

use serde::Deserialize;
use sha2::Digest;

use super::vocab::CLASSES;

/// The bundled atlas, as committed.
pub const BUNDLED_PNG: &[u8] = include_bytes!("../../../static/emoji/atlas.png");
pub const BUNDLED_JSON: &str = include_str!("../../../static/emoji/atlas.json");

/// The index file's fields (see `scripts/emoji/make_atlas.py`).
#[derive(Clone, Debug, Deserialize)]
struct Index {
    format: String,
    version: u32,
    cell: usize,
    columns: usize,
    png_sha256: String,
    styles: Vec<StyleInfo>,
    glyphs: Vec<GlyphEntry>,
}

/// One art style of the atlas: which package it came from, under which licence.
#[derive(Clone, Debug, Deserialize)]
pub struct StyleInfo {
    pub name: String,
    pub package: String,
    #[serde(default)]
    pub art: String,
    pub license: String,
}

#[derive(Clone, Debug, Deserialize)]
struct GlyphEntry {
    style: String,
    class: String,
    codepoint: String,
    cell: usize,
}

/// One glyph: premultiplied RGBA as f32 (`[r*a, g*a, b*a, a]`, 0..1), `cell * cell` texels.
/// Premultiplied so that bilinear sampling across the glyph's edge does not pull in the colour
/// of fully transparent texels (dark fringes).
#[derive(Clone, Debug)]
pub struct Glyph {
    pub style: String,
    /// Index into [`CLASSES`] (1..=19).
    pub class: u8,
    pub codepoint: String,
    pub texels: Vec<[f32; 4]>,
    /// Mean straight colour of the opaque part (0..255), kept clear of by backgrounds.
    pub mean_rgb: [f32; 3],
    /// Share of the cell with alpha >= 0.5.
    pub coverage: f32,
}

/// Why an emoji atlas cannot be used; each names the file, field or glyph at fault.
#[derive(Debug, thiserror::Error)]
pub enum AtlasError {
    #[error("emoji atlas index: {0}")]
    Index(serde_json::Error),
    #[error("emoji atlas index: format is '{found}', expected 'segclip-emoji-atlas'")]
    Format { found: String },
    #[error("emoji atlas index: version {found} is not supported (expected 1)")]
    Version { found: u32 },
    #[error("emoji atlas: the PNG's SHA-256 is {found}, the index expects {expected}")]
    Checksum { found: String, expected: String },
    #[error("emoji atlas index: cell and columns must be positive (cell {cell}, columns {columns})")]
    EmptyCells { cell: usize, columns: usize },
    #[error("emoji atlas PNG: {0}")]
    Png(image::ImageError),
    /// Glyph `index` of the index's `glyphs`.
    #[error("emoji atlas index: glyphs[{index}] {message}")]
    Glyph { index: usize, message: String },
    #[error("emoji atlas: style '{style}' has no glyph of class '{class}'")]
    MissingGlyph { style: String, class: String },
    /// An atlas file (native `Atlas::from_files`).
    #[error("{}: {source}", path.display())]
    Io { path: std::path::PathBuf, source: std::io::Error },
    /// The atlas in the index file `path` (native `Atlas::from_files`).
    #[error("{}: {source}", path.display())]
    File { path: std::path::PathBuf, source: Box<AtlasError> },
}

/// A loaded atlas.
#[derive(Clone, Debug)]
pub struct Atlas {
    pub cell: usize,
    pub styles: Vec<StyleInfo>,
    pub glyphs: Vec<Glyph>,
}

impl Atlas {
    /// The committed atlas (decoded once per process).
    pub fn bundled() -> &'static Atlas {
        static ATLAS: OnceLock<Atlas> = OnceLock::new();
        ATLAS.get_or_init(|| Atlas::from_bytes(BUNDLED_PNG, BUNDLED_JSON).expect("the committed emoji atlas is valid (tests check it)"))
    }

    /// Parses an atlas from its PNG and JSON index. Errors name the field or glyph at fault.
    pub fn from_bytes(png: &[u8], json: &str) -> Result<Atlas, AtlasError> {
        let index: Index = serde_json::from_str(json).map_err(AtlasError::Index)?;
        if index.format != "segclip-emoji-atlas" {
            return Err(AtlasError::Format { found: index.format });
        }
        if index.version != 1 {
            return Err(AtlasError::Version { found: index.version });
        }
        let sha: String = sha2::Sha256::digest(png).iter().map(|b| format!("{b:02x}")).collect();
        if !sha.eq_ignore_ascii_case(&index.png_sha256) {
            return Err(AtlasError::Checksum { found: sha, expected: index.png_sha256 });
        }
        if index.cell == 0 || index.columns == 0 {
            return Err(AtlasError::EmptyCells { cell: index.cell, columns: index.columns });
        }
        let image = image::load_from_memory_with_format(png, image::ImageFormat::Png).map_err(AtlasError::Png)?.to_rgba8();
        let (w, h) = (image.width() as usize, image.height() as usize);
        let c = index.cell;
        let mut glyphs = Vec::with_capacity(index.glyphs.len());
        for (i, g) in index.glyphs.iter().enumerate() {
            let glyph = |message: String| AtlasError::Glyph { index: i, message };
            let class = CLASSES.iter().position(|&n| n == g.class).filter(|&k| k > 0).ok_or_else(|| {
                glyph(format!("has class '{}', which is not one of the {} classes", g.class, CLASSES.len() - 1))
            })? as u8;
            if !index.styles.iter().any(|s| s.name == g.style) {
                return Err(glyph(format!("has style '{}', which \"styles\" lacks", g.style)));
            }
            let (x0, y0) = ((g.cell % index.columns) * c, (g.cell / index.columns) * c);
            if x0 + c > w || y0 + c > h {
                return Err(glyph(format!("(cell {}) lies outside the {w}x{h} PNG", g.cell)));
            }
            let mut texels = Vec::with_capacity(c * c);
            let (mut sum, mut weight, mut opaque) = ([0f32; 3], 0f32, 0usize);
            for y in 0..c {
                for x in 0..c {
                    let p = image.get_pixel((x0 + x) as u32, (y0 + y) as u32).0;
                    let a = p[3] as f32 / 255.0;
                    let t = [p[0] as f32 / 255.0 * a, p[1] as f32 / 255.0 * a, p[2] as f32 / 255.0 * a, a];
                    for k in 0..3 {
                        sum[k] += p[k] as f32 * a;
                    }
                    weight += a;
                    opaque += (p[3] >= 128) as usize;
                    texels.push(t);
                }
            }
            if opaque == 0 {
                return Err(glyph(format!("({} {} {}) is empty", g.style, g.class, g.codepoint)));
            }
            glyphs.push(Glyph {
                style: g.style.clone(),
                class,
                codepoint: g.codepoint.clone(),
                texels,
                mean_rgb: sum.map(|s| s / weight),
                coverage: opaque as f32 / (c * c) as f32,
            });
        }
        for style in &index.styles {
            for (k, name) in CLASSES.iter().enumerate().skip(1) {
                if !glyphs.iter().any(|g| g.style == style.name && g.class as usize == k) {
                    return Err(AtlasError::MissingGlyph { style: style.name.clone(), class: name.to_string() });
                }
            }
        }
        Ok(Atlas { cell: c, styles: index.styles, glyphs })
    }

    /// Loads an atlas from `INDEX.json` with its PNG beside it (same stem, `.png`): how a new art
    /// style is evaluated without rebuilding the crate.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_files(json_path: &std::path::Path) -> Result<Atlas, AtlasError> {
        let io = |path: &std::path::Path| {
            let path = path.to_path_buf();
            move |source| AtlasError::Io { path, source }
        };
        let json = std::fs::read_to_string(json_path).map_err(io(json_path))?;
        let png_path = json_path.with_extension("png");
        let png = std::fs::read(&png_path).map_err(io(&png_path))?;
        Atlas::from_bytes(&png, &json).map_err(|e| AtlasError::File { path: json_path.to_path_buf(), source: Box::new(e) })
    }

    /// Names of the styles in the atlas.
    pub fn style_names(&self) -> Vec<&str> {
        self.styles.iter().map(|s| s.name.as_str()).collect()
    }

    /// Indices of the glyphs of `class` in any of `styles` (all styles when empty).
    pub fn glyphs_of(&self, class: u8, styles: &[String]) -> Vec<usize> {
        (0..self.glyphs.len())
            .filter(|&i| self.glyphs[i].class == class && (styles.is_empty() || styles.iter().any(|s| *s == self.glyphs[i].style)))
            .collect()
    }

    /// Bilinear sample of glyph `g` at texel coordinates (`u`, `v`) (texel centres at +0.5),
    /// premultiplied; transparent outside the cell.
    pub fn sample(&self, g: usize, u: f32, v: f32) -> [f32; 4] {
        let c = self.cell as i32;
        let texels = &self.glyphs[g].texels;
        let (fx, fy) = (u - 0.5, v - 0.5);
        let (x0, y0) = (fx.floor(), fy.floor());
        let (tx, ty) = (fx - x0, fy - y0);
        let (x0, y0) = (x0 as i32, y0 as i32);
        let at = |x: i32, y: i32| -> [f32; 4] {
            if x < 0 || y < 0 || x >= c || y >= c {
                [0.0; 4]
            } else {
                texels[(y * c + x) as usize]
            }
        };
        let (a, b, d, e) = (at(x0, y0), at(x0 + 1, y0), at(x0, y0 + 1), at(x0 + 1, y0 + 1));
        let mut out = [0f32; 4];
        for k in 0..4 {
            let top = a[k] + (b[k] - a[k]) * tx;
            let bottom = d[k] + (e[k] - d[k]) * tx;
            out[k] = top + (bottom - top) * ty;
        }
        out
    }
}
