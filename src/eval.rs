//! Semantic-segmentation metrics from a confusion matrix (as mmsegmentation computes them).
//!
//! [`ConfusionMatrix::add`] accumulates label maps (any of `u8`, `u16`, `u32`); pixels whose
//! ground truth is the ignore index (255 by default) are skipped. Per class `c`:
//! `IoU = TP / (TP + FP + FN)`, `None` when `TP + FP + FN == 0` (the class occurs in neither
//! truth nor prediction); mIoU is the mean over the classes with a value (mmseg's `nanmean`).
//! A class that is predicted but never in the ground truth has IoU 0 and counts.

use serde::{Deserialize, Serialize};

/// The conventional "unlabelled" value in ground-truth maps.
pub const IGNORE_INDEX: u32 = 255;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("prediction has {pred} pixels but ground truth has {truth}")]
    LengthMismatch { pred: usize, truth: usize },
    #[error("{which} value {value} at pixel {index} is not a class index (num_classes = {num_classes})")]
    OutOfRange { which: &'static str, value: u32, index: usize, num_classes: usize },
    #[error("cannot merge confusion matrices with {0} and {1} classes")]
    ClassCountMismatch(usize, usize),
    /// Scoring scene `scene` of a world failed.
    #[error("scene {scene}: {source}")]
    Scene { scene: u64, source: Box<EvalError> },
    #[error(transparent)]
    Pipeline(#[from] crate::pipeline::PipelineError),
}

/// `counts[truth * num_classes + pred]` = number of pixels of class `truth` predicted `pred`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfusionMatrix {
    pub num_classes: usize,
    pub counts: Vec<u64>,
}

/// Per-class numbers of a [`MetricsReport`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    pub index: usize,
    pub name: Option<String>,
    /// `None` when the class is in neither truth nor prediction.
    pub iou: Option<f64>,
    /// Recall, `TP / (TP + FN)`; `None` when the class is not in the ground truth.
    pub accuracy: Option<f64>,
    pub truth_pixels: u64,
    pub predicted_pixels: u64,
}

/// Summary of a [`ConfusionMatrix`], serialisable to JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsReport {
    pub num_classes: usize,
    pub total_pixels: u64,
    pub pixel_accuracy: Option<f64>,
    pub mean_iou: Option<f64>,
    pub mean_accuracy: Option<f64>,
    pub classes: Vec<ClassMetrics>,
    /// Row-major `num_classes x num_classes` (row = truth, column = prediction).
    pub confusion: Vec<u64>,
}

impl ConfusionMatrix {
    pub fn new(num_classes: usize) -> Self {
        Self { num_classes, counts: vec![0; num_classes * num_classes] }
    }

    /// Pixels of class `truth` predicted as `pred`.
    pub fn get(&self, truth: usize, pred: usize) -> u64 {
        self.counts[truth * self.num_classes + pred]
    }

    /// Adds one image (or a batch, flattened), skipping pixels whose truth is [`IGNORE_INDEX`].
    /// Errors (leaving the matrix unchanged) on a length mismatch, or a value `>= num_classes`
    /// in `truth` (other than the ignore index) or anywhere in `pred`.
    pub fn add<P, T>(&mut self, pred: &[P], truth: &[T]) -> Result<(), EvalError>
    where
        P: Copy + Into<u32>,
        T: Copy + Into<u32>,
    {
        self.add_with_ignore(pred, truth, Some(IGNORE_INDEX))
    }

