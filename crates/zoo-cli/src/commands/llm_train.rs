//! The training stages of `zoo llm`: `train` (pretraining), `sft`, `reward train`, `ppo`, `dpo`.
use std::path::PathBuf;

use anyhow::Result;
use clap::Args as ClapArgs;
use zoo_llm::train::dpo::{dpo, DpoEval, DpoOptions};
use zoo_llm::train::ppo::{ppo, PpoEval, PpoOptions};
use zoo_llm::train::pretrain::{pretrain, PretrainOptions};
use zoo_llm::train::reward::{train_reward, RewardEval, RewardOptions};
use zoo_llm::train::sft::{sft, SftEval, SftOptions};
use zoo_llm::train::{tasks, StageOptions, StageOutcome};

use crate::global::Global;

#[derive(ClapArgs, Debug)]
pub struct TrainArgs {
    /// Training text: a UTF-8 file, or a folder of .txt/.md files (read in name order); also
    /// spelled text:PATH, as the image families' mnist:DIR.
    #[arg(long, value_parser = text_data)]
    data: PathBuf,
    /// A preset of models/llm/ (random weights; e.g. shakespeare-char) or a model folder to
    /// continue training (also spelled --preset, as in the other families).
    #[arg(long, alias = "preset", default_value = "shakespeare-char")]
    model: String,
    /// char (one token per character of the data), bpe:N (train a byte-level BPE of N tokens on
    /// the data) or a tokenizer.json; default: the model folder's own, else char.
    #[arg(long)]
    tokenizer: Option<String>,
    /// The run folder: config.json, metrics.jsonl, loss.png, samples/, checkpoints/, best/, final/.
    #[arg(long)]
    out: PathBuf,
    /// Optimiser steps.
    #[arg(long, default_value_t = 2000)]
    steps: u64,
    /// Windows per micro-batch.
    #[arg(long, default_value_t = 12)]
    batch_size: i64,
    /// Tokens per window (default: the model's context length).
    #[arg(long)]
    block_size: Option<i64>,
    /// Micro-batches whose gradients make one step.
    #[arg(long, default_value_t = 1)]
    grad_accum: u32,
    /// Peak learning rate (after warmup).
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Learning rate at the end of the cosine decay (default: lr / 10).
    #[arg(long)]
    min_lr: Option<f64>,
    /// Steps of linear warmup.
    #[arg(long, default_value_t = 100)]
    warmup_steps: u64,
    /// AdamW weight decay (matrices and embeddings only).
    #[arg(long, default_value_t = 0.1)]
    weight_decay: f64,
    /// AdamW beta2.
    #[arg(long, default_value_t = 0.99)]
    beta2: f64,
    /// Clip the gradient norm to this (0: no clipping).
    #[arg(long, default_value_t = 1.0)]
    clip_grad: f64,
    /// Dropout rate for every dropout site (default: the config's).
    #[arg(long)]
    dropout: Option<f64>,
    /// Share of the tokens (the end of the text) held out for validation.
    #[arg(long, default_value_t = 0.1)]
    val_fraction: f64,
    /// Evaluate, sample and keep the best model every N steps (0: never).
    #[arg(long, default_value_t = 250)]
    eval_every: u64,
    /// Most windows scored per evaluation and split.
    #[arg(long, default_value_t = 4096)]
    eval_windows: usize,
    /// Characters sampled at each evaluation (0: none).
    #[arg(long, default_value_t = 200)]
    sample_chars: usize,
    /// Continues the run in --out from its latest checkpoint, with the same losses as an
    /// uninterrupted run (only --steps may change).
    #[arg(long)]
    resume: bool,
    /// Prints JSON lines (logged steps, evaluations, notes, the summary) instead of a progress bar.
    #[arg(long)]
    json: bool,
}

