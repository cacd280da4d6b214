//! The shared evaluation of image generators on MNIST: a small classifier the project trains
//! (its 64-d penultimate layer is the feature space), Frechet distance and precision/recall in
//! that space, and the class accuracy of conditional samples. GANs, VAEs and diffusion models
//! report these numbers on the same footing.
//!
//! - Frechet distance: Heusel et al. 2017 (FID), here in the classifier's feature space rather
//!   than Inception's, so the numbers compare models with each other, not with published FIDs.
//! - Precision and recall: Kynkäänniemi et al. 2019, k-nearest-neighbour manifolds (k = 3).
//!   Precision is fooled by outliers of the real set (their huge k-NN balls take in anything
//!   near them: a set of blank images can score 1.0), so the scores also carry
//! - density and coverage: Naeem et al. 2020 (k = 5, as they recommend): density counts how
//!   many real balls hold each sample, over k (about 1 for samples distributed as the real ones;
//!   a pile of samples inside a few balls scores low, or above 1 when those balls overlap, a
//!   warning sign of its own), coverage the fraction of real images with a sample inside their
//!   own ball: 200 blank images score precision 1.000 but coverage 0.001 against MNIST's test
//!   set. All four follow the authors' `prdc` package exactly (strict
//!   `<` against the k-th-neighbour radius, the point itself counted as its 0th neighbour);
//!   tests/tests/core_golden.rs checks them against it.
//!
//! Inputs are MNIST-style images (B, 1, 28, 28) or (B, 1, 32, 32) in [-1, 1]; 32x32 images (MNIST
//! padded by 2 on each side, as the diffusion preset trains on) are centre-cropped to 28x28.
//! Images outside [-1, 1] (0..255 pixels, say), NaN and labels outside 0..=9 are refused, not
//! scored.
use std::path::Path;

use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use tch::nn::{self, VarStore};
use tch::{Device, Kind, Tensor};

use crate::data::{EpochShuffler, Mnist};
use crate::train::{StepOutput, TrainTask};
use crate::{weights, Error, Result};

/// Settings of the MNIST classifier (saved as its config.json).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierConfig {
    pub conv1: i64,
    pub conv2: i64,
    pub features: i64,
    pub dropout: f64,
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        ClassifierConfig { conv1: 16, conv2: 32, features: 64, dropout: 0.25 }
    }
}

/// conv5x5(1->16) relu pool2, conv5x5(16->32) relu pool2, fc(512->64) relu [features], fc(64->10).
#[derive(Debug)]
pub struct MnistClassifier {
    conv1: nn::Conv2D,
    conv2: nn::Conv2D,
    fc1: nn::Linear,
    fc2: nn::Linear,
    dropout: f64,
}

impl MnistClassifier {
    pub fn new(p: &nn::Path, cfg: &ClassifierConfig) -> Self {
        MnistClassifier {
            conv1: nn::conv2d(p / "conv1", 1, cfg.conv1, 5, Default::default()),
            conv2: nn::conv2d(p / "conv2", cfg.conv1, cfg.conv2, 5, Default::default()),
            fc1: nn::linear(p / "fc1", cfg.conv2 * 16, cfg.features, Default::default()),
            fc2: nn::linear(p / "fc2", cfg.features, 10, Default::default()),
            dropout: cfg.dropout,
        }
    }

    /// Shapes: (B, 1, 28|32, 28|32) in [-1, 1] -> (B, 28, 28) checked and cropped input.
    fn prepare(x: &Tensor) -> Result<Tensor> {
        match x.size()[..] {
            [_, 1, 28, 28] => Ok(x.shallow_clone()),
            [_, 1, 32, 32] => Ok(x.f_narrow(2, 2, 28)?.f_narrow(3, 2, 28)?),
            ref s => Err(Error::Shape(format!(
                "the MNIST classifier takes (B, 1, 28, 28) or (B, 1, 32, 32) images, got {s:?}"
            ))),
        }
    }

