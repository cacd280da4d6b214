//! Training WaveGlow on a folder of WAV files, and the copy-synthesis metrics.
//!
//! As NVIDIA's `train.py` + `mel2samp.py`: random crops of `segment_length` samples (shorter
//! clips zero-padded at the end), the log-mel of each crop, the WaveGlow loss, Adam. One
//! addition: uniform dequantisation noise of one 16-bit step is added to the audio the flow
//! models, since a continuous density on 16-bit samples (and on zero padding) can otherwise grow
//! without bound; the NLL we report is then a proper bound for the quantised audio.
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::Rng;
use tch::{Device, Kind, Tensor};
use zoo_core::audio::{read_wav_mono, resample, MelSpectrogram};
use zoo_core::train::{StepOutput, TrainTask};

use crate::waveglow::Vocoder;
use crate::{Error, Result};

/// One 16-bit quantisation step of audio in [-1, 1).
pub const PCM16_STEP: f64 = 1.0 / 32768.0;

/// A mono clip at the model's rate.
pub struct Clip {
    pub name: String,
    /// (n) f32 on the CPU.
    pub samples: Tensor,
}

/// Whether a file is in the test split: the Free Spoken Digit Dataset's rule
/// (`{digit}_{speaker}_{take}.wav`, takes 0-4 are the test set) when the name has that form,
/// else every 10th file of the sorted list.
pub fn is_test_file(name: &str, index: usize) -> bool {
    let stem = name.strip_suffix(".wav").unwrap_or(name);
    let parts: Vec<&str> = stem.split('_').collect();
    if let [digit, _speaker, take] = parts[..] {
        if let (Ok(_), Ok(take)) = (digit.parse::<u32>(), take.parse::<u32>()) {
            return take < 5;
        }
    }
    index % 10 == 9
}

/// Reads every `.wav` of `dir` (not recursive) as mono at `sample_rate` (resampled when the
/// file's rate differs) and splits them into (train, test) with [`is_test_file`].
pub fn load_wav_dir(dir: &Path, sample_rate: u32) -> Result<(Vec<Clip>, Vec<Clip>)> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("wav")))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(Error::Data(format!("{}: no .wav files", dir.display())));
    }
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (i, p) in paths.iter().enumerate() {
        let a = read_wav_mono(p)?;
        let mut x = a.samples.f_reshape([-1])?;
        if a.sample_rate != sample_rate {
            x = resample(&x, a.sample_rate, sample_rate)?;
        }
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let clip = Clip { name: name.clone(), samples: x };
        if is_test_file(&name, i) {
            test.push(clip);
        } else {
            train.push(clip);
        }
    }
    if train.is_empty() || test.is_empty() {
        return Err(Error::Data(format!(
            "{}: {} WAV files give {} for training and {} for testing; both need at least one",
            dir.display(),
            paths.len(),
            train.len(),
            test.len()
        )));
    }
    Ok((train, test))
}

/// A random crop of `len` samples (zero-padded at the end when the clip is shorter).
fn crop(x: &Tensor, len: i64, rng: &mut StdRng) -> Result<Tensor> {
    let n = x.size()[0];
    if n >= len {
        let start = rng.gen_range(0..=n - len);
        Ok(x.f_narrow(0, start, len)?)
    } else {
        Ok(x.f_constant_pad_nd([0, len - n])?)
    }
}

/// The WaveGlow training task for zoo-core's `Trainer`.
pub struct WaveGlowTask<'a> {
    pub vocoder: &'a Vocoder,
    mel: MelSpectrogram,
    train: &'a [Clip],
    test: &'a [Clip],
    /// Test clips used by each evaluation (the first ones, in sorted order).
    pub eval_clips: usize,
    device: Device,
}

impl<'a> WaveGlowTask<'a> {
    pub fn new(vocoder: &'a Vocoder, train: &'a [Clip], test: &'a [Clip], device: Device) -> Result<Self> {
        let mel = MelSpectrogram::new(&vocoder.file.mel_config(), device)?;
        Ok(WaveGlowTask { vocoder, mel, train, test, eval_clips: 64, device })
    }

