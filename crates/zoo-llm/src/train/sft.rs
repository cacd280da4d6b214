//! Stage 2, supervised fine-tuning (`zoo llm sft`): next-token loss on the responses of
//! prompt/response pairs (or on the assistant turns of chat conversations), the prompt masked
//! out. Evaluation reports the held-out response loss and exact match: greedy decoding from each
//! held-out prompt reproduces the reference response token for token.
use std::path::{Path, PathBuf};

use rand::Rng;
use serde::{Deserialize, Serialize};
use tch::Device;
use zoo_core::train::trainer::Reporter;
use zoo_core::train::{LoopConfig, LrSchedule, StepOutput, TrainTask};

use super::examples::{collate, Example, SftRecord, IGNORE};
use super::{core_err, lm_loss, read_split, Stage, StageOptions, StageOutcome, StageTask};
use crate::generate::{generate, GenerateConfig};
use crate::model::Model;
use crate::sampling::SamplingConfig;
use crate::{Error, Result};

/// A fine-tuning run: the shared stage settings and the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SftOptions {
    /// JSONL of `{"prompt","response"}` or `{"messages": [...]}` records.
    pub data: PathBuf,
    /// Held-out records (default: the last `val_fraction` of `data`).
    pub val_data: Option<PathBuf>,
    #[serde(flatten)]
    pub stage: StageOptions,
    /// Held-out examples whose greedy completion is checked at each evaluation.
    pub eval_generate: usize,
}

/// Exact match and loss on held-out examples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SftEval {
    pub val_loss: f64,
    pub exact_match: f64,
    pub checked: usize,
}

/// Mean loss over the trained tokens of `examples` (batches of `batch`), without gradients.
pub fn response_loss(model: &Model, examples: &[Example], batch: usize, device: Device) -> Result<f64> {
    tch::no_grad(|| {
        let (mut sum, mut n) = (0.0, 0usize);
        for chunk in examples.chunks(batch.max(1)) {
            let refs: Vec<&Example> = chunk.iter().collect();
            let (x, y) = collate(&refs, device)?;
            let k = y.f_ne(IGNORE)?.f_sum(tch::Kind::Int64)?.int64_value(&[]) as usize;
            let logits = model.forward(&x, None, None, false)?;
            sum += lm_loss(&logits, &y)?.f_double_value(&[])? * k as f64;
            n += k;
        }
        Ok(if n > 0 { sum / n as f64 } else { f64::NAN })
    })
}

/// Share of `examples` whose last trained span (the response) greedy decoding reproduces
/// exactly from the tokens before it.
pub fn exact_match(model: &Model, examples: &[Example], context: i64, batch: usize) -> Result<f64> {
    if examples.is_empty() {
        return Ok(f64::NAN);
    }
    let mut hits = 0;
    for chunk in examples.chunks(batch.max(1)) {
        let mut prompts = Vec::new();
        let mut refs = Vec::new();
        for e in chunk {
            let end = e.labels.iter().rposition(|&l| l != IGNORE).map_or(0, |i| i + 1);
            let start = e.labels[..end].iter().rposition(|&l| l == IGNORE).map_or(0, |i| i + 1).max(1);
            prompts.push(e.ids[..start].to_vec());
            refs.push(e.ids[start..end].to_vec());
        }
        let longest = refs.iter().map(Vec::len).max().unwrap_or(1);
        let cfg = GenerateConfig {
            max_new_tokens: longest,
            sampling: SamplingConfig { temperature: 0.0, ..Default::default() },
            truncate: true,
            ..Default::default()
        };
        let out = tch::no_grad(|| generate(model, None, &prompts, context, &cfg, &mut |_, _| {}))?;
        hits += out
            .iter()
            .zip(&refs)
            .filter(|(g, r)| g.tokens.len() >= r.len() && g.tokens[..r.len()] == r[..])
            .count();
    }
    Ok(hits as f64 / examples.len() as f64)
}

struct SftTask<'a> {
    model: &'a Model,
    train: &'a [Example],
    val: &'a [Example],
    batch: usize,
    eval_generate: usize,
    context: i64,
    device: Device,
    last: Option<SftEval>,
}

