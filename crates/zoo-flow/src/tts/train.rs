//! Training Glow-TTS on a corpus in the LJSpeech layout.
//!
//! As jaywalnut310/glow-tts's `train.py`: the MLE loss of the mel under the alignment MAS finds
//! plus the duration loss, Adam, ActNorm initialised from the first batch (its `ddi`). Here
//! with zoo-core's Trainer (exact resume), a warmup and cosine decay instead of the reference's
//! Noam schedule, and length-bucketed batches.
//!
//! Features are computed once: each utterance's symbol ids (the corpus's normalised text when
//! it gives one) and the log-mel of its audio, resampled to the mel front end's rate. They are
//! cached in the run folder (`features.safetensors`, keyed by a fingerprint of the metadata,
//! the WAVs' sizes and times and the data settings), so a resumed run does not recompute them.
//!
//! Batches: each epoch shuffles the training utterances (from the run's seed and the epoch),
//! cuts the order into chunks of [`BUCKET_BATCHES`] batches, sorts each chunk by mel length and
//! cuts it into batches, then shuffles the batches; so a batch holds utterances of similar
//! length (little padding) and every utterance is seen once per epoch. Batch `step` is a pure
//! function of (seed, step), as exact resume needs.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};
use zoo_core::audio::{read_wav_mono, resample, MelSpectrogram};
use zoo_core::run::RunDir;
use zoo_core::train::trainer::{Outcome, Reporter};
use zoo_core::train::{AdamW, AdamWConfig, LoopConfig, StepOutput, TrainTask, Trainer};

use super::corpus::{Corpus, METADATA};
use super::glow_tts::GlowTts;
use super::model::{TtsFile, TtsModel};
use super::text::describe_chars;
use crate::train::to_core;
use crate::{Error, Result};

/// Batches per length-sorted chunk of an epoch.
pub const BUCKET_BATCHES: usize = 8;
/// The feature cache in a run folder.
pub const FEATURES_FILE: &str = "features.safetensors";
/// Where the model goes at the end of a run: `<run>/model/`.
pub const MODEL_DIR: &str = "model";

/// Every utterance's symbol ids and log-mel.
pub struct Features {
    /// Utterance IDs, in corpus order.
    pub names: Vec<String>,
    /// (T_text) int64 each.
    pub ids: Vec<Tensor>,
    /// (n_mels, frames) f32 each.
    pub mels: Vec<Tensor>,
    /// Characters dropped from the texts as outside the symbol set.
    pub dropped: Vec<char>,
}

impl Features {
    /// Computes the features of every utterance of `corpus` for `file`'s data settings.
    pub fn compute(corpus: &Corpus, file: &TtsFile) -> Result<Features> {
        let meta = corpus.root.join(METADATA);
        let mel_cfg = &file.data.mel;
        let fe = MelSpectrogram::new(mel_cfg, Device::Cpu)?;
        let mut f = Features { names: Vec::new(), ids: Vec::new(), mels: Vec::new(), dropped: Vec::new() };
        for u in &corpus.utterances {
            let (ids, dropped) = file
                .encode(u.spoken_text())
                .map_err(|e| Error::Data(format!("{}: utterance {}: {e}", meta.display(), u.id)))?;
            for c in dropped {
                if !f.dropped.contains(&c) {
                    f.dropped.push(c);
                }
            }
            let wav = corpus.wav_path(u);
            let mel = (|| -> Result<Tensor> {
                let a = read_wav_mono(&wav)?;
                let x = resample(&a.samples.f_reshape([-1])?, a.sample_rate, mel_cfg.sample_rate)?;
                Ok(fe.forward(&x.f_reshape([-1])?)?)
            })()
            .map_err(|e| Error::Data(format!("{}: {e}", wav.display())))?;
            f.names.push(u.id.clone());
            f.ids.push(Tensor::f_from_slice(&ids)?);
            f.mels.push(mel);
        }
        Ok(f)
    }

    /// The features from `cache` when it was made from this corpus with these settings, else
    /// computed and written there (atomically).
    pub fn load_or_compute(corpus: &Corpus, file: &TtsFile, cache: &Path) -> Result<(Features, bool)> {
        let key = fingerprint(corpus, file)?;
        if let Ok(f) = Features::load(cache, &key) {
            return Ok((f, true));
        }
        let f = Features::compute(corpus, file)?;
        f.save(cache, &key)?;
        Ok((f, false))
    }

