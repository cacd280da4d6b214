//! The error type of the library crates.
//!
//! Every message reads as one line that says what went wrong and, where there is one, what to do.
use std::path::{Path, PathBuf};

/// Errors from zoo-core (family crates wrap or reuse it).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Torch(#[from] tch::TchError),

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A file exists but its contents are not what its format says they should be.
    #[error("{path}: {msg}")]
    BadFile { path: PathBuf, msg: String },

    /// A PyTorch pickle checkpoint, which we refuse to unpickle.
    #[error(
        "{path}: pickle checkpoints (.pt/.pth/.bin/.ckpt) are not loaded, since unpickling runs \
         arbitrary code; convert it first with `.venv/bin/python tools/convert_to_safetensors.py {path}`"
    )]
    Pickle { path: PathBuf },

    /// Weights that do not fit the model: every problem is listed by tensor name.
    #[error("{0}")]
    Weights(String),

    /// A tensor of the wrong shape or kind handed to a function.
    #[error("{0}")]
    Shape(String),

    /// A bad device, dtype or other setting.
    #[error("{0}")]
    Config(String),

    #[error("{0}")]
    Data(String),

    /// The run was interrupted (Ctrl-C) after its state was saved.
    #[error("interrupted")]
    Interrupted,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io { path: path.as_ref().to_path_buf(), source }
    }

    pub fn bad_file(path: impl AsRef<Path>, msg: impl std::fmt::Display) -> Self {
        Error::BadFile { path: path.as_ref().to_path_buf(), msg: msg.to_string() }
    }
}

/// Keeps the first line of a libtorch error: the rest is a C++ backtrace no user needs.
pub fn short_torch_message(e: &tch::TchError) -> String {
    let s = e.to_string();
    let first = s.lines().find(|l| !l.trim().is_empty()).unwrap_or("libtorch error");
    first.trim().to_string()
}