    /// [`add`](Self::add) with another ignore index (or none).
    pub fn add_with_ignore<P, T>(&mut self, pred: &[P], truth: &[T], ignore: Option<u32>) -> Result<(), EvalError>
    where
        P: Copy + Into<u32>,
        T: Copy + Into<u32>,
    {
        if pred.len() != truth.len() {
            return Err(EvalError::LengthMismatch { pred: pred.len(), truth: truth.len() });
        }
        let n = self.num_classes;
        for (index, (&p, &t)) in pred.iter().zip(truth).enumerate() {
            let (p, t) = (p.into(), t.into());
            if Some(t) == ignore {
                continue;
            }
            if t as usize >= n {
                return Err(EvalError::OutOfRange { which: "ground-truth", value: t, index, num_classes: n });
            }
            if p as usize >= n {
                return Err(EvalError::OutOfRange { which: "predicted", value: p, index, num_classes: n });
            }
        }
        for (&p, &t) in pred.iter().zip(truth) {
            let (p, t) = (p.into(), t.into());
            if Some(t) != ignore {
                self.counts[t as usize * n + p as usize] += 1;
            }
        }
        Ok(())
    }

    /// Adds another matrix's counts (e.g. from another worker).
    pub fn merge(&mut self, other: &ConfusionMatrix) -> Result<(), EvalError> {
        if other.num_classes != self.num_classes {
            return Err(EvalError::ClassCountMismatch(self.num_classes, other.num_classes));
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        Ok(())
    }

    /// Pixels counted (ignored pixels excluded).
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Ground-truth pixels of class `c` (row sum).
    pub fn truth_pixels(&self, c: usize) -> u64 {
        self.counts[c * self.num_classes..(c + 1) * self.num_classes].iter().sum()
    }

    /// Pixels predicted as class `c` (column sum).
    pub fn predicted_pixels(&self, c: usize) -> u64 {
        (0..self.num_classes).map(|t| self.get(t, c)).sum()
    }

    /// IoU per class; `None` for classes in neither truth nor prediction.
    pub fn iou_per_class(&self) -> Vec<Option<f64>> {
        (0..self.num_classes)
            .map(|c| {
                let tp = self.get(c, c);
                let union = self.truth_pixels(c) + self.predicted_pixels(c) - tp;
                (union > 0).then(|| tp as f64 / union as f64)
            })
            .collect()
    }

    /// Mean IoU over the classes that have one; `None` if none has.
    pub fn mean_iou(&self) -> Option<f64> {
        nan_mean(&self.iou_per_class())
    }

    /// Recall per class (mmseg's per-class "Acc"); `None` for classes absent from the truth.
    pub fn accuracy_per_class(&self) -> Vec<Option<f64>> {
        (0..self.num_classes)
            .map(|c| {
                let t = self.truth_pixels(c);
                (t > 0).then(|| self.get(c, c) as f64 / t as f64)
            })
            .collect()
    }

    /// Mean of [`accuracy_per_class`](Self::accuracy_per_class) over defined classes (mAcc).
    pub fn mean_accuracy(&self) -> Option<f64> {
        nan_mean(&self.accuracy_per_class())
    }

    /// Correct pixels / counted pixels (aAcc); `None` when nothing was counted.
    pub fn pixel_accuracy(&self) -> Option<f64> {
        let total = self.total();
        let correct: u64 = (0..self.num_classes).map(|c| self.get(c, c)).sum();
        (total > 0).then(|| correct as f64 / total as f64)
    }

    /// All metrics; `class_names` (if given, one per class) label the per-class entries.
    pub fn report<S: AsRef<str>>(&self, class_names: Option<&[S]>) -> MetricsReport {
        let iou = self.iou_per_class();
        let acc = self.accuracy_per_class();
        MetricsReport {
            num_classes: self.num_classes,
            total_pixels: self.total(),
            pixel_accuracy: self.pixel_accuracy(),
            mean_iou: self.mean_iou(),
            mean_accuracy: self.mean_accuracy(),
            classes: (0..self.num_classes)
                .map(|c| ClassMetrics {
                    index: c,
                    name: class_names.and_then(|n| n.get(c)).map(|s| s.as_ref().to_string()),
                    iou: iou[c],
                    accuracy: acc[c],
                    truth_pixels: self.truth_pixels(c),
                    predicted_pixels: self.predicted_pixels(c),
                })
                .collect(),
            confusion: self.counts.clone(),
        }
    }

    /// [`report`](Self::report) without class names, as JSON (undefined values are `null`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.report::<&str>(None)).expect("serialisable")
    }

