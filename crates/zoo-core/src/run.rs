//! Run directories: everything one training run leaves behind, in one folder.
//!
//! ```text
//! runs/<name>/
//!   config.json        the resolved configuration the run was started with
//!   metrics.jsonl      one JSON object a line: {"step": N, "loss": ..., "lr": ..., ...}
//!   loss.png           the loss curve(s), redrawn at every checkpoint
//!   samples/           what the run generates as it trains
//!   checkpoints/
//!     step-000500/     model.safetensors, optimizer.safetensors, extra *.safetensors, state.json
//!     latest           the name of the newest complete checkpoint folder
//! ```
//!
//! A checkpoint folder is written under a temporary name and renamed when complete, and
//! `latest` is replaced atomically, so an interrupted save never leaves a broken checkpoint.
//!
//! A run being trained is locked: [`RunDir::create`] holds an exclusive lock on `<run>/.lock`
//! for as long as the `RunDir` lives, so a second process training (or resuming) the same
//! folder is refused instead of interleaving its checkpoints with the first one's. The lock is
//! the operating system's (`flock`), so a crashed process leaves no stale lock behind.
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::fsutil::atomic_write;
use crate::{Error, Result};

#[derive(Debug)]
pub struct RunDir {
    root: PathBuf,
    /// The open lock file of a run being trained (None for a run opened to read).
    _lock: Option<fs::File>,
}

/// Takes the run's lock, or says which folder another process is training.
fn lock(root: &Path) -> Result<fs::File> {
    let path = root.join(".lock");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    if try_lock_exclusive(&f).map_err(|e| Error::io(&path, e))? {
        Ok(f)
    } else {
        Err(Error::Config(format!(
            "{} is being trained by another zoo process; wait for it to finish (or stop it), or choose another --out",
            root.display()
        )))
    }
}

/// `flock(LOCK_EX | LOCK_NB)`: Ok(false) when another open file holds the lock. (std's
/// `File::try_lock` needs Rust 1.89; the workspace supports 1.85.)
#[cfg(unix)]
fn try_lock_exclusive(f: &fs::File) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor this function borrows open for the whole call.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Elsewhere the run is not locked.
#[cfg(not(unix))]
fn try_lock_exclusive(_f: &fs::File) -> std::io::Result<bool> {
    Ok(true)
}

/// What a checkpoint holds besides tensors: where the run was.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CheckpointState {
    pub step: u64,
    pub seed: u64,
    /// Anything else the task wants back on resume (best val loss, ...).
    #[serde(default)]
    pub extra: Value,
}

/// The settings of a run config that a resumed run may change: how long it goes and how
/// often it reports (for [`RunDir::create_or_resume`]), in the layouts the families store.
pub const LENGTH_AND_REPORTING: [&str; 6] = [
    "steps",
    "train.steps",
    "train.sample_every",
    "train.checkpoint_every",
    "train.log_every",
    "train.eval_every",
];

impl RunDir {
    /// Starts a new run in `root`, writing `config`. An existing run there is an error unless
    /// `resume` is set, in which case its config must be the one given (or differ only in keys
    /// the caller allowed to change before calling).
    pub fn create(root: &Path, config: &impl Serialize, resume: bool) -> Result<RunDir> {
        let cfg_path = root.join("config.json");
        let config = serde_json::to_value(config).map_err(|e| Error::Config(e.to_string()))?;
        if resume && !cfg_path.exists() {
            return Err(Error::Config(format!("--resume: {} holds no run to resume", root.display())));
        }
        fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
        let run = RunDir { root: root.to_path_buf(), _lock: Some(lock(root)?) };
        // A run that logged a step or saved a checkpoint is kept; one that failed before its
        // first step (a bad data file, say) left only its config, and a new run replaces it.
        if cfg_path.exists() && !resume && run.started()? {
            return Err(Error::Config(format!(
                "{} already holds a run: pass --resume to continue it, or choose another --out",
                root.display()
            )));
        }
        for d in [run.samples_dir(), run.checkpoints_dir()] {
            // A symbolic link that leads out of the run folder is not written through.
            crate::fsutil::ensure_inside(root, &d).map_err(|msg| Error::bad_file(&d, msg))?;
            fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
        }
        if !resume {
            let text = serde_json::to_string_pretty(&config).map_err(|e| Error::Config(e.to_string()))?;
            atomic_write(&cfg_path, |w| w.write_all(text.as_bytes()).map_err(|e| Error::io(&cfg_path, e)))?;
        }
        Ok(run)
    }

