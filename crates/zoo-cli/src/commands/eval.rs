//! `zoo eval`: the shared MNIST evaluation (classifier, Frechet distance, precision/recall).
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tch::{nn::VarStore, Kind, Tensor};
use zoo_core::data::{scenes, DataSpec, EpochShuffler, Mnist, Split};
use zoo_core::eval::{ClassifierConfig, ClassifierTask, Evaluator, MnistClassifier};
use zoo_core::run::RunDir;
use zoo_core::train::{AdamW, AdamWConfig, LoopConfig, LrSchedule, Trainer};
use zoo_diffusion::adherence;
use zoo_flow::tts::listener;

use crate::global::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    /// Trains the MNIST classifier whose features the image families are scored in.
    TrainClassifier(TrainArgs),
    /// Scores generated images against the MNIST test set: Frechet distance, precision and
    /// recall, density and coverage, and class accuracy when the intended labels are given.
    Score(ScoreArgs),
    /// Trains the captioned-scenes scorer that judges text-to-image prompt adherence (per
    /// grid cell: shape, colour, size), then reports its reading of held-out real scenes.
    TrainScenesScorer(ScenesTrainArgs),
    /// Reports a scenes scorer's reading of real scenes: cells read exactly, and each
    /// prompt-adherence category on the scenes' own captions (the ceiling for a generator).
    ScenesScorer(ScenesArgs),
    /// Prompt adherence of a text-to-image model on the scenes: one image per caption of
    /// scenes never trained on, seen and held-out combinations, at each guidance scale; the
    /// scorer's judgement per category and the Frechet distance in its features.
    ScenesAdherence(AdherenceArgs),
    /// Trains the spoken-digit listener that judges text-to-speech intelligibility: a classifier
    /// of the Free Spoken Digit Dataset's recordings, scored on speakers it never heard.
    TrainListener(ListenerArgs),
}

