//! `zoo vae ...`: train VAEs and AutoencoderKL, evaluate them, and look at what they learned.
//!
//! A model folder (`--model DIR`) is `config.json` plus the weights; `zoo vae train` writes one
//! to `<out>/model/` at the end, and a diffusers `vae/` folder is one too (see docs/vae.md).
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};
use zoo_core::arch::{module_rows, render, Part};
use zoo_core::image::{image_strip, load_image, make_grid, save_image, GRID_PADDING, GRID_PAD_VALUE};
use zoo_vae::model::{ModelConfig, Vae};
use zoo_vae::train::{self as vtrain, DataSpec, Dataset, Preset};

use crate::global::{ArchArgs, Global};

/// The shipped model the demo draws with (`models/vae/NAME/`).
pub const DEMO_MODEL: &str = "conv-mnist";

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Trains a VAE from a preset into a run folder (checkpoints, metrics, samples) and writes
    /// the trained model to <out>/model/.
    Train(TrainArgs),
    /// Test-set negative ELBO and importance-weighted NLL (nats per image) of a model.
    Eval(EvalArgs),
    /// Decodes latents drawn from the prior N(0, I) into a grid of images.
    Sample(SampleArgs),
    /// Encodes images and decodes the posterior mean (deterministic): inputs over outputs.
    Reconstruct(ReconstructArgs),
    /// Decodes a straight line between the posterior means of two images.
    Interpolate(InterpolateArgs),
    /// Writes the posterior of an image (mean as "latents", and "logvar") to safetensors.
    Encode(EncodeArgs),
    /// Decodes the "latents" tensor of a safetensors file (as `zoo vae encode` writes) to an image.
    Decode(DecodeArgs),
    /// For a model with 2 latents: decodes a grid over the prior's quantiles (the latent manifold).
    Manifold(ManifoldArgs),
    /// Varies one latent at a time around an image's posterior mean (or 0): one row per latent.
    Traverse(TraverseArgs),
    /// Prints a model's blocks: the image, encoder, latent and decoder shapes, and each
    /// module's weights and parameter count.
    Arch(ArchArgs),
}

#[derive(clap::Args, Debug)]
struct TrainArgs {
    /// Training images: mnist:DIR (IDX files), images:DIR (PNG/JPEG, every 10th held out) or shapes.
    #[arg(long)]
    data: String,
    /// A preset of models/vae/ (mlp-mnist, conv-mnist, beta-vae-shapes, kl-tiny, ...); with
    /// --resume it may be left out.
    #[arg(long)]
    preset: Option<String>,
    /// The run folder: config.json, metrics.jsonl, loss.png, samples/, checkpoints/, model/.
    #[arg(long)]
    out: PathBuf,
    /// Optimiser steps in total (overrides the preset's length).
    #[arg(long, conflicts_with = "epochs")]
    steps: Option<u64>,
    /// Passes over the training set (overrides the preset's length).
    #[arg(long)]
    epochs: Option<f64>,
    /// Continues the run in --out from its latest checkpoint, with the same losses as an
    /// uninterrupted run.
    #[arg(long)]
    resume: bool,
    /// Prints one JSON object per logged step and per evaluation on stdout instead of a progress bar.
    #[arg(long)]
    json: bool,
    /// Importance samples for the final NLL estimate (0 skips it; default: the preset's, 500 for MNIST).
    #[arg(long)]
    iw_samples: Option<usize>,
    /// Test images for the final NLL estimate (default: the whole test split).
    #[arg(long)]
    iw_images: Option<usize>,
    /// Test images for each periodic evaluation (default: the whole test split).
    #[arg(long)]
    eval_images: Option<usize>,
    /// Evaluate, write sample pictures and a checkpoint every this many steps (default: the
    /// preset's, else once per epoch).
    #[arg(long)]
    eval_every: Option<u64>,
}

