//! Text to image as a library call: load a diffusers Stable Diffusion folder, pick a scheduler,
//! generate, and write the picture. The same pipeline `zoo txt2img` runs.
//!
//! ```sh
//! cargo run --release -p zoo-examples --example txt2img -- tests/fixtures/sd/sd1-tiny "a red circle" out.png
//! ```
use std::path::Path;

use anyhow::{bail, Result};
use tch::{Device, Kind};
use zoo_diffusion::schedulers;
use zoo_diffusion::stable_diffusion::{Edit, StableDiffusion, Txt2ImgOptions};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, prompt, out] = args.as_slice() else {
        bail!("usage: txt2img MODEL_DIR PROMPT OUT.png");
    };
    let sd = StableDiffusion::load(Path::new(model), Device::Cpu, Kind::Float)?;
    // Any zoo-diffusion scheduler, with the folder's schedule settings.
    let mut scheduler = schedulers::build("dpm++2m", &sd.scheduler)?;
    let options = Txt2ImgOptions {
        prompt: prompt.clone(),
        negative_prompt: Some("blurry".into()),
        steps: 20,
        guidance_scale: 7.5,
        seed: 1,
        height: None,
        width: None,
        num_samples: 1,
    };
    let result =
        sd.generate(scheduler.as_mut(), &options, &Edit::None, &mut |i, n| eprint!("\rstep {i}/{n}"))?;
    eprintln!();
    for dropped in &result.truncated {
        eprintln!("CLIP's 77-token window dropped: {dropped}");
    }
    // Images come in [0, 1]; zoo-core's writer takes [-1, 1].
    zoo_core::image::save_image(&(result.images.get(0) * 2.0 - 1.0), Path::new(out))?;
    println!("{out}");
    Ok(())
}
