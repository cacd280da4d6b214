//! Flows for density estimation on 2-D toy data: RealNVP (Dinh et al. 2017: affine couplings
//! with a fixed reversal between them) and Glow (Kingma & Dhariwal 2018: ActNorm, an
//! LU-parameterised invertible 1x1 conv and an affine coupling per step), with exact
//! log-likelihoods, samples and a density heatmap.
//!
//! Points are (B, 2); inside the flow they are (B, 2, 1) so the layers of [`crate::layers`]
//! apply unchanged (a "1x1 conv" on one time step is a linear map of the point).
use std::str::FromStr;

use rand::Rng;
use tch::{nn, Device, Kind, Tensor};
use zoo_core::audio::colormap::viridis;
use zoo_core::train::{AdamW, AdamWConfig};

use crate::layers::{ActNorm, AffineCoupling, Conditioner, Flow, Invertible1x1Conv, Reverse};
use crate::wn::Conv1d;
use crate::{Error, Result};

/// The toy densities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toy {
    /// Two interleaved half circles with Gaussian noise (sklearn's make_moons, noise 0.05, scaled).
    TwoMoons,
    /// Three concentric rings of radii 1, 2, 3.
    Rings,
}

impl FromStr for Toy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "two-moons" => Ok(Toy::TwoMoons),
            "rings" => Ok(Toy::Rings),
            _ => Err(Error::Config(format!("unknown density preset '{s}': known ones are two-moons, rings"))),
        }
    }
}

impl Toy {
    /// n points (n, 2) on the CPU from `rng`.
    pub fn sample(self, n: usize, rng: &mut impl Rng) -> Tensor {
        let mut normal = || {
            // Box-Muller: rand has no normal distribution without rand_distr
            let (u1, u2): (f64, f64) = (rng.gen_range(1e-12..1.0), rng.gen_range(0.0..1.0));
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        };
        let mut v = Vec::with_capacity(2 * n);
        for i in 0..n {
            let (x, y) = match self {
                Toy::TwoMoons => {
                    let t = std::f64::consts::PI * (i as f64 + 0.5) / n as f64 * 2.0 % std::f64::consts::PI;
                    let (x, y) = if i % 2 == 0 { (t.cos(), t.sin()) } else { (1.0 - t.cos(), 0.5 - t.sin()) };
                    // centred and scaled to about [-2, 2]
                    (1.5 * (x - 0.5 + 0.05 * normal()), 1.5 * (y - 0.25 + 0.05 * normal()))
                }
                Toy::Rings => {
                    let r = (1 + i % 3) as f64 + 0.08 * normal();
                    // golden-ratio steps cover the circle evenly
                    let a = 2.0 * std::f64::consts::PI * (i as f64 * 0.618_033_988_75).fract();
                    (r * a.cos(), r * a.sin())
                }
            };
            v.push(x as f32);
            v.push(y as f32);
        }
        Tensor::from_slice(&v).reshape([n as i64, 2])
    }

    /// Half the side of the square the heatmap shows.
    pub fn extent(self) -> f64 {
        match self {
            Toy::TwoMoons => 3.0,
            Toy::Rings => 4.0,
        }
    }
}

/// The coupling network of the 2-D flows: an MLP (as 1x1 convs) with a zero-initialised last
/// layer, log s bounded by tanh for stable training.
pub struct Mlp {
    layers: Vec<Conv1d>,
}

impl Mlp {
    pub fn new(p: nn::Path, c_in: i64, c_out: i64, hidden: i64) -> Result<Self> {
        let layers = vec![
            Conv1d::new(&p / "0", c_in, hidden, 1, 1, 0),
            Conv1d::new(&p / "1", hidden, hidden, 1, 1, 0),
            Conv1d::new(&p / "2", hidden, c_out, 1, 1, 0),
        ];
        tch::no_grad(|| -> Result<()> {
            let _ = layers[2].ws.shallow_clone().f_zero_()?;
            if let Some(b) = &layers[2].bs {
                let _ = b.shallow_clone().f_zero_()?;
            }
            Ok(())
        })?;
        Ok(Mlp { layers })
    }
}

