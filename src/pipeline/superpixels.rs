//! Felzenszwalb–Huttenlocher graph segmentation, reproducing scikit-image's
//! `skimage.segmentation.felzenszwalb(image, scale, sigma, min_size)` on RGB `u8` images, and the
//! SegCLIP release's reduction of the superpixel map to one label per ViT patch.
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
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split(',').map(str::trim).collect();
        if parts.len() != 3 {
            return Err(format!("\"{text}\" has {} comma-separated values, expected 3: SCALE,SIGMA,MIN_SIZE (e.g. 100,0.8,40)", parts.len()));
        }
        let num = |name: &str, v: &str| v.parse::<f32>().map_err(|_| format!("{name} \"{v}\" is not a number (in \"{text}\")"));
        let min_size = parts[2].parse::<usize>().map_err(|_| format!("MIN_SIZE \"{}\" is not a whole number of pixels (in \"{text}\")", parts[2]))?;
        let p = FelzenszwalbParams { scale: num("SCALE", parts[0])?, sigma: num("SIGMA", parts[1])?, min_size };
        p.validate()?;
        Ok(p)
    }

    /// The parameters' own checks (`felzenszwalb` makes them too): a finite scale, a finite sigma
    /// in 0..=1000.
    pub fn validate(&self) -> Result<(), String> {
        if !self.scale.is_finite() {
            return Err(format!("superpixel scale must be finite, got {}", self.scale));
        }
        if !self.sigma.is_finite() || self.sigma < 0.0 || self.sigma as f64 > MAX_SIGMA {
            return Err(format!("superpixel sigma must be in 0..={MAX_SIGMA}, got {}", self.sigma));
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
/// `rgb` is interleaved RGB u8, len = width*height*3. Returns Err(String) naming the problem on a length mismatch or zero size.
///
/// Also errors on a negative or non-finite `sigma` (skimage raises on a negative one too), a
/// `sigma` above 1000, a non-finite `scale`, or an image of more than 2^30 pixels.
pub fn felzenszwalb(rgb: &[u8], width: usize, height: usize, params: &FelzenszwalbParams) -> Result<Vec<u32>, String> {
    if width == 0 || height == 0 {
        return Err(format!("felzenszwalb: zero-sized image ({width}x{height})"));
    }
    let n = width.checked_mul(height).filter(|&n| n <= MAX_PIXELS);
    let n = n.ok_or_else(|| format!("felzenszwalb: {width}x{height} is more than 2^30 pixels"))?;
    if rgb.len() != n * 3 {
        return Err(format!("felzenszwalb: rgb has {} bytes, expected {width}*{height}*3 = {}", rgb.len(), n * 3));
    }
    params.validate().map_err(|e| format!("felzenszwalb: {e}"))?;
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

/// The release's patch label: floor(mean of the superpixel ids of the patch's pixels), for a `patch`-sized grid, row-major [rows*cols]. width and height must be multiples of patch (Err otherwise).
///
/// The mean is taken with exact integer arithmetic (sum, then floor division), so no float
/// rounding can push a mean just below an integer up to it.
pub fn patch_labels(labels: &[u32], width: usize, height: usize, patch: usize) -> Result<Vec<u32>, String> {
    if width == 0 || height == 0 {
        return Err(format!("patch_labels: zero-sized label map ({width}x{height})"));
    }
    if patch == 0 {
        return Err("patch_labels: patch size must be positive".to_string());
    }
    let n = width.checked_mul(height).ok_or_else(|| format!("patch_labels: {width}x{height} overflows usize"))?;
    if labels.len() != n {
        return Err(format!("patch_labels: {} labels, expected {width}*{height} = {n}", labels.len()));
    }
    if !width.is_multiple_of(patch) || !height.is_multiple_of(patch) {
        return Err(format!("patch_labels: {width}x{height} is not a multiple of the patch size {patch}"));
    }
    let (rows, cols) = (height / patch, width / patch);
    let area = (patch * patch) as u64;
    // Accumulate whole label rows into per-column sums so the label map is read sequentially.
    let mut sums = vec![0u64; cols];
    let mut out = Vec::with_capacity(rows * cols);
    for row in 0..rows {
        sums.iter_mut().for_each(|s| *s = 0);
        for y in row * patch..(row + 1) * patch {
            let line = &labels[y * width..(y + 1) * width];
            for (sum, chunk) in sums.iter_mut().zip(line.chunks_exact(patch)) {
                *sum += chunk.iter().map(|&l| l as u64).sum::<u64>();
            }
        }
        // The mean of u32 labels is at most u32::MAX, so the quotient fits.
        out.extend(sums.iter().map(|&s| (s / area) as u32));
    }
    Ok(out)
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

/// scipy's `reflect` boundary (d c b a | a b c d | d c b a): symmetric about the pixel edges, so
/// periodic with period `2 * len`, which also covers kernels wider than the image.
fn reflect(i: isize, len: usize) -> usize {
    let period = 2 * len as isize;
    let m = i.rem_euclid(period) as usize;
    if m >= len {
        2 * len - 1 - m
    } else {
        m
    }
}

/// numpy's pairwise summation (`phi.sum()` in scipy's kernel), so the normalised weights are the
/// same doubles as scipy's.
fn numpy_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        a.iter().fold(0.0, |acc, &x| acc + x)
    } else if n <= 128 {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&a[..8]);
        let full = n - n % 8;
        for block in a[8..full].chunks_exact(8) {
            for (acc, &x) in r.iter_mut().zip(block) {
                *acc += x;
            }
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &x in &a[full..] {
            res += x;
        }
        res
    } else {
        let mut half = n / 2;
        half -= half % 8;
        numpy_sum(&a[..half]) + numpy_sum(&a[half..])
    }
}

/// The non-negative half of scipy's `_gaussian_kernel1d(sigma, 0, radius)`: `w[j]` weighs the
/// samples `j` away from the centre (the kernel is symmetric).
fn gaussian_half_kernel(sigma: f64) -> Vec<f64> {
    // `int(truncate * sd + 0.5)` with truncate 4.0; int() truncates, as `as` does for positives.
    let radius = (4.0 * sigma + 0.5) as i64;
    let coef = -0.5 / (sigma * sigma);
    let phi: Vec<f64> = (-radius..=radius).map(|x| (coef * (x * x) as f64).exp()).collect();
    let sum = numpy_sum(&phi);
    phi[radius as usize..].iter().map(|&p| p / sum).collect()
}

/// `img_as_float64` then `gaussian(sigma=[s, s, 0], mode='reflect')` into `ws.smoothed`
/// (interleaved RGB `f64`).
///
/// scipy's symmetric-kernel loop computes `x[i] * w[0]`, then adds `(x[i-j] + x[i+j]) * w[j]`
/// for `j = r..1`; the same order here keeps the values bit-identical, so the edge order (and
/// thus the segmentation) matches skimage's rather than differing on near-ties.
fn smooth(rgb: &[u8], width: usize, height: usize, sigma: f64, ws: &mut Workspace) {
    // skimage multiplies by the reciprocal (np.multiply(image, 1.0 / 255)) rather than dividing.
    let inv = 1.0 / 255.0;
    // `smoothed` holds the unsmoothed image until the horizontal pass overwrites it.
    ws.smoothed.clear();
    ws.smoothed.extend(rgb.iter().map(|&v| v as f64 * inv));
    // scipy skips axes whose sigma is not above 1e-15.
    if sigma <= 1e-15 {
        return;
    }
    let image = &ws.smoothed;
    let w = gaussian_half_kernel(sigma);
    let r = w.len() - 1;
    let row_len = width * 3;

    // Axis 0 (down the columns): whole rows are combined, which vectorises.
    let vertical = &mut ws.vertical;
    vertical.clear();
    for y in 0..height {
        let start = vertical.len();
        vertical.extend(image[y * row_len..(y + 1) * row_len].iter().map(|&c| c * w[0]));
        let out = &mut vertical[start..];
        for j in (1..=r).rev() {
            let above = reflect(y as isize - j as isize, height);
            let below = reflect(y as isize + j as isize, height);
            let a = &image[above * row_len..(above + 1) * row_len];
            let b = &image[below * row_len..(below + 1) * row_len];
            for ((o, &x), &z) in out.iter_mut().zip(a).zip(b) {
                *o += (x + z) * w[j];
            }
        }
    }

    // Axis 1 (along the rows): each row is padded with its reflection once, then combined as
    // shifted slices of the padded row, again vectorisable.
    let source: Vec<usize> = (-(r as isize)..(width + r) as isize).map(|x| reflect(x, width)).collect();
    let (padded, smoothed) = (&mut ws.padded, &mut ws.smoothed);
    smoothed.clear();
    for row in vertical.chunks_exact(row_len) {
        padded.clear();
        for &s in &source {
            padded.extend_from_slice(&row[s * 3..s * 3 + 3]);
        }
        let start = smoothed.len();
        smoothed.extend(padded[r * 3..r * 3 + row_len].iter().map(|&c| c * w[0]));
        let out = &mut smoothed[start..];
        for j in (1..=r).rev() {
            let left = &padded[(r - j) * 3..];
            let right = &padded[(r + j) * 3..];
            for ((o, &x), &z) in out.iter_mut().zip(left).zip(right) {
                *o += (x + z) * w[j];
            }
        }
    }
}

/// Edge ids: `direction * n + p`, where `p` is the edge's top-left pixel and the directions are
/// skimage's blocks in its `vstack` order (right, down, down-right, up-right). Ordering ids
/// therefore reproduces skimage's edge list order, which equal weights keep through the stable
/// sort, and decoding is branch-free (the sorted order visits directions at random).
#[derive(Clone, Copy)]
struct EdgeIds {
    n: u32,
    /// Offsets of the two endpoints from `p`, per direction.
    first: [u32; 4],
    second: [u32; 4],
}

impl EdgeIds {
    fn new(width: usize, height: usize) -> Self {
        let w = width as u32;
        // right (p+1, p), down (p+w, p), down-right (p+w+1, p), up-right (p+1, p+w): the pairs
        // as skimage lists them (the order inside a pair does not matter).
        EdgeIds { n: (width * height) as u32, first: [1, w, w + 1, 1], second: [0, 0, 0, w] }
    }

    fn ends(self, id: u32) -> (u32, u32) {
        let dir = (id >= self.n) as usize + (id >= 2 * self.n) as usize + (id >= 3 * self.n) as usize;
        let p = id - dir as u32 * self.n;
        (p + self.first[dir], p + self.second[dir])
    }
}

/// The weighted 8-connected grid graph over the smoothed image.
struct Graph<'a> {
    /// Smoothed interleaved RGB.
    image: &'a [f64],
    ids: EdgeIds,
}

impl Graph<'_> {
    /// Euclidean distance of two pixels' colours, as numpy computes it:
    /// `sqrt((d0*d0 + d1*d1) + d2*d2)`, so the weights are the very doubles skimage sorts.
    fn dist(&self, p: usize, q: usize) -> f64 {
        let (x, z) = (&self.image[p * 3..p * 3 + 3], &self.image[q * 3..q * 3 + 3]);
        let (d0, d1, d2) = (x[0] - z[0], x[1] - z[1], x[2] - z[2]);
        (d0 * d0 + d1 * d1 + d2 * d2).sqrt()
    }

    /// The exact weight of an edge. Recomputed where needed (at merges and near-ties) rather
    /// than stored: a table of them would add 1.6 MB of cache traffic per 224x224 image.
    fn cost(&self, id: u32) -> f64 {
        let (a, b) = self.ids.ends(id);
        self.dist(a as usize, b as usize)
    }
}

