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

/// dlc-runtime's borrowed-buffer entry (`prepare` + `run_prepared`, what the Python
/// package calls): the same outputs as `Model::run`, inputs read in place or copied when
/// misaligned, and buffers or inputs that do not fit the call refused.
#[test]
fn run_prepared_matches_run_and_checks_its_buffers() {
    let model = repo().join("examples/dsl/mlp.dlc");
    let out = tempfile::tempdir().unwrap();
    let opts = Options { emit: vec![Emit::So], ..Options::default() };
    let art = compile(&model, out.path(), &opts, &Silent).unwrap();
    let input = &art.manifest.inputs[0];
    let shape = input.fixed_shape().unwrap();
    let n: u64 = shape.iter().product();
    let x: Vec<f32> = (0..n).map(|i| ((i * 53 % 97) as f32 / 97.0) - 0.4).collect();
    let t = dlc_runtime::Tensor::from_f32(&shape, &x);
    let m = dlc_runtime::Model::load(out.path()).unwrap();
    let want = m.run(&[(&input.name, &t)]).unwrap();

    // The same bytes at an odd address: copied before the call.
    let mut shifted = vec![0u8; t.data.len() + 1];
    shifted[1..].copy_from_slice(&t.data);
    let odd = dlc_runtime::TensorRef { dtype: "f32", shape: &shape, data: &shifted[1..] };
    let mut scratch = dlc_runtime::Scratch::new(1);
    for view in [t.view(), odd] {
        let inputs = [(input.name.as_str(), view)];
        let p = m.prepare(&inputs).unwrap();
        assert_eq!(p.outputs.len(), want.len());
        let mut bufs: Vec<Vec<f32>> = p.outputs.iter().map(|o| vec![0f32; o.bytes / 4]).collect();
        let mut outs: Vec<&mut [u8]> = bufs
            .iter_mut()
            .map(|b| unsafe { std::slice::from_raw_parts_mut(b.as_mut_ptr() as *mut u8, b.len() * 4) })
            .collect();
        let sizes = m.run_prepared(&p, &inputs, &mut outs, &mut scratch).unwrap();
        for ((w, (shape, bytes)), slot) in want.iter().zip(&sizes).zip(&p.outputs) {
            assert_eq!((shape, *bytes), (&w.shape, w.data.len()));
            assert_eq!(slot.shape.as_ref(), Some(&w.shape));
        }
        for (b, w) in bufs.iter().zip(&want) {
            assert_eq!(b, &w.to_f32().unwrap(), "run_prepared and run disagree");
        }
        // A buffer smaller than the call needs is refused before any code runs.
        let mut small: Vec<Vec<f32>> = p.outputs.iter().map(|_| vec![0f32; 1]).collect();
        let mut outs: Vec<&mut [u8]> =
            small.iter_mut().map(|b| unsafe { std::slice::from_raw_parts_mut(b.as_mut_ptr() as *mut u8, 4) }).collect();
        let e = m.run_prepared(&p, &inputs, &mut outs, &mut scratch).unwrap_err();
        assert!(e.to_string().contains("the call needs"), "{e}");
    }
    // Inputs other than the prepared ones are refused.
    let p = m.prepare(&[(input.name.as_str(), t.view())]).unwrap();
    let wrong = dlc_runtime::TensorRef { dtype: "f32", shape: &shape[..1], data: &t.data[..4] };
    let mut bufs: Vec<Vec<u8>> = p.outputs.iter().map(|o| vec![0u8; o.bytes]).collect();
    let mut outs: Vec<&mut [u8]> = bufs.iter_mut().map(|b| &mut b[..]).collect();
    let e = m.run_prepared(&p, &[(input.name.as_str(), wrong)], &mut outs, &mut scratch).unwrap_err();
    assert!(e.to_string().contains("expected shape"), "{e}");
}
