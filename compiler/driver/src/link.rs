//! Turning the object file into `model.so` (system C compiler as linker) and `model.a`
//! (written directly, with a symbol index, by ar_archive_writer).
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;

/// The linker driver: `$DLC_LINKER`, else `cc`.
fn linker() -> String {
    std::env::var("DLC_LINKER").unwrap_or_else(|_| "cc".into())
}

/// Links the object files `objects` (the entry points first, then the kernel modules
/// compiled beside them) into the shared library `out`, through temporary `.o` files
/// beside it, removed afterwards.
pub fn shared_library_from(objects: &[Vec<u8>], out: &Path) -> Result<()> {
    let mut paths = Vec::with_capacity(objects.len());
    let mut written = Ok(());
    for (i, object) in objects.iter().enumerate() {
        let obj = if i == 0 { out.with_extension("o") } else { out.with_extension(format!("{i}.o")) };
        written = std::fs::write(&obj, object).with_context(|| format!("writing '{}'", obj.display()));
        paths.push(obj);
        if written.is_err() {
            break;
        }
    }
    let linked = written.and_then(|()| shared_library(&paths, out));
    for obj in &paths {
        let _ = std::fs::remove_file(obj);
    }
    linked
}

/// Links `objs` into the shared library `out`, with libm for `expf`/`tanhf`.
fn shared_library(objs: &[std::path::PathBuf], out: &Path) -> Result<()> {
    let cc = linker();
    let output = Command::new(&cc)
        .arg("-shared")
        .arg("-o")
        .arg(out)
        .args(objs)
        .arg("-lm")
        .arg("-Wl,-z,noexecstack")
        .output()
        .with_context(|| format!("cannot run the linker '{cc}' (set DLC_LINKER to a C compiler driver)"))?;
    if !output.status.success() {
        bail!("linking {} failed ({}):\n{}", out.display(), output.status, String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}

/// Writes a static library holding `objects` (the entry points' first, as `member`,
/// then the kernel modules' as `member` with `.1.o`, `.2.o`...), with a symbol index so
/// linkers need no `ranlib`.
pub fn static_library(objects: &[Vec<u8>], member: &str, out: &Path) -> Result<()> {
    use ar_archive_writer::{write_archive_to_stream, ArchiveKind, NewArchiveMember, DEFAULT_OBJECT_READER};
    let stem = member.strip_suffix(".o").unwrap_or(member);
    let members: Vec<NewArchiveMember> = objects
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let name = if i == 0 { member.to_string() } else { format!("{stem}.{i}.o") };
            NewArchiveMember::new(o.as_slice(), &DEFAULT_OBJECT_READER, name)
        })
        .collect();
    let mut buf = std::io::Cursor::new(Vec::new());
    write_archive_to_stream(&mut buf, &members, ArchiveKind::Gnu, false, None)
        .with_context(|| format!("writing {}", out.display()))?;
    std::fs::write(out, buf.into_inner()).with_context(|| format!("writing {}", out.display()))
}
