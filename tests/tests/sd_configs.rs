//! The released Stable Diffusion configs (SD 1.5, its inpainting UNet, SD 2.1) parse as they are
//! and build models with diffusers' parameter counts (counted by tools/make_sd_fixtures.py on
//! the meta device, in tests/fixtures/sd/configs.json). No weights are needed; the models are
//! built one at a time, since SD's UNet takes 3.4 GB in f32.
use std::path::PathBuf;

use serde_json::Value;
use tch::nn::VarStore;
use tch::Device;
use zoo_diffusion::clip::{CLIPTextConfig, CLIPTextModel};
use zoo_diffusion::unet::{UNet2DConditionConfig, UNet2DConditionModel};
use zoo_vae::{AutoencoderKL, AutoencoderKLConfig};

fn configs() -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/sd/configs.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn count(vs: &VarStore) -> i64 {
    vs.variables().values().map(|t| t.numel() as i64).sum()
}

#[test]
fn released_configs_build_with_diffusers_parameter_counts() {
    let all = configs();
    let models = all["models"].as_object().unwrap();
    let mut checked = 0;
    for (name, m) in models {
        let cfg = &m["config"];
        let want = m["parameters"].as_i64().unwrap();
        let vs = VarStore::new(Device::Cpu);
        if name.ends_with(".unet") {
            let c = UNet2DConditionConfig::from_value(cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
            UNet2DConditionModel::new(vs.root(), &c).unwrap();
        } else if name.ends_with(".vae") {
            let c: AutoencoderKLConfig = serde_json::from_value(cfg.clone()).unwrap();
            AutoencoderKL::new(vs.root(), &c).unwrap();
        } else if name.ends_with(".text_encoder") {
            let c = CLIPTextConfig::from_value(cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
            CLIPTextModel::new(vs.root(), &c).unwrap();
        } else {
            panic!("{name}: unknown part");
        }
        assert_eq!(count(&vs), want, "{name}");
        checked += 1;
    }
    assert_eq!(checked, 7);
}

#[test]
fn built_in_presets_are_the_released_configs() {
    let all = configs();
    let unet = |k: &str| UNet2DConditionConfig::from_value(&all["models"][k]["config"]).unwrap();
    assert_eq!(unet("sd15.unet"), UNet2DConditionConfig::sd1());
    assert_eq!(unet("sd21.unet"), UNet2DConditionConfig::sd2());
}
