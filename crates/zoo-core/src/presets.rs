//! Named presets (JSON configs under `models/<family>/<name>.json`) and the shipped models
//! (folders under `models/`, such as `models/tts/glow-tts-small`).
//!
//! The models folder is, in order: the one named by the `ZOO_MODELS` environment variable;
//! `models/` next to the running binary (a copied or unpacked install); the checkout zoo-core
//! was built from. Every preset of that checkout is also built into the library, so a binary
//! with no models folder at all still knows its presets (not the shipped weights, which are
//! too large to embed). `zoo info` says which folder was used.
use std::path::{Path, PathBuf};

use crate::{Error, Result};

include!(concat!(env!("OUT_DIR"), "/presets.rs"));

/// The folder that stands for the built-in presets in their paths:
/// `<built-in>/<family>/<name>.json`.
pub const BUILT_IN_DIR: &str = "<built-in>";

/// How the models folder was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelsSource {
    /// The `ZOO_MODELS` environment variable.
    Env,
    /// `models/` beside the running binary.
    NextToBinary,
    /// The checkout zoo-core was built from.
    SourceTree,
    /// None of them exists: only the built-in presets are available.
    Missing,
}

impl ModelsSource {
    pub fn describe(self) -> &'static str {
        match self {
            ModelsSource::Env => "from ZOO_MODELS",
            ModelsSource::NextToBinary => "next to the zoo binary",
            ModelsSource::SourceTree => "the source tree zoo was built from",
            ModelsSource::Missing => {
                "not found (no ZOO_MODELS, no models/ next to the binary, the source tree is gone): built-in presets only, no shipped models"
            }
        }
    }
}

/// The models folder and how it was found. When none exists the path is the source tree's,
/// so messages about a missing shipped model name where it was looked for.
pub fn locate_models() -> (PathBuf, ModelsSource) {
    if let Some(p) = std::env::var_os("ZOO_MODELS") {
        return (PathBuf::from(p), ModelsSource::Env);
    }
    let beside = std::env::current_exe().ok().and_then(|exe| exe.parent().map(|d| d.join("models")));
    if let Some(dir) = beside.filter(|d| d.is_dir()) {
        return (dir, ModelsSource::NextToBinary);
    }
    let tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
    match tree.canonicalize() {
        Ok(p) if p.is_dir() => (p, ModelsSource::SourceTree),
        _ => (tree, ModelsSource::Missing),
    }
}

/// The models folder (see [`locate_models`]).
pub fn models_dir() -> PathBuf {
    locate_models().0
}

/// A shipped model or file under the models folder, e.g. `shipped("eval/scenes-scorer")`.
pub fn shipped(rel: &str) -> PathBuf {
    models_dir().join(rel)
}

/// The text of a preset file: a file on disk, or a built-in preset (a path under
/// [`BUILT_IN_DIR`], as [`find_preset`] gives for presets no models folder holds).
pub fn read(path: &Path) -> Result<String> {
    if let Some(text) = built_in_text(path) {
        return Ok(text.to_string());
    }
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

fn built_in_text(path: &Path) -> Option<&'static str> {
    let rest = path.strip_prefix(BUILT_IN_DIR).ok()?;
    let family = rest.parent()?.to_str()?;
    let name = rest.file_stem()?.to_str()?;
    (rest.extension()? == "json").then_some(())?;
    BUILT_IN.iter().find(|(f, n, _)| *f == family && *n == name).map(|(_, _, t)| *t)
}

/// The presets built into this binary, sorted by family and name.
pub fn built_in() -> Vec<Preset> {
    let mut v: Vec<Preset> = BUILT_IN
        .iter()
        .map(|(family, name, _)| Preset {
            family: family.to_string(),
            name: name.to_string(),
            path: Path::new(BUILT_IN_DIR).join(family).join(format!("{name}.json")),
        })
        .collect();
    v.sort_by(|a, b| (&a.family, &a.name).cmp(&(&b.family, &b.name)));
    v
}

/// Every preset: the models folder's, then the built-in ones it does not hold (a file in the
/// models folder replaces the built-in preset of its name). Sorted by family and name.
pub fn all() -> Result<Vec<Preset>> {
    let mut out = list(&models_dir())?;
    for p in built_in() {
        if !out.iter().any(|q| q.family == p.family && q.name == p.name) {
            out.push(p);
        }
    }
    out.sort_by(|a, b| (&a.family, &a.name).cmp(&(&b.family, &b.name)));
    Ok(out)
}

/// Finds preset `name` of `family` among [`all`]; read it with [`read`]. An unknown name is
/// an error that lists the known ones.
pub fn find_preset(family: &str, name: &str) -> Result<Preset> {
    pick(all()?, &models_dir(), family, name)
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

/// Finds preset `name` of `family` in `dir` only; an unknown name is an error that lists the
/// known ones.
pub fn find(dir: &Path, family: &str, name: &str) -> Result<Preset> {
    pick(list(dir)?, dir, family, name)
}

fn pick(presets: Vec<Preset>, dir: &Path, family: &str, name: &str) -> Result<Preset> {
    let all: Vec<Preset> = presets.into_iter().filter(|p| p.family == family).collect();
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
    path_like || find_preset(family, spec).is_err()
}

/// A trained model shipped in the models folder, `models/<family>/<name>/`, when `name` is a
/// bare name (no path separator, not starting with `.`) and that folder exists. A path-like
/// `--model` is the user's folder, never a shipped one.
pub fn shipped_model(family: &str, name: &str) -> Option<PathBuf> {
    if name.is_empty() || name.contains(['/', '\\', std::path::MAIN_SEPARATOR]) || name.starts_with('.') {
        return None;
    }
    let p = models_dir().join(family).join(name);
    p.is_dir().then_some(p)
}

/// Every shipped model folder (a folder under `models/<family>/` holding a README.md model
/// card), as (family, name, path), sorted. The evaluators of `models/eval/` are included.
pub fn shipped_models() -> Vec<(String, String, PathBuf)> {
    let mut out = Vec::new();
    let dir = models_dir();
    let Ok(families) = std::fs::read_dir(&dir) else { return out };
    for fam in families.flatten() {
        let Ok(models) = std::fs::read_dir(fam.path()) else { continue };
        let family = fam.file_name().to_string_lossy().into_owned();
        for m in models.flatten() {
            let path = m.path();
            if path.is_dir() && path.join("README.md").is_file() {
                out.push((family.clone(), m.file_name().to_string_lossy().into_owned(), path));
            }
        }
    }
    out.sort();
    out
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

    #[test]
    fn every_preset_of_the_tree_is_built_in_as_it_is() {
        let tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
        let on_disk = list(&tree).unwrap();
        assert!(on_disk.len() >= 20, "{} presets in {}", on_disk.len(), tree.display());
        let built: Vec<(String, String)> = built_in().into_iter().map(|p| (p.family, p.name)).collect();
        let disk: Vec<(String, String)> =
            on_disk.iter().map(|p| (p.family.clone(), p.name.clone())).collect();
        assert_eq!(built, disk);
        for p in &on_disk {
            let inside = Path::new(BUILT_IN_DIR).join(&p.family).join(format!("{}.json", p.name));
            assert_eq!(read(&inside).unwrap(), std::fs::read_to_string(&p.path).unwrap(), "{}", p.name);
        }
        // Not a built-in preset: read from disk, and the error names the path.
        let e = read(Path::new("<built-in>/llm/no-such.json")).unwrap_err().to_string();
        assert!(e.contains("<built-in>/llm/no-such.json"), "{e}");
        assert!(read(Path::new("<built-in>/llm/tiny-gpt2.txt")).is_err());
    }
}
