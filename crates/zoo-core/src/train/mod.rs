//! Training pieces every family uses: AdamW with decay/no-decay groups, learning-rate
//! schedules, gradient clipping, EMA of weights, and the loop that ties them to a run directory.
pub mod ema;
pub mod optim;
pub mod schedule;
pub mod trainer;

pub use ema::Ema;
pub use optim::{clip_grad_norm, AdamW, AdamWConfig};
pub use schedule::LrSchedule;
pub use trainer::{
    clear_interrupt, interrupt_requested, loop_is_listening, request_interrupt, LoopConfig, StepOutput,
    TrainTask, Trainer,
};

/// Refuses to resume a run that has already done all of its `steps` (`done` of them): there is
/// nothing to train, and a "final" report of no steps would only print NaN.
pub fn steps_left(done: u64, steps: u64) -> crate::Result<()> {
    if done >= steps {
        return Err(crate::Error::Config(format!(
            "--resume --steps {steps}: the run has already done {done} steps; give more to continue it"
        )));
    }
    Ok(())
}
