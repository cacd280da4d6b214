//! Helpers the CLI tests share: the binary with the flags every test sets, and the one-line
//! error check.
use assert_cmd::Command;

/// `zoo --device cpu --threads 1`.
pub fn zoo() -> Command {
    let mut c = Command::cargo_bin("zoo").unwrap();
    c.args(["--device", "cpu", "--threads", "1"]);
    c
}

/// Runs zoo and checks it failed with `code` and one line `error: ...` containing `want`, with
/// no panic or libtorch backtrace.
pub fn fails(args: &[&str], code: i32, want: &str) {
    let out = zoo().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(code), "{args:?}: stderr {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: want one line, got {err}");
    assert!(lines[0].starts_with("error: ") && err.contains(want), "{args:?}: want {want:?} in {err}");
    for bad in ["panicked", "backtrace", "Exception raised from", "c10::"] {
        assert!(!err.contains(bad), "{args:?}: {err}");
    }
}