    /// NLL of whole clips in bits per sample (continuous density of the dequantised audio)
    /// and the same for the 16-bit samples (+ log2 32768 = 15 bits); clips are dequantised
    /// with noise from libtorch's generator.
    pub fn nll_bits(&self, clips: &[Clip]) -> Result<(f64, f64)> {
        let sigma = self.vocoder.file.train_config.sigma;
        let g = self.vocoder.model.cfg.n_group;
        let (mut bits, mut n_total) = (0.0, 0.0);
        for c in clips {
            let n = c.samples.size()[0];
            let n = n - n % g;
            if n <= self.mel.config().n_fft / 2 {
                continue;
            }
            let x = c.samples.f_narrow(0, 0, n)?.f_to_device(self.device)?.f_unsqueeze(0)?;
            let out = tch::no_grad(|| -> Result<_> {
                let mel = self.mel.forward(&x)?;
                let xq = dequantize(&x)?;
                self.vocoder.model.forward(&mel, &xq)
            })?;
            bits += out.nll_bits_per_sample(sigma)? * n as f64;
            n_total += n as f64;
        }
        if n_total == 0.0 {
            return Err(Error::Data("no clip is long enough to evaluate".into()));
        }
        let continuous = bits / n_total;
        Ok((continuous, continuous + 15.0))
    }
}

/// Adds uniform noise of one 16-bit step, U(-1/2, 1/2) / 32768.
fn dequantize(x: &Tensor) -> Result<Tensor> {
    Ok(x.f_add(&Tensor::f_rand_like(x)?.f_sub_scalar(0.5)?.f_mul_scalar(PCM16_STEP)?)?)
}

impl TrainTask for WaveGlowTask<'_> {
    fn loss(&mut self, _step: u64, _micro: u32, rng: &mut StdRng) -> zoo_core::Result<StepOutput> {
        let mut run = || -> Result<StepOutput> {
            let f = &self.vocoder.file;
            let seg = f.data_config.segment_length;
            let crops: Vec<Tensor> = (0..f.train_config.batch_size)
                .map(|_| crop(&self.train[rng.gen_range(0..self.train.len())].samples, seg, rng))
                .collect::<Result<_>>()?;
            let audio = Tensor::f_stack(&crops, 0)?.f_to_device(self.device)?;
            let mel = tch::no_grad(|| self.mel.forward(&audio))?;
            let out = self.vocoder.model.forward(&mel, &dequantize(&audio)?)?;
            let loss = out.loss(f.train_config.sigma)?;
            Ok(StepOutput { loss, metrics: vec![] })
        };
        run().map_err(to_core)
    }

    fn eval(&mut self, _step: u64) -> zoo_core::Result<Vec<(String, f64)>> {
        let n = self.eval_clips.min(self.test.len());
        let (bits, bits16) = self.nll_bits(&self.test[..n]).map_err(to_core)?;
        Ok(vec![("test_nll_bits".into(), bits), ("test_nll_bits_pcm16".into(), bits16)])
    }
}

/// zoo-core's Trainer speaks zoo_core::Error; ours wraps it or says it in one line.
pub(crate) fn to_core(e: Error) -> zoo_core::Error {
    match e {
        Error::Core(c) => c,
        Error::Torch(t) => zoo_core::Error::Torch(t),
        other => zoo_core::Error::Data(other.to_string()),
    }
}

