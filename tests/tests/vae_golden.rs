//! zoo-vae against the reference implementations. Fixtures: tools/make_vae_fixtures.py.
//!
//! - diffusers' AutoencoderKL: tiny random models saved with `save_pretrained` load 1:1 as a
//!   model folder; posterior mean/logvar, KL, and the decodes of the mode and of a sample with
//!   fixed noise match diffusers within 1e-4.
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
