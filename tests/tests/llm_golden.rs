//! zoo-llm against transformers: tiny random GPT-2, Llama, Qwen2 and Mistral checkpoints saved
//! by tools/make_llm_fixtures.py (which also records the reference logits and greedy tokens).
//!
//! For every model folder: the tokenizer gives transformers' ids; logits of each prompt match
//! within 1e-4 (f32); greedy generation gives the same 12 tokens as `generate(do_sample=False)`;
//! KV-cached decoding equals the uncached forward; the left-padded batch matches the
//! reference's padded batch and each prompt alone.
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};
use zoo_llm::generate::{generate, left_pad, GenerateConfig};
use zoo_llm::sampling::SamplingConfig;
use zoo_llm::LoadedModel;

const TOL: f64 = 1e-4;
const MODELS: &[&str] = &["gpt2", "gpt2-bare", "llama-gqa", "llama-tied", "qwen2", "mistral"];

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/llm").join(name)
}

struct Reference {
    input_ids: Vec<Vec<i64>>,
    greedy: Vec<Vec<i64>>,
    tensors: Vec<(String, Tensor)>,
}

impl Reference {
    fn load(dir: &Path) -> Reference {
        let text = std::fs::read_to_string(dir.join("reference.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let ids = |k: &str| -> Vec<Vec<i64>> {
            v[k].as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect())
                .collect()
        };
        let tensors = zoo_core::weights::load(&dir.join("reference.safetensors")).unwrap();
        Reference { input_ids: ids("input_ids"), greedy: ids("greedy"), tensors }
    }

    fn get(&self, name: &str) -> &Tensor {
        &self.tensors.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no {name}")).1
    }
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

fn load(name: &str) -> (LoadedModel, Reference) {
    let dir = fixture(name);
    let m = LoadedModel::from_dir(&dir, Device::Cpu, Kind::Float).unwrap_or_else(|e| panic!("{name}: {e}"));
    (m, Reference::load(&dir))
}

#[test]
fn tokenizers_match_transformers() {
    let prompts: Vec<String> = {
        let text = std::fs::read_to_string(fixture("gpt2/reference.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["prompts"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect()
    };
    for name in MODELS {
        let (m, r) = load(name);
        let tok = m.tokenizer().unwrap();
        for (p, want) in prompts.iter().zip(&r.input_ids) {
            let ids = tok.encode(p).unwrap();
            assert_eq!(&ids, want, "{name}: {p}");
            assert_eq!(&tok.decode(&ids).unwrap(), p, "{name}");
        }
    }
}

#[test]
fn logits_match_transformers() {
    for name in MODELS {
        let (m, r) = load(name);
        for (i, ids) in r.input_ids.iter().enumerate() {
            let x = Tensor::from_slice(ids).view([1, -1]);
            let logits = tch::no_grad(|| m.model.forward(&x, None, None, false)).unwrap().squeeze_dim(0);
            let d = max_diff(&logits, r.get(&format!("logits.{i}")));
            println!("{name} prompt {i}: max |logit diff| {d:.2e}");
            assert!(d <= TOL, "{name} prompt {i}: max |logit diff| {d}");
        }
    }
}

#[test]
fn greedy_tokens_match_transformers() {
    for name in MODELS {
        let (m, r) = load(name);
        let cfg = GenerateConfig {
            max_new_tokens: r.greedy[0].len(),
            sampling: SamplingConfig::greedy(),
            ..Default::default()
        };
        // One batch (left-padded), as `zoo llm generate --num-samples` runs it.
        let out =
            generate(&m.model, None, &r.input_ids, m.config.context_len(), &cfg, &mut |_, _| {}).unwrap();
        for (i, (o, want)) in out.iter().zip(&r.greedy).enumerate() {
            assert_eq!(&o.tokens, want, "{name} prompt {i}");
        }
    }
}

#[test]
fn kv_cached_decoding_equals_uncached_forward() {
    for name in MODELS {
        let (m, r) = load(name);
        let ids = &r.input_ids[2];
        let x = Tensor::from_slice(ids).view([1, -1]);
        let full = tch::no_grad(|| m.model.forward(&x, None, None, false)).unwrap();
        let mut cache = m.model.new_cache();
        let split = 4;
        let mut parts =
            vec![tch::no_grad(|| m.model.forward(&x.narrow(1, 0, split), None, Some(&mut cache), false))
                .unwrap()];
        for i in split..ids.len() as i64 {
            parts.push(
                tch::no_grad(|| m.model.forward(&x.narrow(1, i, 1), None, Some(&mut cache), false)).unwrap(),
            );
        }
        let d = max_diff(&full, &Tensor::cat(&parts, 1));
        assert!(d <= 1e-5, "{name}: cached vs uncached {d}");
    }
}

#[test]
fn left_padded_batch_equals_reference_and_singles() {
    for name in MODELS {
        let (m, r) = load(name);
        let (ids, mask) = left_pad(&r.input_ids, Device::Cpu).unwrap();
        assert!(ids.equal(r.get("batch.input_ids")) && mask.equal(r.get("batch.attention_mask")));
        let logits = tch::no_grad(|| m.model.forward(&ids, Some(&mask), None, false)).unwrap();
        let t = ids.size()[1];
        for (i, p) in r.input_ids.iter().enumerate() {
            let n = p.len() as i64;
            let row = logits.get(i as i64).narrow(0, t - n, n);
            let d_ref = max_diff(&row, &r.get("batch.logits").get(i as i64).narrow(0, t - n, n));
            let d_single = max_diff(&row, r.get(&format!("logits.{i}")));
            assert!(
                d_ref <= TOL && d_single <= TOL,
                "{name} row {i}: {d_ref} vs reference batch, {d_single} vs alone"
            );
        }
    }
}

/// Both GPT-2 layouts hold the same weights and load to the same model.
#[test]
fn gpt2_layouts_load_alike() {
    let (a, _) = load("gpt2");
    let (b, _) = load("gpt2-bare");
    let (va, vb) = (a.vs.variables(), b.vs.variables());
    assert_eq!(va.len(), vb.len());
    for (k, t) in &va {
        assert!(t.equal(&vb[k]), "{k}");
    }
}
