//! A listener for the intelligibility test: a spoken-digit classifier trained on real people
//! (the Free Spoken Digit Dataset), asked which digit a synthesized "zero" .. "nine" says.
//!
//! What it hears: the audio resampled to 8 kHz (FSDD's rate), a 40-band log-mel with a 10 ms
//! hop, trimmed to the frames within [`ListenerConfig::trim_db`] of the loudest one (so the
//! silence a synthesizer leaves around a word does not matter), normalised to zero mean and unit
//! variance (so the level does not matter), and fitted to [`ListenerConfig::frames`] frames
//! (centred; padded with the utterance's quietest value).
//!
//! The network: three 3x3 convolutions (GroupNorm, ReLU, 2x2 max-pool), a mean over time
//! (the frequency bands kept apart), dropout and a linear layer to ten logits.
//!
//! Training holds out whole speakers (the accuracy on them is what the model card reports) and
//! widens the six voices it learns from, so that voices it never heard (a synthesizer's) are
//! judged on the word and not on the voice: each recording is also used played faster and
//! slower (0.87x .. 1.18x, which moves pitch and formants as a different vocal tract would),
//! and each example gets a random placement in the window, one frequency and one time mask
//! (SpecAugment) and a little noise.
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};
use zoo_core::audio::{read_wav_mono, resample, Audio, MelConfig, MelSpectrogram};
use zoo_core::layers::{Conv2d, GroupNorm, Linear};
use zoo_core::run::RunDir;
use zoo_core::train::trainer::{Outcome, Reporter};
use zoo_core::train::{AdamW, AdamWConfig, LoopConfig, LrSchedule, StepOutput, TrainTask, Trainer};

use crate::train::to_core;
use crate::{Error, Result};

/// The ten words, index = digit.
pub use super::text::DIGIT_WORDS;
/// The listener's settings file in its folder.
pub const CONFIG_FILE: &str = "config.json";
/// The listener's weights in its folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Sample rates the training recordings are also resampled to and then played at 8 kHz: speeds
/// 8000 / r, from 1.18x (faster, higher) to 0.87x.
pub const SPEED_RATES: [u32; 5] = [6800, 7400, 8000, 8600, 9200];

/// What the listener hears and how big it is (its config.json).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListenerConfig {
    pub mel: MelConfig,
    /// Frames of the window the network sees (10 ms each with the default mel).
    pub frames: i64,
    /// Frames quieter than the loudest by more than this (dB) are trimmed from both ends.
    pub trim_db: f64,
    /// Output channels of the three convolutions.
    pub channels: Vec<i64>,
    pub dropout: f64,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            mel: MelConfig {
                sample_rate: 8000,
                n_fft: 256,
                hop_length: 80,
                win_length: 200,
                n_mels: 40,
                fmin: 20.0,
                fmax: Some(4000.0),
            },
            frames: 96,
            trim_db: 40.0,
            channels: vec![32, 64, 128],
            dropout: 0.3,
        }
    }
}

impl ListenerConfig {
    pub fn validate(&self) -> Result<()> {
        self.mel.validate()?;
        if self.frames < 8 || self.channels.is_empty() || self.channels.iter().any(|&c| c < 1) {
            return Err(Error::Config(format!(
                "listener config: frames must be at least 8 and channels positive, got {} and {:?}",
                self.frames, self.channels
            )));
        }
        if !(0.0..1.0).contains(&self.dropout) || self.trim_db.is_nan() || self.trim_db <= 0.0 {
            return Err(Error::Config(format!(
                "listener config: dropout must be in [0, 1) and trim_db positive, got {} and {}",
                self.dropout, self.trim_db
            )));
        }
        Ok(())
    }
}

/// The classifier network. Shapes: (B, n_mels, frames) -> (B, 10) logits.
#[derive(Debug)]
struct Net {
    convs: Vec<(Conv2d, GroupNorm)>,
    fc: Linear,
    dropout: f64,
}