#[derive(clap::Args, Debug)]
struct EvalArgs {
    /// The model folder.
    #[arg(long, value_parser = model_arg)]
    model: PathBuf,
    /// The test images: mnist:DIR, images:DIR or shapes.
    #[arg(long)]
    data: String,
    /// Importance samples k of the NLL estimate (0 skips it).
    #[arg(long, default_value_t = 500)]
    iw_samples: usize,
    /// Test images to use (default: all).
    #[arg(long)]
    images: Option<usize>,
    /// Images per batch.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Prints one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct SampleArgs {
    /// The model folder.
    #[arg(long, value_parser = model_arg)]
    model: PathBuf,
    /// Images to draw.
    #[arg(long, default_value_t = 64)]
    num_samples: usize,
    /// The grid image (.png or .jpg).
    #[arg(long)]
    out: PathBuf,
    /// Also write the latents and the decoded means in [-1, 1] to this safetensors file ("z",
    /// "images"): what `zoo eval score --samples` reads.
    #[arg(long)]
    save_tensors: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct ReconstructArgs {
    /// The model folder.
    #[arg(long, value_parser = model_arg)]
    model: PathBuf,
    /// An image of the model's size and channels; repeat for more.
    #[arg(long, required = true)]
    input: Vec<PathBuf>,
    /// The output image: inputs in the top row(s), reconstructions below.
    #[arg(long)]
    out: PathBuf,
    /// Write the reconstructions alone, without the inputs above them.
    #[arg(long)]
    only_output: bool,
}

#[derive(clap::Args, Debug)]
struct InterpolateArgs {
    /// The model folder.
    #[arg(long, value_parser = model_arg)]
    model: PathBuf,
    /// The first image.
    #[arg(long)]
    input: PathBuf,
    /// The second image.
    #[arg(long)]
    input2: PathBuf,
    /// Frames from the first image's latent to the second's, both included.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// The strip image.
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args, Debug)]
struct EncodeArgs {
    /// The model folder.
    #[arg(long, value_parser = model_arg)]
    model: PathBuf,
    /// An image of the model's size and channels.
    #[arg(long)]
    input: PathBuf,
    /// The safetensors file to write ("latents": the posterior mean, unscaled; "logvar").
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args, Debug)]
struct DecodeArgs {
    /// The model folder.
    #[arg(long, value_parser = model_arg)]
    model: PathBuf,
    /// A safetensors file with a "latents" tensor, (latent_dim) or (B, latent..).
    #[arg(long)]
    input: PathBuf,
    /// The image (a grid when there are several latents).
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args, Debug)]
struct ManifoldArgs {
    /// The model folder (a model with 2 latents, e.g. from the mlp-mnist-2d preset).
    #[arg(long, value_parser = model_arg)]
    model: PathBuf,
    /// Images per side of the grid.
    #[arg(long, default_value_t = 20)]
    grid: usize,
    /// The picture.
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args, Debug)]
struct TraverseArgs {
    /// The model folder (an MLP or conv VAE, e.g. from the beta-vae-shapes preset).
    #[arg(long, value_parser = model_arg)]
    model: PathBuf,
    /// The image whose posterior mean is the centre (default: the prior mean, 0).
    #[arg(long)]
    input: Option<PathBuf>,
    /// Each latent runs from -range to +range.
    #[arg(long, default_value_t = 3.0)]
    range: f64,
    /// Values per latent (columns).
    #[arg(long, default_value_t = 9)]
    steps: usize,
    /// The picture.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(g: &Global, a: Args) -> Result<()> {
    match a.command {
        Command::Train(a) => train(g, a),
        Command::Eval(a) => eval(g, a),
        Command::Sample(a) => sample(g, a),
        Command::Reconstruct(a) => reconstruct(g, a),
        Command::Interpolate(a) => interpolate(g, a),
        Command::Encode(a) => encode(g, a),
        Command::Decode(a) => decode(g, a),
        Command::Manifold(a) => manifold(g, a),
        Command::Traverse(a) => traverse(g, a),
        Command::Arch(a) => arch(a),
    }
}