impl StageTask for SftTask<'_> {
    type Eval = SftEval;
    fn last_eval(&self) -> Option<SftEval> {
        self.last
    }
    fn evaluate(&mut self) -> Result<SftEval> {
        let val_loss = response_loss(self.model, self.val, 64, self.device)?;
        let n = self.eval_generate.min(self.val.len());
        let exact = exact_match(self.model, &self.val[..n], self.context, 64)?;
        Ok(SftEval { val_loss, exact_match: exact, checked: n })
    }
}

impl TrainTask for SftTask<'_> {
    fn loss(
        &mut self,
        _step: u64,
        _micro: u32,
        rng: &mut rand::rngs::StdRng,
    ) -> zoo_core::Result<StepOutput> {
        let picks: Vec<&Example> =
            (0..self.batch).map(|_| &self.train[rng.gen_range(0..self.train.len())]).collect();
        let (x, y) = collate(&picks, self.device).map_err(core_err)?;
        let logits = self.model.forward(&x, None, None, true).map_err(core_err)?;
        Ok(StepOutput { loss: lm_loss(&logits, &y).map_err(core_err)?, metrics: Vec::new() })
    }

    fn eval(&mut self, _step: u64) -> zoo_core::Result<Vec<(String, f64)>> {
        let e = self.evaluate().map_err(core_err)?;
        self.last = Some(e);
        Ok(vec![("val_loss".into(), e.val_loss), ("exact_match".into(), e.exact_match)])
    }
}

/// Runs (or resumes) supervised fine-tuning into the run folder `out`.
pub fn sft(
    opts: &SftOptions,
    out: &Path,
    resume: bool,
    device: Device,
    reporter: &mut dyn Reporter,
) -> Result<StageOutcome<SftEval>> {
    let (train_recs, val_recs): (Vec<SftRecord>, Vec<SftRecord>) =
        read_split(&opts.data, opts.val_data.as_deref(), opts.stage.val_fraction)?;
    let text_of = |r: &SftRecord| match r {
        SftRecord::Pair { prompt, response } => format!("{prompt}{response}"),
        SftRecord::Chat { messages } => messages.iter().map(|m| m.content.as_str()).collect(),
    };
    let corpus: String = train_recs.iter().chain(&val_recs).map(text_of).collect();
    let stage = Stage::open(&opts.stage, out, resume, opts, &corpus, device)?;
    let enc = stage.encoder();
    let encode_all = |rs: &[SftRecord]| -> Result<Vec<Example>> {
        rs.iter()
            .enumerate()
            .map(|(i, r)| enc.record(r).map_err(|e| Error::Input(format!("record {}: {e}", i + 1))))
            .collect()
    };
    let train = encode_all(&train_recs)?;
    let val = encode_all(&val_recs)?;
    if train.iter().all(|e| e.trained() == 0) {
        return Err(Error::Input("no record has a response token within the context".into()));
    }

    let mut task = SftTask {
        model: &stage.m.model,
        train: &train,
        val: &val,
        batch: opts.stage.batch_size,
        eval_generate: opts.eval_generate,
        context: stage.m.config.context_len(),
        device,
        last: None,
    };
    stage.train(&mut task, resume, (train.len(), val.len()), reporter)
}

/// The recipe a run starts with when the caller does not say otherwise: lr 1e-4 constant after
/// 10 warmup steps, no weight decay, batch 16.
pub fn default_schedule(lr: f64, warmup: u64, steps: u64) -> LrSchedule {
    LrSchedule::WarmupCosine { lr, min_lr: lr, warmup_steps: warmup.min(steps), decay_steps: steps }
}

/// The loop settings of a fine-tuning stage.
pub(crate) fn loop_config(o: &StageOptions, eval: bool) -> LoopConfig {
    let every = eval.then_some(if o.eval_every > 0 { o.eval_every } else { o.steps.max(1) });
    LoopConfig {
        steps: o.steps,
        grad_accum: 1,
        clip_grad: Some(1.0),
        log_every: 10.min(o.steps.max(1)),
        eval_every: every,
        sample_every: None,
        checkpoint_every: Some(if o.eval_every > 0 { o.eval_every } else { o.steps.max(1) }),
        keep_checkpoints: 2,
        seed: o.seed,
    }
}