    /// Shapes: (B, 1, 28|32, 28|32) -> (B, features).
    pub fn features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = Self::prepare(x)?;
        let h = x.apply(&self.conv1).relu().max_pool2d_default(2);
        let h = h.apply(&self.conv2).relu().max_pool2d_default(2);
        let h = h.flatten(1, -1).dropout(self.dropout, train);
        Ok(h.apply(&self.fc1).relu())
    }

    /// Shapes: (B, 1, 28|32, 28|32) -> (B, 10) logits.
    pub fn logits(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(self.features(x, train)?.dropout(self.dropout, train).apply(&self.fc2))
    }
}

/// A trained classifier with its weights, ready for evaluation.
pub struct Evaluator {
    pub vs: VarStore,
    pub net: MnistClassifier,
}

impl Evaluator {
    /// Loads `dir/config.json` + `dir/model.safetensors` (as `zoo eval train-classifier` writes them).
    pub fn load(dir: &Path, device: Device) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
        let cfg: ClassifierConfig = serde_json::from_str(&text).map_err(|e| Error::bad_file(&cfg_path, e))?;
        let vs = VarStore::new(device);
        let net = MnistClassifier::new(&vs.root(), &cfg);
        weights::load_into(&vs, &dir.join("model.safetensors"), &weights::keep_names)?;
        Ok(Evaluator { vs, net })
    }

    /// Features of many images, in batches. Shapes: (N, 1, H, W) -> (N, features) on the CPU, f64.
    pub fn features(&self, images: &Tensor) -> Result<Tensor> {
        check_images(images)?;
        self.batched(images, |x| self.net.features(x, false))
    }

    /// Predicted classes. Shapes: (N, 1, H, W) -> (N) i64.
    pub fn predict(&self, images: &Tensor) -> Result<Tensor> {
        check_images(images)?;
        self.batched(images, |x| Ok(self.net.logits(x, false)?.argmax(-1, false)))
    }

    fn batched(&self, images: &Tensor, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
        let n = images.size().first().copied().unwrap_or(0);
        let device = self.vs.device();
        let mut out = Vec::new();
        tch::no_grad(|| -> Result<()> {
            for start in (0..n).step_by(500) {
                let len = (n - start).min(500);
                let x = images.f_narrow(0, start, len)?.f_to_kind(Kind::Float)?.f_to_device(device)?;
                out.push(f(&x)?.f_to_device(Device::Cpu)?);
            }
            Ok(())
        })?;
        if out.is_empty() {
            return Err(Error::Shape("no images to evaluate".into()));
        }
        let t = Tensor::f_cat(&out, 0)?;
        Ok(if t.is_floating_point() { t.f_to_kind(Kind::Double)? } else { t })
    }

    /// Accuracy of predictions against labels (one per image, each in 0..=9), in [0, 1].
    pub fn accuracy(&self, images: &Tensor, labels: &Tensor) -> Result<f64> {
        let n = images.size().first().copied().unwrap_or(0);
        if labels.dim() != 1 || labels.size()[0] != n {
            return Err(Error::Shape(format!(
                "{n} images need {n} labels, got labels of shape {:?}",
                labels.size()
            )));
        }
        if labels.is_floating_point() {
            let whole = labels.f_eq_tensor(&labels.f_round()?)?.f_all()?.f_int64_value(&[])? == 1;
            if !whole {
                return Err(Error::Data("labels must be whole class numbers 0..=9".into()));
            }
        }
        let labels = labels.f_to_kind(Kind::Int64)?;
        if n > 0 {
            let (lo, hi) = (labels.f_min()?.f_int64_value(&[])?, labels.f_max()?.f_int64_value(&[])?);
            if lo < 0 || hi > 9 {
                return Err(Error::Data(format!(
                    "labels must be MNIST classes 0..=9, these run from {lo} to {hi}"
                )));
            }
        }
        let pred = self.predict(images)?;
        Ok(pred
            .f_eq_tensor(&labels.f_to_device(Device::Cpu)?)?
            .f_to_kind(Kind::Double)?
            .f_mean(Kind::Double)?
            .f_double_value(&[])?)
    }

    /// Frechet distance, precision and recall (k = [`PR_K`]), density and coverage (k =
    /// [`DC_K`]) of `fake` against `real` images.
    pub fn compare(&self, real: &Tensor, fake: &Tensor) -> Result<Scores> {
        let (fr, ff) = (self.features(real)?, self.features(fake)?);
        let pr = prdc(&fr, &ff, PR_K)?;
        let dc = prdc(&fr, &ff, DC_K)?;
        Ok(Scores {
            frechet: frechet_distance(&fr, &ff)?,
            precision: pr.precision,
            recall: pr.recall,
            density: dc.density,
            coverage: dc.coverage,
            n_real: fr.size()[0],
            n_fake: ff.size()[0],
        })
    }
}

