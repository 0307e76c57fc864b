//! Sliding windows over the rescaled image (mmseg's `slide_inference`): windows of `crop` pixels
//! every `stride`, the last one aligned to the edge, smaller images taken whole.

use super::BadValue;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    pub x: usize,
    pub y: usize,
    pub width: usize,
    pub height: usize,
}

pub fn windows(width: usize, height: usize, crop: usize, stride: usize) -> Vec<Window> {
    let grids = |len: usize| (len.saturating_sub(crop) + stride - 1) / stride + 1;
    let mut out = Vec::new();
    for gy in 0..grids(height) {
        for gx in 0..grids(width) {
            let y2 = (gy * stride + crop).min(height);
            let x2 = (gx * stride + crop).min(width);
            let y1 = y2.saturating_sub(crop);
            let x1 = x2.saturating_sub(crop);
            out.push(Window { x: x1, y: y1, width: x2 - x1, height: y2 - y1 });
        }
    }
    out
}

/// Parses a comma-separated list of short sides in pixels (`--extra-short-sides 128,192`).
pub fn parse_short_sides(text: &str) -> Result<Vec<usize>, BadValue> {
    text.split(',')
        .map(|v| v.trim().parse::<usize>().map_err(|_| BadValue(format!("\"{}\" is not a size in pixels (expected e.g. 128,192,224)", v.trim()))))
        .collect()
}

/// Extra scales (src/pipeline/mod.rs `SegmentOptions::extra_short_sides`): each at least the
/// window side (`window`: the model's input size unless set otherwise), none the primary
/// `short_side` again nor listed twice, at most 8 (each is a full pass of windows over the
/// image).
pub fn validate_extra_short_sides(sides: &[usize], short_side: usize, window: usize) -> Result<(), BadValue> {
    let bad = |message: String| Err(BadValue(message));
    if sides.len() > 8 {
        return bad(format!("{} short sides listed, at most 8", sides.len()));
    }
    for (i, &s) in sides.iter().enumerate() {
        if s < window {
            return bad(format!("{s} is below the window side {window} px"));
        }
        if s == short_side {
            return bad(format!("{s} is the short side itself"));
        }
        if sides[..i].contains(&s) {
            return bad(format!("{s} is listed twice"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_window_is_aligned_to_the_edge() {
        let w = windows(299, 224, 224, 224);
        assert_eq!(w, vec![Window { x: 0, y: 0, width: 224, height: 224 }, Window { x: 75, y: 0, width: 224, height: 224 }]);
    }

    #[test]
    fn exact_fit_is_one_window_and_small_images_are_taken_whole() {
        assert_eq!(windows(224, 224, 224, 224).len(), 1);
        assert_eq!(windows(100, 80, 224, 224), vec![Window { x: 0, y: 0, width: 100, height: 80 }]);
    }

    #[test]
    fn windows_cover_every_pixel() {
        let (w, h) = (700, 300);
        let mut covered = vec![false; w * h];
        for win in windows(w, h, 224, 150) {
            for y in win.y..win.y + win.height {
                for x in win.x..win.x + win.width {
                    covered[y * w + x] = true;
                }
            }
        }
        assert!(covered.iter().all(|&c| c));
    }

    #[test]
    fn extra_short_sides_parse_and_bad_ones_are_named() {
        assert_eq!(parse_short_sides("128, 192,224").unwrap(), vec![128, 192, 224]);
        assert!(parse_short_sides("128,big").unwrap_err().to_string().contains("\"big\" is not a size"));
        assert!(validate_extra_short_sides(&[128, 224], 160, 96).is_ok());
        assert_eq!(validate_extra_short_sides(&[64], 160, 96).unwrap_err().0, "64 is below the window side 96 px");
        assert_eq!(validate_extra_short_sides(&[160], 160, 96).unwrap_err().0, "160 is the short side itself");
        assert_eq!(validate_extra_short_sides(&[128, 128], 160, 96).unwrap_err().0, "128 is listed twice");
        assert!(validate_extra_short_sides(&[100; 9], 160, 96).unwrap_err().to_string().contains("at most 8"));
    }
}
