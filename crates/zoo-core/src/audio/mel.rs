//! The log-mel front end of WaveGlow and Tacotron 2.
//!
//! Mirrors NVIDIA's `TacotronSTFT.mel_spectrogram` (tacotron2/layers.py, used by WaveGlow's
//! mel2samp.py): a centred STFT with reflect padding and a periodic Hann window
//! (`torch.stft`), the magnitude (not the power), a projection onto librosa's Slaney mel
//! filterbank (`librosa.filters.mel` with its defaults htk=False, norm='slaney'), and
//! `log(clamp(mel, 1e-5))` (their `dynamic_range_compression` with C = 1).
//!
//! `tools/make_mel_fixture.py` re-derives both halves in numpy/PyTorch; `tests/tests/mel_golden.rs`
//! holds this file to them.
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::{Error, Result};

/// Slaney's mel scale (librosa `hz_to_mel`, htk=False): linear below 1 kHz, logarithmic above.
const F_SP: f64 = 200.0 / 3.0;
const MIN_LOG_HZ: f64 = 1000.0;
const MIN_LOG_MEL: f64 = MIN_LOG_HZ / F_SP;

fn logstep() -> f64 {
    6.4f64.ln() / 27.0
}

fn hz_to_mel(hz: f64) -> f64 {
    if hz >= MIN_LOG_HZ {
        MIN_LOG_MEL + (hz / MIN_LOG_HZ).ln() / logstep()
    } else {
        hz / F_SP
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    if mel >= MIN_LOG_MEL {
        MIN_LOG_HZ * (logstep() * (mel - MIN_LOG_MEL)).exp()
    } else {
        F_SP * mel
    }
}

/// The Slaney mel filterbank, as `librosa.filters.mel(sr=sample_rate, n_fft=n_fft,
/// n_mels=n_mels, fmin=fmin, fmax=fmax)` with its defaults (htk=False, norm='slaney').
/// Shapes: -> (n_mels, n_fft / 2 + 1) f32 on the CPU.
///
/// Triangles overlap between neighbouring mel centres; each is scaled by 2 / (its width in Hz)
/// so every filter has the same area. Arguments are not checked here ([`MelConfig::validate`]
/// does); negative sizes give an empty matrix.
pub fn mel_filterbank(sample_rate: u32, n_fft: i64, n_mels: i64, fmin: f64, fmax: f64) -> Tensor {
    let n_mels_u = n_mels.max(0) as usize;
    let n_freqs = if n_fft > 0 { n_fft as usize / 2 + 1 } else { 0 };
    let sr = f64::from(sample_rate);
    // np.fft.rfftfreq(n_fft, d=1/sr), with its order of operations: k * (1 / (n_fft * d)).
    let bin_hz = 1.0 / (n_fft as f64 * (1.0 / sr));
    let fft_hz: Vec<f64> = (0..n_freqs).map(|k| k as f64 * bin_hz).collect();
    // n_mels + 2 points evenly spaced in mel, written as np.linspace computes them (start +
    // i * step, the last point exactly the end) so the edges agree with librosa's to the bit.
    let (lo, hi) = (hz_to_mel(fmin), hz_to_mel(fmax));
    let n_pts = n_mels_u + 2;
    let step = (hi - lo) / (n_pts - 1) as f64;
    let mel_hz: Vec<f64> =
        (0..n_pts).map(|i| if i == n_pts - 1 { hi } else { lo + i as f64 * step }).map(mel_to_hz).collect();

    let mut w = vec![0f32; n_mels_u * n_freqs];
    for m in 0..n_mels_u {
        let (left, centre, right) = (mel_hz[m], mel_hz[m + 1], mel_hz[m + 2]);
        let enorm = 2.0 / (right - left);
        for (k, &f) in fft_hz.iter().enumerate() {
            let rising = (f - left) / (centre - left);
            let falling = (right - f) / (right - centre);
            // librosa stores the triangle in an f32 array before the area scaling, which is
            // done in f64 and rounded again: both roundings are kept to match it exactly.
            let tri = rising.min(falling).max(0.0) as f32;
            w[m * n_freqs + k] = (f64::from(tri) * enorm) as f32;
        }
    }
    Tensor::from_slice(&w).reshape([n_mels_u as i64, n_freqs as i64])
}

/// Settings of the mel front end. Field names follow librosa/torchaudio; the aliases accept the
/// keys of WaveGlow's `config.json` (`data_config` plus `n_mel_channels`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MelConfig {
    #[serde(alias = "sampling_rate")]
    pub sample_rate: u32,
    #[serde(alias = "filter_length")]
    pub n_fft: i64,
    pub hop_length: i64,
    pub win_length: i64,
    #[serde(alias = "n_mel_channels")]
    pub n_mels: i64,
    #[serde(alias = "mel_fmin")]
    pub fmin: f64,
    /// Highest filter edge in Hz; `None` is the Nyquist frequency.
    #[serde(alias = "mel_fmax")]
    pub fmax: Option<f64>,
}

