//! A procedural image dataset that needs no files: one coloured circle, square or triangle per
//! image on a dark background, for demos, smoke tests and class-conditional toy runs.
//!
//! Edges are antialiased by coverage from an exact signed distance (the fraction of the pixel's
//! width inside the shape), which looks like heavy supersampling at the cost of one evaluation
//! per pixel.
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tch::Tensor;

/// Label of each shape class.
pub const CIRCLE: i64 = 0;
pub const SQUARE: i64 = 1;
pub const TRIANGLE: i64 = 2;
/// Class names, indexed by label.
pub const CLASS_NAMES: [&str; 3] = ["circle", "square", "triangle"];

/// One image's random choices. Every image draws the same number of values in the same order,
/// so `shapes(n, ..)` is a prefix of `shapes(m, ..)` for m > n with the same seed and size.
struct Params {
    class: i64,
    background: [f64; 3],
    colour: [f64; 3],
    /// Radius of the circle that encloses the shape, in pixels.
    radius: f64,
    centre: (f64, f64),
    angle: f64,
}

impl Params {
    fn draw(rng: &mut StdRng, size: f64) -> Params {
        let class = rng.gen_range(0..3);
        let background = hsv(rng.gen(), rng.gen_range(0.3..0.6), rng.gen_range(0.06..0.16));
        let colour = hsv(rng.gen(), rng.gen_range(0.55..0.95), rng.gen_range(0.8..1.0));
        let radius = rng.gen_range(0.2..0.4) * size;
        // Keep the whole shape (and its antialiased rim) inside the image.
        let margin = radius + 0.5;
        let place = |u: f64| {
            if size > 2.0 * margin {
                margin + u * (size - 2.0 * margin)
            } else {
                size / 2.0
            }
        };
        let centre = (place(rng.gen()), place(rng.gen()));
        let angle = rng.gen_range(0.0..std::f64::consts::TAU);
        Params { class, background, colour, radius, centre, angle }
    }

    /// Signed distance in pixels from (x, y) to the shape's edge, negative inside.
    fn distance(&self, x: f64, y: f64) -> f64 {
        let (dx, dy) = (x - self.centre.0, y - self.centre.1);
        let (s, c) = self.angle.sin_cos();
        let (px, py) = (c * dx + s * dy, -s * dx + c * dy);
        match self.class {
            // Circles are drawn a little smaller so the three classes look about equally heavy.
            CIRCLE => (px * px + py * py).sqrt() - 0.8 * self.radius,
            SQUARE => box_distance(px, py, self.radius / std::f64::consts::SQRT_2),
            _ => triangle_distance(px, py, self.radius),
        }
    }
}

/// Exact distance to an axis-aligned square of half side `half`.
fn box_distance(x: f64, y: f64, half: f64) -> f64 {
    let (qx, qy) = (x.abs() - half, y.abs() - half);
    let outside = (qx.max(0.0).powi(2) + qy.max(0.0).powi(2)).sqrt();
    outside + qx.max(qy).min(0.0)
}

/// Exact distance to an equilateral triangle with circumradius `r`, centred on the origin
/// (Inigo Quilez's `sdEquilateralTriangle`, written for the circumradius).
fn triangle_distance(x: f64, y: f64, r: f64) -> f64 {
    let k = 3f64.sqrt();
    let half_side = r * k / 2.0;
    let (mut px, mut py) = (x.abs() - half_side, y + half_side / k);
    if px + k * py > 0.0 {
        (px, py) = ((px - k * py) / 2.0, (-k * px - py) / 2.0);
    }
    px -= px.clamp(-2.0 * half_side, 0.0);
    -(px * px + py * py).sqrt() * py.signum()
}

/// HSV (all in [0, 1]) to RGB in [0, 1].
pub(crate) fn hsv(h: f64, s: f64, v: f64) -> [f64; 3] {
    let f = |n: f64| {
        let k = (n + h * 6.0) % 6.0;
        v - v * s * k.min(4.0 - k).clamp(0.0, 1.0)
    };
    [f(5.0), f(3.0), f(1.0)]
}

