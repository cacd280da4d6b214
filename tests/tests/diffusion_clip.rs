//! zoo-diffusion's CLIP tokenizer and text encoder against transformers (fixtures from
//! tools/make_sd_fixtures.py, part `clip`):
//! - two CLIPTokenizer folders (SD 1.x style, vocab.json + merges.txt, padded with
//!   `<|endoftext|>`; SD 2.x style, with a tokenizer.json, padded with "!") give the exact ids
//!   Stable Diffusion's pipeline feeds its text encoder for nine prompts (case, whitespace,
//!   punctuation, contractions, accents, digits, the empty prompt, one prompt past 77 tokens),
//!   and the text diffusers' truncation warning prints;
//! - two tiny random CLIPTextModels (quick_gelu, gelu) load 1:1 and give transformers'
//!   last_hidden_state and pooler_output within 1e-5 on our tokenizers' ids, with both pooling
//!   rules (first eos, and the argmax of the ids of configs with eos_token_id 2, as SD's
//!   released files have);
//! - the released SD 1.5 / 2.1 text encoder configs are the `sd1()` / `sd2()` presets, with
//!   their parameter counts.
use std::path::PathBuf;

use serde_json::Value;
use tch::{Device, Kind, Tensor};
use zoo_diffusion::clip::{CLIPTextConfig, CLIPTextModel, ClipTokenizer};

fn fixture(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/sd").join(p)
}

fn json(p: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(p)).unwrap()).unwrap()
}

fn get(io: &[(String, Tensor)], k: &str) -> Tensor {
    io.iter().find(|(n, _)| n == k).unwrap_or_else(|| panic!("no {k}")).1.shallow_clone()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn ids_of(v: &Value) -> Vec<i64> {
    v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()
}

#[test]
fn tokenizers_match_transformers() {
    let cases = json("clip/cases.json");
    let prompts: Vec<&str> =
        cases["prompts"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    let max_length = cases["max_length"].as_i64().unwrap();
    for name in ["tokenizer-sd1", "tokenizer-sd2"] {
        let want = &cases["tokenizers"][name];
        let tok = ClipTokenizer::from_dir(&fixture(&format!("clip/{name}"))).unwrap();
        assert_eq!(tok.model_max_length() as i64, max_length);
        assert_eq!(tok.bos_token_id(), want["bos_token_id"].as_i64().unwrap(), "{name}");
        assert_eq!(tok.eos_token_id(), want["eos_token_id"].as_i64().unwrap(), "{name}");
        assert_eq!(tok.pad_token_id(), want["pad_token_id"].as_i64().unwrap(), "{name}");
        let batch = tok.encode_batch(&prompts).unwrap();
        assert_eq!(batch.input_ids.size(), vec![prompts.len() as i64, max_length]);
        for (i, p) in prompts.iter().enumerate() {
            let got = Vec::<i64>::try_from(batch.input_ids.get(i as i64)).unwrap();
            assert_eq!(got, ids_of(&want["input_ids"][i]), "{name}, prompt {p:?}");
            assert_eq!(tok.encode(p).unwrap(), ids_of(&want["untruncated_ids"][i]), "{name}, prompt {p:?}");
            assert_eq!(
                batch.truncated[i].as_deref(),
                want["removed_text"][i].as_str(),
                "{name}, prompt {p:?}"
            );
        }
        // The fixture has a long prompt, so truncation is exercised.
        assert!(batch.truncated.iter().any(Option::is_some));
    }
}

#[test]
fn text_encoders_match_transformers() {
    let cases = json("clip/cases.json");
    let prompts: Vec<&str> =
        cases["prompts"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    let out = zoo_core::weights::load(&fixture("clip/outputs.safetensors")).unwrap();
    for act in ["quick_gelu", "gelu"] {
        let dir = fixture(&format!("clip/text_encoder-{act}"));
        let m = CLIPTextModel::load(&dir, Device::Cpu, Kind::Float).unwrap();
        assert_eq!(m.config.hidden_act, act);
        // End to end: our tokenizer's ids are the ids transformers' outputs were computed on.
        let tok_name = cases[format!("text_encoder-{act}")]["tokenizer"].as_str().unwrap().to_string();
        let tok = ClipTokenizer::from_dir(&fixture(&format!("clip/{tok_name}"))).unwrap();
        let ids = tok.encode_batch(&prompts).unwrap().input_ids;
        assert!(ids.equal(&get(&out, &format!("{act}.input_ids"))), "{act}: ids differ from the fixture's");
        let got = tch::no_grad(|| m.forward(&ids)).unwrap();
        let want = get(&out, &format!("{act}.last_hidden_state"));
        assert!(want.abs().max().double_value(&[]) > 0.1, "{act}: a trivial output would prove nothing");
        let d = max_diff(&got.last_hidden_state, &want);
        assert!(d < 1e-5, "{act}: last_hidden_state max |diff| {d}");
        let d = max_diff(&got.pooler_output, &get(&out, &format!("{act}.pooler_output")));
        assert!(d < 1e-5, "{act}: pooler_output max |diff| {d}");

        // The same weights under a config with eos_token_id 2 take the argmax-of-ids rule. On
        // tokenizer output both rules find the first eos (the largest id), so the values agree;
        // the unit tests cover ids where the rules differ.
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
        cfg["eos_token_id"] = 2.into();
        std::fs::write(tmp.path().join("config.json"), cfg.to_string()).unwrap();
        std::fs::copy(dir.join("model.safetensors"), tmp.path().join("model.safetensors")).unwrap();
        let legacy = CLIPTextModel::load(tmp.path(), Device::Cpu, Kind::Float).unwrap();
        let got = tch::no_grad(|| legacy.forward(&ids)).unwrap();
        let d = max_diff(&got.pooler_output, &get(&out, &format!("{act}.pooler_output_legacy_eos2")));
        assert!(d < 1e-5, "{act}: legacy pooler_output max |diff| {d}");
    }
}

#[test]
fn released_configs_are_the_presets() {
    let configs = json("configs.json");
    for (name, preset, params, tensors) in [
        ("sd15", CLIPTextConfig::sd1(), 123_060_480usize, 196usize),
        ("sd21", CLIPTextConfig::sd2(), 340_387_840, 372),
    ] {
        let te = &configs["models"][format!("{name}.text_encoder")];
        let cfg = CLIPTextConfig::from_value(&te["config"]).unwrap();
        assert_eq!(cfg, preset, "{name}");
        assert_eq!(te["parameters"].as_u64(), Some(params as u64), "{name}");
        assert_eq!(te["tensors"].as_u64(), Some(tensors as u64), "{name}");
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let _m = CLIPTextModel::new(vs.root(), &cfg).unwrap();
        let vars = vs.variables();
        assert_eq!(vars.len(), tensors, "{name}");
        assert_eq!(vars.values().map(Tensor::numel).sum::<usize>(), params, "{name}");
    }
}
