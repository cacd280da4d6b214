//! The training stages: [`pretrain`] (next-token prediction on raw text), [`sft`] (supervised
//! fine-tuning on prompt/response pairs), [`reward`] (a reward model from preference pairs),
//! [`ppo`] (RLHF against a reward model) and [`dpo`] (preferences without a reward model).
//!
//! Every stage runs on zoo-core's training loop (exact resume, checkpoints, progress) and
//! writes Hugging Face-format model folders ([`save_model_dir`]) that `zoo llm generate` and
//! transformers both load.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Kind, Reduction, Tensor};

use zoo_core::run::RunDir;
use zoo_core::train::trainer::Reporter;
use zoo_core::train::{AdamW, AdamWConfig, TrainTask, Trainer};

use crate::chat::ChatTemplate;
use crate::config::ModelConfig;
use crate::model::Model;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

pub mod data;
pub mod dpo;
pub mod examples;
pub mod ppo;
pub mod pretrain;
pub mod reward;
pub mod sft;
pub mod tasks;

/// The class transformers builds for a config's `architectures` entry.
fn architecture(cfg: &ModelConfig) -> &'static str {
    match cfg.model_type() {
        "gpt2" => "GPT2LMHeadModel",
        "mistral" => "MistralForCausalLM",
        "qwen2" => "Qwen2ForCausalLM",
        _ => "LlamaForCausalLM",
    }
}

/// Writes a model folder: `config.json` (with `architectures`), `model.safetensors` (the
/// variables under their Hugging Face names, `format: pt` metadata as transformers expects)
/// and, when given, `tokenizer.json`. Each file is written atomically.
pub fn save_model_dir(
    dir: &Path,
    vs: &VarStore,
    cfg: &ModelConfig,
    tok: Option<&Tokenizer>,
) -> Result<PathBuf> {
    save_model_dir_except(dir, vs, cfg, tok, &[])
}

/// [`save_model_dir`] without the variables whose names start with one of `skip` (training-only
/// parts such as PPO's value head).
pub fn save_model_dir_except(
    dir: &Path,
    vs: &VarStore,
    cfg: &ModelConfig,
    tok: Option<&Tokenizer>,
    skip: &[&str],
) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut json = cfg.to_json();
    if let Some(m) = json.as_object_mut() {
        m.insert("architectures".into(), serde_json::json!([architecture(cfg)]));
    }
    let p = dir.join("config.json");
    let text = serde_json::to_string_pretty(&json).map_err(|e| Error::Input(e.to_string()))?;
    zoo_core::fsutil::atomic_write_bytes(&p, text.as_bytes())?;
    let mut vars: Vec<(String, Tensor)> =
        vs.variables().into_iter().filter(|(n, _)| !skip.iter().any(|s| n.starts_with(s))).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    zoo_core::weights::save(&dir.join("model.safetensors"), &vars, Some(meta))?;
    if let Some(t) = tok {
        t.save(&dir.join("tokenizer.json"))?;
    }
    Ok(dir.to_path_buf())
}

/// Mean next-token cross-entropy of `logits` (B, T, V) against `targets` (B, T); positions
/// whose target is -100 are left out (transformers' convention for masked labels).
pub fn lm_loss(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let v = logits.size()[2];
    Ok(logits.f_view([-1, v])?.f_cross_entropy_loss::<&Tensor>(
        &targets.f_view([-1])?,
        None,
        Reduction::Mean,
        -100,
        0.0,
    )?)
}

/// Log-probability of each next token: `logits` (B, T, V) and `targets` (B, T) (any id where
/// masked out later) -> (B, T).
pub fn token_logprobs(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let logp = logits.f_log_softmax(-1, Kind::Float)?;
    Ok(logp.f_gather(-1, &targets.f_clamp_min(0)?.f_unsqueeze(-1)?, false)?.f_squeeze_dim(-1)?)
}

/// A model config for training: the tokenizer's vocabulary size (for configs from a preset,
/// whose size is a placeholder) and dropout on every dropout site when `dropout` is given.
pub fn training_config(
    mut cfg: ModelConfig,
    vocab: Option<i64>,
    dropout: Option<f64>,
) -> Result<ModelConfig> {
    if let Some(p) = dropout {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::Input(format!("--dropout must be in [0, 1), got {p}")));
        }
    }
    match &mut cfg {
        ModelConfig::Gpt2(c) => {
            if let Some(v) = vocab {
                c.vocab_size = v;
            }
            if let Some(p) = dropout {
                (c.resid_pdrop, c.embd_pdrop, c.attn_pdrop) = (p, p, p);
            }
        }
        ModelConfig::Llama(c) => {
            if let Some(v) = vocab {
                c.vocab_size = v;
            }
            if let Some(p) = dropout {
                c.attention_dropout = p;
            }
        }
    }
    Ok(cfg)
}

