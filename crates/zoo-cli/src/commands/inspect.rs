//! `zoo inspect FILE`: what is in a checkpoint, a WAV or an image.
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use zoo_core::weights::{self, SafetensorsFile};

use crate::global::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A .safetensors file, a *.safetensors.index.json, a model folder, a .wav, or a .png/.jpg.
    file: PathBuf,
}

pub fn run(g: &Global, a: Args) -> Result<()> {
    let p = a.file.as_path();
    if !p.exists() {
        bail!("{}: no such file or folder", p.display());
    }
    let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "wav" | "wave" => wav(p),
        "png" | "jpg" | "jpeg" => picture(p),
        _ => checkpoint(g, p),
    }
}

fn checkpoint(g: &Global, p: &Path) -> Result<()> {
    let files = weights::weight_files(p)?;
    let mut total = 0usize;
    let mut count = 0usize;
    const SHOWN: usize = 40;
    for f in &files {
        let st = SafetensorsFile::open(f)?;
        let infos = st.infos()?;
        println!("{} ({} tensors)", f.display(), infos.len());
        for (k, v) in st.metadata()? {
            println!("  metadata {k} = {v}");
        }
        for (i, t) in infos.iter().enumerate() {
            if g.verbose || i < SHOWN {
                println!("  {:<60} {:<5} {:?}", t.name, t.dtype, t.shape);
            } else if i == SHOWN {
                println!("  ... {} more (-v lists all)", infos.len() - SHOWN);
            }
            total += t.numel();
        }
        count += infos.len();
    }
    println!("{count} tensors, {total} parameters ({})", human(total));
    Ok(())
}

fn wav(p: &Path) -> Result<()> {
    let a = zoo_core::audio::read_wav(p)?;
    let facts = format!(
        "{}: {} channel(s), {} Hz, {} samples ({:.3} s)",
        p.display(),
        a.channels(),
        a.sample_rate,
        a.len(),
        a.duration_secs()
    );
    // A valid WAV may hold no samples; a max() over nothing would panic.
    if a.samples.numel() == 0 {
        println!("{facts}, no audio");
        return Ok(());
    }
    let peak = a.samples.f_abs()?.f_max()?.f_double_value(&[])?;
    let rms = a.samples.f_square()?.f_mean(tch::Kind::Float)?.f_sqrt()?.f_double_value(&[])?;
    println!("{facts}, peak {peak:.3}, RMS {rms:.3}");
    Ok(())
}

fn picture(p: &Path) -> Result<()> {
    let t = zoo_core::image::load_image(p)?;
    let s = t.size();
    println!(
        "{}: {}x{} pixels, {} channel(s), values {:.3}..{:.3} (of -1..1)",
        p.display(),
        s[2],
        s[1],
        s[0],
        t.min().double_value(&[]),
        t.max().double_value(&[])
    );
    Ok(())
}

fn human(n: usize) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}