impl Net {
    fn new(p: &tch::nn::Path, cfg: &ListenerConfig) -> Result<Net> {
        let mut convs = Vec::new();
        let mut c_in = 1;
        for (i, &c) in cfg.channels.iter().enumerate() {
            let conv = Conv2d::new(p / format!("conv{i}"), c_in, c, 3, 1, 1)?;
            let norm = GroupNorm::new(p / format!("norm{i}"), group_count(c), c, 1e-5)?;
            convs.push((conv, norm));
            c_in = c;
        }
        // Each pooling halves the bands (rounding up); the bands stay apart to the end.
        let bands = (0..cfg.channels.len()).fold(cfg.mel.n_mels, |b, _| (b + 1) / 2);
        let fc = Linear::new(p / "fc", c_in * bands, 10)?;
        Ok(Net { convs, fc, dropout: cfg.dropout })
    }

    fn logits(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = x.f_unsqueeze(1)?;
        for (conv, norm) in &self.convs {
            h = norm.forward(&conv.forward(&h)?)?.f_relu()?.f_max_pool2d(
                [2, 2],
                [2, 2],
                [0, 0],
                [1, 1],
                true,
            )?;
        }
        // The mean over time; the frequency bands stay apart (where the energy is says the
        // vowel).
        let h = h
            .f_mean_dim(&[3i64][..], false, Kind::Float)?
            .f_flatten(1, -1)?
            .f_dropout(self.dropout, train)?;
        Ok(self.fc.forward(&h)?)
    }
}

/// Groups of the GroupNorm after a convolution of `c` channels: 8 when they divide it.
fn group_count(c: i64) -> i64 {
    if c % 8 == 0 {
        8
    } else {
        1
    }
}

/// A spoken-digit classifier with its front end.
pub struct Listener {
    pub vs: VarStore,
    pub cfg: ListenerConfig,
    net: Net,
    front: MelSpectrogram,
}

/// What the listener made of one recording.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Heard {
    pub digit: usize,
    /// The softmax probability of that digit.
    pub confidence: f64,
}

impl Listener {
    /// A freshly initialised listener (weights from libtorch's generator).
    pub fn new(cfg: &ListenerConfig, device: Device) -> Result<Listener> {
        cfg.validate()?;
        let vs = VarStore::new(device);
        let net = Net::new(&vs.root(), cfg)?;
        let front = MelSpectrogram::new(&cfg.mel, Device::Cpu)?;
        Ok(Listener { vs, cfg: cfg.clone(), net, front })
    }

    /// Loads a listener folder (config.json + model.safetensors, as [`Listener::save`] writes).
    pub fn load(dir: &Path, device: Device) -> Result<Listener> {
        let path = dir.join(CONFIG_FILE);
        if !path.is_file() {
            return Err(Error::Config(format!(
                "{} is not a listener folder (no {CONFIG_FILE}); train one with `zoo eval train-listener`",
                dir.display()
            )));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let cfg: ListenerConfig =
            serde_json::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        let l = Listener::new(&cfg, device)?;
        zoo_core::weights::load_into(&l.vs, &dir.join(WEIGHTS_FILE), &zoo_core::weights::keep_names)?;
        Ok(l)
    }

    /// Writes config.json and model.safetensors (f32) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let text = serde_json::to_string_pretty(&self.cfg).map_err(|e| Error::Config(e.to_string()))?;
        zoo_core::fsutil::atomic_write_bytes(&dir.join(CONFIG_FILE), text.as_bytes())?;
        zoo_core::weights::save_varstore(&self.vs, &dir.join(WEIGHTS_FILE))?;
        Ok(())
    }

    /// The normalised, trimmed log-mel of `audio` (any rate, any channels): (n_mels, frames)
    /// of the trimmed length.
    pub fn hear(&self, audio: &Audio) -> Result<Tensor> {
        let mono = audio.to_mono();
        let x = mono.samples.f_reshape([-1])?.f_to_kind(Kind::Float)?;
        let x = resample(&x, audio.sample_rate, self.cfg.mel.sample_rate)?;
        self.hear_8k(&x)
    }

