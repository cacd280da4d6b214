//! `zoo flow ...`: WaveGlow (train on WAVs, vocode, mel pictures), Glow on MNIST (train,
//! evaluate bits/dim, sample) and 2-D density flows.
//!
//! A WaveGlow model folder (`--model DIR`) is `config.json` (NVIDIA's layout: waveglow_config,
//! data_config, train_config) plus `model.safetensors`; `zoo flow train` writes one to
//! `<out>/model/`, and `tools/convert_waveglow.py` makes one from NVIDIA's checkpoint. A Glow
//! model folder is `config.json` (glow_config, data_config, train_config) plus
//! `model.safetensors`; the presets (and config.json files) with a `glow_config` are Glow's.
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};
use zoo_core::arch::{module_rows, render, Part};
use zoo_core::audio::{self, Audio, MelConfig, MelSpectrogram, WavFormat};
use zoo_core::data::DataSpec;
use zoo_core::presets;
use zoo_core::run::RunDir;
use zoo_flow::denoiser::Denoiser;
use zoo_flow::density::{density_picture, fit_density, Kind2d, Toy};
use zoo_flow::glow_train::{load_mnist, GlowFile, GlowModel};
use zoo_flow::train::{load_wav_dir, WaveGlowTask};
use zoo_flow::waveglow::{ModelFile, Vocoder};

use crate::global::{ArchArgs, Global};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Trains a WaveGlow (on a folder of WAVs) or a Glow (on MNIST) from a preset into a run
    /// folder; writes the model to <out>/model/.
    Train(TrainArgs),
    /// Mel spectrogram -> waveform with a WaveGlow model folder (from a WAV: copy synthesis).
    Vocode(VocodeArgs),
    /// WaveGlow: copy synthesis on the test split of a WAV folder (log-mel L1, mel-cepstral
    /// distortion, NLL in bits per sample, real-time factor; real and vocoded WAVs and
    /// spectrograms). Glow: test bits per dimension on MNIST and a sample grid.
    Eval(EvalArgs),
    /// Draws a grid of samples from a Glow model folder.
    Sample(SampleArgs),
    /// Draws the log-mel spectrogram of a WAV file as a picture.
    Mel(MelArgs),
    /// Fits a RealNVP or Glow to a 2-D toy density and draws data, density and samples.
    Density(DensityArgs),
    /// Prints a WaveGlow's or Glow's blocks: the shapes in and out, and each module's weights
    /// and parameter count.
    Arch(ArchArgs),
}

