//! `zoo llm`: run and study decoder-only language models (GPT-2, Llama, Mistral, Qwen2).
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args as ClapArgs, Subcommand};
use zoo_llm::chat::{ChatTemplate, Message};
use zoo_llm::generate::{fit_prompts, generate, generate_timed, Finish, GenerateConfig, Timings};
use zoo_llm::sampling::{Sampler, SamplingConfig};
use zoo_llm::{arch, LoadedModel, Tokenizer, Weights};

use crate::global::Global;

#[derive(ClapArgs, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Continues a prompt, streaming the text as it is made; tokens/s go to stderr.
    Generate(GenerateArgs),
    /// Chats with a chat model: one user turn per line of stdin (typed or piped), replies
    /// streamed to stdout; /reset forgets the conversation, /exit (or end of input) ends it.
    Chat(ChatArgs),
    /// Prints the tokens of a text and their count.
    Tokens(TokensArgs),
    /// Draws the architecture: each part with its tensor shapes and parameter count.
    Arch(ArchArgs),
    /// Perplexity of a text file under a model.
    Score(ScoreArgs),
    /// Tokenizers: train one on your text.
    Tokenizer(TokenizerArgs),
    /// Pretrains on text (next-token prediction); writes a model folder generate and transformers load.
    Train(super::llm_train::TrainArgs),
    /// Supervised fine-tuning on prompt/response (or chat) records; loss on the responses only.
    Sft(super::llm_train::SftArgs),
    /// Reward models for RLHF: train one on preference pairs.
    Reward(super::llm_train::RewardArgs),
    /// RLHF with PPO: the policy against a reward model, with a KL penalty to the start model.
    Ppo(super::llm_train::PpoArgs),
    /// Direct preference optimisation on preference pairs (no reward model).
    Dpo(super::llm_train::DpoArgs),
    /// Writes a synthetic fine-tuning task made from a text (reverse words; prefer capitals).
    Task(super::llm_train::TaskArgs),
}

#[derive(ClapArgs, Debug)]
struct GenerateArgs {
    /// A model folder (config.json, model.safetensors, tokenizer.json) or a preset name
    /// (models/llm/*.json: random weights, raw-byte tokens).
    #[arg(long)]
    model: String,
    /// The text to continue.
    #[arg(long, conflicts_with = "prompt_file", required_unless_present = "prompt_file")]
    prompt: Option<String>,
    /// Read the prompt from this UTF-8 text file.
    #[arg(long)]
    prompt_file: Option<PathBuf>,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Samples to generate, as one batch.
    #[arg(long, default_value_t = 1)]
    num_samples: usize,
    /// When prompt + new tokens exceed the context, keep the prompt's last tokens instead of failing.
    #[arg(long)]
    truncate: bool,
}

/// The sampling flags of `generate` and `chat`.
#[derive(ClapArgs, Debug)]
struct SamplingArgs {
    /// Most tokens to generate per sample (per reply in chat).
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// Softmax temperature; 0 picks the most likely token (greedy).
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Sample only from the K most likely tokens.
    #[arg(long)]
    top_k: Option<i64>,
    /// Sample only from the most likely tokens whose probabilities add up to P (nucleus).
    #[arg(long)]
    top_p: Option<f64>,
    /// Drop tokens less likely than M times the most likely one.
    #[arg(long)]
    min_p: Option<f64>,
    /// Divide positive logits (multiply negative ones) of recent tokens by R; 1 is off.
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f64,
    /// How many recent tokens the repetition penalty looks at (0: all).
    #[arg(long, default_value_t = 64)]
    repeat_last_n: usize,
    /// Subtract F times the count of each token generated so far from its logit (OpenAI's).
    #[arg(long, default_value_t = 0.0)]
    frequency_penalty: f64,
    /// Subtract P from the logit of each token generated at least once (OpenAI's).
    #[arg(long, default_value_t = 0.0)]
    presence_penalty: f64,
    /// Stop a sample when this text appears (repeatable); the text before it is kept.
    #[arg(long)]
    stop: Vec<String>,
}

impl SamplingArgs {
    fn config(&self, eos_token_ids: Vec<i64>, truncate: bool) -> GenerateConfig {
        GenerateConfig {
            max_new_tokens: self.max_new_tokens,
            sampling: SamplingConfig {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                min_p: self.min_p,
                repetition_penalty: self.repetition_penalty,
                repeat_last_n: self.repeat_last_n,
                frequency_penalty: self.frequency_penalty,
                presence_penalty: self.presence_penalty,
            },
            stop: self.stop.clone(),
            eos_token_ids,
            truncate,
        }
    }
}

