//! The models the page and the CLI offer (weights/presets.json): where each comes from, how it
//! segments, what it knows, and what it costs. Data, not code: a new model is one entry.

use serde::{Deserialize, Serialize};

use crate::model::dense::DenseMethod;

pub const PRESETS_FORMAT: &str = "segclip-presets";
pub const PRESETS_VERSION: u32 = 1;

/// The default model hub; `hub_url` takes another base (a mirror, a local test server).
pub const DEFAULT_HUB: &str = "https://huggingface.co";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Presets {
    pub format: String,
    pub version: u32,
    /// The hub base URL the entries' files are under.
    pub hub: String,
    pub presets: Vec<Preset>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    pub id: String,
    pub name: String,
    /// `segclip`, `naclip` or `clearclip`.
    pub method: String,
    pub source: Source,
    /// What it knows, in one line.
    pub knows: String,
    /// What it does not, in one line.
    pub limits: String,
    pub licence: String,
    /// The expected download in bytes (the hub's file size where pinned).
    pub download_bytes: u64,
    /// The page's wasm memory on its CPU path with it loaded and a photo segmented, in bytes
    /// (measured by scripts/bench-load; README, "Segment your own photos").
    pub memory_bytes: u64,
    /// Head counts (image tower, text tower) where a tower's width is not 64 per head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heads: Option<(usize, usize)>,
}

/// The layout of a hub file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// Hugging Face `CLIPModel` safetensors.
    Huggingface,
    /// OpenAI key names in safetensors (open_clip, timm).
    Openai,
    /// A torch zip-pickle (the SegCLIP release): converted natively only.
    TorchZip,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Source {
    /// Shipped with the page (weights/).
    Bundled { file: String },
    /// A file on the model hub: `{hub}/{repo}/resolve/{revision}/{file}`.
    Hub { repo: String, revision: String, file: String, bytes: u64, sha256: String, layout: Layout },
    /// A download without CORS headers (a GitHub release): the CLI fetches and converts it; the
    /// page takes the converted file (`converted_file`) by drop or from a mirror.
    Release { url: String, layout: Layout, converted_file: String },
}

/// What is wrong with a presets file or a preset asked for.
#[derive(Debug, thiserror::Error)]
pub enum PresetError {
    /// Not a presets file of this build (`what` names it).
    #[error("{what}: {message}")]
    File { what: String, message: String },
    /// One preset's field.
    #[error("{what}: presets[{index}] ('{id}') field '{field}': {message}")]
    Field { what: String, index: usize, id: String, field: &'static str, message: String },
    #[error("no preset '{id}': the presets are {known}")]
    Unknown { id: String, known: String },
}

impl Presets {
    /// Parses and checks a presets file; `what` names it in errors.
    pub fn parse(text: &str, what: &str) -> Result<Self, PresetError> {
        let file = |message: String| PresetError::File { what: what.to_string(), message };
        let p: Presets = serde_json::from_str(text).map_err(|e| file(e.to_string()))?;
        if p.format != PRESETS_FORMAT {
            return Err(file(format!("field 'format' is '{}', expected '{PRESETS_FORMAT}'", p.format)));
        }
        if p.version != PRESETS_VERSION {
            return Err(file(format!("field 'version' is {}, this build reads {PRESETS_VERSION}", p.version)));
        }
        let mut seen = std::collections::HashSet::new();
        for (index, preset) in p.presets.iter().enumerate() {
            let bad = |field: &'static str, message: String| PresetError::Field { what: what.to_string(), index, id: preset.id.clone(), field, message };
            if preset.id.is_empty() || !preset.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(bad("id", "expected letters, digits, '-' or '_'".into()));
            }
            if !seen.insert(preset.id.clone()) {
                return Err(bad("id", "given twice".into()));
            }
            preset.dense_method().map_err(|e| bad("method", e.to_string()))?;
            if let Source::Hub { sha256, repo, .. } = &preset.source {
                if sha256.len() != 64 || !sha256.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(bad("source.sha256", "expected 64 hex digits".into()));
                }
                if repo.split('/').count() != 2 {
                    return Err(bad("source.repo", format!("expected owner/name, found '{repo}'")));
                }
            }
        }
        Ok(p)
    }

    /// The presets this build ships with.
    pub fn bundled() -> Self {
        Self::parse(include_str!("../../weights/presets.json"), "weights/presets.json").expect("the shipped presets parse")
    }

    pub fn get(&self, id: &str) -> Result<&Preset, PresetError> {
        self.presets.iter().find(|p| p.id == id).ok_or_else(|| {
            let ids: Vec<&str> = self.presets.iter().map(|p| p.id.as_str()).collect();
            PresetError::Unknown { id: id.to_string(), known: ids.join(", ") }
        })
    }
}

