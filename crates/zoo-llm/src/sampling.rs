//! Choosing the next token: composable logits processors, then greedy choice or a draw.
//!
//! Each processor maps logits `(B, V)` to logits; a removed token gets `-inf`. [`Sampler`]
//! applies the enabled ones in transformers' order:
//!
//! 1. vocabulary limit: ids the tokenizer cannot decode (a model's padded embedding rows);
//! 2. repetition penalty `r` (CTRL, Keskar et al. 2019; transformers' semantics): for each
//!    token in the last `n` tokens of the sequence (prompt included; `n = 0`: all of it), a
//!    positive logit is divided by `r`, a negative one multiplied by `r`;
//! 3. frequency and presence penalties (OpenAI's semantics): `logit -= c * frequency +
//!    (c > 0) * presence`, with `c` the count of the token among the generated tokens;
//! 4. temperature `t`: `logit / t`; `t = 0` means greedy: the argmax after steps 1-3;
//! 5. top-k: keep the `k` largest logits (ties at the k-th value kept);
//! 6. top-p (nucleus, Holtzman et al. 2020): keep the smallest set of most likely tokens whose
//!    probabilities sum to at least `p` (always the most likely one);
//! 7. min-p (Nguyen et al. 2024): drop tokens with probability below `min_p` times the
//!    probability of the most likely token.
//!
//! A draw is `multinomial(softmax(logits), 1)` on libtorch's default generator: after
//! `seed_all(s)`, step `i` of a generation makes the `i`-th draw, one `(B, V)` multinomial per
//! step, so the same seed and settings give the same text.
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::{Error, Result};

/// The sampling settings (the `zoo llm generate` flags).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingConfig {
    /// 0: greedy.
    pub temperature: f64,
    pub top_k: Option<i64>,
    pub top_p: Option<f64>,
    pub min_p: Option<f64>,
    /// 1: off.
    pub repetition_penalty: f64,
    /// Tokens the repetition penalty looks back over; 0: the whole sequence.
    pub repeat_last_n: usize,
    pub frequency_penalty: f64,
    pub presence_penalty: f64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            temperature: 1.0,
            top_k: None,
            top_p: None,
            min_p: None,
            repetition_penalty: 1.0,
            repeat_last_n: 64,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
        }
    }
}

impl SamplingConfig {
    pub fn greedy() -> Self {
        SamplingConfig { temperature: 0.0, ..Default::default() }
    }
}

/// What the processors may look at besides the logits.
pub struct Context<'a> {
    /// Each row's tokens so far: prompt, then generated.
    pub tokens: &'a [Vec<i64>],
    /// Each row's prompt length.
    pub prompt_lens: &'a [usize],
}

/// One step of logits processing. Shapes: (B, V) -> (B, V)
pub trait LogitsProcessor {
    fn process(&self, logits: &Tensor, ctx: &Context) -> Result<Tensor>;
}

/// Flat indices `b * V + token` of the given tokens of each row, as a tensor.
fn flat_index(rows: &[Vec<i64>], v: i64, device: tch::Device) -> Tensor {
    let idx: Vec<i64> = rows
        .iter()
        .enumerate()
        .flat_map(|(b, toks)| toks.iter().filter(|&&t| (0..v).contains(&t)).map(move |&t| b as i64 * v + t))
        .collect();
    Tensor::from_slice(&idx).to_device(device)
}

/// Removes ids at and above `n`.
pub struct VocabLimit(pub i64);
impl LogitsProcessor for VocabLimit {
    fn process(&self, logits: &Tensor, _: &Context) -> Result<Tensor> {
        let v = logits.size()[1];
        if self.0 >= v {
            return Ok(logits.shallow_clone());
        }
        let ids = Tensor::f_arange(v, (Kind::Int64, logits.device()))?;
        Ok(logits.f_masked_fill(&ids.f_ge(self.0)?.f_unsqueeze(0)?, f64::NEG_INFINITY)?)
    }
}