#[derive(ClapArgs, Debug)]
struct ChatArgs {
    /// A model folder whose tokenizer_config.json (or chat_template.jinja) has a chat template.
    #[arg(long)]
    model: String,
    /// A system message to start the conversation with (kept by /reset).
    #[arg(long)]
    system: Option<String>,
    #[command(flatten)]
    sampling: SamplingArgs,
}

#[derive(ClapArgs, Debug)]
struct TokensArgs {
    /// A model folder with a tokenizer.json, a tokenizer.json file, a preset or a shipped
    /// model's name.
    #[arg(long)]
    model: PathBuf,
    /// The text to tokenize.
    text: String,
}

#[derive(ClapArgs, Debug)]
struct ArchArgs {
    /// A model folder or a preset name.
    #[arg(long)]
    model: String,
    /// Prints one JSON object: the config, each part (depth, name, shapes, parameters) and the total.
    #[arg(long)]
    json: bool,
}

#[derive(ClapArgs, Debug)]
struct ScoreArgs {
    /// A model folder.
    #[arg(long)]
    model: String,
    /// A UTF-8 text file to score.
    #[arg(long)]
    data: PathBuf,
    /// Tokens per scored window (0: the model's context length).
    #[arg(long, default_value_t = 0)]
    window: usize,
}

#[derive(ClapArgs, Debug)]
struct TokenizerArgs {
    #[command(subcommand)]
    command: TokenizerCommand,
}

#[derive(Subcommand, Debug)]
enum TokenizerCommand {
    /// Trains a byte-level BPE tokenizer (GPT-2's scheme) or a char-level one on text files.
    Train(TrainTokenizerArgs),
}

#[derive(ClapArgs, Debug)]
struct TrainTokenizerArgs {
    /// UTF-8 text files to learn from (repeatable).
    #[arg(long, required = true)]
    data: Vec<PathBuf>,
    /// Vocabulary size: 256 byte tokens + <|endoftext|> + merges (BPE only).
    #[arg(long, default_value_t = 1024)]
    vocab_size: usize,
    /// Make a char-level tokenizer (one token per distinct character) instead of BPE.
    #[arg(long)]
    char: bool,
    /// Where to write the tokenizer.
    #[arg(long, default_value = "tokenizer.json")]
    out: PathBuf,
}

pub fn run(g: &Global, a: Args) -> Result<()> {
    match a.command {
        Command::Generate(a) => run_generate(g, a),
        Command::Chat(a) => run_chat(g, a),
        Command::Tokens(a) => run_tokens(a),
        Command::Arch(a) => run_arch(g, a),
        Command::Score(a) => run_score(g, a),
        Command::Tokenizer(TokenizerArgs { command: TokenizerCommand::Train(a) }) => {
            run_train_tokenizer(g, a)
        }
        Command::Train(a) => super::llm_train::run_train(g, a),
        Command::Sft(a) => super::llm_train::run_sft(g, a),
        Command::Reward(a) => super::llm_train::run_reward(g, a),
        Command::Ppo(a) => super::llm_train::run_ppo(g, a),
        Command::Dpo(a) => super::llm_train::run_dpo(g, a),
        Command::Task(a) => super::llm_train::run_task(g, a),
    }
}

/// Loads a model; random weights are drawn right after seeding, so a preset with one seed
/// is always the same model.
fn open(g: &Global, spec: &str) -> Result<LoadedModel> {
    let device = g.device()?;
    zoo_core::seed::seed_all(g.seed);
    Ok(LoadedModel::open(spec, device, g.dtype.kind())?)
}

fn describe_weights(m: &LoadedModel) -> String {
    match &m.weights {
        Weights::Checkpoint(dir) => format!("weights from {}", dir.display()),
        Weights::Random { preset } => {
            format!("RANDOM weights from preset '{preset}' (untrained: its output is noise), raw-byte tokens")
        }
    }
}

/// The largest text file read whole (prompts, chat messages, data files).
const MAX_TEXT_BYTES: u64 = 1 << 30;

/// The shipped model the demo writes with (`models/llm/NAME/`).
pub const DEMO_MODEL: &str = "shakespeare";