/// `n` images of `size` x `size` pixels, deterministic from `seed`.
///
/// Shapes: -> images (n, 3, size, size) f32 in [-1, 1], labels (n) i64 ([`CIRCLE`], [`SQUARE`],
/// [`TRIANGLE`]). Negative `n` or `size` count as 0.
pub fn shapes(n: i64, size: i64, seed: u64) -> (Tensor, Tensor) {
    let (n, size) = (n.max(0), size.max(0));
    let mut rng = StdRng::seed_from_u64(seed);
    let plane = (size * size) as usize;
    let mut pixels = vec![0f32; n as usize * 3 * plane];
    let mut labels = Vec::with_capacity(n as usize);
    for k in 0..n as usize {
        let image = &mut pixels[k * 3 * plane..(k + 1) * 3 * plane];
        let p = Params::draw(&mut rng, size as f64);
        labels.push(p.class);
        for y in 0..size {
            // A faint top-to-bottom falloff so the background is not a flat card.
            let shade = 1.15 - 0.3 * (y as f64 + 0.5) / size as f64;
            for x in 0..size {
                // Pixel centres sit at half-integers; coverage is 1 one half pixel inside the edge.
                let coverage = (0.5 - p.distance(x as f64 + 0.5, y as f64 + 0.5)).clamp(0.0, 1.0);
                let i = (y * size + x) as usize;
                for ch in 0..3 {
                    let v = p.background[ch] * shade * (1.0 - coverage) + p.colour[ch] * coverage;
                    image[ch * plane + i] = (v * 2.0 - 1.0) as f32;
                }
            }
        }
    }
    let images = Tensor::from_slice(&pixels).view([n, 3, size, size]);
    (images, Tensor::from_slice(&labels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn shapes_and_range() {
        let (x, y) = shapes(10, 16, 3);
        assert_eq!(x.size(), vec![10, 3, 16, 16]);
        assert_eq!(y.size(), vec![10]);
        assert_eq!(y.kind(), Kind::Int64);
        assert!(x.min().double_value(&[]) >= -1.0 && x.max().double_value(&[]) <= 1.0);
        let labels = Vec::<i64>::try_from(&y).unwrap();
        assert!(labels.iter().all(|&l| (0..3).contains(&l)));
        let (x0, y0) = shapes(0, 16, 3);
        assert_eq!((x0.size(), y0.size()), (vec![0, 3, 16, 16], vec![0]));
        assert_eq!(shapes(-1, 0, 3).0.size(), vec![0, 3, 0, 0]);
        assert_eq!(shapes(2, 0, 3).1.size(), vec![2]);
    }

    #[test]
    fn deterministic_and_prefix_stable() {
        let (a, la) = shapes(8, 12, 42);
        let (b, lb) = shapes(8, 12, 42);
        assert!(a.equal(&b) && la.equal(&lb));
        let (c, lc) = shapes(5, 12, 42);
        assert!(c.equal(&a.narrow(0, 0, 5)) && lc.equal(&la.narrow(0, 0, 5)));
        let (d, _) = shapes(8, 12, 43);
        assert!(!d.equal(&a));
    }

    #[test]
    fn classes_are_balanced_and_visible() {
        let (x, y) = shapes(300, 24, 0);
        let labels = Vec::<i64>::try_from(&y).unwrap();
        for class in 0..3 {
            let count = labels.iter().filter(|&&l| l == class).count();
            assert!((70..=130).contains(&count), "class {class}: {count}");
        }
        // Each image has a bright shape on a dark background: its brightest pixel is far above
        // its corner.
        let brightest = x.amax([1, 2, 3], false);
        let corner = x.select(3, 0).select(2, 0).amax([1], false);
        assert!((brightest - corner).min().double_value(&[]) > 0.8);
    }

    #[test]
    fn distances_are_exact_on_simple_points() {
        assert!((box_distance(0.0, 0.0, 2.0) + 2.0).abs() < 1e-12);
        assert!((box_distance(3.0, 0.0, 2.0) - 1.0).abs() < 1e-12);
        assert!((box_distance(3.0, 3.0, 2.0) - 2f64.sqrt()).abs() < 1e-12);
        // Triangle with circumradius 2: centre is inradius (1) inside; vertices are on the edge.
        assert!((triangle_distance(0.0, 0.0, 2.0) + 1.0).abs() < 1e-12);
        let (s, c) = (60f64.to_radians().sin(), 60f64.to_radians().cos());
        // Apex up (+y), base at y = -r/2.
        for (vx, vy) in [(0.0, 2.0), (2.0 * s, -2.0 * c), (-2.0 * s, -2.0 * c)] {
            assert!(triangle_distance(vx, vy, 2.0).abs() < 1e-9, "({vx}, {vy})");
        }
        assert_eq!(hsv(0.0, 1.0, 1.0), [1.0, 0.0, 0.0]);
        assert_eq!(hsv(1.0 / 3.0, 1.0, 1.0).map(|v| v.round()), [0.0, 1.0, 0.0]);
    }
}
