//! Generation: left-padded batched prefill, then one token per step through the KV cache,
//! with EOS, stop strings and a token budget; text streams out as it is made.
//!
//! The loop, for a batch of prompts:
//! 1. left-pad the prompts to one length, with an attention mask of 1 (token) and 0 (pad);
//! 2. prefill: one forward over the prompts fills the cache; the last position's logits
//!    give the first new token (a [`Sampler`] draw);
//! 3. each step feeds the B new tokens (mask grows by a column of ones) and samples again;
//! 4. a row finishes at an EOS id, a stop string or `max_new_tokens`; the batch stops when
//!    every row has finished (finished rows keep being fed, their tokens ignored).
use std::time::Instant;

use tch::{Device, Kind, Tensor};

use crate::model::Model;
use crate::sampling::{Context, Sampler, SamplingConfig};
use crate::tokenizer::{StreamDecoder, Tokenizer};
use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct GenerateConfig {
    pub max_new_tokens: usize,
    pub sampling: SamplingConfig,
    /// Text that ends a row when it appears in the generated text (left out of the text).
    pub stop: Vec<String>,
    /// Token ids that end a row (e.g. `<|endoftext|>`), kept in the tokens, not in the text.
    pub eos_token_ids: Vec<i64>,
    /// When prompt + new tokens exceed the context: false, an error; true, keep the last
    /// tokens of the prompt that fit.
    pub truncate: bool,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        GenerateConfig {
            max_new_tokens: 64,
            sampling: SamplingConfig::default(),
            stop: Vec::new(),
            eos_token_ids: Vec::new(),
            truncate: false,
        }
    }
}

impl GenerateConfig {
    /// With `truncate`, new tokens that would fill a context of `context` tokens are clamped
    /// to `context - 1` (one prompt token stays), as transformers does; returns the number
    /// asked for when it clamps. Without `truncate` nothing changes (too many is an error).
    pub fn fit_to_context(&mut self, context: i64) -> Option<usize> {
        let context = usize::try_from(context).unwrap_or(0);
        if !self.truncate || context < 2 || self.max_new_tokens < context {
            return None;
        }
        let asked = self.max_new_tokens;
        self.max_new_tokens = context - 1;
        Some(asked)
    }
}

/// Why a row stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    Eos,
    Stop(String),
    Length,
}

/// One row's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// Prompt tokens used (after any truncation).
    pub prompt_tokens: Vec<i64>,
    /// New tokens, including a final EOS.
    pub tokens: Vec<i64>,
    /// Their text, up to a stop string (empty without a tokenizer).
    pub text: String,
    pub finish: Finish,
}

/// Prompts that fit the context: checked, or cut from the left with `truncate`.
pub fn fit_prompts(
    prompts: &[Vec<i64>],
    max_new: usize,
    context: i64,
    truncate: bool,
) -> Result<Vec<Vec<i64>>> {
    let context = usize::try_from(context).unwrap_or(0);
    if prompts.is_empty() {
        return Err(Error::Input("no prompts".into()));
    }
    let mut out = Vec::with_capacity(prompts.len());
    for p in prompts {
        if p.is_empty() {
            return Err(Error::Input("empty prompt: give at least one token of text".into()));
        }
        if p.len() + max_new <= context {
            out.push(p.clone());
        } else if max_new >= context {
            return Err(Error::Input(format!(
                "--max-new-tokens {max_new} leaves no room for the prompt in the model's context of {context} tokens"
            )));
        } else if truncate {
            out.push(p[p.len() - (context - max_new)..].to_vec());
        } else {
            return Err(Error::Input(format!(
                "prompt ({} tokens) + --max-new-tokens {max_new} exceeds the model's context of {context} tokens: \
                 shorten the prompt, lower --max-new-tokens, or pass --truncate to keep the last {} prompt tokens",
                p.len(),
                context - max_new
            )));
        }
    }
    Ok(out)
}

