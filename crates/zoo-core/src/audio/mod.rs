//! Audio: WAV I/O, resampling, the mel front end and spectrogram pictures.
//!
//! What the audio families (WaveGlow, text-to-speech, audio GANs) share:
//! - [`read_wav`] / [`write_wav`]: WAV files through `hound` ([`wav`]);
//! - [`resample()`]: band-limited windowed-sinc resampling, torchaudio's `sinc_interp_hann`
//!   ([`resample`](mod@resample));
//! - [`MelSpectrogram`]: the log-mel front end of WaveGlow and Tacotron 2 (`TacotronSTFT`), on
//!   librosa's Slaney filterbank ([`mel`]);
//! - [`GriffinLim`]: log-mel -> waveform by the pseudo-inverse filterbank and (fast) Griffin-Lim
//!   ([`griffin_lim`]);
//! - [`spectrogram_image`]: a log-mel as a viridis picture ([`colormap`]);
//! - [`chirp`]: a test signal.
//!
//! Waveforms are f32 tensors with time on the last dimension: (n), (channels, n) or (B, n).
pub mod colormap;
pub mod griffin_lim;
pub mod mel;
pub mod resample;
pub mod wav;

use std::f64::consts::PI;

use tch::{Device, Kind, Tensor};

pub use colormap::{save_spectrogram, spectrogram_image};
pub use griffin_lim::{GriffinLim, GriffinLimConfig};
pub use mel::{mel_filterbank, MelConfig, MelSpectrogram};
pub use resample::resample;
pub use wav::{read_wav, read_wav_mono, write_wav, WavFormat};

use crate::{Error, Result};

/// A waveform with its sample rate.
#[derive(Debug)]
pub struct Audio {
    /// (channels, n) f32 in [-1, 1].
    pub samples: Tensor,
    pub sample_rate: u32,
}

impl Audio {
    /// Checks the shape: (channels, n) is kept, (n) becomes (1, n).
    pub fn new(samples: Tensor, sample_rate: u32) -> Result<Self> {
        let samples = match samples.size()[..] {
            [_, _] => samples,
            [n] => samples.f_reshape([1, n])?,
            ref s => {
                return Err(Error::Shape(format!("audio samples must be (channels, n) or (n), got {s:?}")))
            }
        };
        if sample_rate == 0 {
            return Err(Error::Config("audio with sample rate 0".into()));
        }
        Ok(Audio { samples, sample_rate })
    }

    /// Number of channels (1 for a bare (n) tensor).
    pub fn channels(&self) -> i64 {
        match self.samples.size()[..] {
            [c, _] => c,
            _ => 1,
        }
    }

    /// Samples per channel.
    pub fn len(&self) -> i64 {
        self.samples.size().last().copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn duration_secs(&self) -> f64 {
        if self.sample_rate == 0 {
            return 0.0;
        }
        self.len() as f64 / f64::from(self.sample_rate)
    }

    /// The mean of the channels. Shapes: (channels, n) -> (1, n).
    pub fn to_mono(&self) -> Audio {
        let n = self.len();
        let samples = if self.samples.dim() == 2 {
            self.samples.mean_dim(0, true, Kind::Float)
        } else if n > 0 {
            // Not (channels, n), as the fields are public: treat leading dims as channels.
            self.samples.reshape([-1, n]).mean_dim(0, true, Kind::Float)
        } else {
            Tensor::zeros([1, 0], (Kind::Float, self.samples.device()))
        };
        Audio { samples, sample_rate: self.sample_rate }
    }
}

/// A linear sine sweep from `f0` to `f1` Hz over `secs` seconds, amplitude 0.5.
/// Shapes: -> (round(secs * sample_rate)) f32 on the CPU; empty for a non-positive duration.
pub fn chirp(sample_rate: u32, secs: f64, f0: f64, f1: f64) -> Tensor {
    let sr = f64::from(sample_rate);
    let n = if secs.is_finite() && secs > 0.0 { (secs * sr).round() as usize } else { 0 };
    // Phase is the integral of the instantaneous frequency f0 + (f1 - f0) t / secs, computed in
    // f64 so long sweeps keep their phase.
    let x: Vec<f32> = (0..n)
        .map(|i| {
            let t = i as f64 / sr;
            let phase = 2.0 * PI * (f0 * t + 0.5 * (f1 - f0) * t * t / secs);
            (0.5 * phase.sin()) as f32
        })
        .collect();
    Tensor::from_slice(&x).to_device(Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_accessors() {
        let a = Audio::new(Tensor::zeros([2, 800], (Kind::Float, Device::Cpu)), 8000).unwrap();
        assert_eq!((a.channels(), a.len(), a.is_empty()), (2, 800, false));
        assert!((a.duration_secs() - 0.1).abs() < 1e-12);
        let mono = Audio::new(Tensor::zeros([5], (Kind::Float, Device::Cpu)), 8000).unwrap();
        assert_eq!(mono.samples.size(), vec![1, 5]);
        assert!(Audio::new(Tensor::zeros([1, 2, 3], (Kind::Float, Device::Cpu)), 8000).is_err());
        assert!(Audio::new(Tensor::zeros([3], (Kind::Float, Device::Cpu)), 0).is_err());
    }

    #[test]
    fn to_mono_is_the_channel_mean() {
        let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 5.0]).view([2, 2]);
        let m = Audio { samples: x, sample_rate: 8000 }.to_mono();
        assert_eq!(m.samples.size(), vec![1, 2]);
        assert_eq!(Vec::<f32>::try_from(&m.samples.view([-1])).unwrap(), vec![2.0, 3.5]);
        let bare = Audio { samples: Tensor::from_slice(&[1.0f32, 2.0]), sample_rate: 8000 };
        assert_eq!(bare.channels(), 1);
        assert_eq!(bare.to_mono().samples.size(), vec![1, 2]);
    }

    #[test]
    fn chirp_sweeps_upwards() {
        let x = chirp(8000, 1.0, 100.0, 3000.0);
        assert_eq!(x.size(), vec![8000]);
        assert!((x.abs().max().double_value(&[]) - 0.5).abs() < 1e-3);
        // Zero crossings per 1000 samples rise as the frequency does.
        let v = Vec::<f32>::try_from(&x).unwrap();
        let crossings = |s: &[f32]| s.windows(2).filter(|w| (w[0] < 0.0) != (w[1] < 0.0)).count();
        let (early, late) = (crossings(&v[..1000]), crossings(&v[7000..]));
        // 100..~460 Hz over the first 1/8 s: ~70 crossings; ~2640..3000 Hz at the end: ~710.
        assert!((50..100).contains(&early), "{early}");
        assert!((650..760).contains(&late), "{late}");
        assert_eq!(chirp(8000, 0.0, 1.0, 2.0).size(), vec![0]);
        assert_eq!(chirp(8000, f64::NAN, 1.0, 2.0).size(), vec![0]);
    }
}