pub struct RepetitionPenalty {
    pub penalty: f64,
    pub last_n: usize,
}
impl LogitsProcessor for RepetitionPenalty {
    fn process(&self, logits: &Tensor, ctx: &Context) -> Result<Tensor> {
        let (b, v) = (logits.size()[0], logits.size()[1]);
        let windows: Vec<Vec<i64>> = ctx
            .tokens
            .iter()
            .map(|t| {
                let from = if self.last_n == 0 { 0 } else { t.len().saturating_sub(self.last_n) };
                t[from..].to_vec()
            })
            .collect();
        let seen = Tensor::f_zeros([b * v], (Kind::Bool, logits.device()))?
            .f_index_fill(0, &flat_index(&windows, v, logits.device()), 1)?
            .f_view([b, v])?;
        let negative = logits.f_lt(0.0)?;
        let penalised = logits
            .f_mul_scalar(self.penalty)?
            .f_where_self(&negative, &logits.f_div_scalar(self.penalty)?)?;
        Ok(penalised.f_where_self(&seen, logits)?)
    }
}

pub struct FrequencyPresence {
    pub frequency: f64,
    pub presence: f64,
}
impl LogitsProcessor for FrequencyPresence {
    fn process(&self, logits: &Tensor, ctx: &Context) -> Result<Tensor> {
        let (b, v) = (logits.size()[0], logits.size()[1]);
        let generated: Vec<Vec<i64>> =
            ctx.tokens.iter().zip(ctx.prompt_lens).map(|(t, &n)| t[n.min(t.len())..].to_vec()).collect();
        let idx = flat_index(&generated, v, logits.device());
        let ones = Tensor::f_ones([idx.size()[0]], (logits.kind(), logits.device()))?;
        let counts = Tensor::f_zeros([b * v], (logits.kind(), logits.device()))?
            .f_index_add(0, &idx, &ones)?
            .f_view([b, v])?;
        let present = counts.f_gt(0.0)?.f_to_kind(logits.kind())?;
        Ok(logits
            .f_sub(&counts.f_mul_scalar(self.frequency)?)?
            .f_sub(&present.f_mul_scalar(self.presence)?)?)
    }
}

pub struct Temperature(pub f64);
impl LogitsProcessor for Temperature {
    fn process(&self, logits: &Tensor, _: &Context) -> Result<Tensor> {
        Ok(logits.f_div_scalar(self.0)?)
    }
}

pub struct TopK(pub i64);
impl LogitsProcessor for TopK {
    fn process(&self, logits: &Tensor, _: &Context) -> Result<Tensor> {
        let k = self.0.min(logits.size()[1]);
        let (top, _) = logits.f_topk(k, -1, true, true)?;
        let kth = top.f_narrow(1, k - 1, 1)?;
        Ok(logits.f_masked_fill(&logits.f_lt_tensor(&kth)?, f64::NEG_INFINITY)?)
    }
}

pub struct TopP(pub f64);
impl LogitsProcessor for TopP {
    fn process(&self, logits: &Tensor, _: &Context) -> Result<Tensor> {
        // transformers' TopPLogitsWarper: sort ascending, drop the prefix whose mass is at
        // most 1 - p; the largest logit always stays.
        let v = logits.size()[1];
        let (sorted, idx) = logits.f_sort(-1, false)?;
        let cum = sorted.f_softmax(-1, Kind::Float)?.f_cumsum(-1, Kind::Float)?;
        let remove = cum.f_le(1.0 - self.0)?;
        let _ = remove.f_narrow(1, v - 1, 1)?.f_fill_(0)?;
        let remove = remove.f_scatter(1, &idx, &remove)?;
        Ok(logits.f_masked_fill(&remove, f64::NEG_INFINITY)?)
    }
}

pub struct MinP(pub f64);
impl LogitsProcessor for MinP {
    fn process(&self, logits: &Tensor, _: &Context) -> Result<Tensor> {
        let probs = logits.f_softmax(-1, Kind::Float)?;
        let (top, _) = probs.f_max_dim(-1, true)?;
        let remove = probs.f_lt_tensor(&top.f_mul_scalar(self.0)?)?;
        Ok(logits.f_masked_fill(&remove, f64::NEG_INFINITY)?)
    }
}

/// The processors of a [`SamplingConfig`], in order, and the final choice.
pub struct Sampler {
    processors: Vec<Box<dyn LogitsProcessor>>,
    greedy: bool,
}

