//! Stage 1, pretraining: next-token prediction on raw text (`zoo llm train`).
//!
//! The recipe follows nanoGPT's `train.py`: random blocks of the packed token file, AdamW with
//! weight decay on matrices and embeddings only, linear warmup then cosine decay to `min_lr`,
//! gradient accumulation and clipping, and periodic evaluation. The defaults of
//! [`PretrainOptions`] are nanoGPT's CPU recipe for `shakespeare_char` (4 layers, 4 heads,
//! 128 wide, block 64, batch 12, lr 1e-3 -> 1e-4, 2000 steps, warmup 100, beta2 0.99).
//!
//! Evaluation differs on purpose: nanoGPT estimates the loss from 20 (CPU recipe) random
//! batches; here every evaluation scores the same fixed, evenly spread, non-overlapping
//! windows (up to `eval_windows` of them, by default the whole validation split), so curves
//! are smooth and runs compare exactly.
//!
//! A run folder (see `zoo_core::run`) gets, besides checkpoints and metrics: `tokenizer.json`
//! and `data/tokens.{bin,json}` (the packed corpus, reused on `--resume`), `samples/` (a text
//! sample per evaluation), `best/` (the model folder with the lowest validation loss so far)
//! and `final/` (the model at the last step).
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::Device;
use zoo_core::run::RunDir;
use zoo_core::train::trainer::Reporter;
use zoo_core::train::{AdamW, AdamWConfig, LoopConfig, LrSchedule, StepOutput, TrainTask, Trainer};

use super::data::{self, TokenData};
use super::{core_err, eval_loss, lm_loss, open_for_training, save_model_dir};
use crate::config::ModelConfig;
use crate::generate::{generate_sliding, GenerateConfig};
use crate::model::Model;
use crate::sampling::SamplingConfig;
use crate::tokenizer::{train_bpe, CharTokenizer, Tokenizer};
use crate::{Error, Result};

/// Everything a pretraining run is started with; stored as the run's `config.json`, and a
/// `--resume` must give the same (only `steps` may change).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainOptions {
    /// A text file, or a folder of `.txt`/`.md` files.
    pub data: PathBuf,
    /// A preset of `models/llm/` or a model folder to continue.
    pub model: String,
    /// `char`, `bpe:N` (train a byte-level BPE of N tokens on the data) or a `tokenizer.json`;
    /// `None`: the model folder's own tokenizer, or `char` for a preset.
    pub tokenizer: Option<String>,
    pub steps: u64,
    pub batch_size: i64,
    /// Tokens per training window; `None`: the model's context length.
    pub block_size: Option<i64>,
    pub grad_accum: u32,
    pub lr: f64,
    /// `None`: lr / 10.
    pub min_lr: Option<f64>,
    pub warmup_steps: u64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub clip_grad: Option<f64>,
    /// Replaces the config's dropout rates.
    pub dropout: Option<f64>,
    pub val_fraction: f64,
    /// Evaluate (and sample, and keep the best model) every N steps; 0 never.
    pub eval_every: u64,
    /// Most windows per evaluation and split.
    pub eval_windows: usize,
    /// Characters of text sampled at each evaluation (0: none).
    pub sample_chars: usize,
    pub seed: u64,
}

