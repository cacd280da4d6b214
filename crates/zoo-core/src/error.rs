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

thread_local! {
    static CONTAINING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` and turns a panic inside it into `None`: for third-party parsers that panic on
/// some corrupt files instead of returning an error (zune-jpeg 0.5.15, under `image`, does on
/// a few JPEGs), so that bad input stays an error. While `f` runs, [`panic_is_contained`] is
/// true on this thread, so a program's panic hook can stay quiet about a panic that is caught;
/// the library installs no hook itself.
pub fn contain_panic<T>(f: impl FnOnce() -> T) -> Option<T> {
    let was = CONTAINING.with(|c| c.replace(true));
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok();
    CONTAINING.with(|c| c.set(was));
    out
}

/// Whether the current thread is inside [`contain_panic`].
pub fn panic_is_contained() -> bool {
    CONTAINING.with(|c| c.get())
}
