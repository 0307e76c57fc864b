//! `weights/manifest.json`: which weights files a folder holds, with each file's SHA-256, size,
//! config, training steps, tokenizer, default background threshold and sliding-window protocol.
//! `segclip export` writes it; the CLI and the page read it to find the bundled model (the first
//! int8 entry, else the first), its threshold and its windows. Pure serde, so the page uses the
//! same code.

use serde::{Deserialize, Serialize};

use crate::model::SegClipConfig;

pub const FORMAT_NAME: &str = "segclip-weights-manifest";
pub const FORMAT_VERSION: u32 = 1;

/// The whole manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub models: Vec<ManifestEntry>,
}

/// One weights file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// File name, relative to the manifest's folder.
    pub file: String,
    /// `f32`, `f16` or `int8`.
    pub dtype: String,
    pub size: u64,
    pub sha256: String,
    pub config: SegClipConfig,
    pub trained_steps: u64,
    pub tokenizer_sha256: String,
    /// The model's own background threshold (its model card says how it was chosen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bg_thresh: Option<f64>,
    /// The model's own sliding-window protocol, chosen with its threshold (its model card says
    /// how): the image's short side is rescaled to `short_side` pixels and windows of the
    /// model's input size are taken every `stride` pixels (src/pipeline/windows.rs). A model
    /// trained on small scenes names more of an object seen larger, over more patches, than at
    /// its input size. Absent: the image at the input size, windows side by side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows: Option<WindowProtocol>,
    /// The model's own superpixel snapping (src/pipeline/mod.rs `SegmentOptions::superpixels`),
    /// chosen with its threshold and windows. Absent: label edges follow the patch grid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superpixels: Option<crate::pipeline::superpixels::FelzenszwalbParams>,
    /// The model's own mirrored-image averaging (src/pipeline/mod.rs `SegmentOptions::flip`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub flip: bool,
    /// The model's own refinement of the score map (src/pipeline/mod.rs `SegmentOptions::refine`).
    /// Absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refine: Option<crate::pipeline::refine::RefineParams>,
}

/// `ManifestEntry::windows`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowProtocol {
    pub short_side: usize,
    pub stride: usize,
    /// More short sides the image is also rescaled to, each through the same windows, their
    /// score maps averaged with the `short_side` one (src/pipeline/mod.rs
    /// `SegmentOptions::extra_short_sides`). Absent: the one scale.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_short_sides: Vec<usize>,
}

impl WindowProtocol {
    /// Errors name the field and what it must be; `input_size` is the model's window side.
    pub fn validate(&self, input_size: usize) -> Result<(), String> {
        if self.short_side < input_size {
            return Err(format!("windows.short_side is {}, below the model's input size {input_size}", self.short_side));
        }
        if self.stride == 0 || self.stride > input_size {
            return Err(format!("windows.stride is {}, expected 1..={input_size} (the model's input size)", self.stride));
        }
        crate::pipeline::windows::validate_extra_short_sides(&self.extra_short_sides, self.short_side, input_size)
            .map_err(|e| format!("windows.extra_short_sides: {e}"))
    }
}

impl Default for Manifest {
    fn default() -> Self {
        Self { format: FORMAT_NAME.into(), version: FORMAT_VERSION, models: Vec::new() }
    }
}

impl Manifest {
    /// Parses a manifest; errors name the field at fault (`where_` names the file).
    pub fn parse(text: &str, where_: &str) -> Result<Self, String> {
        let m: Manifest = serde_json::from_str(text).map_err(|e| format!("{where_}: not a weights manifest: {e}"))?;
        if m.format != FORMAT_NAME {
            return Err(format!("{where_}: format is '{}', expected '{FORMAT_NAME}'", m.format));
        }
        if m.version != FORMAT_VERSION {
            return Err(format!("{where_}: manifest version {} is not supported (expected {FORMAT_VERSION})", m.version));
        }
        for e in &m.models {
            if let Some(w) = &e.windows {
                w.validate(e.config.image_size).map_err(|msg| format!("{where_}: model '{}': {msg}", e.file))?;
            }
            if let Some(p) = &e.superpixels {
                p.validate().map_err(|msg| format!("{where_}: model '{}': superpixels: {msg}", e.file))?;
            }
            if let Some(r) = &e.refine {
                r.validate().map_err(|msg| format!("{where_}: model '{}': {msg}", e.file))?;
            }
        }
        Ok(m)
    }

    /// The model a front end loads by default: the first int8 entry (the page's download size
    /// matters most), else the first.
    pub fn default_model(&self) -> Option<&ManifestEntry> {
        self.models.iter().find(|e| e.dtype == "int8").or(self.models.first())
    }

    /// The entry of `file`, if listed.
    pub fn entry(&self, file: &str) -> Option<&ManifestEntry> {
        self.models.iter().find(|e| e.file == file)
    }

    /// Adds `entry`, replacing the one for the same file.
    pub fn upsert(&mut self, entry: ManifestEntry) {
        self.models.retain(|e| e.file != entry.file);
        self.models.push(entry);
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("manifest serialises") + "\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(file: &str, dtype: &str) -> ManifestEntry {
        ManifestEntry {
            file: file.into(),
            dtype: dtype.into(),
            size: 1,
            sha256: "00".into(),
            config: SegClipConfig::tiny(),
            trained_steps: 3,
            tokenizer_sha256: "11".into(),
            bg_thresh: Some(0.25),
            windows: None,
            superpixels: None,
            flip: false,
            refine: None,
        }
    }

