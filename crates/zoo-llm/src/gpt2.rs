//! GPT-2: Radford et al., "Language Models are Unsupervised Multitask Learners" (2019).
//!
//! Mirrors `transformers.models.gpt2.modeling_gpt2.GPT2LMHeadModel`: learned absolute positions,
//! pre-norm blocks with LayerNorm, fused QKV projection (`c_attn`), GELU ("gelu_new", the tanh
//! approximation) MLP, final LayerNorm, LM head tied to the token embedding.
//!
//! Loads every Hugging Face GPT-2 checkpoint (gpt2, gpt2-medium/-large/-xl, distilgpt2 and
//! fine-tunes) from `model.safetensors`, with or without the `transformer.` prefix: see
//! [`remap`]. Variables keep HF's names, so `transformer.h.0.attn.c_attn.weight` is a field
//! path here too.
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::Tensor;
use zoo_core::weights::Remap;

use crate::attention::{sdpa, AttnInputs, KvCache};
use crate::config::TokenIds;
use crate::{Error, Result};

/// HF's `Conv1D`: a linear layer whose weight is stored `(in, out)`, the transpose of
/// `nn.Linear`'s, as OpenAI's TensorFlow code had it. Keeping HF's layout (and computing
/// `x @ W + b`) lets checkpoints load as they are, with no transposing remap.
#[derive(Debug)]
pub struct Conv1D {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl Conv1D {
    fn new(p: nn::Path, n_in: i64, n_out: i64, std: f64) -> Self {
        let weight = p.var("weight", &[n_in, n_out], nn::Init::Randn { mean: 0.0, stdev: std });
        let bias = p.var("bias", &[n_out], nn::Init::Const(0.0));
        Conv1D { weight, bias }
    }

    /// Shapes: (..., in) -> (..., out). One addmm (the bias as the GEMM's starting value), as
    /// nn.Linear does, or zoo-core's matrix-vector kernel when decoding one token.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(zoo_core::ops::linear_t(x, &self.weight, Some(&self.bias))?)
    }
}

#[derive(Debug)]
pub struct Attention {
    pub c_attn: Conv1D,
    pub c_proj: Conv1D,
    n_head: i64,
    n_embd: i64,
    /// 1/sqrt(hs), further divided by (layer index + 1) with `scale_attn_by_inverse_layer_idx`.
    scale: f64,
    attn_pdrop: f64,
    resid_pdrop: f64,
}

impl Attention {
    fn new(p: nn::Path, cfg: &Config, layer: usize) -> Self {
        let c = cfg.n_embd;
        let hs = (c / cfg.n_head) as f64;
        let mut scale = if cfg.scale_attn_weights { 1.0 / hs.sqrt() } else { 1.0 };
        if cfg.scale_attn_by_inverse_layer_idx {
            scale /= (layer + 1) as f64;
        }
        // GPT-2's scaled init of the projections into the residual stream: std / sqrt(2 n_layer).
        let proj_std = cfg.initializer_range / (2.0 * cfg.n_layer as f64).sqrt();
        Attention {
            c_attn: Conv1D::new(&p / "c_attn", c, 3 * c, cfg.initializer_range),
            c_proj: Conv1D::new(&p / "c_proj", c, c, proj_std),
            n_head: cfg.n_head,
            n_embd: c,
            scale,
            attn_pdrop: cfg.attn_pdrop,
            resid_pdrop: cfg.resid_pdrop,
        }
    }

