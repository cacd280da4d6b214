//! Measuring a text-to-speech model on what a listener gets:
//!
//! - intelligibility: "zero" .. "nine" spoken with several seeds, judged by a [`Listener`]
//!   trained on real people (and espeak-ng's own renderings judged the same way, as the
//!   reference the corpus was made from);
//! - distance to the reference on held-out sentences of the corpus: the model's log-mel against
//!   the log-mel of the corpus's recording, aligned by dynamic time warping (the model's timing
//!   is its own), as the mean absolute log-mel difference and the mel-cepstral distortion;
//! - speed: the real-time factor of the whole chain (text to waveform): seconds of computing
//!   per second of speech.
//!
//! The alignment is found on the mel-cepstra (zoo_flow::train::mel_cepstra, c1..=c13), and the
//! aligned frames are measured with the vocoder evaluation's own `log_mel_l1` and
//! `mel_cepstral_distortion`: MFCC-style cepstra of the 80-band mel, not an SPTK spectral
//! envelope, so the numbers compare models of this project with each other, not with published
//! MCDs.
use std::time::Instant;

use serde::Serialize;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

use zoo_core::audio::{read_wav_mono, resample, save_spectrogram, write_wav, MelSpectrogram, WavFormat};

use super::corpus::Corpus;
use super::espeak::{self, Voice};
use super::listener::{digit_intelligibility, Intelligibility, Listener, DIGIT_WORDS};
use super::model::{SpeakOptions, TtsModel};
use super::train::is_held_out;
use crate::train::{log_mel_l1, mel_cepstra, mel_cepstral_distortion};
use crate::{Error, Result};

/// Mel-cepstral coefficients compared (c1..=c13).
pub const CEPSTRA: i64 = 13;

/// How far a synthesized log-mel is from a reference one, over the DTW path.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MelDistance {
    /// Mean |log-mel difference| per band and frame.
    pub mel_l1: f64,
    /// Mel-cepstral distortion in dB (see the module docs).
    pub mcd_db: f64,
    /// Length of the alignment path.
    pub frames: usize,
}

/// The dynamic-time-warping path between two sequences of frames (Euclidean cost; steps
/// (1, 0), (0, 1), (1, 1)), from (0, 0) to the last frames. Shapes: (T1, D), (T2, D).
pub fn dtw_path(a: &Tensor, b: &Tensor) -> Result<Vec<(usize, usize)>> {
    let (n, m) = (a.size()[0] as usize, b.size()[0] as usize);
    if n == 0 || m == 0 {
        return Err(Error::Input("dynamic time warping of an empty sequence".into()));
    }
    let cost = Vec::<f64>::try_from(
        &Tensor::f_cdist(&a.f_to_kind(Kind::Double)?, &b.f_to_kind(Kind::Double)?, 2.0, None)?
            .f_reshape([-1])?,
    )?;
    let mut acc = vec![f64::INFINITY; n * m];
    for i in 0..n {
        for j in 0..m {
            let best = if i == 0 && j == 0 {
                0.0
            } else {
                let up = if i > 0 { acc[(i - 1) * m + j] } else { f64::INFINITY };
                let left = if j > 0 { acc[i * m + j - 1] } else { f64::INFINITY };
                let diag = if i > 0 && j > 0 { acc[(i - 1) * m + j - 1] } else { f64::INFINITY };
                up.min(left).min(diag)
            };
            acc[i * m + j] = best + cost[i * m + j];
        }
    }
    let (mut i, mut j) = (n - 1, m - 1);
    let mut path = vec![(i, j)];
    while i > 0 || j > 0 {
        let diag = if i > 0 && j > 0 { acc[(i - 1) * m + j - 1] } else { f64::INFINITY };
        let up = if i > 0 { acc[(i - 1) * m + j] } else { f64::INFINITY };
        let left = if j > 0 { acc[i * m + j - 1] } else { f64::INFINITY };
        if diag <= up && diag <= left {
            (i, j) = (i - 1, j - 1);
        } else if up <= left {
            i -= 1;
        } else {
            j -= 1;
        }
        path.push((i, j));
    }
    path.reverse();
    Ok(path)
}