/// The k of precision and recall (Kynkäänniemi et al.'s).
pub const PR_K: i64 = 3;
/// The k of density and coverage (Naeem et al.'s recommendation).
pub const DC_K: i64 = 5;

/// Images the classifier can judge: finite and in [-1, 1] (with a little slack for rounding).
pub fn check_images(images: &Tensor) -> Result<()> {
    if !images.is_floating_point() {
        return Err(Error::Data(format!(
            "images must be floating point in [-1, 1], got {:?} (0..255 pixels? divide by 127.5 and subtract 1)",
            images.kind()
        )));
    }
    if images.numel() == 0 {
        return Ok(());
    }
    let x = images.f_to_kind(Kind::Double)?;
    if x.f_isfinite()?.f_all()?.f_int64_value(&[])? != 1 {
        return Err(Error::Data("images hold NaN or infinite values".into()));
    }
    let (lo, hi) = (x.f_min()?.f_double_value(&[])?, x.f_max()?.f_double_value(&[])?);
    if lo < -1.01 || hi > 1.01 {
        return Err(Error::Data(format!(
            "images must be in [-1, 1], these run from {lo} to {hi}{}",
            if hi > 2.0 { " (0..255 pixels? divide by 127.5 and subtract 1)" } else { "" }
        )));
    }
    Ok(())
}

/// The numbers one comparison gives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub frechet: f64,
    pub precision: f64,
    pub recall: f64,
    pub density: f64,
    pub coverage: f64,
    pub n_real: i64,
    pub n_fake: i64,
}

/// Mean (D) and covariance (D, D) of features (N, D), f64, unbiased (N - 1), as numpy's cov.
pub fn mean_cov(f: &Tensor) -> Result<(Tensor, Tensor)> {
    let n = f.size()[0];
    if n < 2 {
        return Err(Error::Shape(format!("statistics need at least 2 samples, got {n}")));
    }
    let f = f.f_to_kind(Kind::Double)?;
    let mu = f.f_mean_dim(0, false, Kind::Double)?;
    let c = f.f_sub(&mu)?;
    let cov = c.f_transpose(0, 1)?.f_matmul(&c)?.f_div_scalar((n - 1) as f64)?;
    Ok((mu, cov))
}

