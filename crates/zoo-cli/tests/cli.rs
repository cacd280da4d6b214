//! The `zoo` binary end to end: versions, usage errors and bad input files.
use std::path::Path;

use assert_cmd::Command;

fn zoo() -> Command {
    Command::cargo_bin("zoo").unwrap()
}

/// Runs zoo and checks it failed with `code` and one line `error: ...` containing `want`,
/// without a panic or a C++ backtrace.
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

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn info_reports_libtorch_2_13() {
    let out = zoo().args(["--device", "cpu", "info"]).output().unwrap();
    assert!(out.status.success());
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(s.contains("libtorch 2.13.0"), "{s}");
    assert!(s.contains("tch 0.26"), "{s}");
    assert!(s.contains("CUDA: "), "{s}");
    assert!(s.contains("decoding kernels: "), "{s}");

    let out = zoo().args(["info", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["libtorch"].as_str().unwrap().starts_with("2.13.0"));
    assert!(v["threads"].as_u64().unwrap() >= 1);
    assert!(v["gemv_kernel"].is_boolean());
}

#[test]
fn presets_are_built_in_and_the_models_folder_is_found_and_reported() {
    let info = |cmd: &mut Command| -> serde_json::Value {
        let out = cmd.args(["info", "--json"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // From the build: the source tree, every preset on disk.
    let v = info(zoo().env_remove("ZOO_MODELS"));
    assert_eq!(v["models"]["source"], "SourceTree", "{v}");
    assert!(v["built_in_presets"].as_array().unwrap().is_empty(), "{v}");
    let presets = v["presets"].clone();
    // ZOO_MODELS naming an empty folder: the same presets, all built in, and they work.
    let empty = tempfile::tempdir().unwrap();
    let v = info(zoo().env("ZOO_MODELS", empty.path()));
    assert_eq!(v["models"]["source"], "Env");
    assert_eq!(v["presets"], presets);
    assert_eq!(v["built_in_presets"], presets);
    let out = zoo()
        .env("ZOO_MODELS", empty.path())
        .args(["--device", "cpu", "-q", "llm", "generate", "--model", "tiny-gpt2", "--prompt", "To be"])
        .args(["--max-new-tokens", "4", "--temperature", "0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text =
        String::from_utf8_lossy(&zoo().env("ZOO_MODELS", empty.path()).arg("info").output().unwrap().stdout)
            .to_string();
    assert!(text.contains("llm/tiny-gpt2 (built in)"), "{text}");
    // A binary with models/ beside it uses that folder; a preset there replaces the built-in one.
    let bin = tempfile::tempdir().unwrap();
    let exe = bin.path().join("zoo");
    std::fs::copy(env!("CARGO_BIN_EXE_zoo"), &exe).unwrap();
    std::fs::create_dir_all(bin.path().join("models/llm")).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/llm/tiny-gpt2.json"),
        bin.path().join("models/llm/tiny-gpt2.json"),
    )
    .unwrap();
    let v = info(Command::new(&exe).env_remove("ZOO_MODELS"));
    assert_eq!(v["models"]["source"], "NextToBinary", "{v}");
    assert_eq!(v["presets"], presets);
    let built: Vec<String> =
        v["built_in_presets"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect();
    assert!(!built.contains(&"llm/tiny-gpt2".to_string()) && built.contains(&"llm/gpt2".to_string()), "{v}");
}

#[test]
fn zoo_kernels_libtorch_turns_the_custom_kernels_off_and_changes_no_result() {
    let info = |kernels: Option<&str>| -> serde_json::Value {
        let mut c = zoo();
        if let Some(k) = kernels {
            c.env("ZOO_KERNELS", k);
        }
        serde_json::from_slice(&c.args(["info", "--json"]).output().unwrap().stdout).unwrap()
    };
    assert_eq!(info(None)["kernels"], "zoo");
    let off = info(Some("libtorch"));
    assert_eq!(off["kernels"], "libtorch");
    assert_eq!(off["gemv_kernel"], false);
    // A random GPT-2 decodes greedily to the same text on zoo's kernels as on libtorch's.
    let generate = |kernels: &str| {
        let out = zoo()
            .env("ZOO_KERNELS", kernels)
            .args(["--device", "cpu", "-q", "llm", "generate", "--model", "tiny-gpt2", "--prompt", "To be"])
            .args(["--max-new-tokens", "12", "--temperature", "0"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    assert_eq!(generate("zoo"), generate("libtorch"));
}

#[test]
fn a_closed_pipe_ends_quietly() {
    // `zoo info | head -0`: the reader is gone before zoo prints.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_zoo"))
        .arg("info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn threads_flag_is_applied() {
    let out = zoo().args(["--threads", "1", "info", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["threads"], 1);
}

#[test]
fn threads_above_the_cores_are_capped_with_a_note() {
    let cores = std::thread::available_parallelism().unwrap().get();
    let out = zoo().args(["--threads", "10000", "info", "--json"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["threads"], cores);
    assert!(
        err.contains(&format!("--threads 10000: this machine has {cores} cores; using {cores}")),
        "{err}"
    );
    // Beyond i32 too: capped, not an error.
    let out = zoo().args(["-q", "--threads", "99999999999", "info", "--json"]).output().unwrap();
    assert!(out.status.success() && out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    fails(&["--bogus", "info"], 2, "--bogus");
    fails(&["frobnicate"], 2, "frobnicate");
    fails(&["--device", "tpu", "info"], 2, "unknown device 'tpu'");
    fails(&["--dtype", "f8", "info"], 2, "unknown dtype 'f8'");
    fails(&["--seed", "minus-one", "info"], 2, "minus-one");
    fails(&["completions", "cmd.exe"], 2, "cmd.exe");
}

#[test]
fn help_and_version_succeed() {
    let out = zoo().arg("--help").output().unwrap();
    assert!(out.status.success());
    let s = String::from_utf8(out.stdout).unwrap();
    for cmd in ["info", "demo", "inspect", "completions", "--device", "--seed", "--threads"] {
        assert!(s.contains(cmd), "--help lacks {cmd}");
    }
    let out = zoo().arg("--version").output().unwrap();
    assert!(String::from_utf8(out.stdout).unwrap().starts_with("zoo "));
}

#[test]
fn cuda_without_a_gpu_is_a_clear_error() {
    if zoo_core::device::cuda_device_count() > 0 {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o").to_string_lossy().into_owned();
    fails(&["--device", "cuda", "demo", "--out", &out], 1, "use --device cpu");
    assert!(!dir.path().join("o").exists(), "nothing is written on error");
}

#[test]
fn bad_files_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A valid file to damage.
    let good = d.join("good.safetensors");
    let t = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
    zoo_core::weights::save(&good, &[("w".to_string(), t)], None).unwrap();
    let bytes = std::fs::read(&good).unwrap();

    fails(&["inspect", &d.join("missing.safetensors").to_string_lossy()], 1, "no such file");
    let trunc = write(d, "trunc.safetensors", &bytes[..bytes.len() - 4]);
    fails(&["inspect", &trunc], 1, "truncated");
    let mut corrupt = bytes.clone();
    corrupt[8] = b'!';
    let corrupt = write(d, "corrupt.safetensors", &corrupt);
    fails(&["inspect", &corrupt], 1, "corrupt safetensors header");
    // A JPEG on which the decoder (zune-jpeg 0.5.15) panics: one line, no panic message.
    let jpeg =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/core/zune-jpeg-avx2-panic.jpg");
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        fails(&["inspect", &jpeg.to_string_lossy()], 1, "cannot decode image");
    }
    let pickle = write(d, "model.pt", b"\x80\x02}q\x00.");
    fails(&["inspect", &pickle], 1, "tools/convert_to_safetensors.py");
    let zipped = write(d, "weights.safetensors", b"PK\x03\x04 torch zip");
    fails(&["inspect", &zipped], 1, "pickle");
    let wav = write(d, "bad.wav", b"RIFX\x00\x00\x00\x00WAVEfmt garbage");
    fails(&["inspect", &wav], 1, "bad.wav");
    let short_wav = write(d, "short.wav", b"RIFF");
    fails(&["inspect", &short_wav], 1, "short.wav");
    let png = write(d, "bad.png", b"\x89PNG\r\n\x1a\nnot really");
    fails(&["inspect", &png], 1, "bad.png");

    let out = zoo().args(["inspect", &good.to_string_lossy()]).output().unwrap();
    assert!(out.status.success());
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(s.contains("1 tensors, 3 parameters"), "{s}");
}

#[test]
fn demo_writes_the_core_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let o = zoo().args(["--device", "cpu", "-q", "demo", "--out"]).arg(&out).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stderr.is_empty(), "-q prints nothing to stderr");
    let wav = zoo_core::audio::read_wav(&out.join("core/chirp.wav")).unwrap();
    assert_eq!(wav.sample_rate, 22050);
    assert!((wav.duration_secs() - 3.0).abs() < 1e-3);
    let mel = image::open(out.join("core/chirp-mel.png")).unwrap();
    assert_eq!(mel.height(), 80 * 3);
    let grid = image::open(out.join("core/shapes.png")).unwrap();
    assert!(grid.width() >= 8 * 32);
    // The shipped text-to-speech model says the ten digits: seconds of 22.05 kHz audio.
    let digits = zoo_core::audio::read_wav(&out.join("tts/digits.wav")).unwrap();
    assert_eq!(digits.sample_rate, 22050);
    assert!(digits.duration_secs() > 2.0, "{}", digits.duration_secs());
    assert!(image::open(out.join("tts/digits.png")).unwrap().height() == 80);
    // The shipped models draw without training: the GAN's 100 digits (10 x 10 cells of 32
    // pixels and the grid's padding), the VAE's 64 samples and its reconstructions of 32 of
    // the GAN's digits (inputs over outputs, 12 a row).
    let s = String::from_utf8_lossy(&o.stdout);
    for (part, file, side) in [
        ("gan", "digits.png", 10 * 34 + 2),
        ("vae", "samples.png", 8 * 30 + 2),
        ("vae", "reconstructions.png", 12 * 30 + 2),
        ("flow", "glow-digits.png", 8 * 30 + 2),
    ] {
        let p = out.join(part).join(file);
        assert!(s.contains(&p.display().to_string()), "{} not listed in {s}", p.display());
        let img = image::open(&p).unwrap();
        assert_eq!(img.width(), side, "{}", p.display());
    }
    // The shipped Shakespeare model wrote 600 characters after its prompt.
    let play = std::fs::read_to_string(out.join("llm/sample.txt")).unwrap();
    let text = play.split_once("ROMEO:\n").map(|(_, t)| t).unwrap_or_else(|| panic!("{play}"));
    assert!(text.trim_end().chars().count() >= 550, "{play}");
    report_renders_in_chromium(&out.join("report.html"));
}

/// report.html names every part, and renders in headless Chromium with every picture and
/// audio element loaded, no console message, and a screenshot that is not blank. Chromium is
/// installed by tools/setup.sh; where it is missing the check is skipped with a note, unless
/// ZOO_REQUIRE_CHROMIUM is set (.ci/run sets it).
fn report_renders_in_chromium(html: &Path) {
    let text = std::fs::read_to_string(html).unwrap();
    for part in
        ["The shared core", "GAN", "VAE", "Flows", "LLM", "Diffusion", "Text to image", "Text to speech"]
    {
        assert!(text.contains(&format!("data-section=\"{part}")), "no {part} section in {}", html.display());
    }
    let Some(chromium) = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| std::process::Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()))
    else {
        assert!(
            std::env::var_os("ZOO_REQUIRE_CHROMIUM").is_none(),
            "ZOO_REQUIRE_CHROMIUM is set but no chromium"
        );
        eprintln!("note: no chromium: report.html was not rendered (tools/setup.sh installs it)");
        return;
    };
    let dir = html.parent().unwrap();
    let headless = |extra: &[&str], page: &Path| {
        let o = std::process::Command::new(chromium)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--mute-audio"])
            .args([
                "--enable-logging=stderr",
                "--v=0",
                "--virtual-time-budget=10000",
                "--window-size=1200,2400",
            ])
            .args(extra)
            .arg(format!("file://{}", page.display()))
            .output()
            .unwrap();
        assert!(o.status.success(), "chromium failed: {}", String::from_utf8_lossy(&o.stderr));
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        let console: Vec<&str> = err.lines().filter(|l| l.contains("CONSOLE")).collect();
        assert!(console.is_empty(), "console messages from {}: {console:?}", page.display());
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    // A copy with a check appended: every picture decoded, every audio element's metadata read.
    let probe = dir.join("report-probe.html");
    let check = "<script>window.addEventListener('load',()=>{const bad=[];\
        document.querySelectorAll('img').forEach((i,k)=>{if(!i.complete||i.naturalWidth===0)bad.push('img'+k)});\
        document.querySelectorAll('audio').forEach((a,k)=>{if(a.error||a.readyState<1)bad.push('audio'+k)});\
        document.body.setAttribute('data-check',bad.length?bad.join(','):'ok:'+document.images.length+':'+\
        document.querySelectorAll('audio').length)});</script>";
    std::fs::write(&probe, text.replace("</body>", &format!("{check}</body>"))).unwrap();
    let dom = headless(&["--dump-dom"], &probe);
    let start = dom.find("data-check=\"").expect("the check did not run") + 12;
    let verdict = &dom[start..start + dom[start..].find('"').unwrap()];
    assert!(verdict.starts_with("ok:"), "broken elements in report.html: {verdict}");
    let counts: Vec<usize> = verdict[3..].split(':').map(|n| n.parse().unwrap()).collect();
    assert!(counts[0] >= 10 && counts[1] >= 3, "images and audio elements: {counts:?}");
    // A screenshot of the page itself: not blank (many pixels far from the white background).
    let shot = dir.join("report.png");
    headless(&[&format!("--screenshot={}", shot.display())], html);
    let img = image::open(&shot).unwrap().to_luma8();
    let dark = img.pixels().filter(|p| p.0[0] < 128).count();
    assert!(dark * 50 > img.pixels().len(), "the screenshot is nearly blank: {dark} dark pixels");
}

#[test]
fn training_refuses_a_dtype_it_would_ignore() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = out.to_str().unwrap();
    let cases: [&[&str]; 6] = [
        &["vae", "train", "--data", "shapes", "--out", o],
        &["llm", "train", "--data", "x.txt", "--out", o],
        &["diffusion", "train", "--data", "shapes", "--out", o],
        &["txt2img", "train", "--recipe", "scenes", "--out", o],
        &["tts", "train", "--corpus", "c", "--preset", "glow-tts-tiny", "--out", o],
        &["eval", "train-listener", "--data", "fsdd", "--out", o],
    ];
    for args in cases {
        let mut all = vec!["--dtype", "bf16"];
        all.extend_from_slice(args);
        fails(&all, 1, "trains in f32");
    }
    assert!(!out.exists());
}

#[test]
fn convert_writes_f16_files_and_folders() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = d.join("model");
    std::fs::create_dir_all(model.join("unet")).unwrap();
    std::fs::write(model.join("config.json"), "{}").unwrap();
    let w = tch::Tensor::from_slice(&[0.5f32, -2.0, 3.25]);
    zoo_core::weights::save(&model.join("unet/w.safetensors"), &[("w".to_string(), w)], None).unwrap();
    let file = model.join("unet/w.safetensors").to_string_lossy().into_owned();

    let half = d.join("half.safetensors");
    let o = zoo().args(["convert", &file, "--to", "f16", "--out"]).arg(&half).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = zoo_core::weights::load(&half).unwrap();
    assert_eq!(t[0].1.kind(), tch::Kind::Half);
    assert_eq!(Vec::<f32>::try_from(t[0].1.to_kind(tch::Kind::Float)).unwrap(), vec![0.5, -2.0, 3.25]);

    // A folder: weights converted, other files and sub-folders copied.
    let out = d.join("model-f16");
    let o =
        zoo().args(["convert", &model.to_string_lossy(), "--to", "f16", "--out"]).arg(&out).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read_to_string(out.join("config.json")).unwrap(), "{}");
    assert_eq!(
        zoo_core::weights::load(&out.join("unet/w.safetensors")).unwrap()[0].1.kind(),
        tch::Kind::Half
    );

    fails(
        &["convert", &model.to_string_lossy(), "--to", "f16", "--out", &out.to_string_lossy()],
        1,
        "already exists",
    );
    fails(&["convert", &file, "--to", "f16", "--out", &file], 1, "is the input file");
    fails(&["convert", &file, "--to", "int8", "--out", "x.safetensors"], 2, "int8");
}

#[test]
fn usage_errors_point_at_the_subcommands_help_with_suggestions() {
    let e = fails(&["gan", "sample", "--num-sample", "3"], 2, "did you mean '--num-samples'?");
    assert!(e.contains("(see `zoo gan sample --help`)"), "{e}");
    let e = fails(&["gan", "smple"], 2, "did you mean 'sample'?");
    assert!(e.contains("(see `zoo gan --help`)"), "{e}");
    let e = fails(
        &["--device", "cpu", "gan", "sample", "--model", "x", "--out", "y.png", "--class", "q"],
        2,
        "'q'",
    );
    assert!(e.contains("(see `zoo gan sample --help`)"), "{e}");
    let e = fails(&["gna"], 2, "unrecognized subcommand");
    assert!(e.contains("(see `zoo --help`)"), "{e}");
}

#[test]
fn every_family_prints_its_architecture_as_a_table_and_as_json() {
    let cases: [(&[&str], &str); 6] = [
        (&["llm", "arch", "--model", "tiny-gpt2"], "params"),
        (&["gan", "arch", "--preset", "dcgan-mnist"], "generator"),
        (&["vae", "arch", "--preset", "conv-mnist"], "params"),
        (&["flow", "arch", "--preset", "glow-mnist"], "params"),
        (&["flow", "arch", "--preset", "waveglow-8k-small"], "params"),
        (&["diffusion", "arch", "--model", "tiny"], "params"),
    ];
    for (args, key) in cases {
        let o = zoo().args(["--device", "cpu"]).args(args).output().unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success() && text.contains("total"), "{args:?}: {text}");
        let o = zoo().args(["--device", "cpu"]).args(args).arg("--json").output().unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let total = if key == "generator" { &v["generator"]["params"] } else { &v["params"] };
        assert!(total.as_i64().unwrap_or(0) > 0, "{args:?}: {v}");
        // Where the table lists parts, they add up to the total.
        if let Some(parts) = v["parts"].as_array() {
            let sum: i64 = parts
                .iter()
                .filter(|p| p["depth"].as_u64().unwrap_or(0) == 0)
                .filter_map(|p| p["params"].as_i64())
                .sum();
            assert_eq!(sum, total.as_i64().unwrap(), "{args:?}");
        }
    }
}

#[test]
fn every_family_trains_with_the_same_flags() {
    for family in ["llm", "gan", "vae", "flow", "diffusion", "tts"] {
        let o = zoo().args([family, "train", "--help"]).output().unwrap();
        let help = String::from_utf8_lossy(&o.stdout);
        for flag in ["--data", "--out", "--steps", "--eval-every", "--resume", "--json"] {
            // tts names its data --corpus (--data is its alias, hidden from the help).
            let flag = if family == "tts" && flag == "--data" { "--corpus" } else { flag };
            assert!(help.contains(flag), "zoo {family} train has no {flag}:\n{help}");
        }
        let preset = if family == "llm" { "--model" } else { "--preset" };
        assert!(help.contains(preset), "zoo {family} train has no {preset}");
    }
    // The other spellings are accepted: llm's --preset and text:PATH, the GAN's --sample-every.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run").to_string_lossy().into_owned();
    fails(
        &["-q", "llm", "train", "--preset", "tiny-gpt2", "--data", "text:/no/such.txt", "--out", &out],
        1,
        "/no/such.txt",
    );
    let e = fails(
        &["gan", "train", "--data", "cifar:/x", "--preset", "dcgan-32", "--sample-every", "5", "--out", &out],
        1,
        "cifar",
    );
    assert!(!e.contains("unexpected argument"), "{e}");
}

#[test]
fn completions_print_a_script() {
    let out = zoo().args(["completions", "bash"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8(out.stdout).unwrap().contains("complete"));
}

/// A 16-bit mono PCM WAV header at 16 kHz holding `data.len()` bytes of samples.
fn wav_bytes(data: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes()); // PCM
    b.extend_from_slice(&1u16.to_le_bytes()); // mono
    b.extend_from_slice(&16_000u32.to_le_bytes());
    b.extend_from_slice(&32_000u32.to_le_bytes()); // bytes per second
    b.extend_from_slice(&2u16.to_le_bytes()); // block align
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&(data.len() as u32).to_le_bytes());
    b.extend_from_slice(data);
    b
}

#[test]
fn inspect_gives_the_facts_of_an_empty_wav() {
    let dir = tempfile::tempdir().unwrap();
    let empty = write(dir.path(), "empty.wav", &wav_bytes(&[]));
    let out = zoo().args(["inspect", &empty]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(s.contains("1 channel(s), 16000 Hz, 0 samples (0.000 s)"), "{s}");

    // Two samples, 0.5 and -0.25: peak 0.5.
    let mut data = Vec::new();
    data.extend_from_slice(&16384i16.to_le_bytes());
    data.extend_from_slice(&(-8192i16).to_le_bytes());
    let two = write(dir.path(), "two.wav", &wav_bytes(&data));
    let out = zoo().args(["inspect", &two]).output().unwrap();
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(s.contains("2 samples (0.000 s), peak 0.500"), "{s}");
}

#[test]
fn out_goes_into_a_folder_that_exists() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 0.5 s of a 440 Hz tone.
    let data: Vec<u8> = (0..8000)
        .flat_map(|i| {
            ((f64::sin(i as f64 * 440.0 * std::f64::consts::TAU / 16000.0) * 8000.0) as i16).to_le_bytes()
        })
        .collect();
    let wav = write(d, "tone.wav", &wav_bytes(&data));

    // An absolute path into a missing folder: refused, and nothing is created.
    let missing = d.join("missing/dir/x.png");
    let m = missing.to_string_lossy().into_owned();
    let want = format!("--out {m}: folder {} does not exist", d.join("missing/dir").display());
    fails(&["flow", "mel", "--input", &wav, "--out", &m], 1, &want);
    assert!(!d.join("missing").exists(), "a folder was created");
    // A run folder: its last component may be new, its parent must exist.
    let run = d.join("missing/run").to_string_lossy().into_owned();
    fails(&["vae", "train", "--data", "shapes", "--preset", "tiny", "--out", &run], 1, "does not exist");
    assert!(!d.join("missing").exists(), "a folder was created");
    // A file where the folder should be.
    let file_dir = write(d, "plain", b"x");
    fails(&["flow", "mel", "--input", &wav, "--out", &format!("{file_dir}/x.png")], 1, "is not a folder");

    // Inside the current folder, missing folders are made (`--out runs/...` in a fresh checkout).
    let out = zoo()
        .current_dir(d)
        .args(["flow", "mel", "--input", &wav, "--out", "pics/mel.png"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(d.join("pics/mel.png").is_file());

    // vocode writes WAV bytes, so only into a .wav name.
    fails(&["flow", "vocode", "--model", "nomodel", "--input", &wav, "--out", "x.mp3"], 1, "--out x.mp3");

    // A write that fails names the user's file, not the temporary one beside it.
    let err =
        fails(&["flow", "mel", "--input", &wav, "--out", "/proc/zoo-test.png"], 1, "/proc/zoo-test.png: ");
    assert!(!err.contains(".tmp"), "{err}");
}
