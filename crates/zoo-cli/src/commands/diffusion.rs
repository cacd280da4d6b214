//! `zoo diffusion ...`: list the schedulers, sample from a UNet with any of them, show a UNet's
//! blocks, train one.
//!
//! `--model` is a diffusers UNet folder (config.json + diffusion_pytorch_model.safetensors), a
//! diffusers pipeline folder (unet/ + scheduler/), a zoo run folder (its model/) or a preset
//! name of models/diffusion/ (see zoo_diffusion::pipeline).
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tch::{nn::VarStore, Device, Kind, Tensor};
use zoo_core::data::DataSpec;
use zoo_core::image::{image_strip, save_image};
use zoo_core::run::RunDir;
use zoo_core::train::trainer::{ProgressBar, Reporter, Silent};
use zoo_diffusion::pipeline::{self, DiffusionModel, ModelSpec, SampleOptions};
use zoo_diffusion::schedulers::{self, Ddim, Scheduler, SCHEDULERS};
use zoo_diffusion::train::{DiffusionTask, Preset, TrainData};
use zoo_diffusion::unet::UNet2DModel;

use crate::global::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Lists the noise schedulers `sample --scheduler` takes, one line each.
    Schedulers,
    /// Runs the reverse diffusion process from seeded noise and writes the images as a grid.
    Sample(SampleArgs),
    /// Prints a UNet's blocks with the shape after each and their parameter counts.
    Arch(ArchArgs),
    /// Trains a UNet from a preset into a run folder (metrics.jsonl, loss.png, samples/,
    /// checkpoints/) and writes the EMA model to <out>/model/ (a diffusers UNet folder).
    Train(TrainArgs),
}