    /// Shapes: (B, T, C) -> (B, T, C)
    fn forward(
        &self,
        x: &Tensor,
        inputs: &AttnInputs,
        cache: Option<(&mut KvCache, usize)>,
        train: bool,
    ) -> Result<Tensor> {
        let (b, t) = (x.size()[0], x.size()[1]);
        let hs = self.n_embd / self.n_head;
        let qkv = self.c_attn.forward(x)?.f_split(self.n_embd, 2)?;
        // (B, T, C) -> (B, nh, T, hs)
        let heads =
            |x: &Tensor| -> Result<Tensor> { Ok(x.f_view([b, t, self.n_head, hs])?.f_transpose(1, 2)?) };
        let (q, mut k, mut v) = (heads(&qkv[0])?, heads(&qkv[1])?, heads(&qkv[2])?);
        if let Some((cache, layer)) = cache {
            (k, v) = cache.append(layer, &k, &v)?;
        }
        let dropout = if train { self.attn_pdrop } else { 0.0 };
        let y = sdpa(&q, &k, &v, inputs.full.as_ref(), inputs.causal, dropout, Some(self.scale))?;
        let y = y.f_transpose(1, 2)?.f_reshape([b, t, self.n_embd])?;
        Ok(self.c_proj.forward(&y)?.f_dropout(self.resid_pdrop, train)?)
    }
}

#[derive(Debug)]
pub struct Mlp {
    pub c_fc: Conv1D,
    pub c_proj: Conv1D,
    act: Activation,
    resid_pdrop: f64,
}

impl Mlp {
    fn new(p: nn::Path, cfg: &Config) -> Result<Self> {
        let inner = cfg.n_inner.unwrap_or(4 * cfg.n_embd);
        let proj_std = cfg.initializer_range / (2.0 * cfg.n_layer as f64).sqrt();
        Ok(Mlp {
            c_fc: Conv1D::new(&p / "c_fc", cfg.n_embd, inner, cfg.initializer_range),
            c_proj: Conv1D::new(&p / "c_proj", inner, cfg.n_embd, proj_std),
            act: Activation::parse(&cfg.activation_function)?,
            resid_pdrop: cfg.resid_pdrop,
        })
    }

    /// Shapes: (B, T, C) -> (B, T, C)
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let h = self.act.apply(&self.c_fc.forward(x)?)?;
        Ok(self.c_proj.forward(&h)?.f_dropout(self.resid_pdrop, train)?)
    }
}

/// The MLP nonlinearities GPT-2 configs name (`activation_function`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// "gelu_new" / "gelu_pytorch_tanh": the tanh approximation GPT-2 was trained with.
    GeluTanh,
    Gelu,
    Relu,
    Silu,
}

impl Activation {
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "gelu" => Activation::Gelu,
            "relu" => Activation::Relu,
            "silu" | "swish" => Activation::Silu,
            other => {
                return Err(Error::Input(format!(
                "activation '{other}' is not supported: use gelu_new, gelu_pytorch_tanh, gelu, relu or silu"
            )))
            }
        })
    }

    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::GeluTanh => x.f_gelu("tanh")?,
            Activation::Gelu => x.f_gelu("none")?,
            Activation::Relu => x.f_relu()?,
            Activation::Silu => x.f_silu()?,
        })
    }
}

#[derive(Debug)]
pub struct Block {
    pub ln_1: nn::LayerNorm,
    pub attn: Attention,
    pub ln_2: nn::LayerNorm,
    pub mlp: Mlp,
}

impl Block {
    fn new(p: nn::Path, cfg: &Config, layer: usize) -> Result<Self> {
        let ln = nn::LayerNormConfig { eps: cfg.layer_norm_epsilon, ..Default::default() };
        Ok(Block {
            ln_1: nn::layer_norm(&p / "ln_1", vec![cfg.n_embd], ln),
            attn: Attention::new(&p / "attn", cfg, layer),
            ln_2: nn::layer_norm(&p / "ln_2", vec![cfg.n_embd], ln),
            mlp: Mlp::new(&p / "mlp", cfg)?,
        })
    }

    /// Pre-norm residual block. Shapes: (B, T, C) -> (B, T, C)
    fn forward(
        &self,
        x: &Tensor,
        inputs: &AttnInputs,
        cache: Option<(&mut KvCache, usize)>,
        train: bool,
    ) -> Result<Tensor> {
        let x = x.f_add(&self.attn.forward(&self.ln_1.forward(x), inputs, cache, train)?)?;
        Ok(x.f_add(&self.mlp.forward(&self.ln_2.forward(&x), train)?)?)
    }
}