    /// [`Listener::hear`] of samples already at the listener's rate.
    fn hear_8k(&self, x: &Tensor) -> Result<Tensor> {
        // Pad very short clips with silence so the STFT has enough samples.
        let min = self.cfg.mel.n_fft / 2 + 1;
        let n = x.size()[0];
        let x = if n < min { x.f_constant_pad_nd([0, min - n])? } else { x.shallow_clone() };
        let m = self.front.forward(&x)?;
        // Frame loudness: the log of the summed mel magnitudes.
        let loud =
            m.f_exp()?.f_sum_dim_intlist(&[0i64][..], false, Kind::Float)?.f_clamp_min(1e-10)?.f_log()?;
        let loud = Vec::<f32>::try_from(&loud)?;
        let peak = loud.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        // dB of magnitude: 20 log10, so trim_db dB is trim_db / 20 * ln 10 in natural log.
        let floor = peak - (self.cfg.trim_db / 20.0 * std::f64::consts::LN_10) as f32;
        let first = loud.iter().position(|&v| v >= floor).unwrap_or(0);
        let last = loud.iter().rposition(|&v| v >= floor).unwrap_or(loud.len().saturating_sub(1));
        let m = m.f_narrow(1, first as i64, (last + 1 - first) as i64)?;
        let mean = m.f_mean(Kind::Float)?;
        let std = m.f_std(false)?.f_clamp_min(1e-3)?;
        Ok(m.f_sub(&mean)?.f_div(&std)?)
    }

    /// Fits a heard log-mel into the window: a longer one is cut at `offset` (centred when
    /// `None`), a shorter one placed at `offset` (centred) in a window of its quietest value.
    fn fit(&self, m: &Tensor, offset: Option<i64>) -> Result<Tensor> {
        let (t, w) = (m.size()[1], self.cfg.frames);
        if t >= w {
            let o = offset.unwrap_or((t - w) / 2).clamp(0, t - w);
            return Ok(m.f_narrow(1, o, w)?);
        }
        let o = offset.unwrap_or((w - t) / 2).clamp(0, w - t);
        let low = m.f_min()?.f_double_value(&[])?;
        Ok(m.f_pad([o, w - t - o], "constant", low)?)
    }

    /// The digit each recording says. Empty input gives an empty answer.
    pub fn classify(&self, clips: &[Audio]) -> Result<Vec<Heard>> {
        let heard = clips.iter().map(|a| self.hear(a)).collect::<Result<Vec<_>>>()?;
        self.judge(&heard)
    }

    /// The digit each heard log-mel (from [`Listener::hear`]) says, its window centred.
    fn judge(&self, heard: &[Tensor]) -> Result<Vec<Heard>> {
        if heard.is_empty() {
            return Ok(Vec::new());
        }
        let windows = heard.iter().map(|m| self.fit(m, None)).collect::<Result<Vec<_>>>()?;
        let x = Tensor::f_stack(&windows, 0)?.f_to_device(self.vs.device())?;
        let p = tch::no_grad(|| -> Result<Tensor> {
            Ok(self.net.logits(&x, false)?.f_softmax(-1, Kind::Float)?)
        })?;
        let (conf, idx) = p.f_max_dim(-1, false)?;
        let conf = Vec::<f32>::try_from(&conf.f_to_device(Device::Cpu)?)?;
        let idx = Vec::<i64>::try_from(&idx.f_to_device(Device::Cpu)?)?;
        Ok(idx
            .into_iter()
            .zip(conf)
            .map(|(d, c)| Heard { digit: d as usize, confidence: f64::from(c) })
            .collect())
    }

    /// Trainable parameters.
    pub fn n_params(&self) -> i64 {
        self.vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
    }
}

/// One recording of the Free Spoken Digit Dataset: `<digit>_<speaker>_<index>.wav`.
#[derive(Debug, Clone, PartialEq)]
pub struct FsddClip {
    pub path: PathBuf,
    pub digit: usize,
    pub speaker: String,
}

