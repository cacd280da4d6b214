//! `zoo gan ...`: train GANs, sample from them, interpolate between seeds, show architectures.
//!
//! A model folder (`--model DIR`) is `config.json` + `generator.safetensors` (+
//! `discriminator.safetensors`); `zoo gan train` writes one to `<out>/model/`, and a run folder
//! may be given for it. The recipe's netG state dict, converted to safetensors, is sampled with
//! `--preset NAME --weights FILE` (see docs/gan.md).
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};
use zoo_core::arch::{module_rows, render, Part};
use zoo_core::image::{image_strip, save_image};
use zoo_gan::dcgan::num_params;
use zoo_gan::model::{Discriminator, Generator, ModelConfig, Preset, TruncationSpace};
use zoo_gan::sample::{seeded_latents, slerp};

use crate::global::{ArchArgs, Global};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Trains a generator and a discriminator from a preset into a run folder (metrics,
    /// loss.png, samples/, checkpoints/) and writes the trained model to <out>/model/.
    Train(TrainArgs),
    /// Draws latents (the first draw after seeding with --seed) and writes the images as a grid.
    Sample(SampleArgs),
    /// Spherical interpolation between the latents of --seed and --seed2: a strip image.
    Interpolate(InterpolateArgs),
    /// Prints a model's blocks: the latent, image and logit shapes, each module's weights and
    /// parameter count (generator and discriminator).
    Arch(ArchArgs),
}

#[derive(clap::Args, Debug)]
struct TrainArgs {
    /// Training images: mnist:DIR (IDX files, padded to 32x32), images:DIR (PNG/JPEG) or shapes.
    #[arg(long)]
    data: String,
    /// A preset of models/gan/ (dcgan-64, dcgan-32, dcgan-mnist, cdcgan-mnist, stylegan2-mnist,
    /// ...); with --resume it may be left out.
    #[arg(long)]
    preset: Option<String>,
    /// The run folder: config.json, metrics.jsonl, loss.png, samples/, checkpoints/, model/.
    #[arg(long)]
    out: PathBuf,
    /// Generator steps in total (overrides the preset's).
    #[arg(long)]
    steps: Option<u64>,
    /// Images per batch (overrides the preset's).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Write the fixed-noise grid and a checkpoint every this many steps, as --eval-every does in every family (overrides the preset's).
    #[arg(long = "eval-every", alias = "sample-every")]
    sample_every: Option<u64>,
    /// Continues the run in --out from its latest checkpoint, with the same losses as an
    /// uninterrupted run.
    #[arg(long)]
    resume: bool,
    /// Prints one JSON object per logged step on stdout instead of a progress bar.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct ModelArgs {
    /// A model folder (config.json + generator.safetensors) or a run folder holding model/.
    #[arg(long, value_parser = model_arg, required_unless_present = "preset", conflicts_with = "preset")]
    model: Option<PathBuf>,
    /// A preset of models/gan/ for the architecture, with --weights for the generator.
    #[arg(long, requires = "weights")]
    preset: Option<String>,
    /// Generator weights (safetensors, e.g. the recipe's netG after
    /// tools/convert_to_safetensors.py); needs --preset.
    #[arg(long, requires = "preset")]
    weights: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct SampleArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Images to draw.
    #[arg(long, default_value_t = 64)]
    num_samples: i64,
    /// The truncation trick: smaller T, less variety, cleaner images. DCGAN: redraw latent
    /// values outside [-T, T]. StyleGAN2: psi, w = w_avg + T (w - w_avg) (1: off, 0: the mean
    /// image; 0.5-0.7 is usual).
    #[arg(long)]
    truncation: Option<f64>,
    /// The class of every image, for a conditional model (default: classes in turn).
    #[arg(long)]
    class: Option<i64>,
    /// The grid image (.png or .jpg).
    #[arg(long)]
    out: PathBuf,
    /// Also write the latents and images to this safetensors file ("z", "images", and "labels"
    /// for a conditional model): what `zoo eval score --samples` reads.
    #[arg(long)]
    save_tensors: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct InterpolateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The seed of the other end (the first is --seed).
    #[arg(long)]
    seed2: u64,
    /// Frames from one latent to the other, both included.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// The truncation trick (see `zoo gan sample --help`): redraw z outside [-T, T] (DCGAN),
    /// or psi towards the mean w (StyleGAN2).
    #[arg(long)]
    truncation: Option<f64>,
    /// The class of every frame, for a conditional model.
    #[arg(long)]
    class: Option<i64>,
    /// The strip image (.png or .jpg).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(g: &Global, a: Args) -> Result<()> {
    match a.command {
        Command::Train(a) => train(g, a),
        Command::Sample(a) => sample(g, a),
        Command::Interpolate(a) => interpolate(g, a),
        Command::Arch(a) => arch(a),
    }
}