#[derive(clap::Args, Debug)]
struct TrainArgs {
    /// Training images: mnist:DIR (IDX files, padded to 32x32), images:DIR (PNG/JPEG) or shapes.
    #[arg(long)]
    data: DataSpec,
    /// A preset of models/diffusion/ (mnist-32, tiny, ...); with --resume it may be left out.
    #[arg(long)]
    preset: Option<String>,
    /// The run folder: config.json, metrics.jsonl, loss.png, samples/, checkpoints/, model/.
    #[arg(long)]
    out: PathBuf,
    /// Optimiser steps in total (overrides the preset's).
    #[arg(long)]
    steps: Option<u64>,
    /// Images per batch (overrides the preset's).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Write a sample grid and a checkpoint every this many steps, as --eval-every does in every family (overrides the preset's).
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
struct SampleArgs {
    /// A diffusers UNet or pipeline folder, a zoo run folder, or a preset name with trained weights.
    #[arg(long)]
    model: String,
    /// The sampler (see `zoo diffusion schedulers`); its settings (betas, prediction type, ...)
    /// come from the model's scheduler_config.json.
    #[arg(long, default_value = "ddim")]
    scheduler: String,
    /// Denoising steps (at most the model's training timesteps; DDPM wants all of them). Heun
    /// calls the UNet 2n - 1 times, PNDM n + 9 (n + 1 with skip_prk_steps), the others n.
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// Classifier-free guidance scale for class-conditional models trained with a null class
    /// (1: no guidance; 2-4 gives cleaner, less varied images).
    #[arg(long, default_value_t = 1.0)]
    guidance_scale: f64,
    /// The class of every image, for a class-conditional model (default: the classes in turn).
    #[arg(long)]
    class: Option<i64>,
    /// DDIM's noise weight eta (0: deterministic; 1: as noisy as DDPM). ddim only.
    #[arg(long)]
    eta: Option<f64>,
    /// Images to draw.
    #[arg(long, default_value_t = 16)]
    num_samples: i64,
    /// Images per forward pass; larger runs are sampled in batches with seeds --seed, --seed + 1, ...
    /// (default: all at once).
    #[arg(long)]
    batch_size: Option<i64>,
    /// The grid image (.png or .jpg).
    #[arg(long)]
    out: PathBuf,
    /// Also writes the denoising trajectory (the noise, then x_t after 10 evenly spaced steps, for
    /// up to 8 samples) as a strip image beside --out, named <out>-steps.png.
    #[arg(long)]
    save_intermediates: bool,
    /// Also writes the images (and labels of a class-conditional model) to this safetensors file:
    /// `images` (N, C, H, W) in [-1, 1], `labels` (N) int64; what `zoo eval score --samples` reads.
    #[arg(long)]
    save_tensors: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct ArchArgs {
    /// A diffusers UNet or pipeline folder, a zoo run folder, or a preset name (no weights needed).
    #[arg(long)]
    model: String,
    /// Prints one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(g: &Global, a: Args) -> Result<()> {
    match a.command {
        Command::Schedulers => {
            for (name, what) in SCHEDULERS {
                println!("{name:<16} {what}");
            }
            Ok(())
        }
        Command::Sample(a) => sample(g, a),
        Command::Arch(a) => arch(a),
        Command::Train(a) => train(g, a),
    }
}

/// Fails early on an output name whose extension is not an image format we write.
fn check_image_path(p: &Path) -> Result<()> {
    let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    if !["png", "jpg", "jpeg"].contains(&ext.as_str()) {
        bail!("--out {}: use a .png, .jpg or .jpeg name", p.display());
    }
    Ok(())
}

/// `grid.png` -> `grid-steps.png`.
fn strip_path(out: &Path) -> PathBuf {
    let stem = out.file_stem().and_then(|s| s.to_str()).unwrap_or("samples");
    let ext = out.extension().and_then(|s| s.to_str()).unwrap_or("png");
    out.with_file_name(format!("{stem}-steps.{ext}"))
}

/// Scheduler `name` built from the model's scheduler config, with DDIM's eta when given.
fn build_scheduler(name: &str, spec: &ModelSpec, eta: Option<f64>) -> Result<Box<dyn Scheduler>> {
    let s = schedulers::build(name, &spec.scheduler)?;
    match eta {
        None => Ok(s),
        Some(eta) if s.name() == "ddim" => Ok(Box::new(Ddim::new(&spec.scheduler)?.with_eta(eta)?)),
        Some(_) => bail!("--eta: only the ddim scheduler takes it, not {name}"),
    }
}

/// Frames kept for `--save-intermediates`, and the samples shown.
const STRIP_FRAMES: usize = 10;
const STRIP_ROWS: i64 = 8;

fn sample(g: &Global, a: SampleArgs) -> Result<()> {
    check_image_path(&a.out)?;
    if a.num_samples < 1 {
        bail!("--num-samples must be at least 1, got {}", a.num_samples);
    }
    let batch = a.batch_size.unwrap_or(a.num_samples);
    if batch < 1 {
        bail!("--batch-size must be at least 1, got {batch}");
    }
    let spec = ModelSpec::resolve(&a.model)?;
    if g.verbose && !spec.ignored_scheduler_keys.is_empty() {
        g.note(format!("scheduler config keys zoo ignores: {}", spec.ignored_scheduler_keys.join(", ")));
    }
    let mut sched = build_scheduler(&a.scheduler, &spec, a.eta)?;
    let device = g.device()?;
    let model = DiffusionModel::load(spec, device, g.dtype.kind(), true)?;

    let chunks = (a.num_samples + batch - 1) / batch;
    let mut bar: Option<indicatif::ProgressBar> = None;
    let mut images = Vec::new();
    let mut labels = Vec::new();
    let mut frames = Vec::new();
    let t0 = std::time::Instant::now();
    for k in 0..chunks {
        let n = batch.min(a.num_samples - k * batch);
        let o = SampleOptions {
            num_samples: n,
            steps: a.steps,
            class: a.class,
            class_offset: k * batch,
            guidance_scale: a.guidance_scale,
            seed: g.seed.wrapping_add(k as u64),
            keep_frames: if a.save_intermediates && k == 0 { STRIP_FRAMES } else { 0 },
        };
        // The bar appears after the first step, so that bad options fail without one.
        let mut on_step = |_i: usize, total: usize| {
            if g.quiet {
                return;
            }
            let b = bar.get_or_insert_with(|| {
                let b = indicatif::ProgressBar::new(total as u64 * chunks as u64);
                let style = indicatif::ProgressStyle::with_template(
                    "{bar:30.cyan/blue} {pos}/{len} steps {per_sec} ETA {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
                b.set_style(style);
                b
            });
            b.inc(1);
        };
        let out = pipeline::sample(&model, sched.as_mut(), &o, &mut on_step)?;
        images.push(out.images.to_device(Device::Cpu));
        if let Some(c) = out.classes {
            labels.extend(c);
        }
        if k == 0 {
            frames = out.frames;
        }
    }
    if let Some(b) = bar.take() {
        b.finish_and_clear();
    }
    let images = Tensor::f_cat(&images, 0)?;
    g.note(format!(
        "{} images of {:?} with {} ({} steps, {} UNet calls per batch) in {:.1} s",
        a.num_samples,
        &images.size()[1..],
        sched.name(),
        a.steps,
        sched.timesteps().len(),
        t0.elapsed().as_secs_f64()
    ));
    save_image(&images, &a.out)?;
    println!("{}", a.out.display());
    if !frames.is_empty() {
        let rows = STRIP_ROWS.min(a.num_samples).min(batch);
        let frames: Vec<Tensor> =
            frames.iter().map(|f| f.narrow(0, 0, rows).to_device(Device::Cpu)).collect();
        let p = strip_path(&a.out);
        save_image(&image_strip(&frames)?, &p)?;
        println!("{}", p.display());
    }
    if let Some(p) = &a.save_tensors {
        let mut t = vec![("images".to_string(), images)];
        if !labels.is_empty() {
            t.push(("labels".to_string(), Tensor::from_slice(&labels)));
        }
        zoo_core::weights::save(p, &t, None)?;
        println!("{}", p.display());
    }
    Ok(())
}

/// The block a variable belongs to: `down_blocks.1.resnets.0.conv1.weight` -> `down_blocks.1`.
fn block_of(name: &str) -> String {
    let mut parts = name.split('.');
    let first = parts.next().unwrap_or("");
    match (first, parts.next()) {
        ("down_blocks" | "up_blocks", Some(i)) => format!("{first}.{i}"),
        _ => first.to_string(),
    }
}

fn arch(a: ArchArgs) -> Result<()> {
    let spec = ModelSpec::resolve(&a.model)?;
    let cfg = spec.unet.clone();
    // Only the architecture is needed: random weights, no checkpoint read.
    let vs = VarStore::new(Device::Cpu);
    let unet = UNet2DModel::new(vs.root(), &cfg)?;
    let (h, w) = cfg.sample_hw();
    let x = Tensor::f_zeros([1, cfg.in_channels, h, w], (Kind::Float, Device::Cpu))?;
    let t = Tensor::from_slice(&[1i64]);
    let label = cfg.num_class_embeds.map(|_| Tensor::from_slice(&[0i64]));
    let trace = tch::no_grad(|| unet.trace(&x, &t, label.as_ref()))?;

    let mut params: Vec<(String, i64)> = Vec::new();
    for (name, var) in vs.variables() {
        let b = block_of(&name);
        let n = var.numel() as i64;
        match params.iter_mut().find(|(k, _)| *k == b) {
            Some((_, c)) => *c += n,
            None => params.push((b, n)),
        }
    }
    let count = |b: &str| params.iter().find(|(k, _)| k == b).map_or(0, |(_, n)| *n);
    let total: i64 = params.iter().map(|(_, n)| n).sum();
    // Each traced stage with the variables of its block; the output stage includes its norm.
    let mut rows: Vec<(String, Vec<i64>, i64)> = vec![("input".into(), x.size(), 0)];
    for (stage, shape) in &trace {
        let b = stage.split(' ').next().unwrap_or("");
        let n = if b == "conv_out" { count("conv_out") + count("conv_norm_out") } else { count(b) };
        rows.push((stage.clone(), shape.clone(), n));
        if b == "time_embedding" && cfg.num_class_embeds.is_some() {
            rows.push(("class_embedding (added to it)".into(), shape.clone(), count("class_embedding")));
        }
    }
    if a.json {
        let stages: Vec<Value> =
            rows.iter().map(|(s, shape, n)| json!({"stage": s, "shape": shape, "params": n})).collect();
        println!(
            "{}",
            json!({"model": spec.name, "config": cfg, "stages": stages, "params": total,
                   "null_class": spec.meta.null_class, "weights": spec.weights.is_some()})
        );
        return Ok(());
    }
    let classes = match (cfg.num_class_embeds, spec.meta.null_class) {
        (Some(k), Some(_)) => format!(", {} classes + a null class", k - 1),
        (Some(k), None) => format!(", {k} classes"),
        _ => String::new(),
    };
    println!(
        "{}: UNet2DModel, {}x{}x{}{classes}, channels {:?}, {} layers per block",
        spec.name, cfg.in_channels, h, w, cfg.block_out_channels, cfg.layers_per_block
    );
    for (stage, shape, n) in &rows {
        let n = if *n > 0 { zoo_core::arch::commas(*n) } else { String::new() };
        println!("  {stage:<34} {:<20} {n:>12}", format!("{shape:?}"));
    }
    println!("  {:<34} {:<20} {:>12}", "total", "", zoo_core::arch::commas(total));
    Ok(())
}

fn train(g: &Global, a: TrainArgs) -> Result<()> {
    g.f32_training("zoo diffusion train")?;
    // 1. The recipe: the preset's, or the run's own on --resume.
    let old = if a.resume { Some(RunDir::open(&a.out)?.config()?) } else { None };
    let (name, mut preset) = match (&a.preset, &old) {
        (Some(name), _) => (name.clone(), Preset::find(name)?),
        (None, Some(cfg)) => {
            let v = json!({"model": cfg["model"], "scheduler": cfg["scheduler"], "train": cfg["train"]});
            let p = Preset::from_value(&v).with_context(|| format!("{}: config.json", a.out.display()))?;
            (cfg["preset"].as_str().unwrap_or("").to_string(), p)
        }
        (None, None) => bail!("--preset is required for a new run (see models/diffusion/)"),
    };
    if let Some(s) = a.steps.or_else(|| old.as_ref().and_then(|o| o["train"]["steps"].as_u64())) {
        preset.train.steps = s;
    }
    if let Some(b) = a.batch_size {
        preset.train.batch_size = b;
    }
    if let Some(s) = a.sample_every {
        preset.train.sample_every = Some(s);
        preset.train.checkpoint_every = Some(s);
    }
    preset.train.validate(&preset.model)?;

    // 2. Data, network (initial weights from --seed) and the run folder.
    let device = g.device()?;
    let cfg = preset.unet_config();
    let data = TrainData::open(&a.data, cfg.in_channels, cfg.sample_hw(), g.seed)?;
    zoo_core::seed::seed_all(g.seed);
    let vs = VarStore::new(device);
    let mut task = DiffusionTask::new(&vs, preset, data, &a.data.to_string(), g.seed)?;
    let run_cfg = task.run_config(&name);
    let run = RunDir::create_or_resume(&a.out, &run_cfg, a.resume, &zoo_core::run::LENGTH_AND_REPORTING)?;
    if let Some((_, state)) = run.latest_checkpoint()? {
        // (the library refuses it too; here before the note reports a run it will not train)
        zoo_core::train::steps_left(state.step, task.preset.train.steps)?;
    }
    let params: i64 = vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
    let t = &task.preset.train;
    g.note(format!(
        "diffusion train: {} on {} ({} images{}), {} steps, batch {}, {} objective, {} parameters, run in {}",
        if name.is_empty() { "resumed run" } else { &name },
        a.data,
        task.data_len(),
        if task.flips() { ", random flips" } else { "" },
        t.steps,
        t.batch_size,
        serde_json::to_value(t.objective)?.as_str().unwrap_or(""),
        zoo_core::arch::commas(params),
        a.out.display()
    ));

    // 3. The loop.
    let mut reporter = g.reporter(a.json);
    let t0 = std::time::Instant::now();
    let (start, outcome) = zoo_diffusion::train::train(&run, &vs, &mut task, reporter.as_mut(), None)?;
    if start > 0 {
        g.note(format!("resumed from step {start}"));
    }
    if outcome.interrupted {
        g.note(format!("stopped at step {}; continue with --resume", outcome.steps));
        return Ok(());
    }
    let model_dir = a.out.join("model");
    task.save_model(&model_dir)?;
    let secs = t0.elapsed().as_secs_f64();
    let loss = outcome.last.get("loss").and_then(Value::as_f64).unwrap_or(f64::NAN);
    if a.json {
        println!(
            "{}",
            json!({"steps": outcome.steps, "train_seconds": secs, "loss": loss, "model": model_dir.display().to_string()})
        );
    } else {
        println!("step {}: loss {loss:.4} ({secs:.1} s)", outcome.steps);
        println!("samples: {}", run.samples_dir().display());
        println!("model: {}", model_dir.display());
    }
    Ok(())
}

/// Steps of the demo's training run: 10-15 s on two idle CPU cores.
const DEMO_STEPS: u64 = 600;

/// `zoo demo`'s part: the tiny preset trained briefly on the procedural shapes, then a grid of
/// class-conditional samples with guidance and the denoising trajectory of three of them.
pub fn demo(g: &Global, dir: &Path, device: Device) -> Result<Vec<PathBuf>> {
    let run_dir = dir.join("run");
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir).with_context(|| format!("removing {}", run_dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut preset = Preset::find("tiny")?;
    preset.train.steps = DEMO_STEPS;
    preset.train.sample_every = None;
    preset.train.checkpoint_every = None;
    let cfg = preset.unet_config();
    let data = TrainData::open(&DataSpec::Shapes, cfg.in_channels, cfg.sample_hw(), g.seed)?;
    zoo_core::seed::seed_all(g.seed);
    let vs = VarStore::new(device);
    let mut task = DiffusionTask::new(&vs, preset, data, "shapes", g.seed)?;
    let run = RunDir::create(&run_dir, &task.run_config("tiny"), false)?;
    let t0 = std::time::Instant::now();
    let mut reporter: Box<dyn Reporter> =
        if g.quiet { Box::new(Silent) } else { Box::new(ProgressBar::new()) };
    let (_, outcome) = zoo_diffusion::train::train(&run, &vs, &mut task, reporter.as_mut(), None)?;
    if outcome.interrupted {
        bail!("interrupted");
    }
    let secs = t0.elapsed().as_secs_f64();
    let first =
        run.metrics()?.first().and_then(|r| r.get("loss").and_then(Value::as_f64)).unwrap_or(f64::NAN);
    let last = outcome.last.get("loss").and_then(Value::as_f64).unwrap_or(f64::NAN);
    task.save_model(&run_dir.join("model"))?;

    // 9 samples, the classes (circle, square, triangle) in turn, with guidance; 3 trajectories.
    let out = task.sample_images(9, g.seed, STRIP_FRAMES)?;
    // 16x16 images are hard to see: both pictures are drawn 4x larger (nearest neighbour).
    let big = |t: &Tensor| {
        t.to_device(Device::Cpu).upsample_nearest2d([t.size()[2] * 4, t.size()[3] * 4], None, None)
    };
    let grid = dir.join("samples.png");
    save_image(&big(&out.images), &grid)?;
    let frames: Vec<Tensor> = out.frames.iter().map(|f| big(&f.narrow(0, 0, 3))).collect();
    let strip = dir.join("denoising.png");
    save_image(&image_strip(&frames)?, &strip)?;
    let t = &task.preset.train;
    g.note(format!(
        "diffusion: the tiny UNet (16x16, {} parameters) trained {} steps in {secs:.1} s on the procedural shapes \
         (loss {first:.3} -> {last:.3}); samples with {} ({} steps, guidance {}), classes circle/square/triangle by column.",
        zoo_core::arch::commas(vs.trainable_variables().iter().map(|v| v.numel() as i64).sum()),
        outcome.steps,
        t.sample_scheduler,
        t.sample_steps,
        t.sample_guidance_scale
    ));
    Ok(vec![grid, strip, run_dir.join("loss.png"), run_dir.join("model")])
}
