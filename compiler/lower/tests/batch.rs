//! Nodes with a run-time batch `N` (`dlc_lower::batch`): the one-sample kernel wrapped
//! by `dlc_kir::transform::batch`, run in the kir interpreter at N = 1, 3 and 4 and
//! compared with dlc-interp on the node at that batch. The cases cover kernels whose
//! top level is a pool loop (packed GEMM, blocked convolution, pools) and plain loop
//! nests, shared constant operands (packed weights) and batched ones (residuals).
use dlc_ir::ops::{
    Activation, AutoPad, Conv, Gather, LayerNormalization, MatMul, MaxPool, Softmax, SoftmaxMode, Trilu,
};
use dlc_ir::{DType, Dim, Op, Shape, TensorData, TensorType};
use dlc_kir::interp::run_kernel;
use std::collections::BTreeMap;

mod common;
use common::{floats, i64s};

/// An operand: its dims after the batch (`batched`) or all of them, and whether it is
/// a constant the kernel may pack.
struct Operand {
    dtype: DType,
    dims: Vec<u64>,
    batched: bool,
    constant: bool,
}

fn x(dims: &[u64]) -> Operand {
    Operand { dtype: DType::F32, dims: dims.to_vec(), batched: true, constant: false }
}

fn w(dims: &[u64]) -> Operand {
    Operand { dtype: DType::F32, dims: dims.to_vec(), batched: false, constant: true }
}

fn ty(o: &Operand, n: Option<u64>) -> TensorType {
    let mut d: Vec<Dim> = o.dims.iter().map(|&e| Dim::Fixed(e)).collect();
    if o.batched {
        d.insert(0, n.map_or_else(|| Dim::sym("N"), Dim::Fixed));
    }
    TensorType { dtype: o.dtype, shape: Shape(d) }
}

fn data(o: &Operand, n: u64, seed: u64) -> TensorData {
    let t = ty(o, Some(n));
    if o.dtype == DType::I64 {
        let count = t.shape.numel().unwrap() as usize;
        let v: Vec<i64> = (0..count).map(|i| ((i as u64 * 7 + seed) % 50) as i64 - 10).collect();
        return i64s(&t.shape.as_fixed().unwrap(), &v);
    }
    floats(&t, seed)
}

fn check(name: &str, op: Op, operands: &[Operand]) {
    let sym: Vec<TensorType> = operands.iter().map(|o| ty(o, None)).collect();
    let out = op.infer("n", &sym).unwrap();
    // Shared operands' values do not depend on the batch.
    let shared: Vec<Option<TensorData>> =
        operands.iter().enumerate().map(|(i, o)| (!o.batched).then(|| data(o, 1, 90 + i as u64))).collect();
    let consts: Vec<Option<&TensorData>> =
        operands.iter().zip(&shared).map(|(o, d)| d.as_ref().filter(|_| o.constant)).collect();
    let node = dlc_lower::Node { name, op: &op, inputs: &sym, outputs: &out, consts: &consts, operand_max: &[] };
    let t = dlc_lower::Target::with_lanes(8);
    let k = dlc_lower::batch::lower_batched("k", &node, &t).unwrap_or_else(|e| panic!("{name}: {e}"));
    let text = dlc_kir::print::kernel(&k);
    // The packed GEMM keeps B packed in the kernel (the one-sample kernel's layout);
    // a kernel whose top level is a pool loop spans samples and tiles in it.
    if matches!(op, Op::MatMul(_)) {
        assert!(k.data.first().is_some_and(|d| d.name == "bpack"), "{name}: B not packed\n{text}");
    }
    if name == "mm" || name == "pool" {
        assert!(text.lines().any(|l| l.contains("N parallel")), "{name}: no pool loop over the batch\n{text}");
    }
    for n in [1u64, 3, 4] {
        let xs: Vec<TensorData> = operands
            .iter()
            .enumerate()
            .map(|(i, o)| shared[i].clone().unwrap_or_else(|| data(o, n, 10 * n + i as u64)))
            .collect();
        let fixed: Vec<TensorType> = operands.iter().map(|o| ty(o, Some(n))).collect();
        let fout = op.infer("n", &fixed).unwrap();
        let want = dlc_interp::eval(&op, &xs, &fout).unwrap();
        let mut bufs: Vec<Vec<u8>> = xs.iter().map(|x| x.bytes().to_vec()).collect();
        bufs.extend(fout.iter().map(|t| vec![0xAA; t.size_bytes().unwrap() as usize]));
        let syms = BTreeMap::from([("N".to_string(), n as i64)]);
        run_kernel(&k, &mut bufs, &syms).unwrap_or_else(|e| panic!("{name} at N={n}: {e}"));
        for (r, w) in bufs[xs.len()..].iter().zip(&want) {
            if w.ty().dtype != DType::F32 {
                assert_eq!(r, w.bytes(), "{name} at N={n}");
                continue;
            }
            let f = |b: &[u8]| b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect::<Vec<_>>();
            for (i, (g, w)) in f(r).iter().zip(f(w.bytes())).enumerate() {
                assert!((g - w).abs() <= 1e-5 + 1e-4 * w.abs(), "{name} at N={n}, element {i}: {g} vs {w}");
            }
        }
    }
}