#[derive(clap::Args, Debug)]
struct TrainArgs {
    /// Training data: wav:DIR for WaveGlow (every .wav in DIR; FSDD names
    /// `{digit}_{speaker}_{take}.wav` keep takes 0-4 for testing, other names every 10th file),
    /// mnist:DIR for Glow (the IDX files; t10k is the test split).
    #[arg(long)]
    data: String,
    /// A preset of models/flow/ (waveglow-8k, waveglow-8k-small, waveglow-22k,
    /// waveglow-22k-small: the text-to-speech vocoder, glow-mnist, glow-mnist-binary); with
    /// --resume it may be left out.
    #[arg(long)]
    preset: Option<String>,
    /// The run folder: config.json, metrics.jsonl, loss.png, checkpoints/, model/.
    #[arg(long)]
    out: PathBuf,
    /// Optimiser steps in total (overrides the preset's).
    #[arg(long)]
    steps: Option<u64>,
    /// Continues the run in --out from its latest checkpoint.
    #[arg(long)]
    resume: bool,
    /// Evaluate (test NLL; Glow: and a sample grid) and checkpoint every this many steps
    /// (default: steps / 5).
    #[arg(long)]
    eval_every: Option<u64>,
    /// WaveGlow: test clips used by each evaluation.
    #[arg(long, default_value_t = 64)]
    eval_clips: usize,
    /// Glow: test images used by each periodic evaluation (the first ones); the final
    /// evaluation uses the whole test split.
    #[arg(long, default_value_t = 1000)]
    eval_images: usize,
    /// Prints one JSON object per logged step and per evaluation on stdout instead of a progress bar.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct VocodeArgs {
    /// The WaveGlow model folder (config.json + model.safetensors).
    #[arg(long, value_parser = model_arg)]
    model: PathBuf,
    /// A WAV file (its log-mel is vocoded: copy synthesis) or a safetensors file with a "mel"
    /// tensor, (n_mels, frames) or (1, n_mels, frames), natural-log mel magnitudes.
    #[arg(long)]
    input: PathBuf,
    /// Standard deviation of the noise z (WaveGlow's inference sigma; 0 is deterministic).
    #[arg(long, default_value_t = 0.6)]
    sigma: f64,
    /// Denoiser strength: subtracts this much of the model's bias spectrum (0 = off; NVIDIA
    /// suggests 0.01 to 0.1).
    #[arg(long, default_value_t = 0.0)]
    denoiser: f64,
    /// The WAV file to write (a .wav name; 16-bit PCM at the model's rate).
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args, Debug)]
struct EvalArgs {
    /// The model folder (WaveGlow or Glow).
    #[arg(long, value_parser = model_arg)]
    model: PathBuf,
    /// The data whose test split is used (as in `zoo flow train`): wav:DIR for WaveGlow,
    /// mnist:DIR for Glow.
    #[arg(long)]
    data: String,
    /// WaveGlow: test clips to use (the first ones in sorted order; default: all).
    #[arg(long)]
    clips: Option<usize>,
    /// Glow: test images to use (the first ones; default: all 10,000).
    #[arg(long)]
    images: Option<usize>,
    /// Glow: temperature of the sample grid written into --out.
    #[arg(long, default_value_t = 0.7)]
    temperature: f64,
    /// Inference sigma.
    #[arg(long, default_value_t = 0.6)]
    sigma: f64,
    /// Denoiser strength (0 = off).
    #[arg(long, default_value_t = 0.0)]
    denoiser: f64,
    /// Folder for real/vocoded WAVs and spectrogram pictures of the first --examples clips
    /// (Glow: for samples.png, a grid of 64 samples).
    #[arg(long)]
    out: Option<PathBuf>,
    /// How many clips to write into --out.
    #[arg(long, default_value_t = 3)]
    examples: usize,
    /// Prints one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct SampleArgs {
    /// The Glow model folder.
    #[arg(long, value_parser = model_arg)]
    model: PathBuf,
    /// Images to draw.
    #[arg(long, default_value_t = 64)]
    num_samples: i64,
    /// Standard deviation of the latents relative to the priors' (openai/glow's eps_std; 1 is the
    /// model's own distribution, lower gives cleaner, less varied samples).
    #[arg(long, default_value_t = 0.7)]
    temperature: f64,
    /// The grid image (.png or .jpg).
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args, Debug)]
struct MelArgs {
    /// The WAV file.
    #[arg(long)]
    input: PathBuf,
    /// The picture (.png or .jpg): time left to right, low bands at the bottom.
    #[arg(long)]
    out: PathBuf,
    /// Take the mel settings of this WaveGlow model folder (default: WaveGlow's 22.05 kHz front
    /// end for 22.05 kHz files, else 80 mels up to the Nyquist frequency, FFT 1024, hop 256).
    #[arg(long, value_parser = model_arg)]
    model: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct DensityArgs {
    /// The toy density: two-moons or rings.
    #[arg(long)]
    preset: String,
    /// The flow: glow (ActNorm, LU 1x1 conv, coupling) or realnvp (couplings and reversals).
    #[arg(long, default_value = "glow")]
    flow: String,
    /// Flow steps.
    #[arg(long, default_value_t = 8)]
    depth: i64,
    /// Optimiser steps (Adam, full batch of 2048 points).
    #[arg(long, default_value_t = 1500)]
    steps: u64,
    /// The picture: data histogram, model density, histogram of model samples.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(g: &Global, a: Args) -> Result<()> {
    match a.command {
        Command::Train(a) => train(g, a),
        Command::Vocode(a) => vocode(g, a),
        Command::Eval(a) => eval(g, a),
        Command::Sample(a) => sample(g, a),
        Command::Mel(a) => mel(g, a),
        Command::Density(a) => density(g, a),
        Command::Arch(a) => arch(a),
    }
}

/// A flow preset: WaveGlow's layout, or Glow's (a file with `glow_config`).
enum FlowPreset {
    WaveGlow(ModelFile),
    Glow(GlowFile),
}

fn resolve_preset(name: &str) -> Result<FlowPreset> {
    let p = presets::find_preset("flow", name)?;
    let text = presets::read(&p.path)?;
    let v: Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", p.path.display()))?;
    Ok(if GlowFile::is_glow_json(&v) {
        FlowPreset::Glow(GlowFile::from_json_file(&p.path)?)
    } else {
        FlowPreset::WaveGlow(ModelFile::from_json_file(&p.path)?)
    })
}

fn train(g: &Global, a: TrainArgs) -> Result<()> {
    let spec: DataSpec = a.data.parse()?;
    // 1. the recipe: the preset's, or the run's own on --resume
    let (preset_name, preset) = match (&a.preset, a.resume) {
        (Some(name), _) => (name.clone(), resolve_preset(name)?),
        (None, true) => {
            let cfg = RunDir::open(&a.out)?.config()?;
            let name = cfg["preset"].as_str().unwrap_or("").to_string();
            if cfg.get("glow_file").is_some() {
                let f: GlowFile = serde_json::from_value(cfg["glow_file"].clone())
                    .with_context(|| format!("{}: config.json has no valid glow_file", a.out.display()))?;
                (name, FlowPreset::Glow(f))
            } else {
                let f: ModelFile = serde_json::from_value(cfg["model_file"].clone())
                    .with_context(|| format!("{}: config.json has no valid model_file", a.out.display()))?;
                (name, FlowPreset::WaveGlow(f))
            }
        }
        (None, false) => bail!("--preset is required for a new run (see models/flow/)"),
    };
    let file = match preset {
        FlowPreset::Glow(f) => return train_glow(g, a, spec, preset_name, f),
        FlowPreset::WaveGlow(f) => f,
    };
    let DataSpec::Wav(dir) = &spec else {
        bail!("--data {spec}: WaveGlow presets train on audio: use wav:DIR");
    };
    g.f32_training("zoo flow train")?;
    let opts = zoo_flow::train::TrainOptions {
        wavs: dir.clone(),
        file,
        preset: preset_name,
        out: a.out.clone(),
        steps: a.steps,
        eval_every: a.eval_every,
        eval_clips: a.eval_clips,
        resume: a.resume,
        seed: g.seed,
        device: g.device()?,
    };
    let done = zoo_flow::train::train(&opts, g.reporter(a.json).as_mut(), &mut |p| {
        g.note(format!(
            "flow train: {} ({:.2}M parameters) on {} ({} train / {} test clips), {} steps{} of batch {} x {} samples",
            if opts.preset.is_empty() { "resumed run" } else { &opts.preset },
            p.params as f64 / 1e6,
            spec,
            p.train_clips,
            p.test_clips,
            p.steps,
            if p.start > 0 { format!(" from step {}", p.start) } else { String::new() },
            opts.file.train_config.batch_size,
            opts.file.data_config.segment_length,
        ))
    })?;
    let Some(model_dir) = &done.model else {
        g.note(format!("stopped at step {}; continue with --resume", done.steps));
        return Ok(());
    };
    g.note(format!(
        "done in {:.0} s; test NLL {} bits/sample; model in {}",
        done.seconds,
        done.test_nll_bits.map_or("n/a".into(), |b| format!("{b:.3}")),
        model_dir.display()
    ));
    Ok(())
}

/// A mel from a safetensors file: the "mel" tensor (or the only one), as (1, M, F).
fn read_mel(path: &Path) -> Result<Tensor> {
    let f = zoo_core::weights::SafetensorsFile::open(path)?;
    let infos = f.infos()?;
    let name = if infos.iter().any(|i| i.name == "mel") {
        "mel".to_string()
    } else if let [only] = &infos[..] {
        only.name.clone()
    } else {
        bail!("{}: no tensor named \"mel\" (found {} tensors)", path.display(), infos.len());
    };
    let t = f.tensor(&name)?.f_to_kind(Kind::Float)?;
    Ok(match t.size()[..] {
        [m, fr] => t.f_reshape([1, m, fr])?,
        [1, _, _] => t,
        ref s => {
            bail!("{}: \"{name}\" must be (n_mels, frames) or (1, n_mels, frames), got {s:?}", path.display())
        }
    })
}

fn is_wav(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("wav"))
}