fn arch(a: ArchArgs) -> Result<()> {
    let (name, vae) = match (&a.preset, &a.model_dir("vae")) {
        (Some(p), _) => {
            let cfg = ModelConfig::from_json(&Preset::find(p)?.model)?;
            tch::manual_seed(0);
            (format!("preset {p} (random weights)"), Vae::new(&cfg, Device::Cpu)?)
        }
        (None, Some(dir)) => (dir.display().to_string(), Vae::load(dir, Device::Cpu, Kind::Float)?),
        (None, None) => bail!("give --model DIR or --preset NAME"),
    };
    let [c, h, w] = vae.config.image_shape();
    let x = Tensor::f_zeros([1, c, h, w], (Kind::Float, Device::Cpu))?;
    let z = tch::no_grad(|| vae.encode(&x))?.mode();
    let y = tch::no_grad(|| vae.decode(&z))?;
    let vars: Vec<(String, Vec<i64>)> = vae.vs.variables().into_iter().map(|(n, t)| (n, t.size())).collect();
    let total: i64 = vars.iter().map(|(_, s)| s.iter().product::<i64>()).sum();
    let (enc, dec) = (|n: &str| n.starts_with("encoder."), |n: &str| n.starts_with("decoder."));
    let mut parts = vec![Part::new(0, "image", format!("{:?}", x.size()), None)];
    parts.extend(module_rows(&vars, 3, enc));
    parts.extend(module_rows(&vars, 3, |n| !enc(n) && !dec(n)));
    parts.push(Part::new(0, "latent (posterior mean)", format!("{:?}", z.size()), None));
    parts.extend(module_rows(&vars, 3, dec));
    parts.push(Part::new(0, "image out (decoder mean)", format!("{:?}", y.size()), None));
    if a.json {
        let rows: Vec<Value> =
            parts.iter().map(|p| json!({"name": p.name, "shape": p.shape, "params": p.params})).collect();
        println!(
            "{}",
            json!({"model": name, "config": vae.config.to_json(), "parts": rows, "params": total})
        );
        return Ok(());
    }
    print!("{}", render(&format!("VAE {name}: {}", vae.config.to_json()), &parts, total));
    Ok(())
}

/// Loads a model folder with --device and --dtype; AutoencoderKL with `force_upcast` stays in
/// f32 (half-precision VAE decodes are known to give black images).
fn load_model(g: &Global, dir: &Path) -> Result<Vae> {
    let device = g.device()?;
    let mut kind = g.dtype.kind();
    if kind != Kind::Float {
        let cfg_text = std::fs::read_to_string(dir.join("config.json")).unwrap_or_default();
        let upcast = serde_json::from_str::<Value>(&cfg_text)
            .ok()
            .and_then(|v| v.get("force_upcast").and_then(Value::as_bool))
            .unwrap_or(false);
        if upcast {
            g.note("note: this AutoencoderKL has force_upcast: running it in f32");
            kind = Kind::Float;
        }
    }
    Vae::load(dir, device, kind).with_context(|| format!("loading the model in {}", dir.display()))
}

/// One image as (1, C, H, W) in [-1, 1], checked against the model.
fn load_input(vae: &Vae, path: &Path) -> Result<Tensor> {
    let x = load_image(path)?.f_unsqueeze(0)?;
    vae.check_images(&x).with_context(|| path.display().to_string())?;
    Ok(x)
}

/// Saves an image (clamped to [-1, 1]) and prints its path.
fn write(t: &Tensor, out: &Path) -> Result<()> {
    save_image(&t.f_clamp(-1.0, 1.0)?, out)?;
    println!("{}", out.display());
    Ok(())
}