fn default_inner() -> Option<i64> {
    None
}
fn default_activation() -> String {
    "gelu_new".into()
}
fn default_eps() -> f64 {
    1e-5
}
fn default_pdrop() -> f64 {
    0.1
}
fn default_init_range() -> f64 {
    0.02
}
fn yes() -> bool {
    true
}

/// `config.json` of a GPT-2 checkpoint; field names are HF's keys. The defaults are
/// transformers' `GPT2Config` defaults, for keys the original OpenAI-era configs omit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub vocab_size: i64,
    /// Context length: the number of learned positions.
    pub n_positions: i64,
    pub n_embd: i64,
    pub n_layer: i64,
    pub n_head: i64,
    /// MLP width; `None` means 4 * n_embd.
    #[serde(default = "default_inner")]
    pub n_inner: Option<i64>,
    #[serde(default = "default_activation")]
    pub activation_function: String,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "default_pdrop")]
    pub resid_pdrop: f64,
    #[serde(default = "default_pdrop")]
    pub embd_pdrop: f64,
    #[serde(default = "default_pdrop")]
    pub attn_pdrop: f64,
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
    #[serde(default = "yes")]
    pub scale_attn_weights: bool,
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    #[serde(default = "yes")]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub bos_token_id: Option<TokenIds>,
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
}

impl Config {
    /// Keys a config must have (the rest have defaults).
    pub const REQUIRED: &'static [&'static str] =
        &["vocab_size", "n_positions", "n_embd", "n_layer", "n_head"];

    /// GPT-2 small (124M), OpenAI's released config.
    pub fn gpt2() -> Self {
        Config {
            vocab_size: 50257,
            n_positions: 1024,
            n_embd: 768,
            n_layer: 12,
            n_head: 12,
            n_inner: None,
            activation_function: default_activation(),
            layer_norm_epsilon: 1e-5,
            resid_pdrop: 0.1,
            embd_pdrop: 0.1,
            attn_pdrop: 0.1,
            initializer_range: 0.02,
            scale_attn_weights: true,
            scale_attn_by_inverse_layer_idx: false,
            tie_word_embeddings: true,
            bos_token_id: Some(TokenIds::One(50256)),
            eos_token_id: Some(TokenIds::One(50256)),
        }
    }

    /// A 2-layer, 32-wide GPT-2 for tests.
    pub fn tiny() -> Self {
        Config {
            vocab_size: 96,
            n_positions: 64,
            n_embd: 32,
            n_layer: 2,
            n_head: 4,
            resid_pdrop: 0.0,
            embd_pdrop: 0.0,
            attn_pdrop: 0.0,
            bos_token_id: None,
            eos_token_id: None,
            ..Self::gpt2()
        }
    }

    /// Sizes that fit together; checked before any variable is made.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (k, v) in [
            ("vocab_size", self.vocab_size),
            ("n_positions", self.n_positions),
            ("n_embd", self.n_embd),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_inner", self.n_inner.unwrap_or(1)),
        ] {
            if v <= 0 {
                return Err(format!("\"{k}\" must be positive, got {v}"));
            }
            crate::config::check_dim(k, v)?;
        }
        if self.n_embd % self.n_head != 0 {
            return Err(format!("n_embd {} is not a multiple of n_head {}", self.n_embd, self.n_head));
        }
        Activation::parse(&self.activation_function).map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// GPT-2 with its LM head (`GPT2LMHeadModel`).
#[derive(Debug)]
pub struct Gpt2 {
    pub wte: nn::Embedding,
    pub wpe: nn::Embedding,
    pub h: Vec<Block>,
    pub ln_f: nn::LayerNorm,
    /// `None` when tied to `wte` (every released GPT-2).
    pub lm_head: Option<Tensor>,
    pub cfg: Config,
}

