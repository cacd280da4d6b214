//! The error type of zoo-flow. Every message is one line that names the file, tensor or setting.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] zoo_core::Error),

    #[error(transparent)]
    Torch(#[from] tch::TchError),

    /// A config or preset that does not describe a model we can build.
    #[error("{0}")]
    Config(String),

    /// A config file that cannot be read or parsed.
    #[error("{path}: {msg}")]
    ConfigFile { path: PathBuf, msg: String },

    /// Bad input to a model: wrong rank, channel count or length.
    #[error("{0}")]
    Input(String),

    /// Training or evaluation data that cannot be used.
    #[error("{0}")]
    Data(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl AsRef<std::path::Path>, e: std::io::Error) -> Self {
        Error::Core(zoo_core::Error::io(path, e))
    }
}