impl Default for PretrainOptions {
    /// nanoGPT's CPU recipe for `shakespeare_char` (README, "I only have a macbook").
    fn default() -> Self {
        PretrainOptions {
            data: PathBuf::new(),
            model: "shakespeare-char".into(),
            tokenizer: None,
            steps: 2000,
            batch_size: 12,
            block_size: None,
            grad_accum: 1,
            lr: 1e-3,
            min_lr: None,
            warmup_steps: 100,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.99,
            clip_grad: Some(1.0),
            dropout: None,
            val_fraction: 0.1,
            eval_every: 250,
            eval_windows: 4096,
            sample_chars: 200,
            seed: 0,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PretrainOutcome {
    pub steps: u64,
    pub interrupted: bool,
    pub params: i64,
    pub train_tokens: usize,
    pub val_tokens: usize,
    /// Validation and training loss at the last evaluation (NaN without one).
    pub val_loss: f64,
    pub train_loss: f64,
    pub best_val_loss: f64,
    /// Wall time of the steps run in this process, and the training tokens they consumed per
    /// second (evaluations included).
    pub seconds: f64,
    pub tokens_per_second: f64,
    pub final_dir: Option<PathBuf>,
    pub best_dir: Option<PathBuf>,
}

/// Next-token prediction on random blocks; evaluation on fixed windows of both splits.
pub struct PretrainTask<'a> {
    pub model: &'a Model,
    vs: &'a tch::nn::VarStore,
    config: &'a ModelConfig,
    tokenizer: &'a Tokenizer,
    data: &'a TokenData,
    batch: i64,
    block: i64,
    eval_windows: usize,
    sample_chars: usize,
    seed: u64,
    device: Device,
    best_dir: PathBuf,
    pub best_val: f64,
    pub last_eval: (f64, f64),
    notes: Vec<String>,
}

impl TrainTask for PretrainTask<'_> {
    fn loss(
        &mut self,
        _step: u64,
        _micro: u32,
        rng: &mut rand::rngs::StdRng,
    ) -> zoo_core::Result<StepOutput> {
        let (x, y) = data::random_batch(&self.data.train, self.batch, self.block, rng, self.device)
            .map_err(core_err)?;
        let logits = self.model.forward(&x, None, None, true).map_err(core_err)?;
        Ok(StepOutput { loss: lm_loss(&logits, &y).map_err(core_err)?, metrics: Vec::new() })
    }

    fn eval(&mut self, step: u64) -> zoo_core::Result<Vec<(String, f64)>> {
        let r = (|| -> Result<Vec<(String, f64)>> {
            let batch = (16384 / self.block).max(1) as usize;
            let vs = data::eval_starts(self.data.val.len(), self.block, self.eval_windows);
            let val = eval_loss(self.model, &self.data.val, &vs, self.block, batch, self.device)?;
            let ts = data::eval_starts(self.data.train.len(), self.block, vs.len().max(1));
            let train = eval_loss(self.model, &self.data.train, &ts, self.block, batch, self.device)?;
            self.last_eval = (val, train);
            if val < self.best_val {
                self.best_val = val;
                save_model_dir(&self.best_dir, self.vs, self.config, Some(self.tokenizer))?;
                self.notes
                    .push(format!("step {step}: best val loss so far, saved in {}", self.best_dir.display()));
            }
            Ok(vec![("val_loss".into(), val), ("train_loss".into(), train), ("val_ppl".into(), val.exp())])
        })();
        r.map_err(core_err)
    }

    fn sample(&mut self, step: u64, dir: &Path) -> zoo_core::Result<()> {
        if self.sample_chars == 0 {
            return Ok(());
        }
        let r = (|| -> Result<()> {
            // Seeded per step, so samples repeat and the training draws are untouched.
            zoo_core::seed::seed_all(zoo_core::seed::step_seed(self.seed, 1, step));
            let n = (self.block / 4).clamp(1, 32) as usize;
            let prompt: Vec<i64> = self.data.val.iter().take(n).map(|&t| t as i64).collect();
            let gen = GenerateConfig {
                max_new_tokens: self.sample_chars,
                sampling: SamplingConfig { temperature: 0.8, top_k: Some(200), ..Default::default() },
                eos_token_ids: self.config.eos_token_ids(),
                ..Default::default()
            };
            let text =
                tch::no_grad(|| generate_sliding(self.model, self.tokenizer, &prompt, self.block, &gen))?;
            let prompt_text = self.tokenizer.decode(&prompt)?;
            let p = dir.join(format!("step-{step:06}.txt"));
            let all = format!("{prompt_text}{text}");
            zoo_core::fsutil::atomic_write_bytes(&p, all.as_bytes())?;
            self.notes.push(format!("sample at step {step}:\n{all}\n"));
            Ok(())
        })();
        r.map_err(core_err)
    }

    fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }
}