/// Distance of a synthesized log-mel from a reference one (both (n_mels, T), same bands),
/// aligned on their mel-cepstra.
pub fn mel_distance(synth: &Tensor, reference: &Tensor) -> Result<MelDistance> {
    if synth.size()[0] != reference.size()[0] {
        return Err(Error::Input(format!(
            "mel distance of {} and {} bands",
            synth.size()[0],
            reference.size()[0]
        )));
    }
    let ceps = |m: &Tensor| -> Result<Tensor> { Ok(mel_cepstra(m, CEPSTRA)?.f_transpose(0, 1)?) };
    let path = dtw_path(&ceps(synth)?, &ceps(reference)?)?;
    let frames = |f: fn(&(usize, usize)) -> usize, m: &Tensor| -> Result<Tensor> {
        let idx = Tensor::f_from_slice(&path.iter().map(|p| f(p) as i64).collect::<Vec<_>>())?;
        Ok(m.f_index_select(1, &idx.f_to_device(m.device())?)?)
    };
    let (ms, mr) = (frames(|p| p.0, synth)?, frames(|p| p.1, reference)?);
    Ok(MelDistance {
        mel_l1: log_mel_l1(&mr, &ms)?,
        mcd_db: mel_cepstral_distortion(&mr, &ms, CEPSTRA)?,
        frames: path.len(),
    })
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Seeds each digit is spoken with.
    pub seeds: Vec<u64>,
    pub speak: SpeakOptions,
    /// Held-out sentences of the corpus to compare (at most; 0: none).
    pub sentences: usize,
    /// The espeak-ng voice whose renderings of the digits are the reference (None: skipped).
    pub reference_voice: Option<Voice>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            seeds: vec![0, 1, 2],
            speak: SpeakOptions::default(),
            sentences: 24,
            reference_voice: Some(Voice::new("en-us", 175)),
        }
    }
}

/// The measurements of one model.
#[derive(Debug, Clone, Serialize)]
pub struct TtsReport {
    /// The model with Griffin-Lim.
    pub intelligibility: Intelligibility,
    /// espeak-ng's own renderings, when it was asked for and is installed.
    pub reference_intelligibility: Option<Intelligibility>,
    /// Mean over the held-out sentences (None without a corpus).
    pub distance: Option<MelDistance>,
    /// The held-out sentences compared (what [`real_time_factor`] times).
    pub sentences: Vec<String>,
}

/// The held-out utterances of a corpus for a model trained with `valid_every` (every
/// `valid_every`-th in file order, as training holds them out), at most `max`.
pub fn held_out_utterances(corpus: &Corpus, valid_every: usize, max: usize) -> Vec<usize> {
    (0..corpus.utterances.len()).filter(|&i| is_held_out(i, valid_every)).take(max).collect()
}

/// The log-mel of utterance `i`'s recording in `front`'s settings (resampled to its rate).
pub fn reference_mel(corpus: &Corpus, i: usize, front: &MelSpectrogram) -> Result<Tensor> {
    let wav = corpus.wav_path(&corpus.utterances[i]);
    (|| -> Result<Tensor> {
        let a = read_wav_mono(&wav)?;
        let x = resample(&a.samples.f_reshape([-1])?, a.sample_rate, front.config().sample_rate)?;
        Ok(front.forward(&x)?)
    })()
    .map_err(|e| Error::Data(format!("{}: {e}", wav.display())))
}

