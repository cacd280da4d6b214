//! A VAE from a library user's side: train one with the recipe `zoo vae train` uses
//! (`zoo_vae::train::train`), then draw digits from the prior of the conv VAE shipped in
//! models/vae/ and reconstruct them.
//!
//! ```sh
//! cargo run --release -p zoo-examples --example vae -- runs/vae-example 100   # 100 steps on shapes
//! ```
use std::path::PathBuf;

use anyhow::{Context, Result};
use tch::{Device, Kind, Tensor};
use zoo_core::train::trainer::ProgressBar;
use zoo_vae::model::Vae;
use zoo_vae::train::{train, TrainOptions};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(args.next().unwrap_or_else(|| "runs/vae-example".into()));
    let steps: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(100);

    // 1. The beta-VAE preset on the procedural shapes (no download), resumed when the folder
    //    already holds this run.
    let opts = TrainOptions {
        data: "shapes".parse()?,
        preset: Some("beta-vae-shapes".into()),
        out: out.clone(),
        steps: Some(steps),
        epochs: None,
        iw_samples: Some(0),
        iw_images: None,
        eval_images: Some(64),
        eval_every: Some(steps),
        resume: out.join("config.json").is_file(),
        seed: 0,
        device: Device::Cpu,
    };
    let done = train(&opts, &mut ProgressBar::new(), &mut |_| {}, &mut |_, _| {})?;
    println!(
        "trained {} steps: test loss {:?}, model in {:?}",
        done.steps, done.summary["test_loss"], done.model
    );

    // 2. The shipped conv VAE: 8 digits from its prior, and its reconstructions of them.
    let dir = zoo_core::presets::shipped_model("vae", "conv-mnist").context("conv-mnist is not shipped")?;
    let vae = Vae::load(&dir, Device::Cpu, Kind::Float)?;
    zoo_core::seed::seed_all(0);
    let z = Tensor::randn([8, 20], (Kind::Float, Device::Cpu));
    let digits = tch::no_grad(|| vae.decode(&z))?;
    let again = tch::no_grad(|| vae.reconstruct(&digits))?;
    let png = out.join("digits-and-reconstructions.png");
    zoo_core::image::save_image(&Tensor::cat(&[digits, again], 0).clamp(-1.0, 1.0), &png)?;
    println!("prior samples over their reconstructions: {}", png.display());
    Ok(())
}
