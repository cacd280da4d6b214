//! Llama: Touvron et al., "LLaMA: Open and Efficient Foundation Language Models" (2023) and
//! "Llama 2" (2023); Grattafiori et al., "The Llama 3 Herd of Models" (2024).
//!
//! Mirrors `transformers.models.llama.modeling_llama.LlamaForCausalLM`: RMSNorm pre-norm
//! blocks, rotary position embeddings (RoPE, Su et al. 2021) with `rope_theta` and the
//! `linear` and `llama3` frequency scalings, SwiGLU MLP, grouped-query attention
//! (`num_key_value_heads`), optional biases, tied or separate LM head. The same model runs
//! the close relatives that differ only in config: Mistral (`sliding_window`, Jiang et al.
//! 2023, as `MistralForCausalLM`) and Qwen2 (q/k/v biases, as `Qwen2ForCausalLM`).
//!
//! Loads HF checkpoints of Llama 2/3, TinyLlama, SmolLM, Qwen2 and Mistral from
//! `model.safetensors` or sharded `model.safetensors.index.json`; variable names are HF's
//! (`model.layers.0.self_attn.q_proj.weight`). Config files of both transformers 4
//! (`rope_theta`, `rope_scaling`) and 5 (`rope_parameters`) are read.
use serde::{Deserialize, Serialize};
use tch::nn;
use tch::{Kind, Tensor};
use zoo_core::weights::Remap;

use crate::attention::{sdpa, AttnInputs, KvCache};
use crate::config::TokenIds;
use crate::gpt2::Activation;
use crate::{Error, Result};

/// Root-mean-square norm (Zhang & Sennrich 2019), computed in f32 as transformers does, so
/// f16/bf16 models keep the precision of the reference.
#[derive(Debug)]
pub struct RmsNorm {
    pub weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn new(p: nn::Path, dim: i64, eps: f64) -> Self {
        RmsNorm { weight: p.var("weight", &[dim], nn::Init::Const(1.0)), eps }
    }

    /// Shapes: (..., C) -> (..., C)
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let kind = x.kind();
        let x = x.f_to_kind(Kind::Float)?;
        let var = x.f_pow_tensor_scalar(2)?.f_mean_dim(-1, true, Kind::Float)?;
        let x = x.f_mul(&var.f_add_scalar(self.eps)?.f_rsqrt()?)?;
        Ok(self.weight.f_mul(&x.f_to_kind(kind)?)?)
    }
}

/// RoPE frequencies and their application.
#[derive(Debug)]
pub struct Rotary {
    /// (head_dim / 2,) f32 inverse frequencies, after any scaling.
    inv_freq: Tensor,
}

impl Rotary {
    fn new(cfg: &Config, device: tch::Device) -> Result<Self> {
        let rope = cfg.rope()?;
        let dim = cfg.head_dim();
        let exps = Tensor::f_arange_start_step(0, dim, 2, (Kind::Float, device))?.f_div_scalar(dim as f64)?;
        // 1 / theta^(2i/d)
        let mut inv_freq = Tensor::f_pow_scalar(rope.theta, &exps)?.f_reciprocal()?;
        match rope.scaling {
            RopeKind::Default => {}
            RopeKind::Linear { factor } => inv_freq = inv_freq.f_div_scalar(factor)?,
            RopeKind::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                // transformers' `_compute_llama3_parameters`: long wavelengths are slowed by
                // `factor`, short ones kept, the band between interpolated smoothly.
                let old = original_max_position_embeddings as f64;
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                let wavelen = inv_freq.f_reciprocal()?.f_mul_scalar(2.0 * std::f64::consts::PI)?;
                let scaled = inv_freq.f_div_scalar(factor)?;
                let llama = scaled.f_where_self(&wavelen.f_gt(low_wavelen)?, &inv_freq)?;
                let smooth = wavelen
                    .f_reciprocal()?
                    .f_mul_scalar(old)?
                    .f_sub_scalar(low_freq_factor)?
                    .f_div_scalar(high_freq_factor - low_freq_factor)?;
                let smoothed = smooth
                    .f_neg()?
                    .f_add_scalar(1.0)?
                    .f_mul(&llama.f_div_scalar(factor)?)?
                    .f_add(&smooth.f_mul(&llama)?)?;
                let medium = wavelen.f_ge(high_wavelen)?.f_logical_and(&wavelen.f_le(low_wavelen)?)?;
                inv_freq = smoothed.f_where_self(&medium, &llama)?;
            }
        }
        Ok(Rotary { inv_freq })
    }

    /// cos and sin for `positions` (B, T), each (B, 1, T, head_dim) in `kind`.
    fn cos_sin(&self, positions: &Tensor, kind: Kind) -> Result<(Tensor, Tensor)> {
        let freqs = positions.f_to_kind(Kind::Float)?.f_unsqueeze(-1)?.f_mul(&self.inv_freq)?;
        let emb = Tensor::f_cat(&[&freqs, &freqs], -1)?.f_unsqueeze(1)?;
        Ok((emb.f_cos()?.f_to_kind(kind)?, emb.f_sin()?.f_to_kind(kind)?))
    }
}