    fn save(&self, path: &Path, key: &str) -> Result<()> {
        let mut tensors = Vec::with_capacity(2 * self.names.len());
        for (i, (ids, mel)) in self.ids.iter().zip(&self.mels).enumerate() {
            tensors.push((format!("ids.{i}"), ids.shallow_clone()));
            tensors.push((format!("mel.{i}"), mel.shallow_clone()));
        }
        let meta = HashMap::from([
            ("fingerprint".to_string(), key.to_string()),
            ("names".to_string(), self.names.join("\n")),
            ("dropped".to_string(), self.dropped.iter().collect()),
        ]);
        Ok(zoo_core::weights::save(path, &tensors, Some(meta))?)
    }

    fn load(path: &Path, key: &str) -> Result<Features> {
        let file = zoo_core::weights::SafetensorsFile::open(path)?;
        let meta = file.metadata()?;
        if meta.get("fingerprint").map(String::as_str) != Some(key) {
            return Err(Error::Data("stale feature cache".into()));
        }
        let names: Vec<String> =
            meta.get("names").map(|s| s.lines().map(str::to_string).collect()).unwrap_or_default();
        let mut by_name: HashMap<String, Tensor> = file.tensors()?.into_iter().collect();
        let mut take =
            |k: String| by_name.remove(&k).ok_or_else(|| Error::Data(format!("feature cache lacks {k}")));
        let (mut ids, mut mels) = (Vec::new(), Vec::new());
        for i in 0..names.len() {
            ids.push(take(format!("ids.{i}"))?);
            mels.push(take(format!("mel.{i}"))?);
        }
        let dropped = meta.get("dropped").map(|s| s.chars().collect()).unwrap_or_default();
        Ok(Features { names, ids, mels, dropped })
    }
}

/// FNV-1a over the metadata file, each WAV's name, size and modification time, and the data
/// settings: a cache made from other audio or settings does not match.
fn fingerprint(corpus: &Corpus, file: &TtsFile) -> Result<String> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    };
    let meta = corpus.root.join(METADATA);
    eat(&std::fs::read(&meta).map_err(|e| Error::io(&meta, e))?);
    for u in &corpus.utterances {
        let p = corpus.wav_path(u);
        let m = std::fs::metadata(&p).map_err(|e| Error::io(&p, e))?;
        let t = m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        eat(u.id.as_bytes());
        eat(&m.len().to_le_bytes());
        eat(&t.map_or(0, |d| d.as_nanos()).to_le_bytes());
    }
    eat(serde_json::to_string(&file.data).map_err(|e| Error::Config(e.to_string()))?.as_bytes());
    Ok(format!("{h:016x}"))
}

/// Length-bucketed batches of the training utterances, a pure function of (seed, step).
pub struct Batches {
    /// Indices into the features, with their mel lengths.
    items: Vec<(usize, i64)>,
    batch: usize,
    seed: u64,
    cache: Mutex<Option<(u64, Vec<Vec<usize>>)>>,
}

impl Batches {
    pub fn new(items: Vec<(usize, i64)>, batch: usize, seed: u64) -> Self {
        Batches { items, batch: batch.max(1), seed, cache: Mutex::new(None) }
    }

    /// Batches per epoch.
    pub fn per_epoch(&self) -> usize {
        self.items.len().div_ceil(self.batch)
    }

    /// The batches of epoch `epoch`, each a list of feature indices.
    pub fn epoch(&self, epoch: u64) -> Vec<Vec<usize>> {
        let mut rng = StdRng::seed_from_u64(zoo_core::seed::step_seed(self.seed, 7, epoch));
        let mut order = self.items.clone();
        order.shuffle(&mut rng);
        let mut batches = Vec::with_capacity(self.per_epoch());
        for chunk in order.chunks_mut(self.batch * BUCKET_BATCHES) {
            chunk.sort_by_key(|&(_, len)| len);
            batches.extend(chunk.chunks(self.batch).map(|b| b.iter().map(|&(i, _)| i).collect()));
        }
        batches.shuffle(&mut rng);
        batches
    }

    /// The feature indices of batch `step` (0-based).
    pub fn at(&self, step: u64) -> Vec<usize> {
        let per = self.per_epoch().max(1) as u64;
        let (epoch, k) = (step / per, (step % per) as usize);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.as_ref().is_none_or(|(e, _)| *e != epoch) {
            *cache = Some((epoch, self.epoch(epoch)));
        }
        cache.as_ref().map(|(_, b)| b[k].clone()).unwrap_or_default()
    }
}

