//! RLHF with PPO (`zoo llm ppo`): Schulman et al., "Proximal Policy Optimization Algorithms"
//! (2017), applied to language models as in Ziegler et al. (2019) and Ouyang et al. (2022).
//!
//! Each iteration samples responses to a batch of prompts from the policy, scores each whole
//! response with the reward model, and turns that into per-token rewards: `-kl_coef * (log
//! pi(t) - log ref(t))` at every response token (the KL penalty to the frozen reference), plus
//! the score at the last token. A value head on the policy's hidden states (`v_head`, a linear
//! layer, dropped from the saved model) gives the baseline; GAE(gamma, lambda) gives advantages
//! (whitened per batch) and returns. Then `ppo_epochs` passes over the batch in minibatches
//! minimise the clipped surrogate `max(-A r, -A clip(r, 1-e, 1+e))` with `r = pi/pi_old`, plus
//! `vf_coef` times the clipped value loss. This is the objective of TRL's PPO trainer.
//!
//! On zoo-core's loop, one step is one minibatch update; a step that starts an iteration makes
//! the rollout first. The rollout is checkpointed with the model (`rollout.safetensors`), so a
//! run resumed mid-iteration continues exactly.
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};
use zoo_core::seed::{seed_all, step_seed};
use zoo_core::train::trainer::Reporter;
use zoo_core::train::{StepOutput, TrainTask};

use super::examples::read_jsonl;
use super::reward::{pad_right, RewardModel};
use super::{core_err, open_for_training, split_held_out, Stage, StageOptions, StageOutcome, StageTask};
use crate::generate::{generate, GenerateConfig};
use crate::model::Model;
use crate::sampling::SamplingConfig;
use crate::{Error, Result};

/// A prompt record (any JSONL with a `"prompt"` key, so SFT and preference files serve too).
#[derive(Debug, Clone, Deserialize)]
pub struct PromptRecord {
    pub prompt: String,
}

impl super::examples::JsonlRecord for PromptRecord {
    const SHAPE: &'static str = r#"an object with a "prompt""#;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PpoOptions {
    /// JSONL whose records have a "prompt".
    pub data: PathBuf,
    /// The reward-model folder (`zoo llm reward train`'s `final/`).
    pub reward_model: PathBuf,
    #[serde(flatten)]
    pub stage: StageOptions,
    pub max_new_tokens: usize,
    pub temperature: f64,
    pub kl_coef: f64,
    pub clip_range: f64,
    pub clip_range_value: f64,
    pub vf_coef: f64,
    pub gamma: f64,
    pub lam: f64,
    pub ppo_epochs: usize,
    /// Rollouts per minibatch; `stage.batch_size` is rollouts per iteration.
    pub minibatch_size: usize,
}

impl PpoOptions {
    /// Optimiser steps per iteration.
    pub fn updates_per_rollout(&self) -> u64 {
        (self.ppo_epochs * self.stage.batch_size.div_ceil(self.minibatch_size.max(1))) as u64
    }
}

/// One iteration's samples and everything PPO needs about them. Sequences are right-padded
/// prompt + response; per-token tensors are aligned with the logits (position i predicts
/// token i + 1) and `mask` marks the positions that predict a response token.
struct Rollout {
    iteration: u64,
    x: Tensor,
    targets: Tensor,
    mask: Tensor,
    old_logp: Tensor,
    old_values: Tensor,
    advantages: Tensor,
    returns: Tensor,
    /// Per-rollout numbers for the logs: score, KL to the reference, response length.
    stats: Vec<(String, f64)>,
}

impl Rollout {
    fn tensors(&self) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> = [
            ("x", &self.x),
            ("targets", &self.targets),
            ("mask", &self.mask),
            ("old_logp", &self.old_logp),
            ("old_values", &self.old_values),
            ("advantages", &self.advantages),
            ("returns", &self.returns),
        ]
        .into_iter()
        .map(|(k, t)| (k.to_string(), t.shallow_clone()))
        .collect();
        v.push(("iteration".into(), Tensor::from_slice(&[self.iteration as i64])));
        for (k, x) in &self.stats {
            v.push((format!("stat.{k}"), Tensor::from_slice(&[*x])));
        }
        v
    }

    fn from_tensors(t: Vec<(String, Tensor)>) -> Result<Self> {
        let get = |k: &str| {
            t.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.shallow_clone())
                .ok_or_else(|| Error::Input(format!("rollout checkpoint lacks '{k}'")))
        };
        let stats = t
            .iter()
            .filter_map(|(n, v)| Some((n.strip_prefix("stat.")?.to_string(), v.double_value(&[0]))))
            .collect();
        Ok(Rollout {
            iteration: get("iteration")?.int64_value(&[0]) as u64,
            x: get("x")?,
            targets: get("targets")?,
            mask: get("mask")?,
            old_logp: get("old_logp")?,
            old_values: get("old_values")?,
            advantages: get("advantages")?,
            returns: get("returns")?,
            stats,
        })
    }
}

