//! A language model from a library user's side: open the Shakespeare model shipped in
//! models/llm/ by name (a preset name or a model folder works the same way), and stream a
//! seeded continuation of a prompt.
//!
//! ```sh
//! cargo run --release -p zoo-examples --example llm -- "ROMEO:"
//! ```
use std::io::Write;

use anyhow::Result;
use tch::{Device, Kind};
use zoo_llm::generate::{generate, GenerateConfig};
use zoo_llm::sampling::SamplingConfig;
use zoo_llm::LoadedModel;

fn main() -> Result<()> {
    let prompt = std::env::args().nth(1).unwrap_or_else(|| "ROMEO:\n".into());
    let m = LoadedModel::open("shakespeare", Device::Cpu, Kind::Float)?;
    let tok = m.tokenizer()?;
    let ids = tok.encode(&prompt)?;
    let cfg = GenerateConfig {
        // The model sees 128 characters: the prompt and what it writes must fit.
        max_new_tokens: (m.config.context_len() as usize).saturating_sub(ids.len()),
        sampling: SamplingConfig { temperature: 0.8, top_k: Some(200), ..Default::default() },
        ..Default::default()
    };
    zoo_core::seed::seed_all(0);
    print!("{prompt}");
    let out = generate(&m.model, Some(tok), &[ids], m.config.context_len(), &cfg, &mut |_, text| {
        print!("{text}");
        let _ = std::io::stdout().flush();
    })?;
    println!("\n[{} characters; {} parameters]", out[0].tokens.len(), m.num_params());
    Ok(())
}