fn train(g: &Global, a: TrainArgs) -> Result<()> {
    g.f32_training("zoo vae train")?;
    if a.preset.is_none() && !a.resume {
        bail!("--preset is required for a new run (see models/vae/)");
    }
    let opts = vtrain::TrainOptions {
        data: a.data.parse()?,
        preset: a.preset.clone(),
        out: a.out.clone(),
        steps: a.steps,
        epochs: a.epochs,
        iw_samples: a.iw_samples,
        iw_images: a.iw_images,
        eval_images: a.eval_images,
        eval_every: a.eval_every,
        resume: a.resume,
        seed: g.seed,
        device: g.device()?,
    };
    let mut reporter = g.reporter(a.json);
    let bar = std::cell::RefCell::new(None);
    let done = vtrain::train(
        &opts,
        reporter.as_mut(),
        &mut |p| {
            g.note(format!(
                "vae train: {} on {} ({} train / {} test images), {} steps{}, batch {}, run in {}",
                if p.preset.is_empty() { "resumed run" } else { &p.preset },
                opts.data,
                p.train_images,
                p.test_images,
                p.steps,
                if p.start > 0 { format!(" from step {}", p.start) } else { String::new() },
                p.batch_size,
                opts.out.display()
            ))
        },
        &mut |done, total| {
            let mut b = bar.borrow_mut();
            let b = b.get_or_insert_with(|| g.progress(total as u64, "images (importance-weighted NLL)"));
            crate::global::tick(b, done as u64, total as u64)
        },
    )?;
    let (Some(model_dir), Some(elbo)) = (&done.model, &done.elbo) else {
        g.note(format!("stopped at step {}; continue with --resume", done.steps));
        return Ok(());
    };
    if a.json {
        println!("{}", done.summary);
    } else {
        println!("{}", describe(&done.vae, elbo, done.beta));
        if let Some((v, n)) = done.iw_nll {
            println!("test: importance-weighted NLL {v:.2} nats/image (k = {}, {n} images)", done.iw_samples);
        }
        println!("model: {}", model_dir.display());
    }
    Ok(())
}

/// One line on the test-set numbers: the negative ELBO for a VAE with a likelihood, the
/// reconstruction distance and KL for AutoencoderKL.
fn describe(vae: &Vae, e: &vtrain::ElboStats, beta: f64) -> String {
    if vae.likelihood().is_some() {
        format!(
            "test: recon {:.2} + KL {:.2} = {:.2} nats/image (negative ELBO, {} images)",
            e.recon, e.kl, e.loss, e.images
        )
    } else {
        format!(
            "test: reconstruction distance {:.2} per image (summed over pixels), KL {:.2} nats; \
             loss with beta {beta:e}: {:.2} ({} images)",
            e.recon,
            e.kl,
            e.recon + beta * e.kl,
            e.images
        )
    }
}

fn eval(g: &Global, a: EvalArgs) -> Result<()> {
    let vae = load_model(g, &a.model)?;
    let spec: DataSpec = a.data.parse()?;
    let data = Dataset::open(&spec, vae.config.image_shape(), g.seed)?;
    zoo_core::seed::seed_all(g.seed);
    let t0 = Instant::now();
    let elbo = vtrain::evaluate_elbo(&vae, &data.test, a.batch_size, Default::default(), a.images)?;
    let iw = if a.iw_samples > 0 && vae.likelihood().is_some() {
        let batch = (2_000_000 / (a.iw_samples * vae.config.image_shape().iter().product::<i64>() as usize))
            .clamp(1, a.batch_size.max(1));
        let bar = g.progress(0, "images (importance-weighted NLL)");
        let tick = &mut |done: usize, total: usize| crate::global::tick(&bar, done as u64, total as u64);
        Some(vtrain::evaluate_iw_nll(&vae, &data.test, a.iw_samples, batch, a.images, tick)?)
    } else {
        None
    };
    let v = json!({
        "test_images": elbo.images, "test_recon": elbo.recon, "test_kl": elbo.kl, "test_loss": elbo.loss,
        "iw_nll": iw, "iw_samples": a.iw_samples, "seconds": t0.elapsed().as_secs_f64(),
    });
    if a.json {
        println!("{v}");
    } else {
        println!("{}", describe(&vae, &elbo, 1.0));
        if let Some(v) = iw {
            println!("test: importance-weighted NLL {v:.2} nats/image (k = {})", a.iw_samples);
        }
    }
    Ok(())
}

