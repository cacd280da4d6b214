//! `zoo`: run, train and study generative models on libtorch.
//!
//! The CLI owns all I/O and printing. Errors print one line, `error: ...`, and exit with 2 for
//! usage errors and 1 for everything else.
use std::process::ExitCode;

use std::path::{Component, Path};

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

mod commands;
mod global;
mod signals;

use global::Global;

#[derive(Parser, Debug)]
#[command(name = "zoo", version, about = "Run, train and study generative models on libtorch.")]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Versions of zoo, tch and libtorch; CUDA, threads, model families and presets.
    Info(commands::info::Args),
    /// Shows every family at work on the trained models shipped in models/, under out/demo/ (about a minute).
    Demo(commands::demo::Args),
    /// The shared MNIST evaluation: train its classifier, score generated images.
    Eval(commands::eval::Args),
    /// Language models (GPT-2, Llama, Mistral, Qwen2): generate, tokens, arch, score, tokenizer train.
    Llm(commands::llm::Args),
    /// VAEs and diffusers' AutoencoderKL: train, eval, sample, reconstruct, interpolate, encode, decode.
    Vae(commands::vae::Args),
    /// GANs (DCGAN, conditional DCGAN, StyleGAN2-style): train on real images, sample, interpolate, arch.
    Gan(commands::gan::Args),
    /// Normalizing flows: WaveGlow (train on WAVs, vocode, mel pictures), Glow on MNIST (bits/dim), 2-D densities.
    Flow(commands::flow::Args),
    /// Text-to-speech: speak text (--text) with a Glow-TTS model and Griffin-Lim, train one, render corpora with espeak-ng.
    Tts(commands::tts::Args),
    /// Diffusion models (diffusers' UNet2DModel): schedulers, sample (any scheduler, guidance), arch, train.
    Diffusion(commands::diffusion::Args),
    /// Text to image with a diffusers Stable Diffusion folder (CLIP, cross-attention UNet, VAE); `train` makes one.
    Txt2img(commands::txt2img::Txt2ImgCmd),
    /// Changes a picture to follow a prompt (Stable Diffusion img2img; --strength sets how much).
    Img2img(commands::txt2img::Img2ImgArgs),
    /// Repaints the white part of a mask to follow a prompt (Stable Diffusion inpainting).
    Inpaint(commands::txt2img::InpaintArgs),
    /// Describes a file: the tensors of a safetensors checkpoint, a WAV's format, an image's size.
    Inspect(commands::inspect::Args),
    /// Writes a checkpoint or model folder with its weights in another dtype (`--to f16`: half the size).
    Convert(commands::convert::Args),
    /// Prints a shell completion script: `zoo completions bash > ~/.local/share/bash-completion/completions/zoo`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    default_sigpipe();
    signals::install();
    quiet_contained_panics();
    let matches = match Cli::command().try_get_matches() {
        Ok(m) => m,
        Err(e) => return usage_error(e),
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    if let Err(e) = check_out(&matches) {
        return report(&e);
    }
    if let Err(e) = cli.global.apply() {
        return report(&e);
    }
    let result = match cli.command {
        Command::Info(a) => commands::info::run(&cli.global, a),
        Command::Demo(a) => commands::demo::run(&cli.global, a),
        Command::Inspect(a) => commands::inspect::run(&cli.global, a),
        Command::Convert(a) => commands::convert::run(&cli.global, a),
        Command::Eval(a) => commands::eval::run(&cli.global, a),
        Command::Llm(a) => commands::llm::run(&cli.global, a),
        Command::Gan(a) => commands::gan::run(&cli.global, a),
        Command::Flow(a) => commands::flow::run(&cli.global, a),
        Command::Tts(a) => commands::tts::run(&cli.global, a),
        Command::Diffusion(a) => commands::diffusion::run(&cli.global, a),
        Command::Vae(a) => commands::vae::run(&cli.global, a),
        Command::Txt2img(a) => commands::txt2img::txt2img(&cli.global, a),
        Command::Img2img(a) => commands::txt2img::img2img(&cli.global, a),
        Command::Inpaint(a) => commands::txt2img::inpaint(&cli.global, a),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "zoo", &mut std::io::stdout());
            Ok(())
        }
    };
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&e),
    };
    // A run stopped by SIGINT or SIGTERM saved its checkpoint; say so in the exit code.
    match signals::exit_code() {
        Some(c) => ExitCode::from(c),
        None => code,
    }
}

