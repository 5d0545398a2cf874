//! Load on one artifact (issue 19): eight threads calling `Model::run` at once, each
//! checked against a single-threaded run of its own input; `Model::run` reusing its
//! thread pools (the process's thread count stays bounded over thousands of calls); and
//! a `Session` soak whose resident memory must not grow. One test per binary: it sets
//! DLC_NUM_THREADS, which the runtime reads per call.
use dlc_driver::{compile, Emit, Options, Silent};
use std::path::Path;

fn resident_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4
}

fn threads_now() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

fn input(seed: u64, n: u64) -> Vec<f32> {
    (0..n).map(|i| (((i * 131 + seed * 7919) % 257) as f32 / 257.0) - 0.5).collect()
}

#[test]
fn eight_threads_pool_reuse_and_session_soak() {
    // Two threads per run: every call uses a pool with a worker.
    std::env::set_var("DLC_NUM_THREADS", "2");
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/dsl/cnn_residual.dlc");
    let out = tempfile::tempdir().unwrap();
    compile(&model, out.path(), &Options { emit: vec![Emit::So], ..Options::default() }, &Silent).unwrap();
    let m = dlc_runtime::Model::load(out.path()).unwrap();
    let spec = &m.manifest().inputs[0];
    let shape = spec.fixed_shape().unwrap();
    let n: u64 = shape.iter().product();
    let cases: Vec<dlc_runtime::Tensor> = (0..8).map(|s| dlc_runtime::Tensor::from_f32(&shape, &input(s, n))).collect();
    let want: Vec<Vec<dlc_runtime::Tensor>> = cases.iter().map(|t| m.run(&[(&spec.name, t)]).unwrap()).collect();
    assert!(want.windows(2).all(|w| w[0] != w[1]), "inputs must give different outputs");

    let before = threads_now();
    let pools = dlc_runtime::pools_created();
    std::thread::scope(|s| {
        for (t, w) in cases.iter().zip(&want) {
            let (m, name) = (&m, spec.name.as_str());
            s.spawn(move || {
                for _ in 0..400 {
                    assert_eq!(&m.run(&[(name, t)]).unwrap(), w, "a concurrent run gave another answer");
                }
            });
        }
    });
    // 8 x 400 calls: each concurrent caller made at most one pool (one worker each).
    let after = threads_now();
    assert!(after <= before + 8, "threads {before} -> {after}: Model::run keeps more pools than callers");
    for _ in 0..500 {
        m.run(&[(&spec.name, &cases[0])]).unwrap();
    }
    assert!(threads_now() <= after, "sequential calls started threads");
    let made = dlc_runtime::pools_created() - pools;
    assert!(made <= 8, "{made} pools made for 3,700 calls from at most 8 threads at once");

    // Session soak: no allocation per run, so no growth.
    let mut session = m.session();
    session.set_inputs(&[(&spec.name, &cases[1])]).unwrap();
    for _ in 0..200 {
        session.run().unwrap();
    }
    let rss0 = resident_kib();
    for _ in 0..20_000 {
        session.run().unwrap();
    }
    let rss1 = resident_kib();
    assert_eq!(session.outputs(), want[1]);
    assert!(rss1 <= rss0 + 1024, "resident memory grew {rss0} -> {rss1} KiB over 20,000 session runs");
    // Model::run allocates outputs per call and frees them.
    for _ in 0..5_000 {
        m.run(&[(&spec.name, &cases[2])]).unwrap();
    }
    let rss2 = resident_kib();
    assert!(rss2 <= rss1 + 4096, "resident memory grew {rss1} -> {rss2} KiB over 5,000 Model::run calls");
}
