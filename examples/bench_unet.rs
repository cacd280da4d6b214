//! Times a diffusers-layout UNet in zoo: the zoo side of `tools/bench_diffusion.py`.
//!
//! ```sh
//! cargo run --release -p zoo-examples --example bench_unet -- MODEL_DIR [REPEATS]
//! ```
//!
//! MODEL_DIR is a diffusers folder (`config.json` + `diffusion_pytorch_model.safetensors`, e.g.
//! what `UNet2DModel.save_pretrained` writes) or a pipeline folder with `unet/`. Four tasks, each
//! run once to warm up and then REPEATS times (default 3), the median printed as one JSON line:
//! a UNet forward at batch 1 and at batch 16 (no gradients), 50 DDIM steps at batch 4 (the
//! pipeline's loop: noise, scale, UNet, scheduler step), and a training step at batch 16
//! (noise at random timesteps, epsilon MSE, backward, AdamW).
use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};
use zoo_core::train::{AdamW, AdamWConfig};
use zoo_diffusion::pipeline::{sample, DiffusionModel, ModelSpec, SampleOptions};
use zoo_diffusion::schedulers;

#[path = "timing.rs"]
mod timing;
use timing::time;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first() else {
        bail!("usage: bench_unet MODEL_DIR [REPEATS]");
    };
    let n: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(3);
    // as the zoo CLI does at start-up (its malloc settings)
    zoo_core::ops::tune_allocator();
    let model = DiffusionModel::load(ModelSpec::resolve(dir)?, Device::Cpu, Kind::Float, true)?;
    let cfg = &model.spec.unet;
    let (h, w) = cfg.sample_hw();
    let c = cfg.in_channels;
    tch::manual_seed(0);
    let forward = |b: i64| -> Result<f64> {
        let x = Tensor::randn([b, c, h, w], (Kind::Float, Device::Cpu));
        let t = Tensor::full([b], 500, (Kind::Int64, Device::Cpu));
        time(n, || {
            let _ = tch::no_grad(|| model.unet.forward(&x, &t, None))?;
            Ok(())
        })
    };
    let forward_b1 = forward(1)?;
    let forward_b16 = forward(16)?;

    let ddim_b4 = time(n, || {
        let mut sched = schedulers::build("ddim", &model.spec.scheduler)?;
        let o = SampleOptions {
            num_samples: 4,
            steps: 50,
            class: None,
            class_offset: 0,
            guidance_scale: 1.0,
            seed: 0,
            keep_frames: 0,
        };
        tch::no_grad(|| sample(&model, sched.as_mut(), &o, &mut |_, _| {}))?;
        Ok(())
    })?;

    let mut opt = AdamW::new(&model.vs, AdamWConfig { lr: 1e-4, weight_decay: 0.0, ..Default::default() });
    let noise_sched = schedulers::NoiseTable::new(&model.spec.scheduler)?;
    let x0 = Tensor::randn([16, c, h, w], (Kind::Float, Device::Cpu));
    let train_b16 = time(n, || {
        let noise = x0.randn_like();
        let t = Tensor::randint(1000, [16], (Kind::Int64, Device::Cpu));
        let xt = noise_sched.add_noise(&x0, &noise, &t)?;
        let pred = model.unet.forward_t(&xt, &t, None, true)?;
        let loss = pred.mse_loss(&noise, tch::Reduction::Mean);
        opt.zero_grad();
        loss.backward();
        opt.step(1e-4)?;
        Ok(())
    })?;
    println!(
        "{}",
        serde_json::json!({
            "forward_b1": forward_b1,
            "forward_b16": forward_b16,
            "ddim50_b4": ddim_b4,
            "train_step_b16": train_b16,
            "repeats": n,
            "threads": tch::get_num_threads(),
        })
    );
    Ok(())
}
