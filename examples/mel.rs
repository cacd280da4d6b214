//! Log-mel spectrogram of a WAV file, drawn as a PNG: zoo-core's audio front end on its own.
//!
//! ```sh
//! cargo run -p zoo-examples --example mel -- speech.wav mel.png
//! cargo run -p zoo-examples --example mel -- ../shared/data/fsdd/0_george_0.wav mel.png
//! ```
//!
//! The WAV is mixed down to mono and resampled to 22.05 kHz, then goes through the mel front end
//! WaveGlow uses (1024-point STFT, hop 256, 80 Slaney mel bands up to 8 kHz, log).
use std::path::PathBuf;

use anyhow::{bail, Result};
use zoo_core::audio::{self, MelConfig, MelSpectrogram};

fn main() -> Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [wav, out] = args.as_slice() else {
        bail!("usage: mel IN.wav OUT.png");
    };
    let cfg = MelConfig::waveglow_22k();
    let clip = audio::read_wav_mono(wav)?;
    let samples = audio::resample(&clip.samples, clip.sample_rate, cfg.sample_rate)?;
    let mel = MelSpectrogram::new(&cfg, tch::Device::Cpu)?.forward(&samples.squeeze_dim(0))?;
    let picture = audio::spectrogram_image(&mel)?;
    zoo_core::image::save_picture(&image::DynamicImage::ImageRgb8(picture), out)?;
    println!(
        "{}: {:.2} s -> log-mel {:?} -> {}",
        wav.display(),
        clip.duration_secs(),
        mel.size(),
        out.display()
    );
    Ok(())
}