/// A UTF-8 text file, with errors that name it (a pipe or device is refused, not read forever).
fn read_text(path: &Path, what: &str) -> Result<String> {
    let bytes =
        zoo_core::fsutil::read_regular(path, MAX_TEXT_BYTES).with_context(|| format!("reading {what}"))?;
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{what} {} is not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

fn run_generate(g: &Global, a: GenerateArgs) -> Result<()> {
    let prompt = match (&a.prompt, &a.prompt_file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => read_text(f, "prompt file")?,
        (None, None) => bail!("give --prompt TEXT or --prompt-file FILE"),
    };
    if prompt.is_empty() {
        bail!("empty prompt: give some text to continue with --prompt or --prompt-file");
    }
    if a.num_samples == 0 {
        bail!("--num-samples must be at least 1");
    }
    let m = open(g, &a.model)?;
    let tok = m.tokenizer()?;
    let ids = tok.encode(&prompt)?;
    let vocab = m.config.vocab_size();
    if let Some(bad) = ids.iter().find(|&&i| i >= vocab) {
        bail!("the prompt has token id {bad}, outside the model's vocabulary of {vocab}");
    }
    let mut cfg =
        a.sampling.config(m.config.eos_token_ids().into_iter().filter(|&i| i < vocab).collect(), a.truncate);
    if let Some(asked) = cfg.fit_to_context(m.config.context_len()) {
        g.note(format!(
            "--max-new-tokens {asked} fills the model's whole context of {} tokens: generating {} after the last prompt token",
            m.config.context_len(),
            cfg.max_new_tokens
        ));
    }
    let prompts = vec![ids.clone(); a.num_samples];
    // Settings and lengths are checked before anything is printed.
    Sampler::new(&cfg.sampling, None)?;
    fit_prompts(&prompts, cfg.max_new_tokens, m.config.context_len(), cfg.truncate)?;
    g.note(format!("{} ({}), {}", m.config.model_type(), arch::commas(m.num_params()), describe_weights(&m)));
    set_decode_threads(g)?;
    // Sampling draws start from the seed (see zoo_llm::sampling for the order of draws).
    zoo_core::seed::seed_all(g.seed);
    let stream = a.num_samples == 1;
    let mut out = std::io::stdout().lock();
    if stream {
        write!(out, "{prompt}")?;
        out.flush()?;
    }
    let t0 = Instant::now();
    let mut io_err = None;
    let (results, timings) =
        generate_timed(&m.model, Some(tok), &prompts, m.config.context_len(), &cfg, &mut |_, text| {
            if stream {
                if let Err(e) = write!(out, "{text}").and_then(|_| out.flush()) {
                    io_err.get_or_insert(e);
                }
            }
        })?;
    let secs = t0.elapsed().as_secs_f64();
    if let Some(e) = io_err {
        return Err(e).context("writing to stdout");
    }
    if stream {
        writeln!(out)?;
    } else {
        for (i, r) in results.iter().enumerate() {
            writeln!(out, "--- sample {} ---\n{prompt}{}", i + 1, r.text)?;
        }
    }
    let new: usize = results.iter().map(|r| r.tokens.len()).sum();
    if let Some(r) = results.first() {
        if r.prompt_tokens.len() < ids.len() {
            g.note(format!(
                "--truncate: kept the last {} of {} prompt tokens",
                r.prompt_tokens.len(),
                ids.len()
            ));
        }
    }
    let why: Vec<String> = results
        .iter()
        .map(|r| match &r.finish {
            Finish::Eos => "end-of-text token".to_string(),
            Finish::Stop(s) => format!("stop string {s:?}"),
            Finish::Length => "--max-new-tokens".to_string(),
        })
        .collect();
    g.note(format!(
        "{new} tokens in {secs:.2} s: {:.1} tokens/s (prompt {} tokens; stopped by {})",
        new as f64 / secs.max(1e-9),
        ids.len(),
        why.join(", ")
    ));
    if g.verbose {
        g.note(describe_timings(&timings, secs));
    }
    Ok(())
}

/// `-v`: where the time of a generation went (on the CPU, where libtorch's ops are synchronous).
fn describe_timings(t: &Timings, total: f64) -> String {
    let pct = |x: f64| 100.0 * x / total.max(1e-9);
    format!(
        "time: prefill {:.3} s ({:.1}%), blocks {:.3} s ({:.1}%), LM head {:.3} s ({:.1}%), sampling {:.3} s \
         ({:.2}%), rows/decoding {:.3} s ({:.2}%), step inputs {:.3} s ({:.2}%)",
        t.prefill,
        pct(t.prefill),
        t.blocks,
        pct(t.blocks),
        t.lm_head,
        pct(t.lm_head),
        t.sample,
        pct(t.sample),
        t.rows,
        pct(t.rows),
        t.inputs,
        pct(t.inputs)
    )
}

/// Threads for token-by-token decoding when the user left `--threads` at 0 (auto): the cores
/// not busy with other work (cores minus the 1-minute load average, rounded; at least 1).
/// A decoding step is a chain of small matrix-vector products, one OpenMP parallel region
/// each, and libtorch's libgomp spins at every barrier: on cores that other processes keep
/// busy, a descheduled thread stalls every region. Measured on a shared 2-core machine
/// (docs/benchmarks.md): 2 threads gave 14.4 tokens/s where 1 thread gave 41.9.
fn decode_threads(g: &Global) -> Option<usize> {
    if g.threads != 0 {
        return None;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load: f64 = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(0.0);
    let idle = (cores as f64 - load).round();
    Some(if idle >= cores as f64 {
        cores
    } else if idle >= 1.0 {
        idle as usize
    } else {
        1
    })
}

fn set_decode_threads(g: &Global) -> Result<()> {
    if let Some(n) = decode_threads(g) {
        zoo_core::device::set_threads(n)?;
        if g.verbose {
            g.note(format!(
                "--threads 0 (auto): {n} thread(s) for decoding, from the cores and load average"
            ));
        }
    }
    Ok(())
}

/// What one chat turn does, given its line of input.
enum Turn<'a> {
    Skip,
    Exit,
    Reset,
    User(&'a str),
}

fn parse_turn(line: &str) -> Turn<'_> {
    let line = line.trim_end_matches(['\n', '\r']);
    match line.trim() {
        "" => Turn::Skip,
        "/exit" | "/quit" => Turn::Exit,
        "/reset" => Turn::Reset,
        _ => Turn::User(line),
    }
}

fn run_chat(g: &Global, a: ChatArgs) -> Result<()> {
    let dir = Path::new(&a.model);
    if !dir.is_dir() {
        bail!(
            "'{}' is not a model folder: chat needs a chat model's folder (config.json, model.safetensors, \
             tokenizer.json, and a chat template in tokenizer_config.json)",
            a.model
        );
    }
    // The template first: a base model is refused before its weights are read.
    let template = ChatTemplate::from_dir(dir)?;
    let m = open(g, &a.model)?;
    let tok = m.tokenizer()?;
    let vocab = m.config.vocab_size();
    // A chat model's turn ends at the template's eos_token (e.g. <|im_end|>, <|eot_id|>), which
    // config.json's eos_token_id does not always name.
    let mut eos = m.config.eos_token_ids();
    if let Some(id) = template.special_token("eos_token").and_then(|t| tok.token_id(t)) {
        if !eos.contains(&id) {
            eos.push(id);
        }
    }
    eos.retain(|&i| (0..vocab).contains(&i));
    let cfg = a.sampling.config(eos, false);
    Sampler::new(&cfg.sampling, None)?;
    let context = usize::try_from(m.config.context_len()).unwrap_or(0);
    if cfg.max_new_tokens >= context {
        bail!("--max-new-tokens {} leaves no room for the conversation in the model's context of {context} tokens", cfg.max_new_tokens);
    }
    let start: Vec<Message> = a.system.iter().map(|s| Message::new("system", s)).collect();
    let interactive = std::io::stdin().is_terminal();
    g.note(format!("{} ({}), {}", m.config.model_type(), arch::commas(m.num_params()), describe_weights(&m)));
    if interactive {
        g.note("one message per line; /reset forgets the conversation, /exit (or Ctrl-D) ends it");
    }
    set_decode_threads(g)?;
    zoo_core::seed::seed_all(g.seed);
    let mut history = start.clone();
    let mut input = std::io::stdin().lock();
    let mut out = std::io::stdout().lock();
    let mut line = String::new();
    loop {
        if interactive {
            eprint!("> ");
            std::io::stderr().flush()?;
        }
        line.clear();
        match input.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                bail!("standard input is not UTF-8 text")
            }
            Err(e) => return Err(e).context("reading standard input"),
        }
        let text = match parse_turn(&line) {
            Turn::Skip => continue,
            Turn::Exit => break,
            Turn::Reset => {
                history.clone_from(&start);
                g.note("conversation reset");
                continue;
            }
            Turn::User(text) => text,
        };
        history.push(Message::new("user", text));
        // The oldest exchanges go first when the conversation outgrows the context.
        let mut dropped = 0;
        let ids = loop {
            let ids = tok.encode_plain(&template.render(&history, true)?)?;
            if ids.len() + cfg.max_new_tokens <= context {
                break Some(ids);
            }
            if history.len() - start.len() <= 1 {
                break None;
            }
            let n = 2.min(history.len() - start.len() - 1);
            history.drain(start.len()..start.len() + n);
            dropped += n;
        };
        let Some(ids) = ids else {
            history.pop();
            let msg = format!(
                "this message with the chat template + --max-new-tokens {} exceeds the model's context of \
                 {context} tokens: write a shorter one or lower --max-new-tokens",
                cfg.max_new_tokens
            );
            if interactive {
                eprintln!("error: {msg}");
                continue;
            }
            bail!(msg);
        };
        if dropped > 0 {
            g.note(format!("the conversation outgrew the context: forgot its {dropped} oldest messages"));
        }
        if let Some(bad) = ids.iter().find(|&&i| i >= vocab) {
            bail!("the conversation has token id {bad}, outside the model's vocabulary of {vocab}");
        }
        let t0 = Instant::now();
        let mut io_err = None;
        let results = generate(&m.model, Some(tok), &[ids], m.config.context_len(), &cfg, &mut |_, text| {
            if let Err(e) = write!(out, "{text}").and_then(|_| out.flush()) {
                io_err.get_or_insert(e);
            }
        })?;
        if let Some(e) = io_err {
            return Err(e).context("writing to stdout");
        }
        writeln!(out)?;
        out.flush()?;
        let reply = results.into_iter().next().context("generation returned no reply")?;
        let secs = t0.elapsed().as_secs_f64();
        g.note(format!(
            "{} tokens, {:.1} tokens/s",
            reply.tokens.len(),
            reply.tokens.len() as f64 / secs.max(1e-9)
        ));
        history.push(Message::new("assistant", &reply.text));
    }
    Ok(())
}

