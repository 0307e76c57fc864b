use super::smooth::{gaussian_half_kernel, numpy_sum, reflect};
use super::*;
use crate::data::SplitMix64;

/// A noise byte from the worlds' deterministic generator.
fn byte(rng: &mut SplitMix64) -> u8 {
    (rng.next_u64() >> 56) as u8
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
        let e = FelzenszwalbParams::parse(text).unwrap_err().to_string();
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
    let mut rng = SplitMix64::new(2024);
    let base: Vec<[u8; 3]> = (0..6).map(|_| [byte(&mut rng), byte(&mut rng), byte(&mut rng)]).collect();
    let rgb = image(w, h, |x, y| base[(x / 11 + 3 * (y / 12)) % 6].map(|v| v.saturating_add(byte(&mut rng) % 32)));
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
    let mut rng = SplitMix64::new(7);
    let rgb: Vec<u8> = (0..w * h * 3).map(|_| byte(&mut rng)).collect();
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
    let mut rng = SplitMix64::new(17);
    let big: Vec<u8> = (0..64 * 48 * 3).map(|_| byte(&mut rng) / 4 + 100).collect();
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
    let short = felzenszwalb(&[0; 11], 2, 2, &p).unwrap_err().to_string();
    assert!(short.contains("11 bytes"), "{short}");
    assert!(felzenszwalb(&[0; 13], 2, 2, &p).is_err());
    assert!(felzenszwalb(&[], 0, 2, &p).unwrap_err().to_string().contains("zero"));
    assert!(felzenszwalb(&[], 2, 0, &p).unwrap_err().to_string().contains("zero"));
    assert!(felzenszwalb(&[0; 12], 2, 2, &FelzenszwalbParams { sigma: -1.0, ..p }).is_err());
    assert!(felzenszwalb(&[0; 12], 2, 2, &FelzenszwalbParams { sigma: f32::NAN, ..p }).is_err());
    let big = felzenszwalb(&[0; 12], 2, 2, &FelzenszwalbParams { sigma: 1e9, ..p }).unwrap_err().to_string();
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
    let mut rng = SplitMix64::new(3);
    let costs: Vec<f64> = (0..60_000)
        .map(|_| match rng.next_u64() % 4 {
            // Exact ties, zeros, full-precision weights, and near-ties that round to the
            // same f32 but differ as f64 (the case the run fix-up exists for).
            0 => (rng.next_u64() % 5) as f64 * 0.25,
            1 => 0.0,
            2 => (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 1.8,
            _ => 0.3 + (rng.next_u64() % 64) as f64 * f64::EPSILON,
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
    let mut rng = SplitMix64::new(11);
    for (w, h, params) in [
        (48, 40, FelzenszwalbParams::default()),
        (33, 29, FelzenszwalbParams { scale: 50.0, sigma: 0.8, min_size: 20 }),
        (64, 17, FelzenszwalbParams { scale: 5.0, sigma: 0.0, min_size: 3 }),
        (40, 40, FelzenszwalbParams { scale: 1.0, sigma: 0.8, min_size: 0 }),
        (7, 1, FelzenszwalbParams { scale: 100.0, sigma: 2.0, min_size: 2 }),
    ] {
        // Blocky shapes plus noise: both large flat-ish regions and many near-ties.
        let base: Vec<[u8; 3]> = (0..16).map(|_| [byte(&mut rng), byte(&mut rng), byte(&mut rng)]).collect();
        let rgb = image(w, h, |x, y| base[(x / 12 + 4 * (y / 10)) % 16]);
        let noisy: Vec<u8> = rgb.iter().map(|&v| v.saturating_add(byte(&mut rng) % 24)).collect();
        for img in [&rgb, &noisy] {
            let fast = felzenszwalb(img, w, h, &params).unwrap();
            assert_eq!(fast, skimage_transcription(img, w, h, &params), "{w}x{h} {params:?}");
        }
    }
}