pub fn run_train(g: &Global, a: TrainArgs) -> Result<()> {
    g.f32_training("zoo llm train")?;
    let opts = PretrainOptions {
        data: a.data,
        model: a.model,
        tokenizer: a.tokenizer,
        steps: a.steps,
        batch_size: a.batch_size,
        block_size: a.block_size,
        grad_accum: a.grad_accum,
        lr: a.lr,
        min_lr: a.min_lr,
        warmup_steps: a.warmup_steps,
        weight_decay: a.weight_decay,
        beta1: 0.9,
        beta2: a.beta2,
        clip_grad: (a.clip_grad > 0.0).then_some(a.clip_grad),
        dropout: a.dropout,
        val_fraction: a.val_fraction,
        eval_every: a.eval_every,
        eval_windows: a.eval_windows,
        sample_chars: a.sample_chars,
        seed: g.seed,
    };
    let device = g.device()?;
    g.note(format!(
        "llm train: {} on {}, {} steps of {} x {} tokens, run in {}",
        opts.model,
        opts.data.display(),
        opts.steps,
        opts.batch_size * opts.grad_accum as i64,
        opts.block_size.map_or("context".to_string(), |b| b.to_string()),
        a.out.display()
    ));
    let mut rep = g.reporter(a.json);
    let r = pretrain(&opts, &a.out, a.resume, device, rep.as_mut())?;
    if r.interrupted {
        g.note(format!("stopped at step {}; continue with --resume", r.steps));
        return Ok(());
    }
    let summary = serde_json::to_value(&r)?;
    let p = a.out.join("summary.json");
    zoo_core::fsutil::atomic_write_bytes(&p, serde_json::to_string_pretty(&summary)?.as_bytes())?;
    if a.json {
        println!("{summary}");
    } else {
        let losses = if r.val_loss.is_finite() {
            format!(
                "val loss {:.4} (perplexity {:.2}), train loss {:.4}, best val {:.4}",
                r.val_loss,
                r.val_loss.exp(),
                r.train_loss,
                r.best_val_loss
            )
        } else {
            "not evaluated (--eval-every 0)".to_string()
        };
        println!("{} steps, {} parameters: {losses}", r.steps, r.params);
        println!("{:.1} s, {:.0} tokens/s", r.seconds, r.tokens_per_second);
        match (&r.final_dir, &r.best_dir) {
            (Some(d), Some(b)) => println!("model: {} (best: {})", d.display(), b.display()),
            (Some(d), None) => println!("model: {}", d.display()),
            _ => {}
        }
    }
    Ok(())
}

/// The flags every fine-tuning stage shares.
#[derive(ClapArgs, Debug)]
pub struct StageArgs {
    /// The model to start from: a model folder (e.g. a `zoo llm train` run's final/), or a
    /// preset of models/llm/ (random weights).
    #[arg(long)]
    model: String,
    /// For a preset: char (the data's characters) or a tokenizer.json; a model folder's own
    /// tokenizer is used unless this names a file.
    #[arg(long)]
    tokenizer: Option<String>,
    /// The run folder: config.json, metrics.jsonl, loss.png, checkpoints/, final/.
    #[arg(long)]
    out: PathBuf,
    /// Optimiser steps (PPO: iterations of rollout + updates).
    #[arg(long, default_value_t = 500)]
    steps: u64,
    /// Examples (pairs, rollouts) per step.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Learning rate after warmup (constant).
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    /// Steps of linear warmup.
    #[arg(long, default_value_t = 10)]
    warmup_steps: u64,
    /// AdamW weight decay (matrices and embeddings only).
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Share of the records held out for evaluation (when no --val-data is given).
    #[arg(long, default_value_t = 0.1)]
    val_fraction: f64,
    /// Evaluate every N steps (0: only at the end).
    #[arg(long, default_value_t = 100)]
    eval_every: u64,
    /// Longest example in tokens (default: the model's context).
    #[arg(long)]
    max_len: Option<usize>,
    /// Dropout rate for every dropout site (default: the config's).
    #[arg(long)]
    dropout: Option<f64>,
    /// Continues the run in --out from its latest checkpoint (only --steps may change).
    #[arg(long)]
    resume: bool,
    /// Prints JSON lines instead of a progress bar, and the summary as JSON.
    #[arg(long)]
    json: bool,
}

impl StageArgs {
    fn options(&self, g: &Global) -> StageOptions {
        StageOptions {
            model: self.model.clone(),
            tokenizer: self.tokenizer.clone(),
            steps: self.steps,
            batch_size: self.batch_size,
            lr: self.lr,
            warmup_steps: self.warmup_steps,
            weight_decay: self.weight_decay,
            val_fraction: self.val_fraction,
            eval_every: self.eval_every,
            max_len: self.max_len,
            dropout: self.dropout,
            seed: g.seed,
        }
    }
}

/// Writes `summary.json` into the run and prints the summary: JSON, or the example counts
/// and the held-out numbers before and after (`show` formats them).
fn report<E: serde::Serialize>(
    g: &Global,
    s: &StageArgs,
    r: &StageOutcome<E>,
    what: &str,
    show: impl Fn(&E) -> String,
) -> Result<()> {
    if r.interrupted {
        g.note(format!("stopped at step {}; continue with --resume", r.steps));
        return Ok(());
    }
    let v = serde_json::to_value(r)?;
    zoo_core::fsutil::atomic_write_bytes(
        &s.out.join("summary.json"),
        serde_json::to_string_pretty(&v)?.as_bytes(),
    )?;
    if s.json {
        println!("{v}");
        return Ok(());
    }
    let opt = |e: &Option<E>| e.as_ref().map_or("-".to_string(), &show);
    println!(
        "{} train / {} held-out {what}, {} steps in {:.1} s",
        r.train_examples, r.val_examples, r.steps, r.seconds
    );
    println!("before: {}", opt(&r.before));
    println!("after:  {}", opt(&r.after));
    println!("model: {}", s.out.join("final").display());
    Ok(())
}

