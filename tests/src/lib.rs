//! Shared helpers for the cross-crate tests in this folder.
use std::path::PathBuf;

/// The shared data folder: `$ZOO_SHARED_DATA` when set, else `<workspace root>/../shared/data`
/// when it exists. Tests that need it print a skip message and return when this is `None`,
/// so the suite passes on machines without the data.
pub fn shared_data_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("ZOO_SHARED_DATA") {
        return Some(PathBuf::from(dir));
    }
    // This crate lives at <workspace root>/tests.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
    dir.canonicalize().ok().filter(|d| d.is_dir())
}