/// Copy synthesis of one clip: its log-mel, vocoded at `sigma` (and denoised when a denoiser
/// and strength are given). Shapes: (n) -> (n).
pub fn copy_synthesis(
    vocoder: &Vocoder,
    mel_fe: &MelSpectrogram,
    audio: &Tensor,
    sigma: f64,
    denoise: Option<(&crate::denoiser::Denoiser, f64)>,
) -> Result<Tensor> {
    let n = audio.size()[0];
    let mel = mel_fe.forward(&audio.f_unsqueeze(0)?)?;
    let mut y = tch::no_grad(|| vocoder.model.infer(&mel, sigma))?;
    if let Some((d, s)) = denoise {
        y = d.forward(&y, s)?;
    }
    // F * hop samples come out for F = 1 + n / hop frames: keep the first n
    Ok(y.f_select(0, 0)?.f_narrow(0, 0, n)?.f_to_kind(Kind::Float)?)
}

/// Mean absolute difference of two log-mels (natural log), (M, F) each (the shorter length
/// is used).
pub fn log_mel_l1(real: &Tensor, fake: &Tensor) -> Result<f64> {
    let (a, b) = same_frames(real, fake)?;
    Ok(a.f_sub(&b)?.f_abs()?.f_mean(Kind::Double)?.f_double_value(&[])?)
}

/// Mel-cepstra of a log-mel (M, F): c_1..c_n (c_0, the energy, left out) by an orthonormal
/// DCT-II over the M bands, in f64. Shapes: (M, F) -> (n_ceps, F).
pub fn mel_cepstra(log_mel: &Tensor, n_ceps: i64) -> Result<Tensor> {
    let m = log_mel.size()[0];
    if n_ceps < 1 || n_ceps >= m {
        return Err(Error::Input(format!("MCD: {n_ceps} cepstra from {m} bands")));
    }
    let dct: Vec<f64> = (1..=n_ceps)
        .flat_map(|k| {
            (0..m).map(move |j| {
                (2.0 / m as f64).sqrt()
                    * (std::f64::consts::PI * k as f64 * (j as f64 + 0.5) / m as f64).cos()
            })
        })
        .collect();
    let dct = Tensor::from_slice(&dct).f_reshape([n_ceps, m])?.f_to_device(log_mel.device())?;
    Ok(dct.f_matmul(&log_mel.f_to_kind(Kind::Double)?)?)
}

/// Mel-cepstral distortion in dB between two log-mels (M, F): the [`mel_cepstra`] of their
/// difference, then the usual (10 / ln 10) sqrt(2 sum_k (c_k - c'_k)^2) averaged over frames.
/// An MFCC-based MCD: SPTK's mel-cepstra (mcep) would give somewhat different absolute values.
pub fn mel_cepstral_distortion(real: &Tensor, fake: &Tensor, n_ceps: i64) -> Result<f64> {
    let (a, b) = same_frames(real, fake)?;
    let diff = mel_cepstra(&a.f_sub(&b)?, n_ceps)?; // (n_ceps, F)
    let per_frame = diff
        .f_square()?
        .f_sum_dim_intlist([0i64].as_slice(), false, Kind::Double)?
        .f_mul_scalar(2.0)?
        .f_sqrt()?;
    Ok(per_frame.f_mean(Kind::Double)?.f_double_value(&[])? * 10.0 / std::f64::consts::LN_10)
}