/// Pads examples into a batch: ids (B, T_text), text lengths (B), mels (B, n_mels, T_mel),
/// mel lengths (B), zeros beyond each length.
pub fn collate(features: &Features, idx: &[usize], device: Device) -> Result<[Tensor; 4]> {
    let ids: Vec<&Tensor> = idx.iter().map(|&i| &features.ids[i]).collect();
    let mels: Vec<&Tensor> = idx.iter().map(|&i| &features.mels[i]).collect();
    let t_text = ids.iter().map(|t| t.size()[0]).max().unwrap_or(0);
    let t_mel = mels.iter().map(|t| t.size()[1]).max().unwrap_or(0);
    let ids_p =
        ids.iter().map(|t| t.f_constant_pad_nd([0, t_text - t.size()[0]])).collect::<Result<Vec<_>, _>>()?;
    let mels_p =
        mels.iter().map(|t| t.f_constant_pad_nd([0, t_mel - t.size()[1]])).collect::<Result<Vec<_>, _>>()?;
    let tl: Vec<i64> = ids.iter().map(|t| t.size()[0]).collect();
    let ml: Vec<i64> = mels.iter().map(|t| t.size()[1]).collect();
    Ok([
        Tensor::f_stack(&ids_p, 0)?.f_to_device(device)?,
        Tensor::f_from_slice(&tl)?.f_to_device(device)?,
        Tensor::f_stack(&mels_p, 0)?.f_to_device(device)?,
        Tensor::f_from_slice(&ml)?.f_to_device(device)?,
    ])
}

/// The Glow-TTS training task for zoo-core's Trainer: loss = MLE + duration loss.
pub struct TtsTask<'a> {
    model: &'a GlowTts,
    features: &'a Features,
    batches: Batches,
    valid: Vec<usize>,
    device: Device,
}

impl<'a> TtsTask<'a> {
    pub fn new(
        model: &'a GlowTts,
        features: &'a Features,
        split: &Split,
        batch: usize,
        seed: u64,
        device: Device,
    ) -> Self {
        let items = split.train.iter().map(|&i| (i, features.mels[i].size()[1])).collect();
        TtsTask {
            model,
            features,
            batches: Batches::new(items, batch, seed),
            valid: split.valid.clone(),
            device,
        }
    }

    /// Mean MLE and duration losses over the held-out utterances (no dropout), in batches of
    /// the same length-sorted order every time.
    pub fn valid_losses(&self, batch: usize) -> Result<Option<(f64, f64)>> {
        if self.valid.is_empty() {
            return Ok(None);
        }
        let mut v = self.valid.clone();
        v.sort_by_key(|&i| self.features.mels[i].size()[1]);
        let (mut mle, mut dur) = (0.0, 0.0);
        tch::no_grad(|| -> Result<()> {
            for b in v.chunks(batch.max(1)) {
                let [ids, tl, mel, ml] = collate(self.features, b, self.device)?;
                let l = self.model.loss(&ids, &tl, &mel, &ml, false)?;
                mle += l.mle.f_double_value(&[])? * b.len() as f64;
                dur += l.duration.f_double_value(&[])? * b.len() as f64;
            }
            Ok(())
        })?;
        let n = v.len() as f64;
        Ok(Some((mle / n, dur / n)))
    }
}

impl TrainTask for TtsTask<'_> {
    fn loss(&mut self, step: u64, _micro: u32, _rng: &mut StdRng) -> zoo_core::Result<StepOutput> {
        let run = || -> Result<StepOutput> {
            let idx = self.batches.at(step);
            let [ids, tl, mel, ml] = collate(self.features, &idx, self.device)?;
            let l = self.model.loss(&ids, &tl, &mel, &ml, true)?;
            let metrics = vec![
                ("mle".to_string(), l.mle.f_double_value(&[])?),
                ("duration_loss".to_string(), l.duration.f_double_value(&[])?),
            ];
            Ok(StepOutput { loss: l.mle.f_add(&l.duration)?, metrics })
        };
        run().map_err(to_core)
    }

    fn eval(&mut self, _step: u64) -> zoo_core::Result<Vec<(String, f64)>> {
        let batch = self.batches.batch;
        Ok(match self.valid_losses(batch).map_err(to_core)? {
            Some((mle, dur)) => vec![
                ("val_mle".into(), mle),
                ("val_duration_loss".into(), dur),
                ("val_loss".into(), mle + dur),
            ],
            None => Vec::new(),
        })
    }
}

