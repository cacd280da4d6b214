//! The training loop shared by the families: steps with gradient accumulation and clipping,
//! the learning-rate schedule, periodic eval / samples / checkpoints into a [`RunDir`], exact
//! resume, progress reporting and a clean stop when asked ([`request_interrupt`]: the CLI
//! asks on SIGINT and SIGTERM).
//!
//! Exact resume: step `s` draws all its randomness (libtorch's generator, for dropout and noise,
//! and the `rand` generator handed to the task, for data order) from `(seed, s)` alone; a
//! checkpoint holds the weights, the optimiser moments and the step. A run resumed at step k
//! therefore computes the very losses the uninterrupted run computed from step k on.
//!
//! Tested end to end in tests/tests/train_loop.rs (its own test binary, since exact resume
//! depends on libtorch's global generator, which parallel tests in one binary would share).
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tch::{nn::VarStore, Tensor};

use super::{clip_grad_norm, AdamW, LrSchedule};
use crate::run::{CheckpointState, RunDir};
use crate::{seed, weights, Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopConfig {
    /// Optimiser steps in the whole run.
    pub steps: u64,
    /// Micro-batches whose gradients add up to one step.
    pub grad_accum: u32,
    /// Clip the global gradient norm to this value.
    pub clip_grad: Option<f64>,
    pub log_every: u64,
    pub eval_every: Option<u64>,
    pub sample_every: Option<u64>,
    pub checkpoint_every: Option<u64>,
    /// How many checkpoints to keep, newest first (0 keeps all).
    #[serde(default)]
    pub keep_checkpoints: usize,
    pub seed: u64,
}

impl Default for LoopConfig {
    fn default() -> Self {
        LoopConfig {
            steps: 1000,
            grad_accum: 1,
            clip_grad: Some(1.0),
            log_every: 10,
            eval_every: None,
            sample_every: None,
            checkpoint_every: None,
            keep_checkpoints: 3,
            seed: 0,
        }
    }
}

/// What one micro-batch gives back: the loss to minimise and any numbers to log.
pub struct StepOutput {
    pub loss: Tensor,
    pub metrics: Vec<(String, f64)>,
}

/// A model-specific training task; the loop does everything else.
pub trait TrainTask {
    /// The loss of micro-batch `micro` of step `step`. Draw data with `rng` (and noise from
    /// libtorch's generator, seeded for this step), so that resume is exact.
    fn loss(&mut self, step: u64, micro: u32, rng: &mut StdRng) -> Result<StepOutput>;

    /// Called after each optimiser step (e.g. to update an EMA).
    fn after_step(&mut self, _step: u64) -> Result<()> {
        Ok(())
    }

    /// Held-out metrics after `step` steps, e.g. `("val_loss", x)`.
    fn eval(&mut self, _step: u64) -> Result<Vec<(String, f64)>> {
        Ok(Vec::new())
    }

    /// Writes samples into `dir` after `step` steps.
    fn sample(&mut self, _step: u64, _dir: &Path) -> Result<()> {
        Ok(())
    }

    /// Lines for the user that `eval` or `sample` produced (e.g. a text sample, "new best
    /// model saved"), handed to the reporter as notes after each of them.
    fn take_notes(&mut self) -> Vec<String> {
        Vec::new()
    }

    /// Tensors to checkpoint besides the model and optimiser, by file stem (e.g. "ema").
    fn extra_state(&self) -> Vec<(&'static str, Vec<(String, Tensor)>)> {
        Vec::new()
    }

    /// Restores what [`TrainTask::extra_state`] saved; `dir` is the checkpoint folder.
    fn load_extra_state(&mut self, _dir: &Path) -> Result<()> {
        Ok(())
    }
}

/// Where the loop reports progress; the CLI picks one.
pub trait Reporter {
    fn start(&mut self, _first_step: u64, _total: u64) {}
    /// After each optimiser step with that step's record (step, loss, lr).
    fn step(&mut self, _record: &Value) {}
    /// Each record written to metrics.jsonl (every `log_every` steps: mean loss since the last).
    fn logged(&mut self, _record: &Value) {}
    /// Each eval record, and notes such as "checkpoint saved".
    fn event(&mut self, _record: &Value) {}
    fn finish(&mut self) {}
}

/// Reports nothing.
pub struct Silent;
impl Reporter for Silent {}

/// An indicatif progress bar on stderr: step, the numbers of the step record (loss, lr, and
/// whatever else a loop reports), it/s, ETA; evals and notes print above it.
pub struct ProgressBar {
    bar: Option<indicatif::ProgressBar>,
}

impl ProgressBar {
    pub fn new() -> Self {
        ProgressBar { bar: None }
    }
}

impl Default for ProgressBar {
    fn default() -> Self {
        Self::new()
    }
}

impl Reporter for ProgressBar {
    fn start(&mut self, first_step: u64, total: u64) {
        let bar = indicatif::ProgressBar::new(total);
        let style = indicatif::ProgressStyle::with_template(
            "{bar:30.cyan/blue} {pos}/{len} {msg} {per_sec} ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_position(first_step);
        bar.reset_eta();
        self.bar = Some(bar);
    }
    fn step(&mut self, r: &Value) {
        if let Some(bar) = &self.bar {
            bar.set_message(step_message(r));
            if let Some(s) = r.get("step").and_then(Value::as_u64) {
                bar.set_position(s);
            }
        }
    }
    fn event(&mut self, r: &Value) {
        let line = match r.get("note").and_then(Value::as_str) {
            Some(note) => note.to_string(),
            None => r.to_string(),
        };
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }
    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
    }
}

/// The numbers of a step record for a progress bar, in the record's order: "loss 1.2345 lr
/// 3.00e-4 ..." (learning rates in scientific notation; the step itself is the bar's position).
pub fn step_message(r: &Value) -> String {
    let Some(obj) = r.as_object() else { return String::new() };
    let mut parts = Vec::new();
    for (k, v) in obj {
        let Some(x) = v.as_f64() else { continue };
        match k.as_str() {
            "step" | "elapsed_s" => {}
            k if k == "lr" || k.ends_with("_lr") => parts.push(format!("{k} {x:.2e}")),
            k => parts.push(format!("{k} {x:.4}")),
        }
    }
    parts.join(" ")
}

/// JSON lines on stdout, one per metrics record and per event, for programs to read.
pub struct JsonLines;
impl Reporter for JsonLines {
    fn logged(&mut self, r: &Value) {
        println!("{r}");
    }
    fn event(&mut self, r: &Value) {
        println!("{r}");
    }
}

// Plain atomics, so that a signal handler may set them (async-signal-safe).
static STOP: AtomicBool = AtomicBool::new(false);
static LISTENING: AtomicBool = AtomicBool::new(false);

/// Says whether a stop was requested ([`request_interrupt`]); training loops call it between
/// steps, and from the first call on [`loop_is_listening`] is true. The library installs no
/// signal handler: the program that owns the process (the `zoo` CLI, on SIGINT and SIGTERM)
/// calls [`request_interrupt`].
pub fn interrupt_requested() -> bool {
    LISTENING.store(true, Ordering::SeqCst);
    STOP.load(Ordering::SeqCst)
}

/// Asks running loops to stop at the next step boundary; they save a checkpoint first and
/// return an [`Outcome`] with `interrupted` set. Only touches an atomic, so a signal handler
/// may call it.
pub fn request_interrupt() {
    STOP.store(true, Ordering::SeqCst);
}

/// Forgets an earlier interrupt, so that the next loop runs.
pub fn clear_interrupt() {
    STOP.store(false, Ordering::SeqCst);
}

/// Whether a training loop is checking for stop requests now: a signal handler can then ask
/// it to stop cleanly rather than end the process. Safe to call from a signal handler.
pub fn loop_is_listening() -> bool {
    LISTENING.load(Ordering::SeqCst)
}

/// Marks the end of a [`Trainer::run`], however it ends: a stop request is no longer heard.
struct Listening;
impl Drop for Listening {
    fn drop(&mut self) {
        LISTENING.store(false, Ordering::SeqCst);
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Optimiser steps done, counting those before a resume.
    pub steps: u64,
    pub interrupted: bool,
    /// The last logged step record.
    pub last: Value,
}

pub struct Trainer<'a> {
    pub run: &'a RunDir,
    pub vs: &'a VarStore,
    pub opt: AdamW,
    pub schedule: LrSchedule,
    pub cfg: LoopConfig,
    /// Called to check for a stop request between steps; [`interrupt_requested`] by default.
    pub should_stop: fn() -> bool,
    /// The losses summed (and counted) since the last metrics record, as a checkpoint left
    /// them: a resumed run's first record then averages the same steps as an uninterrupted
    /// run's, even when a checkpoint falls inside its window.
    window: (u64, f64, u64),
}

impl<'a> Trainer<'a> {
    pub fn new(
        run: &'a RunDir,
        vs: &'a VarStore,
        opt: AdamW,
        schedule: LrSchedule,
        cfg: LoopConfig,
    ) -> Result<Self> {
        schedule.validate()?;
        if cfg.grad_accum == 0 || cfg.log_every == 0 {
            return Err(Error::Config("grad_accum and log_every must be at least 1".into()));
        }
        Ok(Trainer { run, vs, opt, schedule, cfg, should_stop: interrupt_requested, window: (0, 0.0, 0) })
    }

    /// Loads the run's latest checkpoint, if any, into the model, optimiser and task; drops
    /// metrics logged after it. Returns the step to start from (0 without a checkpoint).
    pub fn resume(&mut self, task: &mut dyn TrainTask) -> Result<u64> {
        let Some((dir, state)) = self.run.latest_checkpoint()? else {
            // No checkpoint yet: the run starts over, so rows it logged before are dropped.
            if self.run.metrics_path().exists() {
                self.run.truncate_metrics_after(0)?;
            }
            return Ok(0);
        };
        if state.seed != self.cfg.seed {
            return Err(Error::Config(format!(
                "--resume: the run was started with seed {}, not {}; resume with the same seed",
                state.seed, self.cfg.seed
            )));
        }
        weights::load_into(self.vs, &dir.join("model.safetensors"), &weights::keep_names)?;
        self.opt.load_state(&weights::load(&dir.join("optimizer.safetensors"))?)?;
        task.load_extra_state(&dir)?;
        self.run.truncate_metrics_after(state.step)?;
        // (Checkpoints of earlier versions hold no window: the first record averages less.)
        let w = &state.extra["loss_window"];
        if let (Some(sum), Some(n)) = (w[0].as_f64(), w[1].as_u64()) {
            self.window = (state.step, sum, n);
        }
        Ok(state.step)
    }

    /// [`Trainer::resume`] for a run that is resumed to go on: a run that has already done its
    /// `steps` is refused ([`super::steps_left`]) rather than "finished" again with no step.
    /// (Text-to-image's stages resume a finished stage on purpose and call `resume`.)
    pub fn resume_to_continue(&mut self, task: &mut dyn TrainTask) -> Result<u64> {
        let start = self.resume(task)?;
        if start > 0 {
            super::steps_left(start, self.cfg.steps)?;
        }
        Ok(start)
    }

    fn checkpoint(
        &self,
        task: &dyn TrainTask,
        step: u64,
        (sum, n): (f64, u64),
    ) -> Result<std::path::PathBuf> {
        let mut model: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        model.sort_by(|a, b| a.0.cmp(&b.0));
        let mut parts = vec![("model", model), ("optimizer", self.opt.state())];
        parts.extend(task.extra_state());
        let state = CheckpointState { step, seed: self.cfg.seed, extra: json!({"loss_window": [sum, n]}) };
        let dir = self.run.save_checkpoint(&state, &parts)?;
        self.run.prune_checkpoints(self.cfg.keep_checkpoints)?;
        self.run.plot_losses()?;
        Ok(dir)
    }

    /// Runs from `start` (see [`Trainer::resume`]) to `cfg.steps`.
    pub fn run(
        &mut self,
        task: &mut dyn TrainTask,
        start: u64,
        reporter: &mut dyn Reporter,
    ) -> Result<Outcome> {
        let cfg = self.cfg.clone();
        let _listening = Listening;
        let every = |n: Option<u64>, done: u64| n.is_some_and(|n| n > 0 && done % n == 0);
        let vars = self.opt.variables();
        reporter.start(start, cfg.steps);
        let t0 = Instant::now();
        let mut last = Value::Null;
        let (mut loss_sum, mut loss_n) =
            if self.window.0 == start && start > 0 { (self.window.1, self.window.2) } else { (0.0, 0u64) };
        for step in start..cfg.steps {
            if (self.should_stop)() {
                let dir = self.checkpoint(task, step, (loss_sum, loss_n))?;
                reporter.event(&json!({"note": format!("interrupted at step {step}; checkpoint saved in {}", dir.display())}));
                reporter.finish();
                return Ok(Outcome { steps: step, interrupted: true, last });
            }
            let mut rng = seed::seed_step(cfg.seed, step);
            let lr = self.schedule.lr_at(step);
            self.opt.zero_grad();
            let mut step_loss = 0.0;
            let mut extra: Map<String, Value> = Map::new();
            for micro in 0..cfg.grad_accum {
                let out = task.loss(step, micro, &mut rng)?;
                let l = out.loss.f_double_value(&[])?;
                if !l.is_finite() {
                    return Err(Error::Data(format!(
                        "loss is {l} at step {step}: lower the learning rate or check the data"
                    )));
                }
                step_loss += l / cfg.grad_accum as f64;
                out.loss.f_div_scalar(cfg.grad_accum as f64)?.backward();
                for (k, v) in out.metrics {
                    extra.insert(k, json!(v));
                }
            }
            let grad_norm = match cfg.clip_grad {
                Some(c) => Some(clip_grad_norm(&vars, c)?),
                None => None,
            };
            self.opt.step(lr)?;
            task.after_step(step)?;
            let done = step + 1;
            loss_sum += step_loss;
            loss_n += 1;
            if done % cfg.log_every == 0 || done == cfg.steps {
                let mut rec = Map::new();
                rec.insert("step".into(), json!(done));
                rec.insert("loss".into(), json!(loss_sum / loss_n as f64));
                rec.insert("lr".into(), json!(lr));
                if let Some(g) = grad_norm {
                    rec.insert("grad_norm".into(), json!(g));
                }
                rec.extend(extra);
                rec.insert("elapsed_s".into(), json!(t0.elapsed().as_secs_f64()));
                last = Value::Object(rec);
                self.run.log(&last)?;
                reporter.logged(&last);
                (loss_sum, loss_n) = (0.0, 0);
            }
            reporter.step(&json!({"step": done, "loss": step_loss, "lr": lr}));
            if every(cfg.eval_every, done) || (cfg.eval_every.is_some() && done == cfg.steps) {
                let m = task.eval(done)?;
                if !m.is_empty() {
                    let mut rec = Map::new();
                    rec.insert("step".into(), json!(done));
                    for (k, v) in m {
                        rec.insert(k, json!(v));
                    }
                    let rec = Value::Object(rec);
                    self.run.log(&rec)?;
                    reporter.event(&rec);
                }
            }
            if every(cfg.sample_every, done) || (cfg.sample_every.is_some() && done == cfg.steps) {
                task.sample(done, &self.run.samples_dir())?;
            }
            for note in task.take_notes() {
                reporter.event(&json!({"step": done, "note": note}));
            }
            if every(cfg.checkpoint_every, done) || done == cfg.steps {
                self.checkpoint(task, done, (loss_sum, loss_n))?;
            }
        }
        reporter.finish();
        Ok(Outcome { steps: cfg.steps.max(start), interrupted: false, last })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_messages_show_every_number_but_the_step() {
        let r = json!({"step": 7, "loss": 1.23456, "lr": 0.0003, "d_x": 0.5, "note": "x"});
        assert_eq!(step_message(&r), "d_x 0.5000 loss 1.2346 lr 3.00e-4");
        assert_eq!(step_message(&json!(3)), "");
    }

    struct NoSteps;
    impl TrainTask for NoSteps {
        fn loss(&mut self, _: u64, _: u32, _: &mut StdRng) -> Result<StepOutput> {
            Err(Error::Config("not run".into()))
        }
    }

    #[test]
    fn resuming_without_a_checkpoint_starts_over_without_the_old_rows() {
        let dir = tempfile::tempdir().unwrap();
        let run = crate::run::RunDir::create(dir.path(), &json!({}), false).unwrap();
        for r in [json!({"step": 1, "loss": 1.0}), json!({"note": "kept"}), json!({"step": 2, "loss": 0.5})] {
            run.log(&r).unwrap();
        }
        let vs = VarStore::new(tch::Device::Cpu);
        let _w = vs.root().zeros("w", &[1]);
        let opt = crate::train::AdamW::new(&vs, crate::train::AdamWConfig::default());
        let schedule = crate::train::LrSchedule::Constant { lr: 1e-3 };
        let mut tr = Trainer::new(&run, &vs, opt, schedule, LoopConfig::default()).unwrap();
        assert_eq!(tr.resume(&mut NoSteps).unwrap(), 0);
        assert_eq!(run.metrics().unwrap(), vec![json!({"note": "kept"})]);
    }
}
