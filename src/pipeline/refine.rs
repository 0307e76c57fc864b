//! Pixel-adaptive mask refinement (PAMR): the score map is replaced, a few times over, by a
//! weighted average of each pixel's neighbours at several distances, the weights high where the
//! neighbour's colour is like the pixel's. Label scores spread within an object and stop at its
//! edges. Superpixel snapping (src/pipeline/superpixels/) can only average within segments,
//! and a segment that straddles an object and its background takes one label for both; the
//! refinement runs after the snapping and undoes that at pixel level.
//!
//! Araslanov & Roth, "Single-Stage Semantic Segmentation from Image Labels", CVPR 2020
//! (https://arxiv.org/abs/2005.08104); their module, which this follows step by step:
//! https://github.com/visinf/1-stage-wseg/blob/master/models/mods/pamr.py. TCL
//! (https://arxiv.org/abs/2212.00785) reads open-vocabulary masks with it at the dilations below.
//!
//! The weights depend on the image only, so they are computed once per image
//! (`Segmenter::encode_image`) and a label edit pays only for the iterations. The iterations are
//! linear and act on each label's scores separately: a label whose scores are zero everywhere
//! (outside every window's top-k) stays zero and is skipped.

use super::{BadValue, PipelineError};

/// Neighbour distances in pixels: the 8 neighbours at each (the module's and TCL's setting).
pub const DILATIONS: [usize; 6] = [1, 2, 4, 8, 12, 24];

/// Neighbours per pixel.
const NEIGHBOURS: usize = 8 * DILATIONS.len();

/// Largest accepted iteration count: each pass costs 48 multiply-adds per pixel and label; the
/// module's users run 10, and a count in the hundreds is likelier a slip than a setting.
pub const MAX_ITERATIONS: usize = 100;

/// The refinement's setting (`SegmentOptions::refine`, a manifest entry's `refine`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefineParams {
    /// Averaging passes (the module's `num_iter`; TCL: 10).
    pub iterations: usize,
}

impl RefineParams {
    /// Reads the command line's form, a whole number of iterations (e.g. `10`).
    pub fn parse(text: &str) -> Result<Self, BadValue> {
        let iterations =
            text.trim().parse::<usize>().map_err(|_| BadValue(format!("\"{text}\" is not a whole number of iterations (e.g. 10)")))?;
        let p = RefineParams { iterations };
        p.validate()?;
        Ok(p)
    }

    pub fn validate(&self) -> Result<(), BadValue> {
        if self.iterations == 0 || self.iterations > MAX_ITERATIONS {
            return Err(BadValue(format!("refine iterations is {}, expected 1..={MAX_ITERATIONS}", self.iterations)));
        }
        Ok(())
    }
}

/// Each pixel's weights over its neighbours (softmax over `NEIGHBOURS`), for one image.
#[derive(Clone, Debug)]
pub struct Affinity {
    width: usize,
    height: usize,
    /// [width * height][NEIGHBOURS], in `offsets()` order.
    weights: Vec<f32>,
    /// The pixel index of each of those neighbours (the border replicated).
    neighbours: Vec<u32>,
}

/// Labels summed side by side per pixel in `Affinity::refine`, unrolled into four locals: a
/// pixel's sums stay in registers while its 48 neighbours are read (the page's CPU fallback runs
/// this in wasm without SIMD, our crate at opt-level 1 in dev builds, where memory traffic and
/// loop overhead are most of the cost).
const LANES: usize = 4;

/// The (dy, dx) of every neighbour, in the module's kernel order.
fn offsets() -> Vec<(isize, isize)> {
    let ring = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)];
    DILATIONS.iter().flat_map(|&d| ring.iter().map(move |&(y, x)| (y * d as isize, x * d as isize))).collect()
}

fn clamp(v: isize, n: usize) -> usize {
    v.clamp(0, n as isize - 1) as usize
}

