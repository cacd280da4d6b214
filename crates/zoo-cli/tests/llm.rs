//! `zoo llm` end to end on the tiny checkpoints of tests/fixtures/llm (made by
//! tools/make_llm_fixtures.py): generation, tokens, arch, score, tokenizer training, and one
//! clear line for each kind of bad input.
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use tch::{Kind, Tensor};

fn zoo() -> Command {
    let mut c = Command::cargo_bin("zoo").unwrap();
    c.args(["--device", "cpu", "--threads", "1"]);
    c
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/llm").join(name)
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Runs zoo and returns (stdout, stderr), asserting success.
fn ok(args: &[&str]) -> (String, String) {
    let out = zoo().args(args).output().unwrap();
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{args:?}: {e}");
    (o, e)
}

/// Runs zoo and checks it failed with `code` and one line `error: ...` containing `want`.
fn fails(args: &[&str], code: i32, want: &str) -> String {
    let out = zoo().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(code), "{args:?}: stderr {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: want one line, got {err}");
    assert!(lines[0].starts_with("error: "), "{args:?}: {err}");
    assert!(err.contains(want), "{args:?}: want {want:?} in {err}");
    for bad in ["panicked", "backtrace", "Exception raised from", "c10::"] {
        assert!(!err.contains(bad), "{args:?}: {err}");
    }
    err
}