/// Fills `keys` with one key per edge, in id order (see `sort_keys`).
fn build_edges(graph: &Graph, width: usize, height: usize, keys: &mut Vec<u64>) {
    let (w, h, n) = (width, height, width * height);
    keys.clear();
    for dir in 0..4 {
        let (first, second) = (graph.ids.first[dir] as usize, graph.ids.second[dir] as usize);
        // Right and the diagonals need a column to the right; all but right a row below.
        let (cols, rows) = (if dir == 1 { w } else { w - 1 }, if dir == 0 { h } else { h - 1 });
        for y in 0..rows {
            for x in 0..cols {
                let p = y * w + x;
                let cost = graph.dist(p + first, p + second);
                keys.push(((cost as f32).to_bits() as u64) << 32 | (dir * n + p) as u64);
            }
        }
    }
}

/// Sorts the keys by exact `f64` weight, ties in id order: a stable sort of skimage's edge list.
///
/// An 8-byte key holds the weight rounded to `f32` above the edge id, and a stable LSD radix
/// sort (three 11-bit digits) on that rounded weight beats a comparison sort of the ~200k edges
/// of a 224x224 image. Rounding is monotone, so the order is already right except inside runs of
/// equal rounded weight: those are scanned against the exact weights (linear; exact ties such as
/// the zeros of flat areas are already in id order) and re-sorted only where two different
/// weights rounded to the same `f32` (within ~6e-8 relative of each other, which is rare).
fn sort_keys(keys: &mut Vec<u64>, scratch: &mut Vec<u64>, exact: impl Fn(u32) -> f64) {
    const BITS: u32 = 11;
    const BUCKETS: usize = 1 << BITS;
    // Only the upper half (the rounded weight) is sorted on; ids are already ascending.
    const PASSES: usize = 32usize.div_ceil(BITS as usize);
    let digit = |key: u64, pass: usize| ((key >> (32 + pass as u32 * BITS)) as usize) & (BUCKETS - 1);

    // All histograms in one read of the keys.
    let mut counts = [[0u32; BUCKETS]; PASSES];
    for &k in keys.iter() {
        for (pass, hist) in counts.iter_mut().enumerate() {
            hist[digit(k, pass)] += 1;
        }
    }
    scratch.clear();
    scratch.resize(keys.len(), 0);
    for (pass, hist) in counts.iter().enumerate() {
        // A digit shared by every key (e.g. the sign and high exponent bits) needs no pass.
        if keys.first().is_none_or(|&k| hist[digit(k, pass)] as usize == keys.len()) {
            continue;
        }
        let mut offsets = [0usize; BUCKETS];
        let mut total = 0usize;
        for (offset, &c) in offsets.iter_mut().zip(hist.iter()) {
            *offset = total;
            total += c as usize;
        }
        for &k in keys.iter() {
            let d = digit(k, pass);
            scratch[offsets[d]] = k;
            offsets[d] += 1;
        }
        std::mem::swap(keys, scratch);
    }

    // Exact order inside runs of equal rounded weight.
    let cost = |k: u64| exact(k as u32);
    let mut start = 0;
    while start < keys.len() {
        let high = keys[start] >> 32;
        let end = start + keys[start..].iter().take_while(|&&k| k >> 32 == high).count();
        let run = &mut keys[start..end];
        if run.windows(2).any(|p| cost(p[1]) < cost(p[0])) {
            // Keys are unique (they contain the id), so this unstable sort is deterministic
            // and keeps equal weights in id order.
            run.sort_unstable_by(|&a, &b| cost(a).total_cmp(&cost(b)).then(a.cmp(&b)));
        }
        start = end;
    }
}

