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

use crate::global::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Folder for the demo's output (one sub-folder per part).
    #[arg(long, default_value = "out/demo")]
    out: PathBuf,
}

/// A part of the demo: writes into its folder and returns the files it wrote.
type Part = fn(&Global, &Path, tch::Device) -> Result<Vec<PathBuf>>;

/// Every part, in order: (name = sub-folder of --out, function). Each family adds its line.
const PARTS: &[(&str, Part)] = &[
    ("core", core_demo),
    ("vae", super::vae::demo),
    ("llm", super::llm::demo),
    ("gan", super::gan::demo),
    ("flow", super::flow::demo),
    ("diffusion", super::diffusion::demo),
    ("txt2img", super::txt2img::demo),
    ("tts", super::tts::demo),
];

pub fn run(g: &Global, a: Args) -> Result<()> {
    let device = g.device()?;
    let t0 = Instant::now();
    let mut count = 0;
    for (name, part) in PARTS {
        // Each part starts from the same seed, so its output does not depend on the others.
        zoo_core::seed::seed_all(g.seed);
        let t = Instant::now();
        let written = part(g, &a.out.join(name), device).with_context(|| format!("demo part '{name}'"))?;
        for p in &written {
            println!("{}", p.display());
        }
        g.note(format!("{name}: {} files in {:.1} s", written.len(), t.elapsed().as_secs_f64()));
        count += written.len();
    }
    g.note(format!(
        "demo done in {:.1} s: {count} files under {}",
        t0.elapsed().as_secs_f64(),
        a.out.display()
    ));
    Ok(())
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
