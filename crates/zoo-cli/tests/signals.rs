//! SIGTERM and SIGINT during `zoo vae train`: the run saves a checkpoint, exits 143 or 130, and
//! `--resume` continues from that checkpoint.
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

/// A small conv VAE on 16x16 shapes that would train for a long time.
const TINY: &str = r#"{
  "description": "test preset",
  "model": {"model": "conv", "in_channels": 3, "image_size": 16, "channels": [8, 16], "hidden_dim": 32,
            "latent_dim": 4, "likelihood": {"kind": "bernoulli"}},
  "train": {"batch_size": 16, "lr": 0.002, "steps": 1000000, "eval_every": 1000000, "iw_samples": 5}
}"#;

fn zoo(models: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_zoo"));
    c.env("ZOO_MODELS", models).args(["--device", "cpu", "--threads", "1"]);
    c
}

/// The steps of the loss records in metrics.jsonl.
fn logged_steps(run: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r.get("loss").is_some())
        .filter_map(|r| r["step"].as_u64())
        .collect()
}

/// Starts a run, sends `sig` once it has logged its first loss, and checks the exit code, the
/// checkpoint and that `--resume` continues from it.
fn stop_with(sig: libc::c_int, want_code: i32) {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    std::fs::create_dir_all(models.join("vae")).unwrap();
    std::fs::write(models.join("vae/tiny.json"), TINY).unwrap();
    let run = dir.path().join("run");
    let r = run.to_string_lossy().into_owned();
    let mut child = zoo(&models)
        .args(["vae", "train", "--data", "shapes", "--preset", "tiny", "--out", &r, "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // JSON lines: the first loss record means the training loop is running.
    loop {
        let line = lines.next().expect("zoo ended before logging a loss").unwrap();
        if line.contains("\"loss\"") {
            break;
        }
    }
    // SAFETY: sends a signal to our own child.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, sig) }, 0);
    for _ in lines {}
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(want_code), "signal {sig}: {:?}; stderr {err}", out.status);
    assert!(!err.contains("panicked"), "{err}");

    let latest = std::fs::read_to_string(run.join("checkpoints/latest")).unwrap();
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("checkpoints").join(latest.trim()).join("state.json")).unwrap(),
    )
    .unwrap();
    let stopped = state["step"].as_u64().unwrap();
    assert!(stopped >= 10, "the first loss record is at step 10: {state}");

    // --resume trains on from the checkpoint to 5 steps further.
    let more = (stopped + 5).to_string();
    let out = zoo(&models)
        .args(["-q", "vae", "train", "--data", "shapes", "--out", &r, "--resume", "--steps", &more])
        .args(["--eval-images", "16", "--iw-images", "4"])
        .output()
        .unwrap();
    assert!(out.status.success(), "resume: {}", String::from_utf8_lossy(&out.stderr));
    let steps = logged_steps(&run);
    assert_eq!(steps.last(), Some(&(stopped + 5)), "{steps:?}");
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "each step logged once: {steps:?}");
}

#[test]
fn sigterm_saves_a_checkpoint_and_exits_143() {
    stop_with(libc::SIGTERM, 143);
}

#[test]
fn sigint_saves_a_checkpoint_and_exits_130() {
    stop_with(libc::SIGINT, 130);
}

/// The loss records of metrics.jsonl: (step, loss).
fn losses(run: &Path) -> Vec<(u64, f64)> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|r| Some((r.get("step")?.as_u64()?, r.get("loss")?.as_f64()?)))
        .collect()
}

#[test]
fn sigkill_at_any_moment_loses_nothing_and_resume_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    std::fs::create_dir_all(models.join("vae")).unwrap();
    // Checkpoints every 60 steps, so kills land before, during and after checkpoint writes.
    let preset =
        TINY.replace("\"steps\": 1000000, \"eval_every\": 1000000", "\"steps\": 1200, \"eval_every\": 60");
    assert!(preset.contains("\"eval_every\": 60"));
    std::fs::write(models.join("vae/tiny.json"), preset).unwrap();
    let train = |run: &Path, resume: bool| {
        let mut c = zoo(&models);
        c.args(["-q", "vae", "train", "--data", "shapes", "--out", &run.to_string_lossy()]).args([
            "--eval-images",
            "16",
            "--iw-images",
            "4",
        ]);
        if resume {
            c.arg("--resume");
        } else {
            c.args(["--preset", "tiny"]);
        }
        c
    };
    // The uninterrupted run.
    let whole = dir.path().join("whole");
    let out = train(&whole, false).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let want = losses(&whole);
    assert_eq!(want.last().map(|r| r.0), Some(1200), "{want:?}");

    // The same run killed with SIGKILL at six moments, each time resumed.
    let run = dir.path().join("killed");
    let mut kills = 0;
    for wait_ms in [700u64, 250, 900, 400, 1300, 600] {
        let mut child = train(&run, run.join("config.json").is_file())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(wait_ms));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL: no handler runs, nothing is saved on the way out
            kills += 1;
        }
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{err}");
        if !run.join("config.json").is_file() {
            // killed before the run folder existed: start it again
            std::fs::remove_dir_all(&run).ok();
        }
    }
    assert!(kills >= 3, "only {kills} of the runs were still going when killed");
    let out = train(&run, run.join("config.json").is_file()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Every logged step once, with the very losses of the uninterrupted run.
    assert_eq!(losses(&run), want);
}
