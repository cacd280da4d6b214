//! Build script shared by every crate of the workspace (each names it with `build = ...`).
//!
//! libtorch is a set of shared libraries in the torch wheel (.venv/libtorch/lib, made by
//! tools/setup.sh). This puts that folder in the rpath of each binary, test and example, so they
//! run from any directory without LD_LIBRARY_PATH. `LIBTORCH` comes from .cargo/config.toml.
//!
//! CUDA: the wheel ships libtorch_cuda.so. tch's build asks to link it, but the linker's default
//! `--as-needed` drops it because no symbol of ours refers to it; zoo-core loads it with dlopen
//! only when a CUDA device is asked for, which keeps CPU runs free of its start-up time and memory.
use std::path::PathBuf;

pub fn main() {
    tch_version();
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let Some(libtorch) = std::env::var_os("LIBTORCH") else {
        return;
    };
    let lib = PathBuf::from(libtorch).join("lib");
    // Resolve the .venv/libtorch symlink so the rpath names the real folder.
    let lib = lib.canonicalize().unwrap_or(lib);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
}

/// Hands the tch version locked in Cargo.lock to the code as `ZOO_TCH_VERSION` (`zoo info`).
fn tch_version() {
    let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR") else { return };
    let lock = PathBuf::from(dir).ancestors().map(|d| d.join("Cargo.lock")).find(|p| p.is_file());
    let Some(lock) = lock else { return };
    println!("cargo:rerun-if-changed={}", lock.display());
    let text = std::fs::read_to_string(&lock).unwrap_or_default();
    let version = text
        .split("[[package]]")
        .find(|p| p.contains("\nname = \"tch\"\n"))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
        .map(|v| v.trim_matches('"').to_string());
    if let Some(v) = version {
        println!("cargo:rustc-env=ZOO_TCH_VERSION={v}");
    }
}