/// Left-pads `prompts` into ids and mask, both `(B, T)` int64. Pad positions hold id 0.
pub fn left_pad(prompts: &[Vec<i64>], device: Device) -> Result<(Tensor, Tensor)> {
    let t = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(prompts.len() * t);
    let mut mask = Vec::with_capacity(prompts.len() * t);
    for p in prompts {
        let pad = t - p.len();
        ids.extend(std::iter::repeat_n(0, pad).chain(p.iter().copied()));
        mask.extend(std::iter::repeat_n(0i64, pad).chain(std::iter::repeat_n(1, p.len())));
    }
    let shape = [prompts.len() as i64, t as i64];
    Ok((
        Tensor::from_slice(&ids).f_view(shape)?.f_to_device(device)?,
        Tensor::from_slice(&mask).f_view(shape)?.f_to_device(device)?,
    ))
}

/// Where the time of a [`generate_timed`] call went, in seconds (for `zoo llm generate -v`
/// and profiling: the decoding loop's own work is `sample + rows + inputs`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timings {
    /// The prompt forward (the first token's logits included).
    pub prefill: f64,
    /// Decoding steps: the transformer blocks (embedding to final norm).
    pub blocks: f64,
    /// Decoding steps: the LM head.
    pub lm_head: f64,
    /// Logits processors, the choice of tokens and their copy to the CPU.
    pub sample: f64,
    /// Per-row bookkeeping: EOS, streaming decode, stop strings, the text callback.
    pub rows: f64,
    /// The next step's input ids and attention mask.
    pub inputs: f64,
}

/// Holds back text that could be the start of a stop string, and finds stop strings.
struct StopFilter {
    stops: Vec<String>,
    pending: String,
}

impl StopFilter {
    /// Takes new text; returns what can be shown, and the stop string if one completed.
    fn push(&mut self, text: &str) -> (String, Option<String>) {
        self.pending.push_str(text);
        let hit = self
            .stops
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| self.pending.find(s.as_str()).map(|i| (i, s)))
            .min_by_key(|(i, _)| *i);
        if let Some((i, s)) = hit {
            let out = self.pending[..i].to_string();
            let s = s.clone();
            self.pending.clear();
            return (out, Some(s));
        }
        // The longest tail of the pending text that begins some stop string stays pending.
        let hold = self
            .pending
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| self.stops.iter().any(|s| s.starts_with(&self.pending[i..])))
            .unwrap_or(self.pending.len());
        let out = self.pending[..hold].to_string();
        self.pending.drain(..hold);
        (out, None)
    }

    fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

struct Row<'t> {
    tokens: Vec<i64>,
    prompt_len: usize,
    decoder: Option<StreamDecoder<'t>>,
    filter: StopFilter,
    text: String,
    finish: Option<Finish>,
}

/// Generates from each prompt (token ids). `on_text(row, text)` receives each row's text as
/// it becomes final (never a partial UTF-8 character, never part of a stop string). Without a
/// tokenizer there is no text and stop strings are an error.
pub fn generate(
    model: &Model,
    tokenizer: Option<&Tokenizer>,
    prompts: &[Vec<i64>],
    context_len: i64,
    cfg: &GenerateConfig,
    on_text: &mut dyn FnMut(usize, &str),
) -> Result<Vec<Generation>> {
    Ok(generate_timed(model, tokenizer, prompts, context_len, cfg, on_text)?.0)
}

