//! The architecture of a model as a text diagram: each part with its tensor shapes and its
//! parameter count, counted from the model's variables (so the numbers are the real ones).
use std::collections::HashMap;

use tch::nn::VarStore;

use crate::config::ModelConfig;
use crate::llama::RopeKind;

pub use zoo_core::arch::{commas, render, Part};

fn part(depth: usize, name: impl Into<String>, shape: impl Into<String>, params: Option<i64>) -> Part {
    Part::new(depth, name, shape, params)
}

/// Sum of the sizes of variables whose names start with any of `prefixes`.
fn count(vars: &HashMap<String, tch::Tensor>, prefixes: &[String]) -> i64 {
    vars.iter()
        .filter(|(n, _)| prefixes.iter().any(|p| n.starts_with(p.as_str())))
        .map(|(_, t)| t.numel() as i64)
        .sum()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// The parts of the model in `vs`, built from `cfg`, top to bottom.
pub fn parts(cfg: &ModelConfig, vs: &VarStore) -> Vec<Part> {
    let vars = vs.variables();
    let mut out = Vec::new();
    match cfg {
        ModelConfig::Gpt2(c) => {
            let (d, v, n) = (c.n_embd, c.vocab_size, c.n_layer);
            let hs = d / c.n_head;
            let inner = c.n_inner.unwrap_or(4 * d);
            let h0 = "transformer.h.0.";
            out.push(part(0, "input ids", "(B, T)", None));
            out.push(part(
                0,
                format!("token embedding wte ({v} x {d})"),
                format!("(B, T) -> (B, T, {d})"),
                Some(count(&vars, &s(&["transformer.wte."]))),
            ));
            out.push(part(
                0,
                format!("+ learned positions wpe ({} x {d})", c.n_positions),
                format!("(B, T, {d})"),
                Some(count(&vars, &s(&["transformer.wpe."]))),
            ));
            out.push(part(
                0,
                format!("{n} x block"),
                format!("(B, T, {d})"),
                Some(count(&vars, &s(&["transformer.h."]))),
            ));
            out.push(part(
                1,
                "ln_1 LayerNorm",
                format!("(B, T, {d})"),
                Some(count(&vars, &[format!("{h0}ln_1.")])),
            ));
            out.push(part(
                1,
                format!(
                    "attention: c_attn {d} -> 3 x {d} ({} heads x {hs}), causal SDPA, c_proj {d} -> {d}",
                    c.n_head
                ),
                format!("(B, T, {d}) -> (B, {}, T, {hs}) -> (B, T, {d})", c.n_head),
                Some(count(&vars, &[format!("{h0}attn.")])),
            ));
            out.push(part(1, "+ residual", format!("(B, T, {d})"), None));
            out.push(part(
                1,
                "ln_2 LayerNorm",
                format!("(B, T, {d})"),
                Some(count(&vars, &[format!("{h0}ln_2.")])),
            ));
            out.push(part(
                1,
                format!("MLP: c_fc {d} -> {inner}, {}, c_proj {inner} -> {d}", c.activation_function),
                format!("(B, T, {d}) -> (B, T, {inner}) -> (B, T, {d})"),
                Some(count(&vars, &[format!("{h0}mlp.")])),
            ));
            out.push(part(1, "+ residual", format!("(B, T, {d})"), None));
            out.push(part(
                0,
                "final norm ln_f LayerNorm",
                format!("(B, T, {d})"),
                Some(count(&vars, &s(&["transformer.ln_f."]))),
            ));
            out.push(head(c.tie_word_embeddings, "wte", d, v, count(&vars, &s(&["lm_head."]))));
        }
        ModelConfig::Llama(c) => {
            let (d, v, n) = (c.hidden_size, c.vocab_size, c.num_hidden_layers);
            let (hd, nh, nkv, i) = (c.head_dim(), c.num_attention_heads, c.kv_heads(), c.intermediate_size);
            let l0 = "model.layers.0.";
            out.push(part(0, "input ids", "(B, T)", None));
            out.push(part(
                0,
                format!("token embedding embed_tokens ({v} x {d})"),
                format!("(B, T) -> (B, T, {d})"),
                Some(count(&vars, &s(&["model.embed_tokens."]))),
            ));
            let rope = match c.rope() {
                Ok(r) => {
                    let scaling = match r.scaling {
                        RopeKind::Default => String::new(),
                        RopeKind::Linear { factor } => format!(", linear scaling x{factor}"),
                        RopeKind::Llama3 { factor, .. } => format!(", llama3 scaling x{factor}"),
                    };
                    format!("positions: rotary (RoPE, theta {}{scaling}) on q and k in each layer", r.theta)
                }
                Err(e) => format!("positions: rotary ({e})"),
            };
            out.push(part(0, rope, "", Some(0)));
            out.push(part(
                0,
                format!("{n} x block"),
                format!("(B, T, {d})"),
                Some(count(&vars, &s(&["model.layers."]))),
            ));
            out.push(part(
                1,
                "input_layernorm RMSNorm",
                format!("(B, T, {d})"),
                Some(count(&vars, &[format!("{l0}input_layernorm.")])),
            ));
            let gqa = if nkv == nh { String::new() } else { format!(", {nkv} KV heads (GQA)") };
            let window = match c.sliding_window {
                Some(w) if (0..n as usize).any(|i| c.layer_is_sliding(i)) => format!(", sliding window {w}"),
                _ => String::new(),
            };
            out.push(part(
                1,
                format!("attention: q/k/v/o projections, {nh} heads x {hd}{gqa}, causal SDPA{window}"),
                format!("(B, T, {d}) -> (B, {nh}, T, {hd}) -> (B, T, {d})"),
                Some(count(&vars, &[format!("{l0}self_attn.")])),
            ));
            out.push(part(1, "+ residual", format!("(B, T, {d})"), None));
            out.push(part(
                1,
                "post_attention_layernorm RMSNorm",
                format!("(B, T, {d})"),
                Some(count(&vars, &[format!("{l0}post_attention_layernorm.")])),
            ));
            out.push(part(
                1,
                format!("MLP (SwiGLU): gate, up {d} -> {i}, {}(gate) * up, down {i} -> {d}", c.hidden_act),
                format!("(B, T, {d}) -> (B, T, {i}) -> (B, T, {d})"),
                Some(count(&vars, &[format!("{l0}mlp.")])),
            ));
            out.push(part(1, "+ residual", format!("(B, T, {d})"), None));
            out.push(part(
                0,
                "final norm RMSNorm",
                format!("(B, T, {d})"),
                Some(count(&vars, &s(&["model.norm."]))),
            ));
            out.push(head(c.tie_word_embeddings, "embed_tokens", d, v, count(&vars, &s(&["lm_head."]))));
        }
    }
    out
}

fn head(tied: bool, emb: &str, d: i64, v: i64, params: i64) -> Part {
    let name =
        if tied { format!("LM head (tied to {emb}: no new parameters)") } else { "LM head lm_head".into() };
    part(0, name, format!("(B, T, {d}) -> (B, T, {v})"), Some(params))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{gpt2, llama, model::Model};

    /// The top-level parts add up to the model's parameter count, and a block's lines add up
    /// to one layer's share.
    #[test]
    fn parts_add_up() {
        for cfg in [
            ModelConfig::Gpt2(gpt2::Config::tiny()),
            ModelConfig::Llama(llama::Config::tiny()),
            ModelConfig::Llama(llama::Config { tie_word_embeddings: true, ..llama::Config::tiny() }),
        ] {
            let vs = VarStore::new(tch::Device::Cpu);
            let _m = Model::new(vs.root(), &cfg).unwrap();
            let total: i64 = vs.variables().values().map(|t| t.numel() as i64).sum();
            let ps = parts(&cfg, &vs);
            let top: i64 = ps.iter().filter(|p| p.depth == 0).filter_map(|p| p.params).sum();
            assert_eq!(top, total, "{cfg:?}");
            let layer: i64 = ps.iter().filter(|p| p.depth == 1).filter_map(|p| p.params).sum();
            let blocks = ps.iter().find(|p| p.name.ends_with("x block")).unwrap().params.unwrap();
            assert_eq!(layer * cfg.n_layers() as i64, blocks);
            let text = render("t", &ps, total);
            assert!(text.contains(&commas(total)));
        }
    }

    #[test]
    fn gpt2_small_has_124m_parameters() {
        let vs = VarStore::new(tch::Device::Cpu);
        let cfg = ModelConfig::Gpt2(gpt2::Config::gpt2());
        let _m = Model::new(vs.root(), &cfg).unwrap();
        let total: i64 = vs.variables().values().map(|t| t.numel() as i64).sum();
        assert_eq!(total, 124_439_808);
        assert_eq!(commas(total), "124,439,808");
        assert_eq!(commas(12), "12");
    }
}