impl Conditioner for Mlp {
    fn forward(&self, x_a: &Tensor, _cond: Option<&Tensor>) -> Result<Tensor> {
        let h = self.layers[0].forward(x_a)?.f_relu()?;
        let h = self.layers[1].forward(&h)?.f_relu()?;
        let out = self.layers[2].forward(&h)?;
        let n = out.size()[1] / 2;
        let log_s = out.f_narrow(1, n, n)?.f_tanh()?;
        Ok(Tensor::f_cat(&[&out.f_narrow(1, 0, n)?, &log_s], 1)?)
    }
}

/// Which flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind2d {
    RealNvp,
    Glow,
}

impl FromStr for Kind2d {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "realnvp" => Ok(Kind2d::RealNvp),
            "glow" => Ok(Kind2d::Glow),
            _ => Err(Error::Config(format!("unknown flow '{s}': use realnvp or glow"))),
        }
    }
}

/// A flow on 2-D points.
pub struct DensityFlow {
    steps: Vec<Box<dyn Flow>>,
}

impl DensityFlow {
    /// `n_steps` steps, each `Reverse` + coupling (RealNVP) or ActNorm + 1x1 conv (LU) +
    /// coupling (Glow), with MLPs of `hidden` units.
    pub fn new(p: nn::Path, kind: Kind2d, n_steps: i64, hidden: i64) -> Result<Self> {
        let mut steps: Vec<Box<dyn Flow>> = Vec::new();
        for k in 0..n_steps {
            let q = &p / "steps" / k;
            match kind {
                Kind2d::RealNvp => {
                    if k > 0 {
                        steps.push(Box::new(Reverse));
                    }
                }
                Kind2d::Glow => {
                    steps.push(Box::new(ActNorm::new(&q / "actnorm", 2)));
                    steps.push(Box::new(Invertible1x1Conv::new(&q / "invconv", 2, true)?));
                }
            }
            steps.push(Box::new(AffineCoupling::new(Mlp::new(&q / "coupling", 1, 2, hidden)?, 2)?));
        }
        Ok(DensityFlow { steps })
    }

    /// Shapes: (B, 2) -> (z (B, 2), log|det dz/dx| (B)).
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let [b, 2] = x.size()[..] else {
            return Err(Error::Input(format!("expected points (B, 2), got {:?}", x.size())));
        };
        let mut h = x.f_unsqueeze(2)?;
        let mut logdet = Tensor::f_zeros([b], (x.kind(), x.device()))?;
        for s in &self.steps {
            let (y, ld) = s.forward(&h, None)?;
            logdet = logdet.f_add(&ld)?;
            h = y;
        }
        Ok((h.f_squeeze_dim(2)?, logdet))
    }

    /// Shapes: (B, 2) -> (B, 2).
    pub fn inverse(&self, z: &Tensor) -> Result<Tensor> {
        let mut h = z.f_unsqueeze(2)?;
        for s in self.steps.iter().rev() {
            h = s.inverse(&h, None)?;
        }
        Ok(h.f_squeeze_dim(2)?)
    }

    /// log p(x) under a standard normal base, in nats. Shapes: (B, 2) -> (B).
    pub fn log_prob(&self, x: &Tensor) -> Result<Tensor> {
        let (z, logdet) = self.forward(x)?;
        let log_n = z
            .f_square()?
            .f_sum_dim_intlist([1i64].as_slice(), false, z.kind())?
            .f_mul_scalar(-0.5)?
            .f_sub_scalar((2.0 * std::f64::consts::PI).ln())?;
        Ok(log_n.f_add(&logdet)?)
    }

    /// n samples (n, 2).
    pub fn sample(&self, n: i64, device: Device) -> Result<Tensor> {
        self.inverse(&Tensor::f_randn([n, 2], (Kind::Float, device))?)
    }
}

/// A (3, res, res) picture in [-1, 1] of values on a grid (row 0 is the top, y = +extent),
/// coloured with viridis from min to max.
fn picture(values: &Tensor, res: i64) -> Result<Tensor> {
    let v = Vec::<f32>::try_from(&values.f_to_device(Device::Cpu)?.f_to_kind(Kind::Float)?.f_reshape([-1])?)?;
    let (lo, hi) =
        v.iter().filter(|x| x.is_finite()).fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    let span = if hi > lo { f64::from(hi - lo) } else { 1.0 };
    let mut px = vec![0f32; (3 * res * res) as usize];
    let plane = (res * res) as usize;
    for (i, &x) in v.iter().enumerate() {
        let t = if x.is_finite() { f64::from(x - lo) / span } else { 0.0 };
        let c = viridis(t);
        for ch in 0..3 {
            px[ch * plane + i] = f32::from(c[ch]) / 127.5 - 1.0;
        }
    }
    Ok(Tensor::from_slice(&px).f_reshape([3, res, res])?)
}

