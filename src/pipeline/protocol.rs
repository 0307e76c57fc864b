//! Every inference setting in one struct, `Protocol`: its defaults per model kind, its checks, its
//! serde form (a model's manifest entry stores it, src/pipeline/manifest.rs), and natively its
//! command-line flags (`segclip segment`, `eval` and `export` flatten it through
//! `src/bin/segclip/main.rs` `ProtocolFlags`, which only overrides the flags given). The page edits
//! the same struct. A new setting is one field here, with its doc comment (the flag's help) and
//! its `arg` attribute.

use serde::{Deserialize, Serialize};

use super::refine::RefineParams;
use super::superpixels::FelzenszwalbParams;
use super::{BadValue, PipelineError};
use crate::labels;
use crate::model::dense::DenseProtocol;

/// What a weights file holds, and so which settings apply to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// SegCLIP: regions from its group module, named by their embeddings.
    Groups,
    /// A plain CLIP run densely (NACLIP or ClearCLIP, src/model/dense.rs): every patch named.
    Dense,
}

impl Kind {
    /// One line a front end shows: what this kind of model does with an image.
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Groups => "SegCLIP: image regions gathered by its group module, each named by its embedding",
            Kind::Dense => "plain CLIP, segmented densely: every patch named by the labels and the background words",
        }
    }
}

/// Settings of a segmentation run. Defaults: `Protocol::default()` is SegCLIP's (the release's
/// published protocol); `Protocol::for_dense` a dense file's own (its header).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::Args))]
pub struct Protocol {
    /// Prompt template; repeat to average several (embeddings normalised, averaged,
    /// renormalised). `{}` is replaced by the label. Default: "a photo of a {}." (a dense file:
    /// its method's 80 ImageNet templates).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long = "template", required = false))]
    pub templates: Vec<String>,
    /// Background threshold. Default: the model's own (its manifest entry; a dense file's
    /// method's VOC setting), else 0.8 (VOC 0.80, PASCAL Context 0.25, COCO-Object 0.65 in the
    /// SegCLIP release).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, required = false))]
    pub bg_thresh: f32,
    /// Background prompts, comma-separated: texts that compete with the labels, a region they win
    /// being background. SegCLIP: per group (src/pipeline/combine.rs `group_scores`), a model
    /// trained to name its backgrounds carries them in its header; a dense file: the words of
    /// its background class, a word typed as a label leaving it. "none" turns them off.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, required = false, value_name = "WORDS", value_parser = parse_words))]
    pub background_prompts: std::vec::Vec<String>,
    /// More background words, comma-separated, added to the model's own (a photo's "carpet,
    /// poster" next to a dense file's 26 words) without typing those again. "none": no more.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long = "add-background", required = false, value_name = "WORDS", value_parser = parse_words))]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub more_background: std::vec::Vec<String>,
    /// Labels kept from the image-level ranking before groups are named (the release: 5).
    /// SegCLIP models only.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, required = false))]
    pub top_k: usize,
    /// Short side of the rescaled image in pixels; 0: the model's input size. NACLIP evaluates
    /// VOC at 336, ClearCLIP at 448. Setting any of --short-side, --window, --stride sets aside
    /// the model's own windows and extra scales.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, required = false))]
    pub short_side: usize,
    /// Long side cap of the rescaled image in pixels.
    #[cfg_attr(not(target_arch = "wasm32"), arg(skip = 2048usize))]
    pub long_cap: usize,
    /// Sliding-window side in pixels of the rescaled image; 0: the model's input size
    /// (ClearCLIP: 448).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, required = false))]
    pub window: usize,
    /// Sliding-window stride in pixels; 0: the window (a dense file's: half of it; ClearCLIP 224).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, required = false))]
    pub stride: usize,
    /// The whole rescaled image in one pass instead of windows, positional embeddings
    /// interpolated to its grid (NACLIP's protocol; `window` and `stride` unused). --window
    /// turns it off.
    #[cfg_attr(not(target_arch = "wasm32"), arg(skip))]
    pub whole_image: bool,
    /// Windows encoded per model call (bounds memory; a run's setting, not the model's).
    #[cfg_attr(not(target_arch = "wasm32"), arg(skip = 4usize))]
    #[serde(skip)]
    pub batch: usize,
    /// Snap label edges to Felzenszwalb superpixels of the rescaled image, "SCALE,SIGMA,MIN_SIZE"
    /// (e.g. 100,0.8,40): each superpixel takes the mean of its pixels' scores before the argmax,
    /// so edges follow the image's colours instead of the patch grid (the paper's superpixel
    /// loss trains the groups toward the same partition). "none" turns it off. Not in the
    /// release; SegCLIP models only.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, required = false, value_parser = parse_superpixels))]
    pub superpixels: std::option::Option<FelzenszwalbParams>,
    /// Also run the mirrored image and average the two score maps ("on" / "off"): test-time
    /// flipping, twice the image tower's work. Not in the release; SegCLIP models only.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, required = false, action = clap::ArgAction::Set, value_parser = parse_switch))]
    pub flip: bool,
    /// Refine the score map by averaging each pixel with its neighbours of like colour, this many
    /// times (pixel-adaptive mask refinement, src/pipeline/refine.rs; TCL reads its masks with
    /// 10). "none" turns it off. Not in the release; SegCLIP models only.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, required = false, value_parser = parse_refine))]
    pub refine: std::option::Option<RefineParams>,
    /// More short sides, comma-separated (e.g. 128,192,224): the image is also rescaled to each,
    /// run through the same windows, and the score maps are averaged with the --short-side one
    /// (multi-scale). "none" turns it off. Not in the release; SegCLIP models only.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, required = false, value_parser = parse_short_sides))]
    pub extra_short_sides: std::vec::Vec<usize>,
}