#[derive(clap::Args, Debug)]
struct ListenerArgs {
    /// The Free Spoken Digit Dataset folder (<digit>_<speaker>_<index>.wav), e.g.
    /// ../shared/data/fsdd.
    #[arg(long)]
    data: PathBuf,
    /// Where the trained listener goes (config.json + model.safetensors).
    #[arg(long, default_value = "models/eval/digit-listener")]
    out: PathBuf,
    /// The run directory (metrics, checkpoints, loss curve).
    #[arg(long, default_value = "runs/digit-listener")]
    run: PathBuf,
    /// Speakers left out of training, comma-separated; the accuracy on them is the score.
    #[arg(long, value_delimiter = ',', default_value = "theo,yweweler")]
    held_out: Vec<String>,
    /// Optimiser steps (batches of 64).
    #[arg(long, default_value_t = 3000)]
    steps: u64,
    /// Train on the recordings as they are: no speed changes, placement, masks or noise.
    #[arg(long)]
    no_augment: bool,
    /// Continue the run in --run from its latest checkpoint.
    #[arg(long)]
    resume: bool,
    /// Report progress as JSON lines on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct AdherenceArgs {
    /// A text-to-image pipeline folder drawing 64x64 scenes (e.g. models/txt2img/scenes).
    #[arg(long)]
    model: PathBuf,
    /// The scenes scorer folder.
    #[arg(long, default_value_os_t = zoo_core::presets::shipped("eval/scenes-scorer"))]
    scorer: PathBuf,
    /// Guidance scales, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,3,7.5")]
    guidance_scale: Vec<f64>,
    /// Prompts per split and guidance scale.
    #[arg(long, default_value_t = 300)]
    num: usize,
    /// Denoising steps.
    #[arg(long, default_value_t = 25)]
    steps: usize,
    /// The sampler (see `zoo diffusion schedulers`).
    #[arg(long, default_value = "ddim")]
    scheduler: String,
    /// A folder for one grid per split and scale: the first 16 images, with their prompts in
    /// a .txt beside each.
    #[arg(long)]
    grids: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct ScenesTrainArgs {
    /// Where the trained scorer goes (model.safetensors).
    #[arg(long, default_value = "models/eval/scenes-scorer")]
    out: PathBuf,
    /// Optimiser steps.
    #[arg(long, default_value_t = 2000)]
    steps: u64,
    /// Scenes per step.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Real scenes per split to report on after training.
    #[arg(long, default_value_t = 2000)]
    num: usize,
}

#[derive(clap::Args, Debug)]
struct ScenesArgs {
    /// The scorer folder.
    #[arg(long, default_value_os_t = zoo_core::presets::shipped("eval/scenes-scorer"))]
    model: PathBuf,
    /// Real scenes per split to read (scenes the scorer never trained on).
    #[arg(long, default_value_t = 2000)]
    num: usize,
}

#[derive(clap::Args, Debug)]
struct TrainArgs {
    /// Training data: mnist:DIR (the IDX files, e.g. mnist:../shared/data/mnist).
    #[arg(long)]
    data: DataSpec,
    /// Where the trained classifier goes (config.json + model.safetensors).
    #[arg(long, default_value = "models/eval/mnist-classifier")]
    out: PathBuf,
    /// The run directory (metrics, checkpoints, loss curve).
    #[arg(long, default_value = "runs/mnist-classifier")]
    run: PathBuf,
    /// Passes over the 60,000 training images.
    #[arg(long, default_value_t = 3)]
    epochs: u64,
    /// Continue the run in --run from its latest checkpoint.
    #[arg(long)]
    resume: bool,
    /// Report progress as JSON lines on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct ScoreArgs {
    /// The real images: mnist:DIR (its 10,000 test images are the reference).
    #[arg(long)]
    data: DataSpec,
    /// Generated images: a .safetensors file with `images` (N, 1, H, W) in [-1, 1] and optionally
    /// `labels` (N), or a folder of PNG files (grey, 28x28 or 32x32).
    #[arg(long)]
    samples: PathBuf,
    /// The classifier folder.
    #[arg(long, default_value_os_t = zoo_core::presets::shipped("eval/mnist-classifier"))]
    classifier: PathBuf,
    /// Also score 10,000 real MNIST training images the same way: the floor the numbers of a
    /// perfect generator would reach with this many samples.
    #[arg(long)]
    baseline: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(g: &Global, a: Args) -> Result<()> {
    match a.command {
        Cmd::TrainClassifier(t) => train(g, t),
        Cmd::Score(s) => score(g, s),
        Cmd::TrainListener(a) => train_listener(g, a),
        Cmd::TrainScenesScorer(t) => train_scenes_scorer(g, t),
        Cmd::ScenesScorer(s) => scenes_scorer(g, s),
        Cmd::ScenesAdherence(a) => scenes_adherence(g, a),
    }
}

/// Scenes from this index on are never used for training the scorer.
const SCENES_TEST_START: u64 = 1 << 40;

fn train_scenes_scorer(g: &Global, a: ScenesTrainArgs) -> Result<()> {
    g.f32_training("zoo eval train-scenes-scorer")?;
    if a.steps == 0 || a.batch_size == 0 {
        bail!("--steps and --batch-size must be at least 1");
    }
    let vs = VarStore::new(g.device()?);
    tch::manual_seed(g.seed as i64);
    let scorer = adherence::SceneScorer::new(vs.root())?;
    let bar = (!g.quiet).then(|| {
        let b = indicatif::ProgressBar::new(a.steps);
        let style =
            indicatif::ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} loss {msg} ETA {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        b.set_style(style);
        b
    });
    let t0 = std::time::Instant::now();
    adherence::train_scorer(&vs, &scorer, a.steps, a.batch_size, g.seed, &mut |_, loss| {
        if let Some(b) = &bar {
            b.set_message(format!("{loss:.4}"));
            b.inc(1);
        }
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("--out {}", a.out.display()))?;
    zoo_core::weights::save_varstore(&vs, &a.out.join("model.safetensors"))?;
    g.note(format!(
        "trained {} steps of {} scenes in {:.0} s",
        a.steps,
        a.batch_size,
        t0.elapsed().as_secs_f64()
    ));
    println!("{}", a.out.display());
    report_scenes(&scorer, a.num)
}

fn scenes_scorer(g: &Global, a: ScenesArgs) -> Result<()> {
    let (scorer, _vs) = adherence::SceneScorer::load(&a.model, g.device()?)?;
    report_scenes(&scorer, a.num)
}

fn scenes_adherence(g: &Global, a: AdherenceArgs) -> Result<()> {
    if a.num < 2 || a.guidance_scale.is_empty() {
        bail!("--num must be at least 2 and --guidance-scale must name a scale");
    }
    if let Some(d) = &a.grids {
        std::fs::create_dir_all(d).with_context(|| format!("--grids {}", d.display()))?;
    }
    let device = g.device()?;
    let sd = zoo_diffusion::StableDiffusion::load(&a.model, device, tch::Kind::Float)?;
    if sd.default_size() != (64, 64) {
        bail!(
            "--model {}: it draws {:?} images; the scenes scorer reads 64x64",
            a.model.display(),
            sd.default_size()
        );
    }
    let (scorer, _vs) = adherence::SceneScorer::load(&a.scorer, device)?;
    let splits = [("seen", scenes::Split::Train), ("held-out", scenes::Split::HeldOut)];
    let total = (a.num * splits.len() * a.guidance_scale.len()) as u64;
    let bar = (!g.quiet && !a.json).then(|| {
        let b = indicatif::ProgressBar::new(total);
        let style =
            indicatif::ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} images {msg} ETA {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        b.set_style(style);
        b
    });
    let t0 = std::time::Instant::now();
    let mut columns = Vec::new();
    for &gs in &a.guidance_scale {
        for (name, split) in splits {
            if let Some(b) = &bar {
                b.set_message(format!("guidance {gs}, {name}"));
            }
            let o = adherence::AdherenceOptions {
                seed: 0,
                split,
                first: SCENES_TEST_START,
                num: a.num,
                guidance_scale: gs,
                steps: a.steps,
                scheduler: a.scheduler.clone(),
                sample_seed: g.seed,
            };
            let r = adherence::pipeline_adherence(&sd, &scorer, &o, &mut |_, _| {
                if let Some(b) = &bar {
                    b.inc(1);
                }
            })?;
            if let Some(d) = &a.grids {
                let stem = format!("guidance-{gs}-{name}");
                let k = 16.min(a.num) as i64;
                let grid = r.images.f_narrow(0, 0, k)?.f_mul_scalar(2.0)?.f_sub_scalar(1.0)?;
                zoo_core::image::save_image(
                    &grid.f_to_device(tch::Device::Cpu)?,
                    &d.join(format!("{stem}.png")),
                )?;
                let txt = d.join(format!("{stem}.txt"));
                std::fs::write(&txt, r.prompts[..k as usize].join("\n") + "\n")
                    .with_context(|| format!("--grids: writing {}", txt.display()))?;
            }
            columns.push((gs, name, r.report, r.frechet));
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let ceilings: Vec<(&str, f64)> = splits
        .iter()
        .map(|(name, split)| {
            let r = adherence::autoencoder_ceiling(&sd, &scorer, 0, SCENES_TEST_START, a.num, *split)?;
            Ok((*name, r.all_correct().unwrap_or(0.0)))
        })
        .collect::<Result<_>>()?;
    let floors: Vec<(&str, f64)> = splits
        .iter()
        .map(|(name, split)| {
            Ok((*name, adherence::real_frechet_floor(&scorer, 0, SCENES_TEST_START, a.num, *split)?))
        })
        .collect::<Result<_>>()?;
    if a.json {
        let cols: Vec<serde_json::Value> = columns
            .iter()
            .map(|(gs, name, rep, fd)| {
                let acc: serde_json::Map<String, serde_json::Value> = rep
                    .accuracies()
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
                    .collect();
                serde_json::json!({"guidance_scale": gs, "split": name, "accuracy": acc, "frechet": fd})
            })
            .collect();
        let floors: serde_json::Map<String, serde_json::Value> =
            floors.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect();
        let ceilings: serde_json::Map<String, serde_json::Value> =
            ceilings.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect();
        println!(
            "{}",
            serde_json::json!({"model": a.model, "num": a.num, "steps": a.steps, "scheduler": a.scheduler, "columns": cols, "real_frechet": floors, "autoencoder_ceiling": ceilings})
        );
        return Ok(());
    }
    let mut header = String::from("| category |");
    let mut rule = String::from("|---|");
    for (gs, name, _, _) in &columns {
        header += &format!(" {gs}, {name} |");
        rule += "---|";
    }
    println!("{header}\n{rule}");
    for (k, (cat, _)) in adherence::CATEGORIES.iter().enumerate() {
        let mut row = format!("| {cat} |");
        for (_, _, rep, _) in &columns {
            let (ok, n) = rep.counts[k];
            row +=
                &if n > 0 { format!(" {:.1}% |", 100.0 * ok as f64 / n as f64) } else { " - |".to_string() };
        }
        println!("{row}");
    }
    let mut row = String::from("| Frechet distance |");
    for (_, _, _, fd) in &columns {
        row += &format!(" {fd:.3} |");
    }
    println!("{row}");
    g.note(format!(
        "the autoencoder's ceiling (real scenes through the model's VAE, all correct): {}",
        ceilings.iter().map(|(k, v)| format!("{k} {:.1}%", 100.0 * v)).collect::<Vec<_>>().join(", ")
    ));
    g.note(format!(
        "{} prompts per column, {} {} steps, in {:.0} s; real-vs-real Frechet distance with {} scenes: {}",
        a.num,
        a.steps,
        a.scheduler,
        t0.elapsed().as_secs_f64(),
        a.num,
        floors.iter().map(|(k, v)| format!("{k} {v:.3}")).collect::<Vec<_>>().join(", ")
    ));
    Ok(())
}

fn report_scenes(scorer: &adherence::SceneScorer, n: usize) -> Result<()> {
    for (name, split) in [("seen", scenes::Split::Train), ("held-out", scenes::Split::HeldOut)] {
        let (report, cells) = adherence::real_scene_report(scorer, 0, SCENES_TEST_START, n, split)?;
        let cats: Vec<String> = report
            .accuracies()
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| format!("{k} {:.1}%", 100.0 * v)))
            .collect();
        println!(
            "{name} combinations, {n} real scenes: cells read exactly {:.2}%; {}",
            100.0 * cells,
            cats.join(", ")
        );
    }
    Ok(())
}

fn mnist_dir(spec: &DataSpec) -> Result<&Path> {
    match spec {
        DataSpec::Mnist(dir) => Ok(dir),
        other => bail!("--data {other}: the MNIST evaluation needs mnist:DIR"),
    }
}

const BATCH: usize = 128;

fn train(g: &Global, a: TrainArgs) -> Result<()> {
    g.f32_training("zoo eval train-classifier")?;
    let device = g.device()?;
    let dir = mnist_dir(&a.data)?;
    let train = Mnist::load(dir, Split::Train)?;
    let test = Mnist::load(dir, Split::Test)?;
    let steps = a.epochs * train.len().div_ceil(BATCH) as u64;
    let steps_per_epoch = train.len().div_ceil(BATCH) as u64;
    let cfg = LoopConfig {
        steps,
        clip_grad: None,
        log_every: 50,
        eval_every: Some(steps_per_epoch),
        checkpoint_every: Some(steps_per_epoch),
        seed: g.seed,
        ..Default::default()
    };
    let net_cfg = ClassifierConfig::default();
    let run = RunDir::create(
        &a.run,
        &serde_json::json!({"data": a.data.to_string(), "loop": cfg, "model": net_cfg}),
        a.resume,
    )?;
    zoo_core::seed::seed_all(g.seed);
    let vs = VarStore::new(device);
    let net = MnistClassifier::new(&vs.root(), &net_cfg);
    let mut task = ClassifierTask {
        net,
        train: &train,
        test: &test,
        shuffler: EpochShuffler::new(train.len(), BATCH, g.seed),
        device,
    };
    let opt = AdamW::new(&vs, AdamWConfig { lr: 2e-3, weight_decay: 0.0, ..Default::default() });
    let schedule = LrSchedule::WarmupCosine { lr: 2e-3, min_lr: 1e-4, warmup_steps: 100, decay_steps: steps };
    let mut trainer = Trainer::new(&run, &vs, opt, schedule, cfg)?;
    let start = if a.resume { trainer.resume_to_continue(&mut task)? } else { 0 };
    let mut reporter = g.reporter(a.json);
    let outcome = trainer.run(&mut task, start, reporter.as_mut())?;
    if outcome.interrupted {
        bail!("interrupted at step {}; continue with --resume", outcome.steps);
    }
    let m = zoo_core::train::TrainTask::eval(&mut task, outcome.steps)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let cfg_path = a.out.join("config.json");
    let text = serde_json::to_string_pretty(&net_cfg)?;
    zoo_core::fsutil::atomic_write(&cfg_path, |w| {
        std::io::Write::write_all(w, text.as_bytes()).map_err(|e| zoo_core::Error::io(&cfg_path, e))
    })?;
    zoo_core::weights::save_varstore(&vs, &a.out.join("model.safetensors"))?;
    let acc = m.iter().find(|(k, _)| k == "val_accuracy").map(|(_, v)| *v).unwrap_or(f64::NAN);
    println!(
        "test accuracy {:.2}% after {} steps; classifier in {}",
        acc * 100.0,
        outcome.steps,
        a.out.display()
    );
    Ok(())
}

fn train_listener(g: &Global, a: ListenerArgs) -> Result<()> {
    g.f32_training("zoo eval train-listener")?;
    if !a.data.is_dir() {
        bail!("--data {}: not a folder (the Free Spoken Digit Dataset's WAVs)", a.data.display());
    }
    let mut spec = listener::ListenerSpec::new(&a.data, g.seed);
    spec.held_out = a.held_out.into_iter().filter(|s| !s.is_empty()).collect();
    spec.steps = a.steps;
    spec.augment = !a.no_augment;
    let mut reporter = g.reporter(a.json);
    let t = listener::train_listener(&spec, &a.run, a.resume, g.device()?, reporter.as_mut(), None)?;
    if t.outcome.interrupted {
        g.note(format!("stopped at step {}; continue with --resume", t.outcome.steps));
        return Ok(());
    }
    t.listener.save(&a.out)?;
    let acc = match t.held_out_accuracy {
        Some(acc) => format!(
            "accuracy {:.1}% on the {} recordings of held-out {}",
            acc * 100.0,
            t.held_out_clips,
            spec.held_out.join(", ")
        ),
        None => "no speaker held out".to_string(),
    };
    println!(
        "listener ({} parameters) trained on {} recordings of {} for {} steps: {acc}; wrote {}",
        t.listener.n_params(),
        t.train_clips,
        t.train_speakers.join(", "),
        t.outcome.steps,
        a.out.display()
    );
    Ok(())
}

/// Generated images (and labels, if any) from a safetensors file or a folder of PNGs.
fn load_samples(p: &Path) -> Result<(Tensor, Option<Tensor>)> {
    if p.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(p)
            .with_context(|| format!("reading {}", p.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|f| f.extension().and_then(|e| e.to_str()) == Some("png"))
            .collect();
        files.sort();
        if files.is_empty() {
            bail!("{}: no .png files", p.display());
        }
        let imgs =
            files.iter().map(|f| zoo_core::image::load_image(f)).collect::<zoo_core::Result<Vec<_>>>()?;
        return Ok((Tensor::f_stack(&imgs, 0)?, None));
    }
    let f = zoo_core::weights::SafetensorsFile::open(p)?;
    let images =
        f.tensor("images").with_context(|| format!("{}: needs a tensor named 'images'", p.display()))?;
    let labels = f.tensor("labels").ok();
    Ok((images.f_to_kind(Kind::Float)?, labels))
}

fn score(g: &Global, a: ScoreArgs) -> Result<()> {
    let device = g.device()?;
    let eval = Evaluator::load(&a.classifier, device).with_context(|| {
        format!(
            "loading the classifier (train it with `zoo eval train-classifier --out {}`)",
            a.classifier.display()
        )
    })?;
    let dir = mnist_dir(&a.data)?;
    let test = Mnist::load(dir, Split::Test)?;
    let (real, _) = test.batch(&(0..test.len()).collect::<Vec<_>>())?;
    let (fake, labels) = load_samples(&a.samples)?;
    report(g, &a, "samples", &eval, &real, &fake, labels.as_ref())?;
    if a.baseline {
        let train = Mnist::load(dir, Split::Train)?;
        let (imgs, labels) = train.batch(&(0..10_000.min(train.len())).collect::<Vec<_>>())?;
        report(g, &a, "baseline (MNIST train)", &eval, &real, &imgs, Some(&labels))?;
    }
    Ok(())
}

fn report(
    g: &Global,
    a: &ScoreArgs,
    what: &str,
    eval: &Evaluator,
    real: &Tensor,
    fake: &Tensor,
    labels: Option<&Tensor>,
) -> Result<()> {
    // The checks of images and labels come first: bad samples are refused before any note.
    zoo_core::eval::check_images(fake)?;
    let accuracy = labels.map(|l| eval.accuracy(fake, l)).transpose()?;
    g.note(format!(
        "scoring {} {what} against the {} MNIST test images (features, then nearest neighbours)...",
        fake.size()[0],
        real.size()[0]
    ));
    let scores = eval.compare(real, fake)?;
    if a.json {
        let mut v = serde_json::to_value(&scores)?;
        v["class_accuracy"] = serde_json::json!(accuracy);
        v["what"] = serde_json::json!(what);
        println!("{v}");
    } else {
        println!(
            "{what}: {} images vs {} MNIST test images: Frechet distance {:.3}, precision {:.3}, recall {:.3}, density {:.3}, coverage {:.3}{}",
            scores.n_fake,
            scores.n_real,
            scores.frechet,
            scores.precision,
            scores.recall,
            scores.density,
            scores.coverage,
            accuracy.map(|x| format!(", class accuracy {:.1}%", x * 100.0)).unwrap_or_default()
        );
    }
    Ok(())
}