/// Mel frames `zoo flow vocode` inverts at a time (about 12 s at 22.05 kHz).
const VOCODE_CHUNK: i64 = 1024;

fn vocode(g: &Global, a: VocodeArgs) -> Result<()> {
    if !(a.sigma.is_finite() && a.sigma >= 0.0 && a.denoiser.is_finite() && a.denoiser >= 0.0) {
        bail!("--sigma and --denoiser must be numbers >= 0");
    }
    if !is_wav(&a.out) {
        bail!("--out {}: vocode writes a WAV file; give a name ending in .wav", a.out.display());
    }
    let device = g.device()?;
    let v = Vocoder::load(&a.model, device, g.dtype.kind())?;
    let mel_cfg = v.file.mel_config();
    let sr = mel_cfg.sample_rate;
    let (mel, n) = if is_wav(&a.input) {
        let clip = audio::read_wav_mono(&a.input)?;
        let mut x = clip.samples.f_reshape([-1])?;
        if clip.sample_rate != sr {
            g.note(format!("resampling {} Hz -> {sr} Hz", clip.sample_rate));
            x = audio::resample(&x, clip.sample_rate, sr)?;
        }
        let fe = MelSpectrogram::new(&mel_cfg, device)?;
        let mel = fe.forward(&x.f_unsqueeze(0)?).with_context(|| a.input.display().to_string())?;
        (mel, Some(x.size()[0]))
    } else {
        (read_mel(&a.input)?.f_to_device(device)?, None)
    };
    zoo_core::seed::seed_all(g.seed);
    let t0 = Instant::now();
    // A chunk of frames at a time (exactly the whole inverse): a long mel needs the memory of
    // one chunk, and the bar shows how far it is.
    let frames = mel.size()[2];
    let z = v.model.draw_z(mel.size()[0], frames, a.sigma)?;
    let bar = (!g.quiet && frames > VOCODE_CHUNK).then(|| {
        let b = indicatif::ProgressBar::new(frames as u64);
        let style =
            indicatif::ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} mel frames ETA {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        b.set_style(style);
        b
    });
    let y = tch::no_grad(|| {
        v.model.inverse_chunked(&mel, &z, VOCODE_CHUNK, |done, _| {
            if let Some(b) = &bar {
                b.set_position(done as u64);
            }
        })
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let mut y = y?.f_to_kind(Kind::Float)?;
    if a.denoiser > 0.0 {
        y = Denoiser::new(&v.model)?.forward(&y, a.denoiser)?;
    }
    if let Some(n) = n {
        y = y.f_narrow(1, 0, n)?;
    }
    let secs = t0.elapsed().as_secs_f64();
    let samples = y.f_clamp(-1.0, 1.0)?.f_to_device(Device::Cpu)?;
    let len = samples.size()[1];
    audio::write_wav(&a.out, &Audio::new(samples, sr)?, WavFormat::Pcm16)?;
    let dur = len as f64 / f64::from(sr);
    g.note(format!(
        "vocoded {} mel frames -> {:.2} s at {sr} Hz in {secs:.2} s (real-time factor {:.3}); wrote {}",
        mel.size()[2],
        dur,
        secs / dur.max(1e-9),
        a.out.display()
    ));
    Ok(())
}

fn eval(g: &Global, a: EvalArgs) -> Result<()> {
    let spec: DataSpec = a.data.parse()?;
    if is_glow_folder(&a.model) {
        return eval_glow(g, a, spec);
    }
    let DataSpec::Wav(dir) = &spec else {
        bail!("--data {spec}: zoo flow eval of a WaveGlow reads audio: use wav:DIR");
    };
    let device = g.device()?;
    let v = Vocoder::load(&a.model, device, Kind::Float)?;
    let sr = v.file.data_config.sampling_rate;
    let (_, mut test) = load_wav_dir(dir, sr)?;
    if let Some(n) = a.clips {
        test.truncate(n.max(1));
    }
    let fe = MelSpectrogram::new(&v.file.mel_config(), device)?;
    let den = if a.denoiser > 0.0 { Some(Denoiser::new(&v.model)?) } else { None };
    zoo_core::seed::seed_all(g.seed);
    let (mut l1, mut mcd, mut secs, mut dur, mut used) = (0.0, 0.0, 0.0, 0.0, 0usize);
    // (real, vocoded) voicing sums and the clips long enough for it
    let (mut voiced_real, mut voiced_fake, mut voiced_n) = (0.0, 0.0, 0usize);
    if let Some(out) = &a.out {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    }
    for (i, c) in test.iter().enumerate() {
        let x = c.samples.f_to_device(device)?;
        if x.size()[0] <= v.file.mel_config().n_fft / 2 {
            continue;
        }
        let t0 = Instant::now();
        let y = zoo_flow::train::copy_synthesis(&v, &fe, &x, a.sigma, den.as_ref().map(|d| (d, a.denoiser)))?;
        secs += t0.elapsed().as_secs_f64();
        dur += x.size()[0] as f64 / f64::from(sr);
        let (mr, mv) = (fe.forward(&x)?, fe.forward(&y)?);
        l1 += zoo_flow::train::log_mel_l1(&mr, &mv)?;
        // c1..c13, or as many as fewer mel bands allow
        let n_ceps = 13.min(mr.size()[0] - 1);
        mcd += zoo_flow::train::mel_cepstral_distortion(&mr, &mv, n_ceps)?;
        let rate = i64::from(sr);
        if let (Some(r), Some(f)) =
            (zoo_flow::train::voicing(&x, &x, rate)?, zoo_flow::train::voicing(&y, &x, rate)?)
        {
            (voiced_real, voiced_fake, voiced_n) = (voiced_real + r, voiced_fake + f, voiced_n + 1);
        }
        used += 1;
        if let (Some(out), true) = (&a.out, i < a.examples) {
            let stem = c.name.trim_end_matches(".wav");
            for (tag, w, m) in [("real", &x, &mr), ("vocoded", &y, &mv)] {
                let wav = Audio::new(w.f_clamp(-1.0, 1.0)?.f_to_device(Device::Cpu)?, sr)?;
                audio::write_wav(&out.join(format!("{stem}-{tag}.wav")), &wav, WavFormat::Pcm16)?;
                save_mel_picture(m, &out.join(format!("{stem}-{tag}.png")), 4)?;
            }
        }
    }
    if used == 0 {
        bail!("no test clip is long enough to vocode");
    }
    let task = WaveGlowTask::new(&v, &[], &test, device)?;
    let (bits, bits16) = task.nll_bits(&test)?;
    let mean_voicing = |sum: f64| (voiced_n > 0).then(|| sum / voiced_n as f64);
    let (vr, vf) = (mean_voicing(voiced_real), mean_voicing(voiced_fake));
    let r = json!({
        "clips": used, "sigma": a.sigma, "denoiser": a.denoiser,
        "log_mel_l1": l1 / used as f64, "mcd_db": mcd / used as f64,
        "voicing_real": vr, "voicing_vocoded": vf,
        "nll_bits_per_sample": bits, "nll_bits_per_pcm16_sample": bits16,
        "real_time_factor": secs / dur,
    });
    if a.json {
        println!("{r}");
    } else {
        let voicing = match (vr, vf) {
            (Some(r), Some(f)) => format!(", voicing {f:.3} (real {r:.3})"),
            _ => String::new(),
        };
        println!(
            "{used} test clips: log-mel L1 {:.3}, MCD {:.2} dB{voicing}, NLL {bits:.3} bits/sample ({bits16:.2} bits per 16-bit sample), real-time factor {:.3}",
            l1 / used as f64,
            mcd / used as f64,
            secs / dur
        );
    }
    Ok(())
}

/// Whether `dir/config.json` is a Glow model's (has `glow_config`).
fn is_glow_folder(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join(zoo_flow::waveglow::CONFIG_FILE))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .is_some_and(|v| GlowFile::is_glow_json(&v))
}

/// The MNIST folder of a Glow command's --data.
fn mnist_dir(spec: &DataSpec) -> Result<&Path> {
    match spec {
        DataSpec::Mnist(dir) => Ok(dir),
        other => bail!("--data {other}: Glow models train and evaluate on MNIST: use mnist:DIR"),
    }
}

fn check_temperature(t: f64) -> Result<()> {
    if !(t.is_finite() && t >= 0.0) {
        bail!("--temperature must be a number >= 0, got {t}");
    }
    Ok(())
}

/// `zoo flow train` with a Glow preset: MNIST, zoo-core's Trainer, test bits/dim and a sample
/// grid at every evaluation, the model in <out>/model/, the whole test split in <out>/eval.json.
fn train_glow(g: &Global, a: TrainArgs, spec: DataSpec, preset: String, file: GlowFile) -> Result<()> {
    g.f32_training("zoo flow train")?;
    if a.eval_images == 0 {
        bail!("--eval-images must be at least 1");
    }
    let opts = zoo_flow::glow_train::TrainOptions {
        mnist: mnist_dir(&spec)?.to_path_buf(),
        file,
        preset,
        out: a.out.clone(),
        steps: a.steps,
        eval_every: a.eval_every,
        eval_images: a.eval_images,
        resume: a.resume,
        seed: g.seed,
        device: g.device()?,
    };
    let c = &opts.file.glow_config;
    let done = zoo_flow::glow_train::train(&opts, g.reporter(a.json).as_mut(), &mut |p| {
        g.note(format!(
            "flow train: {} (Glow, {} levels x {} steps, width {}, {:.2}M parameters) on {} ({} train / {} test images), {} steps{} of batch {}",
            if opts.preset.is_empty() { "resumed run" } else { &opts.preset },
            c.n_levels,
            c.depth,
            c.width,
            p.params as f64 / 1e6,
            spec,
            p.train_images,
            p.test_images,
            p.steps,
            if p.start > 0 { format!(" from step {}", p.start) } else { String::new() },
            opts.file.train_config.batch_size,
        ))
    })?;
    let Some(model_dir) = &done.model else {
        g.note(format!("stopped at step {}; continue with --resume", done.steps));
        return Ok(());
    };
    let v = &done.summary;
    if a.json {
        println!("{v}");
    } else {
        println!(
            "test: {:.4} bits/dim ({:.1} nats/image) on {} images; trained in {:.0} s; model in {}",
            v["test_bits_per_dim"].as_f64().unwrap_or(f64::NAN),
            v["test_nll_nats"].as_f64().unwrap_or(f64::NAN),
            v["test_images"],
            v["train_seconds"].as_f64().unwrap_or(f64::NAN),
            model_dir.display()
        );
    }
    Ok(())
}

/// `zoo flow eval` of a Glow model folder: test bits/dim (and a sample grid with --out).
fn eval_glow(g: &Global, a: EvalArgs, spec: DataSpec) -> Result<()> {
    let dir = mnist_dir(&spec)?;
    check_temperature(a.temperature)?;
    let glow = GlowModel::load(&a.model, g.device()?)?;
    let (_, test) = load_mnist(dir, &glow.file.glow_config)?;
    let n = test.size()[0].min(a.images.map_or(i64::MAX, |n| n.max(1) as i64));
    let t0 = Instant::now();
    let bits = glow.test_bits_per_dim(&test.f_narrow(0, 0, n)?)?;
    let secs = t0.elapsed().as_secs_f64();
    let d = glow.file.glow_config.n_dims() as f64;
    let mut r = json!({
        "test_images": n, "test_bits_per_dim": bits, "test_nll_nats": bits * d * std::f64::consts::LN_2,
        "binarized": glow.file.data_config.binarize, "seconds": secs,
    });
    if let Some(out) = &a.out {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let p = out.join("samples.png");
        glow.write_samples(64, a.temperature, &p)?;
        r["samples"] = json!(p.display().to_string());
    }
    if a.json {
        println!("{r}");
    } else {
        println!(
            "{n} test images: {bits:.4} bits/dim ({:.1} nats/image) in {secs:.1} s",
            bits * d * std::f64::consts::LN_2
        );
    }
    Ok(())
}

fn sample(g: &Global, a: SampleArgs) -> Result<()> {
    if a.num_samples < 1 {
        bail!("--num-samples must be at least 1, got {}", a.num_samples);
    }
    check_temperature(a.temperature)?;
    if !is_glow_folder(&a.model) {
        bail!("{} is not a Glow model folder (no config.json with glow_config)", a.model.display());
    }
    let glow = GlowModel::load(&a.model, g.device()?)?;
    zoo_core::image::image_format(&a.out)?;
    // the seed picks the latents: same --seed, same grid
    tch::manual_seed(g.seed as i64);
    let y = tch::no_grad(|| glow.model.sample(a.num_samples, a.temperature, glow.vs.device()))?;
    let img = glow.model.postprocess(&y)?.f_to_device(Device::Cpu)?;
    zoo_core::image::save_image(&img, &a.out)?;
    g.note(format!("{} samples at temperature {} -> {}", a.num_samples, a.temperature, a.out.display()));
    Ok(())
}

/// The mel settings for a file at `sample_rate` without a model: WaveGlow's at 22.05 kHz, else
/// speech_8k's geometry with the filters up to Nyquist.
fn default_mel(sample_rate: u32) -> MelConfig {
    if sample_rate == 22050 {
        MelConfig::waveglow_22k()
    } else {
        MelConfig { sample_rate, fmax: None, ..MelConfig::speech_8k() }
    }
}

/// Saves a (M, F) log-mel as a picture, each cell `scale` pixels.
fn save_mel_picture(mel: &Tensor, path: &Path, scale: u32) -> Result<()> {
    let img = audio::spectrogram_image(&mel.f_to_device(Device::Cpu)?)?;
    let (w, h) = (img.width() * scale, img.height() * scale);
    let img = image::imageops::resize(&img, w, h, image::imageops::FilterType::Nearest);
    zoo_core::image::save_picture(&image::DynamicImage::ImageRgb8(img), path)?;
    Ok(())
}

fn mel(g: &Global, a: MelArgs) -> Result<()> {
    let clip = audio::read_wav_mono(&a.input)?;
    let cfg = match &a.model {
        Some(dir) => ModelFile::from_json_file(&dir.join(zoo_flow::waveglow::CONFIG_FILE))?.mel_config(),
        None => default_mel(clip.sample_rate),
    };
    let mut x = clip.samples.f_reshape([-1])?;
    if clip.sample_rate != cfg.sample_rate {
        x = audio::resample(&x, clip.sample_rate, cfg.sample_rate)?;
    }
    let m =
        MelSpectrogram::new(&cfg, Device::Cpu)?.forward(&x).with_context(|| a.input.display().to_string())?;
    save_mel_picture(&m, &a.out, 3)?;
    g.note(format!(
        "log-mel {:?} ({} Hz, hop {}) -> {}",
        m.size(),
        cfg.sample_rate,
        cfg.hop_length,
        a.out.display()
    ));
    Ok(())
}

fn density(g: &Global, a: DensityArgs) -> Result<()> {
    let toy: Toy = a.preset.parse()?;
    let kind: Kind2d = a.flow.parse()?;
    if !(1..=64).contains(&a.depth) {
        bail!("--depth must be 1..=64, got {}", a.depth);
    }
    let device = g.device()?;
    let vs = tch::nn::VarStore::new(device);
    let t0 = Instant::now();
    let bar = g.progress(a.steps, "steps");
    let (flow, data, nll) = fit_density(toy, kind, a.depth, a.steps, g.seed, &vs, &mut |done, total| {
        crate::global::tick(&bar, done, total)
    })?;
    let pic = density_picture(&flow, &data, toy, 200, 20000, device)?;
    zoo_core::image::save_image(&pic, &a.out)?;
    g.note(format!(
        "{} on {}: NLL {nll:.3} nats/point after {} steps in {:.1} s; wrote {} (data | density | samples)",
        a.flow,
        a.preset,
        a.steps,
        t0.elapsed().as_secs_f64(),
        a.out.display()
    ));
    Ok(())
}

fn arch(a: ArchArgs) -> Result<()> {
    let cpu = Device::Cpu;
    tch::manual_seed(0);
    let preset = a.preset.as_deref().map(resolve_preset).transpose()?;
    let model = a.model_dir("flow");
    let glow_dir = model.as_deref().filter(|d| is_glow_folder(d));
    let (title, vs, ends): (String, &tch::nn::VarStore, [(String, Vec<i64>); 2]);
    let (glow, vocoder);
    if let (Some(FlowPreset::Glow(_)), _) | (None, Some(_)) = (&preset, glow_dir) {
        glow = match (&preset, glow_dir) {
            (Some(FlowPreset::Glow(f)), _) => GlowModel::new(f, cpu)?,
            (_, Some(d)) => GlowModel::load(d, cpu)?,
            _ => unreachable!(),
        };
        let c = &glow.file.glow_config;
        let x = Tensor::f_zeros([1, c.in_channels, c.image_size, c.image_size], (Kind::Float, cpu))?;
        let (zs, _) = tch::no_grad(|| glow.model.forward(&x))?;
        let latents: Vec<String> = zs.iter().map(|z| format!("{:?}", z.size())).collect();
        title = format!("Glow: {} levels of {} steps, coupling width {}", c.n_levels, c.depth, c.width);
        vs = &glow.vs;
        ends = [
            ("image".into(), x.size()),
            (format!("latents, one per level: {}", latents.join(" + ")), vec![]),
        ];
    } else {
        vocoder = match (&preset, &model) {
            (Some(FlowPreset::WaveGlow(f)), _) => Vocoder::new(f, cpu)?,
            (None, Some(d)) => Vocoder::load(d, cpu, Kind::Float)?,
            _ => bail!("give --model DIR or --preset NAME"),
        };
        let c = &vocoder.model.cfg;
        let frames = 4;
        let mel = Tensor::f_zeros([1, c.n_mel_channels, frames], (Kind::Float, cpu))?;
        let audio = tch::no_grad(|| vocoder.model.infer(&mel, 0.0))?;
        title = format!(
            "WaveGlow: {} flows of {} WN layers, {} channels, groups of {}",
            c.n_flows, c.wn_config.n_layers, c.wn_config.n_channels, c.n_group
        );
        vs = &vocoder.vs;
        ends = [("mel (4 frames)".into(), mel.size()), ("audio".into(), audio.size())];
    }
    let vars: Vec<(String, Vec<i64>)> =
        vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).map(|(n, t)| (n, t.size())).collect();
    let total: i64 = vars.iter().map(|(_, s)| s.iter().product::<i64>()).sum();
    let shape = |s: &[i64]| if s.is_empty() { String::new() } else { format!("{s:?}") };
    let mut parts = vec![Part::new(0, ends[0].0.clone(), shape(&ends[0].1), None)];
    parts.extend(module_rows(&vars, 3, |_| true));
    parts.push(Part::new(0, ends[1].0.clone(), shape(&ends[1].1), None));
    if a.json {
        let rows: Vec<Value> =
            parts.iter().map(|p| json!({"name": p.name, "shape": p.shape, "params": p.params})).collect();
        println!("{}", json!({"model": title, "parts": rows, "params": total}));
        return Ok(());
    }
    print!("{}", render(&format!("{title} (trainable parameters)"), &parts, total));
    Ok(())
}