impl Gpt2 {
    /// Creates the variables under `p` (`transformer.*`, and `lm_head.weight` when untied).
    pub fn new(p: nn::Path, cfg: &Config) -> Result<Self> {
        cfg.validate().map_err(Error::Input)?;
        let t = &p / "transformer";
        let emb = nn::EmbeddingConfig {
            ws_init: nn::Init::Randn { mean: 0.0, stdev: cfg.initializer_range },
            ..Default::default()
        };
        let wte = nn::embedding(&t / "wte", cfg.vocab_size, cfg.n_embd, emb);
        let wpe = nn::embedding(&t / "wpe", cfg.n_positions, cfg.n_embd, emb);
        let h = (0..cfg.n_layer as usize)
            .map(|i| Block::new(&t / "h" / i, cfg, i))
            .collect::<Result<Vec<_>>>()?;
        let ln = nn::LayerNormConfig { eps: cfg.layer_norm_epsilon, ..Default::default() };
        let ln_f = nn::layer_norm(&t / "ln_f", vec![cfg.n_embd], ln);
        let lm_head = (!cfg.tie_word_embeddings).then(|| {
            (&p / "lm_head").var(
                "weight",
                &[cfg.vocab_size, cfg.n_embd],
                nn::Init::Randn { mean: 0.0, stdev: cfg.initializer_range },
            )
        });
        Ok(Gpt2 { wte, wpe, h, ln_f, lm_head, cfg: cfg.clone() })
    }

    /// The final hidden states (after `ln_f`). `attention_mask` is (B, past + T) with 0 at
    /// padding; `cache` holds the past and receives this call's keys and values.
    /// Shapes: (B, T) -> (B, T, n_embd)
    pub fn forward_hidden(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        mut cache: Option<&mut KvCache>,
        train: bool,
    ) -> Result<Tensor> {
        let past = cache.as_ref().map_or(0, |c| c.seq_len());
        let inputs = AttnInputs::new(input_ids, attention_mask, past, None)?;
        let end = past + input_ids.size()[1];
        if end > self.cfg.n_positions {
            return Err(Error::Input(format!(
                "{end} positions exceed GPT-2's context of {} (n_positions)",
                self.cfg.n_positions
            )));
        }
        // 1. token + learned position embeddings
        let tok = Tensor::f_embedding(&self.wte.ws, input_ids, -1, false, false)?;
        let pos = Tensor::f_embedding(&self.wpe.ws, &inputs.positions, -1, false, false)?;
        let mut x = tok.f_add(&pos)?.f_dropout(self.cfg.embd_pdrop, train)?;
        // 2. the blocks
        for (i, block) in self.h.iter().enumerate() {
            x = block.forward(&x, &inputs, cache.as_deref_mut().map(|c| (c, i)), train)?;
        }
        // 3. final norm
        Ok(self.ln_f.forward(&x))
    }

    /// Shapes: (B, T, n_embd) -> (B, T, vocab)
    pub fn lm_head(&self, hidden: &Tensor) -> Result<Tensor> {
        let w = self.lm_head.as_ref().unwrap_or(&self.wte.ws);
        Ok(zoo_core::ops::linear(hidden, w, None)?)
    }

    /// Logits. Shapes: (B, T) -> (B, T, vocab)
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        cache: Option<&mut KvCache>,
        train: bool,
    ) -> Result<Tensor> {
        self.lm_head(&self.forward_hidden(input_ids, attention_mask, cache, train)?)
    }
}

