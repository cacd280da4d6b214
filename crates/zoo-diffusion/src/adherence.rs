//! Does the picture show what the prompt asked for? Prompt adherence on zoo-core's captioned
//! scenes ([`zoo_core::data::scenes`]), in the categories of the GenEval benchmark (Ghosh et al.
//! 2023, "GenEval: An Object-Focused Framework for Evaluating Text-to-Image Alignment") adapted
//! to those scenes.
//!
//! The judge is a [`SceneScorer`] trained on the dataset itself: a small CNN that reads the 3x3
//! grid and says, per cell, which shape is there (or none), its colour and its size. A
//! generated image then passes a prompt's checks by what the scorer detects:
//! - single object: the named shape is there (a [`Kind::Single`] prompt);
//! - two objects: both named shapes are there (pair and relation prompts);
//! - counting: exactly two of the named shape ("two green triangles");
//! - colours: the single object's shape is there in the named colour;
//! - position: the single object in the named cell, or the relation ("to the left of", "above")
//!   between the two named objects;
//! - colour binding: each of two named shapes in its own named colour (pair prompts);
//! - all correct: every attribute the prompt names holds.
use tch::nn::{self, VarStore};
use tch::{Device, Kind as TKind, Tensor};
use zoo_core::data::scenes::{self, Kind, Prompt, Split, COLOURS, SHAPES, SIZES};
use zoo_core::layers::{Conv2d, Linear};
use zoo_core::train::optim::{AdamW, AdamWConfig};

use crate::stable_diffusion::{Edit, StableDiffusion, Txt2ImgOptions};
use crate::Result;

/// Outputs per cell: shape (empty + 6), colour (8), size (2).
const N_SHAPE: i64 = SHAPES.len() as i64 + 1;
const N_COLOUR: i64 = COLOURS.len() as i64;
const N_SIZE: i64 = SIZES.len() as i64;
const N_OUT: i64 = N_SHAPE + N_COLOUR + N_SIZE;

/// What the scorer sees in one cell: shape label (0 empty, 1..=6), colour, size.
pub type Cells = [[i64; 3]; 9];

/// The per-cell detector. Shapes: images (B, 3, 64, 64) in [-1, 1] -> logits (B, 9, 17).
#[derive(Debug)]
pub struct SceneScorer {
    conv1: Conv2d,
    conv2: Conv2d,
    conv3: Conv2d,
    conv4: Conv2d,
    head: Linear,
}

impl SceneScorer {
    pub fn new(p: nn::Path) -> Result<Self> {
        Ok(SceneScorer {
            conv1: Conv2d::new(&p / "conv1", 3, 32, 3, 1, 1)?,
            conv2: Conv2d::new(&p / "conv2", 32, 64, 4, 2, 1)?,
            conv3: Conv2d::new(&p / "conv3", 64, 128, 4, 2, 1)?,
            conv4: Conv2d::new(&p / "conv4", 128, 128, 3, 1, 1)?,
            head: Linear::new(&p / "head", 128, N_OUT)?,
        })
    }

    /// One feature vector per grid cell: the strongest response in its third of the image.
    /// Shapes: (B, 3, 64, 64) -> (B, 128, 3, 3).
    fn cell_features(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(x)?.f_relu()?;
        let h = self.conv2.forward(&h)?.f_relu()?; // 32x32
        let h = self.conv3.forward(&h)?.f_relu()?; // 16x16
        let h = self.conv4.forward(&h)?.f_relu()?;
        Ok(h.f_adaptive_max_pool2d([3, 3])?.0)
    }

