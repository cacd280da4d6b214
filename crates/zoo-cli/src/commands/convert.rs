//! `zoo convert`: a checkpoint or model folder with its weights in another float dtype.
use std::path::PathBuf;

use anyhow::{bail, Result};
use zoo_core::weights::{self, Converted};

use crate::global::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A .safetensors file, or a model folder (every .safetensors in it is converted, every
    /// other file copied).
    input: PathBuf,
    /// The dtype of the floating-point weights: f16 (half the bytes), bf16 or f32.
    #[arg(long, value_parser = ["f16", "bf16", "f32"])]
    to: String,
    /// Where to write: a new .safetensors file, or a new folder for a model folder.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(g: &Global, a: Args) -> Result<()> {
    let kind = match a.to.as_str() {
        "f16" => tch::Kind::Half,
        "bf16" => tch::Kind::BFloat16,
        _ => tch::Kind::Float,
    };
    if !a.input.exists() {
        bail!("{}: no such file or folder", a.input.display());
    }
    let done: Vec<(PathBuf, Converted)> = if a.input.is_dir() {
        weights::convert_folder(&a.input, &a.out, kind)?
    } else {
        if a.out.exists() && std::fs::canonicalize(&a.out)? == std::fs::canonicalize(&a.input)? {
            bail!("--out {} is the input file; give another path", a.out.display());
        }
        vec![(a.out.clone(), weights::convert_floats(&a.input, &a.out, kind)?)]
    };
    let mb = |b: u64| b as f64 / 1e6;
    for (p, c) in &done {
        println!(
            "{}: {} of {} tensors to {}, {:.2} MB -> {:.2} MB",
            p.display(),
            c.converted,
            c.tensors,
            a.to,
            mb(c.bytes_before),
            mb(c.bytes_after)
        );
    }
    let (before, after) = done.iter().fold((0, 0), |(b, f), (_, c)| (b + c.bytes_before, f + c.bytes_after));
    g.note(format!("{} file(s): {:.2} MB -> {:.2} MB", done.len(), mb(before), mb(after)));
    Ok(())
}