/// The recordings of an FSDD folder, sorted by name. Other files are ignored; a folder with
/// none is an error naming it.
pub fn fsdd_clips(dir: &Path) -> Result<Vec<FsddClip>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut clips = Vec::new();
    for e in entries {
        let path = e.map_err(|e| Error::io(dir, e))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        let Some(stem) = name.strip_suffix(".wav") else { continue };
        let parts: Vec<&str> = stem.split('_').collect();
        if let [d, speaker, idx] = parts[..] {
            if let (Ok(digit), true) = (d.parse::<usize>(), idx.parse::<u32>().is_ok()) {
                if digit < 10 && !speaker.is_empty() {
                    clips.push(FsddClip { path: path.clone(), digit, speaker: speaker.to_string() });
                }
            }
        }
    }
    if clips.is_empty() {
        return Err(Error::Data(format!(
            "{}: no Free Spoken Digit Dataset recordings (<digit>_<speaker>_<index>.wav)",
            dir.display()
        )));
    }
    clips.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(clips)
}

/// How a listener is trained (the run folder's config.json).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListenerSpec {
    /// The FSDD folder.
    pub data: PathBuf,
    /// Speakers kept out of training; the accuracy on them is the listener's score.
    pub held_out: Vec<String>,
    pub steps: u64,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub seed: u64,
    /// Widen the voices (speeds, placement, masks, noise; see the module docs). Without it
    /// each recording is heard once, as recorded, centred.
    pub augment: bool,
    pub listener: ListenerConfig,
}

impl ListenerSpec {
    /// The recipe of the shipped listener: 3,000 steps of 64, speakers theo and yweweler held out.
    pub fn new(data: &Path, seed: u64) -> ListenerSpec {
        ListenerSpec {
            data: data.to_path_buf(),
            held_out: vec!["theo".into(), "yweweler".into()],
            steps: 3000,
            batch_size: 64,
            learning_rate: 2e-3,
            seed,
            augment: true,
            listener: ListenerConfig::default(),
        }
    }
}

/// Heard log-mels of the training recordings (with augmentation each at every speed of
/// [`SPEED_RATES`], else as recorded) and of the held-out ones (as recorded).
pub struct ListenerData {
    /// train[i][s]: recording i at speed s.
    pub train: Vec<Vec<Tensor>>,
    pub train_digits: Vec<usize>,
    pub test: Vec<Tensor>,
    pub test_digits: Vec<usize>,
    pub train_speakers: Vec<String>,
}

impl ListenerData {
    pub fn load(listener: &Listener, spec: &ListenerSpec) -> Result<ListenerData> {
        let clips = fsdd_clips(&spec.data)?;
        let mut speakers: Vec<String> = clips.iter().map(|c| c.speaker.clone()).collect();
        speakers.sort();
        speakers.dedup();
        for h in &spec.held_out {
            if !speakers.contains(h) {
                return Err(Error::Input(format!(
                    "held-out speaker {h:?} has no recordings in {} (speakers: {})",
                    spec.data.display(),
                    speakers.join(", ")
                )));
            }
        }
        let rate = listener.cfg.mel.sample_rate;
        let mut d = ListenerData {
            train: Vec::new(),
            train_digits: Vec::new(),
            test: Vec::new(),
            test_digits: Vec::new(),
            train_speakers: speakers.iter().filter(|s| !spec.held_out.contains(s)).cloned().collect(),
        };
        if d.train_speakers.is_empty() {
            return Err(Error::Input("every speaker is held out: nobody is left to train on".into()));
        }
        for c in &clips {
            let heard = (|| -> Result<Vec<Tensor>> {
                let a = read_wav_mono(&c.path)?;
                let x = resample(&a.samples.f_reshape([-1])?, a.sample_rate, rate)?;
                if spec.held_out.contains(&c.speaker) || !spec.augment {
                    return Ok(vec![listener.hear_8k(&x)?]);
                }
                SPEED_RATES.iter().map(|&r| listener.hear_8k(&resample(&x, rate, r * rate / 8000)?)).collect()
            })()
            .map_err(|e| Error::Data(format!("{}: {e}", c.path.display())))?;
            if spec.held_out.contains(&c.speaker) {
                d.test.extend(heard);
                d.test_digits.push(c.digit);
            } else {
                d.train.push(heard);
                d.train_digits.push(c.digit);
            }
        }
        Ok(d)
    }
}