impl Sampler {
    /// `vocab_limit`: ids the tokenizer can decode (smaller than the model's vocabulary when
    /// its embedding is padded), or `None`.
    pub fn new(cfg: &SamplingConfig, vocab_limit: Option<i64>) -> Result<Self> {
        let bad = |m: String| Err(Error::Input(m));
        if !(cfg.temperature.is_finite() && cfg.temperature >= 0.0) {
            return bad(format!("--temperature {} must be >= 0 (0: greedy)", cfg.temperature));
        }
        if cfg.top_k.is_some_and(|k| k < 1) {
            return bad("--top-k must be at least 1".into());
        }
        if cfg.top_p.is_some_and(|p| !(p > 0.0 && p <= 1.0)) {
            return bad("--top-p must be in (0, 1]".into());
        }
        if cfg.min_p.is_some_and(|p| !(0.0..=1.0).contains(&p)) {
            return bad("--min-p must be in [0, 1]".into());
        }
        if !(cfg.repetition_penalty.is_finite() && cfg.repetition_penalty > 0.0) {
            return bad(format!("--repetition-penalty {} must be > 0 (1: off)", cfg.repetition_penalty));
        }
        if !(cfg.frequency_penalty.is_finite() && cfg.presence_penalty.is_finite()) {
            return bad("frequency and presence penalties must be finite".into());
        }
        let mut p: Vec<Box<dyn LogitsProcessor>> = Vec::new();
        if let Some(n) = vocab_limit {
            p.push(Box::new(VocabLimit(n)));
        }
        if cfg.repetition_penalty != 1.0 {
            p.push(Box::new(RepetitionPenalty {
                penalty: cfg.repetition_penalty,
                last_n: cfg.repeat_last_n,
            }));
        }
        if cfg.frequency_penalty != 0.0 || cfg.presence_penalty != 0.0 {
            p.push(Box::new(FrequencyPresence {
                frequency: cfg.frequency_penalty,
                presence: cfg.presence_penalty,
            }));
        }
        let greedy = cfg.temperature == 0.0;
        if !greedy {
            if cfg.temperature != 1.0 {
                p.push(Box::new(Temperature(cfg.temperature)));
            }
            if let Some(k) = cfg.top_k {
                p.push(Box::new(TopK(k)));
            }
            if let Some(tp) = cfg.top_p.filter(|&x| x < 1.0) {
                p.push(Box::new(TopP(tp)));
            }
            if let Some(m) = cfg.min_p.filter(|&x| x > 0.0) {
                p.push(Box::new(MinP(m)));
            }
        }
        Ok(Sampler { processors: p, greedy })
    }

    /// The processed logits (f32). Shapes: (B, V) -> (B, V)
    pub fn process(&self, logits: &Tensor, ctx: &Context) -> Result<Tensor> {
        let mut l = logits.f_to_kind(Kind::Float)?;
        for p in &self.processors {
            l = p.process(&l, ctx)?;
        }
        Ok(l)
    }

