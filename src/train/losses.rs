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

/// Each row's positives against that row's negatives, one at a time: the mean over the positive
/// entries (i, a) of `ln(1 + sum over negatives b of row i of exp(s[i,b] - s[i,a]))`. A row's
/// other positives are not its negatives: an image that shows a cat and a dog is not asked to
/// prefer one of them. `positive` and `negative` are [R][C] for `s` [R, C] (an entry neither
/// is unknown and takes no part); rows without a negative add 0.
pub fn multi_positive_nce(s: Tensor<2>, positive: &[Vec<bool>], negative: &[Vec<bool>]) -> Tensor<1> {
    let [r, c] = s.dims();
    let device = s.device();
    let flags = |m: &[Vec<bool>]| -> Vec<f32> { m.iter().flat_map(|row| row.iter().map(|&p| if p { 1.0 } else { 0.0 })).collect() };
    let (flat, negatives) = (flags(positive), flags(negative));
    assert_eq!(flat.len(), r * c, "one positive flag per score");
    assert_eq!(negatives.len(), r * c, "one negative flag per score");
    let pos = Tensor::<2>::from_data(TensorData::new(flat, [r, c]), &device);
    // diff[i, a, b] = s[i, b] - s[i, a]: entry a as the positive against entry b.
    let diff = s.clone().unsqueeze_dim::<3>(1).repeat_dim(1, c) - s.unsqueeze_dim::<3>(2).repeat_dim(2, c);
    let neg = Tensor::<2>::from_data(TensorData::new(negatives, [r, c]), &device).unsqueeze_dim::<3>(1).repeat_dim(1, c);
    // Entries that are not negatives sit far below everything (exp gives 0, no gradient).
    let masked = diff * neg.clone() + (neg - 1.0) * 1e4;
    let top = masked.clone().max_dim(2).clamp_min(0.0).detach(); // [R, C, 1]
    let lse = ((masked - top.clone()).exp().sum_dim(2) + top.clone().neg().exp()).log() + top;
    (lse.reshape([r, c]) * pos.clone()).sum() / pos.sum().clamp_min(1.0)
}

/// The group-noun term (`loss.group_nouns_weight`): image i scores noun k by its best group,
/// `scale * max_l cos(group[i, l], noun[k])`; every noun a caption names must beat the nouns it
/// does not name (over the nouns), and every image that names a noun must beat the images that
/// do not (over the images); the mean of the two. `groups` [B, L, E], `nouns` [K, E],
/// `named[i][k]` caption i names noun k, `unknown[i][k]` caption i says nothing either way
/// (neither a positive nor a negative; all false: every unnamed noun is a negative).
pub fn group_nouns(groups: Tensor<3>, nouns: Tensor<2>, named: &[Vec<bool>], unknown: &[Vec<bool>], scale: Tensor<1>) -> Tensor<1> {
    let [b, l, e] = groups.dims();
    let k = nouns.dims()[0];
    let g = l2_normalise(groups.reshape([b * l, e]));
    let scores = g.matmul(l2_normalise(nouns).transpose()).reshape([b, l, k]).max_dim(1).reshape([b, k]) * scale.unsqueeze::<2>();
    let negative: Vec<Vec<bool>> =
        named.iter().zip(unknown).map(|(n, u)| n.iter().zip(u).map(|(&n, &u)| !n && !u).collect()).collect();
    let column = |m: &[Vec<bool>], j: usize| m.iter().map(|row| row[j]).collect::<Vec<bool>>();
    let by_noun: Vec<Vec<bool>> = (0..k).map(|j| column(named, j)).collect();
    let negative_by_noun: Vec<Vec<bool>> = (0..k).map(|j| column(&negative, j)).collect();
    (multi_positive_nce(scores.clone(), named, &negative) + multi_positive_nce(scores.transpose(), &by_noun, &negative_by_noun)) / 2.0
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
    fn multi_positive_nce_matches_a_hand_computation() {
        let device = Device::default();
        let s = Tensor::<2>::from_data(TensorData::new(vec![2.0f32, 1.0, -1.0, 0.5, 0.0, 3.0], [2, 3]), &device);
        let positive = vec![vec![true, true, false], vec![false, false, true]];
        // Row 0: positives 2 and 1 against the negative -1; row 1: 3 against 0.5 and 0.
        let want = ((1.0 + (-3.0f32).exp()).ln() + (1.0 + (-2.0f32).exp()).ln() + (1.0 + (-2.5f32).exp() + (-3.0f32).exp()).ln()) / 3.0;
        let negative: Vec<Vec<bool>> = positive.iter().map(|r| r.iter().map(|p| !p).collect()).collect();
        assert!((scalar(multi_positive_nce(s.clone(), &positive, &negative)) - want).abs() < 1e-6);
        // An unknown entry takes no part: row 1 without its 0.5 is 3 against 0 alone.
        let unsure = vec![vec![false, false, true], vec![false, true, false]];
        let want = ((1.0 + (-3.0f32).exp()).ln() + (1.0 + (-2.0f32).exp()).ln() + (1.0 + (-3.0f32).exp()).ln()) / 3.0;
        assert!((scalar(multi_positive_nce(s.clone(), &positive, &unsure)) - want).abs() < 1e-6);
        // Far-apart scores stay finite.
        let far = s * 1000.0;
        assert!(scalar(multi_positive_nce(far, &positive, &negative)).is_finite());
    }

    #[test]
    fn group_nouns_scores_an_image_by_its_best_group() {
        let device = Device::default();
        // Image 0's second group is noun 0; image 1's first group is noun 1.
        let groups = Tensor::<3>::from_data(TensorData::new(vec![0.0f32, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0], [2, 2, 2]), &device);
        let nouns = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 0.0, 0.0, 1.0], [2, 2]), &device);
        let scale = Tensor::<1>::from_data(TensorData::new(vec![10.0f32], [1]), &device);
        let named = vec![vec![true, false], vec![false, true]];
        let known = vec![vec![false; 2]; 2];
        // Both images have both directions among their groups: every score is 10, so ln 2.
        assert!((scalar(group_nouns(groups, nouns.clone(), &named, &known, scale.clone())) - 2f32.ln()).abs() < 1e-5);
        let apart = Tensor::<3>::from_data(TensorData::new(vec![1.0f32, 0.0, 1.0, 0.1, 0.0, 1.0, 0.1, 1.0], [2, 2, 2]), &device);
        let swapped = vec![vec![false, true], vec![true, false]];
        assert!(scalar(group_nouns(apart.clone(), nouns.clone(), &named, &known, scale.clone())) < 1e-3);
        assert!(scalar(group_nouns(apart.clone(), nouns.clone(), &swapped, &known, scale.clone())) > 5.0);
        // With every unnamed noun unknown there is no negative left: the term is 0.
        let unknown = swapped.clone();
        assert_eq!(scalar(group_nouns(apart, nouns, &named, &unknown, scale)), 0.0);
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
