//! zoo-diffusion's Stable Diffusion pipelines against diffusers (fixtures from
//! tools/make_sd_fixtures.py): three tiny random pipeline folders in diffusers' layout
//! (SD 1.x style; SD 2.x style with linear projections, per-level heads, a gelu text encoder,
//! "!" padding and v-prediction; a 9-channel inpainting UNet) load as they are, their UNet and
//! VAE give diffusers' outputs, and txt2img (with and without guidance, a negative or empty
//! prompt, PNDM, Euler ancestral, DDIM with eta 1), img2img and inpainting (9-channel, and the
//! latent blend of a 4-channel UNet, at strength 1 and below) give diffusers' images within 1e-3
//! for the same seed.
//!
//! Loading a model and sampling both draw from libtorch's global generator: every test holds
//! one lock so that no draws interleave.
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::Value;
use tch::{Device, Kind, Tensor};
use zoo_diffusion::schedulers::{self, Ddim, Scheduler, SchedulerConfig};
use zoo_diffusion::stable_diffusion::{load_mask, Edit, StableDiffusion, Txt2ImgOptions};

static GENERATOR: Mutex<()> = Mutex::new(());

fn fixture(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/sd").join(p)
}

fn expected(dir: &Path) -> Vec<(String, Tensor)> {
    zoo_core::weights::load(&dir.join("expected.safetensors")).unwrap()
}

fn get(io: &[(String, Tensor)], k: &str) -> Tensor {
    io.iter().find(|(n, _)| n == k).unwrap_or_else(|| panic!("no {k}")).1.shallow_clone()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn cases(dir: &Path) -> Vec<Value> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    v["cases"].as_array().unwrap().clone()
}

fn scheduler(case: &Value) -> Box<dyn Scheduler> {
    let s = &case["scheduler"];
    let (cfg, _) = SchedulerConfig::from_value(&s["config"]).unwrap();
    let class = s["class"].as_str().unwrap();
    let eta = case["eta"].as_f64().unwrap_or(0.0);
    if eta != 0.0 {
        assert_eq!(class, "DDIMScheduler");
        return Box::new(Ddim::new(&cfg).unwrap().with_eta(eta).unwrap());
    }
    schedulers::build(class, &cfg).unwrap()
}

fn run_folder(name: &str) {
    let _g = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    let dir = fixture(name);
    let sd = StableDiffusion::load(&dir, Device::Cpu, Kind::Float).unwrap();
    let io = expected(&dir);

    // The parts alone.
    let out = sd.unet.forward(
        &get(&io, "unet.sample"),
        &get(&io, "unet.timestep"),
        &get(&io, "unet.encoder_hidden_states"),
    );
    let d = max_diff(&out.unwrap(), &get(&io, "unet.out"));
    assert!(d < 1e-4, "{name}: UNet differs from diffusers by {d}");
    let dec = tch::no_grad(|| sd.vae.decode(&get(&io, "vae.latent"))).unwrap();
    let d = max_diff(&dec, &get(&io, "vae.decoded"));
    assert!(d < 1e-4, "{name}: VAE decode differs by {d}");
    let q = tch::no_grad(|| sd.vae.encode(&get(&io, "vae.image"))).unwrap();
    assert!(max_diff(&q.mean, &get(&io, "vae.latent_mean")) < 1e-4, "{name}: VAE posterior mean");

    // The pipelines.
    for case in cases(&dir) {
        let cname = case["name"].as_str().unwrap();
        let mut sched = scheduler(&case);
        let image = || {
            zoo_core::image::load_image_rgb(&dir.join(case["image"].as_str().unwrap())).unwrap().unsqueeze(0)
        };
        let strength = case["strength"].as_f64().unwrap_or(1.0);
        let edit = match case["mode"].as_str().unwrap() {
            "txt2img" => Edit::None,
            "img2img" => Edit::Img2Img { image: image(), strength },
            "inpaint" => {
                let mask = load_mask(&dir.join(case["mask_image"].as_str().unwrap())).unwrap();
                Edit::Inpaint { image: image(), mask, strength }
            }
            m => panic!("{cname}: mode {m}"),
        };
        let o = Txt2ImgOptions {
            prompt: case["prompt"].as_str().unwrap().to_string(),
            negative_prompt: case["negative_prompt"].as_str().map(String::from),
            steps: case["num_inference_steps"].as_u64().unwrap() as usize,
            guidance_scale: case["guidance_scale"].as_f64().unwrap(),
            seed: case["seed"].as_u64().unwrap(),
            height: case["height"].as_i64(),
            width: case["width"].as_i64(),
            num_samples: case["num_images_per_prompt"].as_i64().unwrap(),
        };
        let out = sd.generate(sched.as_mut(), &o, &edit, &mut |_, _| {}).unwrap();
        let want = get(&io, &format!("{cname}.images")).permute([0, 3, 1, 2]);
        assert_eq!(out.images.size(), want.size(), "{name}/{cname}");
        let d = max_diff(&out.images, &want);
        assert!(d < 1e-3, "{name}/{cname}: images differ from diffusers' by {d}");
    }
}