/// Grid points (res * res, 2) over [-extent, extent]^2, row-major from the top-left.
fn grid(res: i64, extent: f64, device: Device) -> Result<Tensor> {
    let ax = Tensor::f_linspace(-extent, extent, res, (Kind::Float, device))?;
    let ys = ax.f_flip([0])?;
    let gy = ys.f_unsqueeze(1)?.f_expand([res, res], false)?;
    let gx = ax.f_unsqueeze(0)?.f_expand([res, res], false)?;
    Ok(Tensor::f_stack(&[gx.f_reshape([-1])?, gy.f_reshape([-1])?], 1)?)
}

/// A 2-D histogram of points as a (res, res) tensor of counts (same orientation as [`grid`]).
fn histogram(points: &Tensor, res: i64, extent: f64) -> Result<Tensor> {
    let p = Vec::<f32>::try_from(&points.f_to_device(Device::Cpu)?.f_to_kind(Kind::Float)?.f_reshape([-1])?)?;
    let mut h = vec![0f32; (res * res) as usize];
    for xy in p.chunks(2) {
        let col = ((f64::from(xy[0]) + extent) / (2.0 * extent) * res as f64).floor();
        let row = ((extent - f64::from(xy[1])) / (2.0 * extent) * res as f64).floor();
        if (0.0..res as f64).contains(&col) && (0.0..res as f64).contains(&row) {
            h[(row as i64 * res + col as i64) as usize] += 1.0;
        }
    }
    Ok(Tensor::from_slice(&h).f_reshape([res, res])?)
}

/// Three panels side by side, (3, res, 3 res + 2 pad): the data's histogram, the model's
/// density exp(log p) on a grid, and the histogram of `n_samples` model samples.
pub fn density_picture(
    flow: &DensityFlow,
    data: &Tensor,
    toy: Toy,
    res: i64,
    n_samples: i64,
    device: Device,
) -> Result<Tensor> {
    let ext = toy.extent();
    let g = grid(res, ext, device)?;
    let dens = tch::no_grad(|| flow.log_prob(&g))?.f_exp()?.f_reshape([res, res])?;
    let samples = tch::no_grad(|| flow.sample(n_samples, device))?;
    let panels = [
        picture(&histogram(data, res, ext)?.f_sqrt()?, res)?,
        picture(&dens, res)?,
        picture(&histogram(&samples, res, ext)?.f_sqrt()?, res)?,
    ];
    let gap = Tensor::f_ones([3, res, 4], (Kind::Float, Device::Cpu))?;
    Ok(Tensor::f_cat(&[&panels[0], &gap, &panels[1], &gap, &panels[2]], 2)?)
}