    /// The image features a Frechet distance is computed in: the cell features averaged over
    /// the grid. Shapes: (B, 3, 64, 64) -> (B, 128).
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        let f = tch::no_grad(|| self.cell_features(x))?;
        Ok(f.f_mean_dim([2i64, 3].as_slice(), false, TKind::Float)?)
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let cells = self.cell_features(x)?; // (B, 128, 3, 3)
        let b = cells.size()[0];
        let cells = cells.f_flatten(2, 3)?.f_transpose(1, 2)?; // (B, 9, 128)
        Ok(self.head.forward(&cells)?.f_view([b, 9, N_OUT])?)
    }

    /// Builds a scorer on `device` and loads `dir/model.safetensors` strictly.
    pub fn load(dir: &std::path::Path, device: Device) -> Result<(SceneScorer, VarStore)> {
        let vs = VarStore::new(device);
        let scorer = SceneScorer::new(vs.root())?;
        zoo_core::weights::load_into(&vs, &dir.join("model.safetensors"), &zoo_core::weights::keep_names)?;
        Ok((scorer, vs))
    }

    /// The scorer's reading of each image. Shapes: (B, 3, 64, 64) -> B grids.
    pub fn detect(&self, images: &Tensor) -> Result<Vec<Cells>> {
        let logits = tch::no_grad(|| self.forward(images))?;
        let shape = logits.f_narrow(2, 0, N_SHAPE)?.f_argmax(-1, false)?;
        let colour = logits.f_narrow(2, N_SHAPE, N_COLOUR)?.f_argmax(-1, false)?;
        let size = logits.f_narrow(2, N_SHAPE + N_COLOUR, N_SIZE)?.f_argmax(-1, false)?;
        let all = Tensor::f_stack(&[shape, colour, size], 2)?.f_to_device(Device::Cpu)?; // (B, 9, 3)
        let flat = Vec::<i64>::try_from(all.f_flatten(0, -1)?)?;
        Ok(flat
            .chunks(27)
            .map(|c| {
                let mut g = [[0i64; 3]; 9];
                for (cell, v) in g.iter_mut().enumerate() {
                    let v3 = &c[cell * 3..cell * 3 + 3];
                    *v = if v3[0] == 0 { [0, 0, 0] } else { [v3[0], v3[1], v3[2]] };
                }
                g
            })
            .collect())
    }

    /// Cross-entropy of shape per cell, and of colour and size on occupied cells.
    /// Shapes: images (B, 3, 64, 64), labels (B, 9, 3) int64 -> scalar.
    pub fn loss(&self, images: &Tensor, labels: &Tensor) -> Result<Tensor> {
        let logits = self.forward(images)?.f_view([-1, N_OUT])?;
        let labels = labels.f_view([-1, 3])?;
        let ce = |lo: i64, n: i64, col: i64| -> Result<Tensor> {
            let l = logits.f_narrow(1, lo, n)?.f_log_softmax(-1, TKind::Float)?;
            let t = labels.f_select(1, col)?.f_unsqueeze(1)?;
            Ok(l.f_gather(1, &t, false)?.f_squeeze_dim(1)?.f_neg()?)
        };
        let occupied = labels.f_select(1, 0)?.f_gt(0)?.f_to_kind(TKind::Float)?;
        let n_occ = occupied.f_sum(TKind::Float)?.f_clamp_min(1.0)?;
        let shape = ce(0, N_SHAPE, 0)?.f_mean(TKind::Float)?;
        let attrs = ce(N_SHAPE, N_COLOUR, 1)?.f_add(&ce(N_SHAPE + N_COLOUR, N_SIZE, 2)?)?;
        Ok(shape.f_add(&attrs.f_mul(&occupied)?.f_sum(TKind::Float)?.f_div(&n_occ)?)?)
    }
}

/// A batch of scenes `start..start + n` with their cell labels (B, 9, 3).
pub fn labelled_batch(seed: u64, start: u64, n: usize, split: Split) -> (Tensor, Tensor, Vec<scenes::Scene>) {
    let (images, list) = scenes::scenes(seed, start, n, split, 64);
    let flat: Vec<i64> = list.iter().flat_map(|s| s.cell_labels().into_iter().flatten()).collect();
    (images, Tensor::from_slice(&flat).view([n as i64, 9, 3]), list)
}

/// Trains `scorer` (whose variables are in `vs`) on `steps` batches of generated scenes of both
/// splits (the judge must know every combination). `on_step(step, loss)` after each step.
pub fn train_scorer(
    vs: &VarStore,
    scorer: &SceneScorer,
    steps: u64,
    batch: usize,
    seed: u64,
    on_step: &mut dyn FnMut(u64, f64),
) -> Result<()> {
    let mut opt = AdamW::new(vs, AdamWConfig { lr: 2e-3, weight_decay: 0.0, ..Default::default() });
    let device = vs.device();
    for step in 0..steps {
        let split = if step % 4 == 3 { Split::HeldOut } else { Split::Train };
        let (x, y, _) = labelled_batch(seed, step * batch as u64, batch, split);
        let loss = scorer.loss(&x.f_to_device(device)?, &y.f_to_device(device)?)?;
        opt.zero_grad();
        loss.backward();
        // Cosine decay to a tenth.
        let lr = 2e-3 * (0.55 + 0.45 * (std::f64::consts::PI * step as f64 / steps.max(1) as f64).cos());
        opt.step(lr)?;
        on_step(step + 1, loss.f_double_value(&[])?);
    }
    Ok(())
}

