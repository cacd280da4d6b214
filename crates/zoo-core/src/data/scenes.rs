//! Captioned scenes: a procedural text-to-image dataset that needs no files. Each 64x64 image
//! holds one or two objects (6 shapes, 8 colours, 2 sizes) in the cells of a 3x3 grid on a dark
//! coloured background, with a caption made from its attributes: "a small red circle in the top
//! left", "a blue square to the left of a yellow star", "two green triangles".
//!
//! Some shape-colour pairs ([`HELD_OUT`]) never appear in the training split; the held-out split
//! puts one in every scene, so a text-to-image model can be asked for combinations it never saw.
//! Every scene records what its caption asks for ([`Prompt`]) and where everything is
//! ([`Scene::cell_labels`]), which is what a scorer of prompt adherence needs.
//!
//! Scenes are deterministic per (seed, index): scene `i` is the same whatever batch it is drawn
//! in. Edges are antialiased by coverage from the signed distance to the shape's outline.
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tch::Tensor;

use super::shapes::hsv;

/// The shapes, in label order (label = index + 1 in [`Scene::cell_labels`]; 0 = empty cell).
pub const SHAPES: [&str; 6] = ["circle", "square", "triangle", "star", "diamond", "hexagon"];
/// The colours, in label order, with their RGB in [0, 1].
pub const COLOURS: [(&str, [f64; 3]); 8] = [
    ("red", [0.92, 0.12, 0.10]),
    ("orange", [1.0, 0.55, 0.05]),
    ("yellow", [0.95, 0.90, 0.12]),
    ("green", [0.12, 0.75, 0.22]),
    ("cyan", [0.10, 0.85, 0.90]),
    ("blue", [0.15, 0.30, 0.98]),
    ("purple", [0.62, 0.22, 0.88]),
    ("white", [0.96, 0.96, 0.96]),
];
/// The sizes, in label order: the radius of the circle around the shape, in 64ths of the side.
pub const SIZES: [(&str, f64); 2] = [("small", 5.0), ("large", 9.5)];
/// The grid cells, row by row.
pub const CELLS: [&str; 9] = [
    "top left",
    "top middle",
    "top right",
    "middle left",
    "center",
    "middle right",
    "bottom left",
    "bottom middle",
    "bottom right",
];
/// (colour, shape) pairs the training split never shows: one per shape and colour at most, so
/// every shape and every colour is still seen in training.
pub const HELD_OUT: [(usize, usize); 6] = [(0, 3), (5, 0), (3, 5), (2, 1), (6, 2), (7, 4)];

/// Which scenes to draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// No held-out shape-colour pair anywhere.
    Train,
    /// At least one held-out pair in every scene.
    HeldOut,
}

/// The kind of a scene, which is also its prompt-adherence category.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One object: shape, colour, and sometimes size and position.
    Single,
    /// Two different objects, named with "and" (colour binding: each colour on its shape).
    Pair,
    /// Two objects and where one is relative to the other ("to the left of", "above", ...).
    Relation,
    /// Two identical objects ("two green triangles").
    Count,
}

/// One object.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Object {
    pub shape: usize,
    pub colour: usize,
    pub size: usize,
    pub cell: usize,
    /// Centre in pixels of a 64-pixel image (scaled for other sizes).
    pub centre: (f64, f64),
    pub angle: f64,
}

/// What a caption asks for: per object, the attributes it names (None: not named).
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    pub kind: Kind,
    /// (shape, colour, size, cell) of each named object.
    pub objects: Vec<(usize, usize, Option<usize>, Option<usize>)>,
    /// For [`Kind::Relation`]: (dx, dy) sign of the second object's cell relative to the first's
    /// that the words require ("to the left of": the first is left, dx = +1 for the second).
    pub relation: Option<(i64, i64)>,
}

/// One captioned scene.
#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    pub background: [f64; 3],
    pub objects: Vec<Object>,
    pub caption: String,
    pub prompt: Prompt,
}

fn plural(shape: usize) -> String {
    format!("{}s", SHAPES[shape])
}

fn is_held_out(colour: usize, shape: usize) -> bool {
    HELD_OUT.contains(&(colour, shape))
}

