//! zoo-vae against the reference implementations. Fixtures: tools/make_vae_fixtures.py.
//!
//! - diffusers' AutoencoderKL: tiny random models saved with `save_pretrained` load 1:1 as a
//!   model folder; posterior mean/logvar, KL, and the decodes of the mode and of a sample with
//!   fixed noise match diffusers within 1e-4.
//! - An AutoencoderKL of 64 channels, wide enough that zoo's 3x3 convolutions run as Winograd:
//!   weights and input come from a formula both sides compute, so the fixture is only the
//!   config and diffusers' outputs.
//! - The MLP VAE of the PyTorch examples repo: with its weights and a fixed eps, mu, logvar,
//!   logits, the summed BCE and the KL per image match within 1e-4.
use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use tch::{Device, Kind, Tensor};
use zoo_core::weights::{self, Remap};
use zoo_vae::mlp::{MlpConfig, MlpVae};
use zoo_vae::model::{Net, Vae};
use zoo_vae::ModelConfig;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/vae").join(name)
}

fn expected(name: &str) -> Result<Vec<(String, Tensor)>> {
    Ok(weights::load(&fixture(name))?)
}

fn get<'a>(t: &'a [(String, Tensor)], k: &str) -> Result<&'a Tensor> {
    t.iter().find(|(n, _)| n == k).map(|(_, t)| t).with_context(|| format!("fixture has no '{k}'"))
}

/// Max |got - want| must be under 1e-4, or under 1e-4 relative to the reference's size for
/// values that are sums over many elements (the KL per image is in the hundreds, where f32
/// rounding that depends on the thread count alone moves it by ~1e-4).
fn max_diff(what: &str, got: &Tensor, want: &Tensor) -> Result<f64> {
    ensure!(got.size() == want.size(), "{what}: shape {:?}, diffusers {:?}", got.size(), want.size());
    let want = want.to_kind(Kind::Double);
    let d = (got.to_kind(Kind::Double) - &want).abs().max().double_value(&[]);
    let scale = want.abs().max().double_value(&[]).max(1.0);
    ensure!(d < 1e-4 * scale, "{what}: max |zoo - reference| = {d:e} (reference up to {scale:e})");
    Ok(d)
}

fn check_kl_model(name: &str) -> Result<()> {
    let vae = Vae::load(&fixture(name), Device::Cpu, Kind::Float)?;
    let Net::Kl(model) = &vae.net else { anyhow::bail!("{name} did not load as an AutoencoderKL") };
    let e = expected(&format!("{name}-expected.safetensors"))?;
    tch::no_grad(|| -> Result<()> {
        let q = model.encode(get(&e, "x")?)?;
        max_diff("posterior mean", &q.mean, get(&e, "mean")?)?;
        max_diff("posterior logvar", &q.logvar, get(&e, "logvar")?)?;
        max_diff("kl", &q.kl()?, get(&e, "kl")?)?;
        max_diff("decode(mode)", &model.decode(&q.mode())?, get(&e, "decode_mode")?)?;
        let z = q.sample_with(get(&e, "noise")?)?;
        max_diff("decode(sample)", &model.decode(&z)?, get(&e, "decode_sample")?)?;
        // Through the model-folder wrapper: images in [-1, 1], the posterior mean, decoded.
        max_diff("reconstruct", &vae.reconstruct(get(&e, "x")?)?, get(&e, "decode_mode")?)?;
        Ok(())
    })
}

#[test]
fn autoencoder_kl_with_attention_matches_diffusers() -> Result<()> {
    check_kl_model("tiny-kl")
}

/// Stream `k` of the fixture script's formula: n numbers in [-1, 1), element j being
/// frac((j + 1) phi + k rho) * 2 - 1 in f64 (tools/make_vae_fixtures.py, `formula`).
fn formula(n: usize, k: usize) -> Vec<f64> {
    const PHI: f64 = 0.6180339887498949;
    const PLASTIC: f64 = 0.7548776662466927;
    (1..=n)
        .map(|j| {
            let x = j as f64 * PHI + k as f64 * PLASTIC;
            (x - x.floor()) * 2.0 - 1.0
        })
        .collect()
}