fn run_tokens(a: TokensArgs) -> Result<()> {
    let tok = if a.model.is_file() {
        Tokenizer::from_file(&a.model)?
    } else if a.model.is_dir() {
        Tokenizer::from_dir(&a.model)?
            .with_context(|| format!("{}: no tokenizer.json in this folder", a.model.display()))?
    } else {
        // A preset (random weights read bytes, as `generate` does) or a shipped model's name.
        let name = a.model.to_string_lossy();
        if zoo_core::presets::find_preset("llm", &name).is_ok() {
            Tokenizer::Bytes
        } else if let Some(dir) = zoo_core::presets::shipped_model("llm", &name) {
            Tokenizer::from_dir(&dir)?
                .with_context(|| format!("{}: no tokenizer.json in this folder", dir.display()))?
        } else {
            bail!("--model {name}: no such tokenizer.json, model folder or preset")
        }
    };
    let ids = tok.encode(&a.text)?;
    let pieces = tok.pieces(&ids);
    for (id, piece) in ids.iter().zip(&pieces) {
        let text = tok.decode(&[*id])?;
        if text.contains('\u{FFFD}') || text.is_empty() {
            // Part of a multi-byte character (or a special token): show the stored piece.
            println!("{id:>8}  {piece:?} (piece)");
        } else {
            println!("{id:>8}  {text:?}");
        }
    }
    println!("{} tokens", ids.len());
    Ok(())
}