/// `zoo info | head`, `zoo llm generate ... | head -c 100`: end quietly when the reader goes
/// away, as Unix tools do. Rust ignores SIGPIPE, so `println!` would panic on the broken pipe.
fn default_sigpipe() {
    #[cfg(unix)]
    {
        extern "C" {
            fn signal(signum: std::ffi::c_int, handler: usize) -> usize;
        }
        const SIGPIPE: std::ffi::c_int = 13;
        const SIG_DFL: usize = 0;
        // SAFETY: restores the default disposition of one signal before any thread starts.
        unsafe { signal(SIGPIPE, SIG_DFL) };
    }
}

/// `--out` of every command, a file or a run folder, goes into a folder that exists, so that a
/// typo never creates folders elsewhere (`--out /nonexistent/dir/x.png` made `/nonexistent/dir`
/// at the filesystem root); a run folder itself may be new. Inside the current folder (a
/// relative path without `..`) missing folders are still made, as in the documented
/// `--out runs/vae` of a fresh checkout. Defaults (the demo's `out/demo`) are left alone.
fn check_out(matches: &clap::ArgMatches) -> anyhow::Result<()> {
    let mut m = matches;
    while let Some((_, sub)) = m.subcommand() {
        m = sub;
    }
    let Ok(Some(values)) = m.try_get_raw("out") else { return Ok(()) };
    if !matches!(m.value_source("out"), Some(ValueSource::CommandLine | ValueSource::EnvVariable)) {
        return Ok(());
    }
    for v in values {
        let p = Path::new(v);
        if p.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir)) {
            continue;
        }
        let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) else { continue };
        if !dir.exists() {
            anyhow::bail!("--out {}: folder {} does not exist", p.display(), dir.display());
        }
        if !dir.is_dir() {
            anyhow::bail!("--out {}: {} is not a folder", p.display(), dir.display());
        }
    }
    Ok(())
}

/// The default panic hook, except for panics that zoo_core catches and turns into an error
/// (a third-party decoder's bug on a corrupt file): the user sees that error's one line only.
fn quiet_contained_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !zoo_core::error::panic_is_contained() {
            default(info);
        }
    }));
}

/// Help and version go to stdout with success; real usage errors get one line and exit 2.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
        || e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    {
        let _ = e.print();
        return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    // clap's message is the first line, plus indented lines (e.g. the missing arguments) when it
    // ends with ':'; usage and tips follow, which `--help` covers.
    let text = e.render().to_string();
    let mut lines = text.lines().skip_while(|l| l.trim().is_empty());
    let mut msg = lines.next().unwrap_or("bad arguments").trim_start_matches("error: ").to_string();
    if msg.ends_with(':') {
        let more: Vec<&str> = lines.take_while(|l| l.starts_with(' ')).map(str::trim).collect();
        msg = format!("{} {}", msg, more.join(", "));
    }
    eprintln!("error: {msg}{} (see `{} --help`)", usage_tips(&text), usage_command());
    ExitCode::from(2)
}

/// The (sub)command a usage error is about, e.g. `zoo gan sample`: the words of the command
/// line that name subcommands, in order.
fn usage_command() -> String {
    let mut cmd = Cli::command();
    let mut words = vec!["zoo".to_string()];
    for arg in std::env::args().skip(1) {
        let Some(sub) = cmd.find_subcommand(&arg).cloned() else { continue };
        words.push(sub.get_name().to_string());
        cmd = sub;
    }
    words.join(" ")
}

/// clap's suggestions ("tip: a similar argument exists: '--num-samples'"), as "; did you mean ...".
fn usage_tips(rendered: &str) -> String {
    let similar: Vec<String> = rendered
        .lines()
        .filter_map(|l| l.trim().strip_prefix("tip: "))
        .filter_map(|t| t.split_once("exists: ").map(|(_, what)| what.trim().to_string()))
        .collect();
    if similar.is_empty() {
        String::new()
    } else {
        format!("; did you mean {}?", similar.join(" or "))
    }
}

/// One line: the error and its causes joined by ": ", libtorch's C++ backtraces cut off.
fn report(e: &anyhow::Error) -> ExitCode {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let msg = match cause.downcast_ref::<tch::TchError>() {
            Some(t) => zoo_core::error::short_torch_message(t),
            None => match cause.downcast_ref::<zoo_core::Error>() {
                Some(zoo_core::Error::Torch(t)) => zoo_core::error::short_torch_message(t),
                _ => cause.to_string(),
            },
        };
        let msg = msg.lines().next().unwrap_or("").trim().to_string();
        // thiserror's transparent and #[source] variants repeat their cause's text.
        if !msg.is_empty() && !parts.iter().any(|p| p.ends_with(&msg)) {
            parts.push(msg);
        }
    }
    eprintln!("error: {}", parts.join(": "));
    ExitCode::from(1)
}
