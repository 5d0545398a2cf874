//! Paths that a model file names (ONNX external data, `.dlc` weight files): they must
//! stay inside the model's folder once symlinks are resolved, so a model from a stranger
//! cannot make the compiler read other files (`../../etc/passwd`, or a symlink placed
//! next to it pointing out).

use std::path::{Component, Path, PathBuf};

/// `rel` resolved against `base` (the model's folder), refused unless it is relative,
/// has no `..`, and its real path (symlinks resolved) is a regular file inside `base`'s
/// real path. Errors say what is wrong with the path without repeating it (callers
/// name it).
pub fn confined(base: &Path, rel: &str) -> Result<PathBuf, String> {
    let p = Path::new(rel);
    if p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err("it must be a relative path inside the model's folder".into());
    }
    let base = if base.as_os_str().is_empty() { Path::new(".") } else { base };
    let path = base.join(p);
    let real = path.canonicalize().map_err(|e| e.to_string())?;
    let real_base = base.canonicalize().map_err(|e| format!("cannot open the folder '{}': {e}", base.display()))?;
    if !real.starts_with(&real_base) {
        return Err(format!(
            "it resolves to '{}', outside the model's folder '{}' (through a symlink)",
            real.display(),
            real_base.display()
        ));
    }
    if !real.is_file() {
        return Err("it is not a regular file".into());
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_folder() {
        let d = tempfile_dir();
        std::fs::write(d.join("w.bin"), b"x").unwrap();
        std::fs::create_dir_all(d.join("sub")).unwrap();
        assert!(confined(&d, "w.bin").is_ok());
        assert!(confined(&d, "../w.bin").unwrap_err().contains("relative path inside"));
        assert!(confined(&d, "/etc/passwd").unwrap_err().contains("relative path inside"));
        assert!(confined(&d, "sub").unwrap_err().contains("not a regular file"));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/etc/hostname", d.join("link")).unwrap();
            assert!(confined(&d, "link").unwrap_err().contains("outside the model's folder"));
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("dlc-paths-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
