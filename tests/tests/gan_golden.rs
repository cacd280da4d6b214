//! zoo-gan against PyTorch: the DCGAN recipe's netG and netD (state dicts converted with
//! tools/convert_to_safetensors.py) and a spectral-norm discriminator, on fixed inputs.
//! Fixtures: tools/make_gan_fixtures.py.
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};
use zoo_core::weights::{self, SafetensorsFile};
use zoo_gan::dcgan::{self, DcganConfig, Norm};
use zoo_gan::model::{Discriminator, Generator, ModelConfig};

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
