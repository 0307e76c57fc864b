//! Felzenszwalb–Huttenlocher graph segmentation, reproducing scikit-image's
//! `skimage.segmentation.felzenszwalb(image, scale, sigma, min_size)` on RGB `u8` images. The
//! SegCLIP release's reduction of the superpixel map to one label per ViT patch, the training
//! loss's target, lives with training (src/train/superpixel_targets.rs).
//!
//! The SegCLIP release computes its superpixel targets with skimage, so this follows skimage's
//! Cython implementation step by step rather than the original paper's C++ code:
//!
//! 1. the image becomes `f64` in [0, 1] (`img_as_float64`: multiply by `1/255`) and `scale` is
//!    divided by 255 (skimage does this "to behave like the reference implementation");
//! 2. each channel is smoothed by `scipy.ndimage.gaussian_filter` (mode `reflect`, truncate 4.0),
//!    rows (axis 0) first, then columns, with scipy's kernel and summation order;
//! 3. edges go to the right, down, down-right and up-right neighbours, weighted by the euclidean
//!    distance between the smoothed colours;
//! 4. edges are visited by increasing weight; two components merge when the edge is lighter than
//!    `min(Int(C) + scale / |C|)` over both, where skimage stores that threshold in a C `float`;
//! 5. a second pass over the same order merges any component still smaller than `min_size`;
//! 6. labels are renumbered 0..n in order of first appearance in raster order (skimage's roots are
//!    always the smallest pixel index of a component, so its `np.unique` numbering is exactly
//!    that order).
//!
//! All arithmetic that decides the edge order is done in `f64` in scipy's and numpy's operation
//! order, so the weights are the same doubles as skimage's and the partitions agree exactly, not
//! just approximately (checked against skimage 0.26 on synthetic and photographic images).
//!
//! The partition depends only on the edge order and the merge rule, not on which node union-find
//! picks as root, so union by size with path halving gives skimage's result while staying fast.

use std::cell::RefCell;

use super::{BadValue, PipelineError};

mod graph;
mod merge;
mod smooth;
#[cfg(test)]
mod tests;

use graph::{build_edges, sort_keys, EdgeIds, Graph};
use merge::{segment, Forest};
use smooth::smooth;

/// Parameters as skimage's `felzenszwalb` (the SegCLIP release uses scale 224, sigma 0.9, min_size 224).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
// `default`: a config may override a single field and keep the release values for the others.
#[serde(default, deny_unknown_fields)]
pub struct FelzenszwalbParams {
    /// Observation level: higher means larger segments (skimage divides it by 255 internally).
    pub scale: f32,
    /// Standard deviation of the Gaussian pre-smoothing, in pixels (0 disables it).
    pub sigma: f32,
    /// Components smaller than this many pixels are merged into a neighbour afterwards.
    pub min_size: usize,
}

impl Default for FelzenszwalbParams {
    /// The SegCLIP release's values.
    fn default() -> Self {
        FelzenszwalbParams { scale: 224.0, sigma: 0.9, min_size: 224 }
    }
}

impl FelzenszwalbParams {
    /// Reads `"SCALE,SIGMA,MIN_SIZE"` (as the command line writes it, e.g. `100,0.8,40`); the
    /// error names what is wrong and what was expected.
    pub fn parse(text: &str) -> Result<Self, BadValue> {
        let parts: Vec<&str> = text.split(',').map(str::trim).collect();
        if parts.len() != 3 {
            return Err(BadValue(format!("\"{text}\" has {} comma-separated values, expected 3: SCALE,SIGMA,MIN_SIZE (e.g. 100,0.8,40)", parts.len())));
        }
        let num = |name: &str, v: &str| v.parse::<f32>().map_err(|_| BadValue(format!("{name} \"{v}\" is not a number (in \"{text}\")")));
        let min_size = parts[2].parse::<usize>().map_err(|_| BadValue(format!("MIN_SIZE \"{}\" is not a whole number of pixels (in \"{text}\")", parts[2])))?;
        let p = FelzenszwalbParams { scale: num("SCALE", parts[0])?, sigma: num("SIGMA", parts[1])?, min_size };
        p.validate()?;
        Ok(p)
    }