fn run_arch(g: &Global, a: ArchArgs) -> Result<()> {
    let m = open(g, &a.model)?;
    let title = format!(
        "{} ({}): {}\ncontext {} tokens, vocabulary {}; B = batch, T = tokens",
        match &m.model {
            zoo_llm::Model::Gpt2(_) => "GPT-2",
            zoo_llm::Model::Llama(_) => "Llama-family decoder",
        },
        m.config.model_type(),
        describe_weights(&m),
        m.config.context_len(),
        m.config.vocab_size(),
    );
    let parts = arch::parts(&m.config, &m.vs);
    if a.json {
        let rows: Vec<serde_json::Value> = parts
            .iter()
            .map(|p| serde_json::json!({"depth": p.depth, "name": p.name, "shape": p.shape, "params": p.params}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"model_type": m.config.model_type(), "context": m.config.context_len(),
                               "vocab_size": m.config.vocab_size(), "parts": rows, "params": m.num_params()})
        );
        return Ok(());
    }
    print!("{}", arch::render(&title, &parts, m.num_params()));
    Ok(())
}

fn run_score(g: &Global, a: ScoreArgs) -> Result<()> {
    let text = read_text(&a.data, "data file")?;
    let m = open(g, &a.model)?;
    if let Weights::Random { .. } = m.weights {
        g.note(describe_weights(&m));
    }
    let tokens = m.tokenizer()?.encode(&text)?;
    let ctx = m.config.context_len() as usize;
    let window = if a.window == 0 { ctx } else { a.window.min(ctx) };
    let t0 = Instant::now();
    let s = zoo_llm::score::perplexity(&m.model, &tokens, window, m.vs.device(), &mut |_, _| {})?;
    println!(
        "perplexity {:.4} ({:.4} nats/token) over {} predicted tokens in {} window(s) of up to {window}",
        s.perplexity(),
        s.nll,
        s.predicted,
        s.windows
    );
    g.note(format!("{:.2} s", t0.elapsed().as_secs_f64()));
    Ok(())
}