/// The weights for an interleaved RGB image (`rgb.len() == width * height * 3`), as the module
/// computes them: per channel, |pixel - neighbour| over 0.1 x the standard deviation of the 3x3
/// neighbourhoods at every dilation (pixel included; replicate padding), negated, averaged over
/// the channels, softmax over the neighbours.
pub fn affinity(rgb: &[u8], width: usize, height: usize) -> Result<Affinity, PipelineError> {
    if width == 0 || height == 0 || rgb.len() != width * height * 3 {
        return Err(PipelineError::Image(format!("refine: an image of {width}x{height} needs {} RGB bytes, found {}", width * height * 3, rgb.len())));
    }
    let n = width * height;
    let offsets = offsets();
    let value = |x: usize, y: usize, c: usize| rgb[(y * width + x) * 3 + c] as f32 / 255.0;
    if n > u32::MAX as usize {
        return Err(PipelineError::Image(format!("refine: {width}x{height} is more than 2^32 pixels")));
    }
    let mut weights = vec![0f32; NEIGHBOURS * n];
    let mut neighbours = vec![0u32; NEIGHBOURS * n];
    let mut logits = [0f32; NEIGHBOURS];
    let count = (9 * DILATIONS.len()) as f32;
    for y in 0..height {
        for x in 0..width {
            let i = y * width + x;
            // The standard deviation (unbiased, as torch's `std`) of the pixel and its
            // neighbours at every dilation: the pixel itself once per dilation.
            let mut scale = [0f32; 3];
            for (c, s) in scale.iter_mut().enumerate() {
                let centre = value(x, y, c);
                let (mut sum, mut sq) = (DILATIONS.len() as f32 * centre, DILATIONS.len() as f32 * centre * centre);
                for &(dy, dx) in &offsets {
                    let v = value(clamp(x as isize + dx, width), clamp(y as isize + dy, height), c);
                    sum += v;
                    sq += v * v;
                }
                let var = ((sq - sum * sum / count) / (count - 1.0)).max(0.0);
                *s = 1e-8 + 0.1 * var.sqrt();
            }
            for (k, &(dy, dx)) in offsets.iter().enumerate() {
                let (nx, ny) = (clamp(x as isize + dx, width), clamp(y as isize + dy, height));
                neighbours[i * NEIGHBOURS + k] = (ny * width + nx) as u32;
                let diff: f32 = (0..3).map(|c| (value(x, y, c) - value(nx, ny, c)).abs() / scale[c]).sum();
                logits[k] = -diff / 3.0;
            }
            let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let mut total = 0.0;
            for l in logits.iter_mut() {
                *l = (*l - max).exp();
                total += *l;
            }
            for (k, l) in logits.iter().enumerate() {
                weights[i * NEIGHBOURS + k] = l / total;
            }
        }
    }
    Ok(Affinity { width, height, weights, neighbours })
}