/// Voicing of `audio` where the `reference` clip is loudest: the peak of the normalised
/// autocorrelation over pitch lags of 80-400 Hz, in the reference's loudest 150 ms (both 1-D,
/// the same sample rate). Voiced speech gives about 0.9 at its pitch period, noise below 0.2,
/// so `voicing(real, real)` against `voicing(vocoded, real)` shows whether a vocoder keeps the
/// harmonics the log-mel metrics average away. None when the clips are too short for a window
/// of two periods at 80 Hz. (A periodic buzz scores too: a vocoder's frame-rate buzz at sigma 0
/// peaks at the hop's lag.)
pub fn voicing(audio: &Tensor, reference: &Tensor, sample_rate: i64) -> Result<Option<f64>> {
    let a = Vec::<f32>::try_from(audio.f_to_kind(Kind::Float)?.f_to_device(Device::Cpu)?.f_flatten(0, -1)?)?;
    let r =
        Vec::<f32>::try_from(reference.f_to_kind(Kind::Float)?.f_to_device(Device::Cpu)?.f_flatten(0, -1)?)?;
    let (lag_min, lag_max) = ((sample_rate / 400).max(1) as usize, (sample_rate / 80).max(2) as usize);
    let n = ((sample_rate as f64 * 0.15) as usize).min(r.len()).min(a.len());
    if n < 2 * lag_max {
        return Ok(None);
    }
    // the reference's loudest window (running sum of squares)
    let mut energy: f64 = r[..n].iter().map(|&v| f64::from(v) * f64::from(v)).sum();
    let (mut best, mut start) = (energy, 0usize);
    for i in n..r.len().min(a.len()) {
        energy += f64::from(r[i]) * f64::from(r[i]) - f64::from(r[i - n]) * f64::from(r[i - n]);
        if energy > best {
            (best, start) = (energy, i + 1 - n);
        }
    }
    let w = &a[start..start + n];
    let mean = w.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
    let x: Vec<f64> = w.iter().map(|&v| f64::from(v) - mean).collect();
    let mut peak = 0.0f64;
    for lag in lag_min..=lag_max.min(n - 1) {
        let (p, q) = (&x[..n - lag], &x[lag..]);
        let dot: f64 = p.iter().zip(q).map(|(u, v)| u * v).sum();
        let den = (p.iter().map(|u| u * u).sum::<f64>() * q.iter().map(|v| v * v).sum::<f64>()).sqrt();
        if den > 0.0 {
            peak = peak.max(dot / den);
        }
    }
    Ok(Some(peak))
}

