//! The compile pipeline as a library: `dlc_driver::compile` writes an artifact that
//! dlc-runtime runs, and its outputs match dlc-interp's float64 evaluation of the same
//! imported graph; bad options are errors, not panics.
use dlc_driver::{compile, Emit, Options, Silent};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

#[test]
fn compiles_runs_and_matches_the_reference_interpreter() {
    let model = repo().join("examples/dsl/mlp.dlc");
    let out = tempfile::tempdir().unwrap();
    let opts = Options { emit: vec![Emit::So], ..Options::default() };
    let art = compile(&model, out.path(), &opts, &Silent).unwrap();
    assert!(art.kernels > 0);
    assert_eq!(art.manifest.files, vec!["model.so".to_string()]);
    assert!(out.path().join("model.so").exists() && out.path().join("report.json").exists());
    assert_eq!(art.report["flops"].as_u64(), Some(art.stats.flops));

    let input = &art.manifest.inputs[0];
    let shape = input.fixed_shape().unwrap();
    let n: u64 = shape.iter().product();
    let x: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 / 101.0) - 0.3).collect();
    let m = dlc_runtime::Model::load(out.path()).unwrap();
    let got = m.run(&[(&input.name, &dlc_runtime::Tensor::from_f32(&shape, &x))]).unwrap();

    // The reference: the imported (unoptimised) graph in the float64 interpreter.
    let g = dlc_driver::compile::load_model(&model, HashMap::new()).unwrap();
    let want = dlc_interp::run_graph(&g, &[dlc_ir::TensorData::from_f32(&shape, &x).unwrap()]).unwrap();
    let (got, want) = (got[0].to_f32().unwrap(), want[0].to_f32().unwrap());
    assert_eq!(got.len(), want.len());
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() <= 1e-5 + 1e-4 * b.abs(), "dlc {a} vs reference {b}");
    }
}

#[test]
fn option_errors_are_errors() {
    let model = repo().join("examples/models/mnist_cnn.onnx");
    let out = tempfile::tempdir().unwrap();
    let bad = Options { emit: vec![Emit::Ptx], ..Options::default() };
    let e = compile(&model, out.path(), &bad, &Silent).unwrap_err();
    assert_eq!(e.to_string(), "--emit ptx needs --target nvptx64-nvidia-cuda");
    let missing = compile(Path::new("/nonexistent/model.onnx"), out.path(), &Options::default(), &Silent);
    assert!(missing.is_err());
}