    /// [`RunDir::create`], and with `resume` first the check that the run in `root` is the
    /// same run: its stored config may differ from `config` only in the settings `may_change`
    /// names (dotted paths such as `"steps"` or `"train.sample_every"`: how long a run goes and
    /// how often it reports, not what it computes). The refusal names every other setting
    /// that differs. The one create-or-resume check of every family's training.
    pub fn create_or_resume(
        root: &Path,
        config: &impl Serialize,
        resume: bool,
        may_change: &[&str],
    ) -> Result<RunDir> {
        let config = serde_json::to_value(config).map_err(|e| Error::Config(e.to_string()))?;
        if resume && root.join("config.json").is_file() {
            let old = RunDir::open(root)?.config()?;
            let changed: Vec<String> = config_differences(&old, &config)
                .into_iter()
                .filter(|k| !may_change.iter().any(|m| k == m || k.starts_with(&format!("{m}."))))
                .collect();
            if !changed.is_empty() {
                return Err(Error::Config(format!(
                    "cannot resume {}: it was started with other settings ({}); resume with the run's own \
                     settings or start a new run in another folder",
                    root.display(),
                    changed.join(", ")
                )));
            }
        }
        RunDir::create(root, &config, resume)
    }

    /// Whether the run got anywhere: a checkpoint, or a logged step.
    pub fn started(&self) -> Result<bool> {
        if self.checkpoints_dir().join("latest").exists() {
            return Ok(true);
        }
        Ok(self.metrics()?.iter().any(|r| r.get("step").is_some()))
    }

    /// Opens an existing run (to sample from it, or to read its metrics).
    pub fn open(root: &Path) -> Result<RunDir> {
        if !root.join("config.json").is_file() {
            return Err(Error::Config(format!("{} is not a run directory (no config.json)", root.display())));
        }
        Ok(RunDir { root: root.to_path_buf(), _lock: None })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn samples_dir(&self) -> PathBuf {
        self.root.join("samples")
    }
    pub fn checkpoints_dir(&self) -> PathBuf {
        self.root.join("checkpoints")
    }
    pub fn metrics_path(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }

    pub fn config(&self) -> Result<Value> {
        let p = self.root.join("config.json");
        let text = fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
        serde_json::from_str(&text).map_err(|e| Error::bad_file(&p, e))
    }

    /// Appends one record to metrics.jsonl (flushed at once, so a crash loses nothing logged).
    pub fn log(&self, record: &Value) -> Result<()> {
        let p = self.metrics_path();
        let mut f = OpenOptions::new().create(true).append(true).open(&p).map_err(|e| Error::io(&p, e))?;
        writeln!(f, "{record}").map_err(|e| Error::io(&p, e))
    }

    /// Every record of metrics.jsonl; a torn last line (crash mid-write) is ignored.
    pub fn metrics(&self) -> Result<Vec<Value>> {
        let p = self.metrics_path();
        match fs::read_to_string(&p) {
            Ok(text) => Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(Error::io(&p, e)),
        }
    }

    /// Drops records logged after `step`: a resumed run logs them again.
    pub fn truncate_metrics_after(&self, step: u64) -> Result<()> {
        let kept: Vec<Value> = self
            .metrics()?
            .into_iter()
            .filter(|r| r.get("step").and_then(Value::as_u64).is_none_or(|s| s <= step))
            .collect();
        let p = self.metrics_path();
        atomic_write(&p, |w| {
            for r in &kept {
                writeln!(w, "{r}").map_err(|e| Error::io(&p, e))?;
            }
            Ok(())
        })
    }

    /// Writes a checkpoint for `state.step`: each `(file stem, tensors)` becomes
    /// `<stem>.safetensors`. Returns its folder.
    pub fn save_checkpoint(
        &self,
        state: &CheckpointState,
        parts: &[(&str, Vec<(String, tch::Tensor)>)],
    ) -> Result<PathBuf> {
        let name = format!("step-{:06}", state.step);
        let dir = self.checkpoints_dir().join(&name);
        let tmp = self.checkpoints_dir().join(format!(".{name}.partial"));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        for (stem, tensors) in parts {
            crate::weights::save(&tmp.join(format!("{stem}.safetensors")), tensors, None)?;
        }
        let text = serde_json::to_string_pretty(state).map_err(|e| Error::Config(e.to_string()))?;
        let sp = tmp.join("state.json");
        atomic_write(&sp, |w| w.write_all(text.as_bytes()).map_err(|e| Error::io(&sp, e)))?;
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
        let latest = self.checkpoints_dir().join("latest");
        atomic_write(&latest, |w| w.write_all(name.as_bytes()).map_err(|e| Error::io(&latest, e)))?;
        Ok(dir)
    }

    /// Deletes all but the newest `keep` checkpoint folders (0 keeps all).
    pub fn prune_checkpoints(&self, keep: usize) -> Result<()> {
        if keep == 0 {
            return Ok(());
        }
        let dir = self.checkpoints_dir();
        let mut steps: Vec<PathBuf> = fs::read_dir(&dir)
            .map_err(|e| Error::io(&dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_dir() && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("step-"))
            })
            .collect();
        // Names are zero-padded, so their order is the steps' order.
        steps.sort();
        let n = steps.len().saturating_sub(keep);
        for old in &steps[..n] {
            fs::remove_dir_all(old).map_err(|e| Error::io(old, e))?;
        }
        Ok(())
    }

