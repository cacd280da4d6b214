//! Datasets and batch samplers.
//!
//! Datasets hand out image tensors in the zoo convention (f32, (B, C, H, W), [-1, 1]):
//! [`mnist`] from the IDX files, [`image_folder`] from a folder of PNG/JPEG files, and
//! [`shapes`] generated procedurally, for demos and tests that must not depend on downloads,
//! and [`scenes`], procedural captioned scenes for text-to-image.
pub mod image_folder;
pub mod mnist;
pub mod sampler;
pub mod scenes;
pub mod shapes;
pub mod spec;

pub use image_folder::{ImageFolder, ImageFolderOptions};
pub use mnist::{Mnist, Split};
pub use sampler::{random_batch_indices, EpochShuffler};
pub use shapes::shapes;
pub use spec::DataSpec;