#[test]
fn packed_gemm_over_a_run_time_batch() {
    // Big enough for pool tasks: the batch multiplies the task count.
    check("mm", MatMul { act: Activation::Relu }.into(), &[x(&[64, 96]), w(&[96, 80]), w(&[80])]);
    check("mm_small", MatMul { act: Activation::None }.into(), &[x(&[5, 7]), w(&[7, 11])]);
}

#[test]
fn blocked_convolutions_with_shared_weights_and_batched_residuals() {
    let conv = |pads: [i64; 4], act| -> Op {
        Conv {
            kernel_shape: vec![],
            strides: vec![1, 1],
            pads: pads.to_vec(),
            dilations: vec![1, 1],
            group: 1,
            auto_pad: AutoPad::NotSet,
            act,
        }
        .into()
    };
    check("c1x1", conv([0; 4], Activation::Sigmoid), &[x(&[16, 6, 6]), w(&[24, 16, 1, 1]), w(&[24]), x(&[24, 6, 6])]);
    check(
        "c3x3",
        conv([1; 4], Activation::Clip { min: 0.0, max: 6.0 }),
        &[x(&[32, 5, 5]), w(&[16, 32, 3, 3]), w(&[16]), x(&[16, 5, 5])],
    );
}

#[test]
fn pools_norms_softmax_and_embedding_gathers() {
    let pool = MaxPool {
        kernel_shape: vec![3, 3],
        strides: vec![2, 2],
        pads: vec![1, 1, 1, 1],
        dilations: vec![1, 1],
        auto_pad: AutoPad::NotSet,
        ceil_mode: false,
    };
    check("pool_small", pool.clone().into(), &[x(&[3, 9, 9])]);
    check("pool", pool.into(), &[x(&[64, 56, 56])]);
    check("softmax", Softmax { axis: -1, mode: SoftmaxMode::Softmax }.into(), &[x(&[5, 7])]);
    let ln = LayerNormalization { axis: -1, epsilon: 1e-5, rms: false, stats: false, skip: false };
    check("ln", ln.into(), &[x(&[6, 16]), w(&[16]), w(&[16])]);
    let ids = Operand { dtype: DType::I64, dims: vec![6], batched: true, constant: false };
    check("embed", Gather { axis: 0 }.into(), &[w(&[50, 8]), ids]);
    check("trilu", Trilu { upper: false }.into(), &[x(&[3, 5, 4])]);
}

#[test]
fn ops_that_mix_samples_are_refused_with_the_reason() {
    let sym = [ty(&x(&[4]), None)];
    // A softmax over the batch axis, and a triangle whose rows are the samples.
    let ops: [(&str, Op); 2] =
        [("sm", Softmax { axis: 0, mode: SoftmaxMode::Softmax }.into()), ("tri", Trilu { upper: true }.into())];
    for (name, op) in ops {
        let out = op.infer("n", &sym).unwrap();
        let node = dlc_lower::Node { name, op: &op, inputs: &sym, outputs: &out, consts: &[], operand_max: &[] };
        let e = dlc_lower::batch::lower_batched("k", &node, &dlc_lower::Target::with_lanes(8)).unwrap_err().to_string();
        assert!(e.contains("mixes samples along the leading dim N") && e.contains("--input-shape"), "{name}: {e}");
    }
}

#[test]
fn packed_gemm_tiles_run_time_rows_with_every_remainder() {
    // A [N, S, 7] x B [7, 40]: rows N*S in register blocks of 6 (8 lanes), the
    // remainder's tile chosen at run time; B packed once in the kernel.
    let op: Op = MatMul { act: Activation::Relu }.into();
    let a = TensorType { dtype: DType::F32, shape: Shape(vec![Dim::sym("N"), Dim::sym("S"), Dim::Fixed(7)]) };
    let b = floats(&TensorType::fixed(DType::F32, &[7, 40]), 3);
    let sym = [a.clone(), b.ty().clone()];
    let out = op.infer("n", &sym).unwrap();
    let consts = [None, Some(&b)];
    let node = dlc_lower::Node { name: "mm", op: &op, inputs: &sym, outputs: &out, consts: &consts, operand_max: &[] };
    let k = dlc_lower::lower("k", &node, &dlc_lower::Target::with_lanes(8)).unwrap().unwrap();
    assert!(k.data.iter().any(|d| d.name == "bpack"), "B not packed");
    for (n, s) in [(1u64, 1u64), (1, 5), (2, 3), (1, 6), (3, 13)] {
        let fixed = TensorType::fixed(DType::F32, &[n, s, 7]);
        let x = floats(&fixed, n * 10 + s);
        let fout = op.infer("n", &[fixed.clone(), b.ty().clone()]).unwrap();
        let want = dlc_interp::eval(&op, &[x.clone(), b.clone()], &fout).unwrap();
        let mut bufs = vec![x.bytes().to_vec(), b.bytes().to_vec(), vec![0xAA; fout[0].size_bytes().unwrap() as usize]];
        let syms = BTreeMap::from([("N".to_string(), n as i64), ("S".to_string(), s as i64)]);
        run_kernel(&k, &mut bufs, &syms).unwrap();
        let f = |b: &[u8]| b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect::<Vec<_>>();
        for (i, (g, w)) in f(&bufs[2]).iter().zip(f(want[0].bytes())).enumerate() {
            assert!((g - w).abs() <= 1e-5 + 1e-4 * w.abs(), "N={n}, S={s}, element {i}: {g} vs {w}");
        }
    }
}
