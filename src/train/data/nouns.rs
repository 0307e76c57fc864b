//! The group-noun term's targets: the classes (and backgrounds) a micro-batch's captions name,
//! as prompts.

use crate::data::emoji;
use crate::tokenizer::ClipTokenizer;
use crate::train::error::TrainError;

/// The classes a micro-batch's captions name, each prompted once ("a photo of a {noun}.", the
/// word of its first mention), and which caption names which: the group-noun term's targets
/// (`loss.group_nouns_weight`). With `loss.group_nouns_background`, the backgrounds the captions
/// describe join them ("a photo of a striped backdrop."), one target per adjective family
/// (linear and radial gradients share "gradient").
#[derive(Clone, Debug, PartialEq)]
pub struct NounPrompts {
    /// Token ids of the prompts [K], padded to the longest.
    pub tokens: Vec<Vec<i64>>,
    /// `named[i][k]`: caption i names the class (or background) of prompt k [B][K].
    pub named: Vec<Vec<bool>>,
    /// `unknown[i][k]`: caption i says nothing either way about prompt k (a background target
    /// of a caption silent about its background, with `loss.silent_background = "unknown"`):
    /// neither a positive nor a negative of the term [B][K].
    pub unknown: Vec<Vec<bool>>,
}

impl NounPrompts {
    /// The prompts of `captions` through the emoji world's words for its classes (and, with
    /// `backgrounds`, for its background textures); `None` when no caption names anything (the
    /// term has nothing to say about such a batch). With `silent_unknown`, a caption that
    /// describes no background leaves every background target unknown instead of not named.
    pub fn from_captions(
        captions: &[String],
        backgrounds: bool,
        silent_unknown: bool,
        tokenizer: &ClipTokenizer,
        context_length: usize,
    ) -> Result<Option<Self>, TrainError> {
        // A target: a class by its index, or a background by the first adjective of its kind.
        #[derive(PartialEq)]
        enum Target {
            Class(u8),
            Background(&'static str),
        }
        // Each caption's targets with the words it used for them.
        let per_caption: Vec<Vec<(Target, String)>> = captions
            .iter()
            .map(|c| {
                let mut found: Vec<(Target, String)> =
                    emoji::classes_in_caption(c).into_iter().map(|(class, word)| (Target::Class(class), word.to_string())).collect();
                if backgrounds {
                    found.extend(emoji::background_in_caption(c).map(|(kind, words)| (Target::Background(kind), words)));
                }
                found
            })
            .collect();
        let mut keys: Vec<&Target> = Vec::new();
        let mut prompts = Vec::new();
        for (key, words) in per_caption.iter().flatten() {
            if !keys.contains(&key) {
                keys.push(key);
                prompts.push(crate::labels::DEFAULT_TEMPLATE.replace("{}", words));
            }
        }
        if keys.is_empty() {
            return Ok(None);
        }
        let named = per_caption.iter().map(|found| keys.iter().map(|k| found.iter().any(|(c, _)| c == *k)).collect()).collect();
        let is_background = |t: &Target| matches!(t, Target::Background(_));
        let unknown = per_caption
            .iter()
            .map(|found| {
                let silent = silent_unknown && !found.iter().any(|(c, _)| is_background(c));
                keys.iter().map(|k| silent && is_background(k)).collect()
            })
            .collect();
        let tokens = tokenize_trimmed(&prompts, tokenizer, context_length)?;
        Ok(Some(Self { tokens, named, unknown }))
    }
}

/// Token ids of `texts`, with the padding they all share trimmed (every row keeps its EOT, where
/// the text tower reads it).
pub(super) fn tokenize_trimmed(texts: &[String], tokenizer: &ClipTokenizer, context_length: usize) -> Result<Vec<Vec<i64>>, TrainError> {
    let mut tokens = Vec::with_capacity(texts.len());
    for text in texts {
        let (ids, _) = tokenizer.encode(text, context_length).map_err(|source| TrainError::Caption { text: text.clone(), source })?;
        tokens.push(ids);
    }
    let longest = tokens.iter().map(|t| t.iter().rposition(|&id| id != 0).map_or(1, |i| i + 1)).max().unwrap_or(1);
    for t in &mut tokens {
        t.truncate(longest);
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noun_prompts_name_each_class_once_and_backgrounds_only_when_asked() {
        let tokenizer = ClipTokenizer::from_bytes(include_bytes!("../../../static/tokenizer.json")).unwrap();
        let captions = ["Two kitties on a stripy backdrop.", "a cat and a dog, and the rest is a plain background.", "a bus"].map(String::from);
        let nouns = NounPrompts::from_captions(&captions, false, false, &tokenizer, 77).unwrap().unwrap();
        // cat (first word "kitty"), dog, bus.
        assert_eq!(nouns.tokens.len(), 3);
        assert_eq!(nouns.named, vec![vec![true, false, false], vec![true, true, false], vec![false, false, true]]);
        let first = |texts: &[&str]| tokenize_trimmed(&texts.iter().map(|t| t.to_string()).collect::<Vec<_>>(), &tokenizer, 77).unwrap();
        assert_eq!(nouns.tokens, first(&["a photo of a kitty.", "a photo of a dog.", "a photo of a bus."]));
        let with = NounPrompts::from_captions(&captions, true, false, &tokenizer, 77).unwrap().unwrap();
        // cat, striped, dog, plain, bus: each caption's background is its own target.
        assert_eq!(with.tokens.len(), 5);
        assert_eq!(
            with.named,
            vec![vec![true, true, false, false, false], vec![true, false, true, true, false], vec![false, false, false, false, true]]
        );
        let texts = ["a photo of a kitty.", "a photo of a stripy backdrop.", "a photo of a dog.", "a photo of a plain background.", "a photo of a bus."];
        assert_eq!(with.tokens, first(&texts));
        assert!(with.unknown.iter().flatten().all(|u| !u));
        // Silent captions ("a bus") leave the background targets unknown, not negative.
        let silent = NounPrompts::from_captions(&captions, true, true, &tokenizer, 77).unwrap().unwrap();
        assert_eq!(silent.named, with.named);
        assert_eq!(
            silent.unknown,
            vec![vec![false; 5], vec![false; 5], vec![false, true, false, true, false]]
        );
        assert_eq!(NounPrompts::from_captions(&["a striped background".to_string()], false, false, &tokenizer, 77).unwrap(), None);
    }
}
