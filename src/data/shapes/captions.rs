//! Captions of a shape scene: noun phrases with optional size, pattern and colour words, counts,
//! locations and relations; every caption is true of the visible scene.

use super::super::background::BackgroundKind;
use super::super::rng::SplitMix64;
use super::vocab::*;

/// Which optional words a noun phrase carries.
#[derive(Clone, Copy, Debug)]
pub(super) struct Words {
    pub(super) size: bool,
    pub(super) pattern: bool,
    pub(super) colour: bool,
    /// "a circle in red" rather than "a red circle".
    pub(super) colour_after: bool,
}

pub(super) const NUMBER_WORDS: [&str; 10] = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];

pub(super) fn article(next: &str) -> &'static str {
    if next.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// "a small striped red circle", "two circles in blue", "three crosses". Size and pattern words
/// are only used when every member shares them, so the phrase is true of all members.
pub(super) fn noun_phrase(members: &[&ObjectInfo], colour: Option<Colour>, words: Words) -> String {
    let first = members[0];
    let mut out: Vec<&str> = Vec::new();
    if words.size && members.iter().all(|o| o.size == first.size) {
        out.push(first.size.name());
    }
    if words.pattern && first.pattern != Pattern::Plain && members.iter().all(|o| o.pattern == first.pattern) {
        out.push(first.pattern.name());
    }
    let colour = colour.filter(|_| words.colour);
    if let (Some(c), false) = (colour, words.colour_after) {
        out.push(c.name());
    }
    out.push(if members.len() == 1 { first.shape.name() } else { first.shape.plural() });
    if let (Some(c), true) = (colour, words.colour_after) {
        out.push("in");
        out.push(c.name());
    }
    let body = out.join(" ");
    let det = if members.len() == 1 { article(&body) } else { NUMBER_WORDS[members.len()] };
    format!("{det} {body}")
}

/// "a", "a and b", "a, b and c".
pub(super) fn join_list(items: &[String]) -> String {
    match items.len() {
        0 => String::new(),
        1 => items[0].clone(),
        n => format!("{} and {}", items[..n - 1].join(", "), items[n - 1]),
    }
}

/// Location phrases true of an object whose visible centroid is `(x, y)` (normalised), or none
/// when it is not clearly anywhere. Left: x < 0.38, right: x > 0.62, top: y < 0.38, bottom:
/// y > 0.62; centre: both coordinates within 0.42..0.58.
pub(super) fn location_phrases(x: f32, y: f32) -> &'static [&'static str] {
    let left = x < 0.38;
    let right = x > 0.62;
    let top = y < 0.38;
    let bottom = y > 0.62;
    let centre = (0.42..0.58).contains(&x) && (0.42..0.58).contains(&y);
    match (top, bottom, left, right) {
        (true, _, true, _) => &["in the top left corner", "at the top left"],
        (true, _, _, true) => &["in the top right corner", "at the top right"],
        (_, true, true, _) => &["in the bottom left corner", "at the bottom left"],
        (_, true, _, true) => &["in the bottom right corner", "at the bottom right"],
        (true, ..) => &["at the top", "near the top"],
        (_, true, ..) => &["at the bottom", "near the bottom"],
        (_, _, true, _) => &["on the left", "on the left side"],
        (_, _, _, true) => &["on the right", "on the right side"],
        _ if centre => &["in the centre", "in the middle"],
        _ => &[],
    }
}

/// Relation of `a` to `b`, if clear: "above", "below", "to the left of", "to the right of".
/// Requires the centroids to differ by more than 0.15 of the image along the dominant axis.
pub(super) fn relation(a: &ObjectInfo, b: &ObjectInfo) -> Option<&'static str> {
    let dx = b.centroid[0] - a.centroid[0];
    let dy = b.centroid[1] - a.centroid[1];
    if dy.abs() > 0.15 && dy.abs() > 1.5 * dx.abs() {
        Some(if dy > 0.0 { "above" } else { "below" })
    } else if dx.abs() > 0.15 && dx.abs() > 1.5 * dy.abs() {
        Some(if dx > 0.0 { "to the left of" } else { "to the right of" })
    } else {
        None
    }
}

