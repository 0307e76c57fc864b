//! Step 3 of `felzenszwalb`: the 8-connected grid graph and its edges, sorted by exact weight
//! in skimage's order.

/// Edge ids: `direction * n + p`, where `p` is the edge's top-left pixel and the directions are
/// skimage's blocks in its `vstack` order (right, down, down-right, up-right). Ordering ids
/// therefore reproduces skimage's edge list order, which equal weights keep through the stable
/// sort, and decoding is branch-free (the sorted order visits directions at random).
#[derive(Clone, Copy)]
pub(super) struct EdgeIds {
    n: u32,
    /// Offsets of the two endpoints from `p`, per direction.
    first: [u32; 4],
    second: [u32; 4],
}

impl EdgeIds {
    pub(super) fn new(width: usize, height: usize) -> Self {
        let w = width as u32;
        // right (p+1, p), down (p+w, p), down-right (p+w+1, p), up-right (p+1, p+w): the pairs
        // as skimage lists them (the order inside a pair does not matter).
        EdgeIds { n: (width * height) as u32, first: [1, w, w + 1, 1], second: [0, 0, 0, w] }
    }

    pub(super) fn ends(self, id: u32) -> (u32, u32) {
        let dir = (id >= self.n) as usize + (id >= 2 * self.n) as usize + (id >= 3 * self.n) as usize;
        let p = id - dir as u32 * self.n;
        (p + self.first[dir], p + self.second[dir])
    }
}

/// The weighted 8-connected grid graph over the smoothed image.
pub(super) struct Graph<'a> {
    /// Smoothed interleaved RGB.
    pub(super) image: &'a [f64],
    pub(super) ids: EdgeIds,
}

impl Graph<'_> {
    /// Euclidean distance of two pixels' colours, as numpy computes it:
    /// `sqrt((d0*d0 + d1*d1) + d2*d2)`, so the weights are the very doubles skimage sorts.
    pub(super) fn dist(&self, p: usize, q: usize) -> f64 {
        let (x, z) = (&self.image[p * 3..p * 3 + 3], &self.image[q * 3..q * 3 + 3]);
        let (d0, d1, d2) = (x[0] - z[0], x[1] - z[1], x[2] - z[2]);
        (d0 * d0 + d1 * d1 + d2 * d2).sqrt()
    }

    /// The exact weight of an edge. Recomputed where needed (at merges and near-ties) rather
    /// than stored: a table of them would add 1.6 MB of cache traffic per 224x224 image.
    pub(super) fn cost(&self, id: u32) -> f64 {
        let (a, b) = self.ids.ends(id);
        self.dist(a as usize, b as usize)
    }
}

/// Fills `keys` with one key per edge, in id order (see `sort_keys`).
pub(super) fn build_edges(graph: &Graph, width: usize, height: usize, keys: &mut Vec<u64>) {
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
pub(super) fn sort_keys(keys: &mut Vec<u64>, scratch: &mut Vec<u64>, exact: impl Fn(u32) -> f64) {
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
