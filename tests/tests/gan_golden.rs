//! zoo-gan against PyTorch: the DCGAN recipe's netG and netD (state dicts converted with
//! tools/convert_to_safetensors.py) and a spectral-norm discriminator, on fixed inputs
//! (fixtures: tools/make_gan_fixtures.py); and a tiny StyleGAN2 generator and discriminator
//! against tools/stylegan2_reference.py (fixtures in stylegan2-tiny/).
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};
use zoo_core::weights::{self, SafetensorsFile};
use zoo_gan::dcgan::{self, DcganConfig, Norm};
use zoo_gan::model::{Discriminator, Generator, ModelConfig};
use zoo_gan::stylegan2::{self, Mode, NoiseMode, StyleMix};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/gan")
}

fn config() -> ModelConfig {
    ModelConfig::load_file(&fixtures().join("dcgan-config.json")).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

#[test]
fn dcgan_generator_matches_pytorch() {
    let exp = SafetensorsFile::open(&fixtures().join("dcgan-expected.safetensors")).unwrap();
    let g =
        Generator::load_weights(&config(), &fixtures().join("dcgan-g.safetensors"), Device::Cpu, Kind::Float)
            .unwrap();
    let want = exp.tensor("g_out").unwrap();
    let got = g.generate(&exp.tensor("z").unwrap(), None).unwrap();
    assert_eq!(got.size(), [4, 3, 64, 64]);
    // The outputs are far from 0, so the comparison means something.
    assert!(want.abs().mean(Kind::Float).double_value(&[]) > 0.1);
    let d = max_diff(&got, &want);
    assert!(d < 1e-5, "generator differs from PyTorch by {d}");
}

#[test]
fn dcgan_discriminator_matches_pytorch() {
    let exp = SafetensorsFile::open(&fixtures().join("dcgan-expected.safetensors")).unwrap();
    let d = Discriminator::new(&config(), Device::Cpu).unwrap();
    weights::load_into(&d.vs, &fixtures().join("dcgan-d.safetensors"), &weights::keep_names).unwrap();
    let logits = tch::no_grad(|| d.forward_t(&exp.tensor("g_out").unwrap(), None, false)).unwrap();
    let diff = max_diff(&logits.sigmoid(), &exp.tensor("d_out").unwrap());
    assert!(diff < 1e-5, "discriminator differs from PyTorch by {diff}");
}

#[test]
fn spectral_norm_discriminator_matches_pytorch_in_training_mode() {
    let exp = SafetensorsFile::open(&fixtures().join("sn-expected.safetensors")).unwrap();
    let cfg =
        DcganConfig { nz: 8, ngf: 4, ndf: 4, nc: 3, image_size: 32, num_classes: 0, d_norm: Norm::Spectral };
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let d = dcgan::Discriminator::new(&vs.root(), &cfg).unwrap();
    weights::load_into(&vs, &fixtures().join("sn-d.safetensors"), &weights::keep_names).unwrap();
    // One training-mode forward: one power iteration per layer, then W / sigma.
    let out = tch::no_grad(|| d.forward_t(&exp.tensor("x").unwrap(), None, true)).unwrap();
    let diff = max_diff(&out, &exp.tensor("d_out").unwrap());
    assert!(diff < 1e-5, "spectral-norm discriminator differs from PyTorch by {diff}");
    let vars = vs.variables();
    for i in [0, 2, 4, 6] {
        for (ours, theirs) in [("weight_u", "u_after"), ("weight_v", "v_after")] {
            let diff =
                max_diff(&vars[&format!("main.{i}.{ours}")], &exp.tensor(&format!("{theirs}.{i}")).unwrap());
            assert!(diff < 1e-6, "main.{i}.{ours} after the power iteration differs by {diff}");
        }
    }
}

#[test]
fn our_state_dict_has_the_recipe_keys() {
    // Saving ours gives exactly the keys (and shapes) PyTorch saved, so it loads back there.
    let g = Generator::new(&config(), Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("g.safetensors");
    weights::save_varstore(&g.vs, &p).unwrap();
    let info = |p: &Path| {
        let mut v: Vec<(String, String, Vec<usize>)> = SafetensorsFile::open(p)
            .unwrap()
            .infos()
            .unwrap()
            .into_iter()
            .map(|i| (i.name, i.dtype, i.shape))
            .collect();
        v.sort();
        v
    };
    assert_eq!(info(&p), info(&fixtures().join("dcgan-g.safetensors")));
}

fn stylegan2_fixtures() -> PathBuf {
    fixtures().join("stylegan2-tiny")
}

/// The reference's generator: constant noise (each layer's `noise_const` times its non-zero
/// `noise_strength`), so the images are a function of z; all within 1e-4.
#[test]
fn stylegan2_generator_matches_the_pytorch_reference() {
    let dir = stylegan2_fixtures();
    let exp = SafetensorsFile::open(&dir.join("expected.safetensors")).unwrap();
    let cfg = ModelConfig::load(&dir).unwrap();
    let ModelConfig::StyleGan2(sc) = &cfg else { panic!("not a StyleGAN2 config") };
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let g = stylegan2::Generator::new(&vs.root(), sc).unwrap();
    weights::load_into(&vs, &dir.join("generator.safetensors"), &weights::keep_names).unwrap();
    let (z, z2) = (exp.tensor("z").unwrap(), exp.tensor("z2").unwrap());
    let psi = exp.tensor("psi").unwrap().double_value(&[0]);
    let cutoff = exp.tensor("cutoff").unwrap().int64_value(&[0]);
    let mix = StyleMix { z: &z2, cutoff };
    let unfused = Mode { fused_modconv: false, ..Mode::eval() };
    let no_noise = Mode { noise: NoiseMode::None, ..Mode::eval() };
    let mut worst = 0f64;
    for (name, psi, mix, mode) in [
        ("img", 1.0, None, Mode::eval()),
        ("img", 1.0, None, unfused),
        ("img_psi", psi, None, Mode::eval()),
        ("img_mix", 1.0, Some(&mix), Mode::eval()),
        ("img_mix", 1.0, Some(&mix), unfused),
        ("img_nonoise", 1.0, None, no_noise),
    ] {
        let want = exp.tensor(name).unwrap();
        // Far from 0, so the comparison means something.
        assert!(want.abs().mean(Kind::Float).double_value(&[]) > 0.5, "{name}");
        let got = tch::no_grad(|| g.forward(&z, psi, mix, mode)).unwrap();
        let d = max_diff(&got, &want);
        assert!(d < 1e-4, "{name} ({mode:?}) differs from the reference by {d}");
        worst = worst.max(d);
    }
    eprintln!("stylegan2 generator: max diff {worst:e}");
    // The outputs differ from each other by far more than the tolerance.
    let img = exp.tensor("img").unwrap();
    for other in ["img_psi", "img_mix", "img_nonoise"] {
        assert!(max_diff(&img, &exp.tensor(other).unwrap()) > 0.1, "{other}");
    }
    // Through the model-level type too (eval mode = constant noise, psi 1).
    let mg = Generator::load(&dir, Device::Cpu, Kind::Float).unwrap();
    assert!(max_diff(&mg.generate(&z, None).unwrap(), &img) < 1e-4);
    assert!(
        max_diff(&mg.generate_with(&z, None, Some(psi)).unwrap(), &exp.tensor("img_psi").unwrap()) < 1e-4
    );
}

#[test]
fn stylegan2_discriminator_matches_the_pytorch_reference() {
    let dir = stylegan2_fixtures();
    let exp = SafetensorsFile::open(&dir.join("expected.safetensors")).unwrap();
    let cfg = ModelConfig::load(&dir).unwrap();
    let d = Discriminator::new(&cfg, Device::Cpu).unwrap();
    weights::load_into(&d.vs, &dir.join("discriminator.safetensors"), &weights::keep_names).unwrap();
    let got = tch::no_grad(|| d.forward_t(&exp.tensor("d_in").unwrap(), None, false)).unwrap();
    let want = exp.tensor("d_out").unwrap();
    assert!(want.abs().mean(Kind::Float).double_value(&[]) > 0.1);
    let diff = max_diff(&got, &want);
    eprintln!("stylegan2 discriminator: max diff {diff:e}");
    assert!(diff < 1e-4, "discriminator differs from the reference by {diff}");
}