fn same_frames(a: &Tensor, b: &Tensor) -> Result<(Tensor, Tensor)> {
    match (&a.size()[..], &b.size()[..]) {
        ([m, fa], [mb, fb]) if m == mb => {
            let f = (*fa).min(*fb);
            Ok((a.f_narrow(1, 0, f)?, b.f_narrow(1, 0, f)?))
        }
        (sa, sb) => {
            Err(Error::Input(format!("two log-mels (M, F) of the same M expected, got {sa:?} and {sb:?}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn fsdd_split_rule() {
        assert!(is_test_file("7_jackson_4.wav", 0));
        assert!(!is_test_file("7_jackson_5.wav", 9));
        assert!(!is_test_file("0_george_49.wav", 9));
        // other names: every 10th
        assert!(is_test_file("speech.wav", 9));
        assert!(!is_test_file("speech.wav", 3));
    }

    #[test]
    fn crops_and_pads() {
        let mut rng = StdRng::seed_from_u64(0);
        let x = Tensor::arange(100, (Kind::Float, Device::Cpu));
        let c = crop(&x, 10, &mut rng).unwrap();
        assert_eq!(c.size(), vec![10]);
        let first = c.double_value(&[0]);
        assert_eq!(c.double_value(&[9]) - first, 9.0);
        let p = crop(&x.narrow(0, 0, 5), 8, &mut rng).unwrap();
        assert_eq!(Vec::<f32>::try_from(&p).unwrap(), vec![0., 1., 2., 3., 4., 0., 0., 0.]);
    }

    #[test]
    fn metrics_are_zero_for_equal_inputs_and_grow_with_difference() {
        let a = Tensor::randn([80, 20], (Kind::Float, Device::Cpu));
        assert_eq!(log_mel_l1(&a, &a).unwrap(), 0.0);
        assert!(mel_cepstral_distortion(&a, &a, 13).unwrap().abs() < 1e-9);
        // a constant offset changes only c_0: MCD ignores it, L1 does not
        let shifted = &a + 1.0;
        assert!((log_mel_l1(&a, &shifted).unwrap() - 1.0).abs() < 1e-6);
        assert!(mel_cepstral_distortion(&a, &shifted, 13).unwrap() < 1e-4);
        let noisy = &a + Tensor::randn([80, 20], (Kind::Float, Device::Cpu));
        let more = &a + Tensor::randn([80, 20], (Kind::Float, Device::Cpu)) * 3.0;
        let (m1, m3) = (
            mel_cepstral_distortion(&a, &noisy, 13).unwrap(),
            mel_cepstral_distortion(&a, &more, 13).unwrap(),
        );
        assert!(m1 > 1.0 && m3 > 2.0 * m1, "{m1} {m3}");
        assert!(log_mel_l1(&a, &a.narrow(0, 0, 40)).is_err());
        assert!(mel_cepstral_distortion(&a, &a, 80).is_err());
    }

    #[test]
    fn voicing_tells_a_voice_from_noise() {
        let sr = 8000;
        let t = Tensor::arange(4000, (Kind::Double, Device::Cpu)) / sr as f64;
        // a 125 Hz voice with harmonics, loud in its second half
        let tau = 2.0 * std::f64::consts::PI;
        let voice =
            (&t * (tau * 125.0)).sin() + (&t * (tau * 250.0)).sin() * 0.5 + (&t * (tau * 375.0)).sin() * 0.3;
        let envelope = Tensor::cat(
            &[
                Tensor::full([2000], 0.05, (Kind::Double, Device::Cpu)),
                Tensor::ones([2000], (Kind::Double, Device::Cpu)),
            ],
            0,
        );
        let real = (&voice * &envelope).to_kind(Kind::Float);
        let v = voicing(&real, &real, sr).unwrap().unwrap();
        assert!(v > 0.95, "{v}");
        tch::manual_seed(0);
        let noise = Tensor::randn([4000], (Kind::Float, Device::Cpu));
        let n = voicing(&noise, &real, sr).unwrap().unwrap();
        assert!(n < 0.2, "{n}");
        // too short for two periods at 80 Hz
        assert!(voicing(&real.narrow(0, 0, 150), &real.narrow(0, 0, 150), sr).unwrap().is_none());
    }

    #[test]
    fn wav_dir_errors_are_clear() {
        let dir = tempfile::tempdir().unwrap();
        let e = load_wav_dir(dir.path(), 8000).err().unwrap().to_string();
        assert!(e.contains("no .wav files"), "{e}");
        std::fs::write(dir.path().join("bad.wav"), b"RIFFnope").unwrap();
        let e = load_wav_dir(dir.path(), 8000).err().unwrap().to_string();
        assert!(e.contains("bad.wav"), "{e}");
        assert!(load_wav_dir(&dir.path().join("missing"), 8000).is_err());
    }
}

/// The loop of `zoo flow train` (WaveGlow and Glow): evaluate and checkpoint every
/// `eval_every` steps (default: a fifth of the run), with sample grids at the same steps when
/// `samples`.
pub(crate) fn loop_config(
    steps: u64,
    eval_every: Option<u64>,
    clip_grad: Option<f64>,
    samples: bool,
    seed: u64,
) -> zoo_core::train::LoopConfig {
    let every = eval_every.unwrap_or((steps / 5).max(1)).max(1);
    zoo_core::train::LoopConfig {
        steps,
        grad_accum: 1,
        clip_grad,
        log_every: every.min(10),
        eval_every: Some(every),
        sample_every: samples.then_some(every),
        checkpoint_every: Some(every),
        keep_checkpoints: 2,
        seed,
    }
}

/// A WaveGlow training run as `zoo flow train` makes it for a WaveGlow preset.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// The folder of WAV files (every 10th, by name, held out for testing).
    pub wavs: PathBuf,
    /// The recipe: a preset's file, or the run's own when resuming.
    pub file: crate::waveglow::ModelFile,
    /// The preset's name, kept in the run's config ("" when unknown).
    pub preset: String,
    /// The run folder: config.json, metrics.jsonl, loss.png, checkpoints/, model/.
    pub out: PathBuf,
    /// Optimiser steps (default: the file's).
    pub steps: Option<u64>,
    /// Evaluate and checkpoint every this many steps (default: steps / 5).
    pub eval_every: Option<u64>,
    /// Test clips of each evaluation.
    pub eval_clips: usize,
    pub resume: bool,
    pub seed: u64,
    pub device: Device,
}

/// What [`train`] is about to do.
#[derive(Debug, Clone)]
pub struct Plan {
    pub params: i64,
    pub train_clips: usize,
    pub test_clips: usize,
    pub steps: u64,
    pub start: u64,
}

/// What [`train`] did.
#[derive(Debug, Clone)]
pub struct Trained {
    pub steps: u64,
    /// The model folder (`out/model`), unless the run was interrupted.
    pub model: Option<PathBuf>,
    /// The last evaluation's test NLL in bits per sample.
    pub test_nll_bits: Option<f64>,
    pub seconds: f64,
}

/// Trains a WaveGlow on a folder of WAVs into a run folder, or resumes one, and writes the
/// model to `out/model/`: the recipe of `zoo flow train` with a WaveGlow preset.
pub fn train(
    opts: &TrainOptions,
    reporter: &mut dyn zoo_core::train::trainer::Reporter,
    on_plan: &mut dyn FnMut(&Plan),
) -> Result<Trained> {
    use serde_json::{json, Value};
    use zoo_core::run::RunDir;
    use zoo_core::train::{AdamW, AdamWConfig, LrSchedule, Trainer};
    let mut file = opts.file.clone();
    if let Some(s) = opts.steps {
        file.train_config.steps = s;
    }
    let steps = file.train_config.steps;
    // 1. Data and model (initial weights from the seed).
    let (train_set, test_set) = load_wav_dir(&opts.wavs, file.data_config.sampling_rate)?;
    zoo_core::seed::seed_all(opts.seed);
    let vocoder = Vocoder::new(&file, opts.device)?;
    let mut task = WaveGlowTask::new(&vocoder, &train_set, &test_set, opts.device)?;
    task.eval_clips = opts.eval_clips;
    let loop_cfg = loop_config(steps, opts.eval_every, file.train_config.clip_grad, false, opts.seed);
    // 2. The run folder; a resumed run must be the same recipe (its length may change).
    let mut stored = file.clone();
    stored.train_config.steps = 0;
    let data = zoo_core::data::DataSpec::Wav(opts.wavs.clone()).to_string();
    let run_cfg = json!({"preset": opts.preset, "data": data, "seed": opts.seed, "model_file": stored});
    let run =
        RunDir::create_or_resume(&opts.out, &run_cfg, opts.resume, &zoo_core::run::LENGTH_AND_REPORTING)?;
    let lr = file.train_config.learning_rate;
    let opt = AdamW::new(&vocoder.vs, AdamWConfig { lr, weight_decay: 0.0, ..Default::default() });
    let mut trainer = Trainer::new(&run, &vocoder.vs, opt, LrSchedule::Constant { lr }, loop_cfg)?;
    let start = trainer.resume_to_continue(&mut task)?;
    on_plan(&Plan {
        params: vocoder.vs.trainable_variables().iter().map(|t| t.numel() as i64).sum(),
        train_clips: train_set.len(),
        test_clips: test_set.len(),
        steps,
        start,
    });
    let t0 = std::time::Instant::now();
    let outcome = trainer.run(&mut task, start, reporter)?;
    let seconds = t0.elapsed().as_secs_f64();
    if outcome.interrupted {
        return Ok(Trained { steps: outcome.steps, model: None, test_nll_bits: None, seconds });
    }
    let model_dir = opts.out.join("model");
    vocoder.save(&model_dir)?;
    let last = run.metrics()?.iter().rev().find_map(|r| r.get("test_nll_bits").and_then(Value::as_f64));
    Ok(Trained { steps: outcome.steps, model: Some(model_dir), test_nll_bits: last, seconds })
}
