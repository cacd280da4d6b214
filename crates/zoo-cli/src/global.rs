//! Flags every command takes: `--device --dtype --seed --threads -q -v`.
use anyhow::Result;
use clap::Args;
use zoo_core::device::{DType, DeviceSpec};
use zoo_core::train::trainer::{JsonLines, ProgressBar, Reporter, Silent};

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Where tensors live: auto (CUDA if present, else CPU), cpu, cuda, cuda:N or mps.
    #[arg(long, global = true, default_value = "auto", value_parser = parse_device)]
    pub device: DeviceSpec,
    /// Floating-point type of weights and activations: f32, f16 or bf16.
    #[arg(long, global = true, default_value = "f32", value_parser = parse_dtype)]
    pub dtype: DType,
    /// Seed for every random draw (libtorch's generator and the data order); same seed, same output.
    #[arg(long, global = true, default_value_t = 0)]
    pub seed: u64,
    /// CPU threads for libtorch's operators, at most one per core (0: auto: one per core;
    /// token-by-token decoding in `zoo llm` takes the cores the load average leaves idle).
    #[arg(long, global = true, default_value_t = 0)]
    pub threads: usize,
    /// Print only results and errors: no progress bars or notes.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Print more detail.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// While `Some`, every note is also kept here (`zoo demo` puts them in its report).
    #[arg(skip)]
    recorded: std::sync::Arc<std::sync::Mutex<Option<Vec<String>>>>,
}

fn parse_device(s: &str) -> Result<DeviceSpec, String> {
    s.parse().map_err(|e: zoo_core::Error| e.to_string())
}

fn parse_dtype(s: &str) -> Result<DType, String> {
    s.parse().map_err(|e: zoo_core::Error| e.to_string())
}

impl Global {
    /// The training progress the flags ask for: JSON lines on stdout (a command's --json),
    /// nothing (-q), or a progress bar.
    pub fn reporter(&self, json: bool) -> Box<dyn Reporter> {
        if json {
            Box::new(JsonLines)
        } else if self.quiet {
            Box::new(Silent)
        } else {
            Box::new(ProgressBar::new())
        }
    }

    /// Applies the settings that are process-wide (threads, malloc's thresholds).
    pub fn apply(&self) -> Result<()> {
        zoo_core::ops::tune_allocator();
        // More threads than cores only make libgomp's threads wait for each other (a 1-second
        // sampling run took over a minute at --threads 10000).
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = if self.threads > cores {
            self.note(format!(
                "note: --threads {}: this machine has {cores} cores; using {cores}",
                self.threads
            ));
            cores
        } else {
            self.threads
        };
        zoo_core::device::set_threads(threads)?;
        Ok(())
    }

    /// The device, checked: asking for CUDA where there is none is an error here.
    pub fn device(&self) -> Result<tch::Device> {
        Ok(self.device.resolve()?)
    }

    /// Refuses --dtype other than f32 for a command that trains (`what`, e.g. "zoo vae
    /// train"): training runs in f32 whatever the flag says, so saying nothing would mislead.
    pub fn f32_training(&self, what: &str) -> Result<()> {
        if self.dtype.kind() != tch::Kind::Float {
            anyhow::bail!(
                "--dtype: {what} trains in f32; drop --dtype (models are sampled in f16/bf16 with --dtype)"
            );
        }
        Ok(())
    }

    /// Prints a note to stderr unless --quiet.
    pub fn note(&self, msg: impl std::fmt::Display) {
        if let Ok(mut rec) = self.recorded.lock() {
            if let Some(notes) = rec.as_mut() {
                notes.push(msg.to_string());
            }
        }
        if !self.quiet {
            eprintln!("{msg}");
        }
    }

    /// A progress bar of `total` `unit`s for a long command (on stderr, drawn only on a
    /// terminal); `None` with -q. Feed it with [`tick`].
    pub fn progress(&self, total: u64, unit: &str) -> Option<indicatif::ProgressBar> {
        if self.quiet {
            return None;
        }
        let bar = indicatif::ProgressBar::new(total);
        let template = format!("{{bar:30.cyan/blue}} {{pos}}/{{len}} {unit} ETA {{eta}}");
        bar.set_style(
            indicatif::ProgressStyle::with_template(&template)
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(bar)
    }

    /// Starts keeping the notes printed from now on (printing goes on as before).
    pub fn record_notes(&self) {
        if let Ok(mut rec) = self.recorded.lock() {
            *rec = Some(Vec::new());
        }
    }

    /// The notes kept since [`Global::record_notes`]; recording goes on, from empty.
    pub fn take_notes(&self) -> Vec<String> {
        self.recorded.lock().ok().and_then(|mut rec| rec.as_mut().map(std::mem::take)).unwrap_or_default()
    }
}

/// A `--model` folder of `family`: the path as given when it exists (or looks like a path),
/// else the shipped model of that name (`models/<family>/NAME/`), else the path as given, for
/// the loader to report. Used as a clap value parser through each family's `model_arg`.
pub fn model_folder(family: &str, s: &str) -> std::result::Result<std::path::PathBuf, String> {
    let p = std::path::PathBuf::from(s);
    if p.exists() {
        return Ok(p);
    }
    Ok(zoo_core::presets::shipped_model(family, s).unwrap_or(p))
}

/// Moves a [`Global::progress`] bar to `done` of `total`, and clears it at the end.
pub fn tick(bar: &Option<indicatif::ProgressBar>, done: u64, total: u64) {
    if let Some(b) = bar {
        b.set_length(total);
        b.set_position(done);
        if done >= total {
            b.finish_and_clear();
        }
    }
}

/// The arguments of `zoo <family> arch`: a model folder (or a shipped model's name) or a
/// preset, printed as a table or as JSON.
#[derive(Args, Debug)]
pub struct ArchArgs {
    /// A model folder (or a run folder holding model/, or a shipped model's name).
    #[arg(long, required_unless_present = "preset", conflicts_with = "preset")]
    pub model: Option<String>,
    /// A preset of models/<family>/ (random weights: only the architecture is needed).
    #[arg(long)]
    pub preset: Option<String>,
    /// Prints one JSON object.
    #[arg(long)]
    pub json: bool,
}

impl ArchArgs {
    /// --model as a folder of `family` (see [`model_folder`]).
    pub fn model_dir(&self, family: &str) -> Option<std::path::PathBuf> {
        self.model.as_deref().map(|s| model_folder(family, s).unwrap_or_else(|_| s.into()))
    }
}