fn greedy_tokens(name: &str, prompt: usize) -> (String, Vec<i64>) {
    let text = std::fs::read_to_string(fixture(name).join("reference.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let p = v["prompts"][prompt].as_str().unwrap().to_string();
    let g = v["greedy"][prompt].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect();
    (p, g)
}

#[test]
fn generate_greedy_prints_prompt_and_transformers_continuation() {
    let (prompt, tokens) = greedy_tokens("gpt2", 1);
    let dir = s(&fixture("gpt2"));
    let (out, err) = ok(&[
        "llm",
        "generate",
        "--model",
        &dir,
        "--prompt",
        &prompt,
        "--temperature",
        "0",
        "--max-new-tokens",
        "12",
    ]);
    let tok = zoo_llm::Tokenizer::from_file(&fixture("gpt2/tokenizer.json")).unwrap();
    assert_eq!(out, format!("{prompt}{}\n", tok.decode(&tokens).unwrap()));
    assert!(err.contains("12 tokens in") && err.contains("tokens/s"), "{err}");
    let (_, quiet) =
        ok(&["-q", "llm", "generate", "--model", &dir, "--prompt", &prompt, "--max-new-tokens", "3"]);
    assert!(quiet.is_empty(), "{quiet}");
}

#[test]
fn sampling_is_seeded_and_samples_batch() {
    let dir = s(&fixture("llama-gqa"));
    let args = |seed: &'static str| {
        vec!["--seed", seed, "llm", "generate", "--model", &dir, "--prompt", "The", "--max-new-tokens", "16"]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let run = |a: Vec<String>| ok(&a.iter().map(String::as_str).collect::<Vec<_>>()).0;
    assert_eq!(run(args("7")), run(args("7")));
    assert_ne!(run(args("7")), run(args("8")));
    let (out, _) = ok(&[
        "llm",
        "generate",
        "--model",
        &dir,
        "--prompt",
        "The",
        "--num-samples",
        "3",
        "--max-new-tokens",
        "5",
    ]);
    assert_eq!(out.matches("--- sample ").count(), 3, "{out}");
}

#[test]
fn tokens_counts_like_transformers() {
    let text = std::fs::read_to_string(fixture("gpt2/reference.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let prompt = v["prompts"][0].as_str().unwrap();
    let n = v["input_ids"][0].as_array().unwrap().len();
    let (out, _) = ok(&["llm", "tokens", "--model", &s(&fixture("gpt2")), prompt]);
    assert!(out.ends_with(&format!("\n{n} tokens\n")), "{out}");
    assert!(out.starts_with(&format!("{:>8}  \"Hello\"", v["input_ids"][0][0].as_i64().unwrap())), "{out}");
}

#[test]
fn tokens_takes_a_preset_as_generate_does_and_a_full_context_is_clamped_with_truncate() {
    // A preset with random weights reads raw bytes.
    let (out, _) = ok(&["llm", "tokens", "--model", "tiny-gpt2", "hi"]);
    assert!(out.starts_with("     104  \"h\"\n     105  \"i\"\n"), "{out}");
    fails(
        &["llm", "tokens", "--model", "no-such-model", "hi"],
        1,
        "no such tokenizer.json, model folder or preset",
    );
    // tiny-gpt2's context is 128 tokens: with --truncate, 200 new tokens become 127, with a note.
    let (_, err) = ok(&[
        "llm",
        "generate",
        "--model",
        "tiny-gpt2",
        "--prompt",
        "hi",
        "--max-new-tokens",
        "200",
        "--truncate",
    ]);
    assert!(err.contains("generating 127 after the last prompt token"), "{err}");
    assert!(err.contains("127 tokens in"), "{err}");
    fails(
        &["llm", "generate", "--model", "tiny-gpt2", "--prompt", "hi", "--max-new-tokens", "200"],
        1,
        "leaves no room",
    );
}

#[test]
fn arch_counts_parameters() {
    let (out, _) = ok(&["llm", "arch", "--model", "gpt2"]);
    assert!(out.contains("RANDOM weights from preset 'gpt2'"), "{out}");
    assert!(out.contains("12 x block") && out.contains("124,439,808"), "{out}");
    let (out, _) = ok(&["llm", "arch", "--model", "gpt2", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["params"], 124_439_808);
    let parts = v["parts"].as_array().unwrap();
    let top: i64 = parts.iter().filter(|p| p["depth"] == 0).filter_map(|p| p["params"].as_i64()).sum();
    assert_eq!(top, 124_439_808, "the top-level parts add up to the total");
    let (out, _) = ok(&["llm", "arch", "--model", &s(&fixture("llama-gqa"))]);
    assert!(out.contains("2 KV heads (GQA)") && out.contains("llama3 scaling x8"), "{out}");
    // A folder in the current directory named like a preset does not replace the preset;
    // ./gpt2 names the folder.
    let cwd = tempfile::tempdir().unwrap();
    std::fs::create_dir(cwd.path().join("gpt2")).unwrap();
    let o = zoo().current_dir(cwd.path()).args(["llm", "arch", "--model", "gpt2"]).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && out.contains("RANDOM weights from preset 'gpt2'"), "{out}");
    let o = zoo().current_dir(cwd.path()).args(["llm", "arch", "--model", "./gpt2"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("gpt2"), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn score_and_tokenizer_training() {
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("text.txt");
    std::fs::write(&text, "The lighthouse keeper climbed the stairs. Hello, sea! ".repeat(20)).unwrap();
    let (out, _) = ok(&["llm", "score", "--model", &s(&fixture("gpt2")), "--data", &s(&text)]);
    let ppl: f64 = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(ppl > 1.0 && ppl.is_finite(), "{out}");

    let tok = tmp.path().join("tok.json");
    ok(&["llm", "tokenizer", "train", "--data", &s(&text), "--vocab-size", "270", "--out", &s(&tok)]);
    let (out, _) = ok(&["llm", "tokens", "--model", &s(&tok), "Hello, sea!"]);
    assert!(out.trim_end().ends_with("tokens"), "{out}");
    let chars = tmp.path().join("chars.json");
    ok(&["llm", "tokenizer", "train", "--char", "--data", &s(&text), "--out", &s(&chars)]);
    let (out, _) = ok(&["llm", "tokens", "--model", &s(&chars), "Hello"]);
    assert!(out.ends_with("\n5 tokens\n"), "{out}");
}

#[test]
fn bad_prompts_are_one_line_errors() {
    let dir = s(&fixture("gpt2"));
    let tmp = tempfile::tempdir().unwrap();
    fails(&["llm", "generate", "--model", &dir, "--prompt", ""], 1, "empty prompt");
    let bin = tmp.path().join("p.txt");
    std::fs::write(&bin, b"ok \xff\xfe").unwrap();
    fails(&["llm", "generate", "--model", &dir, "--prompt-file", &s(&bin)], 1, "is not UTF-8 text");
    fails(&["llm", "generate", "--model", &dir, "--prompt-file", &s(&tmp.path().join("none"))], 1, "none");
    // A device or a pipe would be read forever: refused at once.
    if std::path::Path::new("/dev/zero").exists() {
        fails(&["llm", "generate", "--model", &dir, "--prompt-file", "/dev/zero"], 1, "not a regular file");
    }
    fails(&["llm", "generate", "--model", "gpt5", "--prompt", "x"], 1, "'gpt5' is not a model folder");
    fails(&["llm", "generate", "--model", &dir], 2, "required arguments were not provided: --prompt");
    let long = "Hello ".repeat(60);
    let e = fails(
        &["llm", "generate", "--model", &dir, "--prompt", &long, "--max-new-tokens", "8"],
        1,
        "exceeds",
    );
    assert!(e.contains(" tokens) + --max-new-tokens 8 exceeds the model's context of 64 tokens"), "{e}");
    fails(&["llm", "generate", "--model", &dir, "--prompt", &long], 1, "--max-new-tokens 64 leaves no room");
    let (out, err) =
        ok(&["llm", "generate", "--model", &dir, "--prompt", &long, "--truncate", "--max-new-tokens", "4"]);
    assert!(out.starts_with(&long) && err.contains("--truncate: kept the last 60"), "{err}");
    fails(
        &["llm", "generate", "--model", &dir, "--prompt", "x", "--top-p", "2"],
        1,
        "--top-p must be in (0, 1]",
    );
}

/// Copies the gpt2 fixture, then rewrites its weights or config with `change`.
fn broken(tmp: &Path, change: impl Fn(&mut Vec<(String, Tensor)>, &mut serde_json::Value)) -> String {
    let dir = tmp.join("model");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(fixture("gpt2").join(f), dir.join(f)).unwrap();
    }
    let mut tensors = zoo_core::weights::load(&fixture("gpt2/model.safetensors")).unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    change(&mut tensors, &mut cfg);
    zoo_core::weights::save(&dir.join("model.safetensors"), &tensors, None).unwrap();
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    s(&dir)
}

#[test]
fn bad_checkpoints_name_the_problem() {
    let gen = |dir: &str| {
        vec!["llm", "generate", "--model", dir, "--prompt", "Hello"]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let check = |dir: String, want: &str| {
        let a = gen(&dir);
        fails(&a.iter().map(String::as_str).collect::<Vec<_>>(), 1, want);
    };
    let t = tempfile::tempdir().unwrap();
    check(
        broken(&t.path().join("a"), |w, _| w.retain(|(n, _)| n != "transformer.h.1.ln_2.bias")),
        "1 missing (transformer.h.1.ln_2.bias)",
    );
    check(
        broken(&t.path().join("b"), |w, _| {
            w.push((
                "transformer.h.9.mlp.c_fc.bias".into(),
                Tensor::zeros([4], (Kind::Float, tch::Device::Cpu)),
            ))
        }),
        "1 unexpected (transformer.h.9.mlp.c_fc.bias)",
    );
    check(
        broken(&t.path().join("c"), |w, _| {
            for (n, x) in w.iter_mut() {
                if n == "transformer.wpe.weight" {
                    *x = x.narrow(0, 0, 32);
                }
            }
        }),
        "transformer.wpe.weight: model [64, 32], file [32, 32]",
    );
    check(
        broken(&t.path().join("d"), |_, c| {
            let o = c.as_object_mut().unwrap();
            o.remove("n_embd");
            o.remove("n_head");
        }),
        "gpt2 config lacks required key(s): n_embd, n_head",
    );
    check(
        broken(&t.path().join("e"), |_, c| c["model_type"] = "bert".into()),
        "model_type 'bert' is not supported; supported types are gpt2, llama, mistral, qwen2",
    );
    check(s(t.path()), "no config.json");
}

/// `zoo llm chat` with piped stdin on the llama-gqa fixture (which has a chat template):
/// greedy replies equal transformers' for the same conversation (each reply in the history of
/// the next turn), /reset starts over, blank lines are skipped, /exit ends the chat.
#[test]
fn chat_replies_as_transformers_with_history_reset_and_exit() {
    let dir = fixture("llama-gqa");
    let text = std::fs::read_to_string(dir.join("chat_reference.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let strs = |k: &str| -> Vec<String> {
        v[k].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect()
    };
    let (turns, replies) = (strs("turns"), strs("replies"));
    assert_eq!(turns.len(), 3);
    let new = v["max_new_tokens"].as_i64().unwrap().to_string();
    // The first turn, a reset, then the whole conversation, and a line after /exit.
    let input =
        format!("{}\n/reset\n{}\n\n{}\n{}\n/exit\nnot read\n", turns[0], turns[0], turns[1], turns[2]);
    let out = zoo()
        .args(["llm", "chat", "--model", &s(&dir), "--temperature", "0", "--max-new-tokens", &new])
        .write_stdin(input)
        .output()
        .unwrap();
    let (o, e) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{e}");
    let want = format!("{}\n{}\n{}\n{}\n", replies[0], replies[0], replies[1], replies[2]);
    assert_eq!(o, want);
    assert!(e.contains("conversation reset"), "{e}");
    assert_eq!(e.matches("tokens/s").count(), 4, "{e}");
}

#[test]
fn chat_needs_a_chat_template() {
    let no_template = s(&fixture("gpt2"));
    fails(&["llm", "chat", "--model", &no_template], 1, "no chat template");
    fails(&["llm", "chat", "--model", "tiny-gpt2"], 1, "is not a model folder");
    let dir = s(&fixture("llama-gqa"));
    fails(&["llm", "chat", "--model", &dir, "--top-p", "2"], 1, "--top-p");
}

/// The training stages end to end through the CLI (tiny model, a few steps), and one clear
/// line for each kind of bad training input.
#[test]
fn training_stages_run_and_refuse_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let text = t.join("text.txt");
    std::fs::write(
        &text,
        "the cat sat on the mat; the dog ate the log; then: a frog jumped over eight green hills.\n"
            .repeat(30),
    )
    .unwrap();
    let run = t.join("pre");
    let (out, _) = ok(&[
        "-q",
        "llm",
        "train",
        "--data",
        &s(&text),
        "--model",
        "tiny-gpt2",
        "--out",
        &s(&run),
        "--steps",
        "20",
        "--block-size",
        "16",
        "--eval-every",
        "10",
        "--sample-chars",
        "20",
    ]);
    assert!(out.contains("val loss") && out.contains("tokens/s"), "{out}");
    let fin = run.join("final");
    let (gen, _) =
        ok(&["-q", "llm", "generate", "--model", &s(&fin), "--prompt", "the ", "--max-new-tokens", "8"]);
    assert!(gen.starts_with("the "), "{gen}");
    fails(
        &["-q", "llm", "train", "--data", &s(&text), "--model", "tiny-gpt2", "--out", &s(&run)],
        1,
        "--resume",
    );
    // Resuming the finished run without more steps, or asking for no steps: refused.
    let again = [
        "-q",
        "llm",
        "train",
        "--data",
        &s(&text),
        "--model",
        "tiny-gpt2",
        "--out",
        &s(&run),
        "--resume",
        "--steps",
        "20",
        "--block-size",
        "16",
        "--eval-every",
        "10",
        "--sample-chars",
        "20",
    ];
    fails(&again, 1, "already done 20 steps");
    // The same data named by a relative path is the same setting; another learning rate is not,
    // and the refusal says so.
    let name = text.file_name().unwrap().to_str().unwrap().to_string();
    let longer = [
        "-q",
        "llm",
        "train",
        "--data",
        &name,
        "--model",
        "tiny-gpt2",
        "--out",
        &s(&run),
        "--resume",
        "--steps",
        "22",
        "--block-size",
        "16",
        "--eval-every",
        "10",
        "--sample-chars",
        "20",
    ];
    let o = zoo().current_dir(text.parent().unwrap()).args(longer).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut other = again.to_vec();
    other.extend(["--lr", "0.5"]);
    other[11] = "30";
    fails(&other, 1, "(lr differ)");
    let none = ["-q", "llm", "train", "--data", &s(&text), "--steps", "0", "--out", &s(&t.join("z"))];
    fails(&none, 1, "--steps must be at least 1");
    // Without evaluations: no NaN printed and no best/ promised.
    let quick = [
        "-q",
        "llm",
        "train",
        "--data",
        &s(&text),
        "--model",
        "tiny-gpt2",
        "--out",
        &s(&t.join("q")),
        "--steps",
        "2",
        "--block-size",
        "16",
        "--eval-every",
        "0",
    ];
    let (out, _) = ok(&quick);
    assert!(out.contains("not evaluated") && !out.contains("NaN") && !out.contains("best"), "{out}");
    fails(
        &["-q", "llm", "train", "--data", &s(&t.join("none.txt")), "--out", &s(&t.join("x"))],
        1,
        "no such file",
    );
    fails(
        &["-q", "llm", "train", "--data", &s(&text), "--model", "nope", "--out", &s(&t.join("y"))],
        1,
        "nope",
    );

    let data = t.join("rev.jsonl");
    ok(&["-q", "llm", "task", "reverse", "--text", &s(&text), "--out", &s(&data)]);
    let (out, _) = ok(&[
        "-q",
        "llm",
        "sft",
        "--data",
        &s(&data),
        "--model",
        &s(&fin),
        "--out",
        &s(&t.join("sft")),
        "--steps",
        "5",
        "--batch-size",
        "4",
        "--val-fraction",
        "0.3",
    ]);
    assert!(out.contains("exact match"), "{out}");
    let bad = t.join("bad.jsonl");
    std::fs::write(&bad, "{\"prompt\": \"a\", \"response\": \"b\"}\n{\"prompt\": 3}\n").unwrap();
    fails(
        &["-q", "llm", "sft", "--data", &s(&bad), "--model", &s(&fin), "--out", &s(&t.join("z"))],
        1,
        "bad.jsonl:2",
    );
    std::fs::write(&bad, "\n").unwrap();
    fails(
        &["-q", "llm", "dpo", "--data", &s(&bad), "--model", &s(&fin), "--out", &s(&t.join("z"))],
        1,
        "no records",
    );
    fails(
        &[
            "-q",
            "llm",
            "ppo",
            "--data",
            &s(&data),
            "--model",
            &s(&fin),
            "--reward-model",
            &s(t),
            "--out",
            &s(&t.join("z")),
        ],
        1,
        "no config.json",
    );
}

#[test]
fn sizes_that_cannot_be_allocated_are_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let base: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("gpt2").join("config.json")).unwrap()).unwrap();
    for (key, value, want) in [
        (
            "n_positions",
            serde_json::json!(1_000_000_000_000_000i64),
            "\"n_positions\" is 1000000000000000, more than",
        ),
        ("vocab_size", serde_json::json!(1_000_000_000_000i64), "\"vocab_size\" is 1000000000000, more than"),
        // Within the limit per dimension, but 2^24 x n_embd is beyond any machine's memory.
        ("vocab_size", serde_json::json!(1 << 24), "\"vocab_size\" makes a model of"),
    ] {
        let dir = tmp.path().join(format!("{key}-{value}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cfg = base.clone();
        cfg[key] = value;
        if want.contains("makes a model") {
            cfg["n_embd"] = serde_json::json!(1 << 16);
        }
        std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
        std::fs::copy(fixture("gpt2").join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
        let want = format!("{}: {want}", dir.join("config.json").display());
        fails(&["llm", "arch", "--model", &s(&dir)], 1, &want);
        fails(&["llm", "generate", "--model", &s(&dir), "--prompt", "hi", "--max-new-tokens", "2"], 1, &want);
    }
}
