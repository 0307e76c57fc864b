//! Colour jitter for training images (`data.color_jitter`), torchvision's `ColorJitter` in
//! kind: brightness, contrast, saturation and hue, each drawn per sample. Not in the SegCLIP
//! reference (its augmentation is the crop alone); the emoji world trains on two flat art styles
//! and a model that keys on their exact palette names little in another style (weights/README.md,
//! the Fluent 3D column), so the colours are shaken while the shapes stay.
//! Draws from the batch's `SplitMix64`, so a batch stays a pure function of (seed, step).

use crate::data::SplitMix64;

/// Jitter strengths: brightness, contrast and saturation factors are drawn from
/// [1 - s, 1 + s]; the hue turns by up to `hue` of a full turn (0..0.5).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ColorJitter {
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
    pub hue: f32,
}

impl ColorJitter {
    pub fn from_array(a: [f32; 4]) -> Self {
        Self { brightness: a[0], contrast: a[1], saturation: a[2], hue: a[3] }
    }

    pub fn is_off(&self) -> bool {
        self.brightness == 0.0 && self.contrast == 0.0 && self.saturation == 0.0 && self.hue == 0.0
    }

    /// Jitters interleaved RGB bytes in place (brightness, contrast, saturation, hue, in that
    /// order), drawing the four factors from `rng`.
    pub fn apply(&self, rgb: &mut [u8], rng: &mut SplitMix64) {
        let factor = |s: f32, rng: &mut SplitMix64| if s > 0.0 { rng.uniform(1.0 - s, 1.0 + s) } else { 1.0 };
        let b = factor(self.brightness, rng);
        let c = factor(self.contrast, rng);
        let s = factor(self.saturation, rng);
        let h = if self.hue > 0.0 { rng.uniform(-self.hue, self.hue) } else { 0.0 };
        let luma = |p: [f32; 3]| 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
        // Contrast blends towards the image's mean grey after the brightness change.
        let n = (rgb.len() / 3).max(1) as f32;
        let mean = rgb.chunks_exact(3).map(|p| luma([p[0] as f32, p[1] as f32, p[2] as f32]) * b).sum::<f32>() / n;
        // A hue turn is a rotation about the grey axis in YIQ (its chroma plane is I, Q).
        let (sin, cos) = (h * std::f32::consts::TAU).sin_cos();
        for p in rgb.chunks_exact_mut(3) {
            let mut v = [p[0] as f32 * b, p[1] as f32 * b, p[2] as f32 * b];
            v = v.map(|x| mean + (x - mean) * c);
            let grey = luma(v);
            v = v.map(|x| grey + (x - grey) * s);
            if h != 0.0 {
                let y = grey;
                let i = 0.596 * v[0] - 0.274 * v[1] - 0.322 * v[2];
                let q = 0.211 * v[0] - 0.523 * v[1] + 0.312 * v[2];
                let (i, q) = (i * cos - q * sin, i * sin + q * cos);
                v = [y + 0.956 * i + 0.621 * q, y - 0.272 * i - 0.647 * q, y - 1.106 * i + 1.703 * q];
            }
            for (out, x) in p.iter_mut().zip(v) {
                *out = x.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> Vec<u8> {
        (0..48u32).flat_map(|k| [(k * 5) as u8, (255 - k * 3) as u8, (k * 7 % 256) as u8]).collect()
    }

    #[test]
    fn zero_strength_changes_nothing_and_draws_nothing() {
        let mut img = image();
        let mut rng = SplitMix64::new(3);
        ColorJitter::from_array([0.0; 4]).apply(&mut img, &mut rng);
        assert_eq!(img, image());
        assert_eq!(rng.next_u64(), SplitMix64::new(3).next_u64());
    }

    #[test]
    fn greys_stay_grey_under_saturation_and_hue() {
        let mut img: Vec<u8> = (0..16u8).flat_map(|k| [k * 16; 3]).collect();
        let j = ColorJitter { brightness: 0.0, contrast: 0.0, saturation: 0.5, hue: 0.5 };
        for seed in 0..8 {
            let before = img.clone();
            j.apply(&mut img, &mut SplitMix64::new(seed));
            for (p, q) in img.chunks_exact(3).zip(before.chunks_exact(3)) {
                assert!(p.iter().all(|&v| (v as i32 - q[0] as i32).abs() <= 1), "{p:?} from {q:?}");
            }
        }
    }

    #[test]
    fn jitter_is_fixed_by_the_rng_and_turns_hue_and_scales_brightness() {
        let j = ColorJitter::from_array([0.4, 0.4, 0.4, 0.1]);
        let (mut a, mut b) = (image(), image());
        j.apply(&mut a, &mut SplitMix64::new(9));
        j.apply(&mut b, &mut SplitMix64::new(9));
        assert_eq!(a, b);
        assert_ne!(a, image());
        // A half turn of hue maps red towards cyan.
        let mut turned = None;
        for seed in 0..64 {
            let mut px = vec![200u8, 40, 40];
            let mut rng = SplitMix64::new(seed);
            let mut probe = rng.clone();
            if probe.uniform(-0.5, 0.5).abs() > 0.45 {
                ColorJitter { brightness: 0.0, contrast: 0.0, saturation: 0.0, hue: 0.5 }.apply(&mut px, &mut rng);
                turned = Some(px);
                break;
            }
        }
        let px = turned.expect("some seed turns the hue by nearly half a turn");
        assert!(px[0] < px[1] && px[0] < px[2], "red turned half way round: {px:?}");
        // Brightness alone scales every channel by the drawn factor.
        let mut grey = vec![100u8, 100, 100];
        let mut rng = SplitMix64::new(5);
        let factor = rng.clone().uniform(0.6, 1.4);
        ColorJitter { brightness: 0.4, contrast: 0.0, saturation: 0.0, hue: 0.0 }.apply(&mut grey, &mut rng);
        assert_eq!(grey, vec![(100.0 * factor).round() as u8; 3], "factor {factor}");
    }
}
