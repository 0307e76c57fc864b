//! Label lists from users: splitting, validation, adding to a list, and prompt templates. Below
//! `model`, `weights` and `pipeline`, which all use it (a dense model's template set, a weights
//! file's background prompts, the pipeline's prompts); the embedding cache that makes a label
//! edit cheap lives in `pipeline::Segmenter`.

use std::collections::HashMap;

/// The release's single template.
pub const DEFAULT_TEMPLATE: &str = "a photo of a {}.";

/// CLIP's 80 ImageNet prompt templates, in their order (OpenAI's
/// https://github.com/openai/CLIP/blob/main/notebooks/Prompt_Engineering_for_ImageNet.ipynb; the
/// list NACLIP and ClearCLIP average for segmentation, e.g. ClearCLIP's
/// `prompts/imagenet_template.py` `openai_imagenet_template`).
pub const OPENAI_IMAGENET_TEMPLATES: [&str; 80] = [
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
];

/// At most this many labels: the label map is 8-bit with 0 for background (and 255 kept free as
/// the evaluation ignore index).
pub const MAX_LABELS: usize = 254;

/// Splits a free-form label list on commas and newlines, trims, and checks it: not empty, no
/// empty entries, no duplicates (case-insensitive), at most `MAX_LABELS`.
pub fn parse_labels(text: &str) -> Result<Vec<String>, LabelError> {
    let labels = split_labels(text);
    validate(&labels)?;
    Ok(labels)
}

/// Splits free-form text into labels: on commas, semicolons and newlines, whitespace folded,
/// empty entries dropped.
pub fn split_labels(text: &str) -> Vec<String> {
    text.split([',', '\n', ';']).map(|s| s.split_whitespace().collect::<Vec<_>>().join(" ")).filter(|s| !s.is_empty()).collect()
}

/// Appends `new` labels to `labels`, skipping any already there (case-insensitive) and stopping
/// at `MAX_LABELS`. Returns how many were added and a message for each one that was not.
pub fn add_labels(labels: &mut Vec<String>, new: Vec<String>) -> (usize, Vec<String>) {
    let (mut added, mut problems) = (0, Vec::new());
    for label in new {
        if labels.iter().any(|l| l.to_lowercase() == label.to_lowercase()) {
            problems.push(format!("\"{label}\" is already a label"));
            continue;
        }
        if labels.len() >= MAX_LABELS {
            problems.push(format!("at most {MAX_LABELS} labels"));
            break;
        }
        labels.push(label);
        added += 1;
    }
    (added, problems)
}

/// What is wrong with a label list.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("no labels given: type one or more, separated by commas (e.g. \"cat, sofa, window\")")]
    None,
    #[error("{0} labels given; at most {MAX_LABELS} are supported")]
    TooMany(usize),
    #[error("a label is empty")]
    Empty,
    #[error("label \"{label}\" is given twice (also as \"{first}\")")]
    Twice { label: String, first: String },
    #[error("background prompts: {0}")]
    Background(Box<LabelError>),
}

/// Checks background prompts (`Protocol::background_prompts`) as labels are checked, naming
/// them as background prompts in the message.
pub fn validate_background_prompts(prompts: &[String]) -> Result<(), LabelError> {
    validate(prompts).map_err(|e| LabelError::Background(Box::new(e)))
}

pub fn validate(labels: &[String]) -> Result<(), LabelError> {
    if labels.is_empty() {
        return Err(LabelError::None);
    }
    if labels.len() > MAX_LABELS {
        return Err(LabelError::TooMany(labels.len()));
    }
    let mut seen: HashMap<String, &str> = HashMap::new();
    for label in labels {
        if label.trim().is_empty() {
            return Err(LabelError::Empty);
        }
        if let Some(first) = seen.insert(label.to_lowercase(), label) {
            return Err(LabelError::Twice { label: label.clone(), first: first.to_string() });
        }
    }
    Ok(())
}

/// Fills `{}` in each template with the label (a template without `{}` gets the label appended).
pub fn prompts(label: &str, templates: &[String]) -> Vec<String> {
    templates
        .iter()
        .map(|t| if t.contains("{}") { t.replace("{}", label) } else { format!("{t} {label}") })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adding_skips_duplicates_and_stops_at_the_limit() {
        let mut labels = vec!["cat".to_string()];
        let (added, problems) = add_labels(&mut labels, split_labels("dog; CAT,  potted   plant\n"));
        assert_eq!(added, 2);
        assert_eq!(labels, ["cat", "dog", "potted plant"]);
        assert_eq!(problems, ["\"CAT\" is already a label"]);
        let mut full: Vec<String> = (0..MAX_LABELS).map(|i| format!("l{i}")).collect();
        let (added, problems) = add_labels(&mut full, vec!["more".into()]);
        assert_eq!((added, full.len()), (0, MAX_LABELS));
        assert!(problems[0].contains("at most"), "{problems:?}");
    }

    #[test]
    fn parses_commas_and_whitespace() {
        assert_eq!(parse_labels(" cat,  sofa ,window\n  potted   plant ").unwrap(), vec!["cat", "sofa", "window", "potted plant"]);
    }

    #[test]
    fn refuses_empty_and_duplicates_with_a_reason() {
        assert!(parse_labels(" , ,").unwrap_err().to_string().contains("no labels"));
        let dup = parse_labels("Cat, dog, cat").unwrap_err().to_string();
        assert!(dup.contains("\"cat\"") && dup.contains("twice"), "{dup}");
        let many = (0..300).map(|i| format!("thing {i}")).collect::<Vec<_>>().join(",");
        assert!(parse_labels(&many).unwrap_err().to_string().contains("at most 254"));
    }

    #[test]
    fn hundred_labels_and_emoji_are_fine() {
        let many = (0..100).map(|i| format!("thing {i}")).collect::<Vec<_>>().join(",");
        assert_eq!(parse_labels(&many).unwrap().len(), 100);
        assert_eq!(parse_labels("🐱, 🛋️").unwrap().len(), 2);
    }

    #[test]
    fn templates_fill_the_label() {
        assert_eq!(prompts("cat", &[DEFAULT_TEMPLATE.to_string()]), vec!["a photo of a cat."]);
    }
}
