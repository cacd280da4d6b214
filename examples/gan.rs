//! A GAN from a library user's side: train one with the recipe `zoo gan train` uses
//! (`zoo_gan::train::train`: a preset, data, a run folder with checkpoints and exact resume),
//! then draw class-conditional digits with the conditional DCGAN shipped in models/.
//!
//! ```sh
//! cargo run --release -p zoo-examples --example gan -- runs/gan-example 200   # 200 steps on shapes
//! ```
use std::path::PathBuf;

use anyhow::{Context, Result};
use tch::{Device, Kind, Tensor};
use zoo_core::train::trainer::ProgressBar;
use zoo_gan::model::Generator;
use zoo_gan::sample::seeded_latents;
use zoo_gan::train::{train, TrainOptions};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(args.next().unwrap_or_else(|| "runs/gan-example".into()));
    let steps: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(200);

    // 1. Train the dcgan-32 preset on the procedural shapes (no download), resuming if the
    //    folder already holds this run.
    let opts = TrainOptions {
        data: "shapes".parse()?,
        preset: Some("dcgan-32".into()),
        out: out.clone(),
        steps: Some(steps),
        batch_size: Some(32),
        eval_every: Some(steps),
        resume: out.join("config.json").is_file(),
        seed: 0,
        device: Device::Cpu,
    };
    let done = train(&opts, &mut ProgressBar::new(), &mut |plan| {
        eprintln!(
            "training {} for {} steps ({} generator parameters)",
            plan.preset, plan.steps, plan.generator_params
        )
    })?;
    println!("trained {} steps in {:.1} s: model in {:?}", done.outcome.steps, done.seconds, done.model);

    // 2. The shipped conditional DCGAN: one row of digits 0-9.
    let shipped =
        zoo_core::presets::shipped_model("gan", "cdcgan-mnist").context("cdcgan-mnist is not shipped")?;
    let gen = Generator::load(&shipped, Device::Cpu, Kind::Float)?;
    let labels = Tensor::arange(10, (Kind::Int64, Device::Cpu));
    let z = seeded_latents(&gen, 10, 0, None)?;
    let digits = tch::no_grad(|| gen.generate(&z, Some(&labels)))?;
    let png = out.join("digits.png");
    zoo_core::image::save_image(&digits.clamp(-1.0, 1.0), &png)?;
    println!("digits 0-9 from {}: {}", shipped.display(), png.display());
    Ok(())
}