    /// The newest complete checkpoint: its folder and state.
    pub fn latest_checkpoint(&self) -> Result<Option<(PathBuf, CheckpointState)>> {
        let latest = self.checkpoints_dir().join("latest");
        let name = match fs::read_to_string(&latest) {
            Ok(n) => n.trim().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&latest, e)),
        };
        let dir = crate::fsutil::join_inside(&self.checkpoints_dir(), &name).map_err(|msg| {
            Error::bad_file(&latest, format!("names a checkpoint outside the run folder: {msg}"))
        })?;
        let sp = dir.join("state.json");
        let text = fs::read_to_string(&sp).map_err(|e| Error::io(&sp, e))?;
        let state = serde_json::from_str(&text).map_err(|e| Error::bad_file(&sp, e))?;
        Ok(Some((dir, state)))
    }

    /// Redraws loss.png from metrics.jsonl (every numeric key whose name contains "loss").
    pub fn plot_losses(&self) -> Result<PathBuf> {
        let records = self.metrics()?;
        let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
        for r in &records {
            let (Some(step), Some(obj)) = (r.get("step").and_then(Value::as_f64), r.as_object()) else {
                continue;
            };
            for (k, v) in obj {
                let Some(y) = v.as_f64() else { continue };
                if !k.contains("loss") || !y.is_finite() {
                    continue;
                }
                match series.iter_mut().find(|(n, _)| n == k) {
                    Some((_, pts)) => pts.push((step, y)),
                    None => series.push((k.clone(), vec![(step, y)])),
                }
            }
        }
        let out = self.root.join("loss.png");
        crate::plot::line_chart(&out, "loss", "step", &series)?;
        Ok(out)
    }
}