/// The listener's training task: cross-entropy on augmented windows; held-out accuracy.
pub struct ListenerTask<'a> {
    listener: &'a Listener,
    data: &'a ListenerData,
    batch: usize,
    augment: bool,
    device: Device,
}

impl ListenerTask<'_> {
    /// An augmented window of training recording `i` (see the module docs); without
    /// augmentation the recording centred.
    fn example(&self, i: usize, rng: &mut StdRng) -> Result<Tensor> {
        let variants = &self.data.train[i];
        if !self.augment {
            return self.listener.fit(&variants[0], None);
        }
        let m = &variants[rng.gen_range(0..variants.len())];
        let (t, w) = (m.size()[1], self.listener.cfg.frames);
        let offset = rng.gen_range(0..=(t - w).abs());
        let x = self.listener.fit(m, Some(offset))?.copy();
        let (n_mels, frames) = (x.size()[0], x.size()[1]);
        // SpecAugment: one band of mels and one stretch of frames set to 0 (the mean).
        let fw = rng.gen_range(0..=n_mels / 6);
        let f0 = rng.gen_range(0..=n_mels - fw);
        let tw = rng.gen_range(0..=frames / 10);
        let t0 = rng.gen_range(0..=frames - tw);
        let _ = x.f_narrow(0, f0, fw)?.f_fill_(0.0)?;
        let _ = x.f_narrow(1, t0, tw)?.f_fill_(0.0)?;
        let noise_std = rng.gen_range(0.0..0.2);
        let noise: Vec<f32> =
            (0..n_mels * frames).map(|_| (rng.gen::<f32>() - 0.5) * 2.0 * noise_std * 1.732).collect();
        let noise = Tensor::f_from_slice(&noise)?.f_view([n_mels, frames])?;
        Ok(x.f_add(&noise)?)
    }

    /// Accuracy on the held-out speakers (no augmentation, centred windows).
    pub fn test_accuracy(&self) -> Result<Option<f64>> {
        if self.data.test.is_empty() {
            return Ok(None);
        }
        let mut correct = 0usize;
        for (chunk, digits) in self.data.test.chunks(256).zip(self.data.test_digits.chunks(256)) {
            let heard = self.listener.judge(chunk)?;
            correct += heard.iter().zip(digits).filter(|(h, d)| h.digit == **d).count();
        }
        Ok(Some(correct as f64 / self.data.test.len() as f64))
    }
}

impl TrainTask for ListenerTask<'_> {
    fn loss(&mut self, _step: u64, _micro: u32, rng: &mut StdRng) -> zoo_core::Result<StepOutput> {
        let run = |rng: &mut StdRng| -> Result<StepOutput> {
            let n = self.data.train.len();
            let idx: Vec<usize> = (0..self.batch).map(|_| rng.gen_range(0..n)).collect();
            let xs = idx.iter().map(|&i| self.example(i, rng)).collect::<Result<Vec<_>>>()?;
            let ys: Vec<i64> = idx.iter().map(|&i| self.data.train_digits[i] as i64).collect();
            let x = Tensor::f_stack(&xs, 0)?.f_to_device(self.device)?;
            let y = Tensor::f_from_slice(&ys)?.f_to_device(self.device)?;
            let logits = self.listener.net.logits(&x, true)?;
            let loss = logits.f_cross_entropy_loss::<Tensor>(&y, None, tch::Reduction::Mean, -100, 0.0)?;
            let acc =
                logits.f_argmax(-1, false)?.f_eq_tensor(&y)?.f_to_kind(Kind::Float)?.f_mean(Kind::Float)?;
            Ok(StepOutput { loss, metrics: vec![("train_accuracy".into(), acc.f_double_value(&[])?)] })
        };
        run(rng).map_err(to_core)
    }

    fn eval(&mut self, _step: u64) -> zoo_core::Result<Vec<(String, f64)>> {
        Ok(match self.test_accuracy().map_err(to_core)? {
            Some(a) => vec![("val_accuracy".into(), a)],
            None => Vec::new(),
        })
    }
}

