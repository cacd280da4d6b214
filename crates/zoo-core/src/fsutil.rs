//! Files: atomic writes, so a crash never leaves a half-written checkpoint, image or WAV.
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, Result};

/// Writes `path` through `write`: first to a temporary file in the same folder, then fsync,
/// then rename over `path` (atomic on POSIX file systems), then fsync of the folder. Missing
/// parent folders are created. On any error the temporary file is removed and `path` is left
/// as it was.
pub fn atomic_write<F>(path: &Path, write: F) -> Result<()>
where
    F: FnOnce(&mut BufWriter<File>) -> Result<()>,
{
    atomic_write_with(path, |tmp| {
        let file = File::create(tmp).map_err(|e| Error::io(path, e))?;
        let mut w = BufWriter::new(file);
        write(&mut w)?;
        w.flush().map_err(|e| Error::io(path, e))?;
        Ok(())
    })
}

/// [`atomic_write`] of a whole buffer (a JSON or text file, a packed token file).
pub fn atomic_write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    atomic_write(path, |w| w.write_all(bytes).map_err(|e| Error::io(path, e)))
}

/// Like [`atomic_write`] for writers that want a path (e.g. libraries that create the file
/// themselves): `write` must create and fill the temporary path it is given.
pub fn atomic_write_with<F>(path: &Path, write: F) -> Result<()>
where
    F: FnOnce(&Path) -> Result<()>,
{
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let name =
        path.file_name().ok_or_else(|| Error::Config(format!("{}: not a file path", path.display())))?;
    // Unique per process and call: two threads saving the same path must not share a file.
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{}.{}.{n}.tmp", name.to_string_lossy(), std::process::id()));
    let result = write(&tmp).and_then(|()| {
        File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| Error::io(path, e))?;
        fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        // Make the rename itself durable; not every file system lets a folder be synced.
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    // The temporary name means nothing to the user: errors name the file they asked for.
    result.map_err(|e| match e {
        Error::Io { path: p, source } if p == tmp => Error::io(path, source),
        Error::BadFile { path: p, msg } if p == tmp => Error::bad_file(path, msg),
        e => e,
    })
}

/// The bytes of a regular file of at most `max_bytes`. A FIFO, a device (`/dev/zero`), a
/// folder or a file larger than that is refused with an error naming it, instead of reading
/// forever or without bound.
pub fn read_regular(path: &Path, max_bytes: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let meta = fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::bad_file(
            path,
            "not a regular file (a folder, pipe or device cannot be read as text)",
        ));
    }
    if meta.len() > max_bytes {
        return Err(Error::bad_file(
            path,
            format!("{} bytes is more than the {max_bytes} allowed", meta.len()),
        ));
    }
    let f = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The size can change between the check and the read: never take more than allowed.
    f.take(max_bytes + 1).read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > max_bytes {
        return Err(Error::bad_file(
            path,
            format!("grew past the {max_bytes} bytes allowed while being read"),
        ));
    }
    Ok(bytes)
}

/// `dir` joined with `name`, a relative path read from a file in `dir` (a shard of a
/// safetensors index, the checkpoint `latest` points at), only when the result stays inside
/// `dir`: `name` must be relative with no `..`, and where the result exists, its real path
/// (symbolic links resolved) must be inside `dir`'s. The error says what `name` is and why it
/// was refused; the caller names the file it came from.
pub fn join_inside(dir: &Path, name: &str) -> std::result::Result<PathBuf, String> {
    use std::path::Component;
    let rel = Path::new(name);
    if name.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(format!("{name:?} is not a plain relative path inside {}", dir.display()));
    }
    let joined = dir.join(rel);
    ensure_inside(dir, &joined)?;
    Ok(joined)
}

/// Checks that `path`, where it exists, resolves (symbolic links followed) to a place inside
/// `dir`; a path that does not exist yet passes.
pub fn ensure_inside(dir: &Path, path: &Path) -> std::result::Result<(), String> {
    let Ok(real) = fs::canonicalize(path) else { return Ok(()) };
    let base = fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if real.starts_with(&base) {
        Ok(())
    } else {
        Err(format!("{} leads outside {} (to {})", path.display(), dir.display(), real.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_regular_refuses_devices_folders_and_big_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        fs::write(&p, "hello").unwrap();
        assert_eq!(read_regular(&p, 5).unwrap(), b"hello");
        let e = read_regular(&p, 4).unwrap_err().to_string();
        assert!(e.contains("a.txt") && e.contains("more than the 4"), "{e}");
        let e = read_regular(dir.path(), 10).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        if Path::new("/dev/zero").exists() {
            let e = read_regular(Path::new("/dev/zero"), 10).unwrap_err().to_string();
            assert!(e.contains("/dev/zero") && e.contains("not a regular file"), "{e}");
        }
        assert!(read_regular(&dir.path().join("none"), 10).is_err());
    }

    #[test]
    fn paths_read_from_files_stay_inside_their_folder() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("model");
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("a.safetensors"), b"x").unwrap();
        fs::write(root.path().join("secret"), b"x").unwrap();
        assert_eq!(join_inside(&dir, "a.safetensors").unwrap(), dir.join("a.safetensors"));
        assert_eq!(join_inside(&dir, "sub/b").unwrap(), dir.join("sub/b"));
        for bad in ["../secret", "/etc/passwd", "sub/../../secret", "./a.safetensors", "", ".."] {
            let err = join_inside(&dir, bad).unwrap_err();
            assert!(err.contains("not a plain relative path"), "{bad}: {err}");
        }
        // A symbolic link inside that leads out is refused, one that stays inside is followed.
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(root.path().join("secret"), dir.join("out")).unwrap();
            std::os::unix::fs::symlink(dir.join("a.safetensors"), dir.join("in")).unwrap();
            let err = join_inside(&dir, "out").unwrap_err();
            assert!(err.contains("leads outside"), "{err}");
            assert!(join_inside(&dir, "in").is_ok());
            std::os::unix::fs::symlink(root.path(), dir.join("up")).unwrap();
            assert!(ensure_inside(&dir, &dir.join("up")).unwrap_err().contains("leads outside"));
        }
    }

    #[test]
    fn writes_whole_files_and_keeps_the_old_one_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/a.txt");
        atomic_write(&p, |w| w.write_all(b"one").map_err(|e| Error::io("x", e))).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"one");
        let r = atomic_write(&p, |w| {
            w.write_all(b"half").unwrap();
            Err(Error::Data("boom".into()))
        });
        assert!(r.is_err());
        assert_eq!(fs::read(&p).unwrap(), b"one");
        let names: Vec<_> = fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1, "temporary file left behind");
    }

    #[test]
    fn errors_name_the_file_asked_for_not_the_temporary_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        // The library wrote to the temporary path it was given and failed there.
        let e = atomic_write_with(&p, |tmp| {
            Err(Error::io(tmp, std::io::Error::new(std::io::ErrorKind::StorageFull, "disk full")))
        })
        .unwrap_err()
        .to_string();
        assert_eq!(e, format!("{}: disk full", p.display()));
        let e = atomic_write_with(&p, |tmp| Err(Error::bad_file(tmp, "writing safetensors: full")))
            .unwrap_err()
            .to_string();
        assert_eq!(e, format!("{}: writing safetensors: full", p.display()));
    }
}