/// x * cos + rotate_half(x) * sin, with rotate_half(x1, x2) = (-x2, x1) over the halves of the
/// head dimension (HF's layout; Meta's original interleaves pairs, and HF's conversion script
/// permutes q/k weights to match this one).
fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let half = x.size()[3] / 2;
    let x1 = x.f_narrow(3, 0, half)?;
    let x2 = x.f_narrow(3, half, half)?;
    let rotated = Tensor::f_cat(&[&x2.f_neg()?, &x1], -1)?;
    Ok(x.f_mul(cos)?.f_add(&rotated.f_mul(sin)?)?)
}

#[derive(Debug)]
pub struct Attention {
    pub q_proj: nn::Linear,
    pub k_proj: nn::Linear,
    pub v_proj: nn::Linear,
    pub o_proj: nn::Linear,
    n_head: i64,
    n_kv: i64,
    head_dim: i64,
    dropout: f64,
}

fn linear(p: nn::Path, n_in: i64, n_out: i64, bias: bool, std: f64) -> nn::Linear {
    let c = nn::LinearConfig {
        ws_init: nn::Init::Randn { mean: 0.0, stdev: std },
        bs_init: Some(nn::Init::Const(0.0)),
        bias,
    };
    nn::linear(p, n_in, n_out, c)
}

/// A linear layer's forward through zoo-core's `ops::linear` (its matrix-vector kernel when
/// decoding one token). Shapes: (..., n_in) -> (..., n_out).
fn lin(l: &nn::Linear, x: &Tensor) -> Result<Tensor> {
    Ok(zoo_core::ops::linear(x, &l.ws, l.bs.as_ref())?)
}

impl Attention {
    fn new(p: nn::Path, cfg: &Config) -> Self {
        let (c, hd, std) = (cfg.hidden_size, cfg.head_dim(), cfg.initializer_range);
        let (nh, nkv) = (cfg.num_attention_heads, cfg.kv_heads());
        let qkv_bias = cfg.qkv_bias();
        Attention {
            q_proj: linear(&p / "q_proj", c, nh * hd, qkv_bias, std),
            k_proj: linear(&p / "k_proj", c, nkv * hd, qkv_bias, std),
            v_proj: linear(&p / "v_proj", c, nkv * hd, qkv_bias, std),
            o_proj: linear(&p / "o_proj", nh * hd, c, cfg.o_bias(), std),
            n_head: nh,
            n_kv: nkv,
            head_dim: hd,
            dropout: cfg.attention_dropout,
        }
    }

