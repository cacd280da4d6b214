//! `zoo demo`: every family's demo, writing what it makes under `out/demo/`.
//!
//! Each part runs on the trained models shipped in `models/` (the conditional GAN's digits, the
//! VAE's samples and reconstructions, Glow's digits, the Shakespeare model's play, text to
//! image, speech), with no training and no dataset; a part whose model is not shipped says so
//! and is skipped. The core's part draws a chirp's log-mel spectrogram and the procedural
//! shapes dataset; the diffusion part still trains its tiny UNet for a few seconds.
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use zoo_core::audio::{self, Audio, MelConfig, MelSpectrogram, WavFormat};
use zoo_core::report;

use crate::global::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Folder for the demo's output (one sub-folder per part, and report.html).
    #[arg(long, default_value = "out/demo")]
    out: PathBuf,
}

/// A part of the demo: writes into its folder and returns the files it wrote.
type Part = fn(&Global, &Path, tch::Device) -> Result<Vec<PathBuf>>;

/// Every part, in order: (name = sub-folder of --out, title in the report, function, the
/// shipped models it runs as (family, name)). Each family adds its line.
/// Shipped models a part runs, as (family, name).
type Shipped = &'static [(&'static str, &'static str)];

const PARTS: &[(&str, &str, Part, Shipped)] = &[
    ("core", "The shared core: audio front end and data", core_demo, &[]),
    ("gan", "GAN: a conditional DCGAN draws digits", super::gan::demo, &[("gan", super::gan::DEMO_MODEL)]),
    (
        "vae",
        "VAE: samples, latent walks, reconstructions",
        super::vae::demo,
        &[("vae", super::vae::DEMO_MODEL)],
    ),
    ("flow", "Flows: Glow on two moons and on MNIST", super::flow::demo, &[("flow", super::flow::DEMO_GLOW)]),
    (
        "llm",
        "LLM: a character-level GPT-2 writes a play",
        super::llm::demo,
        &[("llm", super::llm::DEMO_MODEL)],
    ),
    ("diffusion", "Diffusion: a tiny class-conditional UNet", super::diffusion::demo, &[]),
    ("txt2img", "Text to image", super::txt2img::demo, &[("txt2img", super::txt2img::DEMO_MODEL)]),
    ("tts", "Text to speech", super::tts::demo, &[("tts", super::tts::DEFAULT_MODEL)]),
];

pub fn run(g: &Global, a: Args) -> Result<()> {
    let device = g.device()?;
    let t0 = Instant::now();
    let mut count = 0;
    let mut page = report::Page {
        title: "zoo demo".into(),
        intro: vec![format!(
            "Every family of zoo at work on the models shipped in {}, on {} ({} libtorch thread(s)), seed {}. \
             Each section says what its model made and how fast; open a model card for its recipe and scores.",
            zoo_core::presets::models_dir().display(),
            if device == tch::Device::Cpu { "the CPU".to_string() } else { format!("{device:?}") },
            tch::get_num_threads(),
            g.seed
        )],
        sections: Vec::new(),
    };
    g.record_notes();
    for (name, title, part, models) in PARTS {
        // Each part starts from the same seed, so its output does not depend on the others.
        zoo_core::seed::seed_all(g.seed);
        let t = Instant::now();
        let written = part(g, &a.out.join(name), device).with_context(|| format!("demo part '{name}'"))?;
        let secs = t.elapsed().as_secs_f64();
        for p in &written {
            println!("{}", p.display());
        }
        let lines = g.take_notes();
        g.note(format!("{name}: {} files in {secs:.1} s", written.len()));
        let _ = g.take_notes();
        page.sections.push(section(title, lines, secs, &written, models)?);
        count += written.len();
    }
    let html = a.out.join("report.html");
    report::write(&page, &html)?;
    println!("{}", html.display());
    g.note(format!(
        "demo done in {:.1} s: {} files under {}; open {} to see them side by side",
        t0.elapsed().as_secs_f64(),
        count + 1,
        a.out.display(),
        html.display()
    ));
    Ok(())
}