/// Which utterances train and which are held out.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    pub train: Vec<usize>,
    pub valid: Vec<usize>,
    /// Left out: longer than `max_frames`, or fewer mel frames than symbols (the alignment
    /// needs at least one frame per symbol).
    pub skipped: Vec<String>,
}

impl Split {
    /// Every `valid_every`-th utterance held out; the unusable ones skipped.
    pub fn new(features: &Features, file: &TtsFile) -> Result<Split> {
        let t = &file.train;
        let n_sqz = file.model.n_sqz;
        let mut s = Split { train: Vec::new(), valid: Vec::new(), skipped: Vec::new() };
        for i in 0..features.names.len() {
            let frames = features.mels[i].size()[1] / n_sqz * n_sqz;
            let tokens = features.ids[i].size()[0];
            if frames < tokens || (t.max_frames > 0 && frames > t.max_frames) {
                s.skipped.push(features.names[i].clone());
            } else if is_held_out(i, t.valid_every) {
                s.valid.push(i);
            } else {
                s.train.push(i);
            }
        }
        if s.train.is_empty() {
            return Err(Error::Data(format!(
                "no utterance to train on: {} held out, {} skipped (too long, or fewer mel frames than symbols)",
                s.valid.len(),
                s.skipped.len()
            )));
        }
        Ok(s)
    }
}

/// Whether utterance `i` (in corpus order) is held out from training: every `valid_every`-th
/// (none when it is 0).
pub fn is_held_out(i: usize, valid_every: usize) -> bool {
    valid_every > 0 && i % valid_every == valid_every - 1
}

/// What a run was started with; a resumed run must repeat it (its length may change).
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSpec {
    /// The preset's name (or path), for the record.
    pub preset: String,
    pub file: TtsFile,
    pub corpus: PathBuf,
    pub seed: u64,
}

impl TrainSpec {
    /// The config.json of the run folder.
    pub fn run_config(&self) -> Value {
        let mut stored = self.file.clone();
        stored.train.steps = 0;
        json!({
            "preset": self.preset,
            "corpus": self.corpus.display().to_string(),
            "seed": self.seed,
            "steps": self.file.train.steps,
            "tts": stored,
        })
    }

    /// The spec a run folder was started with (to resume it without naming the preset again).
    pub fn from_run(out: &Path) -> Result<TrainSpec> {
        let cfg = RunDir::open(out)?.config()?;
        let bad = || Error::Config(format!("{}: config.json is not a text-to-speech run", out.display()));
        let mut file: TtsFile = serde_json::from_value(cfg["tts"].clone()).map_err(|_| bad())?;
        file.train.steps = cfg["steps"].as_u64().ok_or_else(bad)?;
        Ok(TrainSpec {
            preset: cfg["preset"].as_str().unwrap_or_default().to_string(),
            file,
            corpus: PathBuf::from(cfg["corpus"].as_str().ok_or_else(bad)?),
            seed: cfg["seed"].as_u64().ok_or_else(bad)?,
        })
    }
}

/// A run being prepared or trained: the run folder, the model, the features and the split.
pub struct Training {
    pub spec: TrainSpec,
    pub run: RunDir,
    pub model: TtsModel,
    pub features: Features,
    pub split: Split,
    /// Whether the features came from the run's cache.
    pub cached_features: bool,
    /// The step the run continues from (0 for a new run).
    pub start: u64,
}

impl Training {
    /// Opens the corpus (a missing WAV or a malformed metadata line is an error naming it),
    /// creates the run folder in `out` (or reopens it with `resume`: then it must have been
    /// started with the same recipe, corpus and seed), computes or loads the features, and
    /// builds the model (initial weights from `spec.seed`).
    pub fn prepare(mut spec: TrainSpec, out: &Path, resume: bool, device: Device) -> Result<Training> {
        spec.file.validate()?;
        let corpus = Corpus::open(&spec.corpus)?;
        // The same corpus is the same folder, whatever path names it.
        spec.corpus = std::fs::canonicalize(&spec.corpus).map_err(|e| Error::io(&spec.corpus, e))?;
        let cfg = spec.run_config();
        if resume {
            let old = RunDir::open(out)?.config()?;
            for key in ["tts", "corpus", "seed"] {
                if old[key] != cfg[key] {
                    return Err(Error::Config(format!(
                        "{}: the run was started with another {key}; resume it with its own settings",
                        out.display()
                    )));
                }
            }
        }
        let run = RunDir::create(out, &cfg, resume)?;
        let (features, cached_features) =
            Features::load_or_compute(&corpus, &spec.file, &run.root().join(FEATURES_FILE))?;
        let split = Split::new(&features, &spec.file)?;
        zoo_core::seed::seed_all(spec.seed);
        let model = TtsModel::new(&spec.file, device)?;
        let start = run.latest_checkpoint()?.map_or(0, |(_, s)| s.step);
        if start > 0 {
            // Refused here, before the caller reports a run it will not train.
            zoo_core::train::steps_left(start, spec.file.train.steps)?;
        }
        Ok(Training { spec, run, model, features, split, cached_features, start })
    }