    /// Shapes: (B, T, C) -> (B, T, C); `rope` is (cos, sin), each (B, 1, T, hd).
    fn forward(
        &self,
        x: &Tensor,
        rope: &(Tensor, Tensor),
        mask: (Option<&Tensor>, bool),
        cache: Option<(&mut KvCache, usize)>,
        train: bool,
    ) -> Result<Tensor> {
        let (b, t) = (x.size()[0], x.size()[1]);
        let heads = |y: Tensor, n: i64| -> Result<Tensor> {
            Ok(y.f_view([b, t, n, self.head_dim])?.f_transpose(1, 2)?) // (B, n, T, hd)
        };
        let q = heads(lin(&self.q_proj, x)?, self.n_head)?;
        let k = heads(lin(&self.k_proj, x)?, self.n_kv)?;
        let mut v = heads(lin(&self.v_proj, x)?, self.n_kv)?;
        let q = apply_rope(&q, &rope.0, &rope.1)?;
        let mut k = apply_rope(&k, &rope.0, &rope.1)?;
        if let Some((cache, layer)) = cache {
            (k, v) = cache.append(layer, &k, &v)?;
        }
        let dropout = if train { self.dropout } else { 0.0 };
        let y = sdpa(&q, &k, &v, mask.0, mask.1, dropout, None)?; // (B, nh, T, hd)
        let y = y.f_transpose(1, 2)?.f_reshape([b, t, self.n_head * self.head_dim])?;
        lin(&self.o_proj, &y)
    }
}

/// SwiGLU (Shazeer 2020): down(act(gate(x)) * up(x)).
#[derive(Debug)]
pub struct Mlp {
    pub gate_proj: nn::Linear,
    pub up_proj: nn::Linear,
    pub down_proj: nn::Linear,
    act: Activation,
}

impl Mlp {
    fn new(p: nn::Path, cfg: &Config) -> Result<Self> {
        let (c, i, std) = (cfg.hidden_size, cfg.intermediate_size, cfg.initializer_range);
        Ok(Mlp {
            gate_proj: linear(&p / "gate_proj", c, i, cfg.mlp_bias, std),
            up_proj: linear(&p / "up_proj", c, i, cfg.mlp_bias, std),
            down_proj: linear(&p / "down_proj", i, c, cfg.mlp_bias, std),
            act: Activation::parse(&cfg.hidden_act)?,
        })
    }

    /// Shapes: (B, T, C) -> (B, T, C)
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let g = self.act.apply(&lin(&self.gate_proj, x)?)?;
        lin(&self.down_proj, &g.f_mul(&lin(&self.up_proj, x)?)?)
    }
}

#[derive(Debug)]
pub struct DecoderLayer {
    pub input_layernorm: RmsNorm,
    pub self_attn: Attention,
    pub post_attention_layernorm: RmsNorm,
    pub mlp: Mlp,
    /// Whether this layer attends through the sliding window (Mistral, some Qwen2 layers).
    sliding: bool,
}

impl DecoderLayer {
    fn new(p: nn::Path, cfg: &Config, layer: usize) -> Result<Self> {
        let eps = cfg.rms_norm_eps;
        Ok(DecoderLayer {
            input_layernorm: RmsNorm::new(&p / "input_layernorm", cfg.hidden_size, eps),
            self_attn: Attention::new(&p / "self_attn", cfg),
            post_attention_layernorm: RmsNorm::new(&p / "post_attention_layernorm", cfg.hidden_size, eps),
            mlp: Mlp::new(&p / "mlp", cfg)?,
            sliding: cfg.layer_is_sliding(layer),
        })
    }

    /// Shapes: (B, T, C) -> (B, T, C)
    fn forward(
        &self,
        x: &Tensor,
        rope: &(Tensor, Tensor),
        inputs: &AttnInputs,
        cache: Option<(&mut KvCache, usize)>,
        train: bool,
    ) -> Result<Tensor> {
        let mask = if self.sliding {
            (inputs.sliding.as_ref(), inputs.sliding_causal)
        } else {
            (inputs.full.as_ref(), inputs.causal)
        };
        let h = self.self_attn.forward(&self.input_layernorm.forward(x)?, rope, mask, cache, train)?;
        let x = x.f_add(&h)?;
        Ok(x.f_add(&self.mlp.forward(&self.post_attention_layernorm.forward(&x)?)?)?)
    }
}

/// `rope_scaling` / `rope_parameters` of a config.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RopeScaling {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_type: Option<String>,
    /// The key's name before transformers 4.45; some files carry both.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_freq_factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high_freq_factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_max_position_embeddings: Option<i64>,
}