/// A finished listener training: the listener and its held-out accuracy.
pub struct TrainedListener {
    pub listener: Listener,
    pub outcome: Outcome,
    /// Accuracy on the held-out speakers' recordings (None when none is held out).
    pub held_out_accuracy: Option<f64>,
    pub held_out_clips: usize,
    pub train_clips: usize,
    pub train_speakers: Vec<String>,
}

/// Trains a listener in the run folder `run` (exact resume with `resume`: then the spec must be
/// the one the run was started with). `should_stop` replaces the check for a stop request.
pub fn train_listener(
    spec: &ListenerSpec,
    run: &Path,
    resume: bool,
    device: Device,
    reporter: &mut dyn Reporter,
    should_stop: Option<fn() -> bool>,
) -> Result<TrainedListener> {
    if spec.steps == 0 || spec.batch_size == 0 || spec.learning_rate.is_nan() || spec.learning_rate <= 0.0 {
        return Err(Error::Config(
            "listener training: steps, batch size and learning rate must be positive".into(),
        ));
    }
    let cfg: Value = json!({"listener_training": spec});
    if resume {
        let old = RunDir::open(run)?.config()?;
        if old != cfg {
            return Err(Error::Config(format!(
                "{}: the run was started with other settings; resume it with its own",
                run.display()
            )));
        }
    }
    zoo_core::seed::seed_all(spec.seed);
    let listener = Listener::new(&spec.listener, device)?;
    // The recordings first: a bad data folder leaves no run folder behind.
    let data = ListenerData::load(&listener, spec)?;
    let dir = RunDir::create(run, &cfg, resume)?;
    let loop_cfg = LoopConfig {
        steps: spec.steps,
        grad_accum: 1,
        clip_grad: Some(5.0),
        log_every: 10,
        eval_every: Some(500),
        sample_every: None,
        checkpoint_every: Some(500),
        keep_checkpoints: 2,
        seed: spec.seed,
    };
    let opt = AdamW::new(
        &listener.vs,
        AdamWConfig { lr: spec.learning_rate, weight_decay: 1e-4, ..Default::default() },
    );
    let schedule = LrSchedule::WarmupCosine {
        lr: spec.learning_rate,
        min_lr: spec.learning_rate / 20.0,
        warmup_steps: 100.min(spec.steps / 10),
        decay_steps: spec.steps,
    };
    let mut tr = Trainer::new(&dir, &listener.vs, opt, schedule, loop_cfg)?;
    if let Some(f) = should_stop {
        tr.should_stop = f;
    }
    let mut task = ListenerTask {
        listener: &listener,
        data: &data,
        batch: spec.batch_size,
        augment: spec.augment,
        device,
    };
    let start = tr.resume_to_continue(&mut task)?;
    let outcome = tr.run(&mut task, start, reporter)?;
    let held_out_accuracy = task.test_accuracy()?;
    drop(tr);
    Ok(TrainedListener {
        held_out_accuracy,
        held_out_clips: data.test.len(),
        train_clips: data.train.len(),
        train_speakers: data.train_speakers.clone(),
        outcome,
        listener,
    })
}

/// One synthesized digit and what the listener heard.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DigitTrial {
    pub digit: usize,
    pub seed: u64,
    pub heard: usize,
    pub confidence: f64,
}

/// The intelligibility test: every digit word spoken with every seed, and what was heard.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Intelligibility {
    pub trials: Vec<DigitTrial>,
}

impl Intelligibility {
    /// Fraction of trials heard as the digit said.
    pub fn accuracy(&self) -> f64 {
        if self.trials.is_empty() {
            return 0.0;
        }
        self.trials.iter().filter(|t| t.heard == t.digit).count() as f64 / self.trials.len() as f64
    }

