//! Turning the object file into `model.so` (system C compiler as linker) and `model.a`
//! (written directly, with a symbol index, by ar_archive_writer).
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;

/// The linker driver: `$DLC_LINKER`, else `cc`.
fn linker() -> String {
    std::env::var("DLC_LINKER").unwrap_or_else(|_| "cc".into())
}

/// Links the object file `object` into the shared library `out` (through a temporary
/// `.o` beside it, removed afterwards).
pub fn shared_library_from(object: &[u8], out: &Path) -> Result<()> {
    let obj = out.with_extension("o");
    std::fs::write(&obj, object).with_context(|| format!("writing '{}'", obj.display()))?;
    let linked = shared_library(&obj, out);
    let _ = std::fs::remove_file(&obj);
    linked
}

/// Links `obj` into the shared library `out`, with libm for `expf`/`tanhf`.
fn shared_library(obj: &Path, out: &Path) -> Result<()> {
    let cc = linker();
    let output = Command::new(&cc)
        .arg("-shared")
        .arg("-o")
        .arg(out)
        .arg(obj)
        .arg("-lm")
        .arg("-Wl,-z,noexecstack")
        .output()
        .with_context(|| format!("cannot run the linker '{cc}' (set DLC_LINKER to a C compiler driver)"))?;
    if !output.status.success() {
        bail!("linking {} failed ({}):\n{}", out.display(), output.status, String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}

/// Writes a static library holding one object, with a symbol index so linkers need no
/// `ranlib`.
pub fn static_library(obj_bytes: &[u8], member: &str, out: &Path) -> Result<()> {
    use ar_archive_writer::{write_archive_to_stream, ArchiveKind, NewArchiveMember, DEFAULT_OBJECT_READER};
    let members = [NewArchiveMember::new(obj_bytes, &DEFAULT_OBJECT_READER, member.to_string())];
    let mut buf = std::io::Cursor::new(Vec::new());
    write_archive_to_stream(&mut buf, &members, ArchiveKind::Gnu, false, None)
        .with_context(|| format!("writing {}", out.display()))?;
    std::fs::write(out, buf.into_inner()).with_context(|| format!("writing {}", out.display()))
}