/// The tokenizer of a new run: `spec` (`char`, `bpe:N`, a file), else the model folder's own,
/// else `char`.
fn resolve_tokenizer(
    spec: Option<&str>,
    files: &[PathBuf],
    model_tok: Option<Tokenizer>,
) -> Result<Tokenizer> {
    match spec {
        Some("char") => {
            let mut text = String::new();
            for f in files {
                text.push_str(&data::read_text(f)?);
            }
            Ok(Tokenizer::Char(CharTokenizer::from_text(&text)?))
        }
        Some(s) if s.starts_with("bpe:") => {
            let n: usize = s[4..].parse().map_err(|_| {
                Error::Input(format!("--tokenizer {s}: bpe:N takes a vocabulary size, e.g. bpe:2048"))
            })?;
            let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
            train_bpe(&refs, n)
        }
        Some(path) => {
            let p = Path::new(path);
            if !p.is_file() {
                return Err(Error::Input(format!(
                    "--tokenizer {path}: not 'char', 'bpe:N' or an existing tokenizer.json"
                )));
            }
            Tokenizer::from_file(p)
        }
        None => match model_tok {
            Some(t) => Ok(t),
            None => resolve_tokenizer(Some("char"), files, None),
        },
    }
}

/// Runs (or, with `resume`, continues) pretraining into the run folder `out`.
pub fn pretrain(
    opts: &PretrainOptions,
    out: &Path,
    resume: bool,
    device: Device,
    reporter: &mut dyn Reporter,
) -> Result<PretrainOutcome> {
    if opts.steps == 0 {
        return Err(Error::Input("--steps must be at least 1".into()));
    }
    // 1. A resumed run must be the same recipe; only its length may change.
    if resume {
        let old = RunDir::open(out)?.config()?;
        let mut old_opts: PretrainOptions = serde_json::from_value(old).map_err(|e| {
            Error::Input(format!("--resume: {} is not a pretraining run: {e}", out.display()))
        })?;
        old_opts.steps = opts.steps;
        let as_json = |o: &PretrainOptions| serde_json::to_value(o).map_err(|e| Error::Input(e.to_string()));
        let changed = zoo_core::run::config_differences(&as_json(&old_opts)?, &as_json(opts)?);
        if !changed.is_empty() {
            return Err(Error::Input(format!(
                "--resume: {} was started with other settings ({} differ); resume with the run's own (only --steps may change)",
                out.display(),
                changed.join(", ")
            )));
        }
    } else if out.join("config.json").exists() && RunDir::open(out)?.started()? {
        return Err(Error::Input(format!(
            "{} already holds a run: pass --resume to continue it, or choose another --out",
            out.display()
        )));
    }

    // 2. Tokenizer and packed tokens: made once, reused on resume.
    let tok_path = out.join("tokenizer.json");
    let data_dir = out.join("data");
    let (tokenizer, data) = if resume {
        (Tokenizer::from_file(&tok_path)?, TokenData::load(&data_dir)?)
    } else {
        let files = data::text_files(&opts.data)?;
        let model_tok = match zoo_core::presets::names_folder(&opts.model, "llm") {
            true => Tokenizer::from_dir(Path::new(&opts.model))?,
            false => None,
        };
        let tok = resolve_tokenizer(opts.tokenizer.as_deref(), &files, model_tok)?;
        let sep = tok.token_id("<|endoftext|>").or_else(|| tok.token_id("</s>"));
        let data = TokenData::tokenize(&files, &tok, sep, opts.val_fraction)?;
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        tok.save(&tok_path)?;
        data.save(&data_dir)?;
        (tok, data)
    };

    // 3. The model (initial weights from the seed).
    zoo_core::seed::seed_all(opts.seed);
    let mut m = open_for_training(&opts.model, Some(tokenizer.vocab_size() as i64), opts.dropout, device)?;
    if m.dir.is_none() {
        // A preset's model ends its texts where the tokenizer does.
        let eos = tokenizer.token_id("<|endoftext|>").map(crate::config::TokenIds::One);
        match &mut m.config {
            ModelConfig::Gpt2(c) => (c.bos_token_id, c.eos_token_id) = (eos.clone(), eos),
            ModelConfig::Llama(c) => c.eos_token_id = eos,
        }
    }
    let block = opts.block_size.unwrap_or(m.config.context_len());
    if block < 1 || block > m.config.context_len() {
        return Err(Error::Input(format!(
            "--block-size {block} must be between 1 and the model's context of {}",
            m.config.context_len()
        )));
    }
    if opts.batch_size < 1 {
        return Err(Error::Input("--batch-size must be at least 1".into()));
    }
    for (name, part) in [("training", &data.train), ("validation", &data.val)] {
        if part.len() <= block as usize && (name == "training" || opts.eval_every > 0) {
            return Err(Error::Input(format!(
                "the {name} split has {} tokens, too few for blocks of {block}: use more text, a smaller --block-size or another --val-fraction",
                part.len()
            )));
        }
    }
    let params = m.vs.variables().values().map(|t| t.numel() as i64).sum();

    // 4. The loop.
    let run = RunDir::create(out, opts, resume)?;
    let opt = AdamW::new(
        &m.vs,
        AdamWConfig {
            lr: opts.lr,
            beta1: opts.beta1,
            beta2: opts.beta2,
            eps: 1e-8,
            weight_decay: opts.weight_decay,
        },
    );
    let schedule = LrSchedule::WarmupCosine {
        lr: opts.lr,
        min_lr: opts.min_lr.unwrap_or(opts.lr / 10.0),
        warmup_steps: opts.warmup_steps.min(opts.steps),
        decay_steps: opts.steps,
    };
    let every = (opts.eval_every > 0).then_some(opts.eval_every);
    let loop_cfg = LoopConfig {
        steps: opts.steps,
        grad_accum: opts.grad_accum,
        clip_grad: opts.clip_grad,
        log_every: 10.min(opts.steps.max(1)),
        eval_every: every,
        sample_every: every.filter(|_| opts.sample_chars > 0),
        checkpoint_every: every,
        keep_checkpoints: 2,
        seed: opts.seed,
    };
    let mut trainer = Trainer::new(&run, &m.vs, opt, schedule, loop_cfg)?;
    let mut task = PretrainTask {
        model: &m.model,
        vs: &m.vs,
        config: &m.config,
        tokenizer: &tokenizer,
        data: &data,
        batch: opts.batch_size,
        block,
        eval_windows: opts.eval_windows,
        sample_chars: opts.sample_chars,
        seed: opts.seed,
        device,
        best_dir: out.join("best"),
        best_val: f64::INFINITY,
        last_eval: (f64::NAN, f64::NAN),
        notes: Vec::new(),
    };
    let start = trainer.resume(&mut task)?;
    zoo_core::train::steps_left(start, opts.steps)?;
    // The best model so far is the lowest val loss the (truncated) metrics hold.
    for r in run.metrics()? {
        if let Some(v) = r.get("val_loss").and_then(serde_json::Value::as_f64) {
            task.best_val = task.best_val.min(v);
        }
    }
    let t0 = Instant::now();
    let outcome = trainer.run(&mut task, start, reporter)?;
    let seconds = t0.elapsed().as_secs_f64();
    let tokens = (outcome.steps - start) as f64 * (opts.batch_size * block) as f64 * opts.grad_accum as f64;
    let (val_loss, train_loss) = task.last_eval;
    let best_val = task.best_val;
    drop(task);
    drop(trainer);
    let final_dir = if outcome.interrupted {
        None
    } else {
        Some(save_model_dir(&out.join("final"), &m.vs, &m.config, Some(&tokenizer))?)
    };
    let best_dir = out.join("best");
    Ok(PretrainOutcome {
        steps: outcome.steps,
        interrupted: outcome.interrupted,
        params,
        train_tokens: data.train.len(),
        val_tokens: data.val.len(),
        val_loss,
        train_loss,
        best_val_loss: best_val,
        seconds,
        tokens_per_second: if seconds > 0.0 { tokens / seconds } else { 0.0 },
        final_dir,
        best_dir: best_dir.is_dir().then_some(best_dir),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(dir: &Path) -> PathBuf {
        let p = dir.join("corpus.txt");
        std::fs::write(&p, crate::demo::RHYMES.repeat(3)).unwrap();
        p
    }

    fn opts(data: PathBuf) -> PretrainOptions {
        PretrainOptions {
            data,
            model: "tiny-gpt2".into(),
            steps: 60,
            batch_size: 8,
            block_size: Some(32),
            lr: 3e-3,
            warmup_steps: 10,
            eval_every: 30,
            eval_windows: 64,
            sample_chars: 20,
            ..Default::default()
        }
    }

    #[test]
    fn trains_saves_and_refuses_bad_settings() {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(corpus(dir.path()));
        let out = dir.path().join("run");
        let r = pretrain(&o, &out, false, Device::Cpu, &mut zoo_core::train::trainer::Silent).unwrap();
        assert_eq!(r.steps, 60);
        assert!(r.val_loss < 3.0, "{r:?}"); // ln(vocab of ~40 chars) is about 3.7
        assert!(r.best_val_loss <= r.val_loss);
        for f in
            ["final/config.json", "final/model.safetensors", "final/tokenizer.json", "best/model.safetensors"]
        {
            assert!(out.join(f).is_file(), "{f}");
        }
        assert!(std::fs::read_to_string(out.join("samples/step-000060.txt")).unwrap().chars().count() > 20);
        // The saved folder loads for generation.
        let m = crate::LoadedModel::from_dir(&out.join("final"), Device::Cpu, tch::Kind::Float).unwrap();
        assert!(matches!(m.tokenizer, Some(Tokenizer::Char(_))));
        // Same folder again: an error, not an overwrite; resume with other settings: an error.
        let e = pretrain(&o, &out, false, Device::Cpu, &mut zoo_core::train::trainer::Silent).unwrap_err();
        assert!(e.to_string().contains("--resume"), "{e}");
        let o2 = PretrainOptions { lr: 1e-3, ..o.clone() };
        let e = pretrain(&o2, &out, true, Device::Cpu, &mut zoo_core::train::trainer::Silent).unwrap_err();
        assert!(e.to_string().contains("other settings (lr differ)"), "{e}");
        // Resuming a finished run without more steps is refused, and leaves its summary alone.
        let e = pretrain(&o, &out, true, Device::Cpu, &mut zoo_core::train::trainer::Silent).unwrap_err();
        assert!(e.to_string().contains("already done 60 steps"), "{e}");
        let o0 = PretrainOptions { steps: 0, ..o.clone() };
        let e = pretrain(
            &o0,
            &dir.path().join("run0"),
            false,
            Device::Cpu,
            &mut zoo_core::train::trainer::Silent,
        )
        .unwrap_err();
        assert!(e.to_string().contains("--steps must be at least 1"), "{e}");
        assert!(!dir.path().join("run0").exists());
        let o3 = PretrainOptions { block_size: Some(1000), ..o };
        let e = pretrain(
            &o3,
            &dir.path().join("run3"),
            false,
            Device::Cpu,
            &mut zoo_core::train::trainer::Silent,
        )
        .unwrap_err();
        assert!(e.to_string().contains("context"), "{e}");
    }
}