#[derive(ClapArgs, Debug)]
pub struct SftArgs {
    /// JSONL of {"prompt","response"} or {"messages":[...]} records (chat records use the
    /// model folder's chat template).
    #[arg(long)]
    data: PathBuf,
    /// Held-out records (default: the last --val-fraction of --data).
    #[arg(long)]
    val_data: Option<PathBuf>,
    /// Held-out examples whose greedy completion is checked for exact match at each evaluation.
    #[arg(long, default_value_t = 200)]
    eval_generate: usize,
    #[command(flatten)]
    stage: StageArgs,
}

pub fn run_sft(g: &Global, a: SftArgs) -> Result<()> {
    g.f32_training("zoo llm sft")?;
    let opts = SftOptions {
        data: a.data.clone(),
        val_data: a.val_data.clone(),
        stage: a.stage.options(g),
        eval_generate: a.eval_generate,
    };
    g.note(format!(
        "llm sft: {} on {}, {} steps, run in {}",
        opts.stage.model,
        opts.data.display(),
        opts.stage.steps,
        a.stage.out.display()
    ));
    let mut rep = g.reporter(a.stage.json);
    let r = sft(&opts, &a.stage.out, a.stage.resume, g.device()?, rep.as_mut())?;
    report(g, &a.stage, &r, "examples", |e: &SftEval| {
        format!("val loss {:.4}, exact match {:.1}% of {}", e.val_loss, 100.0 * e.exact_match, e.checked)
    })
}

#[derive(ClapArgs, Debug)]
pub struct PreferenceArgs {
    /// JSONL of {"prompt","chosen","rejected"} records.
    #[arg(long)]
    data: PathBuf,
    /// Held-out records (default: the last --val-fraction of --data).
    #[arg(long)]
    val_data: Option<PathBuf>,
}

#[derive(ClapArgs, Debug)]
pub struct RewardArgs {
    #[command(subcommand)]
    command: RewardCommand,
}

#[derive(clap::Subcommand, Debug)]
enum RewardCommand {
    /// Trains a reward model (the decoder + a scalar head) on preference pairs (Bradley-Terry).
    Train(RewardTrainArgs),
}

#[derive(ClapArgs, Debug)]
pub struct RewardTrainArgs {
    #[command(flatten)]
    pairs: PreferenceArgs,
    #[command(flatten)]
    stage: StageArgs,
}

pub fn run_reward(g: &Global, a: RewardArgs) -> Result<()> {
    g.f32_training("zoo llm reward train")?;
    let RewardCommand::Train(a) = a.command;
    let opts = RewardOptions {
        data: a.pairs.data.clone(),
        val_data: a.pairs.val_data.clone(),
        stage: a.stage.options(g),
    };
    g.note(format!(
        "llm reward train: {} on {}, {} steps, run in {}",
        opts.stage.model,
        opts.data.display(),
        opts.stage.steps,
        a.stage.out.display()
    ));
    let mut rep = g.reporter(a.stage.json);
    let r = train_reward(&opts, &a.stage.out, a.stage.resume, g.device()?, rep.as_mut())?;
    report(g, &a.stage, &r, "pairs", |e: &RewardEval| {
        format!("held-out accuracy {:.1}%, loss {:.4}, margin {:.3}", 100.0 * e.accuracy, e.loss, e.margin)
    })
}

#[derive(ClapArgs, Debug)]
pub struct DpoArgs {
    #[command(flatten)]
    pairs: PreferenceArgs,
    /// How strongly the policy is held to the reference (TRL's default 0.1).
    #[arg(long, default_value_t = 0.1)]
    beta: f64,
    #[command(flatten)]
    stage: StageArgs,
}

pub fn run_dpo(g: &Global, a: DpoArgs) -> Result<()> {
    g.f32_training("zoo llm dpo")?;
    let opts = DpoOptions {
        data: a.pairs.data.clone(),
        val_data: a.pairs.val_data.clone(),
        stage: a.stage.options(g),
        beta: a.beta,
    };
    g.note(format!(
        "llm dpo: {} on {}, beta {}, {} steps, run in {}",
        opts.stage.model,
        opts.data.display(),
        opts.beta,
        opts.stage.steps,
        a.stage.out.display()
    ));
    let mut rep = g.reporter(a.stage.json);
    let r = dpo(&opts, &a.stage.out, a.stage.resume, g.device()?, rep.as_mut())?;
    report(g, &a.stage, &r, "pairs", |e: &DpoEval| {
        format!(
            "held-out accuracy {:.1}%, margin {:.3} (chosen reward {:.3}, rejected {:.3})",
            100.0 * e.accuracy,
            e.margin,
            e.chosen_reward,
            e.rejected_reward
        )
    })
}