/// 64 channels at 16x16: zoo's 3x3 convolutions run as Winograd here (checked), inside the
/// comparison with diffusers. Every weight is set by the formula, parameter k of the sorted
/// names as the script does.
#[test]
fn autoencoder_kl_wide_enough_for_winograd_matches_diffusers() -> Result<()> {
    let x = Tensor::randn([2, 64, 16, 16], (Kind::Float, Device::Cpu));
    let w = Tensor::randn([64, 64, 3, 3], (Kind::Float, Device::Cpu));
    let winograd = tch::no_grad(|| zoo_core::ops::conv2d_is_winograd(&x, &w, None, [1, 1], [1, 1]));
    ensure!(
        winograd || zoo_core::ops::libtorch_only(),
        "the wide model's convolutions should run as Winograd"
    );

    let dir = fixture("wide-kl-formula");
    let cfg: zoo_vae::AutoencoderKLConfig =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json"))?)?;
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let model = zoo_vae::AutoencoderKL::new(vs.root(), &cfg)?;
    let file = fixture("wide-kl-formula-expected.safetensors");
    let meta = weights::SafetensorsFile::open(&file)?.metadata()?;
    let names: Vec<String> = serde_json::from_str(meta.get("names").context("no 'names' in the metadata")?)?;
    let vars = vs.variables();
    let mut ours: Vec<&String> = vars.keys().collect();
    ours.sort();
    ensure!(ours == names.iter().collect::<Vec<_>>(), "zoo's parameter names differ from diffusers'");
    tch::no_grad(|| -> Result<()> {
        for (k, name) in names.iter().enumerate() {
            let mut p = vars[name].shallow_clone();
            let shape = p.size();
            let u = formula(p.numel(), k);
            let v: Vec<f64> = if shape.len() >= 2 {
                let fan_in = (p.numel() as i64 / shape[0]) as f64;
                u.iter().map(|u| (3.0 / fan_in).sqrt() * u).collect()
            } else if name.contains("norm") && name.ends_with("weight") {
                u.iter().map(|u| 1.0 + 0.2 * u).collect()
            } else {
                u.iter().map(|u| 0.1 * u).collect()
            };
            let v: Vec<f32> = v.into_iter().map(|v| v as f32).collect();
            p.copy_(&Tensor::from_slice(&v).view(shape.as_slice()));
        }
        let s = cfg.sample_size;
        let x: Vec<f32> = formula((2 * 3 * s * s) as usize, 10000).into_iter().map(|v| v as f32).collect();
        let x = Tensor::from_slice(&x).view([2, 3, s, s]);
        let e = weights::load(&file)?;
        let q = model.encode(&x)?;
        max_diff("posterior mean", &q.mean, get(&e, "mean")?)?;
        max_diff("posterior logvar", &q.logvar, get(&e, "logvar")?)?;
        max_diff("decode(mode)", &model.decode(&q.mode())?, get(&e, "decode_mode")?)?;
        Ok(())
    })
}

#[test]
fn autoencoder_kl_without_attention_or_quant_convs_matches_diffusers() -> Result<()> {
    check_kl_model("tiny-kl-plain")
}

/// `scaling_factor` and `shift_factor` come from config.json (0.3 in tiny-kl, where
/// diffusers' default is 0.18215; shift 0.1 in tiny-kl-plain).
#[test]
fn scaling_factor_is_read_from_the_config() -> Result<()> {
    for (name, scale, shift) in [("tiny-kl", 0.3, None), ("tiny-kl-plain", 0.18215, Some(0.1))] {
        let vae = Vae::load(&fixture(name), Device::Cpu, Kind::Float)?;
        let ModelConfig::Kl(cfg) = &vae.config else { anyhow::bail!("not AutoencoderKL") };
        ensure!(cfg.scaling_factor == scale && cfg.shift_factor == shift, "{name}: {cfg:?}");
    }
    Ok(())
}

#[test]
fn mlp_vae_matches_the_pytorch_example() -> Result<()> {
    let cfg = MlpConfig { hidden_dim: 32, latent_dim: 4, ..MlpConfig::mnist() };
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let m = MlpVae::new(vs.root(), &cfg)?;
    let path = fixture("mlp.safetensors");
    let remap = |k: &str| if k.starts_with("fc") { Remap::To(k.to_string()) } else { Remap::Skip };
    weights::load_into(&vs, &path, &remap)?;
    let e = expected("mlp.safetensors")?;
    tch::no_grad(|| -> Result<()> {
        let x = get(&e, "x")?.view([3, 1, 28, 28]);
        let q = m.encode(&x)?;
        max_diff("mu", &q.mean, get(&e, "mu")?)?;
        max_diff("logvar", &q.logvar, get(&e, "logvar")?)?;
        let logits = m.decode(&q.sample_with(get(&e, "eps")?)?)?;
        max_diff("logits", &logits.view([3, 784]), get(&e, "logits")?)?;
        max_diff("bce", &m.likelihood.nll(&logits, &x)?, get(&e, "bce")?)?;
        max_diff("kl", &q.kl()?, get(&e, "kl")?)?;
        Ok(())
    })
}