/// [`generate`], and where its time went.
pub fn generate_timed(
    model: &Model,
    tokenizer: Option<&Tokenizer>,
    prompts: &[Vec<i64>],
    context_len: i64,
    cfg: &GenerateConfig,
    on_text: &mut dyn FnMut(usize, &str),
) -> Result<(Vec<Generation>, Timings)> {
    if tokenizer.is_none() && !cfg.stop.is_empty() {
        return Err(Error::Input("stop strings need a tokenizer".into()));
    }
    let vocab_limit = tokenizer.map(|t| t.vocab_size() as i64);
    let sampler = Sampler::new(&cfg.sampling, vocab_limit)?;
    let mut fitted = cfg.clone();
    fitted.fit_to_context(context_len);
    let cfg = &fitted;
    let prompts = fit_prompts(prompts, cfg.max_new_tokens, context_len, cfg.truncate)?;
    let device = match model {
        Model::Gpt2(m) => m.wte.ws.device(),
        Model::Llama(m) => m.embed_tokens.ws.device(),
    };
    let mut rows: Vec<Row> = prompts
        .iter()
        .map(|p| Row {
            tokens: p.clone(),
            prompt_len: p.len(),
            decoder: tokenizer.map(StreamDecoder::new),
            filter: StopFilter { stops: cfg.stop.clone(), pending: String::new() },
            text: String::new(),
            finish: None,
        })
        .collect();
    let mut time = Timings::default();
    if cfg.max_new_tokens == 0 {
        return Ok((finish_rows(rows, on_text), time));
    }
    let clock = Instant::now();

    let (ids, mut mask) = left_pad(&prompts, device)?;
    let mut cache = model.new_cache();
    let b = prompts.len() as i64;
    // prefill: only the last position's logits are needed
    let hidden = tch::no_grad(|| model.forward_hidden(&ids, Some(&mask), Some(&mut cache), false))?;
    let t = hidden.size()[1];
    let mut logits = tch::no_grad(|| model.lm_head(&hidden.f_narrow(1, t - 1, 1)?))?.f_squeeze_dim(1)?;
    time.prefill = clock.elapsed().as_secs_f64();
    for _ in 0..cfg.max_new_tokens {
        let clock = Instant::now();
        let all: Vec<Vec<i64>> = rows.iter().map(|r| r.tokens.clone()).collect();
        let lens: Vec<usize> = rows.iter().map(|r| r.prompt_len).collect();
        let next = sampler.sample(&logits, &Context { tokens: &all, prompt_lens: &lens })?;
        let next: Vec<i64> = Vec::<i64>::try_from(next.f_to_device(Device::Cpu)?)?;
        time.sample += clock.elapsed().as_secs_f64();
        let clock = Instant::now();
        for (i, (row, &tok)) in rows.iter_mut().zip(&next).enumerate() {
            if row.finish.is_some() {
                continue;
            }
            row.tokens.push(tok);
            if cfg.eos_token_ids.contains(&tok) {
                row.finish = Some(Finish::Eos);
                continue;
            }
            if let Some(d) = &mut row.decoder {
                if let Some(chunk) = d.step(tok)? {
                    let (shown, stop) = row.filter.push(&chunk);
                    if !shown.is_empty() {
                        on_text(i, &shown);
                        row.text.push_str(&shown);
                    }
                    if let Some(s) = stop {
                        row.finish = Some(Finish::Stop(s));
                    }
                }
            }
            if row.finish.is_none() && row.tokens.len() - row.prompt_len >= cfg.max_new_tokens {
                row.finish = Some(Finish::Length);
            }
        }
        time.rows += clock.elapsed().as_secs_f64();
        if rows.iter().all(|r| r.finish.is_some()) {
            break;
        }
        let clock = Instant::now();
        let step = Tensor::from_slice(&next).f_view([b, 1])?.f_to_device(device)?;
        mask = Tensor::f_cat(&[&mask, &Tensor::f_ones([b, 1], (Kind::Int64, device))?], 1)?;
        time.inputs += clock.elapsed().as_secs_f64();
        let clock = Instant::now();
        let hidden = tch::no_grad(|| model.forward_hidden(&step, Some(&mask), Some(&mut cache), false))?;
        time.blocks += clock.elapsed().as_secs_f64();
        let clock = Instant::now();
        logits = tch::no_grad(|| model.lm_head(&hidden))?.f_squeeze_dim(1)?;
        time.lm_head += clock.elapsed().as_secs_f64();
    }
    Ok((finish_rows(rows, on_text), time))
}

fn finish_rows(rows: Vec<Row>, on_text: &mut dyn FnMut(usize, &str)) -> Vec<Generation> {
    rows.into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            if !matches!(r.finish, Some(Finish::Stop(_))) {
                // Flush what the decoder and the stop filter held back.
                let mut tail = r.decoder.as_mut().and_then(|d| d.finish().ok().flatten()).unwrap_or_default();
                let (shown, stop) = r.filter.push(&tail);
                tail = shown;
                if stop.is_none() {
                    tail.push_str(&r.filter.finish());
                } else {
                    r.finish = stop.map(Finish::Stop);
                }
                if !tail.is_empty() {
                    on_text(i, &tail);
                    r.text.push_str(&tail);
                }
            }
            Generation {
                prompt_tokens: r.tokens[..r.prompt_len].to_vec(),
                tokens: r.tokens[r.prompt_len..].to_vec(),
                text: r.text,
                finish: r.finish.unwrap_or(Finish::Length),
            }
        })
        .collect()
}