/// Frechet distance between Gaussians fitted to two feature sets (N1, D) and (N2, D):
/// |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)).
///
/// tr((S1 S2)^(1/2)) is computed as the sum of square roots of the eigenvalues of the symmetric
/// matrix S1^(1/2) S2 S1^(1/2), which has the same eigenvalues as S1 S2 and is numerically safer
/// than scipy's sqrtm of the non-symmetric product.
pub fn frechet_distance(a: &Tensor, b: &Tensor) -> Result<f64> {
    let (m1, s1) = mean_cov(a)?;
    let (m2, s2) = mean_cov(b)?;
    if s1.size() != s2.size() {
        return Err(Error::Shape(format!("feature sizes differ: {:?} vs {:?}", s1.size(), s2.size())));
    }
    let sqrt_psd = |s: &Tensor| -> Result<Tensor> {
        let (evals, evecs) = s.f_linalg_eigh("L")?;
        let root = evals.f_clamp_min(0.0)?.f_sqrt()?;
        Ok(evecs.f_mul(&root.f_unsqueeze(0)?)?.f_matmul(&evecs.f_transpose(0, 1)?)?)
    };
    let r1 = sqrt_psd(&s1)?;
    let m = r1.f_matmul(&s2)?.f_matmul(&r1)?;
    let m = m.f_add(&m.f_transpose(0, 1)?)?.f_div_scalar(2.0)?; // symmetric up to rounding
    let tr_covmean =
        m.f_linalg_eigvalsh("L")?.f_clamp_min(0.0)?.f_sqrt()?.f_sum(Kind::Double)?.f_double_value(&[])?;
    let diff = m1.f_sub(&m2)?.f_square()?.f_sum(Kind::Double)?.f_double_value(&[])?;
    let tr = |s: &Tensor| s.f_trace().and_then(|t| t.f_double_value(&[]));
    Ok(diff + tr(&s1)? + tr(&s2)? - 2.0 * tr_covmean)
}

/// Precision, recall, density and coverage of one k (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Prdc {
    pub precision: f64,
    pub recall: f64,
    pub density: f64,
    pub coverage: f64,
}

/// Distance of each row to its k-th nearest row of the same set (itself being the 0th).
/// Shapes: (N, D) -> (N).
fn knn_radii(x: &Tensor, k: i64) -> Result<Tensor> {
    let n = x.size()[0];
    if n <= k {
        return Err(Error::Shape(format!("k-NN manifolds need more than k = {k} samples, got {n}")));
    }
    let mut radii = Vec::new();
    for start in (0..n).step_by(CHUNK as usize) {
        let chunk = x.f_narrow(0, start, (n - start).min(CHUNK))?;
        let d = Tensor::f_cdist(&chunk, x, 2.0, None::<i64>)?;
        radii.push(d.f_kthvalue(k + 1, 1, false)?.0);
    }
    Ok(Tensor::f_cat(&radii, 0)?)
}

/// Rows of one distance block.
const CHUNK: i64 = 1000;

/// Precision, recall, density and coverage of `fake` features against `real` ones, (N, D) and
/// (M, D), with k-nearest-neighbour balls (Kynkäänniemi et al. 2019; Naeem et al. 2020; as the
/// authors' `prdc.compute_prdc`).
pub fn prdc(real: &Tensor, fake: &Tensor, k: i64) -> Result<Prdc> {
    let (real, fake) = (real.f_to_kind(Kind::Double)?, fake.f_to_kind(Kind::Double)?);
    if real.dim() != 2 || fake.dim() != 2 || real.size()[1] != fake.size()[1] {
        return Err(Error::Shape(format!(
            "features must be (N, D) and (M, D), got {:?} and {:?}",
            real.size(),
            fake.size()
        )));
    }
    for (what, t) in [("real", &real), ("generated", &fake)] {
        if t.f_isfinite()?.f_all()?.f_int64_value(&[])? != 1 {
            return Err(Error::Data(format!("the {what} features hold NaN or infinite values")));
        }
    }
    let (n, m) = (real.size()[0], fake.size()[0]);
    let r_real = knn_radii(&real, k)?;
    let r_fake = knn_radii(&fake, k)?;
    // Per fake sample: inside some real ball (precision), how many (density).
    let mut in_real_balls = Tensor::f_zeros([m], (Kind::Int64, Device::Cpu))?;
    let (mut recalled, mut covered) = (0i64, 0i64);
    for start in (0..n).step_by(CHUNK as usize) {
        let len = (n - start).min(CHUNK);
        let d = Tensor::f_cdist(&real.f_narrow(0, start, len)?, &fake, 2.0, None::<i64>)?; // (len, M)
        let r = r_real.f_narrow(0, start, len)?.f_unsqueeze(1)?;
        let inside = d.f_lt_tensor(&r)?;
        in_real_balls = in_real_balls.f_add(&inside.f_sum_dim_intlist(0, false, Kind::Int64)?)?;
        recalled += d
            .f_lt_tensor(&r_fake.f_unsqueeze(0)?)?
            .f_any_dim(1, false)?
            .f_sum(Kind::Int64)?
            .f_int64_value(&[])?;
        covered +=
            d.f_amin(1, false)?.f_lt_tensor(&r.f_squeeze_dim(1)?)?.f_sum(Kind::Int64)?.f_int64_value(&[])?;
    }
    let precision = in_real_balls.f_gt(0i64)?.f_sum(Kind::Int64)?.f_int64_value(&[])? as f64 / m as f64;
    let density = in_real_balls.f_sum(Kind::Int64)?.f_int64_value(&[])? as f64 / (k * m) as f64;
    Ok(Prdc { precision, recall: recalled as f64 / n as f64, density, coverage: covered as f64 / n as f64 })
}

