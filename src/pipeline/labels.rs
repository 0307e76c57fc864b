//! Label lists from users: parsing, validation, prompt templates, and the embedding cache that
//! makes a label edit cost only the labels not seen before.

use std::collections::HashMap;

/// The release's single template.
pub const DEFAULT_TEMPLATE: &str = "a photo of a {}.";

/// At most this many labels: the label map is 8-bit with 0 for background (and 255 kept free as
/// the evaluation ignore index).
pub const MAX_LABELS: usize = 254;

/// Splits a free-form label list on commas and newlines, trims, and checks it: not empty, no
/// empty entries, no duplicates (case-insensitive), at most `MAX_LABELS`.
pub fn parse_labels(text: &str) -> Result<Vec<String>, String> {
    let labels: Vec<String> = text
        .split([',', '\n', ';'])
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|s| !s.is_empty())
        .collect();
    validate(&labels)?;
    Ok(labels)
}

pub fn validate(labels: &[String]) -> Result<(), String> {
    if labels.is_empty() {
        return Err("no labels given: type one or more, separated by commas (e.g. \"cat, sofa, window\")".into());
    }
    if labels.len() > MAX_LABELS {
        return Err(format!("{} labels given; at most {MAX_LABELS} are supported", labels.len()));
    }
    let mut seen: HashMap<String, &str> = HashMap::new();
    for label in labels {
        if label.trim().is_empty() {
            return Err("a label is empty".into());
        }
        if let Some(first) = seen.insert(label.to_lowercase(), label) {
            return Err(format!("label \"{label}\" is given twice (also as \"{first}\")"));
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
    fn parses_commas_and_whitespace() {
        assert_eq!(parse_labels(" cat,  sofa ,window\n  potted   plant ").unwrap(), vec!["cat", "sofa", "window", "potted plant"]);
    }

    #[test]
    fn refuses_empty_and_duplicates_with_a_reason() {
        assert!(parse_labels(" , ,").unwrap_err().contains("no labels"));
        let dup = parse_labels("Cat, dog, cat").unwrap_err();
        assert!(dup.contains("\"cat\"") && dup.contains("twice"), "{dup}");
        let many = (0..300).map(|i| format!("thing {i}")).collect::<Vec<_>>().join(",");
        assert!(parse_labels(&many).unwrap_err().contains("at most 254"));
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