impl Default for Protocol {
    fn default() -> Self {
        Self {
            templates: vec![labels::DEFAULT_TEMPLATE.to_string()],
            bg_thresh: 0.8,
            background_prompts: Vec::new(),
            more_background: Vec::new(),
            top_k: 5,
            short_side: 0,
            long_cap: 2048,
            window: 0,
            stride: 0,
            whole_image: false,
            batch: 4,
            superpixels: None,
            flip: false,
            refine: None,
            extra_short_sides: Vec::new(),
        }
    }
}

/// The settings only SegCLIP's groups use, with their flags: a dense file refuses them.
const GROUP_SETTINGS: [&str; 5] = ["--top-k", "--superpixels", "--flip", "--refine", "--extra-short-sides"];

impl Protocol {
    /// A dense file's own protocol (its header): short side, the whole image or its windows,
    /// templates, background words and threshold.
    pub fn for_dense(p: &DenseProtocol) -> Self {
        Self {
            short_side: p.short_side,
            whole_image: p.window == 0,
            window: p.window,
            stride: p.stride,
            templates: p.template_strings(),
            bg_thresh: p.bg_thresh,
            background_prompts: p.background.clone(),
            ..Self::default()
        }
    }

    /// After flags changed `given` fields (their flag names): setting any of the windows sets
    /// aside the model's own extra scales unless those are given too, and a window ends the
    /// whole-image pass.
    pub fn after_flags(&mut self, given: &[&str]) {
        let has = |f: &str| given.contains(&f);
        if (has("--short-side") || has("--window") || has("--stride")) && !has("--extra-short-sides") {
            self.extra_short_sides.clear();
        }
        if has("--window") {
            self.whole_image = false;
        }
    }

    /// The background words in use with these labels: the model's and the added ones, less any
    /// typed as a label (SegCLIP models keep all of the model's own, as they were trained).
    pub fn background_words(&self, kind: Kind, labels: &[String]) -> Vec<String> {
        let typed: std::collections::HashSet<String> = labels.iter().map(|l| l.trim().to_lowercase()).collect();
        let keep = |w: &&String| !typed.contains(&w.trim().to_lowercase());
        match kind {
            Kind::Groups => self.background_prompts.iter().chain(self.more_background.iter().filter(keep)).cloned().collect(),
            Kind::Dense => self.background_prompts.iter().chain(&self.more_background).filter(keep).cloned().collect(),
        }
    }

    /// Checks every setting for a model of `kind` whose input (window) size is `input_size`;
    /// the error names the setting by its flag. A SegCLIP-only setting on a dense file is
    /// refused, not ignored.
    pub fn check(&self, kind: Kind, input_size: usize) -> Result<(), PipelineError> {
        let bad = |flag: &'static str, message: String| Err(PipelineError::Setting { flag, message });
        if kind == Kind::Dense {
            let plain = Protocol::default();
            let set = [self.top_k != plain.top_k, self.superpixels.is_some(), self.flip, self.refine.is_some(), !self.extra_short_sides.is_empty()];
            if let Some(i) = set.iter().position(|&s| s) {
                return Err(PipelineError::NotForKind { flag: GROUP_SETTINGS[i], kind });
            }
        }
        if !(0.0..=1.0).contains(&self.bg_thresh) {
            return bad("--bg-thresh", format!("expected 0..=1, found {}", self.bg_thresh));
        }
        if self.templates.is_empty() || self.templates.iter().any(|t| t.trim().is_empty()) {
            return bad("--template", "a template is empty (write e.g. \"a photo of a {}.\")".into());
        }
        for (flag, words) in [("--background-prompts", &self.background_prompts), ("--add-background", &self.more_background)] {
            if !words.is_empty() {
                labels::validate(words).map_err(|e| PipelineError::Setting { flag, message: e.to_string() })?;
            }
        }
        if self.top_k == 0 {
            return bad("--top-k", "must be at least 1 (found 0)".into());
        }
        if self.batch == 0 || self.long_cap == 0 {
            return bad("batch", format!("windows per call and the long-side cap must be positive (found {} and {})", self.batch, self.long_cap));
        }
        let window = if self.window == 0 { input_size } else { self.window };
        if self.stride > window {
            return bad("--stride", format!("{} is larger than the window side {window} px", self.stride));
        }
        if let Some(p) = &self.superpixels {
            p.validate().map_err(|e| PipelineError::Setting { flag: "--superpixels", message: e.0 })?;
        }
        if let Some(r) = &self.refine {
            r.validate().map_err(|e| PipelineError::Setting { flag: "--refine", message: e.0 })?;
        }
        let short_side = if self.short_side == 0 { input_size } else { self.short_side };
        super::windows::validate_extra_short_sides(&self.extra_short_sides, short_side, window)
            .map_err(|e| PipelineError::Setting { flag: "--extra-short-sides", message: e.0 })
    }
}