/// The policy's value head: `v_head` (C -> 1) on the final hidden states.
pub struct ValueHead {
    pub linear: nn::Linear,
}

impl ValueHead {
    pub fn new(vs: &nn::VarStore, hidden: i64) -> Self {
        let cfg =
            nn::LinearConfig { ws_init: nn::Init::Randn { mean: 0.0, stdev: 0.02 }, ..Default::default() };
        ValueHead { linear: nn::linear(vs.root() / "v_head", hidden, 1, cfg) }
    }
}

/// Per-position log-probs of `targets`, entropies and values of a batch. Shapes: (B, T) each.
fn policy_forward(
    model: &Model,
    head: &ValueHead,
    x: &Tensor,
    targets: &Tensor,
    train: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    let h = model.forward_hidden(x, None, None, train)?;
    let logits = model.lm_head(&h)?;
    let logp_all = logits.f_log_softmax(-1, Kind::Float)?;
    let logp = logp_all.f_gather(-1, &targets.f_unsqueeze(-1)?, false)?.f_squeeze_dim(-1)?;
    let entropy = logp_all.f_exp()?.f_mul(&logp_all)?.f_sum_dim_intlist(-1, false, Kind::Float)?.f_neg()?;
    let values = head.linear.forward(&h).f_squeeze_dim(-1)?;
    Ok((logp, entropy, values))
}

fn masked_mean(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    Ok(x.f_mul(mask)?.f_sum(Kind::Float)?.f_div(&mask.f_sum(Kind::Float)?.f_clamp_min(1.0)?)?)
}

/// Sampled sequences (prompt + response), their prompt lengths and their rewards.
type Samples = (Vec<Vec<i64>>, Vec<usize>, Vec<f64>);

struct PpoTask<'a> {
    opts: &'a PpoOptions,
    policy: &'a Model,
    head: &'a ValueHead,
    reference: &'a Model,
    reward: &'a RewardModel,
    train: &'a [Vec<i64>],
    val: &'a [Vec<i64>],
    eos: Vec<i64>,
    context: i64,
    device: Device,
    rollout: Option<Rollout>,
    last_eval: Option<PpoEval>,
}