/// Checkpoint keys to variable names, for both layouts of HF GPT-2 files:
/// - saved from `GPT2LMHeadModel` (what `save_pretrained` writes today): `transformer.h.0...`,
///   plus `lm_head.weight` in files of untied models;
/// - saved from the bare `GPT2Model` (the `gpt2` files on the Hub): `h.0...`, `wte.weight`.
///
/// Skipped: `attn.bias` and `attn.masked_bias`, the causal-mask buffers older transformers
/// saved (we build masks per call); and `lm_head.weight` of a tied model, which some files
/// carry as a copy of `wte.weight`.
pub fn remap(tied: bool) -> impl Fn(&str) -> Remap {
    move |key: &str| {
        if key.ends_with(".attn.bias") || key.ends_with(".attn.masked_bias") {
            return Remap::Skip;
        }
        if key == "lm_head.weight" {
            return if tied { Remap::Skip } else { Remap::To(key.to_string()) };
        }
        match key.strip_prefix("transformer.") {
            Some(_) => Remap::To(key.to_string()),
            None => Remap::To(format!("transformer.{key}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn::VarStore, Device, Kind};

    fn model(cfg: &Config) -> (VarStore, Gpt2) {
        let vs = VarStore::new(Device::Cpu);
        let m = Gpt2::new(vs.root(), cfg).unwrap();
        (vs, m)
    }

    #[test]
    fn shapes_and_names() {
        let cfg = Config::tiny();
        let (vs, m) = model(&cfg);
        let ids = Tensor::from_slice(&[1i64, 2, 3, 4, 5, 6]).view([2, 3]);
        let logits = m.forward(&ids, None, None, false).unwrap();
        assert_eq!(logits.size(), [2, 3, 96]);
        let vars = vs.variables();
        assert_eq!(vars["transformer.h.1.attn.c_attn.weight"].size(), [32, 96]);
        assert_eq!(vars["transformer.h.0.mlp.c_fc.weight"].size(), [32, 128]);
        assert!(!vars.contains_key("lm_head.weight"), "tied head has no variable");
        // 2 blocks of 12 C^2 + 13 C, embeddings, final norm.
        let c = 32;
        let want = 2 * (12 * c * c + 13 * c) + 96 * c + 64 * c + 2 * c;
        assert_eq!(vars.values().map(|t| t.numel() as i64).sum::<i64>(), want);
    }

    #[test]
    fn cached_decoding_equals_full_forward() {
        let (_vs, m) = model(&Config::tiny());
        let ids = Tensor::from_slice(&[5i64, 9, 2, 7, 1, 3, 3, 8]).view([1, 8]);
        let full = m.forward(&ids, None, None, false).unwrap();
        let mut cache = KvCache::new(2);
        let mut parts = vec![m.forward(&ids.narrow(1, 0, 5), None, Some(&mut cache), false).unwrap()];
        for i in 5..8 {
            parts.push(m.forward(&ids.narrow(1, i, 1), None, Some(&mut cache), false).unwrap());
        }
        let stepped = Tensor::cat(&parts, 1);
        let diff = (full - stepped).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "max diff {diff}");
    }

    #[test]
    fn too_long_and_bad_ids_are_errors() {
        let (_vs, m) = model(&Config::tiny());
        let long = Tensor::zeros([1, 65], (Kind::Int64, Device::Cpu));
        let e = m.forward(&long, None, None, false).unwrap_err().to_string();
        assert!(e.contains("context of 64"), "{e}");
        let bad = Tensor::from_slice(&[96i64]).view([1, 1]);
        assert!(m.forward(&bad, None, None, false).is_err());
    }

    #[test]
    fn remap_handles_both_layouts() {
        let r = remap(true);
        assert_eq!(r("h.0.ln_1.weight"), Remap::To("transformer.h.0.ln_1.weight".into()));
        assert_eq!(r("transformer.wte.weight"), Remap::To("transformer.wte.weight".into()));
        assert_eq!(r("h.3.attn.bias"), Remap::Skip);
        assert_eq!(r("transformer.h.3.attn.masked_bias"), Remap::Skip);
        assert_eq!(r("h.3.attn.c_attn.bias"), Remap::To("transformer.h.3.attn.c_attn.bias".into()));
        assert_eq!(r("lm_head.weight"), Remap::Skip);
        assert_eq!(remap(false)("lm_head.weight"), Remap::To("lm_head.weight".into()));
    }

    #[test]
    fn bad_configs_are_errors() {
        let cfg = Config { n_head: 5, ..Config::tiny() };
        let vs = VarStore::new(Device::Cpu);
        assert!(Gpt2::new(vs.root(), &cfg).unwrap_err().to_string().contains("multiple of n_head"));
        let cfg = Config { activation_function: "swiglu9".into(), ..Config::tiny() };
        assert!(cfg.validate().unwrap_err().contains("swiglu9"));
    }
}