/// The settings in which two run configs differ, as dotted key paths (`"lr"`, `"model.width"`),
/// for a `--resume` refusal that says what changed. Two strings that name the same existing file
/// or folder (a relative and an absolute path, a trailing `/`) are the same setting.
pub fn config_differences(old: &Value, new: &Value) -> Vec<String> {
    fn walk(prefix: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    let name = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    walk(&name, x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null), out);
                }
            }
            (Value::String(x), Value::String(y)) if x != y => {
                // A path, or a data spec `kind:path` (mnist:DIR) of the same kind.
                let path = |s: &str| match s.split_once(':') {
                    Some((kind, rest)) if !kind.is_empty() && !kind.contains('/') => {
                        (kind.to_string(), rest.to_string())
                    }
                    _ => (String::new(), s.to_string()),
                };
                let ((kx, px), (ky, py)) = (path(x), path(y));
                let same = kx == ky
                    && match (fs::canonicalize(&px), fs::canonicalize(&py)) {
                        (Ok(p), Ok(q)) => p == q,
                        _ => false,
                    };
                if !same {
                    out.push(prefix.to_string());
                }
            }
            _ if a != b => {
                out.push(if prefix.is_empty() { "(the whole config)".into() } else { prefix.to_string() })
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", old, new, &mut out);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn config_differences_name_the_settings_and_see_through_path_spellings() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir(&data).unwrap();
        let (plain, slash) = (data.display().to_string(), format!("{}/", data.display()));
        let old = json!({"data": plain, "lr": 1e-3, "model": {"width": 64, "depth": 2}, "steps": 10});
        let same = json!({"data": slash, "lr": 1e-3, "model": {"width": 64, "depth": 2}, "steps": 10});
        assert!(config_differences(&old, &same).is_empty());
        let other = json!({"data": "elsewhere", "lr": 2e-3, "model": {"width": 32, "depth": 2}, "seed": 1, "steps": 10});
        assert_eq!(config_differences(&old, &other), ["data", "lr", "model.width", "seed"]);
        // A data spec of a kind and a folder: the folder's spelling does not matter, the kind does.
        let spec = |k: &str, p: &str| json!({"data": format!("{k}:{p}")});
        assert!(config_differences(&spec("mnist", &plain), &spec("mnist", &slash)).is_empty());
        assert_eq!(config_differences(&spec("mnist", &plain), &spec("images", &slash)), ["data"]);
    }

    #[test]
    fn resuming_checks_it_is_the_same_run() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("r");
        let cfg = json!({"data": "mnist:a", "steps": 10, "train": {"lr": 1e-3, "sample_every": 5}});
        let run = RunDir::create_or_resume(&root, &cfg, false, &[]).unwrap();
        run.log(&json!({"step": 1, "loss": 1.0})).unwrap();
        drop(run);
        let may = ["steps", "train.sample_every"];
        let longer = json!({"data": "mnist:a", "steps": 20, "train": {"lr": 1e-3, "sample_every": 7}});
        drop(RunDir::create_or_resume(&root, &longer, true, &may).unwrap());
        let other = json!({"data": "mnist:b", "steps": 20, "train": {"lr": 2e-3, "sample_every": 7}});
        let e = RunDir::create_or_resume(&root, &other, true, &may).unwrap_err().to_string();
        assert!(e.contains("other settings (data, train.lr)"), "{e}");
        // The stored config is the first one.
        assert_eq!(RunDir::open(&root).unwrap().config().unwrap(), cfg);
    }

    use super::*;
    use serde_json::json;

    #[test]
    fn create_log_checkpoint_resume() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("r1");
        let run = RunDir::create(&root, &json!({"lr": 1e-3}), false).unwrap();
        // Held by `run` (see the lock test); refused.
        assert!(RunDir::create(&root, &json!({}), false).is_err());
        assert!(RunDir::create(&dir.path().join("r2"), &json!({}), true).is_err());
        for s in 1..=5u64 {
            run.log(&json!({"step": s, "loss": 1.0 / s as f64, "val_loss": 2.0 / s as f64})).unwrap();
        }
        assert!(run.latest_checkpoint().unwrap().is_none());
        let t = tch::Tensor::from_slice(&[1.0f32, 2.0]);
        let st = CheckpointState { step: 3, seed: 9, extra: json!({"best": 0.5}) };
        let ck = run.save_checkpoint(&st, &[("model", vec![("w".into(), t)])]).unwrap();
        assert!(ck.join("model.safetensors").is_file());
        let (d, got) = RunDir::open(&root).unwrap().latest_checkpoint().unwrap().unwrap();
        assert_eq!((d, got), (ck, st.clone()));
        run.truncate_metrics_after(3).unwrap();
        assert_eq!(run.metrics().unwrap().len(), 3);
        let st4 = CheckpointState { step: 4, ..st.clone() };
        run.save_checkpoint(&st4, &[]).unwrap();
        run.save_checkpoint(&CheckpointState { step: 5, ..st.clone() }, &[]).unwrap();
        run.prune_checkpoints(2).unwrap();
        let mut left: Vec<_> =
            fs::read_dir(run.checkpoints_dir()).unwrap().map(|e| e.unwrap().file_name()).collect();
        left.sort();
        assert_eq!(left, ["latest", "step-000004", "step-000005"]);
        assert_eq!(run.latest_checkpoint().unwrap().unwrap().1.step, 5);
        let png = run.plot_losses().unwrap();
        let img = image::open(&png).unwrap();
        assert!(img.width() > 100);
        assert_eq!(run.config().unwrap(), json!({"lr": 1e-3}));
    }

    #[test]
    fn a_run_folder_names_nothing_outside_itself() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("r");
        let run = RunDir::create(&root, &json!({}), false).unwrap();
        // `latest` pointing out of the folder (at a real checkpoint elsewhere) is refused.
        let other = RunDir::create(&dir.path().join("victim"), &json!({}), false).unwrap();
        other.save_checkpoint(&CheckpointState { step: 1, seed: 0, extra: Value::Null }, &[]).unwrap();
        fs::write(run.checkpoints_dir().join("latest"), "../../victim/checkpoints/step-000001").unwrap();
        let e = run.latest_checkpoint().unwrap_err().to_string();
        assert!(e.contains("latest") && e.contains("outside the run folder"), "{e}");
        drop(run);
        // A samples folder that is a symbolic link out of the run is not written through.
        #[cfg(unix)]
        {
            let root2 = dir.path().join("r2");
            fs::create_dir_all(&root2).unwrap();
            std::os::unix::fs::symlink(dir.path(), root2.join("samples")).unwrap();
            let e = RunDir::create(&root2, &json!({}), false).unwrap_err().to_string();
            assert!(e.contains("samples") && e.contains("leads outside"), "{e}");
        }
    }

    #[test]
    fn a_run_that_never_started_is_replaced_one_that_did_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("r");
        // Failed before its first step: only the config was written.
        drop(RunDir::create(&root, &json!({"data": "bad"}), false).unwrap());
        let run = RunDir::create(&root, &json!({"data": "good"}), false).unwrap();
        assert_eq!(run.config().unwrap(), json!({"data": "good"}));
        run.log(&json!({"step": 1, "loss": 1.0})).unwrap();
        drop(run);
        let e = RunDir::create(&root, &json!({}), false).unwrap_err().to_string();
        assert!(e.contains("already holds a run"), "{e}");
    }

    #[test]
    fn a_run_is_trained_by_one_process_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("r");
        let run = RunDir::create(&root, &json!({}), false).unwrap();
        // A second holder (another process, or here another open file) is refused by name.
        let e = RunDir::create(&root, &json!({}), true).unwrap_err().to_string();
        assert!(e.contains("another zoo process") && e.contains(&root.display().to_string()), "{e}");
        // Reading a run needs no lock.
        assert_eq!(RunDir::open(&root).unwrap().config().unwrap(), json!({}));
        drop(run);
        RunDir::create(&root, &json!({}), true).unwrap();
    }

    #[test]
    fn torn_metrics_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path(), &json!({}), false).unwrap();
        run.log(&json!({"step": 1, "loss": 1.0})).unwrap();
        let mut f = OpenOptions::new().append(true).open(run.metrics_path()).unwrap();
        f.write_all(b"{\"step\": 2, \"lo").unwrap();
        assert_eq!(run.metrics().unwrap().len(), 1);
    }
}