impl PpoTask<'_> {
    /// Samples responses to `prompts`, then scores them: (sequences, prompt lengths, scores).
    fn rollout_samples(&self, prompts: &[Vec<i64>], temperature: f64) -> Result<Samples> {
        let cfg = GenerateConfig {
            max_new_tokens: self.opts.max_new_tokens,
            sampling: SamplingConfig { temperature, ..Default::default() },
            eos_token_ids: self.eos.clone(),
            truncate: true,
            ..Default::default()
        };
        let gens = tch::no_grad(|| generate(self.policy, None, prompts, self.context, &cfg, &mut |_, _| {}))?;
        let mut seqs = Vec::new();
        let mut plens = Vec::new();
        for g in gens {
            plens.push(g.prompt_tokens.len());
            let mut s = g.prompt_tokens;
            s.extend(&g.tokens);
            if s.len() == plens[plens.len() - 1] {
                // An empty response still needs one token to score and to learn from.
                s.push(*self.eos.first().unwrap_or(&0));
            }
            seqs.push(s);
        }
        let scores = self.reward.score_sequences(&seqs, 32, self.device)?;
        Ok((seqs, plens, scores))
    }

    /// Inputs, targets and the response mask of right-padded sequences. Shapes: (B, T - 1).
    fn align(&self, seqs: &[Vec<i64>], plens: &[usize]) -> Result<(Tensor, Tensor, Tensor)> {
        let (full, _) = pad_right(seqs, self.device)?;
        let t = full.size()[1];
        let x = full.f_narrow(1, 0, t - 1)?;
        let targets = full.f_narrow(1, 1, t - 1)?;
        let mut m = vec![0f32; seqs.len() * (t as usize - 1)];
        for (b, (s, &p)) in seqs.iter().zip(plens).enumerate() {
            // Position i predicts token i + 1: response tokens p..len are predicted at p-1..len-1.
            for i in p.saturating_sub(1)..s.len() - 1 {
                m[b * (t as usize - 1) + i] = 1.0;
            }
        }
        let mask = Tensor::from_slice(&m).f_view([seqs.len() as i64, t - 1])?.f_to_device(self.device)?;
        Ok((x, targets, mask))
    }

    fn make_rollout(&self, iteration: u64) -> Result<Rollout> {
        let o = self.opts;
        let mut rng = rand::rngs::StdRng::seed_from_u64(step_seed(o.stage.seed, 2, iteration));
        let prompts: Vec<Vec<i64>> = (0..o.stage.batch_size)
            .map(|_| self.train.choose(&mut rng).cloned().unwrap_or_default())
            .collect();
        seed_all(step_seed(o.stage.seed, 3, iteration));
        let (seqs, plens, scores) = self.rollout_samples(&prompts, o.temperature)?;
        let (x, targets, mask) = self.align(&seqs, &plens)?;
        tch::no_grad(|| {
            let (old_logp, _, old_values) = policy_forward(self.policy, self.head, &x, &targets, false)?;
            let ref_logits = self.reference.forward(&x, None, None, false)?;
            let ref_logp = super::token_logprobs(&ref_logits, &targets)?;
            // Per-token rewards: the KL penalty everywhere, the score at the last response token.
            let kl = old_logp.f_sub(&ref_logp)?.f_mul(&mask)?;
            let mut rewards = kl.f_mul_scalar(-o.kl_coef)?;
            let (b, t) = (mask.size()[0], mask.size()[1]);
            let last: Vec<i64> = seqs.iter().map(|s| s.len() as i64 - 2).collect();
            let last = Tensor::from_slice(&last).f_to_device(self.device)?.f_unsqueeze(1)?;
            let score = Tensor::from_slice(&scores)
                .f_to_kind(Kind::Float)?
                .f_to_device(self.device)?
                .f_unsqueeze(1)?;
            rewards = rewards.f_scatter_add(1, &last, &score)?;
            // GAE backwards over positions; masked positions carry nothing.
            let values = old_values.f_mul(&mask)?;
            let mut adv: Vec<Tensor> =
                (0..t).map(|_| Tensor::zeros([b], (Kind::Float, self.device))).collect();
            let mut next_adv = Tensor::zeros([b], (Kind::Float, self.device));
            let mut next_value = Tensor::zeros([b], (Kind::Float, self.device));
            for i in (0..t).rev() {
                let m = mask.f_select(1, i)?;
                let v = values.f_select(1, i)?;
                let delta = rewards.f_select(1, i)?.f_add(&next_value.f_mul_scalar(o.gamma)?)?.f_sub(&v)?;
                let a = delta.f_add(&next_adv.f_mul_scalar(o.gamma * o.lam)?)?.f_mul(&m)?;
                // Outside the response keep the running values, so padding passes them through.
                next_adv = a.f_add(&next_adv.f_mul(&m.f_rsub_scalar(1.0)?)?)?;
                next_value = v.f_add(&next_value.f_mul(&m.f_rsub_scalar(1.0)?)?)?;
                adv[i as usize] = a;
            }
            let advantages = Tensor::f_stack(&adv, 1)?;
            let returns = advantages.f_add(&values)?;
            let mean = masked_mean(&advantages, &mask)?;
            let var = masked_mean(&advantages.f_sub(&mean)?.f_square()?, &mask)?;
            let advantages =
                advantages.f_sub(&mean)?.f_div(&var.f_add_scalar(1e-8)?.f_sqrt()?)?.f_mul(&mask)?;
            let n = seqs.len() as f64;
            let stats = vec![
                ("reward".into(), scores.iter().sum::<f64>() / n),
                ("kl".into(), kl.f_sum(Kind::Float)?.f_double_value(&[])? / n),
                ("response_len".into(), mask.f_sum(Kind::Float)?.f_double_value(&[])? / n),
            ];
            Ok(Rollout { iteration, x, targets, mask, old_logp, old_values, advantages, returns, stats })
        })
    }
}

/// Held-out numbers of the policy: mean reward of its samples and their KL to the reference
/// (summed over a response, averaged over responses).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PpoEval {
    pub reward: f64,
    pub kl: f64,
}