/// "on" / "off" (also true / false, yes / no).
pub fn parse_switch(text: &str) -> Result<bool, BadValue> {
    match text.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => Err(BadValue(format!("\"{text}\" is not on or off"))),
    }
}

fn is_none(text: &str) -> bool {
    text.trim().eq_ignore_ascii_case("none")
}

/// Comma-separated words; "none": no words.
pub fn parse_words(text: &str) -> Result<Vec<String>, BadValue> {
    if is_none(text) {
        return Ok(Vec::new());
    }
    let words = labels::split_labels(text);
    labels::validate(&words).map_err(|e| BadValue(format!("{e} (\"none\" turns them off)")))?;
    Ok(words)
}

/// "SCALE,SIGMA,MIN_SIZE"; "none": no snapping.
pub fn parse_superpixels(text: &str) -> Result<Option<FelzenszwalbParams>, BadValue> {
    if is_none(text) {
        return Ok(None);
    }
    FelzenszwalbParams::parse(text).map(Some).map_err(|e| BadValue(format!("{e} (\"none\" turns it off)")))
}

/// A number of refinement passes; "none": no refinement.
pub fn parse_refine(text: &str) -> Result<Option<RefineParams>, BadValue> {
    if is_none(text) {
        return Ok(None);
    }
    RefineParams::parse(text).map(Some).map_err(|e| BadValue(format!("{e} (\"none\" turns it off)")))
}

/// Comma-separated short sides in pixels; "none": the one scale.
pub fn parse_short_sides(text: &str) -> Result<Vec<usize>, BadValue> {
    if is_none(text) {
        return Ok(Vec::new());
    }
    super::windows::parse_short_sides(text).map_err(|e| BadValue(format!("{e} (\"none\" turns them off)")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dense_file_refuses_group_settings_and_each_check_names_its_flag() {
        let mut p = Protocol::default();
        assert!(p.check(Kind::Groups, 96).is_ok());
        p.flip = true;
        assert!(p.check(Kind::Groups, 96).is_ok());
        let e = p.check(Kind::Dense, 224).unwrap_err().to_string();
        assert!(e.contains("--flip") && e.contains("plain CLIP"), "{e}");
        let mut p = Protocol { extra_short_sides: vec![90], ..Protocol::default() };
        let e = p.check(Kind::Groups, 96).unwrap_err().to_string();
        assert!(e.starts_with("--extra-short-sides: 90 is below the window side 96 px"), "{e}");
        p.extra_short_sides.clear();
        p.bg_thresh = 1.5;
        assert!(p.check(Kind::Groups, 96).unwrap_err().to_string().starts_with("--bg-thresh:"));
    }

    #[test]
    fn added_background_words_join_the_models_and_typed_labels_leave_them() {
        let p = Protocol {
            background_prompts: vec!["wall".into(), "sky".into()],
            more_background: vec!["carpet".into(), "Poster".into()],
            ..Protocol::default()
        };
        let labels: Vec<String> = vec!["WALL".into(), "poster ".into()];
        assert_eq!(p.background_words(Kind::Dense, &labels), vec!["sky".to_string(), "carpet".into()]);
        // SegCLIP keeps its own trained prompts whatever the labels; added words still yield.
        assert_eq!(p.background_words(Kind::Groups, &labels), vec!["wall".to_string(), "sky".into(), "carpet".into()]);
    }

    #[test]
    fn the_manifest_form_reads_back_and_fills_what_it_omits() {
        let p = Protocol { bg_thresh: 0.03, flip: true, extra_short_sides: vec![128, 192], ..Protocol::default() };
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Protocol>(&json).unwrap(), p);
        let partial: Protocol = serde_json::from_str(r#"{"bg_thresh": 0.2}"#).unwrap();
        assert_eq!(partial, Protocol { bg_thresh: 0.2, ..Protocol::default() });
        let e = serde_json::from_str::<Protocol>(r#"{"bg_tresh": 0.2}"#).unwrap_err().to_string();
        assert!(e.contains("bg_tresh") && e.contains("bg_thresh"), "{e}");
    }

    #[test]
    fn none_turns_a_setting_off() {
        assert_eq!(parse_superpixels("none").unwrap(), None);
        assert_eq!(parse_refine(" None ").unwrap(), None);
        assert!(parse_short_sides("none").unwrap().is_empty());
        assert!(parse_words("none").unwrap().is_empty());
        assert_eq!(parse_switch("off").unwrap(), false);
        assert!(parse_refine("ten").unwrap_err().0.contains("none"));
    }
}
