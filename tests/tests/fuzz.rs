//! Mutation fuzzing of every parser of untrusted files: safetensors (header, offsets, a sharded
//! index), the config files of each family, WAV, PNG and JPEG, tokenizer.json and chat
//! templates. Each harness starts from valid files, mutates them (bit flips, byte and integer
//! overwrites with edge values, insertions, deletions, duplications, truncations, splices of
//! two seeds), and hands each result to the parser, which must return (Ok or an error) without
//! panicking and within a time limit.
//!
//! `cargo test -p zoo-tests --test fuzz` runs a smoke of each harness (ZOO_FUZZ_ITERS per
//! harness, 300 by default). The long runs of docs/reliability.md:
//! `ZOO_FUZZ_ITERS=1000000 cargo test --release -p zoo-tests --test fuzz -- --nocapture`.
//! A failing input is written to `target/fuzz-failures/` for replay.
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tch::{Device, Kind, Tensor};

/// The longest one input may take before it counts as a hang.
const HANG: Duration = Duration::from_secs(5);

fn iterations() -> u64 {
    std::env::var("ZOO_FUZZ_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(300)
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Integers at the edges of what a length, count or offset field can hold.
const EDGES: [u64; 10] =
    [0, 1, 2, 0x7f, 0x80, 0xff, 0x7fff_ffff, 0xffff_ffff, 0x7fff_ffff_ffff_ffff, u64::MAX];

/// One mutation of `seed` (with `other` for splices): 1 to 4 random edits.
fn mutate(seed: &[u8], other: &[u8], rng: &mut StdRng) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..rng.gen_range(1..=4) {
        let n = b.len();
        match rng.gen_range(0..9) {
            0 if n > 0 => {
                let i = rng.gen_range(0..n);
                b[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if n > 0 => {
                let i = rng.gen_range(0..n);
                b[i] = [0u8, 0xff, 0x7f, 0x80, b'"', b'{', b'-', b'9'][rng.gen_range(0..8)];
            }
            2 if n >= 8 => {
                // an integer field at a random place, little-endian, 2, 4 or 8 bytes wide
                let width = [2usize, 4, 8][rng.gen_range(0..3)];
                let i = rng.gen_range(0..=n - width);
                let v = EDGES[rng.gen_range(0..EDGES.len())].to_le_bytes();
                b[i..i + width].copy_from_slice(&v[..width]);
            }
            3 => {
                let i = rng.gen_range(0..=n);
                let len = rng.gen_range(1..=16);
                let bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
                b.splice(i..i, bytes);
            }
            4 if n > 0 => {
                let i = rng.gen_range(0..n);
                let len = rng.gen_range(1..=(n - i).min(64));
                b.drain(i..i + len);
            }
            5 if n > 0 => {
                let i = rng.gen_range(0..n);
                let len = rng.gen_range(1..=(n - i).min(64));
                let copy = b[i..i + len].to_vec();
                let at = rng.gen_range(0..=n);
                b.splice(at..at, copy);
            }
            6 if n > 0 => b.truncate(rng.gen_range(0..n)),
            7 if !other.is_empty() => {
                let cut = rng.gen_range(0..=n);
                let from = rng.gen_range(0..other.len());
                b.truncate(cut);
                b.extend_from_slice(&other[from..]);
            }
            8 if n > 0 => {
                // a decimal number in a text file: make it huge, negative or fractional
                let start = rng.gen_range(0..n);
                let digit = (0..n).map(|k| (k + start) % n).find(|&k| b[k].is_ascii_digit());
                if let Some(i) = digit {
                    let v = ["0", "-1", "1e309", "99999999999999999999", "4294967296", "0.5", "NaN"]
                        [rng.gen_range(0..7)];
                    b.splice(i..i + 1, v.bytes());
                }
            }
            _ => {}
        }
    }
    b
}

/// Runs `parse` on mutations of `seeds` (`iterations()` of them); a panic or a hang fails the
/// test with the input saved. Returns how many inputs the parser accepted.
fn fuzz(name: &str, seeds: &[Vec<u8>], mut parse: impl FnMut(&[u8])) -> u64 {
    assert!(!seeds.is_empty(), "{name}: no seeds");
    let mut rng = StdRng::seed_from_u64(0x5eed ^ name.len() as u64);
    let n = iterations();
    let t0 = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..n {
        let seed = &seeds[rng.gen_range(0..seeds.len())];
        let other = &seeds[rng.gen_range(0..seeds.len())];
        let input = mutate(seed, other, &mut rng);
        let t = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| parse(&input)));
        let took = t.elapsed();
        slowest = slowest.max(took);
        if outcome.is_err() || took > HANG {
            let dir = root().join("target/fuzz-failures");
            std::fs::create_dir_all(&dir).unwrap();
            let p = dir.join(format!("{name}-{i}.bin"));
            std::fs::write(&p, &input).unwrap();
            panic!(
                "{name}: input {i} {} (saved to {})",
                if outcome.is_err() { "panicked" } else { "hung" },
                p.display()
            );
        }
    }
    println!(
        "fuzz {name}: {n} inputs in {:.1} s, none panicked or hung (slowest {:.1} ms)",
        t0.elapsed().as_secs_f64(),
        slowest.as_secs_f64() * 1e3
    );
    n
}

/// Writes each input to `path` before parsing it.
fn via_file<'a>(path: &'a Path, mut parse: impl FnMut(&Path) + 'a) -> impl FnMut(&[u8]) + 'a {
    move |bytes: &[u8]| {
        std::fs::write(path, bytes).unwrap();
        parse(path);
    }
}

fn read(p: impl AsRef<Path>) -> Vec<u8> {
    std::fs::read(root().join(p.as_ref())).unwrap_or_else(|e| panic!("{}: {e}", p.as_ref().display()))
}

#[test]
fn fuzz_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small.safetensors");
    zoo_core::weights::save(
        &small,
        &[
            ("a".into(), Tensor::arange(6, (Kind::Float, Device::Cpu)).view([2, 3])),
            ("b".into(), Tensor::from_slice(&[1i64, 2, 3])),
            ("c".into(), Tensor::ones([2], (Kind::Half, Device::Cpu))),
        ],
        None,
    )
    .unwrap();
    let seeds =
        vec![std::fs::read(&small).unwrap(), read("tests/fixtures/flow/waveglow-tiny/model.safetensors")];
    let p = dir.path().join("x.safetensors");
    fuzz(
        "safetensors",
        &seeds,
        via_file(&p, |p| {
            if let Ok(f) = zoo_core::weights::SafetensorsFile::open(p) {
                let _ = f.infos();
                let _ = f.metadata();
                let _ = f.tensors();
            }
        }),
    );
}

