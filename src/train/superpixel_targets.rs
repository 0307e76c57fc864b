//! The superpixel loss's targets: the SegCLIP release's reduction of a Felzenszwalb superpixel
//! map (src/pipeline/superpixels/) to one label per ViT patch. The loss itself is
//! `losses::superpixel_kl`.

/// A label map `patch_labels` cannot reduce.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PatchLabelsError {
    #[error("patch_labels: zero-sized label map ({width}x{height})")]
    Empty { width: usize, height: usize },
    #[error("patch_labels: patch size must be positive")]
    ZeroPatch,
    #[error("patch_labels: {width}x{height} overflows usize")]
    TooLarge { width: usize, height: usize },
    #[error("patch_labels: {found} labels, expected {width}*{height} = {}", width * height)]
    Length { found: usize, width: usize, height: usize },
    #[error("patch_labels: {width}x{height} is not a multiple of the patch size {patch}")]
    NotMultiple { width: usize, height: usize, patch: usize },
}

/// The release's patch label: floor(mean of the superpixel ids of the patch's pixels), for a `patch`-sized grid, row-major [rows*cols]. width and height must be multiples of patch (Err otherwise).
///
/// The mean is taken with exact integer arithmetic (sum, then floor division), so no float
/// rounding can push a mean just below an integer up to it.
pub fn patch_labels(labels: &[u32], width: usize, height: usize, patch: usize) -> Result<Vec<u32>, PatchLabelsError> {
    if width == 0 || height == 0 {
        return Err(PatchLabelsError::Empty { width, height });
    }
    if patch == 0 {
        return Err(PatchLabelsError::ZeroPatch);
    }
    let n = width.checked_mul(height).ok_or(PatchLabelsError::TooLarge { width, height })?;
    if labels.len() != n {
        return Err(PatchLabelsError::Length { found: labels.len(), width, height });
    }
    if !width.is_multiple_of(patch) || !height.is_multiple_of(patch) {
        return Err(PatchLabelsError::NotMultiple { width, height, patch });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::SplitMix64;
    use crate::pipeline::superpixels::{felzenszwalb, FelzenszwalbParams};

    fn image(width: usize, height: usize, mut colour: impl FnMut(usize, usize) -> [u8; 3]) -> Vec<u8> {
        let mut rgb = Vec::with_capacity(width * height * 3);
        for y in 0..height {
            for x in 0..width {
                rgb.extend_from_slice(&colour(x, y));
            }
        }
        rgb
    }

    fn count(labels: &[u32]) -> usize {
        labels.iter().max().map_or(0, |&m| m as usize + 1)
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
        assert!(patch_labels(&labels, 6, 4, 4).unwrap_err().to_string().contains("multiple"));
        assert!(patch_labels(&labels, 6, 4, 0).is_err());
        assert!(patch_labels(&labels[..23], 6, 4, 2).unwrap_err().to_string().contains("23 labels"));
        assert!(patch_labels(&[], 0, 4, 2).is_err());
    }

    #[test]
    fn release_pipeline_shape() {
        // 224x224 with 16-pixel patches gives the 14x14 grid the model uses.
        let mut rng = SplitMix64::new(5);
        let rgb = image(224, 224, |x, y| {
            let n = (rng.next_u64() >> 56) as u8 % 16;
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
