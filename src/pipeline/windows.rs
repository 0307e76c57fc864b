//! Sliding windows over the rescaled image (mmseg's `slide_inference`): windows of `crop` pixels
//! every `stride`, the last one aligned to the edge, smaller images taken whole.

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
}