/// Samples `gen.max_new_tokens` tokens of text from a model whose context `block` is shorter
/// than that: chunks of at most `block / 2` new tokens, each from the last `block / 2` tokens
/// so far (for the samples of small-context models in training and the demo). Returns at most
/// `gen.max_new_tokens` characters.
pub fn generate_sliding(
    model: &Model,
    tok: &Tokenizer,
    prompt: &[i64],
    block: i64,
    gen: &GenerateConfig,
) -> Result<String> {
    let chunk = (block / 2).max(1) as usize;
    let mut ids = prompt.to_vec();
    let mut text = String::new();
    while text.chars().count() < gen.max_new_tokens {
        let g = GenerateConfig { max_new_tokens: chunk, ..gen.clone() };
        let ctx = &ids[ids.len().saturating_sub(chunk)..];
        let out = generate(model, Some(tok), &[ctx.to_vec()], block, &g, &mut |_, _| {})?;
        let Some(o) = out.into_iter().next() else { break };
        ids.extend(&o.tokens);
        text.push_str(&o.text);
        if o.finish != Finish::Length || o.tokens.is_empty() {
            break;
        }
    }
    Ok(text.chars().take(gen.max_new_tokens).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;
    use crate::{gpt2, llama};
    use tch::nn::VarStore;

    fn tiny(cfg: ModelConfig) -> (VarStore, Model) {
        let vs = VarStore::new(Device::Cpu);
        tch::manual_seed(1); // init only; no draws are compared across tests
        let m = Model::new(vs.root(), &cfg).unwrap();
        (vs, m)
    }

    #[test]
    fn stop_filter_holds_back_prefixes() {
        let mut f = StopFilter { stops: vec!["\n\n".into(), "END".into()], pending: String::new() };
        assert_eq!(f.push("abc\n"), ("abc".into(), None));
        assert_eq!(f.push("x E"), ("\nx ".into(), None));
        assert_eq!(f.push("N"), ("".into(), None));
        assert_eq!(f.push("Dtail"), ("".into(), Some("END".into())));
        let mut f = StopFilter { stops: vec!["ü!".into()], pending: String::new() };
        assert_eq!(f.push("aü"), ("a".into(), None));
        assert_eq!(f.push("b"), ("üb".into(), None));
        assert_eq!(f.finish(), "");
    }

    #[test]
    fn prompts_must_fit_or_be_truncated() {
        let p = vec![vec![1, 2, 3, 4, 5]];
        assert_eq!(fit_prompts(&p, 3, 8, false).unwrap(), p);
        let e = fit_prompts(&p, 4, 8, false).unwrap_err().to_string();
        assert!(e.contains("prompt (5 tokens) + --max-new-tokens 4 exceeds the model's context of 8"), "{e}");
        assert!(e.contains("--truncate to keep the last 4"), "{e}");
        assert_eq!(fit_prompts(&p, 4, 8, true).unwrap(), [vec![2, 3, 4, 5]]);
        // With truncate, a whole context of new tokens is clamped to leave one prompt token.
        let mut cfg = GenerateConfig { max_new_tokens: 8, truncate: true, ..Default::default() };
        assert_eq!(cfg.fit_to_context(8), Some(8));
        assert_eq!(cfg.max_new_tokens, 7);
        assert_eq!(fit_prompts(&p, cfg.max_new_tokens, 8, true).unwrap(), [vec![5]]);
        let mut strict = GenerateConfig { max_new_tokens: 8, ..Default::default() };
        assert_eq!(strict.fit_to_context(8), None);
        assert_eq!(strict.max_new_tokens, 8);
        assert!(fit_prompts(&p, 8, 8, true).unwrap_err().to_string().contains("leaves no room"));
        assert!(fit_prompts(&p, 9, 8, false).unwrap_err().to_string().contains("leaves no room"));
        assert!(fit_prompts(&[vec![]], 1, 8, false).unwrap_err().to_string().contains("empty prompt"));
    }

    /// Greedy generation with the cache equals greedy decoding by full forwards, and a
    /// left-padded batch gives each row what it gives alone.
    #[test]
    fn cached_batched_greedy_equals_uncached_singles() {
        let configs = [
            ModelConfig::Gpt2(gpt2::Config::tiny()),
            ModelConfig::Llama(llama::Config::tiny()),
            ModelConfig::Llama(llama::Config {
                model_type: "mistral".into(),
                sliding_window: Some(4),
                ..llama::Config::tiny()
            }),
        ];
        for cfg in configs {
            let (_vs, m) = tiny(cfg);
            let prompts = vec![vec![3i64, 17, 5, 9, 2], vec![40, 41], vec![7, 7, 7]];
            let g = GenerateConfig {
                max_new_tokens: 6,
                sampling: SamplingConfig::greedy(),
                ..Default::default()
            };
            let batch = generate(&m, None, &prompts, 64, &g, &mut |_, _| {}).unwrap();
            for (p, out) in prompts.iter().zip(&batch) {
                let mut seq = p.clone();
                for _ in 0..6 {
                    let ids = Tensor::from_slice(&seq).view([1, -1]);
                    let l = m.forward(&ids, None, None, false).unwrap();
                    seq.push(l.get(0).get(seq.len() as i64 - 1).argmax(-1, false).int64_value(&[]));
                }
                assert_eq!(out.tokens, seq[p.len()..], "{m:?}");
                assert_eq!(out.finish, Finish::Length);
            }
        }
    }

    #[test]
    fn eos_ends_a_row() {
        let (_vs, m) = tiny(ModelConfig::Gpt2(gpt2::Config::tiny()));
        let g =
            GenerateConfig { max_new_tokens: 5, sampling: SamplingConfig::greedy(), ..Default::default() };
        let first = generate(&m, None, &[vec![1, 2]], 64, &g, &mut |_, _| {}).unwrap();
        let eos = first[0].tokens[2];
        let g = GenerateConfig { eos_token_ids: vec![eos], ..g };
        let out = generate(&m, None, &[vec![1, 2]], 64, &g, &mut |_, _| {}).unwrap();
        let at = first[0].tokens.iter().position(|&t| t == eos).unwrap();
        assert_eq!(out[0].tokens, first[0].tokens[..=at]);
        assert_eq!(out[0].finish, Finish::Eos);
    }

    #[test]
    fn text_streams_and_stops() {
        let (_vs, m) = tiny(ModelConfig::Gpt2(gpt2::Config::tiny()));
        // 96 characters for the 96 ids of the tiny model: every token is a whole character.
        let chars: String = (32u8..127).map(char::from).chain(['\n']).collect();
        let tok = Tokenizer::Char(crate::tokenizer::CharTokenizer::from_text(&chars).unwrap());
        assert_eq!(tok.vocab_size(), 96);
        let g =
            GenerateConfig { max_new_tokens: 12, sampling: SamplingConfig::greedy(), ..Default::default() };
        let free = generate(&m, Some(&tok), &[vec![65, 66]], 64, &g, &mut |_, _| {}).unwrap();
        let full = tok.decode(&free[0].tokens).unwrap();
        assert_eq!(free[0].text, full);
        // Stop at the text of generated tokens 3..5: the text before its first occurrence remains.
        let stop = tok.decode(&free[0].tokens[3..5]).unwrap();
        let g = GenerateConfig { stop: vec![stop.clone()], ..g };
        let mut streamed = String::new();
        let out =
            generate(&m, Some(&tok), &[vec![65, 66]], 64, &g, &mut |_, s| streamed.push_str(s)).unwrap();
        assert_eq!(out[0].finish, Finish::Stop(stop.clone()));
        assert_eq!(out[0].text, full[..full.find(&stop).unwrap()]);
        assert_eq!(streamed, out[0].text);
    }
}
