//! Colours and the painted overlay: distinct colours that stay with a label when others are added
//! or removed, alpha blending over the photo, optional outlines.

/// 20 colours chosen to stay distinguishable from each other and legible over photos
/// (Kelly's maximum-contrast set, without black and white).
pub const PALETTE: [[u8; 3]; 20] = [
    [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
    [0, 128, 128], [220, 190, 255], [170, 110, 40], [255, 250, 200], [128, 0, 0],
    [170, 255, 195], [128, 128, 0], [255, 215, 180], [0, 0, 128], [128, 128, 128],
];

fn fnv1a(text: &str) -> u64 {
    text.to_lowercase().bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// A colour per label: each label starts at the palette slot its name hashes to and takes the
/// next free one, so a label keeps its colour as long as its slot is free, whatever else is added
/// or removed. Beyond 20 labels the hues repeat at a shifted lightness.
pub fn label_colours(labels: &[String]) -> Vec<[u8; 3]> {
    let mut used = vec![false; PALETTE.len()];
    labels
        .iter()
        .enumerate()
        .map(|(i, label)| {
            let round = i / PALETTE.len();
            if round == 0 {
                let start = (fnv1a(label) % PALETTE.len() as u64) as usize;
                let slot = (0..PALETTE.len()).map(|k| (start + k) % PALETTE.len()).find(|&s| !used[s]).unwrap();
                used[slot] = true;
                PALETTE[slot]
            } else {
                let base = PALETTE[i % PALETTE.len()];
                let f = if round % 2 == 1 { 0.6 } else { 1.3 };
                base.map(|c| (c as f32 * f).min(255.0) as u8)
            }
        })
        .collect()
}

/// Paints `label_map` (0 = background, i = label i) over `rgb` with `alpha`; with `outline`,
/// region borders are drawn in the label's colour at full opacity. Returns RGBA.
pub fn paint(rgb: &[u8], width: usize, height: usize, label_map: &[u8], colours: &[[u8; 3]], alpha: f32, outline: bool, hidden: &[bool]) -> Vec<u8> {
    let mut out = Vec::with_capacity(width * height * 4);
    let visible = |l: u8| l != 0 && !hidden.get(l as usize - 1).copied().unwrap_or(false);
    for y in 0..height {
        for x in 0..width {
            let i = y * width + x;
            let l = label_map[i];
            let px = &rgb[i * 3..i * 3 + 3];
            if !visible(l) {
                out.extend_from_slice(&[px[0], px[1], px[2], 255]);
                continue;
            }
            let c = colours[l as usize - 1];
            let border = outline
                && [(x > 0, i.wrapping_sub(1)), (x + 1 < width, i + 1), (y > 0, i.wrapping_sub(width)), (y + 1 < height, i + width)]
                    .iter()
                    .any(|&(ok, j)| ok && label_map[j] != l);
            let a = if border { 1.0 } else { alpha };
            for k in 0..3 {
                out.push((px[k] as f32 * (1.0 - a) + c[k] as f32 * a).round() as u8);
            }
            out.push(255);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_are_distinct_and_stable_under_additions() {
        let a: Vec<String> = ["cat", "sofa", "window"].iter().map(|s| s.to_string()).collect();
        let ca = label_colours(&a);
        assert!(ca[0] != ca[1] && ca[1] != ca[2] && ca[0] != ca[2]);
        let mut b = a.clone();
        b.push("lamp".into());
        let cb = label_colours(&b);
        assert_eq!(&cb[..3], &ca[..]);
        let twenty: Vec<String> = (0..20).map(|i| format!("label {i}")).collect();
        let c20 = label_colours(&twenty);
        for i in 0..20 {
            for j in i + 1..20 {
                assert_ne!(c20[i], c20[j]);
            }
        }
    }

    #[test]
    fn paint_blends_and_leaves_background_alone() {
        let rgb = vec![100u8; 2 * 3];
        let out = paint(&rgb, 2, 1, &[0, 1], &[[200, 0, 0]], 0.5, false, &[]);
        assert_eq!(&out[..4], &[100, 100, 100, 255]);
        assert_eq!(&out[4..], &[150, 50, 50, 255]);
        let hidden = paint(&rgb, 2, 1, &[0, 1], &[[200, 0, 0]], 0.5, false, &[true]);
        assert_eq!(&hidden[4..], &[100, 100, 100, 255]);
    }
}