/// A model folder, or the `model/` of a run folder.
fn model_dir(p: &Path) -> PathBuf {
    if !p.join("config.json").is_file()
        || (p.join("model/config.json").is_file() && p.join("checkpoints").is_dir())
    {
        p.join("model")
    } else {
        p.to_path_buf()
    }
}

fn load_generator(g: &Global, m: &ModelArgs) -> Result<Generator> {
    let device = g.device()?;
    let kind = g.dtype.kind();
    match (&m.model, &m.preset, &m.weights) {
        (Some(dir), _, _) => {
            let dir = model_dir(dir);
            Generator::load(&dir, device, kind)
                .with_context(|| format!("loading the generator in {}", dir.display()))
        }
        (None, Some(name), Some(w)) => {
            let preset = Preset::find(name)?;
            Generator::load_weights(&preset.model, w, device, kind)
                .with_context(|| format!("loading {} as a {name} generator", w.display()))
        }
        _ => bail!("give --model DIR, or --preset NAME with --weights FILE"),
    }
}

/// Splits --truncation into the latent bound (DCGAN) and psi on w (StyleGAN2).
fn truncation(gen: &Generator, t: Option<f64>) -> (Option<f64>, Option<f64>) {
    match gen.cfg.truncation_space() {
        TruncationSpace::Z => (t, None),
        TruncationSpace::W => (None, t),
    }
}

/// Fails early on an output name whose extension is not an image format we write.
fn check_image_path(p: &Path) -> Result<()> {
    zoo_core::image::image_format(p)?;
    Ok(())
}

/// Labels for `n` images of a conditional model: `class` for all, or the classes in turn.
fn labels(gen: &Generator, n: i64, class: Option<i64>) -> Result<Option<Tensor>> {
    let nc = gen.cfg.num_classes();
    match (nc, class) {
        (0, None) => Ok(None),
        (0, Some(_)) => bail!("--class: this model is unconditional"),
        (nc, Some(c)) if !(0..nc).contains(&c) => {
            bail!("--class {c}: this model's classes are 0..{}", nc - 1)
        }
        (_, Some(c)) => Ok(Some(Tensor::f_full([n], c, (Kind::Int64, Device::Cpu))?)),
        (nc, None) => Ok(Some(Tensor::f_arange(n, (Kind::Int64, Device::Cpu))?.f_remainder(nc)?)),
    }
}

fn sample(g: &Global, a: SampleArgs) -> Result<()> {
    if a.num_samples < 1 {
        bail!("--num-samples must be at least 1, got {}", a.num_samples);
    }
    check_image_path(&a.out)?;
    let gen = load_generator(g, &a.model)?;
    let y = labels(&gen, a.num_samples, a.class)?;
    let (z_bound, psi) = truncation(&gen, a.truncation);
    let z = seeded_latents(&gen, a.num_samples, g.seed, z_bound)?;
    let x = gen.generate_with(&z, y.as_ref(), psi)?;
    save_image(&x.f_clamp(-1.0, 1.0)?, &a.out)?;
    println!("{}", a.out.display());
    if let Some(p) = &a.save_tensors {
        let mut tensors = vec![("z".to_string(), z), ("images".to_string(), x)];
        if let Some(y) = y {
            tensors.push(("labels".to_string(), y));
        }
        zoo_core::weights::save(p, &tensors, None)?;
        println!("{}", p.display());
    }
    Ok(())
}

fn interpolate(g: &Global, a: InterpolateArgs) -> Result<()> {
    if a.steps < 2 {
        bail!("--steps must be at least 2 (the two ends), got {}", a.steps);
    }
    check_image_path(&a.out)?;
    let gen = load_generator(g, &a.model)?;
    let (z_bound, psi) = truncation(&gen, a.truncation);
    let za = seeded_latents(&gen, 1, g.seed, z_bound)?;
    let zb = seeded_latents(&gen, 1, a.seed2, z_bound)?;
    let ts: Vec<f64> = (0..a.steps).map(|i| i as f64 / (a.steps - 1) as f64).collect();
    let z = slerp(&za, &zb, &ts)?;
    let y = labels(&gen, a.steps as i64, a.class.or(if gen.cfg.num_classes() > 0 { Some(0) } else { None }))?;
    let x = gen.generate_with(&z, y.as_ref(), psi)?.f_clamp(-1.0, 1.0)?;
    let frames: Vec<Tensor> = (0..a.steps as i64).map(|i| x.get(i)).collect();
    save_image(&image_strip(&frames)?, &a.out)?;
    println!("{}", a.out.display());
    Ok(())
}

