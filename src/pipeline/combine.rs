//! Turning image features and label embeddings into a label map: the published protocol's
//! per-window steps 1-5 and the window averaging (docs/segclip.md, "Inference"). Host-side
//! arithmetic on small matrices, identical in the page and the CLI; it needs no model run, which
//! is what makes a label edit cheap.

use super::preprocess::{resize_bilinear, resize_bilinear_rows};
use super::windows::Window;

/// A SegCLIP model's outputs for one window, read back to the host.
#[derive(Clone, Debug, Default)]
pub struct GroupWindow {
    pub window: Window,
    /// Patch grid [rows, cols].
    pub grid: [usize; 2],
    /// Soft assignment [L, rows * cols], softmax over the centers.
    pub soft: Vec<f32>,
    /// L2-normalised group embeddings [L, E].
    pub groups: Vec<f32>,
    /// L2-normalised image embedding [E].
    pub image: Vec<f32>,
}

/// A dense CLIP's outputs for one window (src/model/dense.rs), read back to the host.
#[derive(Clone, Debug, Default)]
pub struct PatchWindow {
    pub window: Window,
    /// Patch grid [rows, cols].
    pub grid: [usize; 2],
    /// L2-normalised patch features [rows * cols, E], row-major over the grid.
    pub patches: Vec<f32>,
}

/// One scale's windows as the model's kind encoded them (src/pipeline/kinds).
#[derive(Clone, Debug)]
pub enum EncodedWindows {
    /// SegCLIP: each window's groups, and the group of each of its pixels (`pixel_groups`).
    Groups(Vec<(GroupWindow, Vec<usize>)>),
    /// A dense CLIP: each window's patch features.
    Patches(Vec<PatchWindow>),
}