impl StageTask for PpoTask<'_> {
    type Eval = PpoEval;
    fn last_eval(&self) -> Option<PpoEval> {
        self.last_eval
    }
    /// Samples for the held-out prompts with the same draws every time (only the policy
    /// changes between evaluations).
    fn evaluate(&mut self) -> Result<PpoEval> {
        seed_all(step_seed(self.opts.stage.seed, 5, 0));
        let (seqs, plens, scores) = self.rollout_samples(self.val, self.opts.temperature)?;
        let (x, targets, mask) = self.align(&seqs, &plens)?;
        let kl = tch::no_grad(|| -> Result<f64> {
            let lp = super::token_logprobs(&self.policy.forward(&x, None, None, false)?, &targets)?;
            let rp = super::token_logprobs(&self.reference.forward(&x, None, None, false)?, &targets)?;
            Ok(lp.f_sub(&rp)?.f_mul(&mask)?.f_sum(Kind::Float)?.f_double_value(&[])? / seqs.len() as f64)
        })?;
        let e = PpoEval { reward: scores.iter().sum::<f64>() / scores.len().max(1) as f64, kl };
        self.last_eval = Some(e);
        Ok(e)
    }
}

impl TrainTask for PpoTask<'_> {
    fn loss(
        &mut self,
        step: u64,
        _micro: u32,
        _rng: &mut rand::rngs::StdRng,
    ) -> zoo_core::Result<StepOutput> {
        let r = (|| -> Result<StepOutput> {
            let o = self.opts;
            let per = o.updates_per_rollout();
            let (it, k) = (step / per, step % per);
            if self.rollout.as_ref().is_none_or(|r| r.iteration != it) {
                self.rollout = Some(self.make_rollout(it)?);
                // Back to this step's own draws (dropout), as if the rollout had drawn nothing.
                zoo_core::seed::seed_step(o.stage.seed, step);
            }
            let Some(ro) = self.rollout.as_ref() else { unreachable!("made above") };
            // This step's minibatch: a fixed permutation per (iteration, epoch).
            let n_mb = o.stage.batch_size.div_ceil(o.minibatch_size.max(1)) as u64;
            let epoch = k / n_mb;
            let mut perm: Vec<i64> = (0..o.stage.batch_size as i64).collect();
            perm.shuffle(&mut rand::rngs::StdRng::seed_from_u64(step_seed(
                o.stage.seed,
                4,
                it * 1000 + epoch,
            )));
            let mb = (k % n_mb) as usize * o.minibatch_size;
            let idx = Tensor::from_slice(&perm[mb..(mb + o.minibatch_size).min(perm.len())])
                .f_to_device(self.device)?;
            let pick = |t: &Tensor| t.f_index_select(0, &idx);
            let (x, targets, mask) = (pick(&ro.x)?, pick(&ro.targets)?, pick(&ro.mask)?);
            let (old_logp, old_values) = (pick(&ro.old_logp)?, pick(&ro.old_values)?);
            let (adv, returns) = (pick(&ro.advantages)?, pick(&ro.returns)?);

            let (logp, entropy, values) = policy_forward(self.policy, self.head, &x, &targets, true)?;
            let log_ratio = logp.f_sub(&old_logp)?;
            let ratio = log_ratio.f_exp()?;
            let e = o.clip_range;
            let pg1 = adv.f_neg()?.f_mul(&ratio)?;
            let pg2 = adv.f_neg()?.f_mul(&ratio.f_clamp(1.0 - e, 1.0 + e)?)?;
            let pg_loss = masked_mean(&pg1.f_maximum(&pg2)?, &mask)?;
            let ev = o.clip_range_value;
            let v_clipped = old_values.f_add(&values.f_sub(&old_values)?.f_clamp(-ev, ev)?)?;
            let vf1 = values.f_sub(&returns)?.f_square()?;
            let vf2 = v_clipped.f_sub(&returns)?.f_square()?;
            let vf_loss = masked_mean(&vf1.f_maximum(&vf2)?, &mask)?.f_mul_scalar(0.5)?;
            let loss = pg_loss.f_add(&vf_loss.f_mul_scalar(o.vf_coef)?)?;

            let num = |t: Tensor| t.f_double_value(&[]);
            let clip_frac =
                num(masked_mean(&ratio.f_sub_scalar(1.0)?.f_abs()?.f_gt(e)?.to_kind(Kind::Float), &mask)?)?;
            let approx_kl = num(masked_mean(&log_ratio.f_square()?.f_mul_scalar(0.5)?, &mask)?)?;
            let mut metrics = ro.stats.clone();
            metrics.extend([
                ("pg_loss".to_string(), num(pg_loss.detach())?),
                ("vf_loss".to_string(), num(vf_loss.detach())?),
                ("entropy".to_string(), num(masked_mean(&entropy.detach(), &mask)?)?),
                ("clip_frac".to_string(), clip_frac),
                ("approx_kl".to_string(), approx_kl),
            ]);
            Ok(StepOutput { loss, metrics })
        })();
        r.map_err(core_err)
    }

    fn eval(&mut self, step: u64) -> zoo_core::Result<Vec<(String, f64)>> {
        if self.val.is_empty() {
            return Ok(Vec::new());
        }
        let e = self.evaluate().map_err(core_err)?;
        zoo_core::seed::seed_step(self.opts.stage.seed, step);
        Ok(vec![("val_reward".into(), e.reward), ("val_kl".into(), e.kl)])
    }

    fn extra_state(&self) -> Vec<(&'static str, Vec<(String, Tensor)>)> {
        self.rollout.iter().map(|r| ("rollout", r.tensors())).collect()
    }

    fn load_extra_state(&mut self, dir: &Path) -> zoo_core::Result<()> {
        let p = dir.join("rollout.safetensors");
        if p.is_file() {
            self.rollout = Some(Rollout::from_tensors(zoo_core::weights::load(&p)?).map_err(core_err)?);
        }
        Ok(())
    }
}

