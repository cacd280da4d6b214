//! Synthetic tasks for the fine-tuning stages, made from any text (`zoo llm task`): data whose
//! right answers are known, so a run shows plainly whether a stage works.
//!
//! - `reverse`: `{"prompt": "word: ", "response": "drow\n"}` for the text's words (SFT: exact
//!   match on held-out words measures learning, not memorising).
//! - `shout`: preference pairs on passages of the text: the prompt is a passage, `chosen` its
//!   continuation in capitals, `rejected` the same continuation in small letters (reward model,
//!   DPO; the prompts serve PPO). A preference a small reward model learns, and one a language
//!   model of the text does not have to begin with.
use std::collections::BTreeSet;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::dpo::PreferenceRecord;
use crate::{Error, Result};

/// A prompt/response record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairRecord {
    pub prompt: String,
    pub response: String,
}

/// Distinct lowercase alphabetic words of `text` with `min..=max` letters, shuffled by `seed`.
pub fn words(text: &str, min: usize, max: usize, seed: u64) -> Vec<String> {
    let set: BTreeSet<String> = text
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| (min..=max).contains(&w.len()))
        .map(str::to_ascii_lowercase)
        .collect();
    let mut v: Vec<String> = set.into_iter().collect();
    v.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    v
}

/// The reverse task on up to `n` distinct words of `text` (3 to 8 letters).
pub fn reverse(text: &str, n: usize, seed: u64) -> Result<Vec<PairRecord>> {
    let w = words(text, 3, 8, seed);
    if w.len() < 10 {
        return Err(Error::Input(format!(
            "the text has {} distinct words of 3-8 letters; the task needs 10",
            w.len()
        )));
    }
    Ok(w.into_iter()
        .take(n)
        .map(|w| PairRecord {
            prompt: format!("{w}: "),
            response: format!("{}\n", w.chars().rev().collect::<String>()),
        })
        .collect())
}

/// The shout preference on `n` passages of `text`: `prompt_chars` of context, then
/// `response_chars` of continuation in capitals (chosen) or small letters (rejected). Passages
/// start at line starts and hold letters in the continuation.
pub fn shout(
    text: &str,
    n: usize,
    prompt_chars: usize,
    response_chars: usize,
    seed: u64,
) -> Result<Vec<PreferenceRecord>> {
    let chars: Vec<char> = text.chars().collect();
    let need = prompt_chars + response_chars;
    let starts: Vec<usize> = std::iter::once(0)
        .chain(chars.iter().enumerate().filter(|(_, &c)| c == '\n').map(|(i, _)| i + 1))
        .filter(|&i| i + need <= chars.len())
        .collect();
    if starts.is_empty() {
        return Err(Error::Input(format!("the text is shorter than one passage of {need} characters")));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(n);
    let mut tries = 0;
    while out.len() < n && tries < 20 * n {
        tries += 1;
        let s = starts[rng.gen_range(0..starts.len())];
        let prompt: String = chars[s..s + prompt_chars].iter().collect();
        let cont: String = chars[s + prompt_chars..s + need].iter().collect();
        let (up, low) = (cont.to_uppercase(), cont.to_lowercase());
        if up == low || up.chars().count() != low.chars().count() {
            continue;
        }
        out.push(PreferenceRecord { prompt, chosen: up, rejected: low });
    }
    Ok(out)
}

/// JSONL text of `records`, one per line.
pub fn to_jsonl<T: Serialize>(records: &[T]) -> Result<String> {
    let mut s = String::new();
    for r in records {
        s.push_str(&serde_json::to_string(r).map_err(|e| Error::Input(e.to_string()))?);
        s.push('\n');
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_are_what_they_say() {
        let text = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\nYou are all resolved rather to die than to famish?\n";
        let r = reverse(text, 100, 0).unwrap();
        assert!(r.iter().all(|p| p.prompt.ends_with(": ")));
        let rec = r.iter().find(|p| p.prompt == "speak: ").unwrap();
        assert_eq!(rec.response, "kaeps\n");
        assert!(reverse("a b c", 10, 0).is_err());
        let s = shout(text, 5, 10, 6, 0).unwrap();
        assert_eq!(s.len(), 5);
        for p in &s {
            assert_eq!(p.chosen, p.chosen.to_uppercase());
            assert_eq!(p.rejected.to_uppercase(), p.chosen);
            assert_ne!(p.chosen, p.rejected);
        }
        assert!(to_jsonl(&s).unwrap().lines().count() == 5);
    }
}
