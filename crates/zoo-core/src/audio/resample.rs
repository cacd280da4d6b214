//! Band-limited resampling by windowed sinc, as torchaudio's `functional.resample` with
//! `resampling_method="sinc_interp_hann"`, `lowpass_filter_width=6`, `rolloff=0.99`.
//!
//! After reducing `from/to` by their gcd to `orig/new`, every output phase `j` in `0..new` has
//! its own FIR filter (a Hann-windowed sinc with cutoff `rolloff * min(orig, new) / 2` in units
//! of the reduced rates). All `new` filters run as the output channels of one strided conv1d
//! over the input (stride `orig`); interleaving the channels gives the output. Same zero
//! padding and output length, `ceil(n * to / from)`, as torchaudio.
use std::f64::consts::PI;

use tch::{Kind, Tensor};

use crate::{Error, Result};

const LOWPASS_FILTER_WIDTH: f64 = 6.0;
const ROLLOFF: f64 = 0.99;
/// Filter banks above this many taps (rates that share almost no factor, e.g. 44100 -> 44101)
/// would need gigabytes; refuse them instead.
const MAX_KERNEL_TAPS: usize = 1 << 26;

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The filter bank: `new` filters of `2 * width + orig` taps each, and `width`.
fn sinc_kernel(orig: u64, new: u64) -> Result<(Vec<f32>, i64)> {
    let base = orig.min(new) as f64 * ROLLOFF;
    let width = (LOWPASS_FILTER_WIDTH * orig as f64 / base).ceil() as i64;
    let taps = 2 * width as usize + orig as usize;
    if taps.saturating_mul(new as usize) > MAX_KERNEL_TAPS {
        return Err(Error::Config(format!(
            "resampling {orig}:{new} (after dividing by the gcd) needs a filter bank of {new} x \
             {taps} taps; resample through an intermediate rate instead"
        )));
    }
    let scale = base / orig as f64;
    let mut k = Vec::with_capacity(taps * new as usize);
    for j in 0..new {
        for i in -width..width + orig as i64 {
            // Time of input tap i relative to output sample j, in cycles of the cutoff.
            let t = (i as f64 / orig as f64 - j as f64 / new as f64) * base;
            let t = t.clamp(-LOWPASS_FILTER_WIDTH, LOWPASS_FILTER_WIDTH);
            let window = (t * PI / LOWPASS_FILTER_WIDTH / 2.0).cos().powi(2);
            let sinc = if t == 0.0 { 1.0 } else { (t * PI).sin() / (t * PI) };
            k.push((sinc * window * scale) as f32);
        }
    }
    Ok((k, width))
}