/// The resolved RoPE settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Rope {
    pub theta: f64,
    pub scaling: RopeKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RopeKind {
    Default,
    Linear { factor: f64 },
    Llama3 { factor: f64, low_freq_factor: f64, high_freq_factor: f64, original_max_position_embeddings: i64 },
}

fn default_model_type() -> String {
    "llama".into()
}
fn default_act() -> String {
    "silu".into()
}
fn default_max_pos() -> i64 {
    2048
}
fn default_eps() -> f64 {
    1e-6
}
fn default_init_range() -> f64 {
    0.02
}

/// `config.json` of a Llama, Mistral or Qwen2 checkpoint; field names are HF's keys.
/// Defaults are those of transformers' config classes, for keys older files omit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// "llama", "mistral" or "qwen2": decides the bias layout and sliding-window rules.
    #[serde(default = "default_model_type")]
    pub model_type: String,
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    /// Key/value heads for grouped-query attention; absent (Llama 1/2-7B) means one per head.
    #[serde(default)]
    pub num_key_value_heads: Option<i64>,
    /// Absent means hidden_size / num_attention_heads.
    #[serde(default)]
    pub head_dim: Option<i64>,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: i64,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// transformers 4 files; 5 moves it into `rope_parameters`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<RopeScaling>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_parameters: Option<RopeScaling>,
    /// Biases on q, k, v and o (Llama); Qwen2 has q/k/v biases whatever this says.
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default)]
    pub attention_dropout: f64,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub sliding_window: Option<i64>,
    /// Qwen2: sliding window on layers from `max_window_layers` on, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_sliding_window: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_window_layers: Option<i64>,
    /// transformers 5: "full_attention" or "sliding_attention" for each layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_types: Option<Vec<String>>,
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
    #[serde(default)]
    pub bos_token_id: Option<TokenIds>,
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
}