impl MelConfig {
    /// WaveGlow and Tacotron 2 (LJ Speech): 22.05 kHz, 1024-point FFT, hop 256, 80 mels up to
    /// 8 kHz.
    pub fn waveglow_22k() -> Self {
        MelConfig {
            sample_rate: 22050,
            n_fft: 1024,
            hop_length: 256,
            win_length: 1024,
            n_mels: 80,
            fmin: 0.0,
            fmax: Some(8000.0),
        }
    }

    /// Telephone-band speech at 8 kHz: 80 mels up to the Nyquist frequency (4 kHz), with the
    /// STFT geometry of [`MelConfig::waveglow_22k`] (FFT and window 1024, hop 256). Keeping the
    /// hop at 256 lets WaveGlow's upsampler (ConvTranspose1d, kernel 1024, stride 256) be reused
    /// unchanged; the price is a coarser 32 ms hop (128 ms window), which mel vocoders tolerate.
    pub fn speech_8k() -> Self {
        MelConfig {
            sample_rate: 8000,
            n_fft: 1024,
            hop_length: 256,
            win_length: 1024,
            n_mels: 80,
            fmin: 0.0,
            fmax: Some(4000.0),
        }
    }

    /// `fmax`, or the Nyquist frequency when it is `None`.
    pub fn fmax_hz(&self) -> f64 {
        self.fmax.unwrap_or(f64::from(self.sample_rate) / 2.0)
    }

    /// Frequency bins of the one-sided STFT: n_fft / 2 + 1.
    pub fn n_freqs(&self) -> i64 {
        self.n_fft / 2 + 1
    }

    /// Frames the centred STFT gives for `n` samples: 1 + n / hop_length.
    pub fn num_frames(&self, n: i64) -> i64 {
        1 + n / self.hop_length.max(1)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(format!("mel config: {msg}")));
        if self.sample_rate == 0 {
            return bad("sample_rate must be positive".into());
        }
        for (name, v) in [
            ("n_fft", self.n_fft),
            ("hop_length", self.hop_length),
            ("win_length", self.win_length),
            ("n_mels", self.n_mels),
        ] {
            if v <= 0 {
                return bad(format!("{name} must be positive, got {v}"));
            }
        }
        if self.win_length > self.n_fft {
            return bad(format!("win_length {} is longer than n_fft {}", self.win_length, self.n_fft));
        }
        let (fmin, fmax, nyquist) = (self.fmin, self.fmax_hz(), f64::from(self.sample_rate) / 2.0);
        if !(fmin.is_finite() && fmin >= 0.0) {
            return bad(format!("fmin must be a frequency >= 0 Hz, got {fmin}"));
        }
        if !(fmax.is_finite() && fmax <= nyquist) {
            return bad(format!("fmax {fmax} Hz is above the Nyquist frequency {nyquist} Hz"));
        }
        if fmin >= fmax {
            return bad(format!("fmin {fmin} Hz must be below fmax {fmax} Hz"));
        }
        Ok(())
    }
}

/// torch.stft(center=True) with reflect padding. Shapes: (B, n) -> (B, n_freqs, frames) complex.
pub(crate) fn centred_stft(x: &Tensor, c: &MelConfig, window: &Tensor) -> Result<Tensor> {
    let (b, n) = x.size2()?;
    let pad = c.n_fft / 2;
    let padded = x.f_reshape([b, 1, n])?.f_pad([pad, pad], "reflect", None)?.f_reshape([b, n + 2 * pad])?;
    Ok(padded.f_stft(c.n_fft, c.hop_length, c.win_length, Some(window), false, true, true, false)?)
}

/// Waveform -> log-mel spectrogram, holding the window and the filterbank on its device.
#[derive(Debug)]
pub struct MelSpectrogram {
    cfg: MelConfig,
    /// Periodic Hann window of win_length samples; torch.stft centres it in the n_fft frame.
    window: Tensor,
    /// (n_mels, n_fft / 2 + 1)
    filterbank: Tensor,
    device: Device,
}