/// Measures `model` (see the module docs): intelligibility with `listener`, and with a
/// `corpus` the distance to its held-out recordings.
pub fn evaluate(
    model: &TtsModel,
    listener: &Listener,
    corpus: Option<&Corpus>,
    o: &EvalOptions,
) -> Result<TtsReport> {
    let intelligibility = digit_intelligibility(listener, &o.seeds, |word, seed| {
        Ok(model.speak(word, &SpeakOptions { seed, ..o.speak.clone() })?.audio)
    })?;
    let reference_intelligibility = match &o.reference_voice {
        Some(v) if espeak::available() => {
            Some(digit_intelligibility(listener, &[0], |w, _| espeak::render(w, v))?)
        }
        _ => None,
    };
    let mut report =
        TtsReport { intelligibility, reference_intelligibility, distance: None, sentences: Vec::new() };
    let Some(corpus) = corpus else { return Ok(report) };
    let front = MelSpectrogram::new(&model.file.data.mel, Device::Cpu)?;
    let (mut l1, mut mcd, mut frames) = (0.0, 0.0, 0usize);
    let held = held_out_utterances(corpus, model.file.train.valid_every, o.sentences);
    for &i in &held {
        let u = &corpus.utterances[i];
        let reference = reference_mel(corpus, i, &front)?;
        let (mel, _, _) = model.text_to_mel(u.spoken_text(), &o.speak)?;
        let d = mel_distance(&mel, &reference)?;
        l1 += d.mel_l1;
        mcd += d.mcd_db;
        frames += d.frames;
        report.sentences.push(u.spoken_text().to_string());
    }
    if !held.is_empty() {
        let n = held.len() as f64;
        report.distance = Some(MelDistance { mel_l1: l1 / n, mcd_db: mcd / n, frames });
    }
    Ok(report)
}

/// Files to listen to and look at, written into `out`: each digit said with `o`
/// (`digit-<word>.wav`) and, with a corpus, its first three held-out sentences
/// (`sentence-<k>.wav`, `.txt`, and the log-mel spectrograms `sentence-<k>-model.png` and
/// `sentence-<k>-reference.png`). Returns the files written.
pub fn write_samples(
    model: &TtsModel,
    corpus: Option<&Corpus>,
    o: &SpeakOptions,
    out: &Path,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut written = Vec::new();
    let picture = |mel: &Tensor, p: PathBuf| -> Result<PathBuf> {
        save_spectrogram(mel, &p)?;
        Ok(p)
    };
    for w in DIGIT_WORDS {
        let p = out.join(format!("digit-{w}.wav"));
        write_wav(&p, &model.speak(w, o)?.audio, WavFormat::Pcm16)?;
        written.push(p);
    }
    let Some(corpus) = corpus else { return Ok(written) };
    let front = MelSpectrogram::new(&model.file.data.mel, Device::Cpu)?;
    for (k, i) in held_out_utterances(corpus, model.file.train.valid_every, 3).into_iter().enumerate() {
        let text = corpus.utterances[i].spoken_text();
        let s = model.speak(text, o)?;
        let (wav, txt) = (out.join(format!("sentence-{k}.wav")), out.join(format!("sentence-{k}.txt")));
        write_wav(&wav, &s.audio, WavFormat::Pcm16)?;
        zoo_core::fsutil::atomic_write_bytes(&txt, format!("{text}\n").as_bytes())?;
        written.extend([wav, txt]);
        written.push(picture(&s.mel, out.join(format!("sentence-{k}-model.png")))?);
        written.push(picture(
            &reference_mel(corpus, i, &front)?,
            out.join(format!("sentence-{k}-reference.png")),
        )?);
    }
    Ok(written)
}

