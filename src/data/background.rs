//! Procedural backgrounds shared by the two worlds (shapes and emoji): six texture kinds,
//! muted colours kept away from the objects' colours, all from [`SplitMix64`] and `+ - * /`
//! (no libm), so they are identical natively and in wasm32.

use serde::{Deserialize, Serialize};

use super::rng::SplitMix64;

/// Background texture kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackgroundKind {
    /// One colour plus pixel noise.
    Plain,
    /// Linear blend between two colours in a random direction.
    LinearGradient,
    /// Radial blend around a random centre.
    RadialGradient,
    /// Low-frequency value noise thresholded softly between two colours.
    Blotchy,
    /// Straight stripes in a random direction.
    Stripes,
    /// A (possibly rotated) checkerboard.
    Checker,
}

impl BackgroundKind {
    pub const ALL: [BackgroundKind; 6] = [
        BackgroundKind::Plain,
        BackgroundKind::LinearGradient,
        BackgroundKind::RadialGradient,
        BackgroundKind::Blotchy,
        BackgroundKind::Stripes,
        BackgroundKind::Checker,
    ];
    /// Adjectives usable in "on a ... background".
    pub fn adjectives(self) -> &'static [&'static str] {
        match self {
            BackgroundKind::Plain => &["plain", "simple"],
            BackgroundKind::LinearGradient | BackgroundKind::RadialGradient => &["gradient", "smooth"],
            BackgroundKind::Blotchy => &["blotchy", "mottled"],
            BackgroundKind::Stripes => &["striped", "stripy"],
            BackgroundKind::Checker => &["checkered", "chequered"],
        }
    }
}

/// Background parameters.
#[derive(Clone, Debug)]
pub struct Background {
    pub kind: BackgroundKind,
    size: f32,
    c1: [f32; 3],
    c2: [f32; 3],
    dir: (f32, f32),
    center: (f32, f32),
    period: f32,
    grid_n: usize,
    grid: Vec<f32>,
    pub noise: f32,
}

fn mix(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t]
}

fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

impl Background {
    /// A background of `size` pixels a side whose colours keep clear of `object_rgbs` (the
    /// colours the scene's objects show), so objects never melt into it.
    pub fn sample(rng: &mut SplitMix64, size: f32, object_rgbs: &[[f32; 3]]) -> Background {
        let kind = *rng.pick(&BackgroundKind::ALL);
        // Background colours are muted (mixed 35-75% with a grey) and kept at least `MIN_DIST`
        // (RGB Euclidean) from every object's colours; the best of 64 tries otherwise.
        const MIN_DIST: f32 = 70.0;
        let muted = |rng: &mut SplitMix64| {
            let grey = rng.uniform(50.0, 210.0);
            let w = rng.uniform(0.35, 0.75);
            let raw = [rng.uniform(0.0, 255.0), rng.uniform(0.0, 255.0), rng.uniform(0.0, 255.0)];
            mix(raw, [grey; 3], w)
        };
        let min_dist = |c: [f32; 3]| {
            object_rgbs
                .iter()
                .map(|o| {
                    let d = [o[0] - c[0], o[1] - c[1], o[2] - c[2]];
                    (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt()
                })
                .fold(f32::INFINITY, f32::min)
        };
        let mut best = ([0.0; 3], [0.0; 3], -1.0f32);
        for _ in 0..64 {
            let c1 = muted(rng);
            let c2 = match kind {
                BackgroundKind::Plain => c1,
                BackgroundKind::Stripes | BackgroundKind::Checker => {
                    let other = muted(rng);
                    mix(c1, other, rng.uniform(0.35, 0.7))
                }
                _ => muted(rng),
            };
            let d = min_dist(c1).min(min_dist(c2));
            if d > best.2 {
                best = (c1, c2, d);
            }
            if d >= MIN_DIST {
                break;
            }
        }
        let (c1, c2, _) = best;
        let dir = rng.direction();
        let center = (rng.uniform(0.0, size), rng.uniform(0.0, size));
        let period = match kind {
            BackgroundKind::Stripes => rng.uniform(0.05, 0.12) * size,
            _ => rng.uniform(0.06, 0.14) * size,
        };
        let grid_n = rng.range_inclusive(2, 5);
        let grid =
            if kind == BackgroundKind::Blotchy { (0..(grid_n + 1) * (grid_n + 1)).map(|_| rng.unit()).collect() } else { Vec::new() };
        let noise = rng.uniform(0.0, 10.0);
        Background { kind, size, c1, c2, dir, center, period, grid_n, grid, noise }
    }

    pub fn colour_at(&self, x: f32, y: f32) -> [f32; 3] {
        let (dx, dy) = self.dir;
        match self.kind {
            BackgroundKind::Plain => self.c1,
            BackgroundKind::LinearGradient => {
                let half = 0.5 * self.size;
                let proj = (x - half) * dx + (y - half) * dy;
                mix(self.c1, self.c2, (proj / (1.4143 * self.size) + 0.5).clamp(0.0, 1.0))
            }
            BackgroundKind::RadialGradient => {
                let (ex, ey) = (x - self.center.0, y - self.center.1);
                mix(self.c1, self.c2, ((ex * ex + ey * ey).sqrt() / (1.1 * self.size)).clamp(0.0, 1.0))
            }
            BackgroundKind::Blotchy => {
                let n = self.grid_n;
                let gx = x / self.size * n as f32;
                let gy = y / self.size * n as f32;
                let ix = (gx.floor() as usize).min(n - 1);
                let iy = (gy.floor() as usize).min(n - 1);
                let fx = smoothstep(0.0, 1.0, gx - ix as f32);
                let fy = smoothstep(0.0, 1.0, gy - iy as f32);
                let g = |i: usize, j: usize| self.grid[j * (n + 1) + i];
                let top = g(ix, iy) + (g(ix + 1, iy) - g(ix, iy)) * fx;
                let bottom = g(ix, iy + 1) + (g(ix + 1, iy + 1) - g(ix, iy + 1)) * fx;
                let v = top + (bottom - top) * fy;
                mix(self.c1, self.c2, smoothstep(0.3, 0.7, v))
            }
            BackgroundKind::Stripes => {
                let t = (x * dx + y * dy) / self.period;
                if t - t.floor() < 0.5 {
                    self.c1
                } else {
                    self.c2
                }
            }
            BackgroundKind::Checker => {
                let u = ((x * dx + y * dy) / self.period).floor() as i64;
                let v = ((y * dx - x * dy) / self.period).floor() as i64;
                if (u + v).rem_euclid(2) == 0 {
                    self.c1
                } else {
                    self.c2
                }
            }
        }
    }
}
