//! zoo-diffusion's UNet2DModel and pipelines against diffusers (fixtures from
//! tools/make_diffusion_fixtures.py):
//! - three tiny random UNets (attention with scale-shift resnets; class embedding; the
//!   google/ddpm-cifar10-32 layout saved with legacy attention names) load 1:1 and give
//!   diffusers' outputs within 1e-4, for integer and fractional timesteps;
//! - DDIMPipeline and DDPMPipeline after torch.manual_seed(42) give the images `sample` gives
//!   with seed 42;
//! - the ddpm-cifar10-32 preset has the architecture's 35.7M parameters.
//!
//! The pipeline test compares draws from libtorch's global generator, and building a model
//! draws its initial weights from the same generator: every test here holds one lock so that
//! no draws interleave.
use std::path::PathBuf;
use std::sync::Mutex;

use tch::{Device, Kind, Tensor};
use zoo_diffusion::pipeline::{self, DiffusionModel, ModelSpec, SampleOptions};
use zoo_diffusion::schedulers;

static GENERATOR: Mutex<()> = Mutex::new(());

fn fixture(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/diffusion").join(p)
}

fn get(io: &[(String, Tensor)], k: &str) -> Tensor {
    io.iter().find(|(n, _)| n == k).unwrap_or_else(|| panic!("no {k}")).1.shallow_clone()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn tiny_unets_match_diffusers() {
    let _g = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    for name in ["attn", "class", "google"] {
        let dir = fixture(&format!("unet-{name}"));
        let spec = ModelSpec::resolve(dir.to_str().unwrap()).unwrap();
        let m = DiffusionModel::load(spec, Device::Cpu, Kind::Float, true).unwrap();
        let io = zoo_core::weights::load(&dir.join("io.safetensors")).unwrap();
        let x = get(&io, "sample");
        let labels = io.iter().any(|(n, _)| n == "class_labels").then(|| get(&io, "class_labels"));
        let out = tch::no_grad(|| m.unet.forward(&x, &get(&io, "timesteps"), labels.as_ref())).unwrap();
        let want = get(&io, "out");
        let d = max_diff(&out, &want);
        assert!(d < 1e-4, "unet-{name}: max |diff| {d}");
        assert!(
            want.abs().max().double_value(&[]) > 0.1,
            "unet-{name}: a trivial output would prove nothing"
        );
        let tf = Tensor::from_slice(&[12.75f32, 401.5]);
        let out = tch::no_grad(|| m.unet.forward(&x, &tf, labels.as_ref())).unwrap();
        let d = max_diff(&out, &get(&io, "out_t_float"));
        assert!(d < 1e-4, "unet-{name} with fractional timesteps: max |diff| {d}");
    }
}

#[test]
fn missing_and_mismatched_weights_are_named() {
    let _g = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("unet-class");
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    let spec = ModelSpec::resolve(dir.path().to_str().unwrap()).unwrap();
    let e = DiffusionModel::load(spec, Device::Cpu, Kind::Float, true).err().unwrap().to_string();
    assert!(e.contains("no .safetensors"), "{e}");
    // The attn model's weights in the class model's architecture: names and shapes differ.
    std::fs::copy(
        fixture("unet-attn").join("diffusion_pytorch_model.safetensors"),
        dir.path().join("diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    let spec = ModelSpec::resolve(dir.path().to_str().unwrap()).unwrap();
    let e = DiffusionModel::load(spec, Device::Cpu, Kind::Float, true).err().unwrap().to_string();
    assert!(e.contains("class_embedding.weight"), "{e}");
}

#[test]
fn pipelines_match_diffusers_with_the_same_seed() {
    let _g = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    for (name, sched) in [("ddim", "ddim"), ("ddpm", "ddpm")] {
        let dir = fixture(&format!("pipeline-{name}"));
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
        let spec = ModelSpec::resolve(dir.to_str().unwrap()).unwrap();
        assert_eq!(
            spec.scheduler.class_name.as_deref(),
            Some(if name == "ddim" { "DDIMScheduler" } else { "DDPMScheduler" })
        );
        let mut s = schedulers::build(sched, &spec.scheduler).unwrap();
        let m = DiffusionModel::load(spec, Device::Cpu, Kind::Float, true).unwrap();
        let o = SampleOptions {
            num_samples: meta["batch_size"].as_i64().unwrap(),
            steps: meta["steps"].as_u64().unwrap() as usize,
            class: None,
            class_offset: 0,
            guidance_scale: 1.0,
            seed: meta["seed"].as_u64().unwrap(),
            keep_frames: 0,
        };
        let out = pipeline::sample(&m, s.as_mut(), &o, &mut |_, _| {}).unwrap();
        // diffusers returns (B, H, W, C) in [0, 1].
        let want = get(&zoo_core::weights::load(&dir.join("expected.safetensors")).unwrap(), "images");
        let got = ((out.images + 1.0) / 2.0).clamp(0.0, 1.0).permute([0, 2, 3, 1]);
        let d = max_diff(&got, &want);
        assert!(d < 1e-4, "{name}: max |diff| {d}");
        // A different seed gives different images (the seed is used, not ignored).
        let o2 = SampleOptions { seed: o.seed + 1, ..o };
        let other = pipeline::sample(&m, s.as_mut(), &o2, &mut |_, _| {}).unwrap();
        assert!(max_diff(&((other.images + 1.0) / 2.0).permute([0, 2, 3, 1]), &want) > 1e-2);
    }
}

#[test]
fn cifar10_preset_has_the_reference_parameter_count() {
    let _g = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    let spec = ModelSpec::resolve("ddpm-cifar10-32").unwrap();
    assert!(spec.weights.is_none());
    let m = DiffusionModel::load(spec.clone(), Device::Cpu, Kind::Float, false).unwrap();
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("cifar10-arch.json")).unwrap()).unwrap();
    let n: i64 = m.vs.variables().values().map(|t| t.numel() as i64).sum();
    assert_eq!(n, want["parameters"].as_i64().unwrap());
    assert_eq!(m.vs.variables().len() as i64, want["tensors"].as_i64().unwrap());
    let e = DiffusionModel::load(spec, Device::Cpu, Kind::Float, true).err().unwrap().to_string();
    assert!(e.contains("no trained weights"), "{e}");
}
