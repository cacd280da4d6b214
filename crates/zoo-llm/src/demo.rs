//! The `zoo demo` part of this family: a tiny character-level GPT-2 trained for a few hundred
//! steps on nursery rhymes (traditional, public domain; `assets/rhymes.txt`, 2 KB), then
//! sampled. It shows the whole path (char tokenizer, model, zoo-core's training loop, KV-cached
//! sampling) in seconds on a CPU; a model this small on this little text mostly learns the
//! rhymes' spelling and line shapes, and says nothing about quality at scale.
use std::path::Path;
use std::time::Instant;

use rand::Rng;
use tch::nn::VarStore;
use tch::{Device, Tensor};
use zoo_core::run::RunDir;
use zoo_core::train::trainer::Reporter;
use zoo_core::train::{AdamW, AdamWConfig, LoopConfig, LrSchedule, StepOutput, TrainTask, Trainer};

use crate::config::ModelConfig;
use crate::generate::{generate_sliding, GenerateConfig};
use crate::model::Model;
use crate::sampling::SamplingConfig;
use crate::tokenizer::{CharTokenizer, Tokenizer};
use crate::{gpt2, Result};

/// The training text of the demo.
pub const RHYMES: &str = include_str!("../assets/rhymes.txt");

/// Settings of the demo run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DemoConfig {
    pub steps: u64,
    pub batch: i64,
    pub block: i64,
    pub lr: f64,
    pub seed: u64,
    pub sample_chars: usize,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig { steps: 200, batch: 16, block: 32, lr: 3e-3, seed: 0, sample_chars: 300 }
    }
}

/// What the demo did.
#[derive(Debug, Clone)]
pub struct DemoOutcome {
    pub params: i64,
    pub vocab: usize,
    /// Mean loss of the first and of the last logged interval.
    pub first_loss: f64,
    pub last_loss: f64,
    pub seconds: f64,
    pub prompt: String,
    pub sample: String,
}

/// The model of the demo: GPT-2 with 2 layers, 4 heads, 64 wide, a 32-character context.
pub fn demo_config(vocab: i64, block: i64) -> gpt2::Config {
    gpt2::Config {
        vocab_size: vocab,
        n_positions: block,
        n_embd: 64,
        n_layer: 2,
        n_head: 4,
        resid_pdrop: 0.0,
        embd_pdrop: 0.0,
        attn_pdrop: 0.0,
        bos_token_id: None,
        eos_token_id: None,
        ..gpt2::Config::gpt2()
    }
}

/// Next-character prediction on random windows of the text.
struct CharTask<'a> {
    model: &'a Model,
    data: Vec<i64>,
    batch: i64,
    block: i64,
    device: Device,
}

impl TrainTask for CharTask<'_> {
    fn loss(
        &mut self,
        _step: u64,
        _micro: u32,
        rng: &mut rand::rngs::StdRng,
    ) -> zoo_core::Result<StepOutput> {
        let t = self.block as usize;
        let mut x = Vec::with_capacity(self.batch as usize * t);
        let mut y = Vec::with_capacity(self.batch as usize * t);
        for _ in 0..self.batch {
            let i = rng.gen_range(0..self.data.len() - t - 1);
            x.extend_from_slice(&self.data[i..i + t]);
            y.extend_from_slice(&self.data[i + 1..i + t + 1]);
        }
        let shape = [self.batch, self.block];
        let x = Tensor::from_slice(&x).f_view(shape)?.f_to_device(self.device)?;
        let y = Tensor::from_slice(&y).f_view([-1])?.f_to_device(self.device)?;
        let logits =
            self.model.forward(&x, None, None, true).map_err(|e| zoo_core::Error::Data(e.to_string()))?;
        let loss = logits.f_view([-1, logits.size()[2]])?.f_cross_entropy_loss::<&Tensor>(
            &y,
            None,
            tch::Reduction::Mean,
            -100,
            0.0,
        )?;
        Ok(StepOutput { loss, metrics: Vec::new() })
    }
}

/// Trains the demo model into the run folder `run_dir` (which must not exist yet), then
/// samples `cfg.sample_chars` characters from it.
pub fn run(
    run_dir: &Path,
    cfg: &DemoConfig,
    device: Device,
    reporter: &mut dyn Reporter,
) -> Result<DemoOutcome> {
    let tok = CharTokenizer::from_text(RHYMES)?;
    let data = tok.encode(RHYMES)?;
    let vocab = tok.vocab_size();
    let mcfg = ModelConfig::Gpt2(demo_config(vocab as i64, cfg.block));
    zoo_core::seed::seed_all(cfg.seed);
    let vs = VarStore::new(device);
    let model = Model::new(vs.root(), &mcfg)?;
    let params: i64 = vs.variables().values().map(|t| t.numel() as i64).sum();

    let run = RunDir::create(run_dir, cfg, false)?;
    let opt =
        AdamW::new(&vs, AdamWConfig { lr: cfg.lr, beta2: 0.99, weight_decay: 0.1, ..Default::default() });
    let schedule = LrSchedule::WarmupCosine {
        lr: cfg.lr,
        min_lr: cfg.lr / 10.0,
        warmup_steps: 20,
        decay_steps: cfg.steps,
    };
    let steps = cfg.steps.max(1);
    let log_every = (steps / 20).max(1);
    let loop_cfg = LoopConfig { steps, log_every, seed: cfg.seed, ..Default::default() };
    let mut trainer = Trainer::new(&run, &vs, opt, schedule, loop_cfg)?;
    let mut task = CharTask { model: &model, data, batch: cfg.batch, block: cfg.block, device };
    let t0 = Instant::now();
    trainer.run(&mut task, 0, reporter)?;
    let seconds = t0.elapsed().as_secs_f64();
    let losses: Vec<f64> =
        run.metrics()?.iter().filter_map(|r| r.get("loss").and_then(serde_json::Value::as_f64)).collect();

    // Sample, seeded, in the same process right after training.
    zoo_core::seed::seed_all(cfg.seed);
    let tokenizer = Tokenizer::Char(tok);
    let prompt = "Twinkle";
    let prompt_ids = tokenizer.encode(prompt)?;
    let gen = GenerateConfig {
        max_new_tokens: cfg.sample_chars,
        sampling: SamplingConfig { temperature: 0.8, ..Default::default() },
        ..Default::default()
    };
    let sample = generate_sliding(&model, &tokenizer, &prompt_ids, cfg.block, &gen)?;
    Ok(DemoOutcome {
        params,
        vocab,
        first_loss: losses.first().copied().unwrap_or(f64::NAN),
        last_loss: losses.last().copied().unwrap_or(f64::NAN),
        seconds,
        prompt: prompt.to_string(),
        sample,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 120 steps take the loss from about ln(vocab) well down (fixed seed, deterministic).
    #[test]
    fn demo_training_lowers_the_loss() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = DemoConfig { steps: 120, sample_chars: 40, ..Default::default() };
        let out =
            run(&dir.path().join("run"), &cfg, Device::Cpu, &mut zoo_core::train::trainer::Silent).unwrap();
        let uniform = (out.vocab as f64).ln();
        assert!((out.first_loss - uniform).abs() < 0.6, "{out:?}");
        assert!(out.last_loss < out.first_loss - 1.0, "{out:?}");
        assert_eq!(out.sample.chars().count(), 40);
        assert!(out.sample.chars().all(|c| RHYMES.contains(c)));
        assert!(dir.path().join("run/loss.png").is_file());
    }
}