impl Affinity {
    /// `iterations` passes over `scores`, interleaved [width * height][channels] (a score map's
    /// layout); each pass replaces every value by the weighted sum of its neighbours' values.
    pub fn refine(&self, scores: &mut [f32], channels: usize, iterations: usize) {
        let n = self.width * self.height;
        assert_eq!(scores.len(), n * channels, "refine: a score map of the affinity's size");
        let active: Vec<usize> = (0..channels).filter(|&c| scores.iter().skip(c).step_by(channels).any(|&v| v != 0.0)).collect();
        if active.is_empty() || iterations == 0 {
            return;
        }
        // The active labels side by side, padded with zeros to whole groups of LANES.
        let a = active.len().div_ceil(LANES) * LANES;
        let mut current = vec![0f32; n * a];
        for (px, row) in current.chunks_exact_mut(a).zip(scores.chunks_exact(channels)) {
            active.iter().zip(px.iter_mut()).for_each(|(&c, v)| *v = row[c]);
        }
        let mut next = vec![0f32; n * a];
        for _ in 0..iterations {
            for (i, out) in next.chunks_exact_mut(a).enumerate() {
                let weights = &self.weights[i * NEIGHBOURS..(i + 1) * NEIGHBOURS];
                let neighbours = &self.neighbours[i * NEIGHBOURS..(i + 1) * NEIGHBOURS];
                for (lane0, out) in (0..a).step_by(LANES).zip(out.chunks_exact_mut(LANES)) {
                    let (mut s0, mut s1, mut s2, mut s3) = (0f32, 0f32, 0f32, 0f32);
                    for (&w, &j) in weights.iter().zip(neighbours) {
                        let src = &current[j as usize * a + lane0..][..LANES];
                        s0 += w * src[0];
                        s1 += w * src[1];
                        s2 += w * src[2];
                        s3 += w * src[3];
                    }
                    out.copy_from_slice(&[s0, s1, s2, s3]);
                }
            }
            std::mem::swap(&mut current, &mut next);
        }
        for (row, px) in scores.chunks_exact_mut(channels).zip(current.chunks_exact(a)) {
            active.iter().zip(px).for_each(|(&c, &v)| row[c] = v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `w` x `h` image, black left of column `edge`, white from it on.
    fn halves(w: usize, h: usize, edge: usize) -> Vec<u8> {
        (0..w * h).flat_map(|i| if i % w < edge { [0u8; 3] } else { [255u8; 3] }).collect()
    }

    #[test]
    fn weights_sum_to_one_so_a_constant_map_stays_constant() {
        let rgb: Vec<u8> = (0..30 * 20 * 3).map(|i| (i * 37 % 251) as u8).collect();
        let aff = affinity(&rgb, 30, 20).unwrap();
        let mut scores: Vec<f32> = (0..30 * 20).flat_map(|_| [0.25f32, 0.75]).collect();
        aff.refine(&mut scores, 2, 5);
        for px in scores.chunks_exact(2) {
            assert!((px[0] - 0.25).abs() < 1e-5 && (px[1] - 0.75).abs() < 1e-5, "{px:?}");
        }
    }

    #[test]
    fn scores_that_leak_across_a_colour_edge_are_pulled_back() {
        // Label 0 belongs to the black left half, label 1 to the white right half, but label 0's
        // scores leak three columns past the edge (as a coarse patch grid leaves them).
        let (w, h, edge) = (40, 24, 20);
        let aff = affinity(&halves(w, h, edge), w, h).unwrap();
        let mut scores: Vec<f32> = (0..w * h).flat_map(|i| if i % w < edge + 3 { [0.9f32, 0.1] } else { [0.1, 0.9] }).collect();
        aff.refine(&mut scores, 2, 10);
        for (i, px) in scores.chunks_exact(2).enumerate() {
            let wins_left = px[0] > px[1];
            assert_eq!(wins_left, i % w < edge, "pixel ({}, {}): {px:?}", i % w, i / w);
        }
    }

    #[test]
    fn a_label_zero_everywhere_stays_zero_and_labels_do_not_mix() {
        let (w, h) = (16, 16);
        let aff = affinity(&halves(w, h, 5), w, h).unwrap();
        let mut scores: Vec<f32> = (0..w * h).flat_map(|i| [0.0f32, (i % 7) as f32, 1.0]).collect();
        let mut alone: Vec<f32> = scores.iter().skip(1).step_by(3).cloned().collect();
        aff.refine(&mut scores, 3, 4);
        aff.refine(&mut alone, 1, 4);
        assert!(scores.iter().step_by(3).all(|&v| v == 0.0));
        assert!(scores.iter().skip(1).step_by(3).zip(&alone).all(|(a, b)| a == b), "label 1 refined with others as alone");
        assert!(scores.iter().skip(2).step_by(3).all(|&v| (v - 1.0).abs() < 1e-5));
    }

    #[test]
    fn a_uniform_image_weighs_every_neighbour_alike_with_the_border_replicated() {
        // 3x2 pixels: every dilation but 1 reaches past the border, and a neighbour past it is
        // the border pixel (replicate padding). Weights are all 1/48; after one pass a pixel's
        // value is the share of its 48 neighbours that land on pixel (0, 0).
        let aff = affinity(&[200u8; 3 * 2 * 3], 3, 2).unwrap();
        let mut scores = vec![1.0f32, 0.0, 0.0, 0.0, 0.0, 0.0];
        aff.refine(&mut scores, 1, 1);
        // (0,0): up-left, up, left at each of 6 dilations; (1,0): up-left and left; (2,0): the
        // same at dilations 2 and up; (0,1): up-left and up; (1,1): up-left; (2,1): up-left from 2 up.
        let expected = [18.0, 12.0, 10.0, 12.0, 6.0, 5.0].map(|k: f32| k / 48.0);
        for (got, want) in scores.iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{scores:?} against {expected:?}");
        }
    }

    #[test]
    fn bad_settings_and_sizes_are_named() {
        assert_eq!(RefineParams::parse(" 10 ").unwrap(), RefineParams { iterations: 10 });
        assert!(RefineParams::parse("ten").unwrap_err().to_string().contains("\"ten\" is not a whole number"));
        assert!(RefineParams::parse("0").unwrap_err().to_string().contains("expected 1..=100"));
        assert!(RefineParams { iterations: 101 }.validate().unwrap_err().to_string().contains("is 101"));
        assert!(affinity(&[0u8; 10], 2, 2).unwrap_err().to_string().contains("needs 12 RGB bytes, found 10"));
    }
}
