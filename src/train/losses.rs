//! The training losses (docs/segclip.md, "Training" and "Superpixel KL loss"). The masked
//! reconstruction loss lives with its heads in `model::reconstruct`.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor, TensorData};

/// Each row divided by its L2 norm (at least 1e-12).
pub fn l2_normalise(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().powf_scalar(2.0).sum_dim(1).sqrt().clamp_min(1e-12);
    x / norm
}

/// Symmetric InfoNCE: the mean of image->text and text->image cross-entropy over the batch, on
/// L2-normalised embeddings scaled by the (clamped) logit scale. Pair i matches pair i.
pub fn contrastive(image: Tensor<2>, text: Tensor<2>, scale: Tensor<1>) -> Tensor<1> {
    let b = image.dims()[0];
    let device = image.device();
    let logits = l2_normalise(image).matmul(l2_normalise(text).transpose()) * scale.unsqueeze::<2>();
    let diagonal = Tensor::<2>::eye(b, &device);
    let image_to_text = -(log_softmax(logits.clone(), 1) * diagonal.clone()).sum() / b as f64;
    let text_to_image = -(log_softmax(logits, 0) * diagonal).sum() / b as f64;
    (image_to_text + text_to_image) / 2.0
}

/// The superpixel KL loss. `hard` is the hard training assignment [B, L, P] (straight-through,
/// so gradients flow); `labels[b][p]` the superpixel label of patch p of image b.
/// With M = hard^T [P, L] per image and S[g, l] = [label_g == label_l]:
/// Mbar = S M / max(rowsum S, 1); loss = (KL(softmax Mbar || softmax M) + KL(softmax M ||
/// softmax Mbar)) / 2, each KL divided by B * P * L.
pub fn superpixel_kl(hard: Tensor<3>, labels: &[Vec<u32>], device: &Device) -> Tensor<1> {
    let [b, l, p] = hard.dims();
    assert_eq!(labels.len(), b, "one label row per image");
    let mut same = vec![0f32; b * p * p];
    let mut inv_rows = vec![0f32; b * p];
    for (s, row) in labels.iter().enumerate() {
        assert_eq!(row.len(), p, "one superpixel label per patch");
        for g in 0..p {
            let mut count = 0;
            for (k, &lk) in row.iter().enumerate() {
                if lk == row[g] {
                    same[(s * p + g) * p + k] = 1.0;
                    count += 1;
                }
            }
            inv_rows[s * p + g] = 1.0 / (count.max(1) as f32);
        }
    }
    let same = Tensor::<3>::from_data(TensorData::new(same, [b, p, p]), device);
    let inv_rows = Tensor::<3>::from_data(TensorData::new(inv_rows, [b, p, 1]), device);
    let m = hard.swap_dims(1, 2); // [B, P, L]
    let mbar = same.matmul(m.clone()) * inv_rows;
    let log_q = log_softmax(m, 2);
    let log_p = log_softmax(mbar, 2);
    let kl_pq = (log_p.clone().exp() * (log_p.clone() - log_q.clone())).sum();
    let kl_qp = (log_q.clone().exp() * (log_q - log_p)).sum();
    (kl_pq + kl_qp) / (2.0 * (b * p * l) as f64)
}

/// Center usage (not in the reference): `ln L - H(u)` with `u` the mean of the soft assignment
/// [B, L, P] over the batch's patches, u_l = sum_{b,p} soft[b,l,p] / (B P). It is 0 when the
/// batch spreads evenly over the centers and ln L when every patch goes to one center; it says
/// nothing about a single patch, which may still commit to one center.
pub fn center_usage(soft: Tensor<3>) -> Tensor<1> {
    let [b, l, p] = soft.dims();
    let usage = soft.sum_dim(2).sum_dim(0).reshape([l]) / (b * p) as f64;
    let entropy = -(usage.clone() * usage.clamp_min(1e-12).log()).sum();
    entropy.neg() + (l as f64).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(t: Tensor<1>) -> f32 {
        t.into_data().try_to_vec::<f32>().unwrap()[0]
    }

    #[test]
    fn contrastive_matches_a_hand_computation() {
        let device = Device::flex();
        // Two orthogonal pairs, scale 1: each row's softmax is [e/(e+1), 1/(e+1)].
        let image = Tensor::<2>::from_floats([[2.0, 0.0], [0.0, 3.0]], &device);
        let text = Tensor::<2>::from_floats([[1.0, 0.0], [0.0, 0.5]], &device);
        let loss = scalar(contrastive(image, text, Tensor::from_floats([1.0], &device)));
        let e = std::f32::consts::E;
        let expected = -(e / (e + 1.0)).ln();
        assert!((loss - expected).abs() < 1e-5, "{loss} vs {expected}");
        // Swapping the captions makes every pair wrong: the loss grows.
        let image = Tensor::<2>::from_floats([[2.0, 0.0], [0.0, 3.0]], &device);
        let text = Tensor::<2>::from_floats([[0.0, 0.5], [1.0, 0.0]], &device);
        let wrong = scalar(contrastive(image, text, Tensor::from_floats([1.0], &device)));
        assert!((wrong - (-(1.0 / (e + 1.0)).ln())).abs() < 1e-5, "{wrong}");
    }

    #[test]
    fn center_usage_is_zero_when_even_and_ln_l_when_collapsed() {
        let device = Device::flex();
        // 2 images, 2 centers, 2 patches: one patch per center in each image.
        let even = Tensor::<3>::from_floats([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]], &device);
        assert!(scalar(center_usage(even)).abs() < 1e-6);
        let collapsed = Tensor::<3>::from_floats([[[1.0, 1.0], [0.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]]], &device);
        assert!((scalar(center_usage(collapsed)) - 2f32.ln()).abs() < 1e-5);
        // Three quarters on one center: ln 2 - H(3/4, 1/4).
        let skewed = Tensor::<3>::from_floats([[[1.0, 1.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]], &device);
        let h = -(0.75f32 * 0.75f32.ln() + 0.25 * 0.25f32.ln());
        assert!((scalar(center_usage(skewed)) - (2f32.ln() - h)).abs() < 1e-5);
    }

    #[test]
    fn superpixel_kl_is_zero_when_groups_follow_superpixels() {
        let device = Device::flex();
        // 4 patches, 2 centers; superpixels {0,1} and {2,3}.
        let labels = vec![vec![0, 0, 1, 1]];
        let follows = Tensor::<3>::from_floats([[[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]]], &device);
        assert!(scalar(superpixel_kl(follows, &labels, &device)).abs() < 1e-7);
        // Splitting a superpixel between centers costs something, and the cost is symmetric KL.
        let splits = Tensor::<3>::from_floats([[[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 1.0]]], &device);
        let loss = scalar(superpixel_kl(splits, &labels, &device));
        // Patches 0 and 1: M rows [1,0] and [0,1], Mbar rows [.5,.5]. softmax([1,0]) = [a, 1-a].
        let a = 1.0f32.exp() / (1.0f32.exp() + 1.0);
        let kl_half = |q: f32| 0.5 * (0.5f32 / q).ln() + 0.5 * (0.5f32 / (1.0 - q)).ln();
        let kl_back = |q: f32| q * (q / 0.5).ln() + (1.0 - q) * ((1.0 - q) / 0.5).ln();
        let per_patch = (kl_half(a) + kl_back(a)) / 2.0; // same for [0,1] by symmetry
        let expected = 2.0 * per_patch / (4.0 * 2.0);
        assert!((loss - expected).abs() < 1e-6, "{loss} vs {expected}");
    }
}
