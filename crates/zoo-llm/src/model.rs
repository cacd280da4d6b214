//! One type for every decoder zoo runs, and loading one from a model folder or a preset.
use std::path::{Path, PathBuf};

use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};
use zoo_core::weights::{self, Remap};

use crate::attention::KvCache;
use crate::config::ModelConfig;
use crate::tokenizer::Tokenizer;
use crate::{gpt2, llama, Error, Result};

/// A decoder-only language model.
// One value per loaded model: boxing the larger variant would save bytes no one misses.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Model {
    Gpt2(gpt2::Gpt2),
    Llama(llama::Llama),
}

impl Model {
    /// Creates the variables of `cfg`'s model under `p` (randomly initialised).
    pub fn new(p: tch::nn::Path, cfg: &ModelConfig) -> Result<Self> {
        Ok(match cfg {
            ModelConfig::Gpt2(c) => Model::Gpt2(gpt2::Gpt2::new(p, c)?),
            ModelConfig::Llama(c) => Model::Llama(llama::Llama::new(p, c)?),
        })
    }

    /// Logits for every position. `attention_mask` (B, past + T) has 0 at (left) padding;
    /// `cache` holds earlier positions and takes this call's keys and values; `train` turns
    /// dropout on. Shapes: (B, T) -> (B, T, vocab)
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        cache: Option<&mut KvCache>,
        train: bool,
    ) -> Result<Tensor> {
        self.lm_head(&self.forward_hidden(input_ids, attention_mask, cache, train)?)
    }

    /// Final hidden states, for heads other than the LM head. Shapes: (B, T) -> (B, T, C)
    pub fn forward_hidden(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        cache: Option<&mut KvCache>,
        train: bool,
    ) -> Result<Tensor> {
        match self {
            Model::Gpt2(m) => m.forward_hidden(input_ids, attention_mask, cache, train),
            Model::Llama(m) => m.forward_hidden(input_ids, attention_mask, cache, train),
        }
    }

    /// Shapes: (B, T, C) -> (B, T, vocab)
    pub fn lm_head(&self, hidden: &Tensor) -> Result<Tensor> {
        match self {
            Model::Gpt2(m) => m.lm_head(hidden),
            Model::Llama(m) => m.lm_head(hidden),
        }
    }

    /// An empty KV cache for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(match self {
            Model::Gpt2(m) => m.h.len(),
            Model::Llama(m) => m.layers.len(),
        })
    }

    /// The checkpoint-key remap of this model's family.
    pub fn remap(&self) -> Box<dyn Fn(&str) -> Remap> {
        match self {
            Model::Gpt2(m) => Box::new(gpt2::remap(m.cfg.tie_word_embeddings)),
            Model::Llama(m) => Box::new(llama::remap(m.cfg.tie_word_embeddings)),
        }
    }
}

/// Where a model's weights came from.
#[derive(Debug, Clone, PartialEq)]
pub enum Weights {
    /// Loaded from this folder's safetensors.
    Checkpoint(PathBuf),
    /// Random initialisation from the preset of this name (no training).
    Random { preset: String },
}

/// A model ready to run: its variables, config, tokenizer and provenance.
pub struct LoadedModel {
    pub vs: VarStore,
    pub model: Model,
    pub config: ModelConfig,
    /// `None` for a folder without `tokenizer.json`.
    pub tokenizer: Option<Tokenizer>,
    pub weights: Weights,
    /// The model folder (with `tokenizer_config.json` etc.), when loaded from one.
    pub dir: Option<PathBuf>,
}

impl LoadedModel {
    /// A Hugging Face-style model folder: `config.json`, `model.safetensors` (or a sharded
    /// index) and optionally `tokenizer.json`. Weights are loaded strictly into a model of
    /// dtype `kind` on `device`.
    pub fn from_dir(dir: &Path, device: Device, kind: Kind) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        if !cfg_path.is_file() {
            return Err(Error::Input(format!(
                "{}: no config.json; a model folder holds config.json and model.safetensors",
                dir.display()
            )));
        }
        let config = ModelConfig::from_file(&cfg_path)?;
        let vs = VarStore::new(device);
        let model = Model::new(vs.root(), &config)?;
        let mut vs = vs;
        vs.set_kind(kind);
        weights::load_into(&vs, dir, &model.remap())?;
        let tokenizer = Tokenizer::from_dir(dir)?;
        Ok(LoadedModel {
            vs,
            model,
            config,
            tokenizer,
            weights: Weights::Checkpoint(dir.to_path_buf()),
            dir: Some(dir.to_path_buf()),
        })
    }

    /// A preset config with random weights (drawn from libtorch's generator: seed first).
    /// The tokenizer is raw bytes.
    pub fn from_preset(name: &str, path: &Path, device: Device, kind: Kind) -> Result<Self> {
        let config = ModelConfig::from_file(path)?;
        let mut vs = VarStore::new(device);
        let model = Model::new(vs.root(), &config)?;
        vs.set_kind(kind);
        Ok(LoadedModel {
            vs,
            model,
            config,
            tokenizer: Some(Tokenizer::Bytes),
            weights: Weights::Random { preset: name.to_string() },
            dir: None,
        })
    }

    /// `spec` is a model folder, else the name of a preset in `models/llm/` (random weights),
    /// else the name of a trained model shipped there (`models/llm/NAME/`).
    pub fn open(spec: &str, device: Device, kind: Kind) -> Result<Self> {
        let p = Path::new(spec);
        if zoo_core::presets::names_folder(spec, "llm") {
            return Self::from_dir(p, device, kind);
        }
        match (zoo_core::presets::find_preset("llm", spec), zoo_core::presets::shipped_model("llm", spec)) {
            (Ok(preset), _) => Self::from_preset(&preset.name, &preset.path, device, kind),
            (Err(_), Some(dir)) => Self::from_dir(&dir, device, kind),
            (Err(zoo_core::Error::Config(msg)), None) => Err(Error::Input(format!(
                "'{spec}' is not a model folder, and {}",
                msg.trim_start_matches("unknown llm preset ").replacen(':', " is no preset:", 1)
            ))),
            (Err(e), None) => Err(e.into()),
        }
    }

    /// The tokenizer, or an error that says the folder lacks one.
    pub fn tokenizer(&self) -> Result<&Tokenizer> {
        self.tokenizer.as_ref().ok_or_else(|| {
            Error::Input(format!(
                "{}: no tokenizer.json; text in and out needs one",
                self.dir.as_deref().unwrap_or(Path::new(".")).display()
            ))
        })
    }

    /// Number of parameters (a tied head counted once).
    pub fn num_params(&self) -> i64 {
        self.vs.variables().values().map(|t| t.numel() as i64).sum()
    }
}
