//! Golden test of the mel front end (`zoo_core::audio::mel`) against librosa's Slaney filterbank
//! and WaveGlow's `TacotronSTFT.mel_spectrogram` (torch.stft, magnitude, log clamp at 1e-5).
//!
//! The fixture is made by `tools/make_mel_fixture.py` (re-run it with the project's .venv; the
//! command is in its docstring): per config a test signal, its filterbank and its log-mel.
//! Tolerances: filterbank within 1e-6 of its largest weight (a few f32 ulps), log-mel within
//! 1e-4 absolute.
use std::collections::BTreeMap;

use anyhow::{anyhow, Context, Result};
use tch::{Device, Tensor};
use zoo_core::audio::{mel_filterbank, MelConfig, MelSpectrogram};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/mel");

fn fixture() -> Result<(BTreeMap<String, MelConfig>, BTreeMap<String, Tensor>)> {
    let json = std::fs::read_to_string(format!("{DIR}/configs.json")).context("configs.json")?;
    let meta: serde_json::Value = serde_json::from_str(&json)?;
    let configs = serde_json::from_value(meta["configs"].clone()).context("configs")?;
    let tensors = Tensor::read_safetensors(format!("{DIR}/mel.safetensors"))?.into_iter().collect();
    Ok((configs, tensors))
}

fn get<'a>(t: &'a BTreeMap<String, Tensor>, name: &str) -> Result<&'a Tensor> {
    t.get(name).ok_or_else(|| anyhow!("fixture has no tensor {name}"))
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    anyhow::ensure!(a.size() == b.size(), "shape {:?} != {:?}", a.size(), b.size());
    Ok((a - b).abs().max().double_value(&[]))
}

#[test]
fn presets_are_the_fixture_configs() -> Result<()> {
    let (configs, _) = fixture()?;
    assert_eq!(configs.get("waveglow_22k"), Some(&MelConfig::waveglow_22k()));
    assert_eq!(configs.get("speech_8k"), Some(&MelConfig::speech_8k()));
    assert_eq!(configs.len(), 3, "a config was added to or removed from the fixture");
    Ok(())
}

#[test]
fn filterbank_matches_librosa_slaney() -> Result<()> {
    let (configs, tensors) = fixture()?;
    for (name, c) in &configs {
        let want = get(&tensors, &format!("{name}/filterbank"))?;
        let got = mel_filterbank(c.sample_rate, c.n_fft, c.n_mels, c.fmin, c.fmax_hz());
        let scale = want.abs().max().double_value(&[]);
        let d = max_abs_diff(&got, want)?;
        eprintln!("{name}: filterbank max abs diff {d:.3e} (largest weight {scale:.3e})");
        assert!(d <= 1e-6 * scale, "{name}: filterbank differs by {d:e}");
    }
    Ok(())
}

#[test]
fn log_mel_matches_tacotron_stft() -> Result<()> {
    let (configs, tensors) = fixture()?;
    for (name, c) in &configs {
        let signal = get(&tensors, &format!("{name}/signal"))?;
        let want = get(&tensors, &format!("{name}/mel"))?;
        let mel = MelSpectrogram::new(c, Device::Cpu)?;
        let got = mel.forward(signal)?;
        assert_eq!(got.size(), vec![c.n_mels, c.num_frames(signal.size()[0])]);
        let d = max_abs_diff(&got, want)?;
        eprintln!("{name}: log-mel max abs diff {d:.3e}");
        assert!(d < 1e-4, "{name}: log-mel differs by {d:e}");
        // The batched path gives the same frames.
        let batch = Tensor::stack(&[signal, signal], 0);
        let d = max_abs_diff(&mel.forward(&batch)?.get(1), want)?;
        assert!(d < 1e-4, "{name}: batched log-mel differs by {d:e}");
    }
    Ok(())
}
