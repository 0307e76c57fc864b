//! Writing files so that a crash or Ctrl-C never leaves half of one: every weights file,
//! checkpoint and manifest the CLI writes goes through [`write_atomic`] (native only).

use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` by way of a temporary file beside it (`<name>.partial`), flushed to
/// disk (fsync) before it is renamed over `path`: readers see the old file or the whole new one.
/// Errors name the file concerned.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut name = path.file_name().ok_or_else(|| format!("{}: not a file path", path.display()))?.to_os_string();
    name.push(".partial");
    let tmp: PathBuf = path.with_file_name(name);
    let mut file = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let written = file.write_all(bytes).and_then(|_| file.sync_all()).map_err(|e| format!("{}: {e}", tmp.display()));
    drop(file);
    let done = written.and_then(|_| std::fs::rename(&tmp, path).map_err(|e| format!("renaming {} to {}: {e}", tmp.display(), path.display())));
    if done.is_err() {
        // A full disk or a failed rename leaves no half-written temporary behind.
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_whole_file_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("segclip-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("weights.safetensors");
        write_atomic(&path, b"first version").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert!(!dir.join("weights.safetensors.partial").exists());
        let e = write_atomic(&dir.join("missing-folder/x.bin"), b"x").unwrap_err();
        assert!(e.contains("x.bin.partial"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
