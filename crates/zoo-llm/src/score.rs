//! Perplexity of a text under a model, over non-overlapping windows of the context length.
use tch::{Kind, Tensor};

use crate::model::Model;
use crate::{Error, Result};

/// What [`perplexity`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    /// Tokens predicted (every token but the first of each window).
    pub predicted: usize,
    /// Mean negative log-likelihood per predicted token, in nats.
    pub nll: f64,
    pub windows: usize,
}

impl Score {
    pub fn perplexity(&self) -> f64 {
        self.nll.exp()
    }
}

/// Scores `tokens` in windows of `window` tokens (the model's context or less); each window
/// predicts its tokens 2..n from those before them. `on_window(done, total)` reports progress.
pub fn perplexity(
    model: &Model,
    tokens: &[i64],
    window: usize,
    device: tch::Device,
    on_window: &mut dyn FnMut(usize, usize),
) -> Result<Score> {
    if tokens.len() < 2 {
        return Err(Error::Input(format!(
            "the text has {} token(s); perplexity needs at least 2",
            tokens.len()
        )));
    }
    if window < 2 {
        return Err(Error::Input("the scoring window must hold at least 2 tokens".into()));
    }
    let chunks: Vec<&[i64]> = tokens.chunks(window).filter(|c| c.len() >= 2).collect();
    let (mut sum, mut n) = (0.0, 0usize);
    for (i, chunk) in chunks.iter().enumerate() {
        let ids = Tensor::from_slice(chunk).f_view([1, -1])?.f_to_device(device)?;
        let logits = tch::no_grad(|| model.forward(&ids, None, None, false))?;
        let t = chunk.len() as i64;
        let pred = logits.f_narrow(1, 0, t - 1)?.f_view([t - 1, -1])?.f_to_kind(Kind::Float)?;
        let target = ids.f_narrow(1, 1, t - 1)?.f_view([t - 1])?;
        let nll = pred.f_log_softmax(-1, Kind::Float)?.f_nll_loss::<&Tensor>(
            &target,
            None,
            tch::Reduction::Sum,
            -100,
        )?;
        sum += nll.f_double_value(&[])?;
        n += (t - 1) as usize;
        on_window(i + 1, chunks.len());
    }
    Ok(Score { predicted: n, nll: sum / n as f64, windows: chunks.len() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::ModelConfig, gpt2};

    /// A model that puts all its mass on one token has perplexity 1 on a text of that token,
    /// and the vocabulary size on a uniform model.
    #[test]
    fn perplexity_of_known_models() {
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let m = Model::new(vs.root(), &ModelConfig::Gpt2(gpt2::Config::tiny())).unwrap();
        // Zero weights: uniform logits, perplexity = vocabulary size.
        tch::no_grad(|| {
            for (_, mut v) in vs.variables() {
                let _ = v.zero_();
            }
        });
        let s = perplexity(&m, &[1, 2, 3, 4, 5, 6, 7], 4, tch::Device::Cpu, &mut |_, _| {}).unwrap();
        assert!((s.perplexity() - 96.0).abs() < 1e-3, "{s:?}");
        assert_eq!((s.windows, s.predicted), (2, 5));
        assert!(perplexity(&m, &[1], 4, tch::Device::Cpu, &mut |_, _| {}).is_err());
    }
}
