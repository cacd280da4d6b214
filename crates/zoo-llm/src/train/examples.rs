//! Tokenized examples for the fine-tuning stages: JSONL records read with line-numbered errors,
//! prompt/response pairs and chat conversations turned into token ids with a loss mask, and
//! batches of them.
//!
//! A fine-tuning example is `ids` with `labels` of the same length: `labels[i]` is `ids[i]`
//! where the model is trained to produce token i (the response), -100 elsewhere (the prompt,
//! as in transformers' data collators). Batches are right-padded: under causal attention a
//! padded tail changes nothing before it, so no attention mask is needed.
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use tch::{Device, Tensor};

use crate::chat::{ChatTemplate, Message};
use crate::model::Model;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// Label of a position that is not trained on.
pub const IGNORE: i64 = -100;

/// A kind of JSONL record, with the shape its lines must have (for error messages).
pub trait JsonlRecord: DeserializeOwned {
    const SHAPE: &'static str;
}

/// Every line of a JSONL file as a `T`; blank lines are skipped, a bad line is an error that
/// names the file and line and says what a line must hold.
pub fn read_jsonl<T: JsonlRecord>(path: &Path) -> Result<Vec<T>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v = serde_json::from_str(line).map_err(|e| {
            // serde's message for untagged enums names no field; the expected shape says more.
            let m = e.to_string();
            let m =
                if m.contains("did not match any variant") { "unexpected keys or values".into() } else { m };
            Error::Input(format!("{}:{}: {m}; each line must be {}", path.display(), i + 1, T::SHAPE))
        })?;
        out.push(v);
    }
    if out.is_empty() {
        return Err(Error::Input(format!("{}: no records", path.display())));
    }
    Ok(out)
}

/// One supervised example: `{"prompt", "response"}` or `{"messages": [...]}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum SftRecord {
    Pair { prompt: String, response: String },
    Chat { messages: Vec<Message> },
}

impl JsonlRecord for SftRecord {
    const SHAPE: &'static str =
        r#"{"prompt": ..., "response": ...} or {"messages": [{"role": ..., "content": ...}, ...]}"#;
}

/// Token ids and their labels (see the module documentation).
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub ids: Vec<i64>,
    pub labels: Vec<i64>,
}

impl Example {
    /// Response tokens (those with a label).
    pub fn trained(&self) -> usize {
        self.labels.iter().filter(|&&l| l != IGNORE).count()
    }
}

/// How records become token ids.
pub struct Encoder<'a> {
    pub tokenizer: &'a Tokenizer,
    /// Appended to every response, when the tokenizer has one (and trained on, so the model
    /// learns to stop).
    pub eos: Option<i64>,
    /// For `messages` records.
    pub template: Option<&'a ChatTemplate>,
    /// Examples longer than this many tokens are cut at the end.
    pub max_len: usize,
}

impl Encoder<'_> {
    /// `prompt` then `response` (+ EOS); only the response is trained on. Empty responses are
    /// errors: an example must teach something.
    pub fn pair(&self, prompt: &str, response: &str) -> Result<Example> {
        if response.is_empty() {
            return Err(Error::Input("a record has an empty response".into()));
        }
        let p = self.tokenizer.encode(prompt)?;
        let mut r = self.tokenizer.encode_plain(response)?;
        r.extend(self.eos);
        let labels = std::iter::repeat_n(IGNORE, p.len()).chain(r.iter().copied()).collect();
        let ids = p.into_iter().chain(r).collect();
        Ok(self.cut(Example { ids, labels }))
    }

    /// A conversation rendered with the chat template; the assistant turns are trained on.
    /// Each assistant turn's text is found by rendering the conversation up to it (with the
    /// generation prompt) and through it, and its tokens are those whose text lies there.
    pub fn chat(&self, messages: &[Message]) -> Result<Example> {
        let Some(t) = self.template else {
            return Err(Error::Input(
                "\"messages\" records need a chat template (tokenizer_config.json of the model folder)"
                    .into(),
            ));
        };
        let full = t.render(messages, false)?;
        let mut spans = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            if m.role != "assistant" {
                continue;
            }
            let before = t.render(&messages[..i], true)?;
            let through = t.render(&messages[..=i], false)?;
            if !(full.starts_with(&through) && through.starts_with(&before)) {
                return Err(Error::Input(
                    "the chat template does not render a conversation as a growing prefix; use prompt/response records".into(),
                ));
            }
            spans.push((before.len(), through.len()));
        }
        if spans.is_empty() {
            return Err(Error::Input("a conversation has no assistant message to learn".into()));
        }
        let (ids, offsets) = match self.tokenizer {
            Tokenizer::Hf(h) => {
                let enc = h.encode(full.as_str(), false).map_err(|e| Error::Tokenizer(e.to_string()))?;
                (enc.get_ids().iter().map(|&i| i as i64).collect::<Vec<_>>(), enc.get_offsets().to_vec())
            }
            other => {
                let ids = other.encode_plain(&full)?;
                // One token per character: the byte offsets of the characters.
                let offs = full.char_indices().map(|(b, c)| (b, b + c.len_utf8())).collect();
                (ids, offs)
            }
        };
        let labels = ids
            .iter()
            .zip(&offsets)
            .map(|(&id, &(s, _))| if spans.iter().any(|&(a, b)| s >= a && s < b) { id } else { IGNORE })
            .collect();
        Ok(self.cut(Example { ids, labels }))
    }

    pub fn record(&self, r: &SftRecord) -> Result<Example> {
        match r {
            SftRecord::Pair { prompt, response } => self.pair(prompt, response),
            SftRecord::Chat { messages } => self.chat(messages),
        }
    }

    fn cut(&self, mut e: Example) -> Example {
        e.ids.truncate(self.max_len);
        e.labels.truncate(self.max_len);
        e
    }
}