/// Maps a model error into the training loop's error type (the loop lives in zoo-core).
pub(crate) fn core_err(e: Error) -> zoo_core::Error {
    match e {
        Error::Core(c) => c,
        Error::Torch(t) => zoo_core::Error::Torch(t),
        other => zoo_core::Error::Data(other.to_string()),
    }
}

/// Mean loss of `model` over fixed windows, in batches of `batch` windows, without gradients.
pub fn eval_loss(
    model: &Model,
    tokens: &[u32],
    starts: &[usize],
    block: i64,
    batch: usize,
    device: tch::Device,
) -> Result<f64> {
    if starts.is_empty() {
        return Err(Error::Input("no evaluation windows: the split is shorter than one block".into()));
    }
    tch::no_grad(|| -> Result<f64> {
        let mut sum = 0.0;
        for chunk in starts.chunks(batch.max(1)) {
            let (x, y) = data::windows(tokens, chunk, block, device)?;
            let logits = model.forward(&x, None, None, false)?;
            sum += lm_loss(&logits, &y)?.f_double_value(&[])? * chunk.len() as f64;
        }
        Ok(sum / starts.len() as f64)
    })
}

/// A model to train: its variables, the model, its (training) config and, for a model folder,
/// its tokenizer.
pub struct TrainModel {
    pub vs: VarStore,
    pub model: Model,
    pub config: ModelConfig,
    pub tokenizer: Option<Tokenizer>,
    /// The folder the weights came from; `None` for a preset's random initialisation.
    pub dir: Option<PathBuf>,
}

/// Opens `spec` for training: a model folder (its weights loaded strictly, for continued
/// training or fine-tuning) or a preset of `models/llm/` (random weights drawn from
/// libtorch's generator: seed first; its vocabulary resized to `vocab`). `dropout` replaces
/// the config's dropout rates.
pub fn open_for_training(
    spec: &str,
    vocab: Option<i64>,
    dropout: Option<f64>,
    device: tch::Device,
) -> Result<TrainModel> {
    let p = Path::new(spec);
    let (config, dir) = if zoo_core::presets::names_folder(spec, "llm") {
        let cfg_path = p.join("config.json");
        if !cfg_path.is_file() {
            return Err(Error::Input(format!(
                "{spec}: no config.json; a model folder holds config.json and model.safetensors"
            )));
        }
        (ModelConfig::from_file(&cfg_path)?, Some(p.to_path_buf()))
    } else {
        let preset = zoo_core::presets::find_preset("llm", spec)
            .map_err(|e| Error::Input(format!("'{spec}' is not a model folder, and {e}")))?;
        (ModelConfig::from_file(&preset.path)?, None)
    };
    let config = training_config(config, if dir.is_none() { vocab } else { None }, dropout)?;
    if let (Some(v), Some(_)) = (vocab, &dir) {
        if v > config.vocab_size() {
            return Err(Error::Input(format!(
                "the tokenizer has {v} tokens but the model in {spec} only {}: use the model's own tokenizer",
                config.vocab_size()
            )));
        }
    }
    let vs = VarStore::new(device);
    let model = Model::new(vs.root(), &config)?;
    let tokenizer = match &dir {
        Some(d) => {
            zoo_core::weights::load_into(&vs, d, &model.remap())?;
            Tokenizer::from_dir(d)?
        }
        None => None,
    };
    Ok(TrainModel { vs, model, config, tokenizer, dir })
}

/// The last `fraction` of `items` held out (at least one when there are two or more).
pub fn split_held_out<T>(mut items: Vec<T>, fraction: f64) -> Result<(Vec<T>, Vec<T>)> {
    if !(0.0..1.0).contains(&fraction) {
        return Err(Error::Input(format!("--val-fraction must be in [0, 1), got {fraction}")));
    }
    let mut n = (items.len() as f64 * fraction).round() as usize;
    if fraction > 0.0 && items.len() >= 2 {
        n = n.max(1);
    }
    let held = items.split_off(items.len() - n.min(items.len().saturating_sub(1)));
    Ok((items, held))
}