#[test]
fn fuzz_safetensors_index() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    for (i, name) in ["w1", "w2"].iter().enumerate() {
        zoo_core::weights::save(
            &model.join(format!("model-0000{}-of-00002.safetensors", i + 1)),
            &[(name.to_string(), Tensor::ones([2], (Kind::Float, Device::Cpu)))],
            None,
        )
        .unwrap();
    }
    let index = br#"{"metadata": {"total_size": 16}, "weight_map": {"w1": "model-00001-of-00002.safetensors", "w2": "model-00002-of-00002.safetensors"}}"#;
    let p = model.join("model.safetensors.index.json");
    fuzz(
        "safetensors-index",
        &[index.to_vec()],
        via_file(&p, |_| {
            let _ = zoo_core::weights::weight_files(&model);
        }),
    );
}

#[test]
fn fuzz_configs() {
    // (seed file, the loader of its kind)
    type Loader = fn(&Path);
    let loaders: Vec<(&str, Loader)> = vec![
        ("tests/fixtures/llm/gpt2/config.json", |p| {
            let _ = zoo_llm::config::ModelConfig::from_file(p);
        }),
        ("tests/fixtures/llm/llama-gqa/config.json", |p| {
            let _ = zoo_llm::config::ModelConfig::from_file(p);
        }),
        ("models/llm/tiny-llama.json", |p| {
            let _ = zoo_llm::config::ModelConfig::from_file(p);
        }),
        ("models/vae/conv-mnist.json", |p| {
            let _ = zoo_vae::train::Preset::load(p);
        }),
        ("models/vae/kl-tiny.json", |p| {
            let _ = zoo_vae::train::Preset::load(p);
        }),
        ("models/gan/dcgan-mnist.json", |p| {
            let _ = zoo_gan::model::Preset::load(p);
        }),
        ("models/gan/stylegan2-mnist.json", |p| {
            let _ = zoo_gan::model::Preset::load(p);
        }),
        ("tests/fixtures/gan/stylegan2-tiny/config.json", |p| {
            let _ = zoo_gan::model::ModelConfig::load_file(p);
        }),
        ("models/diffusion/mnist-32.json", |p| {
            let _ = zoo_diffusion::pipeline::ModelSpec::resolve(&p.to_string_lossy());
        }),
        ("tests/fixtures/diffusion/unet-attn/config.json", |p| {
            let _ = zoo_diffusion::pipeline::ModelSpec::resolve(&p.parent().unwrap().to_string_lossy());
        }),
        ("models/txt2img/scenes.json", |p| {
            let _ = zoo_diffusion::txt2img_train::Recipe::load(p);
        }),
        ("models/flow/waveglow-22k-small.json", |p| {
            let _ = zoo_flow::waveglow::ModelFile::from_json_file(p);
        }),
        ("models/flow/glow-mnist.json", |p| {
            let _ = zoo_flow::glow_train::GlowFile::from_json_file(p);
        }),
        ("models/tts/glow-tts-small.json", |p| {
            let _ = zoo_flow::tts::TtsFile::from_json_file(p);
        }),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (seed, load) in loaders {
        // Each kind in a folder of its own, under the seed's own file name (the diffusion
        // loader reads a folder's config.json, or a preset by its .json name).
        let name = Path::new(seed).file_name().unwrap();
        let sub = dir.path().join(seed.replace('/', "_"));
        std::fs::create_dir(&sub).unwrap();
        let p = sub.join(name);
        let label = format!("config {seed}");
        fuzz(&label, &[read(seed)], via_file(&p, load));
    }
}

#[test]
fn fuzz_wav() {
    let dir = tempfile::tempdir().unwrap();
    let mut seeds = Vec::new();
    let tone = (Tensor::arange(400, (Kind::Float, Device::Cpu)) * 0.05).sin() * 0.5;
    for (i, format) in [
        zoo_core::audio::WavFormat::Pcm16,
        zoo_core::audio::WavFormat::Pcm24,
        zoo_core::audio::WavFormat::Float32,
    ]
    .into_iter()
    .enumerate()
    {
        let p = dir.path().join(format!("s{i}.wav"));
        let channels = if i == 1 { Tensor::stack(&[&tone, &tone], 0) } else { tone.view([1, -1]) };
        zoo_core::audio::write_wav(&p, &zoo_core::audio::Audio::new(channels, 8000).unwrap(), format)
            .unwrap();
        seeds.push(std::fs::read(&p).unwrap());
    }
    let p = dir.path().join("x.wav");
    fuzz(
        "wav",
        &seeds,
        via_file(&p, |p| {
            let _ = zoo_core::audio::read_wav_mono(p);
        }),
    );
}

#[test]
fn fuzz_images() {
    let dir = tempfile::tempdir().unwrap();
    let img = Tensor::rand([3, 12, 10], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let grey = Tensor::rand([1, 9, 7], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    for (ext, label) in [("png", "png"), ("jpg", "jpeg")] {
        let mut seeds = Vec::new();
        for (i, t) in [&img, &grey].into_iter().enumerate() {
            let p = dir.path().join(format!("s{i}.{ext}"));
            zoo_core::image::save_image(t, &p).unwrap();
            seeds.push(std::fs::read(&p).unwrap());
        }
        let p = dir.path().join(format!("x.{ext}"));
        fuzz(
            label,
            &seeds,
            via_file(&p, |p| {
                let _ = zoo_core::image::load_image(p);
            }),
        );
    }
}

#[test]
fn fuzz_tokenizer_json() {
    let dir = tempfile::tempdir().unwrap();
    let seeds =
        vec![read("tests/fixtures/llm/tokenizer.json"), read("tests/fixtures/llm/gpt2/tokenizer.json")];
    let p = dir.path().join("tokenizer.json");
    fuzz(
        "tokenizer.json",
        &seeds,
        via_file(&p, |p| {
            if let Ok(t) = zoo_llm::tokenizer::Tokenizer::from_file(p) {
                if let Ok(ids) = t.encode("Hello, world! 12 ünïcode") {
                    let _ = t.decode(&ids);
                }
            }
        }),
    );
}

#[test]
fn fuzz_chat_templates() {
    let cases: serde_json::Value =
        serde_json::from_slice(&read("tests/fixtures/llm/chat_templates.json")).unwrap();
    let seeds: Vec<Vec<u8>> = cases
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["template"].as_str().unwrap().as_bytes().to_vec())
        .collect();
    let special: std::collections::BTreeMap<String, String> =
        [("bos_token", "<s>"), ("eos_token", "</s>")].map(|(k, v)| (k.to_string(), v.to_string())).into();
    let messages = [
        zoo_llm::chat::Message::new("system", "Be brief."),
        zoo_llm::chat::Message::new("user", "Hello!"),
        zoo_llm::chat::Message::new("assistant", "Hi."),
        zoo_llm::chat::Message::new("user", "Bye?"),
    ];
    fuzz("chat-template", &seeds, |bytes| {
        let Ok(source) = std::str::from_utf8(bytes) else { return };
        if let Ok(t) = zoo_llm::chat::ChatTemplate::new(source, special.clone()) {
            let _ = t.render(&messages, true);
        }
    });
}