/// Disjoint sets over the pixels (union by size, path halving), with each root's size and
/// merge threshold side by side: the merge test reads both roots' entries, one cache line each.
#[derive(Default)]
struct Forest {
    parent: Vec<u32>,
    roots: Vec<Root>,
}

#[derive(Clone, Copy)]
struct Root {
    /// `Int(C) + scale / |C|` as skimage rounds it (to a C `float`), where `Int(C)`, the heaviest
    /// edge of the component's minimum spanning tree, is the weight of its last merging edge.
    /// It changes only when the component does, so it is computed at the merge: most edges
    /// compare against it, and recomputing it would cost two divisions per edge.
    threshold: f32,
    size: u32,
}

impl Forest {
    fn reset(&mut self, n: usize, scale: f64) {
        self.parent.clear();
        self.parent.extend(0..n as u32);
        self.roots.clear();
        // A single pixel: Int(C) = 0 and |C| = 1, so 0 + scale / 1 = scale exactly.
        self.roots.resize(n, Root { threshold: scale as f32, size: 1 });
    }

    /// Root of `x`, halving the path on the way (each visited node skips to its grandparent).
    fn find(&mut self, mut x: u32) -> u32 {
        loop {
            let p = self.parent[x as usize];
            if p == x {
                return x;
            }
            let gp = self.parent[p as usize];
            self.parent[x as usize] = gp;
            x = gp;
        }
    }

    fn size(&self, root: u32) -> u32 {
        self.roots[root as usize].size
    }

    /// Joins two distinct roots, the smaller under the larger, and returns the new root, which
    /// carries the summed size.
    fn union(&mut self, ra: u32, rb: u32) -> u32 {
        let (sa, sb) = (self.size(ra), self.size(rb));
        let (root, child) = if sa < sb { (rb, ra) } else { (ra, rb) };
        self.parent[child as usize] = root;
        self.roots[root as usize].size = sa + sb;
        root
    }
}