#[test]
fn sd1_style_pipelines_match_diffusers() {
    run_folder("sd1-tiny");
}

#[test]
fn sd2_style_pipelines_match_diffusers() {
    run_folder("sd2-tiny");
}

#[test]
fn inpainting_unet_pipelines_match_diffusers() {
    run_folder("sd1-inpaint-tiny");
}

#[test]
fn bad_requests_are_clear_errors() {
    let _g = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    let dir = fixture("sd1-tiny");
    let sd = StableDiffusion::load(&dir, Device::Cpu, Kind::Float).unwrap();
    let cfg = sd.scheduler.clone();
    let o = Txt2ImgOptions {
        prompt: "a cat".into(),
        negative_prompt: None,
        steps: 2,
        guidance_scale: 7.5,
        seed: 0,
        height: Some(30),
        width: None,
        num_samples: 1,
    };
    let mut s = schedulers::build("ddim", &cfg).unwrap();
    let e = sd.generate(s.as_mut(), &o, &Edit::None, &mut |_, _| {}).err().unwrap().to_string();
    assert!(e.contains("multiples of 4"), "{e}");
    let img = Tensor::zeros([1, 3, 32, 32], (Kind::Float, Device::Cpu));
    let o = Txt2ImgOptions { height: None, ..o };
    let e = sd.generate(
        s.as_mut(),
        &o,
        &Edit::Img2Img { image: img.shallow_clone(), strength: 1.5 },
        &mut |_, _| {},
    );
    assert!(e.err().unwrap().to_string().contains("strength 1.5"));
    let mask = Tensor::zeros([1, 1, 16, 32], (Kind::Float, Device::Cpu));
    let e = sd.generate(
        s.as_mut(),
        &o,
        &Edit::Inpaint { image: img.shallow_clone(), mask, strength: 1.0 },
        &mut |_, _| {},
    );
    assert!(e.err().unwrap().to_string().contains("mask"));
    // A low strength that leaves no step.
    let e = sd.generate(s.as_mut(), &o, &Edit::Img2Img { image: img, strength: 0.1 }, &mut |_, _| {});
    assert!(e.err().unwrap().to_string().contains("no denoising step"));
    // A long prompt is truncated and reported, never an error.
    let long = Txt2ImgOptions { prompt: "a red circle and ".repeat(40), guidance_scale: 1.0, steps: 1, ..o };
    let out = sd.generate(s.as_mut(), &long, &Edit::None, &mut |_, _| {}).unwrap();
    assert_eq!(out.truncated.len(), 1);
    // A missing component folder is named.
    let tmp = tempfile::tempdir().unwrap();
    for part in ["unet", "vae", "text_encoder", "tokenizer"] {
        copy_dir(&dir.join(part), &tmp.path().join(part));
    }
    let e = StableDiffusion::load(tmp.path(), Device::Cpu, Kind::Float).err().unwrap().to_string();
    assert!(e.contains("scheduler/"), "{e}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}
