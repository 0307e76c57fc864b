//! The rules a training config follows beyond its types: ranges, and settings that need or
//! exclude each other. `TrainConfig::parse` applies them.

use super::{DataSource, SilentBackground, TrainConfig};
use crate::train::error::TrainError;

impl TrainConfig {
    /// The rules a config must follow; the error names the field at fault.
    pub fn validate(&self) -> Result<(), TrainError> {
        self.validate_optim()?;
        self.validate_loss()?;
        self.validate_data()?;
        let model = self.model.resolve()?;
        let d = &self.data;
        if d.context_length > model.context_length {
            let expected = format!("at most the model's context_length {}", model.context_length);
            return Err(TrainError::bad_value("data.context_length", d.context_length, expected));
        }
        if d.source.is_world() && d.scene_size < model.image_size / 2 {
            let expected = format!("at least half the model's {} px input", model.image_size);
            return Err(TrainError::bad_value("data.scene_size", d.scene_size, expected));
        }
        if d.source == DataSource::Emoji {
            self.emoji_config().validate(crate::data::emoji::Atlas::bundled())?;
        }
        if self.run.out.is_empty() {
            return Err(TrainError::config("run.out", "the output folder is empty"));
        }
        self.model.resolve().map(|_| ())
    }

    fn validate_optim(&self) -> Result<(), TrainError> {
        let o = &self.optim;
        if o.steps == 0 || o.batch_size < 2 || o.accumulation == 0 {
            return Err(TrainError::config("optim", "steps >= 1, batch_size >= 2 (contrastive needs negatives), accumulation >= 1"));
        }
        if !(o.lr_new > 0.0 && o.lr_pretrained >= 0.0) {
            let message = format!("learning rates must be positive (lr_new {}, lr_pretrained {})", o.lr_new, o.lr_pretrained);
            return Err(TrainError::config("optim", message));
        }
        if let Some(c) = o.first_cycle {
            if c >= o.steps {
                return Err(TrainError::bad_value("optim.first_cycle", c, format!("in 1..{} (below optim.steps), or 0 for none", o.steps)));
            }
        }
        if !(0.0..1.0).contains(&o.warmup_fraction) {
            return Err(TrainError::bad_value("optim.warmup_fraction", o.warmup_fraction, "in [0, 1)"));
        }
        Ok(())
    }

    fn validate_loss(&self) -> Result<(), TrainError> {
        let l = &self.loss;
        if !(l.contrastive || l.reconstruction || l.superpixel) {
            return Err(TrainError::config("loss", "every loss is switched off"));
        }
        if !(l.center_usage_weight >= 0.0 && l.center_usage_weight.is_finite()) {
            return Err(TrainError::bad_value("loss.center_usage_weight", l.center_usage_weight, "a finite number >= 0"));
        }
        if !(l.group_nouns_weight >= 0.0 && l.group_nouns_weight.is_finite()) {
            return Err(TrainError::bad_value("loss.group_nouns_weight", l.group_nouns_weight, "a finite number >= 0"));
        }
        if l.group_nouns_weight > 0.0 && !(l.contrastive && self.data.source == DataSource::Emoji) {
            let message = format!(
                "{} needs loss.contrastive = true and data.source = \"emoji\" (found contrastive {}, source \"{}\")",
                l.group_nouns_weight, l.contrastive, self.data.source
            );
            return Err(TrainError::config("loss.group_nouns_weight", message));
        }
        if l.silent_background != SilentBackground::Negative && !l.group_nouns_background {
            return Err(TrainError::config("loss.silent_background", "\"unknown\" needs loss.group_nouns_background = true"));
        }
        if l.group_nouns_background && l.group_nouns_weight <= 0.0 {
            let message = "true needs loss.group_nouns_weight > 0 (it adds targets to that term)";
            return Err(TrainError::config("loss.group_nouns_background", message));
        }
        if !(0.0..1.0).contains(&l.mask_ratio) {
            return Err(TrainError::bad_value("loss.mask_ratio", l.mask_ratio, "in [0, 1)"));
        }
        Ok(())
    }

    fn validate_data(&self) -> Result<(), TrainError> {
        let d = &self.data;
        if !d.styles.is_empty() && d.source != DataSource::Emoji {
            return Err(TrainError::config("data.styles", format!("only the emoji source has art styles (source is '{}')", d.source)));
        }
        if d.single_object_steps > 0 && !d.source.is_world() {
            let message = format!("only the shape and emoji worlds can draw one-object scenes (source is '{}')", d.source);
            return Err(TrainError::config("data.single_object_steps", message));
        }
        if !d.source.is_world() && d.path.is_empty() {
            return Err(TrainError::config("data.path", format!("needed for source '{}'", d.source)));
        }
        if !(d.crop_scale[0] > 0.0 && d.crop_scale[0] <= d.crop_scale[1] && d.crop_scale[1] <= 1.0) {
            return Err(TrainError::bad_value("data.crop_scale", format!("{:?}", d.crop_scale), "within 0 < lo <= hi <= 1"));
        }
        let limits = [("brightness", 1.0), ("contrast", 1.0), ("saturation", 1.0), ("hue", 0.5)];
        if let Some((v, (name, max))) = d.color_jitter.iter().zip(limits).find(|(v, (_, max))| !(v.is_finite() && **v >= 0.0 && **v <= *max)) {
            let found = format!("{:?}: {name} strength {v}", d.color_jitter);
            return Err(TrainError::bad_value("data.color_jitter", found, format!("in [0, {max}] (order: brightness, contrast, saturation, hue)")));
        }
        if d.color_jitter != [0.0; 4] && d.source == DataSource::Shapes {
            let message = "the shape world's captions name colours, which jitter would make false; use it with other sources";
            return Err(TrainError::config("data.color_jitter", message));
        }
        if d.shape_variants > 0 {
            if d.source != DataSource::Shapes {
                return Err(TrainError::config("data.shape_variants", format!("only the shapes source can redraw shapes (source is '{}')", d.source)));
            }
            let group = 1 + d.shape_variants;
            if self.optim.batch_size % group != 0 {
                let expected = format!("a multiple of {group} so each scene's variants share its batch (data.shape_variants {})", d.shape_variants);
                return Err(TrainError::bad_value("optim.batch_size", self.optim.batch_size, expected));
            }
        }
        if d.context_length < 3 {
            return Err(TrainError::bad_value("data.context_length", d.context_length, "at least 3"));
        }
        Ok(())
    }
}