pub(super) fn make_captions(objects: &[ObjectInfo], bg: BackgroundKind, count: usize, rng: &mut SplitMix64) -> Vec<String> {
    let n = objects.len();
    // Groups by (colour, shape) and by shape alone.
    let mut pair_groups: Vec<(Colour, Shape, Vec<&ObjectInfo>)> = Vec::new();
    let mut shape_groups: Vec<(Shape, Vec<&ObjectInfo>)> = Vec::new();
    for o in objects {
        match pair_groups.iter_mut().find(|g| g.0 == o.colour && g.1 == o.shape) {
            Some(g) => g.2.push(o),
            None => pair_groups.push((o.colour, o.shape, vec![o])),
        }
        match shape_groups.iter_mut().find(|g| g.0 == o.shape) {
            Some(g) => g.1.push(o),
            None => shape_groups.push((o.shape, vec![o])),
        }
    }
    let bg_word = |rng: &mut SplitMix64| *rng.pick(bg.adjectives());
    let random_words = |rng: &mut SplitMix64, colour: bool| Words {
        size: rng.chance(0.3),
        pattern: rng.chance(0.3),
        colour,
        colour_after: rng.chance(0.15),
    };

    // A full list of the scene's objects, with exact counts.
    let list_caption = |rng: &mut SplitMix64, with_colour: bool| -> String {
        let mut phrases: Vec<String> = if with_colour {
            pair_groups.iter().map(|(c, _, m)| noun_phrase(m, Some(*c), random_words(rng, true))).collect()
        } else {
            shape_groups.iter().map(|(_, m)| noun_phrase(m, None, random_words(rng, false))).collect()
        };
        rng.shuffle(&mut phrases);
        let first_plural = !phrases[0].starts_with("a ") && !phrases[0].starts_with("an ");
        let list = join_list(&phrases);
        match rng.below(9) {
            0 => list,
            1 => format!("a photo of {list}"),
            2 => format!("an image of {list}"),
            3 => format!("a picture with {list}"),
            4 => format!("there {} {list}", if first_plural { "are" } else { "is" }),
            5 => format!("{list} on a {} background", bg_word(rng)),
            6 => format!("a rendering of {list} on a {} background", bg_word(rng)),
            7 if n > 1 => format!("{} shapes: {list}", NUMBER_WORDS[n]),
            7 => format!("a single shape: {list}"),
            _ => format!("a synthetic scene showing {list}"),
        }
    };

    let mut pool: Vec<String> = Vec::new();
    // Per-object captions with a location, for objects unique under the words used.
    let mut unique: Vec<(usize, String)> = Vec::new();
    for (k, o) in objects.iter().enumerate() {
        let with_colour = rng.chance(0.7);
        let mut words = random_words(rng, with_colour);
        let same_pair = objects.iter().filter(|q| q.colour == o.colour && q.shape == o.shape).count();
        let same_shape = objects.iter().filter(|q| q.shape == o.shape).count();
        if !with_colour && same_shape > 1 {
            words.colour = true;
        }
        if same_pair > 1 {
            continue;
        }
        let np = noun_phrase(&[o], Some(o.colour), words);
        unique.push((k, np.clone()));
        let places = location_phrases(o.centroid[0], o.centroid[1]);
        if places.is_empty() {
            continue;
        }
        let place = *rng.pick(places);
        pool.push(match rng.below(4) {
            0 => format!("{np} {place}"),
            1 => format!("a photo of {np} {place}"),
            2 => format!("{place} there is {np}"),
            _ => format!("{np} is {place}"),
        });
    }
    // Relations between uniquely described objects.
    for (i, (a, np_a)) in unique.iter().enumerate() {
        for (b, np_b) in unique.iter().skip(i + 1) {
            if let Some(rel) = relation(&objects[*a], &objects[*b]) {
                pool.push(if rng.chance(0.5) { format!("{np_a} {rel} {np_b}") } else { format!("{np_a} is {rel} {np_b}") });
            }
        }
    }
    // Left to right, when every object is uniquely described and they are well separated.
    if n >= 2 && unique.len() == n {
        let mut order: Vec<&(usize, String)> = unique.iter().collect();
        order.sort_by(|p, q| objects[p.0].centroid[0].total_cmp(&objects[q.0].centroid[0]));
        if order.windows(2).all(|w| objects[w[1].0].centroid[0] - objects[w[0].0].centroid[0] > 0.08) {
            let names: Vec<String> = order.iter().map(|u| u.1.clone()).collect();
            pool.push(format!("from left to right: {}", join_list(&names)));
        }
    }
    // Count of shapes, without naming them.
    if rng.chance(0.3) {
        let what = if n == 1 { "a single shape".to_string() } else { format!("{} shapes", NUMBER_WORDS[n]) };
        pool.push(format!("{what} on a {} background", bg_word(rng)));
    }
    rng.shuffle(&mut pool);

    // First a full list with colours, then one without, then the pool, then more full lists.
    let mut captions: Vec<String> = Vec::with_capacity(count);
    let push = |c: String, captions: &mut Vec<String>| {
        if captions.len() < count && !captions.contains(&c) {
            captions.push(c);
        }
    };
    let first = list_caption(rng, true);
    push(first, &mut captions);
    let second = list_caption(rng, false);
    push(second, &mut captions);
    for c in pool {
        push(c, &mut captions);
    }
    for attempt in 0..64 {
        if captions.len() >= count {
            break;
        }
        let c = list_caption(rng, attempt % 3 != 2);
        push(c, &mut captions);
    }
    captions
}
