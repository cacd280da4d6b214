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
