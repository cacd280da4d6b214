//! Text for pretraining: read from a file or a folder, tokenized once, packed into a binary
//! token file (`u16` little-endian when the vocabulary fits, else `u32`) with a JSON header,
//! split into train and validation parts and sampled as random blocks (nanoGPT's scheme).
use std::io::Write;
use std::path::{Path, PathBuf};

use rand::Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// The text files of `path`: the file itself, or every `.txt`/`.md` file under the folder
/// (recursively, sorted by path so the order never depends on the file system).
pub fn text_files(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    if !path.is_dir() {
        return Err(Error::Input(format!("{}: no such file or folder", path.display())));
    }
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let p = entry.map_err(|e| Error::io(&dir, e))?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "txt" || e == "md") {
                out.push(p);
            }
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(Error::Input(format!("{}: the folder holds no .txt or .md files", path.display())));
    }
    Ok(out)
}

/// Reads a UTF-8 text file; an empty file or invalid UTF-8 is an error naming the file.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::Input(format!("{}: not UTF-8 text (byte {})", path.display(), e.utf8_error().valid_up_to()))
    })?;
    if text.trim().is_empty() {
        return Err(Error::Input(format!("{}: the file is empty", path.display())));
    }
    Ok(text)
}

/// The header of a packed token file (`tokens.json` beside `tokens.bin`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackedHeader {
    /// "u16" or "u32".
    pub dtype: String,
    pub tokens: usize,
    /// Tokens `[0, val_start)` are the training part, the rest validation.
    pub val_start: usize,
    pub vocab_size: usize,
    pub sources: Vec<String>,
}

/// Tokens of a corpus, split into training and validation parts.
#[derive(Debug, Clone)]
pub struct TokenData {
    pub train: Vec<u32>,
    pub val: Vec<u32>,
    pub header: PackedHeader,
}

impl TokenData {
    /// Tokenizes `files` in order, each document followed by `separator` (e.g. the id of
    /// `<|endoftext|>`) when given, and keeps the last `val_fraction` of the tokens for
    /// validation (the split nanoGPT makes: no shuffling, so no text is in both parts).
    pub fn tokenize(
        files: &[PathBuf],
        tok: &Tokenizer,
        separator: Option<i64>,
        val_fraction: f64,
    ) -> Result<Self> {
        if !(0.0..1.0).contains(&val_fraction) {
            return Err(Error::Input(format!("--val-fraction must be in [0, 1), got {val_fraction}")));
        }
        let vocab = tok.vocab_size();
        let mut ids: Vec<u32> = Vec::new();
        for f in files {
            let text = read_text(f)?;
            let doc = tok.encode_plain(&text).map_err(|e| Error::Input(format!("{}: {e}", f.display())))?;
            ids.extend(doc.iter().map(|&i| i as u32));
            if let Some(s) = separator {
                ids.push(s as u32);
            }
        }
        let val_start = ((ids.len() as f64) * (1.0 - val_fraction)).round() as usize;
        let header = PackedHeader {
            dtype: if vocab <= 1 << 16 { "u16" } else { "u32" }.into(),
            tokens: ids.len(),
            val_start,
            vocab_size: vocab,
            sources: files.iter().map(|p| p.display().to_string()).collect(),
        };
        let val = ids.split_off(val_start);
        Ok(TokenData { train: ids, val, header })
    }

    /// Writes `tokens.bin` and `tokens.json` into `dir` (atomically).
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let bin = dir.join("tokens.bin");
        let wide = self.header.dtype == "u32";
        zoo_core::fsutil::atomic_write(&bin, |w| {
            let mut buf = Vec::with_capacity(self.header.tokens * if wide { 4 } else { 2 });
            for &t in self.train.iter().chain(&self.val) {
                if wide {
                    buf.extend_from_slice(&t.to_le_bytes());
                } else {
                    buf.extend_from_slice(&(t as u16).to_le_bytes());
                }
            }
            w.write_all(&buf).map_err(|e| zoo_core::Error::io(&bin, e))
        })?;
        let head = dir.join("tokens.json");
        let text = serde_json::to_string_pretty(&self.header).map_err(|e| Error::Input(e.to_string()))?;
        zoo_core::fsutil::atomic_write_bytes(&head, text.as_bytes())?;
        Ok(())
    }

    /// Reads what [`TokenData::save`] wrote; a truncated or mismatched file is an error.
    pub fn load(dir: &Path) -> Result<Self> {
        let head = dir.join("tokens.json");
        let text = std::fs::read_to_string(&head).map_err(|e| Error::io(&head, e))?;
        let header: PackedHeader = serde_json::from_str(&text)
            .map_err(|e| Error::Input(format!("{}: bad token header: {e}", head.display())))?;
        let bin = dir.join("tokens.bin");
        let bytes = std::fs::read(&bin).map_err(|e| Error::io(&bin, e))?;
        let width = match header.dtype.as_str() {
            "u16" => 2,
            "u32" => 4,
            other => return Err(Error::Input(format!("{}: unknown dtype '{other}'", head.display()))),
        };
        if bytes.len() != header.tokens * width || header.val_start > header.tokens {
            return Err(Error::Input(format!(
                "{}: {} bytes, but the header promises {} tokens of {width} bytes: the file is truncated or stale",
                bin.display(),
                bytes.len(),
                header.tokens
            )));
        }
        let mut ids: Vec<u32> = if width == 2 {
            bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as u32).collect()
        } else {
            bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
        };
        let val = ids.split_off(header.val_start);
        Ok(TokenData { train: ids, val, header })
    }
}

