//! DPO (`zoo llm dpo`): Rafailov et al., "Direct Preference Optimization: Your Language Model
//! is Secretly a Reward Model" (2023). The policy learns from preference pairs directly: with
//! log-ratios against a frozen reference model, `h = beta * ((log pi(c) - log ref(c)) -
//! (log pi(r) - log ref(r)))` and the loss `-log sigmoid(h)` (the sigmoid loss of TRL's
//! `DPOTrainer`). `beta * (log pi - log ref)` of a response is its implicit reward; the logs
//! report the chosen and rejected rewards, their margin and how often the margin is positive.
use std::path::{Path, PathBuf};

use rand::Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};
use zoo_core::train::trainer::Reporter;
use zoo_core::train::{StepOutput, TrainTask};

use super::examples::{collate, sequence_logprobs, Encoder, Example};
use super::{core_err, open_for_training, read_split, Stage, StageOptions, StageOutcome, StageTask};
use crate::model::Model;
use crate::{Error, Result};

/// One preference: a prompt, the preferred response and the other one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreferenceRecord {
    pub prompt: String,
    pub chosen: String,
    pub rejected: String,
}

impl super::examples::JsonlRecord for PreferenceRecord {
    const SHAPE: &'static str = r#"{"prompt": ..., "chosen": ..., "rejected": ...}"#;
}

/// A preference pair as token examples (prompt masked out of both).
#[derive(Debug, Clone, PartialEq)]
pub struct PreferencePair {
    pub chosen: Example,
    pub rejected: Example,
}

/// Reads and tokenizes preference records; a record whose responses are equal is an error.
pub fn encode_pairs(enc: &Encoder, records: &[PreferenceRecord]) -> Result<Vec<PreferencePair>> {
    records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            if r.chosen == r.rejected {
                return Err(Error::Input(format!("record {}: chosen and rejected are the same", i + 1)));
            }
            Ok(PreferencePair {
                chosen: enc
                    .pair(&r.prompt, &r.chosen)
                    .map_err(|e| Error::Input(format!("record {}: {e}", i + 1)))?,
                rejected: enc
                    .pair(&r.prompt, &r.rejected)
                    .map_err(|e| Error::Input(format!("record {}: {e}", i + 1)))?,
            })
        })
        .collect()
}

/// Chosen and rejected examples of `pairs` in one batch: rows 0..B chosen, B..2B rejected.
pub fn collate_pairs(pairs: &[&PreferencePair], device: Device) -> Result<(Tensor, Tensor)> {
    let rows: Vec<&Example> =
        pairs.iter().map(|p| &p.chosen).chain(pairs.iter().map(|p| &p.rejected)).collect();
    collate(&rows, device)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DpoOptions {
    /// JSONL of `{"prompt","chosen","rejected"}` records.
    pub data: PathBuf,
    pub val_data: Option<PathBuf>,
    #[serde(flatten)]
    pub stage: StageOptions,
    /// Strength of the pull toward the reference (TRL's default 0.1).
    pub beta: f64,
}

/// Held-out preference numbers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DpoEval {
    pub accuracy: f64,
    pub margin: f64,
    pub chosen_reward: f64,
    pub rejected_reward: f64,
    pub loss: f64,
}

struct DpoTask<'a> {
    policy: &'a Model,
    train: &'a [PreferencePair],
    val: &'a [PreferencePair],
    /// Reference log-probabilities (chosen, rejected) of each pair, computed once.
    ref_train: Vec<(f64, f64)>,
    ref_val: Vec<(f64, f64)>,
    beta: f64,
    batch: usize,
    device: Device,
    last: Option<DpoEval>,
}

/// Summed response log-probabilities (chosen, rejected) of each pair under `model`.
fn pair_logprobs(model: &Model, pairs: &[PreferencePair], device: Device) -> Result<Vec<(f64, f64)>> {
    tch::no_grad(|| {
        let mut out = Vec::with_capacity(pairs.len());
        for chunk in pairs.chunks(32) {
            let refs: Vec<&PreferencePair> = chunk.iter().collect();
            let (x, y) = collate_pairs(&refs, device)?;
            let lp: Vec<f64> =
                Vec::try_from(sequence_logprobs(model, &x, &y, false)?.to_kind(tch::Kind::Double))?;
            let b = chunk.len();
            out.extend((0..b).map(|i| (lp[i], lp[b + i])));
        }
        Ok(out)
    })
}

/// DPO loss and its logged parts for policy log-probs `(pc, pr)` (B,) and reference `(rc, rr)`.
fn dpo_terms(
    pc: &Tensor,
    pr: &Tensor,
    rc: &Tensor,
    rr: &Tensor,
    beta: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let chosen = pc.f_sub(rc)?.f_mul_scalar(beta)?;
    let rejected = pr.f_sub(rr)?.f_mul_scalar(beta)?;
    let loss = chosen.f_sub(&rejected)?.f_log_sigmoid()?.f_neg()?.f_mean(tch::Kind::Float)?;
    Ok((loss, chosen, rejected))
}