/// Which checks a prompt has, and whether an image passed each (None: not asked).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Judgement {
    pub single_object: Option<bool>,
    pub two_objects: Option<bool>,
    pub counting: Option<bool>,
    pub colours: Option<bool>,
    pub position: Option<bool>,
    pub colour_binding: Option<bool>,
    /// Every named attribute (shape, colour, size, cell, relation, count) holds.
    pub all_correct: bool,
}

/// Reads one category's result from a judgement.
pub type Check = fn(&Judgement) -> Option<bool>;

/// The categories in report order, with a getter each.
pub const CATEGORIES: [(&str, Check); 7] = [
    ("single object", |j| j.single_object),
    ("two objects", |j| j.two_objects),
    ("counting", |j| j.counting),
    ("colours", |j| j.colours),
    ("position", |j| j.position),
    ("colour binding", |j| j.colour_binding),
    ("all correct", |j| Some(j.all_correct)),
];

/// Judges what the scorer saw in one image against what the prompt asked for.
pub fn judge(prompt: &Prompt, seen: &Cells) -> Judgement {
    let objects: Vec<(usize, usize, usize, usize)> = seen
        .iter()
        .enumerate()
        .filter(|(_, c)| c[0] > 0)
        .map(|(cell, c)| ((c[0] - 1) as usize, c[1] as usize, c[2] as usize, cell))
        .collect();
    let has_shape = |s: usize| objects.iter().any(|o| o.0 == s);
    let cells_of = |s: usize, c: usize| -> Vec<usize> {
        objects.iter().filter(|o| o.0 == s && o.1 == c).map(|o| o.3).collect()
    };
    let mut j = Judgement::default();
    match prompt.kind {
        Kind::Single => {
            let (s, c, size, cell) = prompt.objects[0];
            j.single_object = Some(has_shape(s));
            j.colours = Some(!cells_of(s, c).is_empty());
            let fits = |o: &&(usize, usize, usize, usize)| {
                o.0 == s && o.1 == c && size.is_none_or(|z| z == o.2) && cell.is_none_or(|k| k == o.3)
            };
            if let Some(k) = cell {
                j.position = Some(objects.iter().any(|o| o.0 == s && o.3 == k));
            }
            j.all_correct = objects.iter().any(|o| fits(&o)) && objects.len() == 1;
        }
        Kind::Pair | Kind::Relation => {
            let (a, b) = (prompt.objects[0], prompt.objects[1]);
            j.two_objects = Some(has_shape(a.0) && has_shape(b.0));
            let (ca, cb) = (cells_of(a.0, a.1), cells_of(b.0, b.1));
            let bound = !ca.is_empty() && !cb.is_empty();
            if prompt.kind == Kind::Pair {
                j.colour_binding = Some(bound);
                j.all_correct = bound;
            } else {
                let (dx, dy) = prompt.relation.unwrap_or((0, 0));
                let placed = ca.iter().any(|&p| {
                    cb.iter().any(|&q| {
                        let (ddx, ddy) = ((q % 3) as i64 - (p % 3) as i64, (q / 3) as i64 - (p / 3) as i64);
                        (dx == 0 || ddx.signum() == dx) && (dy == 0 || ddy.signum() == dy)
                    })
                });
                j.position = Some(placed);
                j.all_correct = bound && placed;
            }
        }
        Kind::Count => {
            let (s, c, _, _) = prompt.objects[0];
            let n = objects.iter().filter(|o| o.0 == s).count();
            j.counting = Some(n == 2);
            j.all_correct = cells_of(s, c).len() == 2 && objects.len() == 2;
        }
    }
    j
}

/// Accuracy per category: (passed, asked) for each of [`CATEGORIES`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub counts: [(usize, usize); 7],
}

impl Report {
    pub fn add(&mut self, j: &Judgement) {
        for (k, (_, get)) in CATEGORIES.iter().enumerate() {
            if let Some(ok) = get(j) {
                self.counts[k].1 += 1;
                self.counts[k].0 += usize::from(ok);
            }
        }
    }

    /// The fraction of images with every named attribute right (None for an empty report).
    pub fn all_correct(&self) -> Option<f64> {
        let (ok, n) = self.counts[CATEGORIES.len() - 1];
        (n > 0).then(|| ok as f64 / n as f64)
    }