/// A part's section of the report: its notes, its time, each shipped model's size and card
/// (and training curve when the model folder has one), and the pictures, audio and text it wrote.
fn section(
    title: &str,
    lines: Vec<String>,
    secs: f64,
    written: &[PathBuf],
    models: &[(&str, &str)],
) -> Result<report::Section> {
    let mut s = report::Section { title: title.to_string(), lines, ..Default::default() };
    s.facts.push(("time in this demo".into(), format!("{secs:.1} s")));
    for p in written.iter().filter(|p| p.is_file()) {
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ["png", "jpg", "wav", "txt"].contains(&ext) {
            let caption = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            s.items.push(report::Item::File { path: p.clone(), caption });
        }
    }
    for (family, name) in models {
        let Some(dir) = zoo_core::presets::shipped_model(family, name) else { continue };
        let (params, bytes) = weights_size(&dir)?;
        s.facts.push((
            format!("model {family}/{name}"),
            format!("{} parameters, {:.2} MB of weights", zoo_llm::arch::commas(params), bytes as f64 / 1e6),
        ));
        let curve = dir.join("loss.png");
        if curve.is_file() {
            s.items.push(report::Item::File { path: curve, caption: format!("{name}: training loss") });
        }
        if let Ok(card) = std::fs::read_to_string(dir.join("README.md")) {
            s.items
                .push(report::Item::Markdown { title: format!("model card: {family}/{name}"), text: card });
        }
    }
    Ok(s)
}

/// Parameters and bytes of every .safetensors file in a model folder, sub-folders included.
fn weights_size(dir: &Path) -> Result<(i64, u64)> {
    let (mut params, mut bytes) = (0i64, 0u64);
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            let (n, b) = weights_size(&p)?;
            params += n;
            bytes += b;
        } else if p.extension().is_some_and(|x| x == "safetensors") {
            let f = zoo_core::weights::SafetensorsFile::open(&p)?;
            params += f.infos()?.iter().map(|i| i.numel() as i64).sum::<i64>();
            bytes += std::fs::metadata(&p)?.len();
        }
    }
    Ok((params, bytes))
}

/// The core's part: audio front end and image I/O, on data the program makes itself.
fn core_demo(g: &Global, dir: &Path, device: tch::Device) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();

    // 1. A 3 s linear sweep, 100 Hz to 8 kHz, at the 22.05 kHz of WaveGlow's front end.
    let cfg = MelConfig::waveglow_22k();
    let wave = audio::chirp(cfg.sample_rate, 3.0, 100.0, 8000.0);
    let wav_path = dir.join("chirp.wav");
    let clip = Audio::new(wave.shallow_clone(), cfg.sample_rate)?;
    audio::write_wav(&wav_path, &clip, WavFormat::Pcm16)?;
    written.push(wav_path);

    // 2. Its log-mel spectrogram, drawn three times larger so the bands are easy to see.
    let mel = MelSpectrogram::new(&cfg, device)?.forward(&wave.to_device(device))?;
    let img = audio::spectrogram_image(&mel.to_device(tch::Device::Cpu))?;
    let (w, h) = (img.width() * 3, img.height() * 3);
    let img = image::imageops::resize(&img, w, h, image::imageops::FilterType::Nearest);
    let mel_path = dir.join("chirp-mel.png");
    zoo_core::image::save_picture(&image::DynamicImage::ImageRgb8(img), &mel_path)?;
    written.push(mel_path);
    g.note(format!(
        "core: chirp 100 Hz -> 8 kHz, {} samples at {} Hz -> log-mel {:?}",
        clip.len(),
        cfg.sample_rate,
        mel.size()
    ));

    // 3. 64 images of the procedural shapes dataset, 8 x 8.
    let (images, _labels) = zoo_core::data::shapes::shapes(64, 32, g.seed);
    let grid_path = dir.join("shapes.png");
    zoo_core::image::save_image(&images, &grid_path)?;
    written.push(grid_path);
    g.note("core: procedural shapes dataset, 64 samples of 32x32");
    Ok(written)
}