/// Settings every fine-tuning stage (SFT, reward model, PPO, DPO) shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageOptions {
    /// The model to start from: a model folder, or a preset of `models/llm/` (random weights).
    pub model: String,
    /// For a preset: `char` (the data's characters) or a `tokenizer.json`; a model folder
    /// uses its own unless this names a file.
    pub tokenizer: Option<String>,
    pub steps: u64,
    pub batch_size: usize,
    pub lr: f64,
    pub warmup_steps: u64,
    pub weight_decay: f64,
    /// Share of the records held out when no separate validation file is given.
    pub val_fraction: f64,
    /// Evaluate every N steps (0: only at the end).
    pub eval_every: u64,
    /// Longest example in tokens (default: the model's context).
    pub max_len: Option<usize>,
    pub dropout: Option<f64>,
    pub seed: u64,
}

impl Default for StageOptions {
    fn default() -> Self {
        StageOptions {
            model: String::new(),
            tokenizer: None,
            steps: 500,
            batch_size: 16,
            lr: 1e-4,
            warmup_steps: 10,
            weight_decay: 0.0,
            val_fraction: 0.1,
            eval_every: 100,
            max_len: None,
            dropout: None,
            seed: 0,
        }
    }
}

/// How a stage's loop ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StageRun {
    pub steps: u64,
    pub interrupted: bool,
    pub seconds: f64,
}

/// A fine-tuning task that measures itself on held-out data.
pub trait StageTask: TrainTask {
    type Eval: Copy + Serialize;
    /// The held-out numbers now.
    fn evaluate(&mut self) -> Result<Self::Eval>;
    /// Those of the loop's last evaluation.
    fn last_eval(&self) -> Option<Self::Eval>;
}

/// What a fine-tuning stage did: held-out numbers before the first step (`None` on resume)
/// and after the last, and where the model went.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageOutcome<E> {
    /// Optimiser steps (PPO: minibatch updates).
    pub steps: u64,
    pub interrupted: bool,
    pub train_examples: usize,
    pub val_examples: usize,
    pub before: Option<E>,
    pub after: Option<E>,
    pub seconds: f64,
    pub model_dir: Option<PathBuf>,
}

/// Records of `data`, and the held-out ones: those of `val_data`, else the last
/// `val_fraction` of `data`.
pub fn read_split<T: examples::JsonlRecord>(
    data: &Path,
    val_data: Option<&Path>,
    val_fraction: f64,
) -> Result<(Vec<T>, Vec<T>)> {
    let records = examples::read_jsonl(data)?;
    match val_data {
        Some(p) => Ok((records, examples::read_jsonl(p)?)),
        None => split_held_out(records, val_fraction),
    }
}

/// What the fine-tuning stages share: the run folder (with its resume check), the tokenizer
/// (saved in the run, reused on resume), the model to train, its chat template and EOS, the
/// loop, and the final model folder.
pub struct Stage {
    pub m: TrainModel,
    pub tokenizer: Tokenizer,
    pub template: Option<ChatTemplate>,
    pub eos: Option<i64>,
    pub opts: StageOptions,
    pub out: PathBuf,
    pub run: RunDir,
    /// Variable-name prefixes left out of the final model folder (e.g. a value head).
    pub exclude: Vec<String>,
}