fn sample(g: &Global, a: SampleArgs) -> Result<()> {
    if a.num_samples == 0 {
        bail!("--num-samples must be at least 1");
    }
    let vae = load_model(g, &a.model)?;
    let [_, h, w] = vae.config.image_shape();
    let mut shape = vec![a.num_samples as i64];
    shape.extend(vae.latent_shape(h, w));
    zoo_core::seed::seed_all(g.seed);
    let z = Tensor::f_randn(shape.as_slice(), (Kind::Float, Device::Cpu))?;
    let images = tch::no_grad(|| vae.decode(&z))?.f_to_kind(Kind::Float)?.f_to_device(Device::Cpu)?;
    write(&images, &a.out)?;
    if let Some(p) = &a.save_tensors {
        zoo_core::weights::save(p, &[("z".to_string(), z), ("images".to_string(), images)], None)?;
        println!("{}", p.display());
    }
    Ok(())
}

fn reconstruct(g: &Global, a: ReconstructArgs) -> Result<()> {
    let vae = load_model(g, &a.model)?;
    let xs = a.input.iter().map(|p| load_input(&vae, p)).collect::<Result<Vec<_>>>()?;
    let sizes: Vec<Vec<i64>> = xs.iter().map(Tensor::size).collect();
    if sizes.iter().any(|s| s != &sizes[0]) {
        bail!("the --input images differ in size: {sizes:?}");
    }
    let x = Tensor::f_cat(&xs, 0)?;
    let rec = tch::no_grad(|| vae.reconstruct(&x))?;
    let out = if a.only_output {
        rec
    } else {
        let both = Tensor::f_cat(&[x.f_to_device(Device::Cpu)?, rec.f_to_device(Device::Cpu)?], 0)?;
        make_grid(&both, xs.len() as i64, GRID_PADDING, GRID_PAD_VALUE)?
    };
    write(&out, &a.out)
}

fn interpolate(g: &Global, a: InterpolateArgs) -> Result<()> {
    if a.steps < 2 {
        bail!("--steps must be at least 2 (the two end points)");
    }
    let vae = load_model(g, &a.model)?;
    let (x1, x2) = (load_input(&vae, &a.input)?, load_input(&vae, &a.input2)?);
    if x1.size() != x2.size() {
        bail!("--input and --input2 differ in size: {:?} and {:?}", x1.size(), x2.size());
    }
    let frames = tch::no_grad(|| -> Result<Vec<Tensor>> {
        let (z1, z2) = (vae.encode(&x1)?.mode(), vae.encode(&x2)?.mode());
        (0..a.steps)
            .map(|i| {
                let t = i as f64 / (a.steps - 1) as f64;
                let z = z1.f_mul_scalar(1.0 - t)?.f_add(&z2.f_mul_scalar(t)?)?;
                Ok(vae.decode(&z)?.f_squeeze_dim(0)?.f_to_device(Device::Cpu)?)
            })
            .collect()
    })?;
    write(&image_strip(&frames)?, &a.out)
}

fn encode(g: &Global, a: EncodeArgs) -> Result<()> {
    let vae = load_model(g, &a.model)?;
    let x = load_input(&vae, &a.input)?;
    let q = tch::no_grad(|| vae.encode(&x))?;
    let mut meta = std::collections::HashMap::new();
    if let ModelConfig::Kl(c) = &vae.config {
        // The file holds unscaled latents; latent diffusion uses (z - shift) * scaling_factor.
        meta.insert("scaling_factor".to_string(), c.scaling_factor.to_string());
        meta.insert("shift_factor".to_string(), c.shift_factor.unwrap_or(0.0).to_string());
    }
    let tensors = vec![
        ("latents".to_string(), q.mean.f_to_kind(Kind::Float)?),
        ("logvar".to_string(), q.logvar.f_to_kind(Kind::Float)?),
    ];
    zoo_core::weights::save(&a.out, &tensors, Some(meta))?;
    g.note(format!("latents {:?}", q.mean.size()));
    println!("{}", a.out.display());
    Ok(())
}

