//! `curves.png`: the training curves as four panels, left to right and top to bottom:
//! contrastive loss, reconstruction loss, superpixel loss, validation mIoU. Each panel spans its
//! own series' range (light grid lines at quarters); the numbers are in `log.csv`.

use std::path::Path;

use image::{Rgb, RgbImage};

use super::error::TrainError;
use super::log::LogRow;

const PANEL_W: u32 = 400;
const PANEL_H: u32 = 240;
const MARGIN: u32 = 16;

pub fn write_curves(rows: &[LogRow], path: &Path) -> Result<(), TrainError> {
    let series: [(Vec<(f64, f64)>, [u8; 3]); 4] = [
        (rows.iter().map(|r| (r.step as f64, r.contrastive)).collect(), [31, 119, 180]),
        (rows.iter().map(|r| (r.step as f64, r.reconstruction)).collect(), [255, 127, 14]),
        (rows.iter().map(|r| (r.step as f64, r.superpixel)).collect(), [44, 160, 44]),
        (rows.iter().filter_map(|r| r.val_miou.map(|v| (r.step as f64, v))).collect(), [214, 39, 40]),
    ];
    let mut img = RgbImage::from_pixel(2 * PANEL_W, 2 * PANEL_H, Rgb([255, 255, 255]));
    for (i, (points, colour)) in series.iter().enumerate() {
        let (ox, oy) = ((i as u32 % 2) * PANEL_W, (i as u32 / 2) * PANEL_H);
        draw_panel(&mut img, ox, oy, points, Rgb(*colour));
    }
    img.save(path).map_err(|source| TrainError::Image { path: path.to_path_buf(), source })
}

fn draw_panel(img: &mut RgbImage, ox: u32, oy: u32, points: &[(f64, f64)], colour: Rgb<u8>) {
    let (x0, y0, w, h) = (ox + MARGIN, oy + MARGIN, PANEL_W - 2 * MARGIN, PANEL_H - 2 * MARGIN);
    let grid = Rgb([225, 225, 225]);
    for q in 0..=4 {
        for x in x0..x0 + w {
            img.put_pixel(x, y0 + q * (h - 1) / 4, grid);
        }
        for y in y0..y0 + h {
            img.put_pixel(x0 + q * (w - 1) / 4, y, grid);
        }
    }
    let finite: Vec<(f64, f64)> = points.iter().copied().filter(|p| p.1.is_finite()).collect();
    if finite.is_empty() {
        return;
    }
    let (xmin, xmax) = finite.iter().fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.0), a.1.max(p.0)));
    let (ymin, ymax) = finite.iter().fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.1), a.1.max(p.1)));
    let sx = |x: f64| x0 as f64 + if xmax > xmin { (x - xmin) / (xmax - xmin) } else { 0.5 } * (w - 1) as f64;
    let sy = |y: f64| y0 as f64 + (1.0 - if ymax > ymin { (y - ymin) / (ymax - ymin) } else { 0.5 }) * (h - 1) as f64;
    let mut put = |x: f64, y: f64| {
        let (x, y) = (x.round() as i64, y.round() as i64);
        for (dx, dy) in [(0, 0), (1, 0), (0, 1)] {
            let (px, py) = (x + dx, y + dy);
            if px >= 0 && py >= 0 && (px as u32) < img.width() && (py as u32) < img.height() {
                img.put_pixel(px as u32, py as u32, colour);
            }
        }
    };
    if finite.len() == 1 {
        put(sx(finite[0].0), sy(finite[0].1));
    }
    for pair in finite.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let (ax, ay, bx, by) = (sx(a.0), sy(a.1), sx(b.0), sy(b.1));
        let n = ((bx - ax).abs().max((by - ay).abs()).ceil() as usize).max(1);
        for s in 0..=n {
            let t = s as f64 / n as f64;
            put(ax + (bx - ax) * t, ay + (by - ay) * t);
        }
    }
}
