//! `weights/manifest.json`: which weights files a folder holds, with each file's SHA-256, size,
//! config, training steps, tokenizer, and the protocol it runs with (`Protocol`: threshold,
//! windows, scales, snapping, refinement, background prompts). `segclip export` writes it; the
//! CLI and the page read it to find the bundled model (the first int8 entry, else the first) and
//! its settings. Pure serde, so the page uses the same code.

use serde::{Deserialize, Serialize};

use super::protocol::{Kind, Protocol};
use super::PipelineError;
use crate::model::SegClipConfig;

pub const FORMAT_NAME: &str = "segclip-weights-manifest";
/// Version 2 stores each model's whole `Protocol`; version 1 stored five of its settings as
/// fields of their own.
pub const FORMAT_VERSION: u32 = 2;

/// The whole manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub models: Vec<ManifestEntry>,
}

/// One weights file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// The model's own protocol, chosen with it (its model card says how); settings it omits
    /// take SegCLIP's defaults.
    pub protocol: Protocol,
}

impl Default for Manifest {
    fn default() -> Self {
        Self { format: FORMAT_NAME.into(), version: FORMAT_VERSION, models: Vec::new() }
    }
}

impl Manifest {
    /// Parses a manifest; errors name the file (`where_`), the model and the field at fault.
    pub fn parse(text: &str, where_: &str) -> Result<Self, PipelineError> {
        let bad = |message: String| PipelineError::Manifest { file: where_.to_string(), message };
        // The format and version first, so an old or foreign file is named as such.
        #[derive(Deserialize)]
        struct Head {
            format: String,
            version: u32,
        }
        let head: Head = serde_json::from_str(text).map_err(|e| bad(format!("not a weights manifest: {e}")))?;
        if head.format != FORMAT_NAME {
            return Err(bad(format!("format is '{}', expected '{FORMAT_NAME}'", head.format)));
        }
        if head.version != FORMAT_VERSION {
            return Err(bad(format!(
                "manifest version {} is not supported (expected {FORMAT_VERSION}); `segclip export` writes the current one",
                head.version
            )));
        }
        let m: Manifest = serde_json::from_str(text).map_err(|e| bad(format!("not a weights manifest: {e}")))?;
        for e in &m.models {
            e.protocol.check(Kind::Groups, e.config.image_size).map_err(|err| bad(format!("model '{}': protocol: {err}", e.file)))?;
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
    use crate::pipeline::refine::RefineParams;

    fn entry(file: &str, dtype: &str) -> ManifestEntry {
        ManifestEntry {
            file: file.into(),
            dtype: dtype.into(),
            size: 1,
            sha256: "00".into(),
            config: SegClipConfig::tiny(),
            trained_steps: 3,
            tokenizer_sha256: "11".into(),
            protocol: Protocol { bg_thresh: 0.25, ..Protocol::default() },
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
        assert_eq!(back.entry("a-int8.safetensors").unwrap().protocol.bg_thresh, 0.25);
        let size = SegClipConfig::tiny().image_size;
        let scales = Protocol { short_side: size * 2, stride: size / 2, extra_short_sides: vec![size, size * 3], refine: Some(RefineParams { iterations: 10 }), ..Protocol::default() };
        m.upsert(ManifestEntry { protocol: scales.clone(), ..entry("w.safetensors", "int8") });
        let back = Manifest::parse(&m.to_json(), "manifest.json").unwrap();
        assert_eq!(back.entry("w.safetensors").unwrap().protocol, scales);
    }

    #[test]
    fn bad_protocols_are_named() {
        let size = SegClipConfig::tiny().image_size;
        for (p, want) in [
            (Protocol { stride: size + 1, ..Protocol::default() }, "--stride".to_string()),
            (Protocol { short_side: size * 2, extra_short_sides: vec![size - 1], ..Protocol::default() }, format!("{} is below the window side {size} px", size - 1)),
            (Protocol { short_side: size * 2, extra_short_sides: vec![size * 3, size * 2], ..Protocol::default() }, format!("{} is the short side itself", size * 2)),
            (Protocol { refine: Some(RefineParams { iterations: 0 }), ..Protocol::default() }, "refine iterations is 0".to_string()),
        ] {
            let mut m = Manifest::default();
            m.upsert(ManifestEntry { protocol: p, ..entry("w.safetensors", "int8") });
            let e = Manifest::parse(&m.to_json(), "weights/manifest.json").unwrap_err().to_string();
            assert!(e.contains("weights/manifest.json") && e.contains("'w.safetensors'") && e.contains(want.as_str()), "{e}");
        }
    }

    #[test]
    fn bad_manifests_are_named() {
        let e = Manifest::parse(r#"{"format": "other", "version": 2, "models": []}"#, "w/manifest.json").unwrap_err().to_string();
        assert!(e.contains("w/manifest.json") && e.contains("other"), "{e}");
        let e = Manifest::parse(r#"{"format": "segclip-weights-manifest", "version": 1, "models": []}"#, "m").unwrap_err().to_string();
        assert!(e.contains("version 1") && e.contains("segclip export"), "{e}");
        let e = Manifest::parse(r#"{"format": "segclip-weights-manifest", "version": 2, "models": [{"file": "x"}]}"#, "m").unwrap_err().to_string();
        assert!(e.contains("dtype"), "{e}");
        let mut m = Manifest::default();
        m.upsert(entry("x.safetensors", "int8"));
        let mut v = serde_json::to_value(&m).unwrap();
        v["models"][0]["protocol"]["flipp"] = serde_json::json!(true);
        let e = Manifest::parse(&v.to_string(), "m").unwrap_err().to_string();
        assert!(e.contains("flipp"), "{e}");
    }

    #[test]
    fn the_committed_manifest_parses() {
        let text = include_str!("../../weights/manifest.json");
        let m = Manifest::parse(text, "weights/manifest.json").unwrap();
        assert!(m.default_model().is_some());
    }
}