    /// The accuracy of each category (None where none was asked).
    pub fn accuracies(&self) -> Vec<(&'static str, Option<f64>)> {
        CATEGORIES
            .iter()
            .zip(self.counts)
            .map(|((name, _), (ok, n))| (*name, (n > 0).then(|| ok as f64 / n as f64)))
            .collect()
    }
}

/// The scorer's own accuracy on real scenes `start..start + n` of `split`: the report of
/// judging each real image against its own caption (the ceiling any generator can reach), and
/// the fraction of cells read exactly (shape, and colour and size where occupied).
pub fn real_scene_report(
    scorer: &SceneScorer,
    seed: u64,
    start: u64,
    n: usize,
    split: Split,
) -> Result<(Report, f64)> {
    let mut report = Report::default();
    let (mut right, mut cells) = (0usize, 0usize);
    let device = scorer.head.weight.device();
    for chunk in (0..n).step_by(256) {
        let m = 256.min(n - chunk);
        let (x, _, list) = labelled_batch(seed, start + chunk as u64, m, split);
        let seen = scorer.detect(&x.f_to_device(device)?)?;
        for (s, g) in list.iter().zip(&seen) {
            report.add(&judge(&s.prompt, g));
            let truth = s.cell_labels();
            right += truth.iter().zip(g).filter(|(t, g)| t == g).count();
            cells += 9;
        }
    }
    Ok((report, right as f64 / cells.max(1) as f64))
}

/// How a text-to-image pipeline is asked to draw scenes.
#[derive(Debug, Clone)]
pub struct AdherenceOptions {
    /// The prompts: captions of scenes `first..first + num` of `split` with the scenes' `seed`.
    pub seed: u64,
    pub split: Split,
    pub first: u64,
    pub num: usize,
    pub guidance_scale: f64,
    pub steps: usize,
    /// A zoo-diffusion scheduler name.
    pub scheduler: String,
    /// Image `i` is drawn with seed `sample_seed + i`.
    pub sample_seed: u64,
}

/// What [`pipeline_adherence`] measured.
pub struct Adherence {
    pub report: Report,
    /// Frechet distance between the scorer's features of the generated images and of the
    /// scenes whose captions were the prompts.
    pub frechet: f64,
    /// The generated images (num, 3, 64, 64) in [0, 1], and their prompts.
    pub images: Tensor,
    pub prompts: Vec<String>,
}

/// Generates one image per caption of the chosen scenes with `sd` and judges each with the
/// scorer (see the module docs); `on_image(i, n)` after each image.
pub fn pipeline_adherence(
    sd: &StableDiffusion,
    scorer: &SceneScorer,
    o: &AdherenceOptions,
    on_image: &mut dyn FnMut(usize, usize),
) -> Result<Adherence> {
    let device = scorer.head.weight.device();
    let list: Vec<scenes::Scene> =
        (0..o.num as u64).map(|i| scenes::Scene::generate(o.seed, o.first + i, o.split)).collect();
    let mut images = Vec::with_capacity(o.num);
    for (i, s) in list.iter().enumerate() {
        let mut sched = crate::schedulers::build(&o.scheduler, &sd.scheduler)?;
        let opts = Txt2ImgOptions {
            prompt: s.caption.clone(),
            negative_prompt: None,
            steps: o.steps,
            guidance_scale: o.guidance_scale,
            seed: o.sample_seed + i as u64,
            height: Some(64),
            width: Some(64),
            num_samples: 1,
        };
        images.push(
            sd.generate(sched.as_mut(), &opts, &Edit::None, &mut |_, _| {})?.images.f_to_device(device)?,
        );
        on_image(i + 1, o.num);
    }
    let images = Tensor::f_cat(&images, 0)?;
    let x = images.f_mul_scalar(2.0)?.f_sub_scalar(1.0)?;
    let mut report = Report::default();
    let (mut fake, mut real) = (Vec::new(), Vec::new());
    for start in (0..o.num).step_by(256) {
        let m = 256.min(o.num - start) as i64;
        let xb = x.f_narrow(0, start as i64, m)?;
        for (s, seen) in list[start..start + m as usize].iter().zip(scorer.detect(&xb)?) {
            report.add(&judge(&s.prompt, &seen));
        }
        fake.push(scorer.features(&xb)?);
        let r: Vec<Tensor> = list[start..start + m as usize].iter().map(|s| s.render(64)).collect();
        real.push(scorer.features(&Tensor::f_stack(&r, 0)?.f_to_device(device)?)?);
    }
    let frechet = zoo_core::eval::frechet_distance(&Tensor::f_cat(&fake, 0)?, &Tensor::f_cat(&real, 0)?)?;
    Ok(Adherence { report, frechet, images, prompts: list.into_iter().map(|s| s.caption).collect() })
}