#[derive(ClapArgs, Debug)]
pub struct PpoArgs {
    /// JSONL whose records have a "prompt" (SFT and preference files serve).
    #[arg(long)]
    data: PathBuf,
    /// The reward-model folder (`zoo llm reward train`'s final/).
    #[arg(long)]
    reward_model: PathBuf,
    /// Most tokens per sampled response.
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    /// Sampling temperature of the rollouts.
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Weight of the per-token KL penalty to the reference model.
    #[arg(long, default_value_t = 0.05)]
    kl_coef: f64,
    /// PPO's ratio clipping range.
    #[arg(long, default_value_t = 0.2)]
    clip_range: f64,
    /// Clipping range of the value predictions.
    #[arg(long, default_value_t = 0.2)]
    clip_range_value: f64,
    /// Weight of the value loss.
    #[arg(long, default_value_t = 0.1)]
    vf_coef: f64,
    /// Discount.
    #[arg(long, default_value_t = 1.0)]
    gamma: f64,
    /// GAE's lambda.
    #[arg(long, default_value_t = 0.95)]
    lam: f64,
    /// Passes over each batch of rollouts.
    #[arg(long, default_value_t = 4)]
    ppo_epochs: usize,
    /// Rollouts per minibatch update.
    #[arg(long, default_value_t = 8)]
    minibatch_size: usize,
    #[command(flatten)]
    stage: StageArgs,
}

pub fn run_ppo(g: &Global, a: PpoArgs) -> Result<()> {
    g.f32_training("zoo llm ppo")?;
    let opts = PpoOptions {
        data: a.data.clone(),
        reward_model: a.reward_model.clone(),
        stage: a.stage.options(g),
        max_new_tokens: a.max_new_tokens,
        temperature: a.temperature,
        kl_coef: a.kl_coef,
        clip_range: a.clip_range,
        clip_range_value: a.clip_range_value,
        vf_coef: a.vf_coef,
        gamma: a.gamma,
        lam: a.lam,
        ppo_epochs: a.ppo_epochs,
        minibatch_size: a.minibatch_size,
    };
    g.note(format!(
        "llm ppo: {} against {}, {} iterations of {} rollouts, run in {}",
        opts.stage.model,
        opts.reward_model.display(),
        opts.stage.steps,
        opts.stage.batch_size,
        a.stage.out.display()
    ));
    let mut rep = g.reporter(a.stage.json);
    let r = ppo(&opts, &a.stage.out, a.stage.resume, g.device()?, rep.as_mut())?;
    report(g, &a.stage, &r, "prompts", |e: &PpoEval| {
        format!("held-out mean reward {:.3}, KL to the reference {:.3}", e.reward, e.kl)
    })
}

#[derive(ClapArgs, Debug)]
pub struct TaskArgs {
    /// reverse (prompt/response records: a word, then the word backwards) or shout
    /// (preference pairs: a passage's continuation in capitals is preferred to small letters).
    #[arg(value_parser = ["reverse", "shout"])]
    task: String,
    /// The UTF-8 text the words or passages come from.
    #[arg(long)]
    text: PathBuf,
    /// Records to make (reverse: at most one per distinct word).
    #[arg(long, default_value_t = 2000)]
    n: usize,
    /// Characters of passage before the continuation (shout).
    #[arg(long, default_value_t = 48)]
    prompt_chars: usize,
    /// Characters of continuation (shout).
    #[arg(long, default_value_t = 16)]
    response_chars: usize,
    /// The JSONL file to write.
    #[arg(long)]
    out: PathBuf,
}

pub fn run_task(g: &Global, a: TaskArgs) -> Result<()> {
    let text = zoo_llm::train::data::read_text(&a.text)?;
    let jsonl = match a.task.as_str() {
        "reverse" => tasks::to_jsonl(&tasks::reverse(&text, a.n, g.seed)?)?,
        _ => tasks::to_jsonl(&tasks::shout(&text, a.n, a.prompt_chars, a.response_chars, g.seed)?)?,
    };
    zoo_core::fsutil::atomic_write_bytes(&a.out, jsonl.as_bytes())?;
    println!("{} records in {}", jsonl.lines().count(), a.out.display());
    Ok(())
}

/// `--data` of `zoo llm train`: a path, or `text:PATH`.
fn text_data(s: &str) -> std::result::Result<PathBuf, String> {
    Ok(PathBuf::from(s.strip_prefix("text:").unwrap_or(s)))
}