fn decode(g: &Global, a: DecodeArgs) -> Result<()> {
    let vae = load_model(g, &a.model)?;
    let tensors = zoo_core::weights::load(&a.input)?;
    let Some((_, z)) = tensors.into_iter().find(|(n, _)| n == "latents") else {
        bail!("{}: no tensor named 'latents' (write one with `zoo vae encode`)", a.input.display());
    };
    // A single latent without its batch dim is accepted.
    let [_, h, w] = vae.config.image_shape();
    let z = if z.dim() == vae.latent_shape(h, w).len() { z.f_unsqueeze(0)? } else { z };
    let images = tch::no_grad(|| vae.decode(&z)).with_context(|| a.input.display().to_string())?;
    write(&images, &a.out)
}

fn latent_dim(vae: &Vae, what: &str) -> Result<i64> {
    match &vae.config {
        ModelConfig::Mlp(c) => Ok(c.latent_dim),
        ModelConfig::Conv(c) => Ok(c.latent_dim),
        ModelConfig::Kl(_) => bail!("{what} needs an MLP or conv VAE; this is an AutoencoderKL"),
    }
}

fn manifold(g: &Global, a: ManifoldArgs) -> Result<()> {
    let vae = load_model(g, &a.model)?;
    let l = latent_dim(&vae, "manifold")?;
    if l != 2 {
        bail!("manifold needs a model with 2 latents, this one has {l} (train e.g. --preset mlp-mnist-2d)");
    }
    if a.grid < 2 {
        bail!("--grid must be at least 2");
    }
    let n = a.grid as i64;
    // Quantiles 0.05 .. 0.95 of N(0, 1) per axis (Kingma & Welling's figure 4), through erfinv.
    let p = Tensor::f_linspace(0.05, 0.95, n, (Kind::Float, Device::Cpu))?;
    let q = p.f_mul_scalar(2.0)?.f_sub_scalar(1.0)?.f_erfinv()?.f_mul_scalar(std::f64::consts::SQRT_2)?;
    let z1 = q.f_view([1, n])?.f_expand([n, n], false)?; // varies along rows
    let z2 = q.f_flip([0])?.f_view([n, 1])?.f_expand([n, n], false)?; // top row is high
    let z = Tensor::f_stack(&[z1, z2], 2)?.f_reshape([n * n, 2])?;
    let images = tch::no_grad(|| vae.decode(&z))?.f_to_device(Device::Cpu)?;
    write(&make_grid(&images, n, 0, GRID_PAD_VALUE)?, &a.out)
}

fn traverse(g: &Global, a: TraverseArgs) -> Result<()> {
    let vae = load_model(g, &a.model)?;
    let l = latent_dim(&vae, "traverse")?;
    if a.steps < 2 || !(a.range.is_finite() && a.range > 0.0) {
        bail!("--steps must be at least 2 and --range positive");
    }
    let centre = match &a.input {
        Some(p) => {
            let x = load_input(&vae, p)?;
            tch::no_grad(|| vae.encode(&x))?.mode()
        }
        None => Tensor::f_zeros([1, l], (Kind::Float, vae.device()))?,
    }
    .f_to_device(Device::Cpu)?
    .f_to_kind(Kind::Float)?;
    let values = Tensor::f_linspace(-a.range, a.range, a.steps as i64, (Kind::Float, Device::Cpu))?;
    // Frame j: every latent row i holds the centre with latent i set to values[j].
    let frames = (0..a.steps as i64)
        .map(|j| -> Result<Tensor> {
            let z = centre.f_expand([l, l], false)?.f_contiguous()?;
            let v = values.f_get(j)?.f_expand([l], false)?;
            let z = z.f_diagonal_scatter(&v, 0, 0, 1)?;
            Ok(tch::no_grad(|| vae.decode(&z))?.f_to_device(Device::Cpu)?)
        })
        .collect::<Result<Vec<_>>>()?;
    write(&image_strip(&frames)?, &a.out)
}