impl Stage {
    /// Opens the run folder `out` for a stage whose full settings are `config` (compared on
    /// `resume`: only `steps` may change) and the start model. `corpus` is the text a char
    /// tokenizer is built from.
    pub fn open(
        o: &StageOptions,
        out: &Path,
        resume: bool,
        config: &impl serde::Serialize,
        corpus: &str,
        device: tch::Device,
    ) -> Result<Stage> {
        let config = serde_json::to_value(config).map_err(|e| Error::Input(e.to_string()))?;
        if resume {
            let mut old = RunDir::open(out)?.config()?;
            if let (Some(a), Some(b)) = (old.as_object_mut(), config.get("steps")) {
                a.insert("steps".into(), b.clone());
            }
            let changed = zoo_core::run::config_differences(&old, &config);
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
        if o.steps == 0 || o.batch_size == 0 {
            return Err(Error::Input("--steps and --batch-size must be at least 1".into()));
        }
        let tok_path = out.join("tokenizer.json");
        let is_dir = zoo_core::presets::names_folder(&o.model, "llm");
        let tokenizer = if resume {
            Tokenizer::from_file(&tok_path)?
        } else {
            match (o.tokenizer.as_deref(), is_dir) {
                (Some("char"), _) | (None, false) => {
                    Tokenizer::Char(crate::tokenizer::CharTokenizer::from_text(corpus)?)
                }
                (Some(path), _) => Tokenizer::from_file(Path::new(path))?,
                (None, true) => Tokenizer::from_dir(Path::new(&o.model))?.ok_or_else(|| {
                    Error::Input(format!("{}: no tokenizer.json; pass --tokenizer", o.model))
                })?,
            }
        };
        zoo_core::seed::seed_all(o.seed);
        let m = open_for_training(&o.model, Some(tokenizer.vocab_size() as i64), o.dropout, device)?;
        let template = m.dir.as_deref().and_then(|d| ChatTemplate::from_dir(d).ok());
        let eos = m
            .config
            .eos_token_ids()
            .first()
            .copied()
            .filter(|&e| (e as usize) < tokenizer.vocab_size())
            .or_else(|| tokenizer.token_id("<|endoftext|>"));
        let run = RunDir::create(out, &config, resume)?;
        if !resume {
            tokenizer.save(&tok_path)?;
        }
        Ok(Stage {
            m,
            tokenizer,
            template,
            eos,
            opts: o.clone(),
            out: out.to_path_buf(),
            run,
            exclude: Vec::new(),
        })
    }

    /// Turns records into examples of at most `max_len` (default: the context) tokens.
    pub fn encoder(&self) -> examples::Encoder<'_> {
        let ctx = self.m.config.context_len() as usize;
        examples::Encoder {
            tokenizer: &self.tokenizer,
            eos: self.eos,
            template: self.template.as_ref(),
            max_len: self.opts.max_len.unwrap_or(ctx).min(ctx),
        }
    }

    /// Runs the loop over `task` from the run's latest checkpoint (if any): AdamW (weight decay
    /// on matrices), warmup then a constant learning rate, gradient norm clipped to 1.
    pub fn run(&self, task: &mut dyn TrainTask, reporter: &mut dyn Reporter, eval: bool) -> Result<StageRun> {
        let o = &self.opts;
        let opt = AdamW::new(
            &self.m.vs,
            AdamWConfig { lr: o.lr, weight_decay: o.weight_decay, ..Default::default() },
        );
        let schedule = sft::default_schedule(o.lr, o.warmup_steps, o.steps);
        let mut trainer = Trainer::new(&self.run, &self.m.vs, opt, schedule, sft::loop_config(o, eval))?;
        let start = trainer.resume(task)?;
        zoo_core::train::steps_left(start, o.steps)?;
        let t0 = std::time::Instant::now();
        let r = trainer.run(task, start, reporter)?;
        Ok(StageRun { steps: r.steps, interrupted: r.interrupted, seconds: t0.elapsed().as_secs_f64() })
    }

    /// Evaluates `task` (unless resuming), runs the loop, and writes `final/`.
    pub fn train<T: StageTask>(
        &self,
        task: &mut T,
        resume: bool,
        (n_train, n_val): (usize, usize),
        reporter: &mut dyn Reporter,
    ) -> Result<StageOutcome<T::Eval>> {
        let before = if resume || n_val == 0 { None } else { Some(task.evaluate()?) };
        let run = self.run(task, reporter, n_val > 0)?;
        let model_dir = if run.interrupted { None } else { Some(self.save_final()?) };
        Ok(StageOutcome {
            steps: run.steps,
            interrupted: run.interrupted,
            train_examples: n_train,
            val_examples: n_val,
            before,
            after: task.last_eval(),
            seconds: run.seconds,
            model_dir,
        })
    }

    /// Writes `final/`: the model folder, with the start folder's `tokenizer_config.json` and
    /// `chat_template.jinja` (so chat models stay chat models).
    pub fn save_final(&self) -> Result<PathBuf> {
        let dir = self.out.join("final");
        let skip: Vec<&str> = self.exclude.iter().map(String::as_str).collect();
        save_model_dir_except(&dir, &self.m.vs, &self.m.config, Some(&self.tokenizer), &skip)?;
        if let Some(src) = &self.m.dir {
            for f in ["tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"] {
                if src.join(f).is_file() {
                    std::fs::copy(src.join(f), dir.join(f)).map_err(|e| Error::io(src.join(f), e))?;
                }
            }
        }
        Ok(dir)
    }
}
