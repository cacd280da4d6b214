//! The error type of zoo-llm. Every message is one line that names the file, key or setting.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] zoo_core::Error),

    #[error(transparent)]
    Torch(#[from] tch::TchError),

    /// A `config.json` (or preset) that cannot describe a model we build.
    #[error("{path}: {msg}")]
    Config { path: PathBuf, msg: String },

    /// A tokenizer file that cannot be read, or text it cannot encode.
    #[error("{0}")]
    Tokenizer(String),

    /// Bad input to a model or to generation (empty prompt, too long, wrong shape).
    #[error("{0}")]
    Input(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn config(path: impl Into<PathBuf>, msg: impl std::fmt::Display) -> Self {
        Error::Config { path: path.into(), msg: msg.to_string() }
    }

    pub fn io(path: impl AsRef<std::path::Path>, e: std::io::Error) -> Self {
        Error::Core(zoo_core::Error::io(path, e))
    }
}