impl EncodedWindows {
    pub fn len(&self) -> usize {
        match self {
            EncodedWindows::Groups(w) => w.len(),
            EncodedWindows::Patches(w) => w.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The SegCLIP windows (none for a dense model's).
    pub fn groups(&self) -> &[(GroupWindow, Vec<usize>)] {
        match self {
            EncodedWindows::Groups(w) => w,
            EncodedWindows::Patches(_) => &[],
        }
    }

    /// Appends `other`'s windows (of the same kind) to these.
    pub fn extend(&mut self, other: EncodedWindows) {
        match (self, other) {
            (EncodedWindows::Groups(a), EncodedWindows::Groups(b)) => a.extend(b),
            (EncodedWindows::Patches(a), EncodedWindows::Patches(b)) => a.extend(b),
            _ => unreachable!("one model encodes every window of an image"),
        }
    }
}

/// Combination settings.
#[derive(Clone, Copy, Debug)]
pub struct CombineOptions {
    /// Background threshold (VOC 0.80, PASCAL Context 0.25, COCO-Object 0.65 in the release).
    pub bg_thresh: f32,
    /// Labels kept from the image-level ranking (k = min(top_k, N)).
    pub top_k: usize,
    /// exp(logit_scale), clamped to 100.
    pub logit_scale: f32,
}

fn softmax_in_place(v: &mut [f32]) {
    let max = v.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in v.iter_mut() {
        *x = if *x == f32::NEG_INFINITY { 0.0 } else { (*x - max).exp() };
        sum += *x;
    }
    for x in v.iter_mut() {
        *x /= sum;
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Index of the largest value (the first on ties).
fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for k in 1..v.len() {
        if v[k] > v[best] {
            best = k;
        }
    }
    best
}

/// Steps 2-3 and the background rule: the group-by-class score matrix [L, N + 1] (column 0 is
/// background). `background` holds the embeddings of background prompts (empty for the
/// release's rule alone): they compete with the labels in both softmaxes, are never dropped by
/// the image-level ranking, and what they win goes to the background column.
pub fn group_scores(f: &GroupWindow, labels: &[Vec<f32>], background: &[Vec<f32>], o: &CombineOptions) -> Vec<Vec<f32>> {
    let n = labels.len();
    let e = f.image.len();
    let l = f.groups.len() / e;
    // Image-level ranking: keep the top-k labels.
    let mut image_logits: Vec<f32> = labels.iter().map(|t| o.logit_scale * dot(&f.image, t)).collect();
    softmax_in_place(&mut image_logits);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| image_logits[b].partial_cmp(&image_logits[a]).unwrap().then(a.cmp(&b)));
    let keep: Vec<bool> = {
        let mut k = vec![false; n + background.len()];
        for &i in order.iter().take(o.top_k.min(n)) {
            k[i] = true;
        }
        k[n..].iter_mut().for_each(|k| *k = true);
        k
    };
    let mut m = Vec::with_capacity(l);
    for g in 0..l {
        let group = &f.groups[g * e..(g + 1) * e];
        let logits: Vec<f32> = labels.iter().chain(background).map(|t| o.logit_scale * dot(group, t)).collect();
        let mut pre = logits.clone();
        softmax_in_place(&mut pre);
        let mut kept: Vec<f32> = logits.iter().zip(&keep).map(|(&v, &k)| if k { v } else { f32::NEG_INFINITY }).collect();
        softmax_in_place(&mut kept);
        m.push(kept.iter().zip(&pre).map(|(a, b)| a * b).collect::<Vec<f32>>());
    }
    // Background: threshold = min(bg_thresh, global max of the labels' scores); a group whose
    // best label score is below it gets 1 in the background column, else what the background
    // prompts won (0 without them); label scores unchanged.
    let global_max = m.iter().flat_map(|row| &row[..n]).cloned().fold(0.0f32, f32::max);
    let threshold = o.bg_thresh.min(global_max);
    m.into_iter()
        .map(|row| {
            let best = row[..n].iter().cloned().fold(0.0f32, f32::max);
            // A fold from +0.0: an empty f32 `sum()` is -0.0, and without prompts the column
            // must stay the release's exact 0.0.
            let prompts = row[n..].iter().fold(0.0f32, |a, b| a + b);
            let mut out = Vec::with_capacity(n + 1);
            out.push(if best < threshold { 1.0 } else { prompts });
            out.extend_from_slice(&row[..n]);
            out
        })
        .collect()
}

/// Step 1: the group each pixel of the window belongs to (soft assignment upsampled bilinearly to
/// the window, argmax over the centers).
pub fn pixel_groups(f: &GroupWindow) -> Vec<usize> {
    let [rows, cols] = f.grid;
    let p = rows * cols;
    let l = f.soft.len() / p;
    // Interleave [L, P] to [P, L] for the resize.
    let mut interleaved = vec![0f32; p * l];
    for g in 0..l {
        for i in 0..p {
            interleaved[i * l + g] = f.soft[g * p + i];
        }
    }
    let (w, h) = (f.window.width, f.window.height);
    let up = resize_bilinear(&interleaved, cols, rows, l, w, h);
    up.chunks_exact(l).map(argmax).collect()
}

/// Per-pixel scores [N + 1] at the rescaled resolution, averaged over windows, row-major.
#[derive(Clone)]
pub struct ScoreMap {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub scores: Vec<f32>,
}

pub fn score_map(
    width: usize,
    height: usize,
    windows: &[(GroupWindow, Vec<usize>)],
    labels: &[Vec<f32>],
    background: &[Vec<f32>],
    o: &CombineOptions,
) -> ScoreMap {
    let c = labels.len() + 1;
    let mut average = WindowAverage::new(width, height, c);
    for (f, groups) in windows {
        let m = group_scores(f, labels, background, o);
        average.add(f.window, |i| &m[groups[i]]);
    }
    ScoreMap { width, height, channels: c, scores: average.finish() }
}

/// Per-pixel vectors of `channels` values summed over the sliding windows of a `width` x
/// `height` image, then divided by each pixel's window count.
struct WindowAverage {
    width: usize,
    channels: usize,
    sums: Vec<f32>,
    counts: Vec<u16>,
}

impl WindowAverage {
    fn new(width: usize, height: usize, channels: usize) -> Self {
        Self { width, channels, sums: vec![0f32; width * height * channels], counts: vec![0u16; width * height] }
    }

    /// Adds `at(i)`, the values of the window's pixel i (row-major in the window), to its image pixel.
    fn add<'a>(&mut self, win: Window, at: impl Fn(usize) -> &'a [f32]) {
        let c = self.channels;
        for y in 0..win.height {
            for x in 0..win.width {
                let px = (win.y + y) * self.width + win.x + x;
                self.sums[px * c..(px + 1) * c].iter_mut().zip(at(y * win.width + x)).for_each(|(s, v)| *s += v);
                self.counts[px] += 1;
            }
        }
    }

    fn finish(mut self) -> Vec<f32> {
        let c = self.channels;
        for (px, &n) in self.counts.iter().enumerate() {
            if n > 1 {
                self.sums[px * c..(px + 1) * c].iter_mut().for_each(|v| *v /= n as f32);
            }
        }
        self.sums
    }
}

/// Averages `map` with `mirrored`, the score map of the left-right mirrored image, mirrored back.
pub fn average_mirrored(map: &mut ScoreMap, mirrored: &ScoreMap) {
    let (w, c) = (map.width, map.channels);
    assert_eq!((mirrored.width, mirrored.height, mirrored.channels), (w, map.height, c), "score maps of one size");
    for (row, mrow) in map.scores.chunks_exact_mut(w * c).zip(mirrored.scores.chunks_exact(w * c)) {
        for x in 0..w {
            let m = &mrow[(w - 1 - x) * c..(w - x) * c];
            row[x * c..(x + 1) * c].iter_mut().zip(m).for_each(|(v, &b)| *v = (*v + b) / 2.0);
        }
    }
}

/// Averages `map` with the score maps of the same image at other scales (src/pipeline/mod.rs
/// `SegmentOptions::extra_short_sides`), each resized bilinearly to `map`'s size first: every
/// scale weighs the same.
pub fn average_scales(map: &mut ScoreMap, others: &[ScoreMap]) {
    if others.is_empty() {
        return;
    }
    for other in others {
        assert_eq!(other.channels, map.channels, "score maps of one label list");
        let values = resized(other, map.width, map.height);
        map.scores.iter_mut().zip(&values).for_each(|(a, b)| *a += b);
    }
    let n = (1 + others.len()) as f32;
    map.scores.iter_mut().for_each(|a| *a /= n);
}

/// Replaces every pixel's scores by the mean over its segment (`segments`: one id per pixel of
/// the map, ids 0..n as src/pipeline/superpixels/ numbers them), so a segment takes one label.
pub fn snap_to_segments(map: &mut ScoreMap, segments: &[u32]) {
    let c = map.channels;
    assert_eq!(segments.len() * c, map.scores.len(), "one segment id per pixel of the score map");
    let n = segments.iter().max().map_or(0, |&m| m as usize + 1);
    let mut sums = vec![0f64; n * c];
    let mut counts = vec![0usize; n];
    for (s, px) in segments.iter().zip(map.scores.chunks_exact(c)) {
        let s = *s as usize;
        counts[s] += 1;
        sums[s * c..(s + 1) * c].iter_mut().zip(px).for_each(|(a, &v)| *a += v as f64);
    }
    for (s, px) in segments.iter().zip(map.scores.chunks_exact_mut(c)) {
        let s = *s as usize;
        let k = counts[s] as f64;
        px.iter_mut().zip(&sums[s * c..(s + 1) * c]).for_each(|(v, &a)| *v = (a / k) as f32);
    }
}

/// `map`'s values at `width x height` (bilinear when the size differs).
fn resized(map: &ScoreMap, width: usize, height: usize) -> Vec<f32> {
    if (width, height) == (map.width, map.height) {
        map.scores.clone()
    } else {
        resize_bilinear(&map.scores, map.width, map.height, map.channels, width, height)
    }
}

/// Resizes the score map to the original size and takes the argmax per pixel: the label map
/// (0 = background, i = label i) and each pixel's winning score.
pub fn label_map(map: &ScoreMap, width: usize, height: usize) -> (Vec<u8>, Vec<f32>) {
    let mut labels = Vec::with_capacity(width * height);
    let mut best_scores = Vec::with_capacity(width * height);
    for s in resized(map, width, height).chunks_exact(map.channels) {
        let best = argmax(s);
        labels.push(best as u8);
        best_scores.push(s[best]);
    }
    (labels, best_scores)
}

/// The dense protocol (NACLIP's and ClearCLIP's segmentors, mmseg's sliding-window inference):
/// per window, the cosine logits of every patch against every word (the labels, then the
/// background class's words), bilinearly upsampled from the patch grid to the window; summed
/// over the windows of the rescaled image (`resized_size`) and divided by each pixel's window
/// count; resized to `width x height`; one softmax of `logit_scale` x logits over all words; per
/// class the best probability of its words (class 0 the background words', each label its own,
/// as the methods' `postprocess_result` does); background (0) where class 0 wins (a tie
/// included) or the best class's probability is below `bg_thresh`, else 1 + the best label.
/// Returns the label map and each pixel's best class probability.
#[allow(clippy::too_many_arguments)]
pub fn dense_label_map(
    resized_size: (usize, usize),
    windows: &[PatchWindow],
    labels: &[Vec<f32>],
    background: &[Vec<f32>],
    logit_scale: f32,
    bg_thresh: f32,
    width: usize,
    height: usize,
) -> (Vec<u8>, Vec<f32>) {
    let n = labels.len();
    if n == 0 {
        return (vec![0; width * height], vec![0.0; width * height]);
    }
    let words: Vec<&Vec<f32>> = labels.iter().chain(background).collect();
    let m = words.len();
    let (rw, rh) = resized_size;
    let mut average = WindowAverage::new(rw, rh, m);
    for f in windows {
        let [rows, cols] = f.grid;
        let e = f.patches.len() / (rows * cols).max(1);
        // Logits [P, M], interleaved for the resize.
        let mut logits = Vec::with_capacity(rows * cols * m);
        for patch in f.patches.chunks_exact(e) {
            logits.extend(words.iter().map(|t| dot(patch, t)));
        }
        let up = resize_bilinear(&logits, cols, rows, m, f.window.width, f.window.height);
        average.add(f.window, |i| &up[i * m..(i + 1) * m]);
    }
    let logits = average.finish();
    let mut map = Vec::with_capacity(width * height);
    let mut best_probs = Vec::with_capacity(width * height);
    let mut probs = vec![0f32; m];
    let mut decide = |pixel: &[f32]| {
        probs.iter_mut().zip(pixel).for_each(|(p, &v)| *p = v * logit_scale);
        softmax_in_place(&mut probs);
        let best = argmax(&probs[..n]);
        let background_best = probs[n..].iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if background_best >= probs[best] {
            map.push(0);
            best_probs.push(background_best);
        } else {
            map.push(if probs[best] < bg_thresh { 0 } else { best as u8 + 1 });
            best_probs.push(probs[best]);
        }
    };
    // Row by row at the image's size: the full-size logits (a photo's pixels times the words)
    // are never held at once.
    if (width, height) == (rw, rh) {
        logits.chunks_exact(m).for_each(&mut decide);
    } else {
        resize_bilinear_rows(&logits, rw, rh, m, width, height, |_, row| row.chunks_exact(m).for_each(&mut decide));
    }
    (map, best_probs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_are_averaged_at_the_first_scale_size_each_weighing_the_same() {
        // 4x2 map, two channels: [1, 0] everywhere; another scale at twice the size, [0, 1]
        // everywhere; a third the same size as the first, [0, 0] on the left half, [1, 1] on the right.
        let mut map = ScoreMap { width: 4, height: 2, channels: 2, scores: [1.0, 0.0].repeat(8) };
        let big = ScoreMap { width: 8, height: 4, channels: 2, scores: [0.0, 1.0].repeat(32) };
        let half: Vec<f32> = (0..8).flat_map(|i| if i % 4 < 2 { [0.0, 0.0] } else { [1.0, 1.0] }).collect();
        let same = ScoreMap { width: 4, height: 2, channels: 2, scores: half };
        let alone = map.clone();
        average_scales(&mut map, &[]);
        assert_eq!(map.scores, alone.scores, "no other scale leaves the map as it is");
        average_scales(&mut map, &[big, same]);
        assert_eq!((map.width, map.height), (4, 2));
        for (i, px) in map.scores.chunks_exact(2).enumerate() {
            let want = if i % 4 < 2 { [1.0 / 3.0, 1.0 / 3.0] } else { [2.0 / 3.0, 2.0 / 3.0] };
            assert!((px[0] - want[0]).abs() < 1e-6 && (px[1] - want[1]).abs() < 1e-6, "pixel {i}: {px:?}, expected {want:?}");
        }
    }

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = dot(v, v).sqrt();
        v.iter().map(|x| x / n).collect()
    }

    fn features() -> GroupWindow {
        // Two groups: group 0 looks like label 0, group 1 like label 1; 2x2 grid, left column
        // group 0, right column group 1.
        GroupWindow {
            window: Window { x: 0, y: 0, width: 4, height: 4 },
            grid: [2, 2],
            soft: vec![0.9, 0.1, 0.9, 0.1, 0.1, 0.9, 0.1, 0.9],
            groups: [unit(&[1.0, 0.1, 0.0]), unit(&[0.0, 1.0, 0.1])].concat(),
            image: unit(&[1.0, 1.0, 0.0]),
        }
    }

    #[test]
    fn dense_patches_take_their_closest_label_unless_no_label_is_probable_enough() {
        // A 1x2 grid over a 2x4 window: the left patch is label 0's, the right one sits between
        // labels 0 and 1.
        let labels = vec![unit(&[1.0, 0.0, 0.0]), unit(&[0.0, 1.0, 0.0])];
        let f = PatchWindow {
            window: Window { x: 0, y: 0, width: 4, height: 2 },
            grid: [1, 2],
            patches: [unit(&[1.0, 0.0, 0.0]), unit(&[1.0, 1.0, 0.0])].concat(),
        };
        let windows = [f];
        let (map, probs) = dense_label_map((4, 2), &windows, &labels, &[], 40.0, 0.1, 4, 2);
        assert_eq!(&map[..4], &[1, 1, 1, 1], "logits are interpolated before the softmax");
        assert!((probs[3] - 0.5).abs() < 1e-6, "the right edge is a tie: {}", probs[3]);
        // At threshold 0.9 the undecided right edge is background.
        let (map, _) = dense_label_map((4, 2), &windows, &labels, &[], 40.0, 0.9, 4, 2);
        assert_eq!(&map[..4], &[1, 1, 1, 0]);
    }

    #[test]
    fn background_words_share_one_softmax_and_class_zero_takes_their_best() {
        // Three patches over a 6x1 window: label 0's, between label 0 and the wall, the sky's.
        let labels = vec![unit(&[1.0, 0.0, 0.0])];
        let background = vec![unit(&[0.0, 1.0, 0.0]), unit(&[0.0, 0.0, 1.0])];
        let f = PatchWindow {
            window: Window { x: 0, y: 0, width: 3, height: 1 },
            grid: [1, 3],
            patches: [unit(&[1.0, 0.0, 0.0]), unit(&[1.0, 0.9, 0.0]), unit(&[0.0, 0.0, 1.0])].concat(),
        };
        let windows = [f];
        let (map, probs) = dense_label_map((3, 1), &windows, &labels, &background, 40.0, 0.1, 3, 1);
        assert_eq!(map, vec![1, 1, 0], "the sky's patch is background, the others the label's");
        // The middle patch: one softmax over the label and both words (not over classes).
        let logits = [dot(&unit(&[1.0, 0.9, 0.0]), &labels[0]), dot(&unit(&[1.0, 0.9, 0.0]), &background[0]), dot(&unit(&[1.0, 0.9, 0.0]), &background[1])];
        let mut p: Vec<f32> = logits.iter().map(|l| l * 40.0).collect();
        softmax_in_place(&mut p);
        assert!((probs[1] - p[0]).abs() < 1e-6, "{} vs {}", probs[1], p[0]);
        // Without the words the label wins everywhere.
        let (map, _) = dense_label_map((3, 1), &windows, &labels, &[], 40.0, 0.1, 3, 1);
        assert_eq!(map, vec![1, 1, 1]);
    }

    #[test]
    fn groups_take_their_closest_label_and_pixels_their_group() {
        let labels = vec![unit(&[1.0, 0.0, 0.0]), unit(&[0.0, 1.0, 0.0]), unit(&[0.0, 0.0, 1.0])];
        let o = CombineOptions { bg_thresh: 0.0, top_k: 5, logit_scale: 100.0 };
        let f = features();
        let groups = pixel_groups(&f);
        assert_eq!(&groups[..4], &[0, 0, 1, 1]);
        let map = score_map(4, 4, &[(f, groups)], &labels, &[], &o);
        let (labels_out, _) = label_map(&map, 4, 4);
        assert_eq!(&labels_out[..4], &[1, 1, 2, 2]); // label i is channel i + 1
    }

    #[test]
    fn top_k_drops_labels_the_image_does_not_show() {
        // With k = 1 only the best image-level label survives for every group.
        let labels = vec![unit(&[1.0, 0.0, 0.0]), unit(&[0.0, 1.0, 0.3])];
        let mut f = features();
        f.image = unit(&[1.0, 0.0, 0.0]);
        let o = CombineOptions { bg_thresh: 0.0, top_k: 1, logit_scale: 100.0 };
        let m = group_scores(&f, &labels, &[], &o);
        assert_eq!(m[1][2], 0.0, "label 1 was cut by top-k");
        assert!(m[1][1] > 0.0);
    }

    #[test]
    fn weak_groups_become_background() {
        let labels = vec![unit(&[1.0, 0.0, 0.0]), unit(&[0.0, 1.0, 0.0])];
        let f = features();
        let o = CombineOptions { bg_thresh: 0.99, top_k: 5, logit_scale: 1.0 };
        // At logit scale 1 every score is ~0.25: the global max is below 0.99, so only groups
        // below the global max become background, and the best group stays foreground.
        let m = group_scores(&f, &labels, &[], &o);
        let backgrounds = m.iter().filter(|r| r[0] == 1.0).count();
        assert_eq!(backgrounds, 1);
    }

    #[test]
    fn a_group_its_background_prompt_wins_is_background() {
        // Group 0 looks like label 0; group 1 like the background prompt (label 1 is far from both).
        let labels = vec![unit(&[1.0, 0.0, 0.0]), unit(&[0.0, 0.0, 1.0])];
        let background = vec![unit(&[0.0, 1.0, 0.0])];
        // top_k 1 keeps label 0 only; the background prompt is never dropped by the ranking.
        let o = CombineOptions { bg_thresh: 0.0, top_k: 1, logit_scale: 100.0 };
        let m = group_scores(&features(), &labels, &background, &o);
        assert_eq!(m[0].len(), 3);
        assert_eq!(argmax(&m[0]), 1, "{:?}", m[0]);
        assert_eq!(argmax(&m[1]), 0, "{:?}", m[1]);
        assert!(m[1][0] > 0.9, "{:?}", m[1]);
        // Without the prompt the same group takes the one kept label (no threshold), and the
        // background column is the release's +0.0.
        let m = group_scores(&features(), &labels, &[], &o);
        assert_eq!(argmax(&m[1]), 1, "{:?}", m[1]);
        assert!(m.iter().all(|row| row[0].to_bits() == 0f32.to_bits()), "{m:?}");
    }

    #[test]
    fn overlapping_windows_are_averaged() {
        let labels = vec![unit(&[1.0, 0.0, 0.0]), unit(&[0.0, 1.0, 0.0])];
        let o = CombineOptions { bg_thresh: 0.0, top_k: 5, logit_scale: 100.0 };
        let a = features();
        let mut b = features();
        b.window.x = 2;
        let (ga, gb) = (pixel_groups(&a), pixel_groups(&b));
        let map = score_map(6, 4, &[(a.clone(), ga.clone()), (b, gb)], &labels, &[], &o);
        let single = score_map(4, 4, &[(a, ga)], &labels, &[], &o);
        // Column 0 is covered once: same as the single window.
        assert_eq!(&map.scores[..3], &single.scores[..3]);
        // Column 2 is covered by both: the mean of window a's column 2 and window b's column 0.
        let c = 3;
        let want: Vec<f32> = (0..c).map(|k| (single.scores[2 * c + k] + single.scores[k]) / 2.0).collect();
        assert_eq!(&map.scores[2 * c..3 * c], &want[..]);
    }

    #[test]
    fn snapping_gives_each_segment_the_mean_of_its_scores() {
        // Four pixels, two channels; segment 0 is pixels 0 and 3, segment 1 pixels 1 and 2.
        let mut map = ScoreMap { width: 2, height: 2, channels: 2, scores: vec![0.2, 0.8, 1.0, 0.0, 0.6, 0.4, 0.6, 0.4] };
        snap_to_segments(&mut map, &[0, 1, 1, 0]);
        let want = [0.4, 0.6, 0.8, 0.2, 0.8, 0.2, 0.4, 0.6];
        for (got, want) in map.scores.iter().zip(want) {
            assert!((got - want).abs() < 1e-6, "{:?}", map.scores);
        }
        // Pixel 0 alone would be label 1, pixel 3 alone label 0: snapped, both take label 1.
        let (labels, _) = label_map(&map, 2, 2);
        assert_eq!(labels, vec![1, 0, 0, 1]);
    }

    #[test]
    fn a_mirrored_map_is_mirrored_back_before_averaging() {
        // One row of three pixels, one channel: the mirrored image's map read right to left.
        let mut map = ScoreMap { width: 3, height: 1, channels: 1, scores: vec![1.0, 2.0, 3.0] };
        let mirrored = ScoreMap { width: 3, height: 1, channels: 1, scores: vec![30.0, 20.0, 10.0] };
        average_mirrored(&mut map, &mirrored);
        assert_eq!(map.scores, vec![5.5, 11.0, 16.5]);
    }
}