    /// The words heard wrong, as "seven -> one" once each with a count when repeated.
    pub fn mistakes(&self) -> Vec<String> {
        let mut out: Vec<(String, usize)> = Vec::new();
        for t in self.trials.iter().filter(|t| t.heard != t.digit) {
            let s = format!("{} -> {}", DIGIT_WORDS[t.digit], DIGIT_WORDS[t.heard]);
            match out.iter_mut().find(|(k, _)| *k == s) {
                Some((_, n)) => *n += 1,
                None => out.push((s, 1)),
            }
        }
        out.into_iter().map(|(s, n)| if n > 1 { format!("{s} (x{n})") } else { s }).collect()
    }
}

/// Speaks each of "zero" .. "nine" once per seed with `speak(word, seed)` and asks the listener
/// which digit it heard.
pub fn digit_intelligibility(
    listener: &Listener,
    seeds: &[u64],
    mut speak: impl FnMut(&str, u64) -> Result<Audio>,
) -> Result<Intelligibility> {
    let mut clips = Vec::new();
    let mut asked = Vec::new();
    for (digit, word) in DIGIT_WORDS.iter().enumerate() {
        for &seed in seeds {
            clips.push(speak(word, seed)?);
            asked.push((digit, seed));
        }
    }
    let heard = listener.classify(&clips)?;
    let trials = asked
        .into_iter()
        .zip(heard)
        .map(|((digit, seed), h)| DigitTrial { digit, seed, heard: h.digit, confidence: h.confidence })
        .collect();
    Ok(Intelligibility { trials })
}

#[cfg(test)]
mod tests {
    use super::*;
    use zoo_core::audio::chirp;

    #[test]
    fn fsdd_names_are_parsed_and_other_files_ignored() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["3_alice_0.wav", "10_bob_1.wav", "x_bob_1.wav", "7_bob_2.wav", "README.md", "7_bob.wav"]
        {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let clips = fsdd_clips(dir.path()).unwrap();
        let got: Vec<(usize, &str)> = clips.iter().map(|c| (c.digit, c.speaker.as_str())).collect();
        assert_eq!(got, vec![(3, "alice"), (7, "bob")]);
        let empty = tempfile::tempdir().unwrap();
        let err = fsdd_clips(empty.path()).unwrap_err().to_string();
        assert!(err.contains("no Free Spoken Digit Dataset recordings"), "{err}");
    }

    #[test]
    fn hearing_ignores_level_rate_and_surrounding_silence() {
        tch::manual_seed(0);
        let l = Listener::new(&ListenerConfig::default(), Device::Cpu).unwrap();
        let tone = chirp(8000, 0.4, 300.0, 1200.0);
        let a = l.hear(&Audio::new(tone.shallow_clone(), 8000).unwrap()).unwrap();
        // Louder, with half a second of silence on each side: the same frames.
        let padded = (tone.shallow_clone() * 0.25).constant_pad_nd([4000, 4000]);
        let b = l.hear(&Audio::new(padded, 8000).unwrap()).unwrap();
        assert_eq!(a.size()[0], 40);
        assert!((a.size()[1] - b.size()[1]).abs() <= 2, "{:?} {:?}", a.size(), b.size());
        // Each band's average over the word: the same within a frame's worth of difference.
        let band = |m: &Tensor| m.mean_dim(&[1i64][..], false, Kind::Float);
        let d = (band(&a) - band(&b)).abs().max().double_value(&[]);
        assert!(d < 0.25, "{d}");
        // The same sound at 22.05 kHz is heard nearly as at 8 kHz.
        let hi = resample(&tone, 8000, 22050).unwrap();
        let c = l.hear(&Audio::new(hi, 22050).unwrap()).unwrap();
        assert!((c.size()[1] - a.size()[1]).abs() <= 1);
        // Normalised: zero mean, unit variance.
        assert!(a.mean(Kind::Float).double_value(&[]).abs() < 1e-4);
        assert!((a.std(false).double_value(&[]) - 1.0).abs() < 1e-3);
        // Windows are always `frames` wide; a too-short clip still gives one.
        let w = l.fit(&a, None).unwrap();
        assert_eq!(w.size(), vec![40, 96]);
        let tiny =
            l.hear(&Audio::new(Tensor::zeros([10], (Kind::Float, Device::Cpu)), 8000).unwrap()).unwrap();
        assert_eq!(l.fit(&tiny, None).unwrap().size(), vec![40, 96]);
        assert!(l.classify(&[]).unwrap().is_empty());
    }

