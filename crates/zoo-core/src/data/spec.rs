//! `--data` arguments: `mnist:DIR`, `images:DIR`, `wav:DIR`, `text:FILE` or `shapes`.
use std::path::PathBuf;
use std::str::FromStr;

use crate::{Error, Result};

/// Where a command's training or evaluation data comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSpec {
    /// The MNIST IDX files in a folder.
    Mnist(PathBuf),
    /// PNG/JPEG files in a folder (searched recursively).
    Images(PathBuf),
    /// WAV files in a folder.
    Wav(PathBuf),
    /// A text file (or a folder of them).
    Text(PathBuf),
    /// The procedural shapes set: no files needed.
    Shapes,
}

impl FromStr for DataSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        if s == "shapes" {
            return Ok(DataSpec::Shapes);
        }
        let (kind, path) = s.split_once(':').ok_or_else(|| {
            Error::Config(format!("--data '{s}': use mnist:DIR, images:DIR, wav:DIR, text:FILE or shapes"))
        })?;
        if path.is_empty() {
            return Err(Error::Config(format!("--data '{s}': the path after '{kind}:' is empty")));
        }
        let path = PathBuf::from(path);
        match kind {
            "mnist" => Ok(DataSpec::Mnist(path)),
            "images" => Ok(DataSpec::Images(path)),
            "wav" => Ok(DataSpec::Wav(path)),
            "text" => Ok(DataSpec::Text(path)),
            _ => Err(Error::Config(format!(
                "--data '{s}': unknown kind '{kind}'; use mnist:DIR, images:DIR, wav:DIR, text:FILE or shapes"
            ))),
        }
    }
}

impl std::fmt::Display for DataSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataSpec::Mnist(p) => write!(f, "mnist:{}", p.display()),
            DataSpec::Images(p) => write!(f, "images:{}", p.display()),
            DataSpec::Wav(p) => write!(f, "wav:{}", p.display()),
            DataSpec::Text(p) => write!(f, "text:{}", p.display()),
            DataSpec::Shapes => write!(f, "shapes"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for s in ["mnist:/data/mnist", "images:imgs", "wav:a/b", "text:input.txt", "shapes"] {
            assert_eq!(s.parse::<DataSpec>().unwrap().to_string(), s);
        }
        for bad in ["mnist", "mnist:", "cifar:x", ""] {
            assert!(bad.parse::<DataSpec>().is_err(), "{bad}");
        }
    }
}