/// `batch` random windows of `block + 1` tokens: inputs (B, T) and next-token targets (B, T).
pub fn random_batch(
    tokens: &[u32],
    batch: i64,
    block: i64,
    rng: &mut impl Rng,
    device: Device,
) -> Result<(Tensor, Tensor)> {
    let t = block as usize;
    if tokens.len() < t + 1 {
        return Err(Error::Input(format!(
            "{} tokens are too few for blocks of {block}: use more text or a smaller --block-size",
            tokens.len()
        )));
    }
    let starts: Vec<usize> = (0..batch).map(|_| rng.gen_range(0..tokens.len() - t)).collect();
    windows(tokens, &starts, block, device)
}

/// Inputs and targets of the windows starting at `starts`.
pub fn windows(tokens: &[u32], starts: &[usize], block: i64, device: Device) -> Result<(Tensor, Tensor)> {
    let t = block as usize;
    let mut x = Vec::with_capacity(starts.len() * t);
    let mut y = Vec::with_capacity(starts.len() * t);
    for &i in starts {
        x.extend(tokens[i..i + t].iter().map(|&v| v as i64));
        y.extend(tokens[i + 1..i + t + 1].iter().map(|&v| v as i64));
    }
    let shape = [starts.len() as i64, block];
    Ok((
        Tensor::from_slice(&x).f_view(shape)?.f_to_device(device)?,
        Tensor::from_slice(&y).f_view(shape)?.f_to_device(device)?,
    ))
}

/// Starts of at most `max_windows` non-overlapping windows spread evenly over `tokens`: a
/// fixed evaluation set, the same at every evaluation, so the numbers compare across steps.
pub fn eval_starts(n_tokens: usize, block: i64, max_windows: usize) -> Vec<usize> {
    let t = block as usize;
    if n_tokens < t + 1 || max_windows == 0 {
        return Vec::new();
    }
    let fit = (n_tokens - 1) / t;
    let n = fit.min(max_windows);
    let stride = (n_tokens - 1 - t) / n.max(1);
    (0..n).map(|i| i * stride.max(t)).filter(|&s| s + t < n_tokens).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::CharTokenizer;
    use rand::SeedableRng;

    #[test]
    fn packs_splits_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.txt");
        std::fs::write(&f, "abcabcabcabc").unwrap();
        let tok = Tokenizer::Char(CharTokenizer::from_text("abc").unwrap());
        let d = TokenData::tokenize(std::slice::from_ref(&f), &tok, None, 0.25).unwrap();
        assert_eq!(d.train.len(), 9);
        assert_eq!(d.val, [0, 1, 2]);
        d.save(&dir.path().join("data")).unwrap();
        let back = TokenData::load(&dir.path().join("data")).unwrap();
        assert_eq!((back.train, back.val), (d.train.clone(), d.val.clone()));
        // A truncated file is named as such.
        let bin = dir.path().join("data/tokens.bin");
        let bytes = std::fs::read(&bin).unwrap();
        std::fs::write(&bin, &bytes[..bytes.len() - 1]).unwrap();
        assert!(TokenData::load(&dir.path().join("data")).unwrap_err().to_string().contains("truncated"));
        // Unknown characters name the file.
        std::fs::write(&f, "abcd").unwrap();
        let e = TokenData::tokenize(&[f], &tok, None, 0.1).unwrap_err().to_string();
        assert!(e.contains("a.txt") && e.contains("'d'"), "{e}");
    }

    #[test]
    fn batches_are_shifted_windows() {
        let tokens: Vec<u32> = (0..100).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let (x, y) = random_batch(&tokens, 4, 8, &mut rng, Device::Cpu).unwrap();
        assert_eq!(x.size(), [4, 8]);
        assert_eq!((y - x).min().int64_value(&[]), 1);
        assert!(random_batch(&tokens[..8], 1, 8, &mut rng, Device::Cpu).is_err());
        let s = eval_starts(100, 8, 5);
        assert_eq!(s.len(), 5);
        assert!(s.windows(2).all(|w| w[1] - w[0] >= 8) && s.iter().all(|&i| i + 8 < 100));
        assert_eq!(eval_starts(100, 8, 1000).len(), 12);
    }
}
