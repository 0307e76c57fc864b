//! Step 2 of `felzenszwalb`: scipy's Gaussian smoothing of the image as `f64`, bit for bit.

use super::Workspace;

/// scipy's `reflect` boundary (d c b a | a b c d | d c b a): symmetric about the pixel edges, so
/// periodic with period `2 * len`, which also covers kernels wider than the image.
pub(super) fn reflect(i: isize, len: usize) -> usize {
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
pub(super) fn numpy_sum(a: &[f64]) -> f64 {
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
pub(super) fn gaussian_half_kernel(sigma: f64) -> Vec<f64> {
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
pub(super) fn smooth(rgb: &[u8], width: usize, height: usize, sigma: f64, ws: &mut Workspace) {
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
