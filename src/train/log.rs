//! A run's CSV log (`log.csv`): one row per step with every loss term, the learning rate, the
//! gradient norm, samples/s and, on validation steps, the dev signals.

use std::path::Path;

use super::error::TrainError;

/// One row of the CSV log.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogRow {
    pub step: u64,
    pub lr_new: f64,
    pub loss: f64,
    pub contrastive: f64,
    pub reconstruction: f64,
    pub superpixel: f64,
    pub grad_norm: f64,
    pub samples_per_s: f64,
    /// Validation signals (on validation steps only), see [`ValSignals`].
    pub val_miou: Option<f64>,
    pub val_miou_true_bg: Option<f64>,
    pub val_naming: Option<f64>,
    pub val_centers: Option<f64>,
    pub val_prompt_cos: Option<f64>,
    /// The group-noun term (`loss.group_nouns_weight`; 0 when off or in logs that predate it).
    pub group_nouns: f64,
}

pub const LOG_HEADER: &str =
    "step,lr_new,loss,contrastive,reconstruction,superpixel,grad_norm,samples_per_s,val_miou,val_miou_true_bg,val_naming,val_centers,val_prompt_cos,group_nouns";

impl LogRow {
    pub(crate) fn to_csv(&self) -> String {
        let opt = |v: Option<f64>| v.map(|v| format!("{:.4}", v)).unwrap_or_default();
        format!(
            "{},{:.6e},{:.6},{:.6},{:.6},{:.6},{:.4},{:.2},{},{},{},{},{},{:.6}",
            self.step,
            self.lr_new,
            self.loss,
            self.contrastive,
            self.reconstruction,
            self.superpixel,
            self.grad_norm,
            self.samples_per_s,
            opt(self.val_miou),
            opt(self.val_miou_true_bg),
            opt(self.val_naming),
            opt(self.val_centers),
            opt(self.val_prompt_cos),
            self.group_nouns,
        )
    }

    /// A log line; logs written before the validation signals existed have 9 columns, before the
    /// group-noun term 13.
    pub fn parse(line: &str) -> Option<Self> {
        let f: Vec<&str> = line.split(',').collect();
        if ![9, 13, 14].contains(&f.len()) {
            return None;
        }
        let n = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
        Some(Self {
            step: f[0].parse().ok()?,
            lr_new: n(1)?,
            loss: n(2)?,
            contrastive: n(3)?,
            reconstruction: n(4)?,
            superpixel: n(5)?,
            grad_norm: n(6)?,
            samples_per_s: n(7)?,
            val_miou: n(8),
            val_miou_true_bg: n(9),
            val_naming: n(10),
            val_centers: n(11),
            val_prompt_cos: n(12),
            group_nouns: n(13).unwrap_or(0.0),
        })
    }

    pub(crate) fn set_signals(&mut self, v: &ValSignals) {
        self.val_miou = Some(v.miou);
        self.val_miou_true_bg = Some(v.miou_true_bg);
        self.val_naming = Some(v.naming);
        self.val_centers = Some(v.centers);
        self.val_prompt_cos = Some(v.prompt_cos);
    }
}

/// The cheap signals of a run, measured on the dev scenes ([`crate::data::world::DEV_START`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ValSignals {
    /// mIoU (0..1) by the pipeline's background rule at `run.val_bg_thresh`.
    pub miou: f64,
    /// mIoU with the true background given.
    pub miou_true_bg: f64,
    /// Share of object pixels whose best label is their class.
    pub naming: f64,
    /// Centers in use per window (some patch's argmax).
    pub centers: f64,
    /// Mean pairwise cosine of the class prompts.
    pub prompt_cos: f64,
}

/// Reads a run's CSV log.
pub fn read_log(run_dir: &Path) -> Result<Vec<LogRow>, TrainError> {
    let path = run_dir.join("log.csv");
    let text = std::fs::read_to_string(&path).map_err(TrainError::io(&path))?;
    Ok(text.lines().skip(1).filter_map(LogRow::parse).collect())
}

