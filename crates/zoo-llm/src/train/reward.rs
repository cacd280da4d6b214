//! Reward models (`zoo llm reward train`): the transformer with a scalar head, trained on
//! preference pairs with the Bradley-Terry loss `-log sigmoid(r(chosen) - r(rejected))`
//! (Ouyang et al., "Training language models to follow instructions with human feedback",
//! 2022). The reward of a sequence is the head applied to the final hidden state of its last
//! token, as transformers' `*ForSequenceClassification` with one label computes it; the head is
//! `score.weight` (1, C) without bias, that class's name, next to the decoder's variables.
use std::path::{Path, PathBuf};

use rand::Rng;
use serde::{Deserialize, Serialize};
use tch::nn::{self, VarStore};
use tch::{Device, Kind, Tensor};
use zoo_core::train::trainer::Reporter;
use zoo_core::train::{StepOutput, TrainTask};

use super::dpo::{encode_pairs, PreferencePair, PreferenceRecord};
use super::{core_err, read_split, Stage, StageOptions, StageOutcome, StageTask};
use crate::config::ModelConfig;
use crate::model::Model;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// The scalar head of a reward model: `score.weight` (1, C), no bias.
pub struct RewardHead {
    pub score: Tensor,
}

impl RewardHead {
    /// Creates `score.weight` under `vs`'s root, beside a decoder made in the same store.
    pub fn new(vs: &VarStore, cfg: &ModelConfig) -> Self {
        let c = hidden_size(cfg);
        let score = vs.root().sub("score").var("weight", &[1, c], nn::Init::Randn { mean: 0.0, stdev: 0.02 });
        RewardHead { score }
    }

    /// Rewards of a right-padded batch: `x` (B, T) and `last` (B,) the index of each row's last
    /// real token. Shapes: -> (B,)
    pub fn rewards(&self, model: &Model, x: &Tensor, last: &Tensor, train: bool) -> Result<Tensor> {
        let h = model.forward_hidden(x, None, None, train)?; // (B, T, C)
        let c = h.size()[2];
        let idx = last.f_view([-1, 1, 1])?.f_expand([-1, 1, c], false)?;
        let h_last = h.f_gather(1, &idx, false)?.f_squeeze_dim(1)?; // (B, C)
        Ok(h_last.f_linear::<&Tensor>(&self.score, None)?.f_squeeze_dim(-1)?)
    }
}

/// A trained reward model, loaded for scoring (PPO's reward).
pub struct RewardModel {
    pub vs: VarStore,
    pub model: Model,
    pub head: RewardHead,
    pub config: ModelConfig,
    pub tokenizer: Option<Tokenizer>,
}

impl RewardModel {
    /// Loads a reward-model folder (`config.json`, `model.safetensors` with `score.weight`).
    pub fn load(dir: &Path, device: Device) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        if !cfg_path.is_file() {
            return Err(Error::Input(format!(
                "{}: no config.json; pass a reward-model folder",
                dir.display()
            )));
        }
        let config = ModelConfig::from_file(&cfg_path)?;
        let mut vs = VarStore::new(device);
        let model = Model::new(vs.root(), &config)?;
        let head = RewardHead::new(&vs, &config);
        let remap = model.remap();
        zoo_core::weights::load_into(&vs, dir, &|k: &str| match k {
            "score.weight" => zoo_core::weights::Remap::To(k.to_string()),
            _ => remap(k),
        })?;
        vs.freeze();
        Ok(RewardModel { vs, model, head, config, tokenizer: Tokenizer::from_dir(dir)? })
    }

    /// Rewards of token sequences (each a prompt and its response), in batches of `batch`.
    pub fn score_sequences(&self, seqs: &[Vec<i64>], batch: usize, device: Device) -> Result<Vec<f64>> {
        tch::no_grad(|| {
            let mut out = Vec::with_capacity(seqs.len());
            for chunk in seqs.chunks(batch.max(1)) {
                let (x, last) = pad_right(chunk, device)?;
                out.extend(Vec::<f64>::try_from(
                    self.head.rewards(&self.model, &x, &last, false)?.to_kind(Kind::Double),
                )?);
            }
            Ok(out)
        })
    }
}

/// The width of the decoder's hidden states.
pub(crate) fn hidden_size(cfg: &ModelConfig) -> i64 {
    match cfg {
        ModelConfig::Gpt2(c) => c.n_embd,
        ModelConfig::Llama(c) => c.hidden_size,
    }
}

/// Right-padded ids (B, T) and the index of each row's last token (B,).
pub fn pad_right(seqs: &[Vec<i64>], device: Device) -> Result<(Tensor, Tensor)> {
    let t = seqs.iter().map(Vec::len).max().unwrap_or(0);
    if t == 0 || seqs.iter().any(Vec::is_empty) {
        return Err(Error::Input("cannot score an empty sequence".into()));
    }
    let mut x = vec![0i64; seqs.len() * t];
    for (b, s) in seqs.iter().enumerate() {
        x[b * t..b * t + s.len()].copy_from_slice(s);
    }
    let last: Vec<i64> = seqs.iter().map(|s| s.len() as i64 - 1).collect();
    Ok((
        Tensor::from_slice(&x).f_view([seqs.len() as i64, t as i64])?.f_to_device(device)?,
        Tensor::from_slice(&last).f_to_device(device)?,
    ))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardOptions {
    /// JSONL of `{"prompt","chosen","rejected"}` records.
    pub data: PathBuf,
    pub val_data: Option<PathBuf>,
    #[serde(flatten)]
    pub stage: StageOptions,
}

/// Held-out pairwise accuracy (share of pairs where the chosen response scores higher).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RewardEval {
    pub accuracy: f64,
    pub loss: f64,
    pub margin: f64,
}

