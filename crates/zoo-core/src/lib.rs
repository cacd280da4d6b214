//! zoo-core: the shared libtorch tensor core of zoo.
//!
//! What two or more model families use the same way lives here: devices, dtypes and seeding,
//! safetensors weights, the layers and diffusers blocks two families build on, the training pieces (optimiser, schedules, EMA, the loop), run
//! directories, image and audio I/O, the mel front end and datasets.
pub mod arch;
pub mod audio;
pub mod blocks;
pub mod data;
pub mod device;
pub mod error;
pub mod eval;
pub mod fsutil;
pub mod image;
pub mod layers;
pub mod ops;
pub mod plot;
pub mod presets;
pub mod report;
pub mod run;
pub mod seed;
pub mod train;
pub mod weights;

pub use error::{Error, Result};
