//! Steps 4 to 6 of `felzenszwalb`: the greedy merge, the `min_size` pass and the relabelling.

use super::graph::Graph;

/// Disjoint sets over the pixels (union by size, path halving), with each root's size and
/// merge threshold side by side: the merge test reads both roots' entries, one cache line each.
#[derive(Default)]
pub(super) struct Forest {
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
pub(super) fn segment(keys: &[u64], graph: &Graph, forest: &mut Forest, id_of_root: &mut Vec<u32>, scale: f64, min_size: usize) -> Vec<u32> {
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