    /// [`report`](Self::report) with class names, as JSON.
    pub fn to_json_with_names<S: AsRef<str>>(&self, class_names: &[S]) -> serde_json::Value {
        serde_json::to_value(self.report(Some(class_names))).expect("serialisable")
    }
}

fn nan_mean(values: &[Option<f64>]) -> Option<f64> {
    let defined: Vec<f64> = values.iter().flatten().copied().collect();
    (!defined.is_empty()).then(|| defined.iter().sum::<f64>() / defined.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Option<f64>, b: f64) {
        let a = a.expect("defined");
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    /// Three classes, ten pixels:
    ///
    /// ```text
    /// truth: 0 0 0 0 1 1 1 2 2 2
    /// pred:  0 0 0 1 1 1 2 2 2 0
    /// ```
    ///
    /// Confusion (row truth, column pred): `[[3,1,0],[0,2,1],[1,0,2]]`.
    /// class 0: TP 3, FP 1 (a truth-2 pixel), FN 1 -> IoU 3/5
    /// class 1: TP 2, FP 1, FN 1 -> 2/4 = 1/2
    /// class 2: TP 2, FP 1, FN 1 -> 2/4 = 1/2
    /// mIoU = (3/5 + 1/2 + 1/2) / 3 = 1.6 / 3; pixel accuracy = 7/10;
    /// recalls 3/4, 2/3, 2/3, mAcc = (3/4 + 4/3) / 3 = 25/36.
    #[test]
    fn three_class_example() {
        let truth: [u8; 10] = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2];
        let pred: [u8; 10] = [0, 0, 0, 1, 1, 1, 2, 2, 2, 0];
        let mut m = ConfusionMatrix::new(3);
        m.add(&pred, &truth).unwrap();
        assert_eq!(m.counts, vec![3, 1, 0, 0, 2, 1, 1, 0, 2]);
        let iou = m.iou_per_class();
        close(iou[0], 0.6);
        close(iou[1], 0.5);
        close(iou[2], 0.5);
        close(m.mean_iou(), 1.6 / 3.0);
        close(m.pixel_accuracy(), 0.7);
        close(m.mean_accuracy(), 25.0 / 36.0);
    }

    /// Ignore-index pixels in the truth are skipped whatever is predicted there; an absent class
    /// (class 3: never in truth or prediction) is `None` and excluded from the mean; a class only
    /// predicted (class 2) has IoU 0 and counts.
    ///
    /// ```text
    /// truth: 0   0 1 1   255 255 0
    /// pred:  0   1 1 1   2   0   2
    /// ```
    /// counted pixels: (0,0) (0,1) (1,1) (1,1) (0,2) -> confusion rows
    /// truth 0: [1,1,1,0], truth 1: [0,2,0,0].
    /// class 0: TP 1, FP 0, FN 2 -> 1/3; class 1: TP 2, FP 1, FN 0 -> 2/3;
    /// class 2: TP 0, FP 1 -> 0; class 3: None. mIoU = (1/3 + 2/3 + 0) / 3 = 1/3.
    /// pixel accuracy 3/5; recalls 1/3, 1, None, None -> mAcc 2/3.
    #[test]
    fn ignore_and_absent_classes() {
        let truth: [u16; 7] = [0, 0, 1, 1, 255, 255, 0];
        let pred: [u16; 7] = [0, 1, 1, 1, 2, 0, 2];
        let mut m = ConfusionMatrix::new(4);
        m.add(&pred, &truth).unwrap();
        assert_eq!(m.total(), 5);
        assert_eq!(m.counts, vec![1, 1, 1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let iou = m.iou_per_class();
        close(iou[0], 1.0 / 3.0);
        close(iou[1], 2.0 / 3.0);
        close(iou[2], 0.0);
        assert_eq!(iou[3], None);
        close(m.mean_iou(), 1.0 / 3.0);
        close(m.pixel_accuracy(), 0.6);
        assert_eq!(m.accuracy_per_class()[2], None);
        close(m.mean_accuracy(), 2.0 / 3.0);

        // Without an ignore index, 255 is simply out of range.
        let err = ConfusionMatrix::new(4).add_with_ignore(&pred, &truth, None).unwrap_err();
        assert!(matches!(err, EvalError::OutOfRange { which: "ground-truth", value: 255, index: 4, num_classes: 4 }), "{err}");
    }

    #[test]
    fn errors_leave_matrix_unchanged() {
        let mut m = ConfusionMatrix::new(2);
        assert!(matches!(m.add(&[0u8, 1], &[0u8]).unwrap_err(), EvalError::LengthMismatch { pred: 2, truth: 1 }));
        let err = m.add(&[0u8, 2], &[0u8, 1]).unwrap_err();
        assert!(matches!(err, EvalError::OutOfRange { which: "predicted", value: 2, index: 1, .. }));
        assert!(err.to_string().contains("predicted value 2 at pixel 1"));
        assert_eq!(m.total(), 0);
        assert_eq!(m.mean_iou(), None);
        assert_eq!(m.pixel_accuracy(), None);
        assert_eq!(m.iou_per_class(), vec![None, None]);
    }

    #[test]
    fn perfect_prediction_and_merge() {
        let truth: Vec<u16> = (0..100).map(|i| (i % 5) as u16).collect();
        let mut a = ConfusionMatrix::new(5);
        a.add(&truth, &truth).unwrap();
        close(a.mean_iou(), 1.0);
        let mut b = ConfusionMatrix::new(5);
        b.add(&[0u8; 100], &truth.iter().map(|&t| t as u8).collect::<Vec<_>>()).unwrap();
        // b: everything predicted 0: IoU_0 = 20/100, others 0.
        close(b.mean_iou(), 0.2 / 5.0);
        a.merge(&b).unwrap();
        assert_eq!(a.total(), 200);
        // merged: TP_0 = 40, FP_0 = 80, FN_0 = 0 -> 1/3; others TP 20, FN 20 -> 1/2.
        close(a.iou_per_class()[0], 1.0 / 3.0);
        close(a.iou_per_class()[1], 0.5);
        assert!(a.merge(&ConfusionMatrix::new(3)).is_err());
    }

    #[test]
    fn json() {
        let mut m = ConfusionMatrix::new(3);
        m.add(&[0u8, 1, 1], &[0u8, 1, 255]).unwrap();
        let v = m.to_json_with_names(&["background", "circle", "square"]);
        assert_eq!(v["num_classes"], 3);
        assert_eq!(v["total_pixels"], 2);
        assert_eq!(v["mean_iou"], 1.0);
        assert_eq!(v["classes"][1]["name"], "circle");
        assert_eq!(v["classes"][2]["iou"], serde_json::Value::Null);
        assert_eq!(v["confusion"], serde_json::json!([1, 0, 0, 0, 1, 0, 0, 0, 0]));
        assert_eq!(m.to_json()["classes"][0]["name"], serde_json::Value::Null);
        let back: ConfusionMatrix = serde_json::from_value(serde_json::to_value(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }
}

/// What scoring a run of a world's scenes measured: the pipeline's own label maps, and the
/// cheap signals of a training run (issue: "recipe search") that tell naming from background.
#[derive(Clone, Debug)]
pub struct SceneScores {
    /// Label maps by the pipeline's background rule and threshold.
    pub pipeline: ConfusionMatrix,
    /// Label maps with the true background given: object pixels take their best label.
    pub true_background: ConfusionMatrix,
    /// Object pixels whose best label (no background) is their class, and all object pixels.
    pub named_pixels: u64,
    pub object_pixels: u64,
    /// Mean over windows of the number of centers that are some patch's argmax.
    pub centers_used: f64,
    /// Mean pairwise cosine of the class prompts' text embeddings (near 1: the text tower
    /// does not tell the classes apart).
    pub prompt_cosine: f64,
}

impl SceneScores {
    /// Share of object pixels named correctly (argmax over the true labels), 0..1.
    pub fn naming_accuracy(&self) -> f64 {
        self.named_pixels as f64 / self.object_pixels.max(1) as f64
    }
}

/// Scores scenes `indices` of `split` of `world` with the shared pipeline (labels: the world's
/// classes after background). Used by `segclip eval` and by validation during training.
#[cfg(not(target_arch = "wasm32"))]
pub fn score_world(
    segmenter: &mut crate::pipeline::Segmenter,
    world: &crate::data::world::World,
    split: crate::data::Split,
    indices: std::ops::Range<u64>,
    mut progress: impl FnMut(u64),
) -> Result<SceneScores, EvalError> {
    use crate::pipeline::{block_on, Rgb};
    let classes = world.classes();
    let labels = classes[1..].to_vec();
    let embeddings = block_on(segmenter.encode_labels(&labels))?;
    let mut scores = SceneScores {
        pipeline: ConfusionMatrix::new(classes.len()),
        true_background: ConfusionMatrix::new(classes.len()),
        named_pixels: 0,
        object_pixels: 0,
        centers_used: 0.0,
        prompt_cosine: mean_pairwise_cosine(&embeddings),
    };
    let (mut windows, mut used) = (0usize, 0usize);
    let start = indices.start;
    for i in indices {
        let sc = world.scene(split, i);
        let in_scene = |e: EvalError| EvalError::Scene { scene: i, source: Box::new(e) };
        let image = Rgb::new(sc.width, sc.height, sc.image)?;
        let features = block_on(segmenter.encode_image(&image))?;
        let result = block_on(segmenter.combine(&features, &labels, &embeddings))?;
        scores.pipeline.add(&result.label_map, &sc.truth).map_err(in_scene)?;
        // The same features without a background rule: every pixel takes its best label.
        let no_background = crate::pipeline::Protocol {
            bg_thresh: 0.0,
            background_prompts: Vec::new(),
            more_background: Vec::new(),
            ..segmenter.protocol.clone()
        };
        let own = std::mem::replace(&mut segmenter.protocol, no_background);
        let named = block_on(segmenter.combine(&features, &labels, &embeddings));
        segmenter.protocol = own;
        let named = named?;
        let given: Vec<u8> = named.label_map.iter().zip(&sc.truth).map(|(&p, &t)| if t == 0 { 0 } else { p }).collect();
        scores.true_background.add(&given, &sc.truth).map_err(in_scene)?;
        for (&p, &t) in named.label_map.iter().zip(&sc.truth) {
            if t != 0 && t as u32 != IGNORE_INDEX {
                scores.object_pixels += 1;
                scores.named_pixels += (p == t) as u64;
            }
        }
        // Centers in use: SegCLIP windows only (a dense model has no groups).
        for (w, _) in features.windows.groups() {
            let p = w.grid[0] * w.grid[1];
            let l = w.soft.len() / p.max(1);
            let mut hit = vec![false; l];
            for j in 0..p {
                let best = (0..l).max_by(|&a, &b| w.soft[a * p + j].total_cmp(&w.soft[b * p + j])).unwrap_or(0);
                hit[best] = true;
            }
            used += hit.iter().filter(|&&h| h).count();
            windows += 1;
        }
        progress(i - start + 1);
    }
    scores.centers_used = used as f64 / windows.max(1) as f64;
    Ok(scores)
}

/// Mean cosine over all pairs of (already normalised) embeddings; 0 for fewer than two.
pub fn mean_pairwise_cosine(embeddings: &[Vec<f32>]) -> f64 {
    let (mut sum, mut n) = (0f64, 0usize);
    for i in 0..embeddings.len() {
        for j in i + 1..embeddings.len() {
            sum += embeddings[i].iter().zip(&embeddings[j]).map(|(a, b)| (a * b) as f64).sum::<f64>();
            n += 1;
        }
    }
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}