/// A right-padded batch: inputs `ids[..-1]` (B, T) and next-token targets `labels[1..]`
/// (B, T), -100 at padding and untrained positions.
pub fn collate(examples: &[&Example], device: Device) -> Result<(Tensor, Tensor)> {
    let t = examples.iter().map(|e| e.ids.len().saturating_sub(1)).max().unwrap_or(0);
    if t == 0 {
        return Err(Error::Input("examples of fewer than 2 tokens cannot be trained on".into()));
    }
    let mut x = vec![0i64; examples.len() * t];
    let mut y = vec![IGNORE; examples.len() * t];
    for (b, e) in examples.iter().enumerate() {
        let n = e.ids.len().saturating_sub(1);
        x[b * t..b * t + n].copy_from_slice(&e.ids[..n]);
        y[b * t..b * t + n].copy_from_slice(&e.labels[1..=n]);
    }
    let shape = [examples.len() as i64, t as i64];
    Ok((
        Tensor::from_slice(&x).f_view(shape)?.f_to_device(device)?,
        Tensor::from_slice(&y).f_view(shape)?.f_to_device(device)?,
    ))
}

/// Summed log-probability of each example's trained tokens: (B,). With gradients when `train`.
pub fn sequence_logprobs(model: &Model, x: &Tensor, y: &Tensor, train: bool) -> Result<Tensor> {
    let logits = model.forward(x, None, None, train)?;
    let lp = super::token_logprobs(&logits, y)?;
    let mask = y.f_ne(IGNORE)?.to_kind(lp.kind());
    Ok(lp.f_mul(&mask)?.f_sum_dim_intlist(1, false, lp.kind())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::CharTokenizer;

    #[test]
    fn pairs_mask_the_prompt_and_batches_pad() {
        let tok = Tokenizer::Char(CharTokenizer::from_text("abc:> \n").unwrap());
        let enc = Encoder { tokenizer: &tok, eos: None, template: None, max_len: 64 };
        let e = enc.pair("abc>", "cba\n").unwrap();
        assert_eq!(e.ids.len(), 8);
        assert_eq!(e.trained(), 4);
        assert!(e.labels[..4].iter().all(|&l| l == IGNORE));
        let short = enc.pair(">", "a").unwrap();
        let (x, y) = collate(&[&e, &short], Device::Cpu).unwrap();
        assert_eq!(x.size(), [2, 7]);
        let y: Vec<i64> = Vec::try_from(y.view([-1])).unwrap();
        // Row 0 predicts its 4 response tokens at positions 3..7; row 1 one token, then padding.
        assert_eq!(y[..3], [IGNORE; 3]);
        assert_eq!(y[3..7], e.ids[4..8]);
        assert_eq!(y[7..], [short.ids[1], IGNORE, IGNORE, IGNORE, IGNORE, IGNORE, IGNORE]);
        assert!(enc.pair("abc", "").is_err());
        assert!(enc.chat(&[Message::new("user", "a")]).is_err(), "no template");
    }

    #[test]
    fn chat_records_train_on_assistant_turns_only() {
        let src = "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}";
        let t = ChatTemplate::new(src, Default::default()).unwrap();
        let msgs = [Message::new("user", "hi"), Message::new("assistant", "hello!")];
        let tok = Tokenizer::Char(CharTokenizer::from_text(&t.render(&msgs, true).unwrap()).unwrap());
        let enc = Encoder { tokenizer: &tok, eos: None, template: Some(&t), max_len: 256 };
        let e = enc.chat(&msgs).unwrap();
        let trained: String =
            e.labels.iter().filter(|&&l| l != IGNORE).map(|&l| tok.decode(&[l]).unwrap()).collect();
        assert_eq!(trained, "hello!\n");
        let bad = [Message::new("user", "hi")];
        assert!(enc.chat(&bad).unwrap_err().to_string().contains("no assistant"));
    }
}