    /// The parameters' own checks (`felzenszwalb` makes them too): a finite scale, a finite sigma
    /// in 0..=1000.
    pub fn validate(&self) -> Result<(), BadValue> {
        if !self.scale.is_finite() {
            return Err(BadValue(format!("superpixel scale must be finite, got {}", self.scale)));
        }
        if !self.sigma.is_finite() || self.sigma < 0.0 || self.sigma as f64 > MAX_SIGMA {
            return Err(BadValue(format!("superpixel sigma must be in 0..={MAX_SIGMA}, got {}", self.sigma)));
        }
        Ok(())
    }
}

/// Largest accepted `sigma`: the kernel has `8 * sigma + 1` taps, so an absurd value would
/// otherwise try to allocate (or loop over) billions of weights instead of failing cleanly.
const MAX_SIGMA: f64 = 1000.0;

/// Largest accepted image: edge ids are `direction * pixels + pixel` in a `u32`.
const MAX_PIXELS: usize = 1 << 30;

/// Largest image (512x512) whose buffers stay allocated per thread between calls (~34 MB).
const RETAINED_PIXELS: usize = 512 * 512;

/// Labels 0..n (contiguous, first-appearance order in raster order), row-major, len = width*height.
/// `rgb` is interleaved RGB u8, len = width*height*3. Returns an error naming the problem on a length mismatch or zero size.
///
/// Also errors on a negative or non-finite `sigma` (skimage raises on a negative one too), a
/// `sigma` above 1000, a non-finite `scale`, or an image of more than 2^30 pixels.
pub fn felzenszwalb(rgb: &[u8], width: usize, height: usize, params: &FelzenszwalbParams) -> Result<Vec<u32>, PipelineError> {
    if width == 0 || height == 0 {
        return Err(PipelineError::Image(format!("felzenszwalb: zero-sized image ({width}x{height})")));
    }
    let n = width.checked_mul(height).filter(|&n| n <= MAX_PIXELS);
    let n = n.ok_or_else(|| PipelineError::Image(format!("felzenszwalb: {width}x{height} is more than 2^30 pixels")))?;
    if rgb.len() != n * 3 {
        return Err(PipelineError::Image(format!("felzenszwalb: rgb has {} bytes, expected {width}*{height}*3 = {}", rgb.len(), n * 3)));
    }
    params.validate().map_err(|e| PipelineError::Image(format!("felzenszwalb: {e}")))?;
    let sigma = decimal_f64(params.sigma);
    let scale = decimal_f64(params.scale);

    let run = |ws: &mut Workspace| -> Vec<u32> {
        smooth(rgb, width, height, sigma, ws);
        let graph = Graph { image: &ws.smoothed, ids: EdgeIds::new(width, height) };
        build_edges(&graph, width, height, &mut ws.keys);
        sort_keys(&mut ws.keys, &mut ws.scratch, |id| graph.cost(id));
        segment(&ws.keys, &graph, &mut ws.forest, &mut ws.id_of_root, scale / 255.0, params.min_size)
    };
    // Training workers call this for every image; reusing one workspace per thread saves
    // allocating and page-faulting ~6 MB per 224x224 image, a large share of the run time.
    // Buffers for big images (~130 bytes a pixel) are not kept alive for the thread's lifetime.
    if n > RETAINED_PIXELS {
        return Ok(run(&mut Workspace::default()));
    }
    Ok(WORKSPACE.with(|ws| match ws.try_borrow_mut() {
        Ok(mut ws) => run(&mut ws),
        Err(_) => run(&mut Workspace::default()),
    }))
}

/// The `f64` the parameter's shortest decimal spelling denotes. The reference is called with
/// Python floats such as `sigma=0.9`; `0.9f32 as f64` is 0.89999997..., which would shift every
/// kernel weight, so the f32 is read back as the decimal a config file wrote.
fn decimal_f64(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(x as f64)
}

/// Buffers reused across calls on one thread (see `felzenszwalb`).
#[derive(Default)]
struct Workspace {
    /// First the image as `f64` in [0, 1], then (after both Gaussian passes) the smoothed image
    /// the edge weights are computed from; interleaved RGB.
    smoothed: Vec<f64>,
    /// After the vertical pass.
    vertical: Vec<f64>,
    /// One row padded by its reflection, for the horizontal pass.
    padded: Vec<f64>,
    /// Sort keys, `(weight as f32).to_bits() << 32 | edge id`, then sorted by exact weight.
    keys: Vec<u64>,
    scratch: Vec<u64>,
    forest: Forest,
    id_of_root: Vec<u32>,
}

thread_local! {
    static WORKSPACE: RefCell<Workspace> = RefCell::new(Workspace::default());
}