    /// The next token of each row. Shapes: (B, V) -> (B,)
    pub fn sample(&self, logits: &Tensor, ctx: &Context) -> Result<Tensor> {
        let l = self.process(logits, ctx)?;
        if self.greedy {
            return Ok(l.f_argmax(-1, false)?);
        }
        let probs = l.f_softmax(-1, Kind::Float)?;
        Ok(probs.f_multinomial(1, false)?.f_squeeze_dim(-1)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(v: &[f32]) -> Tensor {
        Tensor::from_slice(v).view([1, -1])
    }

    fn vals(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.view([-1])).unwrap()
    }

    fn kept(t: &Tensor) -> Vec<bool> {
        vals(t).iter().map(|x| x.is_finite()).collect()
    }

    fn ctx<'a>(tokens: &'a [Vec<i64>], prompt_lens: &'a [usize]) -> Context<'a> {
        Context { tokens, prompt_lens }
    }

    const NONE: &[Vec<i64>] = &[vec![]];

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative() {
        let l = row(&[2.0, -2.0, 1.0, -1.0]);
        let toks = [vec![3, 0, 1, 1]];
        let p = RepetitionPenalty { penalty: 2.0, last_n: 0 };
        assert_eq!(vals(&p.process(&l, &ctx(&toks, &[0])).unwrap()), [1.0, -4.0, 1.0, -2.0]);
        // Only the last 2 tokens (1, 1) count.
        let p = RepetitionPenalty { penalty: 2.0, last_n: 2 };
        assert_eq!(vals(&p.process(&l, &ctx(&toks, &[0])).unwrap()), [2.0, -4.0, 1.0, -1.0]);
    }

    #[test]
    fn frequency_and_presence_count_generated_tokens_only() {
        let l = row(&[0.0, 0.0, 0.0]);
        // Prompt [2]; generated [1, 1, 0].
        let toks = [vec![2, 1, 1, 0]];
        let p = FrequencyPresence { frequency: 0.5, presence: 1.0 };
        assert_eq!(vals(&p.process(&l, &ctx(&toks, &[1])).unwrap()), [-1.5, -2.0, 0.0]);
    }

    #[test]
    fn top_k_keeps_k_and_ties() {
        let l = row(&[1.0, 3.0, 2.0, 3.0, 0.0]);
        assert_eq!(kept(&TopK(2).process(&l, &ctx(NONE, &[0])).unwrap()), [false, true, false, true, false]);
        assert_eq!(kept(&TopK(3).process(&l, &ctx(NONE, &[0])).unwrap()), [false, true, true, true, false]);
        assert_eq!(kept(&TopK(99).process(&l, &ctx(NONE, &[0])).unwrap()), [true; 5]);
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p() {
        // probabilities 0.5, 0.3, 0.15, 0.05
        let l = row(&[0.5f32.ln(), 0.3f32.ln(), 0.15f32.ln(), 0.05f32.ln()]);
        let k = |p| kept(&TopP(p).process(&l, &ctx(NONE, &[0])).unwrap());
        assert_eq!(k(0.5), [true, false, false, false]);
        assert_eq!(k(0.6), [true, true, false, false]);
        assert_eq!(k(0.9), [true, true, true, false]);
        assert_eq!(k(0.01), [true, false, false, false], "the top token always stays");
    }

    #[test]
    fn min_p_scales_with_the_top_probability() {
        let l = row(&[0.5f32.ln(), 0.3f32.ln(), 0.15f32.ln(), 0.05f32.ln()]);
        let k = |p| kept(&MinP(p).process(&l, &ctx(NONE, &[0])).unwrap());
        assert_eq!(k(0.5), [true, true, false, false]); // threshold 0.25
        assert_eq!(k(0.2), [true, true, true, false]); // threshold 0.1
        assert_eq!(k(1.0), [true, false, false, false]);
    }

    #[test]
    fn greedy_takes_the_argmax_after_penalties() {
        let s = Sampler::new(&SamplingConfig { repetition_penalty: 4.0, ..SamplingConfig::greedy() }, None)
            .unwrap();
        let l = Tensor::from_slice(&[3.0f32, 2.0, 0.0, 1.0, 0.0, 5.0]).view([2, 3]);
        let toks = [vec![0], vec![2]];
        let next = Vec::<i64>::try_from(s.sample(&l, &ctx(&toks, &[0, 0])).unwrap()).unwrap();
        assert_eq!(next, [1, 2]); // row 0: 3/4 < 2; row 1: 5/4 > 1 still
    }

    #[test]
    fn vocab_limit_and_top_k_1_make_sampling_deterministic() {
        let cfg = SamplingConfig { top_k: Some(1), temperature: 0.7, ..Default::default() };
        let s = Sampler::new(&cfg, Some(3)).unwrap();
        let l = row(&[0.0, 2.0, 1.0, 9.0]);
        for _ in 0..5 {
            assert_eq!(s.sample(&l, &ctx(NONE, &[0])).unwrap().int64_value(&[0]), 1);
        }
    }

    #[test]
    fn bad_settings_are_errors() {
        let bad = |c: SamplingConfig| Sampler::new(&c, None).err().unwrap().to_string();
        assert!(bad(SamplingConfig { temperature: -1.0, ..Default::default() }).contains("--temperature"));
        assert!(bad(SamplingConfig { top_k: Some(0), ..Default::default() }).contains("--top-k"));
        assert!(bad(SamplingConfig { top_p: Some(1.5), ..Default::default() }).contains("--top-p"));
        assert!(bad(SamplingConfig { min_p: Some(-0.1), ..Default::default() }).contains("--min-p"));
        assert!(bad(SamplingConfig { repetition_penalty: 0.0, ..Default::default() }).contains("penalty"));
    }
}