/// Fits a 2-D flow of `depth` steps to 2,048 points of `toy` with Adam (lr 2e-3, the whole set
/// as one batch) for `steps` steps, on `vs`'s device; returns the flow, its data and the final
/// NLL in nats per point. Errors: no steps, and a fit that diverges.
pub fn fit_density(
    toy: Toy,
    kind: Kind2d,
    depth: i64,
    steps: u64,
    seed: u64,
    vs: &nn::VarStore,
    on_step: &mut dyn FnMut(u64, u64),
) -> Result<(DensityFlow, Tensor, f64)> {
    if steps == 0 {
        return Err(Error::Input("--steps must be at least 1".into()));
    }
    // Thousands of tiny ops: libtorch's intra-op threads only add synchronisation here (10x
    // slower with 2 threads on a busy machine), so the fit runs on one and restores the setting.
    let threads = tch::get_num_threads();
    tch::set_num_threads(1);
    let fitted = (|| -> Result<(DensityFlow, Tensor, f64)> {
        let mut rng = zoo_core::seed::seed_all(seed);
        let flow = DensityFlow::new(vs.root(), kind, depth, 64)?;
        let data = toy.sample(2048, &mut rng).f_to_device(vs.device())?;
        let lr = 2e-3;
        let mut opt = AdamW::new(vs, AdamWConfig { lr, weight_decay: 0.0, ..Default::default() });
        let mut nll = f64::NAN;
        for step in 0..steps {
            on_step(step, steps);
            opt.zero_grad();
            let loss = flow.log_prob(&data)?.f_mean(Kind::Float)?.f_neg()?;
            nll = loss.f_double_value(&[])?;
            if !nll.is_finite() {
                return Err(Error::Data(format!(
                    "the density fit diverged (NLL {nll}); try fewer --depth or another --seed"
                )));
            }
            loss.backward();
            opt.step(lr)?;
        }
        on_step(steps, steps);
        Ok((flow, data, nll))
    })();
    tch::set_num_threads(threads);
    fitted
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use tch::nn::VarStore;

    #[test]
    fn fitting_lowers_the_nll_and_needs_steps() {
        let vs = VarStore::new(Device::Cpu);
        let err =
            fit_density(Toy::TwoMoons, Kind2d::Glow, 2, 0, 0, &vs, &mut |_, _| {}).err().unwrap().to_string();
        assert!(err.contains("--steps"), "{err}");
        let (short, long) = (VarStore::new(Device::Cpu), VarStore::new(Device::Cpu));
        let (_, data, nll_short) =
            fit_density(Toy::TwoMoons, Kind2d::Glow, 2, 2, 0, &short, &mut |_, _| {}).unwrap();
        let (_, _, nll_long) =
            fit_density(Toy::TwoMoons, Kind2d::Glow, 2, 60, 0, &long, &mut |_, _| {}).unwrap();
        assert_eq!(data.size(), vec![2048, 2]);
        assert!(nll_long < nll_short - 0.1, "{nll_short} -> {nll_long}");
    }

    #[test]
    fn toys_and_names() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let x = Toy::Rings.sample(300, &mut rng);
        assert_eq!(x.size(), vec![300, 2]);
        let r = x.square().sum_dim_intlist([1i64].as_slice(), false, Kind::Float).sqrt();
        let rv = Vec::<f32>::try_from(&r).unwrap();
        assert!(rv.iter().all(|r| (0.5..3.5).contains(r)));
        let m = Toy::TwoMoons.sample(200, &mut rng);
        assert!(m.abs().max().double_value(&[]) < 3.0);
        assert!("spiral".parse::<Toy>().unwrap_err().to_string().contains("two-moons, rings"));
        assert!("maf".parse::<Kind2d>().is_err());
    }

    #[test]
    fn flows_invert_and_train_down() {
        for kind in [Kind2d::RealNvp, Kind2d::Glow] {
            tch::manual_seed(0);
            let vs = VarStore::new(Device::Cpu);
            let flow = DensityFlow::new(vs.root(), kind, 4, 32).unwrap();
            let mut rng = rand::rngs::StdRng::seed_from_u64(1);
            let data = Toy::TwoMoons.sample(512, &mut rng);
            // after training the couplings are far from their identity init: inversion is tested on a real map
            let mut opt = zoo_core::train::AdamW::new(
                &vs,
                zoo_core::train::AdamWConfig { lr: 3e-3, weight_decay: 0.0, ..Default::default() },
            );
            let nll = |f: &DensityFlow| -f.log_prob(&data).unwrap().mean(Kind::Float).double_value(&[]);
            let before = nll(&flow);
            for _ in 0..150 {
                opt.zero_grad();
                let loss = flow.log_prob(&data).unwrap().mean(Kind::Float).neg();
                loss.backward();
                opt.step(3e-3).unwrap();
            }
            let after = nll(&flow);
            assert!(after < before - 0.5, "{kind:?}: NLL {before} -> {after}");
            let (z, _) = flow.forward(&data).unwrap();
            let back = flow.inverse(&z).unwrap();
            assert!((back - &data).abs().max().double_value(&[]) < 1e-4, "{kind:?}");
            let pic = density_picture(&flow, &data, Toy::TwoMoons, 32, 500, Device::Cpu).unwrap();
            assert_eq!(pic.size(), vec![3, 32, 3 * 32 + 8]);
            assert!(flow.forward(&Tensor::zeros([4, 3], (Kind::Float, Device::Cpu))).is_err());
        }
    }
}
