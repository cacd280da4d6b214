//! WaveGlow's denoiser (NVIDIA/waveglow `denoiser.py`): the model's output for an all-zero mel
//! at sigma 0 is its "bias", a faint constant hiss; its magnitude spectrum (first STFT frame)
//! is subtracted, times a strength, from every frame of the vocoded audio, keeping the phase.
//!
//! The STFT is NVIDIA's: FFT 1024, hop 256 (1024 / 4 overlaps), Hann window of 1024, centred
//! with reflect padding; here torch's stft / istft instead of their conv-based transform (the
//! same magnitudes; istft normalises the overlap-add exactly). A model with another upsampler
//! gets the same geometry scaled: FFT and window of its upsampler kernel, hop a quarter of it.
use tch::{Kind, Tensor};

use crate::waveglow::WaveGlow;
use crate::{Error, Result};

/// NVIDIA's `n_overlap`: the hop is a quarter of the FFT.
const N_OVERLAP: i64 = 4;
/// Frames of the zero mel NVIDIA vocodes for the bias (`mode='zeros'`).
const BIAS_FRAMES: i64 = 88;

pub struct Denoiser {
    /// (n_fft / 2 + 1, 1): the bias magnitude spectrum.
    bias_spec: Tensor,
    /// Hann window of n_fft samples: the STFT's size (the hop is n_fft / N_OVERLAP).
    window: Tensor,
}

impl Denoiser {
    pub fn new(model: &WaveGlow) -> Result<Self> {
        let m = model.cfg.n_mel_channels;
        let dev = model.device();
        let mel = Tensor::f_zeros([1, m, BIAS_FRAMES], (Kind::Float, dev))?;
        let bias_audio = tch::no_grad(|| model.infer(&mel, 0.0))?.f_to_kind(Kind::Float)?;
        let window = Tensor::f_hann_window_periodic(model.cfg.upsample_kernel, true, (Kind::Float, dev))?;
        let spec = stft(&bias_audio, &window)?.f_abs()?; // (1, F, frames)
        let bias_spec = spec.f_select(0, 0)?.f_narrow(1, 0, 1)?;
        Ok(Denoiser { bias_spec, window })
    }

    /// The bias magnitude spectrum, (n_fft / 2 + 1, 1).
    pub fn bias_spec(&self) -> &Tensor {
        &self.bias_spec
    }

    /// Shapes: (B, n) -> (B, n); `strength` 0 leaves the audio (almost exactly) as it was.
    pub fn forward(&self, audio: &Tensor, strength: f64) -> Result<Tensor> {
        let [_, n] = audio.size()[..] else {
            return Err(Error::Input(format!("denoiser: expected audio (B, n), got {:?}", audio.size())));
        };
        let n_fft = self.window.size()[0];
        if n <= n_fft / 2 {
            return Err(Error::Input(format!(
                "denoiser: audio of {n} samples is shorter than {} samples",
                n_fft / 2 + 1
            )));
        }
        let x = audio.f_to_kind(Kind::Float)?;
        let spec = stft(&x, &self.window)?;
        let mag = spec.f_abs()?;
        let phase = spec.f_angle()?;
        let mag = mag.f_sub(&self.bias_spec.f_mul_scalar(strength)?)?.f_clamp_min(0.0)?;
        let denoised = Tensor::f_polar(&mag, &phase)?;
        Ok(denoised.f_istft(n_fft, hop(n_fft), n_fft, Some(&self.window), true, false, true, n, false)?)
    }
}

fn hop(n_fft: i64) -> i64 {
    (n_fft / N_OVERLAP).max(1)
}

/// Centred STFT with reflect padding (done by hand: tch's stft cannot centre in libtorch 2.13),
/// of the window's length. Shapes: (B, n) -> (B, n_fft / 2 + 1, 1 + n / hop) complex.
fn stft(x: &Tensor, window: &Tensor) -> Result<Tensor> {
    let [b, n] = x.size()[..] else {
        return Err(Error::Input(format!("stft: expected (B, n), got {:?}", x.size())));
    };
    let n_fft = window.size()[0];
    let pad = n_fft / 2;
    let padded = x.f_reshape([b, 1, n])?.f_pad([pad, pad], "reflect", None)?.f_reshape([b, n + 2 * pad])?;
    Ok(padded.f_stft(n_fft, hop(n_fft), n_fft, Some(window), false, true, true, false)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::waveglow::Config;
    use tch::{nn::VarStore, Device};

    #[test]
    fn removes_the_bias_and_keeps_the_rest() {
        let vs = VarStore::new(Device::Cpu);
        let m = WaveGlow::new(vs.root(), &Config::tiny()).unwrap();
        // a nonzero upsampler bias makes the model's zero-mel output a nonzero hum
        tch::no_grad(|| {
            for (name, v) in vs.variables() {
                if name.contains(".end.") || name == "upsample.bias" {
                    v.shallow_clone().f_copy_(&(Tensor::randn_like(&v) * 0.2)).unwrap();
                }
            }
        });
        let d = Denoiser::new(&m).unwrap();
        assert_eq!(d.bias_spec().size(), vec![513, 1]);
        assert!(d.bias_spec().sum(Kind::Float).double_value(&[]) > 0.0);
        let t = Tensor::arange(4000, (Kind::Float, Device::Cpu)) / 8000.0;
        let tone = (t * (2.0 * std::f64::consts::PI * 440.0)).sin().unsqueeze(0) * 0.5;
        // strength 0: stft -> istft reconstructs
        let same = d.forward(&tone, 0.0).unwrap();
        assert_eq!(same.size(), vec![1, 4000]);
        assert!((&same - &tone).abs().max().double_value(&[]) < 1e-4);
        // denoising the bias audio itself removes most of its energy
        let mel = Tensor::zeros([1, 4, 88], (Kind::Float, Device::Cpu));
        let bias = tch::no_grad(|| m.infer(&mel, 0.0)).unwrap();
        let e0 = bias.square().sum(Kind::Float).double_value(&[]);
        let e1 = d.forward(&bias, 1.0).unwrap().square().sum(Kind::Float).double_value(&[]);
        assert!(e1 < 0.5 * e0, "bias energy {e0} -> {e1}");
        assert!(d.forward(&tone.narrow(1, 0, 100), 0.1).is_err());
        assert!(d.forward(&tone.squeeze(), 0.1).is_err());
    }

    #[test]
    fn follows_the_upsampler_geometry() {
        let cfg = Config { upsample_stride: 64, upsample_kernel: 256, ..Config::tiny() };
        let vs = VarStore::new(Device::Cpu);
        let m = WaveGlow::new(vs.root(), &cfg).unwrap();
        let d = Denoiser::new(&m).unwrap();
        assert_eq!(d.bias_spec().size(), vec![129, 1]);
        let x = Tensor::randn([1, 1000], (Kind::Float, Device::Cpu)) * 0.3;
        let same = d.forward(&x, 0.0).unwrap();
        assert!((&same - &x).abs().max().double_value(&[]) < 1e-4);
    }
}