/// Trains the classifier on MNIST with zoo-core's Trainer (cross-entropy, batch 128).
pub struct ClassifierTask<'a> {
    pub net: MnistClassifier,
    pub train: &'a Mnist,
    pub test: &'a Mnist,
    pub shuffler: EpochShuffler,
    pub device: Device,
}

impl TrainTask for ClassifierTask<'_> {
    fn loss(&mut self, step: u64, _micro: u32, _rng: &mut StdRng) -> Result<StepOutput> {
        let (x, y) = self.train.batch(&self.shuffler.batch_at(step))?;
        let (x, y) = (x.f_to_device(self.device)?, y.f_to_device(self.device)?);
        let logits = self.net.logits(&x, true)?;
        let loss = logits.f_cross_entropy_loss::<Tensor>(&y, None, tch::Reduction::Mean, -100, 0.0)?;
        Ok(StepOutput { loss, metrics: vec![] })
    }

    fn eval(&mut self, _step: u64) -> Result<Vec<(String, f64)>> {
        let n = self.test.len();
        let (x, y) = self.test.batch(&(0..n).collect::<Vec<_>>())?;
        let mut correct = 0i64;
        let mut loss = 0.0;
        tch::no_grad(|| -> Result<()> {
            for start in (0..n as i64).step_by(1000) {
                let len = (n as i64 - start).min(1000);
                let xb = x.f_narrow(0, start, len)?.f_to_device(self.device)?;
                let yb = y.f_narrow(0, start, len)?.f_to_device(self.device)?;
                let logits = self.net.logits(&xb, false)?;
                let l = logits.f_cross_entropy_loss::<Tensor>(&yb, None, tch::Reduction::Sum, -100, 0.0)?;
                loss += l.f_double_value(&[])?;
                correct +=
                    logits.f_argmax(-1, false)?.f_eq_tensor(&yb)?.f_sum(Kind::Int64)?.f_int64_value(&[])?;
            }
            Ok(())
        })?;
        Ok(vec![("val_loss".into(), loss / n as f64), ("val_accuracy".into(), correct as f64 / n as f64)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaussian(n: i64, mean: &[f64], std: &[f64], seed: u64) -> Tensor {
        use rand::SeedableRng;
        use rand_distr_free::normal;
        let mut rng = StdRng::seed_from_u64(seed);
        let d = mean.len();
        let v: Vec<f64> = (0..n as usize * d).map(|i| mean[i % d] + std[i % d] * normal(&mut rng)).collect();
        Tensor::from_slice(&v).view([n, d as i64])
    }

    /// Box-Muller from `rand`'s uniform draws (keeps libtorch's global generator out of it).
    mod rand_distr_free {
        use rand::Rng;
        pub fn normal(rng: &mut impl Rng) -> f64 {
            let (u1, u2): (f64, f64) = (rng.gen_range(f64::EPSILON..1.0), rng.gen());
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        }
    }

    #[test]
    fn frechet_matches_the_closed_form_for_diagonal_gaussians() {
        // For diagonal covariances FD = sum (m1 - m2)^2 + sum (s1 - s2)^2.
        let a = gaussian(20000, &[0.0, 1.0, -2.0], &[1.0, 2.0, 0.5], 1);
        let b = gaussian(20000, &[0.5, 1.0, -1.0], &[1.5, 1.0, 0.5], 2);
        let want = 0.25 + 0.0 + 1.0 + 0.25 + 1.0 + 0.0;
        let got = frechet_distance(&a, &b).unwrap();
        assert!((got - want).abs() < 0.1, "{got} vs {want}");
        let same = frechet_distance(&a, &a).unwrap();
        assert!(same.abs() < 1e-6, "{same}");
        assert!(frechet_distance(&a, &gaussian(10, &[0.0; 2], &[1.0; 2], 3)).is_err());
    }

    #[test]
    fn precision_recall_see_mode_dropping() {
        // Real: two clusters. Fake: only one of them. Precision stays high, recall halves.
        let real = Tensor::cat(
            &[gaussian(500, &[0.0, 0.0], &[0.3, 0.3], 4), gaussian(500, &[10.0, 0.0], &[0.3, 0.3], 5)],
            0,
        );
        let fake = gaussian(1000, &[0.0, 0.0], &[0.3, 0.3], 6);
        let s = prdc(&real, &fake, 3).unwrap();
        assert!(s.precision > 0.9, "{s:?}");
        assert!((s.recall - 0.5).abs() < 0.06, "{s:?}");
        // Coverage halves too; density stays near 1: where the samples are, they are
        // distributed as the real ones.
        assert!((s.coverage - 0.5).abs() < 0.06, "{s:?}");
        assert!((s.density - 1.0).abs() < 0.1, "{s:?}");
        let far = gaussian(100, &[50.0, 50.0], &[0.3, 0.3], 7);
        let f = prdc(&real, &far, 3).unwrap();
        assert_eq!((f.precision, f.density, f.coverage), (0.0, 0.0, 0.0));
        // One outlier of the real set has a ball (its 3rd neighbour is in a cluster) that takes
        // in a pile of identical samples near it: precision is fooled, density (one ball of k
        // per sample) and coverage (one real image of 1,001) are not.
        let one = Tensor::from_slice(&[100.0, 100.0]).view([1, 2]);
        let outlier = Tensor::cat(&[real.shallow_clone(), one], 0);
        let pile = Tensor::from_slice(&[101.0, 99.0]).view([1, 2]).repeat([50, 1]);
        let p = prdc(&outlier, &pile, 3).unwrap();
        assert_eq!(p.precision, 1.0, "{p:?}");
        assert!((p.density - 1.0 / 3.0).abs() < 1e-12, "{p:?}");
        assert!((p.coverage - 1.0 / 1001.0).abs() < 1e-12, "{p:?}");
        let nan = Tensor::from_slice(&[f64::NAN, 0.0]).view([1, 2]).repeat([10, 1]);
        assert!(prdc(&real, &nan, 3).unwrap_err().to_string().contains("NaN"));
        assert!(prdc(&real, &Tensor::zeros([10, 3], (Kind::Double, Device::Cpu)), 3).is_err());
    }

    #[test]
    fn classifier_shapes_and_errors() {
        let vs = VarStore::new(Device::Cpu);
        let net = MnistClassifier::new(&vs.root(), &ClassifierConfig::default());
        let x28 = Tensor::zeros([2, 1, 28, 28], (Kind::Float, Device::Cpu));
        let x32 = Tensor::zeros([3, 1, 32, 32], (Kind::Float, Device::Cpu));
        assert_eq!(net.logits(&x28, false).unwrap().size(), [2, 10]);
        assert_eq!(net.features(&x32, false).unwrap().size(), [3, 64]);
        let bad = Tensor::zeros([1, 3, 28, 28], (Kind::Float, Device::Cpu));
        assert!(net.logits(&bad, false).unwrap_err().to_string().contains("(B, 1, 28, 28)"));
    }
}