/// Resamples over the last dimension from `from_hz` to `to_hz`.
/// Shapes: (..., n) -> (..., ceil(n * to_hz / from_hz)), on the input's device; f64 input stays
/// f64, anything else is computed in f32.
pub fn resample(x: &Tensor, from_hz: u32, to_hz: u32) -> Result<Tensor> {
    if from_hz == 0 || to_hz == 0 {
        return Err(Error::Config(format!("cannot resample from {from_hz} Hz to {to_hz} Hz")));
    }
    let shape = x.size();
    let Some(&n) = shape.last() else {
        return Err(Error::Shape("resample needs a tensor with a time dimension, got a scalar".into()));
    };
    if from_hz == to_hz {
        return Ok(x.shallow_clone());
    }
    let kind = if x.kind() == Kind::Double { Kind::Double } else { Kind::Float };
    let g = gcd(u64::from(from_hz), u64::from(to_hz));
    let (orig, new) = (u64::from(from_hz) / g, u64::from(to_hz) / g);
    let out_len = (n as u64 * new).div_ceil(orig) as i64;
    let mut out_shape = shape.clone();
    if let Some(last) = out_shape.last_mut() {
        *last = out_len;
    }
    let batch: i64 = shape[..shape.len() - 1].iter().product();
    if n == 0 || batch == 0 {
        return Ok(Tensor::f_zeros(&out_shape, (kind, x.device()))?);
    }

    let (kernel, width) = sinc_kernel(orig, new)?;
    let (orig, new) = (orig as i64, new as i64);
    let kernel = Tensor::f_from_slice(&kernel)?
        .f_reshape([new, 1, 2 * width + orig])?
        .f_to_device(x.device())?
        .f_to_kind(kind)?;
    // (B, 1, width + n + width + orig): zeros around the signal, as torchaudio pads.
    let padded = x.f_to_kind(kind)?.f_reshape([batch, 1, n])?.f_constant_pad_nd([width, width + orig])?;
    // (B, new, frames) -> (B, frames, new) -> (B, frames * new): phase j of frame f is output
    // sample f * new + j.
    let y = padded.f_conv1d::<Tensor>(&kernel, None, [orig], [0], [1], 1)?;
    let y = y.f_transpose(1, 2)?.f_reshape([batch, -1])?.f_narrow(1, 0, out_len)?;
    Ok(y.f_reshape(&out_shape)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn sine(hz: f64, sr: u32, n: i64) -> Tensor {
        let t = Tensor::arange(n, (Kind::Double, Device::Cpu)) / f64::from(sr);
        (t * (2.0 * PI * hz)).sin().to_kind(Kind::Float)
    }

    /// Frequency of the largest FFT bin of a (n) signal.
    fn dominant_hz(x: &Tensor, sr: u32) -> f64 {
        let spec = x.fft_rfft(None, -1, "backward").abs();
        let bin = spec.argmax(0, false).int64_value(&[]);
        bin as f64 * f64::from(sr) / x.size()[0] as f64
    }

    fn rms(x: &Tensor) -> f64 {
        x.square().mean(Kind::Float).sqrt().double_value(&[])
    }

    #[test]
    fn equal_rates_are_the_identity() {
        let x = sine(440.0, 8000, 1000);
        let y = resample(&x, 8000, 8000).unwrap();
        assert_eq!(y.size(), x.size());
        assert_eq!((y - &x).abs().max().double_value(&[]), 0.0);
    }

    #[test]
    fn output_length_is_ceil_n_to_over_from() {
        for (from, to, n) in
            [(22050u32, 8000u32, 1001i64), (8000, 22050, 999), (16000, 48000, 7), (48000, 16000, 1)]
        {
            let x = Tensor::ones([2, n], (Kind::Float, Device::Cpu));
            let y = resample(&x, from, to).unwrap();
            let want = (n as u64 * u64::from(to)).div_ceil(u64::from(from)) as i64;
            assert_eq!(y.size(), vec![2, want], "{from}->{to}, n={n}");
        }
        let empty = Tensor::zeros([3, 0], (Kind::Float, Device::Cpu));
        assert_eq!(resample(&empty, 8000, 16000).unwrap().size(), vec![3, 0]);
    }

    #[test]
    fn a_tone_keeps_its_frequency() {
        for (from, to) in [(8000u32, 22050u32), (22050, 8000)] {
            let x = sine(440.0, from, i64::from(from));
            let y = resample(&x, from, to).unwrap();
            assert_eq!(y.size(), vec![i64::from(to)]);
            // One second of signal: FFT bins are 1 Hz wide.
            let f = dominant_hz(&y, to);
            assert!((f - 440.0).abs() <= 1.0, "{from}->{to}: {f} Hz");
            // Amplitude stays (passband gain 1), away from the zero-padded edges.
            let mid = y.narrow(0, i64::from(to) / 4, i64::from(to) / 2);
            let r = rms(&mid) * 2f64.sqrt();
            assert!((r - 1.0).abs() < 0.01, "{from}->{to}: amplitude {r}");
        }
    }

    #[test]
    fn matches_the_sine_sampled_at_the_new_rate() {
        let (from, to, n) = (8000u32, 22050u32, 8000i64);
        let y = resample(&sine(440.0, from, n), from, to).unwrap();
        let want = sine(440.0, to, 22050);
        let d = (y - want).narrow(0, 2000, 18000).abs().max().double_value(&[]);
        assert!(d < 1e-3, "max diff {d}");
    }

    #[test]
    fn tones_above_the_new_nyquist_are_removed() {
        // 6 kHz at 22.05 kHz would alias to 2 kHz at 8 kHz.
        let x = sine(6000.0, 22050, 22050);
        let y = resample(&x, 22050, 8000).unwrap();
        let mid = y.narrow(0, 1000, 6000);
        let ratio = rms(&mid) / rms(&x);
        // torchaudio's filter (Hann, 6 zero crossings) gives about -55 dB here.
        assert!(ratio < 3e-3, "attenuation only {ratio}");
    }

    #[test]
    fn batch_rows_are_independent_and_double_stays_double() {
        let a = sine(300.0, 16000, 500);
        let b = sine(1000.0, 16000, 500);
        let both = resample(&Tensor::stack(&[&a, &b], 0), 16000, 24000).unwrap();
        let one = resample(&b, 16000, 24000).unwrap();
        assert_eq!(both.size(), vec![2, 750]);
        assert!((both.get(1) - one).abs().max().double_value(&[]) < 1e-6);
        let d = resample(&a.to_kind(Kind::Double), 16000, 24000).unwrap();
        assert_eq!(d.kind(), Kind::Double);
    }

    #[test]
    fn bad_rates_are_errors() {
        let x = Tensor::zeros([10], (Kind::Float, Device::Cpu));
        assert!(matches!(resample(&x, 0, 8000), Err(Error::Config(_))));
        assert!(matches!(resample(&x, 44100, 44101), Err(Error::Config(_))));
        assert!(matches!(resample(&Tensor::from(1.0f32), 8000, 16000), Err(Error::Shape(_))));
    }
}
