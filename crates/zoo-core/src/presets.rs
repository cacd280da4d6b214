//! Named presets: JSON configs under `models/<family>/<name>.json`.
//!
//! The folder is the checkout's `models/` (found from where zoo-core was built), or the one
//! named by the `ZOO_MODELS` environment variable.
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The presets folder.
pub fn models_dir() -> PathBuf {
    match std::env::var_os("ZOO_MODELS") {
        Some(p) => PathBuf::from(p),
        None => {
            let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
            p.canonicalize().unwrap_or(p)
        }
    }
}

/// A preset found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preset {
    pub family: String,
    pub name: String,
    pub path: PathBuf,
}

/// Every preset in `dir`, sorted by family and name. A missing folder has none.
pub fn list(dir: &Path) -> Result<Vec<Preset>> {
    let mut out = Vec::new();
    let Ok(families) = std::fs::read_dir(dir) else {
        return Ok(out);
    };
    for fam in families {
        let fam = fam.map_err(|e| Error::io(dir, e))?.path();
        if !fam.is_dir() {
            continue;
        }
        let family = fam.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        for entry in std::fs::read_dir(&fam).map_err(|e| Error::io(&fam, e))? {
            let path = entry.map_err(|e| Error::io(&fam, e))?.path();
            if path.extension().and_then(|e| e.to_str()) == Some("json") {
                let name = path.file_stem().and_then(|n| n.to_str()).unwrap_or_default().to_string();
                out.push(Preset { family: family.clone(), name, path });
            }
        }
    }
    out.sort_by(|a, b| (&a.family, &a.name).cmp(&(&b.family, &b.name)));
    Ok(out)
}

/// Finds preset `name` of `family`; an unknown name is an error that lists the known ones.
pub fn find(dir: &Path, family: &str, name: &str) -> Result<Preset> {
    let all: Vec<Preset> = list(dir)?.into_iter().filter(|p| p.family == family).collect();
    if let Some(p) = all.iter().find(|p| p.name == name) {
        return Ok(p.clone());
    }
    let known: Vec<&str> = all.iter().map(|p| p.name.as_str()).collect();
    Err(Error::Config(if known.is_empty() {
        format!("unknown {family} preset '{name}': {} has no {family} presets", dir.display())
    } else {
        format!("unknown {family} preset '{name}': known ones are {}", known.join(", "))
    }))
}

/// Whether `spec` (a `--model`) names a model folder rather than a `family` preset: it is a
/// folder, and either looks like a path (holds a separator, or starts with `.`) or is no
/// preset's name. A bare name is the shipped preset even when the current folder happens to
/// hold a folder of that name; `./name` is the folder.
pub fn names_folder(spec: &str, family: &str) -> bool {
    if !Path::new(spec).is_dir() {
        return false;
    }
    let path_like = spec.contains(['/', std::path::MAIN_SEPARATOR]) || spec.starts_with('.');
    path_like || find(&models_dir(), family, spec).is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_finds() {
        let dir = tempfile::tempdir().unwrap();
        assert!(list(&dir.path().join("none")).unwrap().is_empty());
        std::fs::create_dir_all(dir.path().join("llm")).unwrap();
        std::fs::write(dir.path().join("llm/tiny.json"), "{}").unwrap();
        std::fs::write(dir.path().join("llm/gpt2.json"), "{}").unwrap();
        std::fs::write(dir.path().join("llm/README.md"), "").unwrap();
        let names: Vec<String> = list(dir.path()).unwrap().into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["gpt2", "tiny"]);
        assert_eq!(find(dir.path(), "llm", "tiny").unwrap().family, "llm");
        let e = find(dir.path(), "llm", "huge").unwrap_err().to_string();
        assert_eq!(e, "unknown llm preset 'huge': known ones are gpt2, tiny");
        assert!(find(dir.path(), "vae", "x").unwrap_err().to_string().contains("no vae presets"));
    }
}