struct RewardTask<'a> {
    model: &'a Model,
    head: &'a RewardHead,
    train: &'a [PreferencePair],
    val: &'a [PreferencePair],
    batch: usize,
    device: Device,
    last: Option<RewardEval>,
}

/// Loss, accuracy and margin of chosen/rejected rewards (B,) each.
fn bt_terms(rc: &Tensor, rr: &Tensor) -> Result<(Tensor, f64, f64)> {
    let d = rc.f_sub(rr)?;
    let loss = d.f_log_sigmoid()?.f_neg()?.f_mean(Kind::Float)?;
    let acc = d.f_gt(0.0)?.to_kind(Kind::Double).f_mean(Kind::Double)?.f_double_value(&[])?;
    let margin = d.f_mean(Kind::Float)?.f_double_value(&[])?;
    Ok((loss, acc, margin))
}

impl StageTask for RewardTask<'_> {
    type Eval = RewardEval;
    fn last_eval(&self) -> Option<RewardEval> {
        self.last
    }
    fn evaluate(&mut self) -> Result<RewardEval> {
        self.held_out()
    }
}

impl RewardTask<'_> {
    /// Rewards (chosen (B,), rejected (B,)) of whole sequences, prompt and response.
    fn forward(&self, pairs: &[&PreferencePair], train: bool) -> Result<(Tensor, Tensor)> {
        let seqs: Vec<Vec<i64>> = pairs
            .iter()
            .map(|p| p.chosen.ids.clone())
            .chain(pairs.iter().map(|p| p.rejected.ids.clone()))
            .collect();
        let (x, last) = pad_right(&seqs, self.device)?;
        let r = self.head.rewards(self.model, &x, &last, train)?;
        let b = pairs.len() as i64;
        Ok((r.f_narrow(0, 0, b)?, r.f_narrow(0, b, b)?))
    }

    fn held_out(&self) -> Result<RewardEval> {
        tch::no_grad(|| {
            let (mut rc, mut rr) = (Vec::new(), Vec::new());
            for chunk in self.val.chunks(32) {
                let refs: Vec<&PreferencePair> = chunk.iter().collect();
                let (c, r) = self.forward(&refs, false)?;
                rc.push(c);
                rr.push(r);
            }
            let (loss, accuracy, margin) = bt_terms(&Tensor::f_cat(&rc, 0)?, &Tensor::f_cat(&rr, 0)?)?;
            Ok(RewardEval { accuracy, loss: loss.f_double_value(&[])?, margin })
        })
    }
}

impl TrainTask for RewardTask<'_> {
    fn loss(
        &mut self,
        _step: u64,
        _micro: u32,
        rng: &mut rand::rngs::StdRng,
    ) -> zoo_core::Result<StepOutput> {
        let r = (|| -> Result<StepOutput> {
            let pairs: Vec<&PreferencePair> =
                (0..self.batch).map(|_| &self.train[rng.gen_range(0..self.train.len())]).collect();
            let (c, r) = self.forward(&pairs, true)?;
            let (loss, acc, margin) = bt_terms(&c, &r)?;
            Ok(StepOutput { loss, metrics: vec![("accuracy".into(), acc), ("margin".into(), margin)] })
        })();
        r.map_err(core_err)
    }

    fn eval(&mut self, _step: u64) -> zoo_core::Result<Vec<(String, f64)>> {
        let e = self.evaluate().map_err(core_err)?;
        self.last = Some(e);
        Ok(vec![
            ("val_accuracy".into(), e.accuracy),
            ("val_loss".into(), e.loss),
            ("val_margin".into(), e.margin),
        ])
    }
}

/// Trains (or resumes training) a reward model into the run folder `out`; `final/` is the
/// reward-model folder (`architectures`: `*ForSequenceClassification`, `num_labels` 1).
pub fn train_reward(
    opts: &RewardOptions,
    out: &Path,
    resume: bool,
    device: Device,
    reporter: &mut dyn Reporter,
) -> Result<StageOutcome<RewardEval>> {
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
    // The head joins the decoder's store, so the loop trains and checkpoints both.
    let head = RewardHead::new(&stage.m.vs, &stage.m.config);
    let mut task = RewardTask {
        model: &stage.m.model,
        head: &head,
        train: &train,
        val: &val,
        batch: opts.stage.batch_size,
        device,
        last: None,
    };
    let out = stage.train(&mut task, resume, (train.len(), val.len()), reporter)?;
    if let Some(dir) = &out.model_dir {
        mark_reward_config(dir)?;
    }
    Ok(out)
}

/// Rewrites a saved folder's `config.json` as a sequence classifier with one label.
fn mark_reward_config(dir: &Path) -> Result<()> {
    let p = dir.join("config.json");
    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
    let mut v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Input(e.to_string()))?;
    if let Some(m) = v.as_object_mut() {
        let arch = m
            .get("architectures")
            .and_then(|a| a[0].as_str())
            .map(|a| {
                a.replace("LMHeadModel", "ForSequenceClassification")
                    .replace("ForCausalLM", "ForSequenceClassification")
            })
            .unwrap_or_default();
        m.insert("architectures".into(), serde_json::json!([arch]));
        m.insert("num_labels".into(), serde_json::json!(1));
    }
    let text = serde_json::to_string_pretty(&v).map_err(|e| Error::Input(e.to_string()))?;
    Ok(zoo_core::fsutil::atomic_write_bytes(&p, text.as_bytes())?)
}
