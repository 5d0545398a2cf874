//! Artifacts that defend themselves (issue 19): a manifest edited after compiling, a
//! library truncated, bit-flipped or taken from another model's artifact are errors
//! from `Model::load`, never a crash or a run on wrong buffer sizes.
use dlc_driver::{compile, Emit, Options, Silent};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn build(model: &str, name: &str, dir: &Path) {
    let opts = Options { emit: vec![Emit::So], name: Some(name.into()), ..Options::default() };
    compile(&repo().join(model), dir, &opts, &Silent).unwrap();
}

fn load_err(dir: &Path) -> String {
    match dlc_runtime::Model::load(dir) {
        Ok(_) => panic!("'{}' loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

/// A copy of artifact `src` with its manifest changed by `edit`.
fn edited(src: &Path, dst: &Path, edit: impl FnOnce(&mut dlc_artifact::Manifest)) {
    std::fs::create_dir_all(dst).unwrap();
    for f in ["model.so", "model.manifest", "manifest.json"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    let mut m = dlc_artifact::Manifest::read_dir(dst).unwrap();
    edit(&mut m);
    m.write_dir(dst).unwrap();
}

#[test]
fn tampered_artifacts_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("a");
    build("examples/dsl/mlp.dlc", "m", &a);
    assert!(dlc_runtime::Model::load(&a).is_ok());

    // Manifests edited after compiling: the code's signature disagrees.
    type Edit = Box<dyn FnOnce(&mut dlc_artifact::Manifest)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("no outputs", Box::new(|m| m.outputs.clear())),
        ("input shape", Box::new(|m| m.inputs[0].shape[1].fixed = Some(10_000))),
        ("input dtype", Box::new(|m| m.inputs[0].dtype = "f64".into())),
        ("output name", Box::new(|m| m.outputs[0].name = "other".into())),
        ("weights hash", Box::new(|m| m.weights_sha256 = "0".repeat(64))),
    ];
    for (what, edit) in cases {
        let d = t.path().join(what.replace(' ', "_"));
        edited(&a, &d, edit);
        let e = load_err(&d);
        assert!(e.contains("the code does not match model.manifest"), "{what}: {e}");
    }

    // The library truncated, or one bit flipped: refused before dlopen.
    for (what, change) in [("truncated", 0usize), ("bit flip", 1)] {
        let d = t.path().join(what.replace(' ', "_"));
        edited(&a, &d, |_| {});
        let mut so = std::fs::read(d.join("model.so")).unwrap();
        if change == 0 {
            so.truncate(so.len() / 2);
        } else {
            let i = so.len() / 3;
            so[i] ^= 0x10;
        }
        std::fs::write(d.join("model.so"), so).unwrap();
        let e = load_err(&d);
        assert!(e.contains("SHA-256 differs"), "{what}: {e}");
    }

    // Another model's library under the same symbol prefix: its hash differs, and with
    // the hash check turned off its signature does.
    let b = t.path().join("b");
    build("examples/dsl/cnn_residual.dlc", "m", &b);
    let d = t.path().join("swapped");
    edited(&a, &d, |_| {});
    std::fs::copy(b.join("model.so"), d.join("model.so")).unwrap();
    assert!(load_err(&d).contains("SHA-256 differs"));
    let mut m = dlc_artifact::Manifest::read_dir(&d).unwrap();
    m.library_sha256.clear();
    m.write_dir(&d).unwrap();
    let e = load_err(&d);
    assert!(e.contains("the code does not match model.manifest") && e.contains("model"), "{e}");

    // CPU features the machine lacks (where there is one to name).
    #[cfg(target_arch = "x86_64")]
    if !std::arch::is_x86_feature_detected!("avx512fp16") {
        let d = t.path().join("features");
        edited(&a, &d, |m| m.cpu_features.push_str(",+avx512fp16"));
        assert!(load_err(&d).contains("avx512fp16"));
    }
}

/// A CUDA artifact's launch table is bounds-checked against its manifest and weights.
#[test]
fn tampered_launch_tables_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("cuda");
    let opts = Options { target: Some("nvptx64-nvidia-cuda".into()), ..Options::default() };
    compile(&repo().join("examples/dsl/mlp.dlc"), &a, &opts, &Silent).unwrap();
    assert!(dlc_runtime::GpuModel::load(&a).is_ok());
    let table = std::fs::read_to_string(a.join("launch.json")).unwrap();
    for (what, from, to, want) in [
        ("arena offset", "\"arena\": 0", "\"arena\": 123456789", "arena offset 123456789"),
        ("weight offset", "\"weight\": 0", "\"weight\": 99999999999", "weight offset 99999999999"),
        ("input index", "\"input\": 0", "\"input\": 7", "input 7 of 1"),
    ] {
        assert!(table.contains(from), "{what}: the table has no {from}");
        std::fs::write(a.join("launch.json"), table.replacen(from, to, 1)).unwrap();
        let e = match dlc_runtime::GpuModel::load(&a) {
            Ok(_) => panic!("{what}: loaded"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(want) && e.contains("does not fit the manifest"), "{what}: {e}");
    }
}
