//! Image preprocessing of the published protocol (docs/segclip.md, "Inference"): rescale so
//! the short side is 224 with the long side capped at 2048, bilinear without antialiasing
//! (OpenCV's INTER_LINEAR, mmcv's default), then CLIP's mean and std.

/// CLIP's RGB mean and std on the 0..1 scale.
pub const MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
pub const STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// An RGB image, 8 bits per channel, row-major.
#[derive(Clone, Debug)]
pub struct Rgb {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl Rgb {
    pub fn new(width: usize, height: usize, pixels: Vec<u8>) -> Result<Self, super::PipelineError> {
        let bad = |m: String| Err(super::PipelineError::Image(m));
        if width == 0 || height == 0 {
            return bad(format!("image has no pixels ({width}x{height})"));
        }
        if pixels.len() != width * height * 3 {
            return bad(format!("{width}x{height} RGB image needs {} bytes, got {}", width * height * 3, pixels.len()));
        }
        Ok(Self { width, height, pixels })
    }
}

/// mmcv's `imrescale(img, (long_cap, short_side))`: the largest scale that fits both limits,
/// output size `int(x * s + 0.5)`.
pub fn rescaled_size(width: usize, height: usize, short_side: usize, long_cap: usize) -> (usize, usize) {
    let (long, short) = (width.max(height) as f64, width.min(height) as f64);
    let s = (long_cap as f64 / long).min(short_side as f64 / short);
    let w = ((width as f64 * s + 0.5) as usize).max(1);
    let h = ((height as f64 * s + 0.5) as usize).max(1);
    (w, h)
}

/// Source index pair and weight of the second for output coordinate `out` (OpenCV's
/// INTER_LINEAR: half-pixel centres, clamped at the borders).
fn taps(out: usize, scale: f64, len: usize) -> (usize, usize, f32) {
    let src = ((out as f64 + 0.5) * scale - 0.5).max(0.0);
    let i0 = (src.floor() as usize).min(len - 1);
    let i1 = (i0 + 1).min(len - 1);
    let t = if i0 == len - 1 { 0.0 } else { (src - i0 as f64) as f32 };
    (i0, i1, t)
}

/// Bilinear resize of an interleaved image with `channels` f32 channels.
pub fn resize_bilinear(src: &[f32], width: usize, height: usize, channels: usize, out_w: usize, out_h: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(out_w * out_h * channels);
    resize_bilinear_rows(src, width, height, channels, out_w, out_h, |_, row| out.extend_from_slice(row));
    out
}

/// `resize_bilinear` one output row at a time (`row(y, values)`), so a caller that only walks the
/// result holds one row of it, not the whole map; the same values.
pub fn resize_bilinear_rows(
    src: &[f32],
    width: usize,
    height: usize,
    channels: usize,
    out_w: usize,
    out_h: usize,
    mut row: impl FnMut(usize, &[f32]),
) {
    let (sx, sy) = (width as f64 / out_w as f64, height as f64 / out_h as f64);
    let xs: Vec<_> = (0..out_w).map(|x| taps(x, sx, width)).collect();
    let mut out = vec![0f32; out_w * channels];
    for y in 0..out_h {
        let (y0, y1, ty) = taps(y, sy, height);
        for (x, &(x0, x1, tx)) in xs.iter().enumerate() {
            for c in 0..channels {
                let p = |yy: usize, xx: usize| src[(yy * width + xx) * channels + c];
                let top = p(y0, x0) * (1.0 - tx) + p(y0, x1) * tx;
                let bottom = p(y1, x0) * (1.0 - tx) + p(y1, x1) * tx;
                out[x * channels + c] = top * (1.0 - ty) + bottom * ty;
            }
        }
        row(y, &out);
    }
}

/// The model's input for a whole image: rescaled, normalised, planar [3, h, w].
pub struct Prepared {
    pub width: usize,
    pub height: usize,
    pub planes: Vec<f32>,
    /// The rescaled image itself, interleaved RGB (what the superpixels of
    /// `SegmentOptions::superpixels` are computed on).
    pub rgb: Vec<u8>,
}

pub fn prepare(image: &Rgb, short_side: usize, long_cap: usize) -> Prepared {
    let (w, h) = rescaled_size(image.width, image.height, short_side, long_cap);
    let src: Vec<f32> = image.pixels.iter().map(|&v| v as f32).collect();
    let resized = if (w, h) == (image.width, image.height) {
        src
    } else {
        resize_bilinear(&src, image.width, image.height, 3, w, h)
    };
    let mut planes = vec![0f32; 3 * w * h];
    // OpenCV rounds the resized uint8 image before normalising.
    let rgb: Vec<u8> = resized.iter().map(|v| v.round().clamp(0.0, 255.0) as u8).collect();
    normalise_into(rgb.iter().map(|&v| v as f32), &mut planes);
    Prepared { width: w, height: h, planes, rgb }
}

impl Prepared {
    /// The same image mirrored left to right.
    pub fn mirrored(&self) -> Prepared {
        let w = self.width;
        let mut planes = self.planes.clone();
        for row in planes.chunks_exact_mut(w) {
            row.reverse();
        }
        let mut rgb = self.rgb.clone();
        for row in rgb.chunks_exact_mut(3 * w) {
            // Reversing the bytes reverses the pixels and each pixel's channels; undo the latter.
            row.reverse();
            row.chunks_exact_mut(3).for_each(<[u8]>::reverse);
        }
        Prepared { width: w, height: self.height, planes, rgb }
    }
}

/// CLIP's normalisation, the one place it is written: interleaved RGB values (0..255) into
/// planar `[3, n]` `(v / 255 - MEAN) / STD`, as inference and training both feed the model.
pub fn normalise_into(rgb: impl Iterator<Item = f32>, planes: &mut [f32]) {
    let n = planes.len() / 3;
    for (k, v) in rgb.enumerate().take(3 * n) {
        let (i, c) = (k / 3, k % 3);
        planes[c * n + i] = (v / 255.0 - MEAN[c]) / STD[c];
    }
}

/// Crops [3, h, w] planes to a window.
pub fn crop(p: &Prepared, x: usize, y: usize, w: usize, h: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(3 * w * h);
    for c in 0..3 {
        for row in y..y + h {
            let start = c * p.width * p.height + row * p.width + x;
            out.extend_from_slice(&p.planes[start..start + w]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_side_becomes_224_and_long_side_is_capped() {
        assert_eq!(rescaled_size(500, 375, 224, 2048), (299, 224));
        assert_eq!(rescaled_size(375, 500, 224, 2048), (224, 299));
        // A panorama: the long side cap wins.
        assert_eq!(rescaled_size(10000, 1000, 224, 2048), (2048, 205));
    }

    #[test]
    fn bilinear_halving_averages_pixel_pairs() {
        // 4x1 -> 2x1 with half-pixel centres samples at 0.5 and 2.5.
        let out = resize_bilinear(&[0.0, 2.0, 4.0, 6.0], 4, 1, 1, 2, 1);
        assert_eq!(out, vec![1.0, 5.0]);
    }

    #[test]
    fn mirroring_reverses_each_row_of_planes_and_pixels() {
        // 3x1 image: red, green, blue.
        let image = Rgb::new(3, 1, vec![255, 0, 0, 0, 255, 0, 0, 0, 255]).unwrap();
        let p = prepare(&image, 1, 2048);
        let m = p.mirrored();
        assert_eq!(m.rgb, vec![0, 0, 255, 0, 255, 0, 255, 0, 0]);
        let row = |planes: &[f32], c: usize| planes[c * 3..(c + 1) * 3].to_vec();
        for c in 0..3 {
            let mut want = row(&p.planes, c);
            want.reverse();
            assert_eq!(row(&m.planes, c), want);
        }
    }

    #[test]
    fn upsampling_clamps_at_the_borders() {
        let out = resize_bilinear(&[0.0, 4.0], 2, 1, 1, 4, 1);
        assert_eq!(out, vec![0.0, 1.0, 3.0, 4.0]);
    }
}