fn run_train_tokenizer(g: &Global, a: TrainTokenizerArgs) -> Result<()> {
    let tok = if a.char {
        let mut text = String::new();
        for f in &a.data {
            text.push_str(&read_text(f, "data file")?);
        }
        Tokenizer::Char(zoo_llm::tokenizer::CharTokenizer::from_text(&text)?)
    } else {
        let files: Vec<&Path> = a.data.iter().map(PathBuf::as_path).collect();
        zoo_llm::tokenizer::train_bpe(&files, a.vocab_size)?
    };
    tok.save(&a.out)?;
    g.note(format!("{} tokenizer, vocabulary {}", tok.describe(), tok.vocab_size()));
    println!("{}", a.out.display());
    Ok(())
}

/// The demo's part: the shipped Shakespeare model continues a line of a play. No training at
/// demo time.
pub fn demo(g: &Global, dir: &Path, device: tch::Device) -> Result<Vec<PathBuf>> {
    let Some(model_dir) = zoo_core::presets::shipped_model("llm", DEMO_MODEL) else {
        g.note(format!(
            "llm: skipped: no shipped model {DEMO_MODEL} in {}",
            zoo_core::presets::models_dir().join("llm").display()
        ));
        return Ok(Vec::new());
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let m = LoadedModel::from_dir(&model_dir, device, tch::Kind::Float)?;
    let tok = m.tokenizer()?;
    let prompt = "ROMEO:\n";
    let gen = GenerateConfig {
        max_new_tokens: 600,
        sampling: SamplingConfig { temperature: 0.8, top_k: Some(200), ..Default::default() },
        ..Default::default()
    };
    zoo_core::seed::seed_all(g.seed);
    let t0 = Instant::now();
    let ids = tok.encode(prompt)?;
    let text = tch::no_grad(|| {
        zoo_llm::generate::generate_sliding(&m.model, tok, &ids, m.config.context_len(), &gen)
    })?;
    let secs = t0.elapsed().as_secs_f64();
    let params: i64 = m.vs.variables().values().map(|t| t.numel() as i64).sum();
    let sample_path = dir.join("sample.txt");
    let body = format!(
        "{} ({} parameters, characters, {}-character context), temperature 0.8, top-k 200, \
         seed {}:\n\n{prompt}{text}\n",
        model_dir.display(),
        arch::commas(params),
        m.config.context_len(),
        g.seed
    );
    zoo_core::fsutil::atomic_write(&sample_path, |w| {
        w.write_all(body.as_bytes()).map_err(|e| zoo_core::Error::io(&sample_path, e))
    })?;
    g.note(format!(
        "llm: {} wrote {} characters of play in {secs:.1} s ({:.0}/s) -> {}. Scores: {}",
        model_dir.display(),
        text.chars().count(),
        text.chars().count() as f64 / secs.max(1e-9),
        sample_path.display(),
        model_dir.join("README.md").display()
    ));
    Ok(vec![sample_path])
}