/// The demo's part: the shipped convolutional VAE draws digits from its prior, walks between
/// latents, and reconstructs digits drawn by the shipped conditional GAN (so no dataset is
/// needed). No training at demo time.
pub fn demo(g: &Global, dir: &Path, device: Device) -> Result<Vec<PathBuf>> {
    let Some(model) = zoo_core::presets::shipped_model("vae", DEMO_MODEL) else {
        g.note(format!(
            "vae: skipped: no shipped model {DEMO_MODEL} in {}",
            zoo_core::presets::models_dir().join("vae").display()
        ));
        return Ok(Vec::new());
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let vae = Vae::load(&model, device, Kind::Float)?;
    let [_, h, w] = vae.config.image_shape();
    let latent = |n: i64, seed: u64| -> Result<Tensor> {
        zoo_core::seed::seed_all(seed);
        let mut shape = vec![n];
        shape.extend(vae.latent_shape(h, w));
        Ok(Tensor::f_randn(shape.as_slice(), (Kind::Float, Device::Cpu))?.f_to_device(device)?)
    };
    let mut written = Vec::new();
    let t0 = Instant::now();
    let z = latent(64, g.seed)?;
    let samples = tch::no_grad(|| vae.decode(&z))?;
    let secs = t0.elapsed().as_secs_f64();
    let p = dir.join("samples.png");
    save_image(&samples.f_clamp(-1.0, 1.0)?, &p)?;
    written.push(p);

    // Four walks of 10 steps, each between two latents of the prior (one row each).
    let (za, zb) = (latent(4, g.seed + 1)?, latent(4, g.seed + 2)?);
    let frames = tch::no_grad(|| -> Result<Vec<Tensor>> {
        (0..10)
            .map(|i| {
                let t = i as f64 / 9.0;
                let z = za.f_mul_scalar(1.0 - t)?.f_add(&zb.f_mul_scalar(t)?)?;
                Ok(vae.decode(&z)?.f_clamp(-1.0, 1.0)?.f_to_device(Device::Cpu)?)
            })
            .collect()
    })?;
    let p = dir.join("interpolation.png");
    save_image(&image_strip(&frames)?, &p)?;
    written.push(p);

    // Reconstructions of 32 digits the shipped GAN drew (its 32x32 pictures are MNIST's 28x28
    // with a 2-pixel border), inputs over outputs.
    let gan = super::gan::demo_digits(32, g.seed, device)?;
    let rec_note = match gan {
        Some(x) if [h, w] == [28, 28] => {
            let x = x.f_narrow(2, 2, 28)?.f_narrow(3, 2, 28)?.f_clamp(-1.0, 1.0)?;
            let r = tch::no_grad(|| vae.reconstruct(&x))?;
            let p = dir.join("reconstructions.png");
            save_image(&vtrain::reconstruction_grid(&x, &r)?, &p)?;
            written.push(p);
            "; reconstructions.png: digits the shipped GAN drew (top) and the VAE's reconstructions (below)"
        }
        _ => "",
    };
    g.note(format!(
        "vae: {} drew 64 digits from its prior in {secs:.2} s; interpolation.png walks between latents{rec_note}. Scores: {}",
        model.display(),
        model.join("README.md").display()
    ));
    Ok(written)
}

/// `--model`: a vae model folder, or the name of a shipped one (`models/vae/NAME/`).
fn model_arg(s: &str) -> std::result::Result<PathBuf, String> {
    crate::global::model_folder("vae", s)
}