/// The greedy merge, the `min_size` pass and the relabelling, on the sorted keys.
/// `scale` is already divided by 255.
fn segment(keys: &[u64], graph: &Graph, forest: &mut Forest, id_of_root: &mut Vec<u32>, scale: f64, min_size: usize) -> Vec<u32> {
    let n = graph.image.len() / 3;
    forest.reset(n, scale);
    for &k in keys {
        let id = k as u32;
        let (a, b) = graph.ids.ends(id);
        let (ra, rb) = (forest.find(a), forest.find(b));
        if ra == rb {
            continue;
        }
        // skimage keeps `cint + scale / size` in a C float (`cdef float inner_cost0`) and
        // compares the double weight against it; the rounding is reproduced so ties agree.
        let (ta, tb) = (forest.roots[ra as usize].threshold, forest.roots[rb as usize].threshold);
        let limit = if ta < tb { ta } else { tb };
        // The key's f32-rounded weight decides unless it equals the (f32) limit: rounding to
        // nearest is monotone, so rounded < limit implies weight < limit, and rounded > limit
        // implies weight > limit. Only then is the exact weight needed.
        let rounded = f32::from_bits((k >> 32) as u32);
        let merge = if rounded != limit { rounded < limit } else { graph.cost(id) < limit as f64 };
        if merge {
            let root = forest.union(ra, rb);
            let threshold = (graph.cost(id) + scale / forest.size(root) as f64) as f32;
            forest.roots[root as usize].threshold = threshold;
        }
    }

    // Lightest edges first, so a small component joins the neighbour it is most similar to.
    // Once no component is below min_size nothing can change any more, so stop there.
    let small = |size: u32| (size as usize) < min_size;
    let mut small_left = (0..n as u32).filter(|&p| forest.parent[p as usize] == p && small(forest.size(p))).count();
    for &k in keys {
        if small_left == 0 {
            break;
        }
        let (a, b) = graph.ids.ends(k as u32);
        let (ra, rb) = (forest.find(a), forest.find(b));
        if ra == rb {
            continue;
        }
        let (sa, sb) = (forest.size(ra), forest.size(rb));
        if small(sa) || small(sb) {
            let root = forest.union(ra, rb);
            small_left = small_left + small(forest.size(root)) as usize - small(sa) as usize - small(sb) as usize;
        }
    }

    id_of_root.clear();
    id_of_root.resize(n, u32::MAX);
    let mut next = 0u32;
    (0..n as u32)
        .map(|p| {
            let root = forest.find(p) as usize;
            if id_of_root[root] == u32::MAX {
                id_of_root[root] = next;
                next += 1;
            }
            id_of_root[root]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic noise without a crate dependency (SplitMix64).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn byte(&mut self) -> u8 {
            (self.next() >> 56) as u8
        }
    }

    fn image(width: usize, height: usize, mut colour: impl FnMut(usize, usize) -> [u8; 3]) -> Vec<u8> {
        let mut rgb = Vec::with_capacity(width * height * 3);
        for y in 0..height {
            for x in 0..width {
                rgb.extend_from_slice(&colour(x, y));
            }
        }
        rgb
    }

    fn smoothed(rgb: &[u8], width: usize, height: usize, sigma: f64) -> Vec<f64> {
        let mut ws = Workspace::default();
        smooth(rgb, width, height, sigma, &mut ws);
        ws.smoothed
    }

    fn count(labels: &[u32]) -> usize {
        labels.iter().max().map_or(0, |&m| m as usize + 1)
    }

    /// Contiguous ids, numbered by first appearance in raster order.
    fn assert_canonical(labels: &[u32]) {
        let mut next = 0;
        for &l in labels {
            assert!(l <= next, "label {l} appears before {next}");
            if l == next {
                next += 1;
            }
        }
    }

    #[test]
    fn params_parse_from_the_command_line_form() {
        assert_eq!(FelzenszwalbParams::parse(" 100, 0.8 ,40").unwrap(), FelzenszwalbParams { scale: 100.0, sigma: 0.8, min_size: 40 });
        for (text, want) in [
            ("100,0.8", "expected 3"),
            ("big,0.8,40", "SCALE \"big\""),
            ("100,0.8,4.5", "MIN_SIZE \"4.5\""),
            ("100,-1,40", "sigma must be in 0..=1000"),
            ("inf,0.8,40", "scale must be finite"),
        ] {
            let e = FelzenszwalbParams::parse(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn default_params_are_the_release_values() {
        let p = FelzenszwalbParams::default();
        assert_eq!((p.scale, p.sigma, p.min_size), (224.0, 0.9, 224));
        assert_eq!(decimal_f64(p.sigma), 0.9f64);
    }

    #[test]
    fn uniform_image_is_one_segment() {
        let rgb = image(37, 23, |_, _| [90, 140, 30]);
        let labels = felzenszwalb(&rgb, 37, 23, &FelzenszwalbParams::default()).unwrap();
        assert_eq!(labels, vec![0; 37 * 23]);
    }

    #[test]
    fn two_halves_split_at_the_boundary() {
        let (w, h) = (40, 24);
        let rgb = image(w, h, |x, _| if x < 17 { [220, 30, 30] } else { [20, 40, 210] });
        let labels = felzenszwalb(&rgb, w, h, &FelzenszwalbParams::default()).unwrap();
        let expected: Vec<u32> = (0..w * h).map(|p| u32::from(p % w >= 17)).collect();
        assert_eq!(labels, expected);
    }

    #[test]
    fn four_quadrants_are_four_segments() {
        let (w, h) = (48, 40);
        let colours = [[250, 20, 20], [20, 230, 20], [20, 20, 240], [240, 240, 240]];
        let quadrant = |x: usize, y: usize| (y >= 20) as usize * 2 + (x >= 24) as usize;
        let rgb = image(w, h, |x, y| colours[quadrant(x, y)]);
        let expected: Vec<u32> = (0..w * h).map(|p| quadrant(p % w, p / w) as u32).collect();
        for sigma in [0.0, 0.3] {
            let params = FelzenszwalbParams { sigma, ..FelzenszwalbParams::default() };
            assert_eq!(felzenszwalb(&rgb, w, h, &params).unwrap(), expected, "sigma {sigma}");
        }
        // With the release's sigma 0.9 the blurred two-pixel seams between four colours form
        // thin components of their own, and the min_size pass hands the whole cross of seams to
        // the top-left quadrant. That is what skimage 0.26 returns for this image too.
        let labels = felzenszwalb(&rgb, w, h, &FelzenszwalbParams::default()).unwrap();
        let skimage: Vec<u32> = (0..w * h)
            .map(|p| {
                let (x, y) = (p % w, p / w);
                match (y, x) {
                    (19..=20, _) | (0..=18, 0..=24) | (21.., 23..=24) => 0,
                    (0..=18, _) => 1,
                    (_, 0..=22) => 2,
                    _ => 3,
                }
            })
            .collect();
        assert_eq!(labels, skimage);
    }

    #[test]
    fn matches_skimage_on_a_noisy_block_image() {
        // skimage.segmentation.felzenszwalb(img, 10, 0.8, 5) with skimage 0.26 / scipy 1.17, on
        // the image built below (the same SplitMix64 stream re-implemented in Python); one
        // character per label, 0-9 then a-z then A-Z.
        #[rustfmt::skip]
        const SKIMAGE: [&str; 24] = [
            "00111110002345555555567888888888",
            "00001100002344999999967888888888",
            "00000000002344999999967888888888",
            "aaa00000002349999999967888888888",
            "aaa00000002349999999967888888888",
            "aaa0000000b349999999967888888888",
            "aa00000000b349999999967888888888",
            "aaccc00000b349999999967888888888",
            "ccccccccc0b34949999996788888888d",
            "ccccccccccb344499999e6788888888d",
            "ccccccccccb344444eeee67888888ddd",
            "ffffffffffb3gggggggggghhhhhhhhhh",
            "iiiiiiiiiijkllllllllllmmmmmmmmmm",
            "nnnnnnnnnnjkooooooooopqrrrrrrrss",
            "nnnnnnnnnnjktuuuuoooopqrrrrrrrrs",
            "nnnnnnnnnvjktuuuuuuuupqrrrrrrrrs",
            "wwnnnnnnvvjktuuuuuuuupqrrrrrrrrs",
            "wwnnnnnnvvjktuuuuuuuupqrrrrrrrrs",
            "wwnnnnnnvvjktuuuuuuuupqrrrrrrrrr",
            "nnnnnnxxvvjkyuuuuuuzzAqrrrrrrrrr",
            "nnnnnnxxxxjkyyuuuuuzzAqrrrrrrrrr",
            "nnnnnxxxxxjkyyyuuuuzzAqrrrrrrrBB",
            "nnnxxxxxxxjkyyyuuuuzzAqrrrrrrrBB",
            "nnnxxxxxxxjkyyyuuzzzzAqrrrrrrrBB",
        ];
        let (w, h) = (32, 24);
        let mut rng = Rng(2024);
        let base: Vec<[u8; 3]> = (0..6).map(|_| [rng.byte(), rng.byte(), rng.byte()]).collect();
        let rgb = image(w, h, |x, y| base[(x / 11 + 3 * (y / 12)) % 6].map(|v| v.saturating_add(rng.byte() % 32)));
        let labels = felzenszwalb(&rgb, w, h, &FelzenszwalbParams { scale: 10.0, sigma: 0.8, min_size: 5 }).unwrap();
        let digits = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
        let expected: Vec<u32> = SKIMAGE.concat().chars().map(|c| digits.find(c).unwrap() as u32).collect();
        assert_eq!(labels, expected);
    }

    #[test]
    fn min_size_merges_a_speck_into_its_surroundings() {
        let (w, h) = (32, 32);
        let speck = |x: usize, y: usize| (10..13).contains(&x) && (5..8).contains(&y);
        let rgb = image(w, h, |x, y| if speck(x, y) { [0, 0, 0] } else { [255, 255, 255] });
        // Unsmoothed, the 3x3 speck is its own segment while min_size allows 9 pixels...
        let keep = FelzenszwalbParams { scale: 224.0, sigma: 0.0, min_size: 9 };
        let labels = felzenszwalb(&rgb, w, h, &keep).unwrap();
        let expected: Vec<u32> = (0..w * h).map(|p| u32::from(speck(p % w, p / w))).collect();
        assert_eq!(labels, expected);
        // ...and is absorbed as soon as it is below min_size.
        let merge = FelzenszwalbParams { min_size: 10, ..keep };
        assert_eq!(felzenszwalb(&rgb, w, h, &merge).unwrap(), vec![0; w * h]);
        // The release parameters (smoothing, min_size 224) absorb it as well.
        assert_eq!(felzenszwalb(&rgb, w, h, &FelzenszwalbParams::default()).unwrap(), vec![0; w * h]);
    }

    #[test]
    fn every_segment_reaches_min_size_and_labels_are_canonical() {
        let (w, h) = (64, 48);
        let mut rng = Rng(7);
        let rgb: Vec<u8> = (0..w * h * 3).map(|_| rng.byte()).collect();
        for params in [
            FelzenszwalbParams::default(),
            FelzenszwalbParams { scale: 20.0, sigma: 0.5, min_size: 5 },
            FelzenszwalbParams { scale: 1.0, sigma: 0.0, min_size: 0 },
        ] {
            let labels = felzenszwalb(&rgb, w, h, &params).unwrap();
            assert_eq!(labels.len(), w * h);
            assert_canonical(&labels);
            let mut sizes = vec![0usize; count(&labels)];
            labels.iter().for_each(|&l| sizes[l as usize] += 1);
            assert!(sizes.iter().all(|&s| s >= params.min_size.min(w * h)), "{params:?}: {sizes:?}");
        }
        // Pure noise at scale 1 without min_size stays heavily over-segmented.
        let fine = felzenszwalb(&rgb, w, h, &FelzenszwalbParams { scale: 1.0, sigma: 0.0, min_size: 0 }).unwrap();
        assert!(count(&fine) > w * h / 4);
    }

    #[test]
    fn labels_follow_first_appearance_in_raster_order() {
        // Stripes whose colours are unrelated to their position: the top stripe must still be 0.
        let (w, h) = (30, 45);
        let colours = [[0, 0, 250], [250, 250, 0], [0, 250, 0]];
        let rgb = image(w, h, |_, y| colours[y / 15]);
        let labels = felzenszwalb(&rgb, w, h, &FelzenszwalbParams::default()).unwrap();
        let expected: Vec<u32> = (0..w * h).map(|p| (p / w / 15) as u32).collect();
        assert_eq!(labels, expected);
    }

    #[test]
    fn reused_buffers_do_not_leak_between_calls() {
        // The per-thread workspace is reused; results must not depend on what ran before.
        let mut rng = Rng(17);
        let big: Vec<u8> = (0..64 * 48 * 3).map(|_| rng.byte() / 4 + 100).collect();
        let small = image(9, 7, |x, _| if x < 4 { [0, 0, 0] } else { [255, 255, 255] });
        let p = FelzenszwalbParams { scale: 30.0, sigma: 0.7, min_size: 10 };
        let first = felzenszwalb(&big, 64, 48, &p).unwrap();
        let small_alone = felzenszwalb(&small, 9, 7, &p).unwrap();
        assert_eq!(felzenszwalb(&big, 64, 48, &p).unwrap(), first);
        assert_eq!(felzenszwalb(&small, 9, 7, &p).unwrap(), small_alone);
        assert_eq!(small_alone, (0..63).map(|i| u32::from(i % 9 >= 4)).collect::<Vec<_>>());
        // A fresh thread (fresh workspace) agrees too.
        let fresh = std::thread::spawn(move || felzenszwalb(&big, 64, 48, &p).unwrap()).join().unwrap();
        assert_eq!(fresh, first);
    }

    #[test]
    fn tiny_and_degenerate_shapes_do_not_panic() {
        let params = FelzenszwalbParams { scale: 224.0, sigma: 5.0, min_size: 3 };
        for (w, h) in [(1, 1), (1, 7), (9, 1), (2, 2), (3, 2)] {
            let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 37 % 256) as u8).collect();
            let labels = felzenszwalb(&rgb, w, h, &params).unwrap();
            assert_eq!(labels.len(), w * h);
            assert_canonical(&labels);
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let p = FelzenszwalbParams::default();
        assert!(felzenszwalb(&[0; 12], 2, 2, &p).is_ok());
        let short = felzenszwalb(&[0; 11], 2, 2, &p).unwrap_err();
        assert!(short.contains("11 bytes"), "{short}");
        assert!(felzenszwalb(&[0; 13], 2, 2, &p).is_err());
        assert!(felzenszwalb(&[], 0, 2, &p).unwrap_err().contains("zero"));
        assert!(felzenszwalb(&[], 2, 0, &p).unwrap_err().contains("zero"));
        assert!(felzenszwalb(&[0; 12], 2, 2, &FelzenszwalbParams { sigma: -1.0, ..p }).is_err());
        assert!(felzenszwalb(&[0; 12], 2, 2, &FelzenszwalbParams { sigma: f32::NAN, ..p }).is_err());
        let big = felzenszwalb(&[0; 12], 2, 2, &FelzenszwalbParams { sigma: 1e9, ..p }).unwrap_err();
        assert!(big.starts_with("felzenszwalb: ") && big.contains("sigma must be in 0..=1000"), "{big}");
        assert!(felzenszwalb(&[0; 12], 2, 2, &FelzenszwalbParams { scale: f32::INFINITY, ..p }).is_err());
    }

    #[test]
    fn reflect_matches_scipy_symmetric_extension() {
        // scipy 'reflect' on [a b c]: ... c b a | a b c | c b a | a b c ...
        // (np.pad(np.arange(3), 7, mode='symmetric'), which is scipy's 'reflect', from index 0.)
        let got: Vec<usize> = (-7..10).map(|i| reflect(i, 3)).collect();
        assert_eq!(got, vec![0, 0, 1, 2, 2, 1, 0, 0, 1, 2, 2, 1, 0, 0, 1, 2, 2]);
        assert!((-5..5).all(|i| reflect(i, 1) == 0));
    }

    #[test]
    fn gaussian_kernel_is_scipys() {
        // repr(scipy.ndimage._filters._gaussian_kernel1d(0.9, 0, 4)[4:]) (scipy 1.17)
        let w = gaussian_half_kernel(0.9);
        let scipy = [
            4.432_691_776_743_569e-1_f64,
            2.391_027_221_645_975e-1,
            3.752_627_700_027_392e-2,
            1.713_643_241_178_847e-3,
            2.276_875_677_129_121e-5,
        ];
        assert_eq!(w.len(), scipy.len());
        for (a, b) in w.iter().zip(scipy) {
            // Equal up to the last bit or two that `exp` implementations may differ in.
            assert!((a - b).abs() <= 4.0 * f64::EPSILON * b, "{a:e} vs {b:e}");
        }
        let total = w[0] + 2.0 * w[1..].iter().sum::<f64>();
        assert!((total - 1.0).abs() < 1e-12);
    }

    #[test]
    fn smoothing_an_impulse_gives_the_outer_product_of_the_kernel() {
        let (w, h) = (11, 11);
        let rgb = image(w, h, |x, y| if (x, y) == (5, 5) { [255, 0, 0] } else { [0, 0, 0] });
        let out = smoothed(&rgb, w, h, 0.9);
        let k = gaussian_half_kernel(0.9);
        for y in 0..h {
            for x in 0..w {
                let weight = |d: usize| k.get(d).copied().unwrap_or(0.0);
                let expected = weight(y.abs_diff(5)) * weight(x.abs_diff(5));
                assert!((out[(y * w + x) * 3] - expected).abs() < 1e-15);
                assert_eq!(out[(y * w + x) * 3 + 1], 0.0);
            }
        }
    }

    #[test]
    fn numpy_sum_matches_plain_sum_up_to_rounding() {
        for n in [0, 1, 7, 8, 9, 17, 128, 129, 1000] {
            let a: Vec<f64> = (0..n).map(|i| 1.0 / (i as f64 + 1.0)).collect();
            let plain: f64 = a.iter().sum();
            assert!((numpy_sum(&a) - plain).abs() < 1e-12, "n = {n}");
        }
        // The 8-accumulator order: ((a0+a1)+(a2+a3))+((a4+a5)+(a6+a7)), then a8.
        let a = [1e16, 1.0, -1e16, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0];
        assert_eq!(numpy_sum(&a), ((1e16 + 1.0) + (-1e16 + 1.0)) + 1.0);
    }

    #[test]
    fn sort_keys_is_a_stable_sort_by_exact_weight() {
        let mut rng = Rng(3);
        let costs: Vec<f64> = (0..60_000)
            .map(|_| match rng.next() % 4 {
                // Exact ties, zeros, full-precision weights, and near-ties that round to the
                // same f32 but differ as f64 (the case the run fix-up exists for).
                0 => (rng.next() % 5) as f64 * 0.25,
                1 => 0.0,
                2 => (rng.next() >> 11) as f64 / (1u64 << 53) as f64 * 1.8,
                _ => 0.3 + (rng.next() % 64) as f64 * f64::EPSILON,
            })
            .collect();
        let mut keys: Vec<u64> = (0..costs.len()).map(|id| ((costs[id] as f32).to_bits() as u64) << 32 | id as u64).collect();
        let mut expected: Vec<usize> = (0..costs.len()).collect();
        expected.sort_by(|&a, &b| costs[a].total_cmp(&costs[b]));
        sort_keys(&mut keys, &mut Vec::new(), |id| costs[id as usize]);
        let got: Vec<usize> = keys.iter().map(|&k| k as u32 as usize).collect();
        assert_eq!(got, expected);
        let mut empty = Vec::new();
        sort_keys(&mut empty, &mut Vec::new(), |id| costs[id as usize]);
        assert!(empty.is_empty());
    }

    #[test]
    fn edge_ids_decode_to_skimage_pairs() {
        let ids = EdgeIds::new(5, 4);
        let n = 20;
        assert_eq!(ids.ends(7), (8, 7)); // right of (2, 1)
        assert_eq!(ids.ends(n + 7), (12, 7)); // below
        assert_eq!(ids.ends(2 * n + 7), (13, 7)); // below right
        assert_eq!(ids.ends(3 * n + 7), (8, 12)); // (3, 1) and (2, 2): up-right from (2, 2)
        // Every pixel's red channel is its index: weights tell the endpoints apart.
        let image: Vec<f64> = (0..n).flat_map(|p| [p as f64, 0.0, 0.0]).collect();
        let graph = Graph { image: &image, ids };
        let mut keys = Vec::new();
        build_edges(&graph, 5, 4, &mut keys);
        assert_eq!(keys.len(), 4 * 4 + 3 * 5 + 2 * 3 * 4);
        let got: Vec<(u32, f64)> = keys.iter().map(|&k| (k as u32, graph.cost(k as u32))).collect();
        assert!(got.windows(2).all(|p| p[0].0 < p[1].0), "keys in id order");
        // Per direction, |a - b| is the index step of the neighbour.
        for (id, cost) in got {
            assert_eq!(cost, [1.0, 5.0, 6.0, 4.0][(id / n) as usize]);
            assert_eq!(f32::from_bits((keys.iter().find(|&&k| k as u32 == id).unwrap() >> 32) as u32), cost as f32);
        }
    }

    /// A literal transcription of skimage's Cython code (the edge list built as numpy slices,
    /// a comparison sort, roots are the smallest index, no rank) to check that the fast version
    /// gives the same labels.
    fn skimage_transcription(rgb: &[u8], w: usize, h: usize, p: &FelzenszwalbParams) -> Vec<u32> {
        let image = smoothed(rgb, w, h, decimal_f64(p.sigma));
        let dist = |a: usize, b: usize| -> f64 {
            let d: Vec<f64> = (0..3).map(|c| image[a * 3 + c] - image[b * 3 + c]).collect();
            (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt()
        };
        let mut edges: Vec<(f64, usize, usize)> = Vec::new();
        let mut push = |a: usize, b: usize| edges.push((dist(a, b), a, b));
        (0..h).for_each(|y| (0..w - 1).for_each(|x| push(y * w + x + 1, y * w + x)));
        (0..h - 1).for_each(|y| (0..w).for_each(|x| push((y + 1) * w + x, y * w + x)));
        (0..h - 1).for_each(|y| (0..w - 1).for_each(|x| push((y + 1) * w + x + 1, y * w + x)));
        (0..h - 1).for_each(|y| (0..w - 1).for_each(|x| push(y * w + x + 1, (y + 1) * w + x)));
        edges.sort_by(|a, b| a.0.total_cmp(&b.0));
        let scale = decimal_f64(p.scale) / 255.0;
        let mut forest: Vec<usize> = (0..w * h).collect();
        let find = |f: &Vec<usize>, mut n: usize| {
            while f[n] < n {
                n = f[n];
            }
            n
        };
        let mut size = vec![1usize; w * h];
        let mut cint = vec![0.0f64; w * h];
        for &(cost, a, b) in &edges {
            let (s0, s1) = (find(&forest, a), find(&forest, b));
            if s0 == s1 {
                continue;
            }
            let i0 = (cint[s0] + scale / size[s0] as f64) as f32;
            let i1 = (cint[s1] + scale / size[s1] as f64) as f32;
            if cost < i0.min(i1) as f64 {
                let (root, child) = (s0.min(s1), s0.max(s1));
                forest[child] = root;
                size[root] = size[s0] + size[s1];
                cint[root] = cost;
            }
        }
        for &(_, a, b) in &edges {
            let (s0, s1) = (find(&forest, a), find(&forest, b));
            if s0 != s1 && (size[s0] < p.min_size || size[s1] < p.min_size) {
                let (root, child) = (s0.min(s1), s0.max(s1));
                forest[child] = root;
                size[root] = size[s0] + size[s1];
            }
        }
        // np.unique(roots, return_inverse=True): ids by increasing root index.
        let roots: Vec<usize> = (0..w * h).map(|n| find(&forest, n)).collect();
        let mut sorted = roots.clone();
        sorted.sort_unstable();
        sorted.dedup();
        roots.iter().map(|r| sorted.binary_search(r).unwrap() as u32).collect()
    }

    #[test]
    fn fast_path_equals_the_literal_transcription() {
        let mut rng = Rng(11);
        for (w, h, params) in [
            (48, 40, FelzenszwalbParams::default()),
            (33, 29, FelzenszwalbParams { scale: 50.0, sigma: 0.8, min_size: 20 }),
            (64, 17, FelzenszwalbParams { scale: 5.0, sigma: 0.0, min_size: 3 }),
            (40, 40, FelzenszwalbParams { scale: 1.0, sigma: 0.8, min_size: 0 }),
            (7, 1, FelzenszwalbParams { scale: 100.0, sigma: 2.0, min_size: 2 }),
        ] {
            // Blocky shapes plus noise: both large flat-ish regions and many near-ties.
            let base: Vec<[u8; 3]> = (0..16).map(|_| [rng.byte(), rng.byte(), rng.byte()]).collect();
            let rgb = image(w, h, |x, y| base[(x / 12 + 4 * (y / 10)) % 16]);
            let noisy: Vec<u8> = rgb.iter().map(|&v| v.saturating_add(rng.byte() % 24)).collect();
            for img in [&rgb, &noisy] {
                let fast = felzenszwalb(img, w, h, &params).unwrap();
                assert_eq!(fast, skimage_transcription(img, w, h, &params), "{w}x{h} {params:?}");
            }
        }
    }

    #[test]
    fn patch_labels_floor_the_mean() {
        #[rustfmt::skip]
        let labels = [
            0, 1,  1, 1,
            1, 1,  2, 2,
            3, 3,  4, 5,
            3, 3,  5, 5,
        ];
        // Means 0.75, 1.5, 3, 4.75: floored, not rounded.
        assert_eq!(patch_labels(&labels, 4, 4, 2).unwrap(), vec![0, 1, 3, 4]);
        // One 4x4 patch: 40 / 16 = 2.5.
        assert_eq!(patch_labels(&labels, 4, 4, 4).unwrap(), vec![2]);
        assert_eq!(patch_labels(&labels, 4, 4, 1).unwrap(), labels.to_vec());
        // Non-square: 6x2 with patch 2 is one row of three patches, row-major.
        let wide = [0, 0, 2, 2, 7, 9, 0, 1, 2, 3, 8, 8];
        assert_eq!(patch_labels(&wide, 6, 2, 2).unwrap(), vec![0, 2, 8]);
        // Large ids do not overflow the sum.
        assert_eq!(patch_labels(&[u32::MAX; 4], 2, 2, 2).unwrap(), vec![u32::MAX]);
    }

    #[test]
    fn patch_labels_reject_bad_shapes() {
        let labels = [0u32; 24];
        assert!(patch_labels(&labels, 6, 4, 2).is_ok());
        assert!(patch_labels(&labels, 6, 4, 4).unwrap_err().contains("multiple"));
        assert!(patch_labels(&labels, 6, 4, 0).is_err());
        assert!(patch_labels(&labels[..23], 6, 4, 2).unwrap_err().contains("23 labels"));
        assert!(patch_labels(&[], 0, 4, 2).is_err());
    }

    #[test]
    fn release_pipeline_shape() {
        // 224x224 with 16-pixel patches gives the 14x14 grid the model uses.
        let mut rng = Rng(5);
        let rgb = image(224, 224, |x, y| {
            let n = rng.byte() % 16;
            if x.abs_diff(112).pow(2) + y.abs_diff(112).pow(2) < 60 * 60 {
                [200 + n, 40, 40]
            } else {
                [30, 30 + n, 160]
            }
        });
        let labels = felzenszwalb(&rgb, 224, 224, &FelzenszwalbParams::default()).unwrap();
        let patches = patch_labels(&labels, 224, 224, 16).unwrap();
        assert_eq!(patches.len(), 14 * 14);
        assert!(patches.iter().all(|&l| (l as usize) < count(&labels)));
    }
}