/// The flow part of `zoo demo`: a Glow fitted to two moons for a few hundred steps (its
/// density and samples), and the log-mel of a chirp through the WaveGlow front end.
pub fn demo(g: &Global, dir: &Path, device: Device) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let t0 = Instant::now();
    let vs = tch::nn::VarStore::new(device);
    let steps = 300;
    let bar = g.progress(steps, "steps");
    let (flow, data, nll) =
        fit_density(Toy::TwoMoons, Kind2d::Glow, 6, steps, g.seed, &vs, &mut |done, total| {
            crate::global::tick(&bar, done, total)
        })?;
    let p = dir.join("two-moons-density.png");
    zoo_core::image::save_image(&density_picture(&flow, &data, Toy::TwoMoons, 160, 20000, device)?, &p)?;
    g.note(format!(
        "flow: Glow (6 steps) fitted to two moons, {steps} Adam steps in {:.1} s: NLL {nll:.3} nats/point; \
         picture = data | model density | model samples",
        t0.elapsed().as_secs_f64()
    ));
    let mut written = vec![p];
    // The shipped MNIST Glow: 64 digits at temperature 0.7 (no training at demo time).
    match zoo_core::presets::shipped_model("flow", DEMO_GLOW) {
        Some(model) => {
            let glow = GlowModel::load(&model, device)?;
            tch::manual_seed(g.seed as i64);
            let t0 = Instant::now();
            let y = tch::no_grad(|| glow.model.sample(64, 0.7, device))?;
            let img = glow.model.postprocess(&y)?.f_to_device(Device::Cpu)?;
            let secs = t0.elapsed().as_secs_f64();
            let p = dir.join("glow-digits.png");
            zoo_core::image::save_image(&img, &p)?;
            written.push(p);
            g.note(format!(
                "flow: {} drew 64 digits at temperature 0.7 in {secs:.2} s. Scores: {}",
                model.display(),
                model.join("README.md").display()
            ));
        }
        None => g.note(format!(
            "flow: no shipped {DEMO_GLOW} in {}, so no Glow digits",
            zoo_core::presets::models_dir().join("flow").display()
        )),
    }
    Ok(written)
}

/// The shipped MNIST Glow the demo samples (`models/flow/NAME/`).
pub const DEMO_GLOW: &str = "glow-mnist";

/// `--model`: a flow model folder, or the name of a shipped one (`models/flow/NAME/`).
fn model_arg(s: &str) -> std::result::Result<PathBuf, String> {
    crate::global::model_folder("flow", s)
}