    /// Two synthetic "speakers" saying ten "digits" (tones of different pitch contours): the
    /// listener learns them from one speaker and recognises the held-out one, the folder round
    /// trips, and the intelligibility test scores a perfect and a useless synthesizer.
    #[test]
    fn listener_learns_held_out_speakers_and_scores_synthesizers() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("fsdd");
        std::fs::create_dir(&data).unwrap();
        // A "digit" is a glide from a pitch that names it; a speaker shifts the pitch a little.
        let word = |digit: usize, shift: f64, len: f64| {
            let f0 = 300.0 * 2f64.powf(digit as f64 / 4.0) * shift;
            chirp(8000, len, f0, f0 * 1.5)
        };
        for (speaker, shift) in [("ann", 1.0), ("bob", 1.04), ("cy", 0.97)] {
            for digit in 0..10 {
                for k in 0..4 {
                    let a = Audio::new(word(digit, shift, 0.3 + 0.05 * k as f64) * 0.5, 8000).unwrap();
                    let p = data.join(format!("{digit}_{speaker}_{k}.wav"));
                    zoo_core::audio::write_wav(&p, &a, zoo_core::audio::WavFormat::Pcm16).unwrap();
                }
            }
        }
        let mut spec = ListenerSpec::new(&data, 0);
        spec.held_out = vec!["cy".into()];
        spec.steps = 200;
        spec.batch_size = 16;
        // Speeds would blur pitch-coded "digits" into each other.
        spec.augment = false;
        spec.listener.channels = vec![8, 16, 16];
        let run = dir.path().join("run");
        let t = train_listener(&spec, &run, false, Device::Cpu, &mut zoo_core::train::trainer::Silent, None)
            .unwrap();
        assert_eq!((t.train_clips, t.held_out_clips), (80, 40));
        assert_eq!(t.train_speakers, vec!["ann".to_string(), "bob".to_string()]);
        let acc = t.held_out_accuracy.unwrap();
        assert!(acc >= 0.8, "held-out accuracy {acc}");
        let out = dir.path().join("listener");
        t.listener.save(&out).unwrap();
        let back = Listener::load(&out, Device::Cpu).unwrap();
        let perfect = digit_intelligibility(&back, &[0, 1], |w, _| {
            let d = DIGIT_WORDS.iter().position(|x| *x == w).unwrap();
            Audio::new(resample(&word(d, 1.0, 0.4), 8000, 22050)?, 22050).map_err(Into::into)
        })
        .unwrap();
        assert_eq!(perfect.trials.len(), 20);
        assert!(perfect.accuracy() >= 0.8, "{:?}", perfect.mistakes());
        let useless =
            digit_intelligibility(&back, &[0], |_, _| Ok(Audio::new(word(3, 1.0, 0.4), 8000)?)).unwrap();
        // One word for every digit: heard as that word each time, so right once in ten, and
        // each other digit named once among the mistakes.
        assert!(useless.trials.iter().all(|t| t.heard == 3), "{:?}", useless.trials);
        assert_eq!(useless.accuracy(), 0.1);
        assert_eq!(useless.mistakes().len(), 9, "{:?}", useless.mistakes());
        // Resuming with other settings is refused, naming the run.
        spec.steps = 10;
        let err = train_listener(&spec, &run, true, Device::Cpu, &mut zoo_core::train::trainer::Silent, None)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("other settings"), "{err}");
        // Held-out speakers must exist.
        spec.held_out = vec!["zed".into()];
        let err = train_listener(
            &spec,
            &dir.path().join("run2"),
            false,
            Device::Cpu,
            &mut zoo_core::train::trainer::Silent,
            None,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("\"zed\""), "{err}");
    }
}