    #[test]
    fn default_model_upsert_and_round_trip() {
        let mut m = Manifest::default();
        assert!(m.default_model().is_none());
        m.upsert(entry("a-f32.safetensors", "f32"));
        assert_eq!(m.default_model().unwrap().file, "a-f32.safetensors");
        m.upsert(entry("a-int8.safetensors", "int8"));
        assert_eq!(m.default_model().unwrap().file, "a-int8.safetensors");
        m.upsert(entry("a-f32.safetensors", "f32"));
        assert_eq!(m.models.len(), 2);
        let back = Manifest::parse(&m.to_json(), "manifest.json").unwrap();
        assert_eq!(back, m);
        assert_eq!(back.entry("a-int8.safetensors").unwrap().bg_thresh, Some(0.25));
        assert!(!m.to_json().contains("windows"), "an entry without windows writes none");
        let size = SegClipConfig::tiny().image_size;
        m.upsert(ManifestEntry { windows: Some(WindowProtocol { short_side: size * 2, stride: size / 2, extra_short_sides: Vec::new() }), ..entry("w.safetensors", "int8") });
        let back = Manifest::parse(&m.to_json(), "manifest.json").unwrap();
        assert_eq!(back.entry("w.safetensors").unwrap().windows, Some(WindowProtocol { short_side: size * 2, stride: size / 2, extra_short_sides: Vec::new() }));
        assert!(!m.to_json().contains("extra_short_sides"), "one scale writes no list");
        let scales = WindowProtocol { short_side: size * 2, stride: size / 2, extra_short_sides: vec![size, size * 3] };
        m.upsert(ManifestEntry { windows: Some(scales.clone()), ..entry("w.safetensors", "int8") });
        let back = Manifest::parse(&m.to_json(), "manifest.json").unwrap();
        assert_eq!(back.entry("w.safetensors").unwrap().windows, Some(scales));
    }

    #[test]
    fn bad_windows_are_named() {
        let size = SegClipConfig::tiny().image_size;
        for (w, want) in [
            (WindowProtocol { short_side: size - 1, stride: 8, extra_short_sides: Vec::new() }, "windows.short_side".to_string()),
            (WindowProtocol { short_side: size * 2, stride: 0, extra_short_sides: Vec::new() }, "windows.stride is 0".to_string()),
            (WindowProtocol { short_side: size * 2, stride: size + 1, extra_short_sides: Vec::new() }, "windows.stride".to_string()),
            (
                WindowProtocol { short_side: size * 2, stride: 8, extra_short_sides: vec![size - 1] },
                format!("windows.extra_short_sides: {} is below the window side {size} px", size - 1),
            ),
            (
                WindowProtocol { short_side: size * 2, stride: 8, extra_short_sides: vec![size * 3, size * 2] },
                format!("windows.extra_short_sides: {} is the short side itself", size * 2),
            ),
            (WindowProtocol { short_side: size * 2, stride: 8, extra_short_sides: vec![size * 3, size * 3] }, "listed twice".to_string()),
        ] {
            let mut m = Manifest::default();
            m.upsert(ManifestEntry { windows: Some(w), ..entry("w.safetensors", "int8") });
            let e = Manifest::parse(&m.to_json(), "weights/manifest.json").unwrap_err();
            assert!(e.contains("weights/manifest.json") && e.contains("'w.safetensors'") && e.contains(want.as_str()), "{e}");
        }
    }

    #[test]
    fn a_refinement_round_trips_and_a_bad_one_is_named() {
        use crate::pipeline::refine::RefineParams;
        let mut m = Manifest::default();
        m.upsert(ManifestEntry { refine: Some(RefineParams { iterations: 10 }), ..entry("r.safetensors", "int8") });
        assert!(m.to_json().contains("\"iterations\": 10"), "{}", m.to_json());
        let back = Manifest::parse(&m.to_json(), "manifest.json").unwrap();
        assert_eq!(back.entry("r.safetensors").unwrap().refine, Some(RefineParams { iterations: 10 }));
        m.upsert(ManifestEntry { refine: Some(RefineParams { iterations: 0 }), ..entry("r.safetensors", "int8") });
        let e = Manifest::parse(&m.to_json(), "weights/manifest.json").unwrap_err();
        assert!(e.contains("weights/manifest.json") && e.contains("'r.safetensors'") && e.contains("refine iterations is 0"), "{e}");
    }

    #[test]
    fn bad_manifests_are_named() {
        let e = Manifest::parse(r#"{"format": "other", "version": 1, "models": []}"#, "w/manifest.json").unwrap_err();
        assert!(e.contains("w/manifest.json") && e.contains("other"), "{e}");
        let e = Manifest::parse(r#"{"format": "segclip-weights-manifest", "version": 9, "models": []}"#, "m").unwrap_err();
        assert!(e.contains("version 9"), "{e}");
        let e = Manifest::parse(r#"{"format": "segclip-weights-manifest", "version": 1, "models": [{"file": "x"}]}"#, "m").unwrap_err();
        assert!(e.contains("dtype"), "{e}");
    }

    #[test]
    fn the_committed_manifest_parses() {
        let text = include_str!("../../weights/manifest.json");
        let m = Manifest::parse(text, "weights/manifest.json").unwrap();
        assert!(m.default_model().is_some());
    }
}