fn arch(a: ArchArgs) -> Result<()> {
    let cfg = match (&a.preset, &a.model_dir("gan")) {
        (Some(name), _) => Preset::find(name)?.model,
        (None, Some(dir)) => ModelConfig::load(&model_dir(dir))?,
        (None, None) => bail!("give --preset NAME or --model DIR"),
    };
    tch::manual_seed(0);
    let gen = Generator::new(&cfg, Device::Cpu)?;
    let disc = Discriminator::new(&cfg, Device::Cpu)?;
    // One sample through both networks, for the shapes at their ends.
    let y = if cfg.num_classes() > 0 { Some(Tensor::from_slice(&[0i64])) } else { None };
    let z = Tensor::f_zeros(gen.latent_shape(1), (Kind::Float, Device::Cpu))?;
    let x = tch::no_grad(|| gen.forward_t(&z, y.as_ref(), false))?;
    let d = tch::no_grad(|| disc.forward_t(&x, y.as_ref(), false))?;
    let vars = |vs: &tch::nn::VarStore| -> Vec<(String, Vec<i64>)> {
        vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).map(|(n, t)| (n, t.size())).collect()
    };
    let (gp, dp) = (num_params(&gen.vs), num_params(&disc.vs));
    let net = |name: &str, input: (&str, Vec<i64>), rows: Vec<Part>, out: (&str, Vec<i64>), params: i64| {
        let mut parts = vec![Part::new(0, input.0, format!("{:?}", input.1), None)];
        parts.extend(rows);
        parts.push(Part::new(0, out.0, format!("{:?}", out.1), None));
        (name.to_string(), parts, params)
    };
    let nets = [
        net(
            "generator",
            ("latent z", z.size()),
            module_rows(&vars(&gen.vs), 2, |_| true),
            ("image", x.size()),
            gp,
        ),
        net(
            "discriminator",
            ("image", x.size()),
            module_rows(&vars(&disc.vs), 2, |_| true),
            ("logit", d.size()),
            dp,
        ),
    ];
    if a.json {
        let parts = |p: &[Part]| -> Vec<Value> {
            p.iter().map(|r| json!({"name": r.name, "shape": r.shape, "params": r.params})).collect()
        };
        let mut v = json!({"config": cfg});
        for (name, p, n) in &nets {
            v[name.as_str()] = json!({"params": n, "parts": parts(p)});
        }
        println!("{v}");
        return Ok(());
    }
    println!("{}", serde_json::to_string(&cfg)?);
    for (name, p, n) in &nets {
        print!(
            "{}",
            render(&format!("{name} (trainable parameters; BatchNorm statistics not counted)"), p, *n)
        );
    }
    Ok(())
}

fn train(g: &Global, a: TrainArgs) -> Result<()> {
    g.f32_training("zoo gan train")?;
    if a.preset.is_none() && !a.resume {
        bail!("--preset is required for a new run (see models/gan/)");
    }
    let opts = zoo_gan::train::TrainOptions {
        data: a.data.parse()?,
        preset: a.preset.clone(),
        out: a.out.clone(),
        steps: a.steps,
        batch_size: a.batch_size,
        eval_every: a.sample_every,
        resume: a.resume,
        seed: g.seed,
        device: g.device()?,
    };
    let mut reporter = g.reporter(a.json);
    let done = zoo_gan::train::train(&opts, reporter.as_mut(), &mut |p| {
        g.note(format!(
            "gan train: {} ({}) on {} ({} images), {} steps{}, batch {}, G {} / D {} parameters, run in {}",
            if p.preset.is_empty() { "resumed run" } else { &p.preset },
            p.arch,
            opts.data,
            p.images,
            p.steps,
            if p.start > 0 { format!(" from step {}", p.start) } else { String::new() },
            p.batch_size,
            p.generator_params,
            p.discriminator_params,
            opts.out.display()
        ))
    })?;
    let (outcome, secs) = (&done.outcome, done.seconds);
    let Some(model) = &done.model else {
        g.note(format!("stopped at step {}; continue with --resume", outcome.steps));
        return Ok(());
    };
    if a.json {
        println!(
            "{}",
            json!({"steps": outcome.steps, "train_seconds": secs, "model": model.display().to_string(), "last": outcome.last})
        );
    } else {
        let f = |k: &str| outcome.last.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
        println!(
            "step {}: loss_d {:.4} loss_g {:.4} D(x) {:.3} D(G(z)) {:.3} ({:.1} s)",
            outcome.steps,
            f("loss_d"),
            f("loss_g"),
            f("d_x"),
            f("d_g_z1"),
            secs
        );
        println!("samples: {}", done.samples.display());
        println!("model: {}", model.display());
    }
    Ok(())
}