impl MelSpectrogram {
    pub fn new(cfg: &MelConfig, device: Device) -> Result<Self> {
        cfg.validate()?;
        let window = Tensor::f_hann_window_periodic(cfg.win_length, true, (Kind::Float, device))?;
        let filterbank = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax_hz())
            .f_to_device(device)?;
        Ok(MelSpectrogram { cfg: cfg.clone(), window, filterbank, device })
    }

    pub fn config(&self) -> &MelConfig {
        &self.cfg
    }

    /// The filterbank, (n_mels, n_fft / 2 + 1).
    pub fn filterbank(&self) -> &Tensor {
        &self.filterbank
    }

    /// Shapes: (n) -> (n_mels, frames), (B, n) -> (B, n_mels, frames), with
    /// frames = 1 + n / hop_length. The input is moved to this front end's device and f32.
    pub fn forward(&self, audio: &Tensor) -> Result<Tensor> {
        let c = &self.cfg;
        let shape = audio.size();
        let n = match shape[..] {
            [n] | [_, n] => n,
            ref s => {
                return Err(Error::Shape(format!(
                    "mel spectrogram wants audio of shape (n) or (B, n), got {s:?}"
                )))
            }
        };
        // Reflect padding mirrors n_fft/2 samples at each end, so it needs more than that.
        if n <= c.n_fft / 2 {
            return Err(Error::Shape(format!(
                "audio of {n} samples is too short for a mel spectrogram with n_fft {}: it needs \
                 more than {} samples",
                c.n_fft,
                c.n_fft / 2
            )));
        }
        if !audio.is_floating_point() {
            return Err(Error::Shape(format!(
                "mel spectrogram wants float audio in [-1, 1], got {:?}",
                audio.kind()
            )));
        }
        let x = audio.f_to_device(self.device)?.f_to_kind(Kind::Float)?;
        // 1. centred STFT: (B, n_freqs, frames) complex. The reflect padding is done here, as
        // torch.stft(center=True) does in Python: libtorch's own `center` overload refuses the
        // align_to_window flag that tch always passes.
        let batch = if shape.len() == 2 { shape[0] } else { 1 };
        let spec = centred_stft(&x.f_reshape([batch, n])?, c, &self.window)?;
        // 2. magnitude, as TacotronSTFT (not the power spectrum)
        let mag = spec.f_abs()?;
        // 3. mel projection: (n_mels, n_freqs) @ (.., n_freqs, frames)
        let mel = self.filterbank.f_matmul(&mag)?;
        // 4. dynamic range compression, C = 1
        let logmel = mel.f_clamp_min(1e-5)?.f_log()?;
        Ok(if shape.len() == 1 { logmel.f_squeeze_dim(0)? } else { logmel })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::chirp;

    fn cpu_vec(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(&t.reshape([-1])).unwrap()
    }

    #[test]
    fn mel_scale_round_trips_and_matches_known_points() {
        for hz in [0.0, 200.0, 999.0, 1000.0, 4000.0, 11025.0] {
            assert!((mel_to_hz(hz_to_mel(hz)) - hz).abs() < 1e-9 * hz.max(1.0), "{hz}");
        }
        assert!((hz_to_mel(1000.0) - 15.0).abs() < 1e-12);
        assert!((hz_to_mel(500.0) - 7.5).abs() < 1e-12);
        // 27 mels above 1 kHz multiply the frequency by 6.4.
        assert!((mel_to_hz(15.0 + 27.0) - 6400.0).abs() < 1e-9);
    }

    #[test]
    fn filterbank_shape_and_slaney_area() {
        let fb = mel_filterbank(22050, 1024, 80, 0.0, 8000.0);
        assert_eq!(fb.size(), vec![80, 513]);
        assert_eq!(fb.kind(), Kind::Float);
        let w = cpu_vec(&fb);
        assert!(w.iter().all(|&v| v >= 0.0));
        // With the Slaney norm every triangle has area 1 in Hz. Summing the weights times the
        // bin width (22050/1024 Hz) samples it: within 6 % for the narrow low filters (3-4 bins
        // wide), within 1 % once they span more than ~20 bins.
        let bin_hz = 22050.0 / 1024.0;
        for m in 0..80 {
            let area: f32 = w[m * 513..(m + 1) * 513].iter().sum::<f32>() * bin_hz;
            let tol = if m < 40 { 0.06 } else { 0.011 };
            assert!((area - 1.0).abs() < tol, "filter {m}: area {area}");
        }
        // Nothing above fmax = 8 kHz (bin 372 is 8010 Hz).
        assert!(w.chunks(513).all(|row| row[372..].iter().all(|&v| v == 0.0)));
    }

    #[test]
    fn degenerate_filterbank_arguments_do_not_panic() {
        assert_eq!(mel_filterbank(8000, -4, 10, 0.0, 4000.0).size(), vec![10, 0]);
        assert_eq!(mel_filterbank(8000, 512, -1, 0.0, 4000.0).size(), vec![0, 257]);
    }

    #[test]
    fn presets_validate_and_bad_configs_do_not() {
        MelConfig::waveglow_22k().validate().unwrap();
        MelConfig::speech_8k().validate().unwrap();
        let base = MelConfig::speech_8k();
        let cases: Vec<(MelConfig, &str)> = vec![
            (MelConfig { sample_rate: 0, ..base.clone() }, "sample_rate"),
            (MelConfig { n_fft: 0, ..base.clone() }, "n_fft"),
            (MelConfig { hop_length: -1, ..base.clone() }, "hop_length"),
            (MelConfig { n_mels: 0, ..base.clone() }, "n_mels"),
            (MelConfig { win_length: 2048, ..base.clone() }, "win_length"),
            (MelConfig { fmax: Some(5000.0), ..base.clone() }, "Nyquist"),
            (MelConfig { fmin: 4000.0, ..base.clone() }, "below fmax"),
            (MelConfig { fmin: f64::NAN, ..base.clone() }, "fmin"),
        ];
        for (cfg, word) in cases {
            match MelSpectrogram::new(&cfg, Device::Cpu) {
                Err(Error::Config(msg)) => assert!(msg.contains(word), "{msg}"),
                other => panic!("{cfg:?}: expected a config error, got {other:?}"),
            }
        }
    }

    #[test]
    fn config_reads_waveglow_keys() {
        let json = r#"{"sampling_rate": 22050, "filter_length": 1024, "hop_length": 256,
            "win_length": 1024, "n_mel_channels": 80, "mel_fmin": 0.0, "mel_fmax": 8000.0,
            "segment_length": 16000, "training_files": "train_files.txt"}"#;
        let cfg: MelConfig = serde_json::from_str(json).unwrap();
        assert_eq!(cfg, MelConfig::waveglow_22k());
        let back: MelConfig =
            serde_json::from_str(&serde_json::to_string(&MelConfig::speech_8k()).unwrap()).unwrap();
        assert_eq!(back, MelConfig::speech_8k());
    }

    #[test]
    fn shapes_single_and_batched() {
        let cfg = MelConfig::waveglow_22k();
        let mel = MelSpectrogram::new(&cfg, Device::Cpu).unwrap();
        let x = chirp(22050, 0.25, 100.0, 8000.0);
        let n = x.size()[0];
        let one = mel.forward(&x).unwrap();
        assert_eq!(one.size(), vec![80, cfg.num_frames(n)]);
        let batch = Tensor::stack(&[&x, &(&x * 0.5)], 0);
        let two = mel.forward(&batch).unwrap();
        assert_eq!(two.size(), vec![2, 80, cfg.num_frames(n)]);
        assert!((two.get(0) - &one).abs().max().double_value(&[]) < 1e-5);
        // Magnitude, not power: halving the input lowers every unclamped log-mel by ln 2.
        let d = (two.get(0) - two.get(1)).max().double_value(&[]);
        assert!((d - 2f64.ln()).abs() < 1e-4, "{d}");
    }

    #[test]
    fn a_tone_lights_the_filter_around_its_frequency() {
        let cfg = MelConfig::speech_8k();
        let mel = MelSpectrogram::new(&cfg, Device::Cpu).unwrap();
        let t = Tensor::arange(8000, (Kind::Float, Device::Cpu)) / 8000.0;
        let x = (t * (2.0 * std::f64::consts::PI * 1000.0)).sin() * 0.5;
        let m = mel.forward(&x).unwrap();
        let mid = m.select(1, m.size()[1] / 2);
        let peak = mid.argmax(0, false).int64_value(&[]) as usize;
        // The filter centred nearest 1 kHz.
        let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(4000.0));
        let centre_hz = |i: usize| mel_to_hz(lo + (i + 1) as f64 * (hi - lo) / 81.0);
        let nearest = (0..80)
            .min_by(|&a, &b| (centre_hz(a) - 1000.0).abs().total_cmp(&(centre_hz(b) - 1000.0).abs()))
            .unwrap();
        assert!(peak.abs_diff(nearest) <= 1, "peak filter {peak}, expected ~{nearest}");
    }

    #[test]
    fn bad_inputs_are_errors() {
        let mel = MelSpectrogram::new(&MelConfig::speech_8k(), Device::Cpu).unwrap();
        let short = Tensor::zeros([512], (Kind::Float, Device::Cpu));
        match mel.forward(&short) {
            Err(Error::Shape(msg)) => assert!(msg.contains("too short"), "{msg}"),
            other => panic!("{other:?}"),
        }
        assert!(mel.forward(&Tensor::zeros([513], (Kind::Float, Device::Cpu))).is_ok());
        let cube = Tensor::zeros([1, 1, 4000], (Kind::Float, Device::Cpu));
        assert!(matches!(mel.forward(&cube), Err(Error::Shape(_))));
        let ints = Tensor::zeros([4000], (Kind::Int16, Device::Cpu));
        assert!(matches!(mel.forward(&ints), Err(Error::Shape(_))));
        // Silence is clamped, not -inf.
        let silent = mel.forward(&Tensor::zeros([4000], (Kind::Float, Device::Cpu))).unwrap();
        assert!((silent.max().double_value(&[]) - 1e-5f64.ln()).abs() < 1e-4);
    }
}