/// The ceiling the pipeline's autoencoder leaves: real scenes `first..first + num` of `split`
/// through its VAE (posterior mean, decoded), judged against their own captions. A generator
/// whose latents were perfect would score this.
pub fn autoencoder_ceiling(
    sd: &StableDiffusion,
    scorer: &SceneScorer,
    seed: u64,
    first: u64,
    num: usize,
    split: Split,
) -> Result<Report> {
    let device = scorer.head.weight.device();
    let vae_device = sd.vae_vs.device();
    let mut report = Report::default();
    for start in (0..num).step_by(128) {
        let m = 128.min(num - start);
        let (x, list) = scenes::scenes(seed, first + start as u64, m, split, 64);
        let y = tch::no_grad(|| -> Result<Tensor> {
            let q = sd.vae.encode(&x.f_to_device(vae_device)?.f_to_kind(TKind::Float)?)?;
            Ok(sd.vae.decode(&q.mean)?.f_clamp(-1.0, 1.0)?)
        })?;
        for (s, seen) in list.iter().zip(scorer.detect(&y.f_to_device(device)?)?) {
            report.add(&judge(&s.prompt, &seen));
        }
    }
    Ok(report)
}

/// The Frechet distance between the scorer's features of two disjoint sets of `num` real
/// scenes of `split`: the floor a generator's distance is read against.
pub fn real_frechet_floor(
    scorer: &SceneScorer,
    seed: u64,
    first: u64,
    num: usize,
    split: Split,
) -> Result<f64> {
    let device = scorer.head.weight.device();
    let feats = |start: u64| -> Result<Tensor> {
        let mut out = Vec::new();
        for c in (0..num).step_by(256) {
            let m = 256.min(num - c);
            let (x, _) = scenes::scenes(seed, start + c as u64, m, split, 64);
            out.push(scorer.features(&x.f_to_device(device)?)?);
        }
        Ok(Tensor::f_cat(&out, 0)?)
    };
    zoo_core::eval::frechet_distance(&feats(first)?, &feats(first + num as u64)?).map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zoo_core::data::scenes::Scene;

    #[test]
    fn the_truth_passes_every_check_and_wrong_scenes_fail() {
        for i in 0..300 {
            let s = Scene::generate(11, i, Split::Train);
            let j = judge(&s.prompt, &s.cell_labels());
            assert!(j.all_correct, "{}: {j:?}", s.caption);
            for (name, get) in CATEGORIES {
                assert_ne!(get(&j), Some(false), "{}: {name}", s.caption);
            }
            // An empty picture fails whatever was asked.
            let empty = judge(&s.prompt, &[[0; 3]; 9]);
            assert!(!empty.all_correct, "{}", s.caption);
            // Another scene's picture rarely passes; a recoloured one never does.
            let mut wrong = s.cell_labels();
            for c in wrong.iter_mut().filter(|c| c[0] > 0) {
                c[1] = (c[1] + 1) % COLOURS.len() as i64;
            }
            assert!(!judge(&s.prompt, &wrong).all_correct, "{}", s.caption);
        }
    }

    #[test]
    fn the_scorer_learns() {
        tch::manual_seed(0);
        let vs = VarStore::new(Device::Cpu);
        let scorer = SceneScorer::new(vs.root()).unwrap();
        let (x, y, _) = labelled_batch(1, 10_000, 32, Split::Train);
        let before = scorer.loss(&x, &y).unwrap().double_value(&[]);
        let mut losses = Vec::new();
        train_scorer(&vs, &scorer, 30, 32, 1, &mut |_, l| losses.push(l)).unwrap();
        let after = scorer.loss(&x, &y).unwrap().double_value(&[]);
        assert_eq!(losses.len(), 30);
        assert!(after < 0.6 * before, "held-out batch loss {before:.3} -> {after:.3}");
        let seen = scorer.detect(&x).unwrap();
        assert_eq!(seen.len(), 32);
    }
}