impl Config {
    /// Keys a config must have (the rest have defaults).
    pub const REQUIRED: &'static [&'static str] =
        &["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"];

    /// A 2-layer, 32-wide Llama with grouped-query attention (4 heads, 2 KV heads), for tests.
    pub fn tiny() -> Self {
        Config {
            model_type: "llama".into(),
            vocab_size: 96,
            hidden_size: 32,
            intermediate_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: Some(2),
            head_dim: None,
            hidden_act: "silu".into(),
            max_position_embeddings: 128,
            rms_norm_eps: 1e-6,
            rope_theta: Some(10000.0),
            rope_scaling: None,
            rope_parameters: None,
            attention_bias: false,
            mlp_bias: false,
            attention_dropout: 0.0,
            tie_word_embeddings: false,
            sliding_window: None,
            use_sliding_window: None,
            max_window_layers: None,
            layer_types: None,
            initializer_range: 0.02,
            bos_token_id: None,
            eos_token_id: None,
        }
    }

    pub fn head_dim(&self) -> i64 {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    pub fn kv_heads(&self) -> i64 {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn qkv_bias(&self) -> bool {
        self.model_type == "qwen2" || self.attention_bias
    }

    pub fn o_bias(&self) -> bool {
        self.model_type != "qwen2" && self.attention_bias
    }

    /// The sliding window of layer `i`, following transformers' rules per model type.
    pub fn layer_is_sliding(&self, i: usize) -> bool {
        if self.sliding_window.is_none() {
            return false;
        }
        if let Some(types) = &self.layer_types {
            return types.get(i).is_some_and(|t| t == "sliding_attention");
        }
        match self.model_type.as_str() {
            "mistral" => true,
            "qwen2" => {
                self.use_sliding_window == Some(true) && i as i64 >= self.max_window_layers.unwrap_or(0)
            }
            _ => false,
        }
    }

    /// RoPE base and scaling from either generation of config keys.
    pub fn rope(&self) -> Result<Rope> {
        let params = self.rope_parameters.as_ref().or(self.rope_scaling.as_ref());
        let theta = params.and_then(|p| p.rope_theta).or(self.rope_theta).unwrap_or(10000.0);
        let kind = params.and_then(|p| p.rope_type.clone().or_else(|| p.type_.clone()));
        let need = |v: Option<f64>, k: &str| {
            v.ok_or_else(|| {
                Error::Input(format!("rope scaling '{}' needs \"{k}\"", kind.as_deref().unwrap_or("")))
            })
        };
        let scaling = match (kind.as_deref(), params) {
            (None | Some("default"), _) | (_, None) => RopeKind::Default,
            (Some("linear"), Some(p)) => RopeKind::Linear { factor: need(p.factor, "factor")? },
            (Some("llama3"), Some(p)) => RopeKind::Llama3 {
                factor: need(p.factor, "factor")?,
                low_freq_factor: need(p.low_freq_factor, "low_freq_factor")?,
                high_freq_factor: need(p.high_freq_factor, "high_freq_factor")?,
                original_max_position_embeddings: p.original_max_position_embeddings.ok_or_else(|| {
                    Error::Input("rope scaling 'llama3' needs \"original_max_position_embeddings\"".into())
                })?,
            },
            (Some(other), _) => {
                return Err(Error::Input(format!(
                    "rope scaling '{other}' is not supported: zoo implements default, linear and llama3"
                )))
            }
        };
        Ok(Rope { theta, scaling })
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        for (k, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.kv_heads()),
            ("head_dim", self.head_dim()),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v <= 0 {
                return Err(format!("\"{k}\" must be positive, got {v}"));
            }
            crate::config::check_dim(k, v)?;
        }
        if self.num_attention_heads % self.kv_heads() != 0 {
            return Err(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads,
                self.kv_heads()
            ));
        }
        if self.head_dim() % 2 != 0 {
            return Err(format!("head_dim {} must be even for rotary embeddings", self.head_dim()));
        }
        if self.sliding_window.is_some_and(|w| w <= 0) {
            return Err("\"sliding_window\" must be positive".into());
        }
        Activation::parse(&self.hidden_act).map_err(|e| e.to_string())?;
        self.rope().map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// Llama with its LM head (`LlamaForCausalLM`).
#[derive(Debug)]
pub struct Llama {
    pub embed_tokens: nn::Embedding,
    pub layers: Vec<DecoderLayer>,
    pub norm: RmsNorm,
    /// `None` when tied to `embed_tokens`.
    pub lm_head: Option<Tensor>,
    pub rotary: Rotary,
    pub cfg: Config,
}

impl Llama {
    /// Creates the variables under `p` (`model.*`, and `lm_head.weight` when untied).
    pub fn new(p: nn::Path, cfg: &Config) -> Result<Self> {
        cfg.validate().map_err(Error::Input)?;
        let m = &p / "model";
        let emb = nn::EmbeddingConfig {
            ws_init: nn::Init::Randn { mean: 0.0, stdev: cfg.initializer_range },
            ..Default::default()
        };
        let embed_tokens = nn::embedding(&m / "embed_tokens", cfg.vocab_size, cfg.hidden_size, emb);
        let layers = (0..cfg.num_hidden_layers as usize)
            .map(|i| DecoderLayer::new(&m / "layers" / i, cfg, i))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::new(&m / "norm", cfg.hidden_size, cfg.rms_norm_eps);
        let lm_head = (!cfg.tie_word_embeddings).then(|| {
            (&p / "lm_head").var(
                "weight",
                &[cfg.vocab_size, cfg.hidden_size],
                nn::Init::Randn { mean: 0.0, stdev: cfg.initializer_range },
            )
        });
        let rotary = Rotary::new(cfg, p.device())?;
        Ok(Llama { embed_tokens, layers, norm, lm_head, rotary, cfg: cfg.clone() })
    }

    /// The final hidden states (after `model.norm`). `attention_mask` is (B, past + T) with 0
    /// at padding; `cache` holds the past and receives this call's keys and values.
    /// Shapes: (B, T) -> (B, T, hidden_size)
    pub fn forward_hidden(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        mut cache: Option<&mut KvCache>,
        train: bool,
    ) -> Result<Tensor> {
        let past = cache.as_ref().map_or(0, |c| c.seq_len());
        let window = self.layers.iter().any(|l| l.sliding).then_some(self.cfg.sliding_window).flatten();
        let inputs = AttnInputs::new(input_ids, attention_mask, past, window)?;
        // 1. token embeddings
        let mut x = Tensor::f_embedding(&self.embed_tokens.ws, input_ids, -1, false, false)?;
        // 2. rotary tables for this call's positions, shared by all layers
        let rope = self.rotary.cos_sin(&inputs.positions, x.kind())?;
        // 3. the blocks
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x, &rope, &inputs, cache.as_deref_mut().map(|c| (c, i)), train)?;
        }
        // 4. final norm
        self.norm.forward(&x)
    }

    /// Shapes: (B, T, hidden_size) -> (B, T, vocab)
    pub fn lm_head(&self, hidden: &Tensor) -> Result<Tensor> {
        let w = self.lm_head.as_ref().unwrap_or(&self.embed_tokens.ws);
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

/// Checkpoint keys to variable names. HF Llama-family files already use our names; skipped:
/// `rotary_emb.inv_freq` buffers that older transformers saved (we compute the frequencies
/// from the config), and `lm_head.weight` of a tied model, a copy of the embedding in some files.
pub fn remap(tied: bool) -> impl Fn(&str) -> Remap {
    move |key: &str| {
        if key.ends_with("rotary_emb.inv_freq") || (tied && key == "lm_head.weight") {
            Remap::Skip
        } else {
            Remap::To(key.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn::VarStore, Device};

    fn model(cfg: &Config) -> (VarStore, Llama) {
        let vs = VarStore::new(Device::Cpu);
        let m = Llama::new(vs.root(), cfg).unwrap();
        (vs, m)
    }

    #[test]
    fn shapes_and_names() {
        let cfg = Config::tiny();
        let (vs, m) = model(&cfg);
        let ids = Tensor::from_slice(&[1i64, 2, 3, 4, 5, 6]).view([2, 3]);
        assert_eq!(m.forward(&ids, None, None, false).unwrap().size(), [2, 3, 96]);
        let vars = vs.variables();
        // GQA: 4 query heads of 8, 2 KV heads.
        assert_eq!(vars["model.layers.1.self_attn.q_proj.weight"].size(), [32, 32]);
        assert_eq!(vars["model.layers.1.self_attn.k_proj.weight"].size(), [16, 32]);
        assert_eq!(vars["model.layers.0.mlp.gate_proj.weight"].size(), [64, 32]);
        assert!(vars.contains_key("lm_head.weight"));
        assert!(!vars.contains_key("model.layers.0.self_attn.q_proj.bias"));
        let qwen = Config { model_type: "qwen2".into(), ..Config::tiny() };
        let (vs, _) = model(&qwen);
        let vars = vs.variables();
        assert!(vars.contains_key("model.layers.0.self_attn.v_proj.bias"));
        assert!(!vars.contains_key("model.layers.0.self_attn.o_proj.bias"));
    }

    #[test]
    fn cached_decoding_equals_full_forward_with_window() {
        for window in [None, Some(3)] {
            let cfg = Config { model_type: "mistral".into(), sliding_window: window, ..Config::tiny() };
            let (_vs, m) = model(&cfg);
            let ids = Tensor::from_slice(&[5i64, 9, 2, 7, 1, 3, 3, 8]).view([1, 8]);
            let full = m.forward(&ids, None, None, false).unwrap();
            let mut cache = KvCache::new(2);
            let mut parts = vec![m.forward(&ids.narrow(1, 0, 4), None, Some(&mut cache), false).unwrap()];
            for i in 4..8 {
                parts.push(m.forward(&ids.narrow(1, i, 1), None, Some(&mut cache), false).unwrap());
            }
            let diff = (full - Tensor::cat(&parts, 1)).abs().max().double_value(&[]);
            assert!(diff < 1e-5, "window {window:?}: max diff {diff}");
        }
    }

    /// A window shorter than the sequence changes the output of late positions only.
    #[test]
    fn sliding_window_limits_what_late_tokens_see() {
        let (vs, full) = model(&Config { model_type: "mistral".into(), ..Config::tiny() });
        let cfg = Config { model_type: "mistral".into(), sliding_window: Some(3), ..Config::tiny() };
        let mut vs2 = VarStore::new(Device::Cpu);
        let windowed = Llama::new(vs2.root(), &cfg).unwrap();
        vs2.copy(&vs).unwrap();
        let ids = Tensor::from_slice(&[5i64, 9, 2, 7, 1, 3]).view([1, 6]);
        let a = full.forward(&ids, None, None, false).unwrap();
        let b = windowed.forward(&ids, None, None, false).unwrap();
        let d = |i: i64| (a.get(0).get(i) - b.get(0).get(i)).abs().max().double_value(&[]);
        assert!(d(2) < 1e-6, "positions inside the window agree");
        assert!(d(5) > 1e-4, "position 5 no longer sees position 0..2");
    }

    #[test]
    fn rope_config_generations_agree() {
        let v4: Config = serde_json::from_value(serde_json::json!({
            "vocab_size": 8, "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1,
            "num_attention_heads": 2, "rope_theta": 500000.0,
            "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                             "original_max_position_embeddings": 8192, "rope_type": "llama3", "type": "llama3"}
        }))
        .unwrap();
        let v5: Config = serde_json::from_value(serde_json::json!({
            "vocab_size": 8, "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "rope_parameters": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                "original_max_position_embeddings": 8192, "rope_type": "llama3",
                                "rope_theta": 500000.0}
        }))
        .unwrap();
        assert_eq!(v4.rope().unwrap(), v5.rope().unwrap());
        assert_eq!(v4.rope().unwrap().theta, 500000.0);
        let yarn = Config {
            rope_scaling: Some(RopeScaling { rope_type: Some("yarn".into()), ..Default::default() }),
            ..Config::tiny()
        };
        assert!(yarn.validate().unwrap_err().contains("'yarn' is not supported"));
    }

    /// Linear scaling by f is position interpolation: position p scaled equals position p/f.
    #[test]
    fn linear_rope_divides_positions() {
        let lin = Config {
            rope_scaling: Some(RopeScaling {
                rope_type: Some("linear".into()),
                factor: Some(4.0),
                ..Default::default()
            }),
            ..Config::tiny()
        };
        let r1 = Rotary::new(&lin, Device::Cpu).unwrap();
        let r0 = Rotary::new(&Config::tiny(), Device::Cpu).unwrap();
        let (c1, _) = r1.cos_sin(&Tensor::from_slice(&[8i64]).view([1, 1]), Kind::Float).unwrap();
        let (c0, _) = r0.cos_sin(&Tensor::from_slice(&[2i64]).view([1, 1]), Kind::Float).unwrap();
        assert!((c1 - c0).abs().max().double_value(&[]) < 1e-6);
    }

    #[test]
    fn qwen2_and_layer_types_pick_sliding_layers() {
        let q = Config {
            model_type: "qwen2".into(),
            sliding_window: Some(4),
            use_sliding_window: Some(true),
            max_window_layers: Some(1),
            ..Config::tiny()
        };
        assert!(!q.layer_is_sliding(0) && q.layer_is_sliding(1));
        let t = Config {
            sliding_window: Some(4),
            layer_types: Some(vec!["sliding_attention".into(), "full_attention".into()]),
            ..Config::tiny()
        };
        assert!(t.layer_is_sliding(0) && !t.layer_is_sliding(1));
        assert!(!Config { sliding_window: Some(4), ..Config::tiny() }.layer_is_sliding(0));
    }

    #[test]
    fn bad_configs_are_errors() {
        let c = Config { num_key_value_heads: Some(3), ..Config::tiny() };
        assert!(c.validate().unwrap_err().contains("multiple of num_key_value_heads"));
        let c = Config { hidden_act: "tanh9".into(), ..Config::tiny() };
        assert!(c.validate().unwrap_err().contains("tanh9"));
    }

    #[test]
    fn remap_skips_buffers_and_tied_head() {
        assert_eq!(remap(true)("lm_head.weight"), Remap::Skip);
        assert_eq!(remap(false)("lm_head.weight"), Remap::To("lm_head.weight".into()));
        assert_eq!(remap(false)("model.layers.0.self_attn.rotary_emb.inv_freq"), Remap::Skip);
    }
}