/// Runs (or resumes) PPO into the run folder `out`. `opts.stage.steps` counts iterations;
/// the outcome's `steps` count minibatch updates ([`PpoOptions::updates_per_rollout`] each).
pub fn ppo(
    opts: &PpoOptions,
    out: &Path,
    resume: bool,
    device: Device,
    reporter: &mut dyn Reporter,
) -> Result<StageOutcome<PpoEval>> {
    if opts.minibatch_size == 0 || opts.ppo_epochs == 0 || opts.max_new_tokens == 0 {
        return Err(Error::Input(
            "--minibatch-size, --ppo-epochs and --max-new-tokens must be at least 1".into(),
        ));
    }
    if opts.minibatch_size > opts.stage.batch_size {
        return Err(Error::Input("--minibatch-size must not exceed --batch-size".into()));
    }
    let reward = RewardModel::load(&opts.reward_model, device)?;
    let records: Vec<PromptRecord> = read_jsonl(&opts.data)?;
    let (train_recs, val_recs) = split_held_out(records, opts.stage.val_fraction)?;
    let corpus: String = train_recs.iter().chain(&val_recs).map(|r| r.prompt.as_str()).collect();
    // The loop counts minibatch updates; the options count iterations.
    let mut stage_opts = opts.stage.clone();
    stage_opts.steps = opts.stage.steps * opts.updates_per_rollout();
    stage_opts.eval_every = opts.stage.eval_every * opts.updates_per_rollout();
    let mut stage = Stage::open(&stage_opts, out, resume, opts, &corpus, device)?;
    if let Some(rt) = &reward.tokenizer {
        if rt.vocab_size() != stage.tokenizer.vocab_size() {
            return Err(Error::Input(format!(
                "the reward model's tokenizer has {} tokens, the policy's {}: both must use the same tokenizer",
                rt.vocab_size(),
                stage.tokenizer.vocab_size()
            )));
        }
    }
    let encode = |rs: &[PromptRecord]| -> Result<Vec<Vec<i64>>> {
        rs.iter()
            .map(|r| {
                let ids = stage.tokenizer.encode(&r.prompt)?;
                if ids.is_empty() {
                    return Err(Error::Input("a record has an empty prompt".into()));
                }
                Ok(ids)
            })
            .collect()
    };
    let train = encode(&train_recs)?;
    let val = encode(&val_recs)?;
    seed_all(opts.stage.seed);
    let mut reference =
        open_for_training(&opts.stage.model, Some(stage.tokenizer.vocab_size() as i64), None, device)?;
    reference.vs.freeze();
    let head = ValueHead::new(&stage.m.vs, super::reward::hidden_size(&stage.m.config));
    stage.exclude.push("v_head".into());
    let mut task = PpoTask {
        opts,
        policy: &stage.m.model,
        head: &head,
        reference: &reference.model,
        reward: &reward,
        train: &train,
        val: &val,
        eos: stage.eos.into_iter().collect(),
        context: stage.m.config.context_len(),
        device,
        rollout: None,
        last_eval: None,
    };
    stage.train(&mut task, resume, (train.len(), val.len()), reporter)
}