impl Preset {
    /// The dense method of a plain CLIP preset; `None` for a SegCLIP model.
    pub fn dense_method(&self) -> Result<Option<DenseMethod>, crate::choice::UnknownChoice> {
        match self.method.as_str() {
            "segclip" => Ok(None),
            other => other.parse().map(Some),
        }
    }

    /// The file's URL under `hub` (the presets' own hub unless a mirror is given).
    pub fn url(&self, hub: &str) -> Option<String> {
        match &self.source {
            Source::Hub { repo, revision, file, .. } => Some(hub_url(hub, repo, revision, file)),
            Source::Release { url, .. } => Some(url.clone()),
            Source::Bundled { .. } => None,
        }
    }

    /// Whether a page can download it itself (the hub sends CORS headers; a GitHub release
    /// does not).
    pub fn page_can_fetch(&self) -> bool {
        matches!(self.source, Source::Hub { .. })
    }

    /// The name of the converted int8 file (cache key, CLI output).
    pub fn converted_name(&self) -> String {
        match &self.source {
            Source::Bundled { file } => file.clone(),
            Source::Release { converted_file, .. } => converted_file.clone(),
            Source::Hub { .. } => format!("{}-int8.safetensors", self.id),
        }
    }
}

/// `{hub}/{repo}/resolve/{revision}/{file}`, the hub's download layout.
pub fn hub_url(hub: &str, repo: &str, revision: &str, file: &str) -> String {
    format!("{}/{repo}/resolve/{revision}/{file}", hub.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_presets_parse_and_name_the_hub_files() {
        let p = Presets::bundled();
        let tiny = p.get("tinyclip-8m").unwrap();
        assert_eq!(tiny.dense_method().unwrap(), Some(DenseMethod::Naclip));
        assert_eq!(
            tiny.url("http://127.0.0.1:9/").unwrap(),
            "http://127.0.0.1:9/wkcn/TinyCLIP-ViT-8M-16-Text-3M-YFCC15M/resolve/a2a8c6eaa2549ad66eb7c31b85022bf58273a26c/model.safetensors"
        );
        assert!(tiny.page_can_fetch());
        assert!(!p.get("segclip-release").unwrap().page_can_fetch());
        assert_eq!(p.get("emoji").unwrap().dense_method().unwrap(), None);
        assert!(p.get("nope").unwrap_err().to_string().contains("tinyclip-8m"));
    }

    #[test]
    fn bad_entries_are_named_by_their_field() {
        let text = include_str!("../../weights/presets.json").replace("\"naclip\"", "\"sclip\"");
        let e = Presets::parse(&text, "p.json").unwrap_err().to_string();
        assert!(e.contains("field 'method'") && e.contains("sclip"), "{e}");
        let text = include_str!("../../weights/presets.json").replace("9339ee3d", "xyz");
        let e = Presets::parse(&text, "p.json").unwrap_err().to_string();
        assert!(e.contains("'tinyclip-8m'") && e.contains("source.sha256"), "{e}");
    }
}