/// Speaks `texts` with `threads` libtorch threads (the previous number is restored after) and
/// returns (seconds of speech, seconds of computing), text to waveform.
pub fn real_time_factor(
    model: &TtsModel,
    texts: &[String],
    o: &SpeakOptions,
    threads: usize,
) -> Result<(f64, f64)> {
    let before = tch::get_num_threads();
    tch::set_num_threads(threads.max(1) as i32);
    let run = || -> Result<(f64, f64)> {
        let (mut speech, mut compute) = (0.0, 0.0);
        for text in texts {
            let t0 = Instant::now();
            let s = model.speak(text, o)?;
            compute += t0.elapsed().as_secs_f64();
            speech += s.audio.duration_secs();
        }
        Ok((speech, compute))
    };
    let out = run();
    tch::set_num_threads(before);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(rows: &[&[f64]]) -> Tensor {
        let flat: Vec<f64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_slice(&flat).view([rows.len() as i64, rows[0].len() as i64])
    }

    /// Brute force: the cheapest monotone path over all paths of small cases.
    fn brute(a: &[f64], b: &[f64]) -> f64 {
        fn go(a: &[f64], b: &[f64], i: usize, j: usize) -> f64 {
            let c = (a[i] - b[j]).abs();
            if i + 1 == a.len() && j + 1 == b.len() {
                return c;
            }
            let mut best = f64::INFINITY;
            if i + 1 < a.len() {
                best = best.min(go(a, b, i + 1, j));
            }
            if j + 1 < b.len() {
                best = best.min(go(a, b, i, j + 1));
            }
            if i + 1 < a.len() && j + 1 < b.len() {
                best = best.min(go(a, b, i + 1, j + 1));
            }
            c + best
        }
        go(a, b, 0, 0)
    }

    #[test]
    fn dtw_finds_the_cheapest_monotone_path() {
        let a: [f64; 5] = [0.0, 1.0, 1.0, 3.0, 2.0];
        let b: [f64; 6] = [0.0, 3.0, 2.5, 1.0, 1.0, 2.0];
        let ta = Tensor::from_slice(&a).view([5, 1]);
        let tb = Tensor::from_slice(&b).view([6, 1]);
        let path = dtw_path(&ta, &tb).unwrap();
        assert_eq!(path.first(), Some(&(0, 0)));
        assert_eq!(path.last(), Some(&(4, 5)));
        for w in path.windows(2) {
            let (di, dj) = (w[1].0 - w[0].0, w[1].1 - w[0].1);
            assert!(di <= 1 && dj <= 1 && di + dj >= 1);
        }
        let cost: f64 = path.iter().map(|&(i, j)| (a[i] - b[j]).abs()).sum();
        assert!((cost - brute(&a, &b)).abs() < 1e-12, "{cost} vs {}", brute(&a, &b));
        // A sequence against itself slowed down: the path pairs each frame with its copies.
        let slow = t(&[&[0.0], &[0.0], &[1.0], &[1.0], &[5.0], &[5.0]]);
        let p = dtw_path(&t(&[&[0.0], &[1.0], &[5.0]]), &slow).unwrap();
        assert_eq!(p, vec![(0, 0), (0, 1), (1, 2), (1, 3), (2, 4), (2, 5)]);
        assert!(dtw_path(&Tensor::zeros([0, 1], (Kind::Double, Device::Cpu)), &slow).is_err());
    }

    #[test]
    fn cepstra_are_an_orthonormal_dct_and_distance_is_zero_for_a_copy() {
        // A constant log-mel has only c0, which is left out.
        let flat = Tensor::ones([80, 7], (Kind::Float, Device::Cpu)) * 3.0;
        let c = mel_cepstra(&flat, CEPSTRA).unwrap();
        assert_eq!(c.size(), vec![13, 7]);
        assert!(c.abs().max().double_value(&[]) < 1e-9);
        // Orthonormal: a pure basis row gives 1 at its coefficient.
        let k = Tensor::arange(80, (Kind::Double, Device::Cpu));
        let row = ((k + 0.5) * (3.0 * std::f64::consts::PI / 80.0)).cos() * (2.0f64 / 80.0).sqrt();
        let c = mel_cepstra(&row.view([80, 1]), CEPSTRA).unwrap();
        assert!((c.double_value(&[2, 0]) - 1.0).abs() < 1e-9);
        assert!(c.double_value(&[0, 0]).abs() < 1e-9);
        let mel = Tensor::randn([80, 30], (Kind::Float, Device::Cpu));
        let d = mel_distance(&mel, &mel).unwrap();
        assert_eq!((d.mel_l1, d.mcd_db, d.frames), (0.0, 0.0, 30));
        // A copy stretched in time is still at distance zero; a different one is not.
        let stretched = mel.repeat_interleave_self_int(2, 1, None);
        assert!(mel_distance(&mel, &stretched).unwrap().mcd_db < 1e-9);
        let other = Tensor::randn([80, 30], (Kind::Float, Device::Cpu));
        let d = mel_distance(&mel, &other).unwrap();
        assert!(d.mel_l1 > 0.3 && d.mcd_db > 1.0, "{d:?}");
        assert!(mel_distance(&mel, &Tensor::zeros([40, 3], (Kind::Float, Device::Cpu))).is_err());
    }
}
