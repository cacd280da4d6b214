//! The shipped models: everything under `models/` fits the 60 MB the project allows, and
//! every weights file of a shipped model folder is named, with its sha256, in that folder's
//! model card (README.md), so a card always describes the bytes beside it.
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

const LIMIT_BYTES: u64 = 60_000_000;

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn everything_shipped_fits_the_size_limit() {
    let mut all = Vec::new();
    files(&models(), &mut all);
    let total: u64 = all.iter().map(|p| std::fs::metadata(p).unwrap().len()).sum();
    assert!(total <= LIMIT_BYTES, "models/ holds {total} bytes, over the {LIMIT_BYTES} allowed");
}

#[test]
fn every_shipped_weights_file_is_in_its_model_card_with_its_sha256() {
    let mut checked = 0;
    for family in std::fs::read_dir(models()).unwrap() {
        let family = family.unwrap().path();
        if !family.is_dir() {
            continue;
        }
        for model in std::fs::read_dir(&family).unwrap() {
            let model = model.unwrap().path();
            if !model.is_dir() {
                continue;
            }
            let mut weights = Vec::new();
            files(&model, &mut weights);
            weights.retain(|p| p.extension().is_some_and(|x| x == "safetensors"));
            if weights.is_empty() {
                continue;
            }
            let card = std::fs::read_to_string(model.join("README.md")).unwrap_or_else(|_| {
                panic!("{}: a shipped model needs a model card (README.md)", model.display())
            });
            for w in &weights {
                let hash = hex(&Sha256::digest(std::fs::read(w).unwrap()));
                assert!(
                    card.contains(&hash),
                    "{}: its model card does not give this file's sha256 {hash}",
                    w.display()
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 5, "only {checked} shipped weights files found");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
