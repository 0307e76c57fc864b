//! Captions of an emoji scene. Every caption names every visible object (by its VOC class name or
//! a synonym people type), with counts; some add positions and a description of the background,
//! so the text tower also learns words for what is not an object.

use super::super::background::BackgroundKind;
use super::super::rng::SplitMix64;
use super::vocab::{class_words, EmojiObject};

pub(super) const NUMBER_WORDS: [&str; 9] = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight"];

fn article(word: &str) -> &'static str {
    match word.as_bytes().first() {
        Some(b'a' | b'e' | b'i' | b'o' | b'u') => "an",
        _ => "a",
    }
}

/// Adjectives for "on a ... background".
fn background_words(kind: BackgroundKind, rng: &mut SplitMix64) -> String {
    let adjective = rng.pick(kind.adjectives());
    let noun = rng.pick(&["background", "backdrop"]);
    format!("{adjective} {noun}")
}

/// The background a caption describes ("on a striped backdrop" -> ("striped", "striped
/// backdrop")): a key shared by the adjectives of one texture kind (its first adjective), and the
/// phrase as written. `None` when the caption says nothing of the background.
pub fn background_in_caption(caption: &str) -> Option<(&'static str, String)> {
    let lower = caption.to_lowercase();
    let words: Vec<&str> = lower.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).collect();
    words.windows(2).find_map(|pair| {
        let noun = ["background", "backdrop"].into_iter().find(|n| *n == pair[1])?;
        let kind = BackgroundKind::ALL.into_iter().find(|k| k.adjectives().contains(&pair[0]))?;
        Some((kind.adjectives()[0], format!("{} {noun}", pair[0])))
    })
}

/// The background prompts a model trained on these captions knows (every adjective with
/// "background"): the pipeline's `background_prompts` for it (src/pipeline/mod.rs).
pub fn background_prompts() -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for kind in BackgroundKind::ALL {
        for adjective in kind.adjectives() {
            let p = format!("{adjective} background");
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// Where an object sits, from its visible centroid (0..1 of the image side).
fn location(o: &EmojiObject) -> Option<&'static str> {
    let (x, y) = o.centroid;
    let horizontal = if x < 0.36 {
        Some("on the left")
    } else if x > 0.64 {
        Some("on the right")
    } else {
        None
    };
    let vertical = if y < 0.36 {
        Some("at the top")
    } else if y > 0.64 {
        Some("at the bottom")
    } else {
        None
    };
    match (horizontal, vertical) {
        (Some(h), None) => Some(h),
        (None, Some(v)) => Some(v),
        (None, None) => Some("in the middle"),
        _ => None,
    }
}

/// "a cat", "two dogs", "an airplane": the objects of one class, with a word drawn for them.
fn counted(class: u8, count: usize, rng: &mut SplitMix64) -> String {
    let (one, many) = *rng.pick(class_words(class));
    if count == 1 {
        format!("{} {one}", article(one))
    } else {
        format!("{} {many}", NUMBER_WORDS[count.min(8)])
    }
}

fn join_list(items: &[String]) -> String {
    match items.len() {
        0 => String::new(),
        1 => items[0].clone(),
        2 => format!("{} and {}", items[0], items[1]),
        n => format!("{}, and {}", items[..n - 1].join(", "), items[n - 1]),
    }
}

/// Classes present with their counts, in order of first appearance.
fn class_counts(objects: &[EmojiObject]) -> Vec<(u8, usize)> {
    let mut counts: Vec<(u8, usize)> = Vec::new();
    for o in objects {
        match counts.iter_mut().find(|(c, _)| *c == o.class) {
            Some(entry) => entry.1 += 1,
            None => counts.push((o.class, 1)),
        }
    }
    counts
}

/// `count` distinct captions (fewer only if the scene cannot give that many), each true of the
/// scene: caption 0 is the plain list with VOC names; the others vary words, order, positions
/// and background.
pub fn make_captions(objects: &[EmojiObject], bg: BackgroundKind, count: usize, rng: &mut SplitMix64) -> Vec<String> {
    let counts = class_counts(objects);
    let mut captions: Vec<String> = Vec::new();
    let push = |c: String, captions: &mut Vec<String>| {
        if !captions.contains(&c) && captions.len() < count {
            captions.push(c);
        }
    };
    let plain: Vec<String> = counts
        .iter()
        .map(|&(c, n)| {
            let (one, many) = class_words(c)[0];
            if n == 1 {
                format!("{} {one}", article(one))
            } else {
                format!("{} {many}", NUMBER_WORDS[n.min(8)])
            }
        })
        .collect();
    push(format!("a photo of {}.", join_list(&plain)), &mut captions);
    for attempt in 0..48 {
        if captions.len() >= count {
            break;
        }
        let mut order = counts.clone();
        rng.shuffle(&mut order);
        let listed: Vec<String> = order.iter().map(|&(c, n)| counted(c, n, rng)).collect();
        let caption = match attempt % 5 {
            // Positions: only for classes with a single object.
            0 | 3 => {
                let parts: Vec<String> = order
                    .iter()
                    .zip(&listed)
                    .map(|(&(c, n), words)| {
                        let place = (n == 1).then(|| objects.iter().find(|o| o.class == c).and_then(location)).flatten();
                        match place {
                            Some(p) => format!("{words} {p}"),
                            None => words.clone(),
                        }
                    })
                    .collect();
                let mut s = join_list(&parts);
                upper_first(&mut s);
                format!("{s}.")
            }
            // The background in words.
            1 => {
                let words = background_words(bg, rng);
                format!("{} on {} {words}.", join_list(&listed), article(&words))
            }
            2 => {
                let frame = *rng.pick(&["a picture of", "an image of", "a drawing of", "emoji of", "there is"]);
                format!("{frame} {}.", join_list(&listed))
            }
            _ => {
                let words = background_words(bg, rng);
                format!("{}, and the rest is {} {words}.", join_list(&listed), article(&words))
            }
        };
        push(caption, &mut captions);
    }
    captions
}

fn upper_first(s: &mut String) {
    if let Some(f) = s.get(0..1) {
        let up = f.to_uppercase();
        s.replace_range(0..1, &up);
    }
}