impl StageTask for DpoTask<'_> {
    type Eval = DpoEval;
    fn last_eval(&self) -> Option<DpoEval> {
        self.last
    }
    fn evaluate(&mut self) -> Result<DpoEval> {
        let lp = pair_logprobs(self.policy, self.val, self.device)?;
        let t = |v: Vec<f64>| Tensor::from_slice(&v);
        let (pc, pr): (Vec<f64>, Vec<f64>) = lp.into_iter().unzip();
        let (rc, rr): (Vec<f64>, Vec<f64>) = self.ref_val.iter().copied().unzip();
        let (loss, c, r) = dpo_terms(&t(pc), &t(pr), &t(rc), &t(rr), self.beta)?;
        let margin = c.f_sub(&r)?;
        Ok(DpoEval {
            accuracy: margin
                .f_gt(0.0)?
                .to_kind(tch::Kind::Double)
                .f_mean(tch::Kind::Double)?
                .f_double_value(&[])?,
            margin: margin.f_mean(tch::Kind::Double)?.f_double_value(&[])?,
            chosen_reward: c.f_mean(tch::Kind::Double)?.f_double_value(&[])?,
            rejected_reward: r.f_mean(tch::Kind::Double)?.f_double_value(&[])?,
            loss: loss.f_double_value(&[])?,
        })
    }
}

impl TrainTask for DpoTask<'_> {
    fn loss(
        &mut self,
        _step: u64,
        _micro: u32,
        rng: &mut rand::rngs::StdRng,
    ) -> zoo_core::Result<StepOutput> {
        let r = (|| -> Result<StepOutput> {
            let idx: Vec<usize> = (0..self.batch).map(|_| rng.gen_range(0..self.train.len())).collect();
            let pairs: Vec<&PreferencePair> = idx.iter().map(|&i| &self.train[i]).collect();
            let (x, y) = collate_pairs(&pairs, self.device)?;
            let lp = sequence_logprobs(self.policy, &x, &y, true)?;
            let b = idx.len() as i64;
            let rc: Vec<f32> = idx.iter().map(|&i| self.ref_train[i].0 as f32).collect();
            let rr: Vec<f32> = idx.iter().map(|&i| self.ref_train[i].1 as f32).collect();
            let dev = |v: &[f32]| Tensor::from_slice(v).f_to_device(self.device);
            let (loss, c, r) =
                dpo_terms(&lp.f_narrow(0, 0, b)?, &lp.f_narrow(0, b, b)?, &dev(&rc)?, &dev(&rr)?, self.beta)?;
            let mean = |t: &Tensor| t.f_mean(tch::Kind::Float).and_then(|m| m.f_double_value(&[]));
            let margin = c.f_sub(&r)?;
            let acc = margin.f_gt(0.0)?.to_kind(tch::Kind::Float);
            Ok(StepOutput {
                loss,
                metrics: vec![
                    ("reward_chosen".into(), mean(&c)?),
                    ("reward_rejected".into(), mean(&r)?),
                    ("margin".into(), mean(&margin)?),
                    ("accuracy".into(), mean(&acc)?),
                ],
            })
        })();
        r.map_err(core_err)
    }

    fn eval(&mut self, _step: u64) -> zoo_core::Result<Vec<(String, f64)>> {
        let e = self.evaluate().map_err(core_err)?;
        self.last = Some(e);
        Ok(vec![
            ("val_accuracy".into(), e.accuracy),
            ("val_margin".into(), e.margin),
            ("val_reward_chosen".into(), e.chosen_reward),
            ("val_reward_rejected".into(), e.rejected_reward),
            ("val_loss".into(), e.loss),
        ])
    }
}

/// Runs (or resumes) DPO into the run folder `out`.
pub fn dpo(
    opts: &DpoOptions,
    out: &Path,
    resume: bool,
    device: Device,
    reporter: &mut dyn Reporter,
) -> Result<StageOutcome<DpoEval>> {
    if !(opts.beta > 0.0 && opts.beta.is_finite()) {
        return Err(Error::Input(format!("--beta must be positive, got {}", opts.beta)));
    }
    let (train_recs, val_recs): (Vec<PreferenceRecord>, Vec<PreferenceRecord>) =
        read_split(&opts.data, opts.val_data.as_deref(), opts.stage.val_fraction)?;
    let corpus: String = train_recs
        .iter()
        .chain(&val_recs)
        .map(|r| format!("{}{}{}", r.prompt, r.chosen, r.rejected))
        .collect();
    let stage = Stage::open(&opts.stage, out, resume, opts, &corpus, device)?;
    let enc = stage.encoder();
    let train = encode_pairs(&enc, &train_recs)?;
    let val = encode_pairs(&enc, &val_recs)?;
    // The reference is the start model as it was: the same folder, or the same preset and seed.
    zoo_core::seed::seed_all(opts.stage.seed);
    let mut reference =
        open_for_training(&opts.stage.model, Some(stage.tokenizer.vocab_size() as i64), Some(0.0), device)?;
    reference.vs.freeze();
    let mut task = DpoTask {
        policy: &stage.m.model,
        train: &train,
        val: &val,
        ref_train: pair_logprobs(&reference.model, &train, device)?,
        ref_val: pair_logprobs(&reference.model, &val, device)?,
        beta: opts.beta,
        batch: opts.stage.batch_size,
        device,
        last: None,
    };
    drop(reference);
    stage.train(&mut task, resume, (train.len(), val.len()), reporter)
}