/// The demo's part: the shipped conditional DCGAN draws every digit class, and walks between
/// two latents of each class. No training at demo time.
pub fn demo(g: &Global, dir: &Path, device: Device) -> Result<Vec<PathBuf>> {
    let Some(model) = zoo_core::presets::shipped_model("gan", DEMO_MODEL) else {
        g.note(format!(
            "gan: skipped: no shipped model {DEMO_MODEL} in {}",
            zoo_core::presets::models_dir().join("gan").display()
        ));
        return Ok(Vec::new());
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let gen = Generator::load(&model, device, Kind::Float)?;
    let nc = gen.cfg.num_classes().max(1);
    let t0 = Instant::now();
    // 10 rows of the classes in turn: each column one digit.
    let n = nc * 10;
    let y = labels(&gen, n, None)?;
    let z = seeded_latents(&gen, n, g.seed, None)?;
    let x = tch::no_grad(|| gen.generate_with(&z, y.as_ref(), None))?;
    let secs = t0.elapsed().as_secs_f64();
    let grid = dir.join("digits.png");
    save_image(&x.f_clamp(-1.0, 1.0)?, &grid)?;
    // One row per class: a slerp between two latents, the class held fixed.
    let steps = 8;
    let ts: Vec<f64> = (0..steps).map(|i| i as f64 / (steps - 1) as f64).collect();
    let (za, zb) = (seeded_latents(&gen, 1, g.seed + 1, None)?, seeded_latents(&gen, 1, g.seed + 2, None)?);
    let path = slerp(&za, &zb, &ts)?;
    let mut rows = Vec::new();
    for c in 0..nc {
        let y = if gen.cfg.num_classes() > 0 { labels(&gen, steps as i64, Some(c))? } else { None };
        rows.push(tch::no_grad(|| gen.generate_with(&path, y.as_ref(), None))?);
    }
    let walks = dir.join("interpolation.png");
    // Frame t: the t-th step of every class, so image_strip lays the classes out as rows.
    let all = Tensor::f_stack(&rows, 1)?.f_clamp(-1.0, 1.0)?; // (steps, classes, C, H, W)
    save_image(&image_strip(&(0..steps as i64).map(|t| all.get(t)).collect::<Vec<_>>())?, &walks)?;
    g.note(format!(
        "gan: {} ({} trainable generator parameters) drew {n} digits in {secs:.2} s ({:.0}/s), classes 0-9 by \
         column; interpolation.png walks between two latents, one row per class. Scores: {}",
        model.display(),
        zoo_llm::arch::commas(num_params(&gen.vs)),
        n as f64 / secs.max(1e-9),
        model.join("README.md").display()
    ));
    Ok(vec![grid, walks])
}

/// `n` digits from the shipped conditional GAN (classes in turn, latents from `seed`), for
/// other demo parts that need digits without a dataset; None when it is not shipped.
pub fn demo_digits(n: i64, seed: u64, device: Device) -> Result<Option<Tensor>> {
    let Some(model) = zoo_core::presets::shipped_model("gan", DEMO_MODEL) else { return Ok(None) };
    let gen = Generator::load(&model, device, Kind::Float)?;
    let y = labels(&gen, n, None)?;
    let z = seeded_latents(&gen, n, seed, None)?;
    Ok(Some(tch::no_grad(|| gen.generate_with(&z, y.as_ref(), None))?))
}

/// The shipped model the demo draws with (`models/gan/NAME/`).
pub const DEMO_MODEL: &str = "cdcgan-mnist";

/// `--model`: a gan model folder, or the name of a shipped one (`models/gan/NAME/`).
fn model_arg(s: &str) -> std::result::Result<PathBuf, String> {
    crate::global::model_folder("gan", s)
}