    pub fn loop_config(&self) -> LoopConfig {
        let t = &self.spec.file.train;
        LoopConfig {
            steps: t.steps,
            grad_accum: 1,
            clip_grad: t.clip_grad,
            log_every: t.checkpoint_every.min(10),
            eval_every: Some(t.checkpoint_every),
            sample_every: None,
            checkpoint_every: Some(t.checkpoint_every),
            keep_checkpoints: 2,
            seed: self.spec.seed,
        }
    }

    /// Trains from the latest checkpoint to the recipe's steps. `should_stop` replaces the
    /// check for a stop request (tests).
    pub fn run(&mut self, reporter: &mut dyn Reporter, should_stop: Option<fn() -> bool>) -> Result<Outcome> {
        let file = &self.spec.file;
        let vs = &self.model.vs;
        let opt = AdamW::new(
            vs,
            AdamWConfig { lr: file.train.learning_rate, weight_decay: 0.0, ..Default::default() },
        );
        let mut tr = Trainer::new(&self.run, vs, opt, file.schedule(), self.loop_config())?;
        if let Some(f) = should_stop {
            tr.should_stop = f;
        }
        let device = vs.device();
        let mut task = TtsTask::new(
            &self.model.model,
            &self.features,
            &self.split,
            file.train.batch_size,
            self.spec.seed,
            device,
        );
        // (`prepare` has refused a run with no steps left)
        let start = tr.resume(&mut task)?;
        self.start = start;
        Ok(tr.run(&mut task, start, reporter)?)
    }

    /// Writes the model folder `<run>/model/` (weights in `kind`); returns its path.
    pub fn save_model(&self, kind: Kind) -> Result<PathBuf> {
        let dir = self.run.root().join(MODEL_DIR);
        self.model.save(&dir, kind)?;
        Ok(dir)
    }

    /// One line about the data: utterances used, held out, skipped, and dropped characters.
    pub fn data_summary(&self) -> String {
        let secs: f64 = self
            .split
            .train
            .iter()
            .map(|&i| self.features.mels[i].size()[1] as f64 * self.spec.file.data.mel.hop_length as f64)
            .sum::<f64>()
            / f64::from(self.spec.file.data.mel.sample_rate);
        let mut s = format!(
            "{} training utterances ({:.1} minutes), {} held out",
            self.split.train.len(),
            secs / 60.0,
            self.split.valid.len()
        );
        if !self.split.skipped.is_empty() {
            s.push_str(&format!(
                ", {} skipped (too long or too short for their text)",
                self.split.skipped.len()
            ));
        }
        if !self.features.dropped.is_empty() {
            s.push_str(&format!(
                "; dropped symbols outside the {} set: {}",
                self.spec.file.data.symbols.name(),
                describe_chars(&self.features.dropped)
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tts_batches_cover_each_epoch_and_bucket_by_length() {
        let items: Vec<(usize, i64)> = (0..50).map(|i| (i, (i as i64 * 37) % 101)).collect();
        let b = Batches::new(items.clone(), 4, 3);
        assert_eq!(b.per_epoch(), 13);
        let mut seen: Vec<usize> = (0..13).flat_map(|s| b.at(s)).collect();
        seen.sort();
        assert_eq!(seen, (0..50).collect::<Vec<_>>());
        // A pure function of (seed, step): another sampler agrees, in any order of calls.
        let b2 = Batches::new(items.clone(), 4, 3);
        assert_eq!(b2.at(20), b.at(20));
        assert_eq!(b2.at(3), b.at(3));
        assert_ne!(Batches::new(items.clone(), 4, 4).epoch(0), b.epoch(0));
        // Within a batch, lengths come from one sorted chunk of 32: spread far below random.
        let len = |i: usize| items[i].1;
        let spread: i64 = (0..12)
            .map(|s| {
                let v: Vec<i64> = b.at(s).into_iter().map(len).collect();
                v.iter().max().unwrap() - v.iter().min().unwrap()
            })
            .sum();
        assert!(spread < 12 * 40, "{spread}");
    }
}