/// A per-scene generator: scene `index` of `seed` does not depend on any other scene.
fn scene_rng(seed: u64, index: u64) -> StdRng {
    let mut z = seed.wrapping_add(index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    StdRng::seed_from_u64(z ^ (z >> 31))
}

/// A (colour, shape) pair allowed in `split` (for the held-out split: `held` says whether this
/// object must be a held-out pair).
fn draw_pair(rng: &mut StdRng, split: Split, held: bool) -> (usize, usize) {
    if split == Split::HeldOut && held {
        return *HELD_OUT.choose(rng).unwrap_or(&HELD_OUT[0]);
    }
    loop {
        let (c, s) = (rng.gen_range(0..COLOURS.len()), rng.gen_range(0..SHAPES.len()));
        if !is_held_out(c, s) {
            return (c, s);
        }
    }
}

fn place(rng: &mut StdRng, cell: usize) -> (f64, f64) {
    let (row, col) = ((cell / 3) as f64, (cell % 3) as f64);
    let jitter = |rng: &mut StdRng| rng.gen_range(-2.0..2.0);
    (64.0 * (col + 0.5) / 3.0 + jitter(rng), 64.0 * (row + 0.5) / 3.0 + jitter(rng))
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// "a small red circle" (size only when `with_size`).
fn noun_phrase(o: &Object, with_size: bool) -> String {
    let words = if with_size {
        format!("{} {} {}", SIZES[o.size].0, COLOURS[o.colour].0, SHAPES[o.shape])
    } else {
        format!("{} {}", COLOURS[o.colour].0, SHAPES[o.shape])
    };
    format!("{} {words}", article(&words))
}

impl Scene {
    /// Scene `index` of the dataset with `seed`, from `split`.
    pub fn generate(seed: u64, index: u64, split: Split) -> Scene {
        let mut rng = scene_rng(seed, index);
        let background = hsv(rng.gen(), rng.gen_range(0.2..0.5), rng.gen_range(0.08..0.2));
        let kind = match rng.gen_range(0..100) {
            0..=39 => Kind::Single,
            40..=59 => Kind::Pair,
            60..=79 => Kind::Relation,
            _ => Kind::Count,
        };
        let mut cells: Vec<usize> = (0..9).collect();
        cells.shuffle(&mut rng);
        let object = |rng: &mut StdRng, k: usize, pair: (usize, usize), size: usize| Object {
            shape: pair.1,
            colour: pair.0,
            size,
            cell: cells[k],
            centre: place(rng, cells[k]),
            angle: rng.gen_range(-0.25..0.25),
        };
        let (objects, caption, prompt) = match kind {
            Kind::Single => {
                let pair = draw_pair(&mut rng, split, true);
                let size = rng.gen_range(0..2);
                let o = object(&mut rng, 0, pair, size);
                let (with_size, with_cell) = (rng.gen_bool(0.5), rng.gen_bool(0.7));
                let mut caption = noun_phrase(&o, with_size);
                if with_cell {
                    caption += &format!(" in the {}", CELLS[o.cell]);
                }
                let p = (o.shape, o.colour, with_size.then_some(o.size), with_cell.then_some(o.cell));
                (vec![o], caption, Prompt { kind, objects: vec![p], relation: None })
            }
            Kind::Pair | Kind::Relation => {
                let held_first = rng.gen_bool(0.5);
                let a = draw_pair(&mut rng, split, held_first);
                let b = loop {
                    let b = draw_pair(&mut rng, split, !held_first);
                    if b.1 != a.1 && b.0 != a.0 {
                        break b;
                    }
                };
                let (sa, sb) = (rng.gen_range(0..2), rng.gen_range(0..2));
                let oa = object(&mut rng, 0, a, sa);
                let ob = object(&mut rng, 1, b, sb);
                let named = |o: &Object| (o.shape, o.colour, None, None);
                if kind == Kind::Pair {
                    let caption = format!("{} and {}", noun_phrase(&oa, false), noun_phrase(&ob, false));
                    (
                        vec![oa, ob],
                        caption,
                        Prompt { kind, objects: vec![named(&oa), named(&ob)], relation: None },
                    )
                } else {
                    let (ca, cb) = ((oa.cell % 3) as i64, (ob.cell % 3) as i64);
                    let (ra, rb) = ((oa.cell / 3) as i64, (ob.cell / 3) as i64);
                    // Name the relation along the axis where they differ (columns first).
                    let (words, rel) = if ca != cb {
                        if ca < cb {
                            ("to the left of", ((cb - ca).signum(), 0))
                        } else {
                            ("to the right of", ((cb - ca).signum(), 0))
                        }
                    } else if ra < rb {
                        ("above", (0, 1))
                    } else {
                        ("below", (0, -1))
                    };
                    let caption = format!("{} {words} {}", noun_phrase(&oa, false), noun_phrase(&ob, false));
                    let p = Prompt { kind, objects: vec![named(&oa), named(&ob)], relation: Some(rel) };
                    (vec![oa, ob], caption, p)
                }
            }
            Kind::Count => {
                let pair = draw_pair(&mut rng, split, true);
                let size = rng.gen_range(0..2);
                let (o1, o2) = (object(&mut rng, 0, pair, size), object(&mut rng, 1, pair, size));
                let caption = format!("two {} {}", COLOURS[pair.0].0, plural(pair.1));
                let p = (pair.1, pair.0, None, None);
                (vec![o1, o2], caption, Prompt { kind, objects: vec![p, p], relation: None })
            }
        };
        Scene { background, objects, caption, prompt }
    }

    /// Per grid cell (row by row): shape label (0 empty, 1..=6), colour, size (0 where empty).
    pub fn cell_labels(&self) -> [[i64; 3]; 9] {
        let mut l = [[0i64; 3]; 9];
        for o in &self.objects {
            l[o.cell] = [o.shape as i64 + 1, o.colour as i64, o.size as i64];
        }
        l
    }

    /// The image, (3, size, size) f32 in [-1, 1] (`size` pixels a side; 64 is the native size).
    pub fn render(&self, size: i64) -> Tensor {
        let n = size.max(0) as usize;
        let plane = n * n;
        let scale = size as f64 / 64.0;
        let mut pixels = vec![0f32; 3 * plane];
        for y in 0..n {
            let shade = 1.15 - 0.3 * (y as f64 + 0.5) / n as f64;
            for x in 0..n {
                let (px, py) = ((x as f64 + 0.5) / scale, (y as f64 + 0.5) / scale);
                let mut rgb = self.background.map(|c| c * shade);
                for o in &self.objects {
                    // Coverage from the distance in output pixels.
                    let d = distance(o, px, py) * scale;
                    let cov = (0.5 - d).clamp(0.0, 1.0);
                    let colour = COLOURS[o.colour].1;
                    for ch in 0..3 {
                        rgb[ch] = rgb[ch] * (1.0 - cov) + colour[ch] * cov;
                    }
                }
                for ch in 0..3 {
                    pixels[ch * plane + y * n + x] = (rgb[ch] * 2.0 - 1.0) as f32;
                }
            }
        }
        Tensor::from_slice(&pixels).view([3, size.max(0), size.max(0)])
    }
}

/// Signed distance (64ths of the side, negative inside) from (x, y) to an object's outline.
fn distance(o: &Object, x: f64, y: f64) -> f64 {
    let r = SIZES[o.size].1;
    let (dx, dy) = (x - o.centre.0, y - o.centre.1);
    let (s, c) = o.angle.sin_cos();
    let (px, py) = (c * dx + s * dy, -s * dx + c * dy);
    match o.shape {
        0 => (px * px + py * py).sqrt() - 0.85 * r,
        1 => polygon_distance(px, py, &regular(4, 0.95 * r, std::f64::consts::FRAC_PI_4)),
        2 => polygon_distance(px, py, &regular(3, 1.1 * r, -std::f64::consts::FRAC_PI_2)),
        3 => polygon_distance(px, py, &star(5, 1.15 * r, 0.5 * r)),
        4 => polygon_distance(px, py, &[(0.0, -1.1 * r), (0.75 * r, 0.0), (0.0, 1.1 * r), (-0.75 * r, 0.0)]),
        _ => polygon_distance(px, py, &regular(6, r, 0.0)),
    }
}

/// The corners of a regular polygon with circumradius `r`, the first at angle `phase`.
fn regular(n: usize, r: f64, phase: f64) -> Vec<(f64, f64)> {
    (0..n)
        .map(|i| {
            let a = phase + std::f64::consts::TAU * i as f64 / n as f64;
            (r * a.cos(), r * a.sin())
        })
        .collect()
}

/// A star's corners: `points` tips at radius `outer`, notches at `inner`, a tip pointing up.
fn star(points: usize, outer: f64, inner: f64) -> Vec<(f64, f64)> {
    (0..2 * points)
        .map(|i| {
            let a = -std::f64::consts::FRAC_PI_2 + std::f64::consts::PI * i as f64 / points as f64;
            let r = if i % 2 == 0 { outer } else { inner };
            (r * a.cos(), r * a.sin())
        })
        .collect()
}

/// Exact signed distance to a simple polygon (negative inside, by the even-odd rule).
fn polygon_distance(x: f64, y: f64, v: &[(f64, f64)]) -> f64 {
    let mut d2 = f64::INFINITY;
    let mut inside = false;
    for i in 0..v.len() {
        let (a, b) = (v[i], v[(i + 1) % v.len()]);
        let (ex, ey) = (b.0 - a.0, b.1 - a.1);
        let (wx, wy) = (x - a.0, y - a.1);
        let t = ((wx * ex + wy * ey) / (ex * ex + ey * ey)).clamp(0.0, 1.0);
        let (qx, qy) = (wx - ex * t, wy - ey * t);
        d2 = d2.min(qx * qx + qy * qy);
        if (a.1 > y) != (b.1 > y) && x < a.0 + (y - a.1) * ex / ey {
            inside = !inside;
        }
    }
    if inside {
        -d2.sqrt()
    } else {
        d2.sqrt()
    }
}

/// Scenes `start .. start + n` of `split`: images (n, 3, size, size) in [-1, 1] and the scenes.
pub fn scenes(seed: u64, start: u64, n: usize, split: Split, size: i64) -> (Tensor, Vec<Scene>) {
    let list: Vec<Scene> = (0..n as u64).map(|i| Scene::generate(seed, start + i, split)).collect();
    let images: Vec<Tensor> = list.iter().map(|s| s.render(size)).collect();
    let images = if images.is_empty() {
        Tensor::zeros([0, 3, size.max(0), size.max(0)], (tch::Kind::Float, tch::Device::Cpu))
    } else {
        Tensor::stack(&images, 0)
    };
    (images, list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_per_index_and_in_range() {
        let (a, sa) = scenes(7, 10, 4, Split::Train, 64);
        let (b, sb) = scenes(7, 12, 2, Split::Train, 64);
        assert_eq!(a.size(), [4, 3, 64, 64]);
        assert!(a.narrow(0, 2, 2).equal(&b) && sa[2..] == sb[..]);
        assert!(a.min().double_value(&[]) >= -1.0 && a.max().double_value(&[]) <= 1.0);
        assert_ne!(scenes(8, 10, 1, Split::Train, 64).1[0], sa[0]);
        assert_eq!(scenes(7, 0, 0, Split::Train, 32).0.size(), [0, 3, 32, 32]);
    }

    #[test]
    fn captions_name_the_objects_and_held_out_pairs_stay_out() {
        let mut kinds = [0usize; 4];
        for i in 0..2000 {
            let s = Scene::generate(3, i, Split::Train);
            kinds[s.prompt.kind as usize] += 1;
            for o in &s.objects {
                assert!(!is_held_out(o.colour, o.shape), "{}", s.caption);
                assert!(s.caption.contains(COLOURS[o.colour].0) && s.caption.contains(SHAPES[o.shape]));
            }
            let cells: Vec<usize> = s.objects.iter().map(|o| o.cell).collect();
            assert!(cells.len() < 2 || cells[0] != cells[1]);
            if let Some((dx, dy)) = s.prompt.relation {
                let (a, b) = (s.objects[0].cell as i64, s.objects[1].cell as i64);
                assert!(dx == 0 || (b % 3 - a % 3).signum() == dx, "{}", s.caption);
                assert!(dy == 0 || (b / 3 - a / 3).signum() == dy, "{}", s.caption);
            }
            let h = Scene::generate(3, i, Split::HeldOut);
            assert!(h.objects.iter().any(|o| is_held_out(o.colour, o.shape)), "{}", h.caption);
        }
        assert!(kinds.iter().all(|&k| k > 250), "{kinds:?}");
        let s = Scene::generate(0, 0, Split::Train);
        assert!(s.caption.starts_with("a ") || s.caption.starts_with("an ") || s.caption.starts_with("two "));
    }

    #[test]
    fn objects_are_drawn_where_the_labels_say() {
        for i in 0..50 {
            let s = Scene::generate(5, i, Split::Train);
            let img = s.render(64);
            let labels = s.cell_labels();
            for (cell, l) in labels.iter().enumerate() {
                let pixel = |x: f64, y: f64| -> Vec<f64> {
                    (0..3).map(|ch| (img.double_value(&[ch, y as i64, x as i64]) + 1.0) / 2.0).collect()
                };
                if l[0] > 0 {
                    // The pixel under an object's centre has the object's colour.
                    let o = s.objects.iter().find(|o| o.cell == cell).unwrap();
                    let px = pixel(o.centre.0, o.centre.1);
                    let want = COLOURS[l[1] as usize].1;
                    let near = (0..3).all(|ch| (px[ch] - want[ch]).abs() < 0.02);
                    assert!(near, "{}: cell {cell} pixel {px:?} want {want:?}", s.caption);
                } else {
                    // An empty cell's centre is dark background.
                    let (row, col) = ((cell / 3) as f64, (cell % 3) as f64);
                    let px = pixel(64.0 * (col + 0.5) / 3.0, 64.0 * (row + 0.5) / 3.0);
                    assert!(px.iter().all(|&v| v < 0.35), "{}: empty cell {cell} is bright", s.caption);
                }
            }
        }
    }

    #[test]
    fn polygon_distance_is_exact_on_simple_points() {
        let sq = [(-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0)];
        assert!((polygon_distance(0.0, 0.0, &sq) + 1.0).abs() < 1e-12);
        assert!((polygon_distance(2.0, 0.0, &sq) - 1.0).abs() < 1e-12);
        assert!((polygon_distance(2.0, 2.0, &sq) - 2f64.sqrt()).abs() < 1e-12);
        assert!(polygon_distance(0.0, 0.0, &star(5, 2.0, 1.0)) < -0.5);
    }
}
