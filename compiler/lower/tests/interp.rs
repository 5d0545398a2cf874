//! Every ported lowering family, run through the kir interpreter and compared with
//! dlc-interp (the graph's reference interpreter) on the same op: constant extents,
//! and symbolic extents evaluated at two sizes. Data movement must be exact.
use dlc_ir::ops::{
    ArgMax, ArgMin, BatchNormalization, Concat, CumSum, Gather, GatherElements, LayerNormalization, Pad, PadMode,
    ReduceL1, ReduceL2, ReduceLogSum, ReduceLogSumExp, ReduceMax, ReduceMean, ReduceMin, ReduceProd, ReduceSum,
    ReduceSumSquare, Reshape, ScatterElements, ScatterND, ScatterReduction, Slice, Softmax, SoftmaxMode, Transpose,
    Trilu,
};
use dlc_ir::{DType, Dim, Op, Shape, TensorData, TensorType};
use dlc_kir::interp::run_kernel;
use std::collections::BTreeMap;
use std::sync::Arc;

mod common;
use common::{floats, i64s};

/// The target the lowerings are checked for (AVX2's vector width).
const T: dlc_lower::Target = dlc_lower::Target { f32_lanes: 8, int8: dlc_lower::Int8Dot::Exact, pool: true };

/// Deterministic bytes for a tensor of `ty`.
fn data(ty: &TensorType, seed: u8) -> TensorData {
    let n = ty.size_bytes().unwrap() as usize;
    let bytes: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
    TensorData::new(ty.clone(), Arc::from(bytes)).unwrap()
}

/// Lowers `op` on operands of `in_ty` (possibly symbolic), then for each binding of the
/// symbols runs the kernel and dlc-interp on the fixed types and compares bytes.
fn check(op: Op, in_ty: TensorType, bindings: &[&[(&str, u64)]]) {
    check_with(op, &[in_ty], &|t| vec![data(&t[0], 7)], bindings)
}

/// [`check`] with several operands, whose data `make` builds from their fixed types.
fn check_with(
    op: Op,
    in_tys: &[TensorType],
    make: &dyn Fn(&[TensorType]) -> Vec<TensorData>,
    bindings: &[&[(&str, u64)]],
) {
    let out_ty = op.infer("n", in_tys).unwrap();
    let node = dlc_lower::Node { name: "n", op: &op, inputs: in_tys, outputs: &out_ty, consts: &[], operand_max: &[] };
    let k = dlc_lower::lower("k", &node, &T).expect("ported").unwrap();
    for b in bindings {
        let fix = |t: &TensorType| TensorType {
            dtype: t.dtype,
            shape: Shape(
                t.shape
                    .0
                    .iter()
                    .map(|d| match d {
                        Dim::Fixed(n) => Dim::Fixed(*n),
                        Dim::Sym(e) => {
                            let env: std::collections::BTreeMap<String, i64> =
                                b.iter().map(|(n, v)| (n.to_string(), *v as i64)).collect();
                            Dim::Fixed(e.eval(&env).expect("bound") as u64)
                        }
                    })
                    .collect(),
            ),
        };
        let fin: Vec<TensorType> = in_tys.iter().map(fix).collect();
        let fout = op.infer("n", &fin).unwrap();
        let xs = make(&fin);
        let want = dlc_interp::eval(&op, &xs, &fout).unwrap();
        let syms: BTreeMap<String, i64> = b.iter().map(|(n, v)| (n.to_string(), *v as i64)).collect();
        let mut bufs: Vec<Vec<u8>> = xs.iter().map(|x| x.bytes().to_vec()).collect();
        bufs.push(vec![0xAA; fout[0].size_bytes().unwrap() as usize]);
        run_kernel(&k, &mut bufs, &syms)
            .unwrap_or_else(|e| panic!("{op:?} at {b:?}: {e}\n{}", dlc_kir::print::kernel(&k)));
        let got = bufs.last().unwrap();
        if fout[0].dtype == DType::F32 && !exact(&op) {
            // Arithmetic: within the tolerances of the ONNX checks (rtol 1e-4, atol 1e-5).
            let f = |b: &[u8]| b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect::<Vec<_>>();
            for (g, w) in f(got).iter().zip(f(want[0].bytes())) {
                let same = g == &w || (g.is_nan() && w.is_nan());
                assert!(same || (g - w).abs() <= 1e-5 + 1e-4 * w.abs(), "{op:?} at {b:?}: {g} vs {w}");
            }
        } else {
            assert_eq!(got, want[0].bytes(), "{op:?} at {b:?}\n{}", dlc_kir::print::kernel(&k));
        }
    }
}

/// Data movement must be exact; arithmetic is compared within tolerances.
fn exact(op: &Op) -> bool {
    op.kind() == dlc_ir::OpKind::Movement
}

/// [`floats`] with `f` applied to each value (to stay inside a function's domain).
fn floats_with(t: &TensorType, seed: u64, f: impl Fn(f32) -> f32) -> TensorData {
    let v: Vec<f32> = floats(t, seed).to_f32().unwrap().iter().map(|&x| f(x)).collect();
    TensorData::from_f32(&t.shape.as_fixed().unwrap(), &v).unwrap()
}

fn i32s(dims: &[u64], v: &[i32]) -> TensorData {
    let t = TensorType::fixed(DType::I32, dims);
    TensorData::new(t, Arc::from(v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())).unwrap()
}

/// The kernel `op` lowers to on one operand of type `t`.
fn lowered(op: &Op, t: &TensorType) -> dlc_kir::Kernel {
    let out = op.infer("n", std::slice::from_ref(t)).unwrap();
    let node = dlc_lower::Node {
        name: "n",
        op,
        inputs: std::slice::from_ref(t),
        outputs: &out,
        consts: &[],
        operand_max: &[],
    };
    dlc_lower::lower("k", &node, &T).expect("ported").unwrap()
}

fn ty(dtype: DType, dims: &[Dim]) -> TensorType {
    TensorType { dtype, shape: Shape(dims.to_vec()) }
}

fn f(d: u64) -> Dim {
    Dim::Fixed(d)
}

fn s(n: &str) -> Dim {
    Dim::sym(n)
}

#[test]
fn transpose_constant_extents() {
    for (dims, perm) in [
        (vec![2, 3, 4, 5], vec![0, 2, 3, 1]),
        (vec![2, 3, 4, 5], vec![3, 1, 0, 2]),
        (vec![7, 1, 9], vec![1, 0, 2]),
        (vec![4, 6], vec![]),
        (vec![], vec![]),
    ] {
        for dtype in [DType::F32, DType::I64, DType::U16, DType::I8] {
            let t = ty(dtype, &dims.iter().map(|&d| f(d)).collect::<Vec<_>>());
            check(Transpose { perm: perm.clone() }.into(), t, &[&[]]);
        }
    }
}

#[test]
fn transpose_symbolic_extents_at_two_sizes() {
    let t = ty(DType::F32, &[s("N"), f(3), s("seq"), f(4)]);
    check(Transpose { perm: vec![0, 2, 1, 3] }.into(), t.clone(), &[&[("N", 1), ("seq", 5)], &[("N", 3), ("seq", 2)]]);
    check(Transpose { perm: vec![3, 2, 1, 0] }.into(), t, &[&[("N", 2), ("seq", 7)], &[("N", 4), ("seq", 1)]]);
    // The batch dim stays outermost and merges with nothing: still correct at N = 1.
    let b = ty(DType::I32, &[s("batch"), f(8), f(6)]);
    check(Transpose { perm: vec![0, 2, 1] }.into(), b, &[&[("batch", 1)], &[("batch", 6)]]);
}

#[test]
fn transposes_of_the_last_two_dims_move_in_tiles_with_remainders() {
    // Whole 8 x 8 tiles, the columns past them, and a last strip of fewer than 8 rows,
    // at every element width; NCHW <-> NHWC coalesce into the same 2-D form.
    type Case = (TensorType, Vec<i64>, Vec<Vec<(&'static str, u64)>>);
    let cases: Vec<Case> = vec![
        (ty(DType::F32, &[f(2), f(19), f(21)]), vec![0, 2, 1], vec![vec![]]),
        (
            ty(DType::I32, &[s("N"), f(16), s("P")]),
            vec![0, 2, 1],
            vec![vec![("N", 1), ("P", 9)], vec![("N", 2), ("P", 24)], vec![("N", 1), ("P", 3)]],
        ),
        (
            ty(DType::F32, &[f(1), s("H"), s("W"), f(24)]),
            vec![0, 3, 1, 2],
            vec![vec![("H", 3), ("W", 5)], vec![("H", 8), ("W", 2)]],
        ),
        (
            ty(DType::F32, &[f(1), f(24), s("H"), s("W")]),
            vec![0, 2, 3, 1],
            vec![vec![("H", 3), ("W", 5)], vec![("H", 1), ("W", 7)]],
        ),
    ];
    for (t, perm, bindings) in cases {
        for dtype in [t.dtype, DType::I64, DType::U16, DType::I8] {
            let t = TensorType { dtype, ..t.clone() };
            let op: Op = Transpose { perm: perm.clone() }.into();
            assert!(dlc_kir::print::kernel(&lowered(&op, &t)).contains("shuffle"), "not tiled: {t:?} {perm:?}");
            let b: Vec<&[(&str, u64)]> = bindings.iter().map(|v| v.as_slice()).collect();
            check(op, t, &b);
        }
    }
}

#[test]
fn slice_constant_extents() {
    let t = ty(DType::I8, &[f(6), f(7), f(8)]);
    let cases = [
        Slice { starts: vec![-1, 1], ends: vec![-100, 7], axes: vec![2, 1], steps: vec![-2, 3] },
        Slice { starts: vec![1], ends: vec![5], axes: vec![], steps: vec![] },
        Slice { starts: vec![0, 0, 0], ends: vec![i64::MAX, 1, -1], axes: vec![], steps: vec![1, 1, 2] },
        Slice { starts: vec![3], ends: vec![3], axes: vec![0], steps: vec![] },
    ];
    for op in cases {
        check(op.into(), t.clone(), &[&[]]);
    }
}

/// A Slice keeps the run-time dims of the axes it does not slice (run at two sizes
/// against dlc-interp); slicing a run-time axis is a clear error.
#[test]
fn slices_keep_run_time_dims_they_do_not_slice() {
    let t = ty(DType::F32, &[s("N"), f(4), s("S")]);
    let op: Op = Slice { starts: vec![1], ends: vec![-1], axes: vec![1], steps: vec![] }.into();
    let out = op.infer("sl", std::slice::from_ref(&t)).unwrap();
    assert_eq!(out[0].to_string(), "f32[N,2,S]");
    let node = dlc_lower::Node {
        name: "sl",
        op: &op,
        inputs: std::slice::from_ref(&t),
        outputs: &out,
        consts: &[],
        operand_max: &[],
    };
    let k = dlc_lower::lower("k", &node, &T).unwrap().unwrap();
    for (n, sv) in [(1i64, 3i64), (3, 5)] {
        let x = TensorType::fixed(DType::F32, &[n as u64, 4, sv as u64]);
        let xs = floats(&x, 3);
        let fout = op.infer("sl", std::slice::from_ref(&x)).unwrap();
        let want = dlc_interp::eval(&op, std::slice::from_ref(&xs), &fout).unwrap();
        let mut bufs = vec![xs.bytes().to_vec(), vec![0; fout[0].size_bytes().unwrap() as usize]];
        let env = BTreeMap::from([("N".to_string(), n), ("S".to_string(), sv)]);
        run_kernel(&k, &mut bufs, &env).unwrap();
        assert_eq!(bufs[1], want[0].bytes(), "N={n} S={sv}");
    }
    let cut: Op = Slice { starts: vec![0], ends: vec![1], axes: vec![0], steps: vec![] }.into();
    let e = cut.infer("sl", std::slice::from_ref(&t)).unwrap_err().to_string();
    assert!(e.contains("slicing the run-time dim N (axis 0) is not supported yet"), "{e}");
}

#[test]
fn trilu_with_and_without_k() {
    for upper in [true, false] {
        let t = ty(DType::F32, &[f(2), f(4), f(5)]);
        check(Trilu { upper }.into(), t.clone(), &[&[]]);
        for k in [-2, 0, 3, 9] {
            let tys = [t.clone(), TensorType::fixed(DType::I64, &[])];
            check_with(Trilu { upper }.into(), &tys, &|t| vec![data(&t[0], 3), i64s(&[], &[k])], &[&[]]);
        }
        // Symbolic batch and rows.
        let s2 = ty(DType::I8, &[s("B"), s("R"), f(3)]);
        check(Trilu { upper }.into(), s2, &[&[("B", 1), ("R", 4)], &[("B", 3), ("R", 2)]]);
    }
}

#[test]
fn gathers_with_negative_indices() {
    let d = TensorType::fixed(DType::F32, &[3, 4, 2]);
    for axis in [0, 1, -1] {
        let a = if axis < 0 { 2 } else { axis as usize };
        let extent = [3i64, 4, 2][a];
        let idx: Vec<i64> = (0..6).map(|i| (i * 5 % (2 * extent)) - extent).collect();
        let tys = [d.clone(), TensorType::fixed(DType::I64, &[2, 3])];
        check_with(Gather { axis }.into(), &tys, &|t| vec![data(&t[0], 1), i64s(&[2, 3], &idx)], &[&[]]);
        let tys32 = [d.clone(), TensorType::fixed(DType::I32, &[6])];
        let idx32: Vec<i32> = idx.iter().map(|&v| v as i32).collect();
        check_with(Gather { axis }.into(), &tys32, &|t| vec![data(&t[0], 2), i32s(&[6], &idx32)], &[&[]]);
        // GatherElements: indices shaped like the data but shorter along the axis.
        let mut idims = vec![3u64, 4, 2];
        idims[a] = 2;
        let n: u64 = idims.iter().product();
        let ge: Vec<i64> = (0..n as i64).map(|i| (i * 7 % (2 * extent)) - extent).collect();
        let tys = [d.clone(), TensorType::fixed(DType::I64, &idims)];
        check_with(GatherElements { axis }.into(), &tys, &|t| vec![data(&t[0], 4), i64s(&idims, &ge)], &[&[]]);
    }
}

#[test]
fn pads_in_every_mode() {
    let t = ty(DType::F32, &[f(3), f(4)]);
    for mode in [PadMode::Constant, PadMode::Edge, PadMode::Wrap, PadMode::Reflect] {
        for pads in [vec![1, 2, 2, 1], vec![0, 3, 2, 0], vec![-1, 1, 0, -2]] {
            check(Pad::new(pads.clone(), mode, 1.5).into(), t.clone(), &[&[]]);
        }
    }
    // Integer fill values, and a 1-wide dim in reflect mode.
    check(Pad::new(vec![2, 1, 0, 2], PadMode::Constant, -3.0).into(), ty(DType::I32, &[f(2), f(3)]), &[&[]]);
    check(Pad::new(vec![2, 1, 0, 2], PadMode::Reflect, 0.0).into(), ty(DType::I64, &[f(1), f(3)]), &[&[]]);
    // Run-time dims (an STFT's reflect padding of audio of run-time length): every mode,
    // extents from 1 up, exact against the interpreter.
    for mode in [PadMode::Constant, PadMode::Edge, PadMode::Wrap, PadMode::Reflect] {
        let t = ty(DType::F32, &[s("N"), s("L")]);
        let op: Op = Pad::new(vec![0, 3, 1, 2], mode, 0.5).into();
        check(op, t, &[&[("N", 1), ("L", 1)], &[("N", 2), ("L", 2)], &[("N", 1), ("L", 9)]]);
    }
}

#[test]
fn gathers_at_run_time_dims() {
    // Run-time dims before, along and after the axis, and in the indices (an LSTM state
    // `[2, N, H]` picked by layer, BERT's embedding rows).
    let idx = |t: &TensorType, v: &[i64]| {
        let n = t.shape.as_fixed().unwrap().iter().product::<u64>() as usize;
        let vals: Vec<i64> = (0..n).map(|i| v[i % v.len()]).collect();
        i64s(&t.shape.as_fixed().unwrap(), &vals)
    };
    let cases: Vec<(i64, TensorType, TensorType, Vec<i64>)> = vec![
        (0, ty(DType::F32, &[f(2), s("N"), f(3)]), ty(DType::I64, &[]), vec![1]),
        (1, ty(DType::F32, &[s("N"), s("L"), f(2)]), ty(DType::I64, &[f(4)]), vec![0, -1, -1, 0]),
        (0, ty(DType::F32, &[f(7), f(3)]), ty(DType::I64, &[s("N"), s("L")]), vec![6, 0, -2, 3]),
    ];
    for (axis, d, i, v) in cases {
        let tys = [d, i];
        check_with(
            Gather { axis }.into(),
            &tys,
            &|t| vec![data(&t[0], 3), idx(&t[1], &v)],
            &[&[("N", 1), ("L", 1)], &[("N", 3), ("L", 4)]],
        );
    }
}

#[test]
fn concat_and_copies_with_symbolic_dims() {
    let a = ty(DType::F32, &[s("N"), f(2), f(3)]);
    let b = ty(DType::F32, &[s("N"), f(5), f(3)]);
    let c = ty(DType::F32, &[s("N"), f(0), f(3)]);
    let make = |t: &[TensorType]| t.iter().enumerate().map(|(i, t)| data(t, i as u8 * 40)).collect();
    check_with(Concat { axis: 1 }.into(), &[a.clone(), b, c], &make, &[&[("N", 1)], &[("N", 4)]]);
    check_with(Concat { axis: 2 }.into(), &[a.clone(), a.clone()], &make, &[&[("N", 2)], &[("N", 3)]]);
    check(dlc_ir::ops::Identity {}.into(), a, &[&[("N", 1)], &[("N", 5)]]);
    check(Reshape { shape: vec![3, 2], allowzero: false }.into(), ty(DType::U16, &[f(6)]), &[&[]]);
}

#[test]
fn batchnorm_at_constant_and_symbolic_batch() {
    let x = ty(DType::F32, &[s("N"), f(3), f(4), f(5)]);
    let c = TensorType::fixed(DType::F32, &[3]);
    let tys = [x, c.clone(), c.clone(), c.clone(), c];
    // Variances must be positive: take |v| + 0.1.
    let make = |t: &[TensorType]| {
        let mut v: Vec<TensorData> = t.iter().enumerate().map(|(i, t)| floats(t, i as u64 + 1)).collect();
        let var: Vec<f32> = v[4].to_f32().unwrap().iter().map(|x| x.abs() + 0.1).collect();
        v[4] = TensorData::from_f32(&[3], &var).unwrap();
        v
    };
    check_with(BatchNormalization { epsilon: 1e-5 }.into(), &tys, &make, &[&[("N", 1)], &[("N", 2)]]);
}

#[test]
fn softmax_in_every_mode_and_axis() {
    let t = ty(DType::F32, &[s("B"), f(3), f(5)]);
    for mode in [SoftmaxMode::Softmax, SoftmaxMode::LogSoftmax, SoftmaxMode::Hardmax] {
        for axis in [-1, 1, 0] {
            let op: Op = Softmax { axis, mode }.into();
            check_with(op, std::slice::from_ref(&t), &|t| vec![floats(&t[0], 9)], &[&[("B", 1)], &[("B", 4)]]);
        }
    }
}

/// Softmax over a run-time last axis (an unfused attention's scores at a run-time
/// sequence length) takes the vector row kernel, not the scalar one with C's `expf`:
/// rows shorter than a vector (all tail), one vector, and vectors plus a tail.
#[test]
fn softmax_over_a_run_time_row_length_is_vectorised() {
    let t = ty(DType::F32, &[s("B"), f(2), s("S")]);
    for mode in [SoftmaxMode::Softmax, SoftmaxMode::LogSoftmax] {
        let op: Op = Softmax { axis: -1, mode }.into();
        let text = dlc_kir::print::kernel(&lowered(&op, &t));
        assert!(!text.contains("expf") && text.contains("f32x8"), "{mode:?}: not the vector kernel\n{text}");
        let binds: [&[(&str, u64)]; 5] = [
            &[("B", 1), ("S", 1)],
            &[("B", 3), ("S", 7)],
            &[("B", 2), ("S", 8)],
            &[("B", 1), ("S", 21)],
            &[("B", 2), ("S", 130)],
        ];
        check_with(op, std::slice::from_ref(&t), &|t| vec![floats(&t[0], 5)], &binds);
    }
}

#[test]
fn layernorm_plain_rms_bias_and_skip() {
    let x = ty(DType::F32, &[s("N"), f(4), f(6)]);
    let sc = TensorType::fixed(DType::F32, &[6]);
    for rms in [false, true] {
        for (bias, skip) in [(false, false), (true, false), (true, true), (false, true)] {
            let op: Op = LayerNormalization { axis: -1, epsilon: 1e-5, rms, stats: false, skip }.into();
            let mut tys = vec![x.clone(), sc.clone()];
            if bias {
                tys.push(sc.clone());
            }
            if skip {
                tys.push(x.clone());
            }
            let make = |t: &[TensorType]| t.iter().enumerate().map(|(i, t)| floats(t, 20 + i as u64)).collect();
            check_with(op, &tys, &make, &[&[("N", 1)], &[("N", 3)]]);
        }
    }
    // Normalising the last two dims, with a scale broadcast along the first of them.
    let op: Op = LayerNormalization { axis: 1, epsilon: 1e-3, rms: false, stats: false, skip: false }.into();
    let tys = [x, TensorType::fixed(DType::F32, &[1, 6])];
    check_with(op, &tys, &|t| vec![floats(&t[0], 5), floats(&t[1], 6)], &[&[("N", 2)]]);
}

/// Builds a Reduce* op from its axes and keepdims.
type MakeReduce = dyn Fn(Vec<i64>, bool) -> Op;

fn ints(t: &TensorType, seed: i64) -> TensorData {
    let n = t.shape.numel().unwrap() as i64;
    let v: Vec<i64> = (0..n).map(|i| (i * 7 + seed) % 11 - 5).collect();
    let bytes: Vec<u8> = match t.dtype {
        DType::I32 => v.iter().flat_map(|&x| (x as i32).to_le_bytes()).collect(),
        _ => v.iter().flat_map(|&x| x.to_le_bytes()).collect(),
    };
    TensorData::new(t.clone(), Arc::from(bytes)).unwrap()
}

#[test]
fn reductions_over_floats_at_constant_and_symbolic_extents() {
    let t = ty(DType::F32, &[s("N"), f(3), f(4)]);
    let ops: Vec<Box<MakeReduce>> = vec![
        Box::new(|axes, keepdims| ReduceSum { axes, keepdims }.into()),
        Box::new(|axes, keepdims| ReduceMean { axes, keepdims }.into()),
        Box::new(|axes, keepdims| ReduceMax { axes, keepdims }.into()),
        Box::new(|axes, keepdims| ReduceMin { axes, keepdims }.into()),
        Box::new(|axes, keepdims| ReduceProd { axes, keepdims }.into()),
        Box::new(|axes, keepdims| ReduceL1 { axes, keepdims }.into()),
        Box::new(|axes, keepdims| ReduceL2 { axes, keepdims }.into()),
        Box::new(|axes, keepdims| ReduceSumSquare { axes, keepdims }.into()),
        Box::new(|axes, keepdims| ReduceLogSumExp { axes, keepdims }.into()),
    ];
    for op in &ops {
        for (axes, keepdims) in [(vec![-1], true), (vec![1], false), (vec![1, 2], true), (vec![], false)] {
            check_with(
                op(axes, keepdims),
                std::slice::from_ref(&t),
                &|t| vec![floats(&t[0], 3)],
                &[&[("N", 1)], &[("N", 3)]],
            );
        }
    }
    // LogSum needs positive sums: |x| + 0.5.
    let pos = |t: &[TensorType]| vec![floats_with(&t[0], 4, |x| x.abs() + 0.5)];
    check_with(ReduceLogSum { axes: vec![0, 2], keepdims: true }.into(), &[t], &pos, &[&[("N", 2)]]);
}

#[test]
fn reductions_over_integers_are_exact() {
    for dtype in [DType::I64, DType::I32] {
        let t = ty(dtype, &[f(2), f(5), f(3)]);
        for axes in [vec![1], vec![0, 2], vec![]] {
            for op in [
                Op::from(ReduceSum { axes: axes.clone(), keepdims: true }),
                ReduceMax { axes: axes.clone(), keepdims: false }.into(),
                ReduceMin { axes: axes.clone(), keepdims: true }.into(),
                ReduceProd { axes: axes.clone(), keepdims: true }.into(),
            ] {
                check_with(op, std::slice::from_ref(&t), &|t| vec![ints(&t[0], 2)], &[&[]]);
            }
        }
    }
}

#[test]
fn arg_extremes_first_and_last() {
    // Integer data has ties, so first/last differ.
    for dtype in [DType::F32, DType::I64] {
        let t = ty(dtype, &[s("B"), f(6), f(2)]);
        for axis in [0, 1, -1] {
            for last in [false, true] {
                let make =
                    |t: &[TensorType]| vec![if t[0].dtype == DType::F32 { floats(&t[0], 8) } else { ints(&t[0], 1) }];
                let mx: Op = ArgMax { axis, keepdims: true, select_last_index: last }.into();
                let mn: Op = ArgMin { axis, keepdims: false, select_last_index: last }.into();
                check_with(mx, std::slice::from_ref(&t), &make, &[&[("B", 1)], &[("B", 3)]]);
                check_with(mn, std::slice::from_ref(&t), &make, &[&[("B", 2)]]);
            }
        }
    }
}

#[test]
fn cumulative_sums_and_products() {
    let t = ty(DType::F32, &[f(3), f(4)]);
    for axis in [0i64, 1, -1, -2] {
        for (exclusive, reverse, product) in
            [(false, false, false), (true, false, false), (false, true, false), (true, true, true)]
        {
            let op: Op = CumSum { exclusive, reverse, product }.into();
            let tys = [t.clone(), TensorType::fixed(DType::I64, &[])];
            check_with(op, &tys, &|t| vec![floats(&t[0], 11), i64s(&[], &[axis])], &[&[]]);
        }
    }
    let ti = ty(DType::I32, &[f(2), f(5)]);
    let op: Op = CumSum { exclusive: false, reverse: false, product: false }.into();
    let tys = [ti, TensorType::fixed(DType::I32, &[])];
    check_with(op, &tys, &|t| vec![ints(&t[0], 3), i32s(&[], &[1])], &[&[]]);
}

#[test]
fn scatters_replace_and_combine() {
    use ScatterReduction as R;
    let d = TensorType::fixed(DType::F32, &[4, 3]);
    for axis in [0i64, 1, -1] {
        let a = if axis < 0 { 1 } else { axis as usize };
        let extent = [4i64, 3][a];
        // Distinct targets for `none` (ONNX leaves duplicates unordered); repeats for the reductions.
        let mut idims = vec![4u64, 3];
        idims[a] = 2;
        let n: u64 = idims.iter().product();
        for r in [R::None, R::Add, R::Mul, R::Max, R::Min] {
            let idx: Vec<i64> = (0..n as i64)
                .map(|i| {
                    let along = if a == 0 { i / 3 } else { i % 2 };
                    if r == R::None {
                        along - if along % 2 == 1 { extent } else { 0 }
                    } else {
                        (i * 5) % extent - extent
                    }
                })
                .collect();
            let op: Op = ScatterElements { axis, reduction: r }.into();
            let tys = [d.clone(), TensorType::fixed(DType::I64, &idims), TensorType::fixed(DType::F32, &idims)];
            let make = |t: &[TensorType]| vec![floats(&t[0], 1), i64s(&idims, &idx), floats(&t[2], 2)];
            check_with(op, &tys, &make, &[&[]]);
        }
    }
    // ScatterND: rows of a [4, 3] by 1-tuples, and single elements by 2-tuples.
    for r in [R::None, R::Add, R::Max] {
        let tys = [d.clone(), TensorType::fixed(DType::I64, &[2, 1]), TensorType::fixed(DType::F32, &[2, 3])];
        let make = |t: &[TensorType]| vec![floats(&t[0], 3), i64s(&[2, 1], &[-1, 1]), floats(&t[2], 4)];
        check_with(ScatterND { reduction: r }.into(), &tys, &make, &[&[]]);
        let tys = [d.clone(), TensorType::fixed(DType::I64, &[3, 2]), TensorType::fixed(DType::F32, &[3])];
        let make = |t: &[TensorType]| vec![floats(&t[0], 5), i64s(&[3, 2], &[0, 2, 3, -1, 1, 0]), floats(&t[2], 6)];
        check_with(ScatterND { reduction: r }.into(), &tys, &make, &[&[]]);
    }
    // Integer data moves exactly (replace only).
    let di = TensorType::fixed(DType::I32, &[5]);
    let tys = [di.clone(), TensorType::fixed(DType::I64, &[2]), TensorType::fixed(DType::I32, &[2])];
    let make = |t: &[TensorType]| vec![ints(&t[0], 1), i64s(&[2], &[4, -5]), ints(&t[2], 9)];
    check_with(ScatterElements { axis: 0, reduction: R::None }.into(), &tys, &make, &[&[]]);
}

/// Bytes of `v` as a tensor of `dtype` (integers wrap; bool is `v != 0`).
fn typed(t: &TensorType, v: &[i64]) -> TensorData {
    let bytes: Vec<u8> = v
        .iter()
        .flat_map(|&x| match t.dtype {
            DType::I64 | DType::U64 => x.to_le_bytes().to_vec(),
            DType::I32 | DType::U32 => (x as i32).to_le_bytes().to_vec(),
            DType::I16 | DType::U16 => (x as i16).to_le_bytes().to_vec(),
            DType::Bool => vec![(x != 0) as u8],
            _ => vec![x as u8],
        })
        .collect();
    TensorData::new(t.clone(), Arc::from(bytes)).unwrap()
}

/// Integers over a dtype's interesting range (negative, zero, extremes) from a seed.
fn int_data(t: &TensorType, seed: i64) -> TensorData {
    let n = t.shape.numel().unwrap() as i64;
    let (lo, hi) = t.dtype.int_range().unwrap_or((-100, 100));
    let edge = [lo, hi, 0, -1, 1, 2, 3, 7, 63, 64];
    let v: Vec<i64> =
        (0..n)
            .map(|i| {
                if (i + seed) % 5 == 0 {
                    edge[((i + seed) / 5 % 10) as usize]
                } else {
                    (i * 37 + seed * 11) % 201 - 100
                }
            })
            .collect();
    let v: Vec<i64> = v.iter().map(|&x| x.clamp(lo, hi)).collect();
    typed(t, &v)
}

#[test]
fn float_unary_ops_at_constant_and_symbolic_extents() {
    use dlc_ir::ops::*;
    let ops: Vec<Op> = vec![
        Abs {}.into(),
        Neg {}.into(),
        Sign {}.into(),
        Relu {}.into(),
        Sigmoid {}.into(),
        Tanh {}.into(),
        Exp {}.into(),
        Sin {}.into(),
        Cos {}.into(),
        Atan {}.into(),
        Sinh {}.into(),
        Cosh {}.into(),
        Asinh {}.into(),
        Erf {}.into(),
        Floor {}.into(),
        Ceil {}.into(),
        Round {}.into(),
        Softplus {}.into(),
        Softsign {}.into(),
        Mish {}.into(),
        HardSwish {}.into(),
        HardSigmoid { alpha: 0.2, beta: 0.5 }.into(),
        LeakyRelu { alpha: 0.1 }.into(),
        Elu { alpha: 0.7 }.into(),
        Selu { alpha: 1.673_263_2, gamma: 1.050_701 }.into(),
        Celu { alpha: 1.5 }.into(),
        ThresholdedRelu { alpha: 0.3 }.into(),
        Gelu { tanh_approximation: false }.into(),
        Gelu { tanh_approximation: true }.into(),
        Swish { alpha: 1.2 }.into(),
        Shrink { lambd: 0.5, bias: 0.25 }.into(),
        Clip { min: -0.5, max: 1.0 }.into(),
        Clip { min: f32::NEG_INFINITY, max: 0.25 }.into(),
    ];
    let t = ty(DType::F32, &[s("N"), f(3), f(4)]);
    for op in ops {
        check_with(op, std::slice::from_ref(&t), &|t| vec![floats(&t[0], 5)], &[&[("N", 1)], &[("N", 3)]]);
    }
    // Functions defined on part of the line: positive arguments, and (-1, 1).
    let pos = |t: &[TensorType]| vec![floats_with(&t[0], 6, |x| x.abs() + 1.1)];
    let unit = |t: &[TensorType]| vec![floats_with(&t[0], 7, |x| x * 0.45)];
    for op in [Log {}.into(), Sqrt {}.into(), Reciprocal {}.into(), Acosh {}.into(), Tan {}.into()] {
        check_with(op, std::slice::from_ref(&t), &pos, &[&[("N", 2)]]);
    }
    for op in [Asin {}.into(), Acos {}.into(), Atanh {}.into()] {
        check_with(op, std::slice::from_ref(&t), &unit, &[&[("N", 2)]]);
    }
}

#[test]
fn float_binary_ops_broadcast_over_symbolic_dims() {
    use dlc_ir::ops::*;
    let ops: Vec<Op> = vec![
        Add {}.into(),
        Sub {}.into(),
        Mul {}.into(),
        Div {}.into(),
        Max {}.into(),
        Min {}.into(),
        PRelu {}.into(),
        Mod { fmod: true }.into(),
        Mod { fmod: false }.into(),
        Equal {}.into(),
        Greater {}.into(),
        GreaterOrEqual {}.into(),
        Less {}.into(),
        LessOrEqual {}.into(),
    ];
    // [N, 3, 4] against a per-channel [3, 1] and a scalar-like [1].
    for b_dims in [vec![f(3), f(1)], vec![f(1)], vec![s("N"), f(3), f(4)]] {
        let ins = [ty(DType::F32, &[s("N"), f(3), f(4)]), ty(DType::F32, &b_dims)];
        for op in &ops {
            check_with(op.clone(), &ins, &|t| vec![floats(&t[0], 8), floats(&t[1], 9)], &[&[("N", 1)], &[("N", 2)]]);
        }
    }
    // Pow of positive bases, f32 and with an integer exponent (computed in double).
    let pos = |t: &[TensorType]| {
        let base = floats_with(&t[0], 6, |x| x.abs() + 0.1);
        let e = if t[1].dtype == DType::F32 { floats(&t[1], 2) } else { int_data(&t[1], 1) };
        vec![base, e]
    };
    for e in [DType::F32, DType::I32] {
        let ins = [ty(DType::F32, &[f(2), f(5)]), ty(e, &[f(5)])];
        check_with(Pow {}.into(), &ins, &pos, &[&[]]);
    }
}

#[test]
fn integer_ops_are_exact_in_every_width_and_signedness() {
    use dlc_ir::ops::*;
    let bin: Vec<Op> = vec![
        Add {}.into(),
        Sub {}.into(),
        Mul {}.into(),
        Div {}.into(),
        Mod { fmod: false }.into(),
        Mod { fmod: true }.into(),
        Max {}.into(),
        Min {}.into(),
        Equal {}.into(),
        Greater {}.into(),
        Less {}.into(),
        GreaterOrEqual {}.into(),
        LessOrEqual {}.into(),
        BitwiseAnd {}.into(),
        BitwiseOr {}.into(),
        BitwiseXor {}.into(),
        BitShift { left: true }.into(),
        BitShift { left: false }.into(),
    ];
    let un: Vec<Op> = vec![Abs {}.into(), Sign {}.into(), BitwiseNot {}.into()];
    for dt in [DType::I8, DType::U8, DType::I16, DType::U16, DType::I32, DType::U32, DType::I64, DType::U64] {
        let ins = [ty(dt, &[s("N"), f(10)]), ty(dt, &[f(10)])];
        for op in &bin {
            if matches!(op, Op::Mod(m) if m.fmod) && !dt.is_signed_int() {
                continue;
            }
            check_with(
                op.clone(),
                &ins,
                &|t| vec![int_data(&t[0], 1), int_data(&t[1], 3)],
                &[&[("N", 1)], &[("N", 4)]],
            );
        }
        for op in &un {
            check_with(op.clone(), &ins[..1], &|t| vec![int_data(&t[0], 2)], &[&[("N", 3)]]);
        }
        if dt.is_signed_int() {
            for op in [Neg {}.into(), Relu {}.into(), PRelu {}.into()] {
                let ins = if matches!(op, Op::PRelu(_)) { &ins[..] } else { &ins[..1] };
                check_with(
                    op,
                    ins,
                    &|t| t.iter().enumerate().map(|(i, t)| int_data(t, i as i64)).collect(),
                    &[&[("N", 2)]],
                );
            }
        }
    }
    // Logic on bool, and Where choosing between two broadcast operands.
    let b = ty(DType::Bool, &[f(4), f(3)]);
    for op in [And {}.into(), Or {}.into(), Xor {}.into()] {
        check_with(op, &[b.clone(), b.clone()], &|t| vec![int_data(&t[0], 1), int_data(&t[1], 2)], &[&[]]);
    }
    check_with(Not {}.into(), std::slice::from_ref(&b), &|t| vec![int_data(&t[0], 4)], &[&[]]);
    let ins = [b.clone(), ty(DType::I32, &[f(3)]), ty(DType::I32, &[f(4), f(1)])];
    check_with(Where {}.into(), &ins, &|t| vec![int_data(&t[0], 1), int_data(&t[1], 2), int_data(&t[2], 3)], &[&[]]);
}

/// Every conversion between a set of dtypes, on values that include NaN, infinities,
/// halves and out-of-range numbers; exact against dlc-interp (the rules of `Cast`).
#[test]
fn casts_between_every_dtype_pair_are_exact() {
    use dlc_ir::ops::Cast;
    let specials = [
        0.0f32,
        -0.0,
        0.5,
        1.5,
        2.5,
        -2.5,
        1.0e-3,
        3.0e-8,
        -7.75,
        100.0,
        300.0,
        -300.0,
        448.0,
        500.0,
        65504.0,
        1.0e6,
        -1.0e10,
        3.0e9,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::MIN_POSITIVE,
        1.0 / 3.0,
        -0.1,
    ];
    let dtypes = [
        DType::F32,
        DType::F64,
        DType::F16,
        DType::BF16,
        DType::F8E4M3FN,
        DType::F8E4M3FNUZ,
        DType::F8E5M2,
        DType::F8E5M2FNUZ,
        DType::F4E2M1,
        DType::F8E8M0,
        DType::I4,
        DType::U4,
        DType::I8,
        DType::U8,
        DType::I32,
        DType::U32,
        DType::I64,
        DType::Bool,
    ];
    let src = TensorData::from_f32(&[specials.len() as u64], &specials).unwrap();
    for &from in &dtypes {
        // The specials converted to `from` by dlc-interp are the operand.
        let to_from = dlc_interp::eval(
            &Cast::new(from).into(),
            std::slice::from_ref(&src),
            &[TensorType::fixed(from, &[specials.len() as u64])],
        )
        .unwrap()
        .remove(0);
        for &to in &dtypes {
            for saturate in [true, false] {
                // `saturate` only matters for the 8- and 4-bit floats.
                let minifloat = to.is_float() && to.is_storage_only();
                if !saturate && !minifloat {
                    continue;
                }
                let op: Op = Cast { to, saturate }.into();
                let x = to_from.clone();
                check_with(op, &[x.ty().clone()], &|_| vec![x.clone()], &[&[]]);
            }
        }
    }
}

#[test]
fn fused_programs_round_intermediates_like_separate_kernels() {
    use dlc_ir::ops::*;
    let step = |op: Op, args: Vec<Arg>| FusedStep { op, args };
    // x * sigmoid(x) + bias, then relu: f32 with a broadcast bias, symbolic batch.
    let silu: Op = Fused {
        steps: vec![
            step(Sigmoid {}.into(), vec![Arg::Operand(0)]),
            step(Mul {}.into(), vec![Arg::Operand(0), Arg::Step(0)]),
            step(Add {}.into(), vec![Arg::Step(1), Arg::Operand(1)]),
            step(Relu {}.into(), vec![Arg::Step(2)]),
        ],
    }
    .into();
    let ins = [ty(DType::F32, &[s("N"), f(3), f(4)]), ty(DType::F32, &[f(3), f(1)])];
    check_with(silu, &ins, &|t| vec![floats(&t[0], 1), floats(&t[1], 2)], &[&[("N", 1)], &[("N", 5)]]);
    // f16 in, an f16 intermediate (rounded), then a cast to f32 and one to int8 (saturating).
    let h: Op = Fused {
        steps: vec![
            step(Mul {}.into(), vec![Arg::Operand(0), Arg::Operand(0)]),
            step(Cast::new(DType::F32).into(), vec![Arg::Step(0)]),
            step(Cast::new(DType::I8).into(), vec![Arg::Step(1)]),
        ],
    }
    .into();
    let x = {
        let v: Vec<f32> = (0..24).map(|i| i as f32 * 1.37 - 9.0).collect();
        let f = TensorData::from_f32(&[24], &v).unwrap();
        dlc_interp::eval(&Cast::new(DType::F16).into(), &[f], &[TensorType::fixed(DType::F16, &[24])])
            .unwrap()
            .remove(0)
    };
    check_with(h, &[x.ty().clone()], &|_| vec![x.clone()], &[&[]]);
}

#[test]
fn pools_in_both_forms_with_padding_strides_dilations_and_ceil_mode() {
    use dlc_ir::ops::{AutoPad, AveragePool, GlobalAveragePool, MaxPool};
    // (kernel, strides, pads, dilations, ceil_mode)
    type Window = (Vec<i64>, Vec<i64>, Vec<i64>, Vec<i64>, bool);
    let geoms: Vec<Window> = vec![
        (vec![2, 2], vec![2, 2], vec![0, 0, 0, 0], vec![1, 1], false),
        (vec![3, 3], vec![1, 1], vec![1, 1, 1, 1], vec![1, 1], false),
        (vec![3, 2], vec![2, 1], vec![1, 0, 2, 1], vec![1, 2], true),
        (vec![3, 3], vec![2, 2], vec![0, 0, 0, 0], vec![1, 1], true),
    ];
    let mut ops: Vec<Op> = Vec::new();
    for (k, s, p, d, ceil) in geoms {
        ops.push(
            MaxPool {
                kernel_shape: k.clone(),
                strides: s.clone(),
                pads: p.clone(),
                dilations: d.clone(),
                auto_pad: AutoPad::NotSet,
                ceil_mode: ceil,
            }
            .into(),
        );
        for count_include_pad in [false, true] {
            ops.push(
                AveragePool {
                    kernel_shape: k.clone(),
                    strides: s.clone(),
                    pads: p.clone(),
                    dilations: d.clone(),
                    auto_pad: AutoPad::NotSet,
                    ceil_mode: ceil,
                    count_include_pad,
                }
                .into(),
            );
        }
    }
    ops.push(GlobalAveragePool {}.into());
    // A small case (a serial loop over planes) and one big enough for pool tasks run
    // in chunks of planes (the interpreter runs `parallel` loops in order).
    // (The big case only for two pools: the interpreter is slow.)
    for (dims, which) in [([2u64, 3, 7, 6], &ops[..]), ([1, 16, 60, 60], &ops[3..5])] {
        let t = TensorType::fixed(DType::F32, &dims);
        for op in which {
            check_with(op.clone(), std::slice::from_ref(&t), &|t| vec![floats(&t[0], 11)], &[&[]]);
            // The per-element (CUDA) form computes the same numbers.
            let out = op.infer("n", std::slice::from_ref(&t)).unwrap();
            let node = dlc_lower::Node {
                name: "n",
                op,
                inputs: std::slice::from_ref(&t),
                outputs: &out,
                consts: &[],
                operand_max: &[],
            };
            let k = match op {
                Op::MaxPool(p) => dlc_lower::pool::pool(
                    "k",
                    &node,
                    &p.window("n", &t).unwrap(),
                    dlc_lower::pool::Pool::Max,
                    dlc_lower::pool::Form::Elements,
                ),
                Op::AveragePool(p) => dlc_lower::pool::pool(
                    "k",
                    &node,
                    &p.window("n", &t).unwrap(),
                    dlc_lower::pool::Pool::Avg { count_include_pad: p.count_include_pad },
                    dlc_lower::pool::Form::Elements,
                ),
                _ => dlc_lower::pool::global_avgpool("k", &node, dlc_lower::pool::Form::Elements),
            }
            .unwrap();
            let tasks = dlc_lower::lower("k", &node, &T).unwrap().unwrap();
            let x = floats(&t, 11);
            let run = |k: &dlc_kir::Kernel| {
                let mut bufs = vec![x.bytes().to_vec(), vec![0; out[0].size_bytes().unwrap() as usize]];
                run_kernel(k, &mut bufs, &BTreeMap::new()).unwrap();
                bufs.pop().unwrap()
            };
            if matches!(op, Op::GlobalAveragePool(_)) {
                // The CPU sums each plane in f64 vector lanes, the per-element form in f32
                // in order: the same means to f32 rounding.
                let f = |b: Vec<u8>| {
                    b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect::<Vec<_>>()
                };
                for (a, b) in f(run(&k)).into_iter().zip(f(run(&tasks))) {
                    assert!((a - b).abs() <= 1e-6 * a.abs().max(1.0), "{op:?}: the two forms differ: {a} vs {b}");
                }
            } else {
                assert_eq!(run(&k), run(&tasks), "{op:?}: the two forms differ");
            }
            // Pool tasks exactly when the work is worth them.
            let geom = match op {
                Op::MaxPool(p) => Some(p.geometry("n", &t).unwrap()),
                Op::AveragePool(p) => Some(p.geometry("n", &t).unwrap()),
                _ => None,
            };
            let work = geom.map_or(dims.iter().product(), |g| {
                dims[0] * dims[1] * g.output[0] * g.output[1] * g.kernel[0] * g.kernel[1]
            });
            let text = dlc_kir::print::kernel(&tasks);
            assert_eq!(text.contains("parallel"), work >= dlc_lower::PAR_MIN_WORK, "work {work}:\n{text}");
        }
    }
}

/// A Conv's operand types: x, w, then a bias and a residual (of the result's type) when
/// asked for.
fn conv_operands(op: &Op, xd: &[u64; 4], wd: &[u64; 4], bias: bool, res: bool) -> Vec<TensorType> {
    let mut tys = vec![TensorType::fixed(DType::F32, xd), TensorType::fixed(DType::F32, wd)];
    if bias {
        tys.push(TensorType::fixed(DType::F32, &[wd[0]]));
    }
    if res {
        let out = op.infer("n", &tys).unwrap();
        tys.push(out[0].clone());
    }
    tys
}

#[test]
fn plain_convolutions_grouped_dilated_with_epilogues_and_transposed() {
    use dlc_ir::ops::{Activation, AutoPad, Conv, ConvTranspose};
    let conv = |group: i64, strides: Vec<i64>, pads: Vec<i64>, dilations: Vec<i64>, act: Activation| -> Op {
        Conv { kernel_shape: vec![], strides, pads, dilations, group, auto_pad: AutoPad::NotSet, act }.into()
    };
    // (op, x dims, w dims, with bias, with residual)
    type Case = (Op, [u64; 4], [u64; 4], bool, bool);
    let cases: Vec<Case> = vec![
        (conv(1, vec![1, 1], vec![1, 1, 1, 1], vec![1, 1], Activation::None), [1, 3, 6, 5], [4, 3, 3, 3], false, false),
        (conv(2, vec![2, 1], vec![0, 1, 2, 0], vec![2, 1], Activation::Relu), [2, 4, 9, 7], [6, 2, 3, 2], true, false),
        (conv(4, vec![1, 2], vec![1, 1, 1, 1], vec![1, 1], Activation::Gelu), [1, 4, 5, 6], [4, 1, 3, 3], true, true),
        (
            conv(1, vec![3, 3], vec![2, 2, 2, 2], vec![2, 2], Activation::Clip { min: -0.5, max: 0.5 }),
            [1, 2, 11, 10],
            [3, 2, 2, 3],
            true,
            false,
        ),
    ];
    for (op, xd, wd, bias, res) in &cases {
        let tys = conv_operands(op, xd, wd, *bias, *res);
        // The plain kir fallback, called directly (`lower` picks among the Conv kernels).
        let Op::Conv(c) = op else { unreachable!() };
        let out = op.infer("n", &tys).unwrap();
        let node = dlc_lower::Node { name: "n", op, inputs: &tys, outputs: &out, consts: &[], operand_max: &[] };
        let k = dlc_lower::conv::conv("k", &node, c).unwrap();
        let xs: Vec<TensorData> = tys.iter().enumerate().map(|(i, t)| floats(t, 20 + i as u64)).collect();
        let want = dlc_interp::eval(op, &xs, &out).unwrap();
        let mut bufs: Vec<Vec<u8>> = xs.iter().map(|x| x.bytes().to_vec()).collect();
        bufs.push(vec![0; out[0].size_bytes().unwrap() as usize]);
        run_kernel(&k, &mut bufs, &BTreeMap::new()).unwrap();
        let got: Vec<f32> =
            bufs.last().unwrap().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        for (g, w) in got.iter().zip(want[0].to_f32().unwrap()) {
            assert!((g - w).abs() <= 1e-5 + 1e-4 * w.abs(), "{op:?}: {g} vs {w}");
        }
    }
    // Through `lower`, the first case (weights given at run time) takes the direct
    // vector kernel, with the same numbers.
    let tys = [TensorType::fixed(DType::F32, &[1, 3, 6, 5]), TensorType::fixed(DType::F32, &[4, 3, 3, 3])];
    let out = cases[0].0.infer("n", &tys).unwrap();
    let node =
        dlc_lower::Node { name: "n", op: &cases[0].0, inputs: &tys, outputs: &out, consts: &[], operand_max: &[] };
    let k = dlc_lower::lower("k", &node, &T).expect("ported").unwrap();
    assert!(dlc_kir::print::kernel(&k).contains("f32x8"));
    let xs: Vec<TensorData> = tys.iter().enumerate().map(|(i, t)| floats(t, 20 + i as u64)).collect();
    compare_kernel(&k, &cases[0].0, &xs, &out);
    // ConvTranspose: strides, padding, output padding, groups, dilations, bias.
    let ct = |strides: Vec<i64>, pads: Vec<i64>, output_padding: Vec<i64>, dilations: Vec<i64>, group: i64| -> Op {
        ConvTranspose {
            kernel_shape: vec![],
            strides,
            pads,
            dilations,
            group,
            output_padding,
            output_shape: vec![],
            auto_pad: AutoPad::NotSet,
        }
        .into()
    };
    let cases: Vec<(Op, [u64; 4], [u64; 4], bool)> = vec![
        (ct(vec![1, 1], vec![0, 0, 0, 0], vec![], vec![1, 1], 1), [1, 2, 4, 3], [2, 3, 3, 3], false),
        (ct(vec![2, 2], vec![1, 1, 1, 1], vec![1, 0], vec![1, 1], 1), [2, 3, 4, 4], [3, 2, 3, 3], true),
        (ct(vec![3, 2], vec![0, 1, 1, 0], vec![], vec![2, 1], 2), [1, 4, 3, 5], [4, 3, 2, 3], true),
    ];
    for (op, xd, wd, bias) in cases {
        let mut tys = vec![TensorType::fixed(DType::F32, &xd), TensorType::fixed(DType::F32, &wd)];
        if bias {
            let Op::ConvTranspose(c) = &op else { unreachable!() };
            tys.push(TensorType::fixed(DType::F32, &[wd[1] * c.group as u64]));
        }
        check_with(op, &tys, &|t| t.iter().enumerate().map(|(i, t)| floats(t, 30 + i as u64)).collect(), &[&[]]);
    }
    // Run-time batch and image dims (a text detector's upsampling head): explicit pads
    // and SAME, at two sizes of each.
    let sym = [s("N"), f(3), s("H"), s("W")];
    for (op, bias) in [
        (ct(vec![2, 2], vec![0, 0, 0, 0], vec![], vec![1, 1], 1), true),
        (ct(vec![2, 3], vec![1, 0, 1, 1], vec![1, 2], vec![1, 2], 1), false),
        (
            ConvTranspose {
                kernel_shape: vec![],
                strides: vec![2, 2],
                pads: vec![],
                dilations: vec![],
                group: 1,
                output_padding: vec![],
                output_shape: vec![],
                auto_pad: AutoPad::SameUpper,
            }
            .into(),
            false,
        ),
    ] {
        let mut tys = vec![ty(DType::F32, &sym), TensorType::fixed(DType::F32, &[3, 2, 3, 2])];
        if bias {
            tys.push(TensorType::fixed(DType::F32, &[2]));
        }
        let make = |t: &[TensorType]| t.iter().enumerate().map(|(i, t)| floats(t, 50 + i as u64)).collect();
        check_with(op, &tys, &make, &[&[("N", 1), ("H", 4), ("W", 5)], &[("N", 2), ("H", 7), ("W", 3)]]);
    }
}

#[test]
fn grid_sample_in_every_mode_padding_and_alignment() {
    use dlc_ir::ops::{GridSample, SampleMode, SamplePadding};
    // Grid coordinates in [-2, 2): many land outside the image, so every padding rule
    // (and reflection's folding more than once) is exercised. They are multiples of
    // 1/64, so denormalising is exact in f32 and f64 alike and `nearest` rounds the same
    // ties (a near-tie would round differently in the f64 reference).
    // Images, volumes (the 3-D form, 8 or 64 taps) and lines.
    let f32t = |d: &[u64]| TensorType::fixed(DType::F32, d);
    let shapes = [
        [f32t(&[2, 3, 5, 4]), f32t(&[2, 6, 3, 2])],
        [f32t(&[2, 2, 3, 5, 4]), f32t(&[2, 2, 3, 2, 3])],
        [f32t(&[1, 2, 6]), f32t(&[1, 5, 1])],
    ];
    let grid = |t: &TensorType| floats_with(t, 41, |x| (x * 64.0).round() / 64.0);
    for tys in &shapes {
        for mode in [SampleMode::Nearest, SampleMode::Linear, SampleMode::Cubic] {
            for padding in [SamplePadding::Zeros, SamplePadding::Border, SamplePadding::Reflection] {
                for align_corners in [false, true] {
                    let op: Op = GridSample { mode, padding, align_corners }.into();
                    check_with(op, tys, &|t| vec![floats(&t[0], 40), grid(&t[1])], &[&[]]);
                }
            }
        }
    }
}

/// Runs kernel `k` on `xs` and compares its f32 (or f64) result with dlc-interp's.
fn compare_kernel(k: &dlc_kir::Kernel, op: &Op, xs: &[TensorData], out: &[TensorType]) {
    let want = dlc_interp::eval(op, xs, out).unwrap();
    let mut bufs: Vec<Vec<u8>> = xs.iter().map(|x| x.bytes().to_vec()).collect();
    bufs.push(vec![0; out[0].size_bytes().unwrap() as usize]);
    run_kernel(k, &mut bufs, &BTreeMap::new()).unwrap();
    let got = bufs.pop().unwrap();
    let vals = |b: &[u8], d: DType| -> Vec<f64> {
        if d == DType::F64 {
            b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect()
        } else {
            b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect()
        }
    };
    let d = out[0].dtype;
    for (g, w) in vals(&got, d).iter().zip(vals(want[0].bytes(), d)) {
        assert!((g - w).abs() <= 1e-5 + 1e-4 * w.abs(), "{op:?}: {g} vs {w}");
    }
}

#[test]
fn plain_matrix_products_and_einsum() {
    use dlc_ir::ops::{Activation, Einsum, Gemm, MatMul};
    let f32t = |d: &[u64]| TensorType::fixed(DType::F32, d);
    // MatMul: batch broadcast, 1-D operands, bias with an activation (the fallback the
    // dispatch calls when B is not a constant).
    let cases: Vec<(Op, Vec<TensorType>)> = vec![
        (MatMul { act: Activation::None }.into(), vec![f32t(&[2, 1, 3, 4]), f32t(&[3, 4, 5])]),
        (MatMul { act: Activation::None }.into(), vec![f32t(&[4]), f32t(&[2, 4, 3])]),
        (MatMul { act: Activation::None }.into(), vec![f32t(&[3, 4]), f32t(&[4])]),
        (MatMul { act: Activation::Relu }.into(), vec![f32t(&[3, 4]), f32t(&[4, 6]), f32t(&[6])]),
    ];
    for (op, tys) in &cases {
        let Op::MatMul(m) = op else { unreachable!() };
        let out = op.infer("n", tys).unwrap();
        let node = dlc_lower::Node { name: "n", op, inputs: tys, outputs: &out, consts: &[], operand_max: &[] };
        let k = dlc_lower::linalg::matmul("k", &node, m.act).unwrap();
        let xs: Vec<TensorData> = tys.iter().enumerate().map(|(i, t)| floats(t, 50 + i as u64)).collect();
        compare_kernel(&k, op, &xs, &out);
    }
    // Gemm: every transposition, alpha and beta, C full, per column and scalar.
    for (trans_a, trans_b) in [(false, false), (true, false), (false, true), (true, true)] {
        for c_dims in [None, Some(vec![3u64, 5]), Some(vec![5]), Some(vec![1])] {
            let op: Op = Gemm { alpha: 0.5, beta: 2.0, trans_a, trans_b, act: Activation::Gelu }.into();
            let a = if trans_a { f32t(&[4, 3]) } else { f32t(&[3, 4]) };
            let b = if trans_b { f32t(&[5, 4]) } else { f32t(&[4, 5]) };
            let mut tys = vec![a, b];
            if let Some(c) = &c_dims {
                tys.push(f32t(c));
            }
            let Op::Gemm(g) = &op else { unreachable!() };
            let out = op.infer("n", &tys).unwrap();
            let node =
                dlc_lower::Node { name: "n", op: &op, inputs: &tys, outputs: &out, consts: &[], operand_max: &[] };
            let k = dlc_lower::linalg::gemm("k", &node, g).unwrap();
            let xs: Vec<TensorData> = tys.iter().enumerate().map(|(i, t)| floats(t, 60 + i as u64)).collect();
            compare_kernel(&k, &op, &xs, &out);
        }
    }
    // Einsum through `lower` (its only lowering): contractions, transposes, traces,
    // broadcasting and an outer product; f32 and f64.
    let eqs: Vec<(&str, Vec<Vec<u64>>)> = vec![
        ("ij,jk->ik", vec![vec![3, 4], vec![4, 2]]),
        ("bij,bjk->bik", vec![vec![2, 3, 4], vec![2, 4, 5]]),
        ("ii->i", vec![vec![4, 4]]),
        ("ii", vec![vec![3, 3]]),
        ("ij->ji", vec![vec![2, 5]]),
        ("i,j->ij", vec![vec![3], vec![4]]),
        ("...ij,...jk->...ik", vec![vec![2, 1, 3, 2], vec![1, 2, 2, 3]]),
    ];
    for dt in [DType::F32, DType::F64] {
        for (eq, dims) in &eqs {
            let op: Op = Einsum { equation: eq.to_string() }.into();
            let tys: Vec<TensorType> = dims.iter().map(|d| TensorType::fixed(dt, d)).collect();
            let make = |t: &[TensorType]| -> Vec<TensorData> {
                t.iter()
                    .enumerate()
                    .map(|(i, t)| {
                        let f = floats(&TensorType::fixed(DType::F32, &t.shape.as_fixed().unwrap()), 70 + i as u64);
                        if t.dtype == DType::F32 {
                            f
                        } else {
                            let v: Vec<f64> = f.to_f32().unwrap().iter().map(|&x| x as f64).collect();
                            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                            TensorData::new(t.clone(), Arc::from(bytes)).unwrap()
                        }
                    })
                    .collect()
            };
            let out = op.infer("n", &tys).unwrap();
            let node =
                dlc_lower::Node { name: "n", op: &op, inputs: &tys, outputs: &out, consts: &[], operand_max: &[] };
            let k = dlc_lower::lower("k", &node, &T).expect("ported").unwrap();
            compare_kernel(&k, &op, &make(&tys), &out);
        }
    }
}

#[test]
fn attention_in_both_forms_with_every_mask_kind() {
    use dlc_ir::ops::Attention;
    let f32t = |d: &[u64]| TensorType::fixed(DType::F32, d);
    // (batch, query length, key length, heads, head size, value head size)
    let shapes: [(u64, u64, u64, u64, u64, u64); 4] =
        [(2, 3, 5, 2, 8, 8), (1, 2, 7, 1, 32, 16), (1, 4, 3, 3, 4, 12), (1, 16, 64, 2, 64, 64)];
    for (nb, sq, sk, h, d, dv) in shapes {
        let qkv = vec![f32t(&[nb, sq, h * d]), f32t(&[nb, sk, h * d]), f32t(&[nb, sk, h * dv])];
        // No mask, a float mask broadcast over heads and queries, key padding masks in
        // i64 and f32 (1 keeps a key, 0 masks it).
        let masks: Vec<Option<(bool, TensorType)>> = vec![
            None,
            Some((false, f32t(&[nb, 1, 1, sk]))),
            Some((true, TensorType::fixed(DType::I64, &[nb, sk]))),
            Some((true, f32t(&[nb, sk]))),
        ];
        for mask in masks {
            let key_padding = mask.as_ref().is_some_and(|m| m.0);
            let op: Op = Attention { heads: h as i64, scale: 0.3, key_padding, padding_fill: -1e4 }.into();
            let mut tys = qkv.clone();
            tys.extend(mask.map(|m| m.1));
            let out = op.infer("n", &tys).unwrap();
            let xs: Vec<TensorData> = tys
                .iter()
                .enumerate()
                .map(|(i, t)| match (i, t.dtype) {
                    (3, DType::I64) => i64s(
                        &t.shape.as_fixed().unwrap(),
                        &(0..nb * sk).map(|j| (j % 3 != 1) as i64).collect::<Vec<_>>(),
                    ),
                    (3, _) if key_padding => floats_with(t, 90, |x| (x > -1.0) as u8 as f32),
                    _ => floats(t, 80 + i as u64),
                })
                .collect();
            let node =
                dlc_lower::Node { name: "n", op: &op, inputs: &tys, outputs: &out, consts: &[], operand_max: &[] };
            for lanes in [1, 4, 8, 16] {
                let t = dlc_lower::Target::with_lanes(lanes);
                let k = dlc_lower::lower("k", &node, &t).expect("ported").unwrap();
                // The vector form whenever the lanes divide both head sizes and their
                // registers fit (q's row in at most 8, the output row in at most 16).
                let w = lanes as u64;
                let vector = w > 1 && d % w == 0 && dv % w == 0 && d / w <= 8 && dv / w <= 16;
                let text = dlc_kir::print::kernel(&k);
                assert_eq!(text.contains(&format!("f32x{lanes}")), vector, "lanes {lanes}, d {d}, dv {dv}");
                let work = 2 * nb * h * sq * sk * (d + dv);
                assert_eq!(text.contains("parallel"), vector && work >= dlc_lower::PAR_MIN_WORK, "{text}");
                compare_kernel(&k, &op, &xs, &out);
            }
        }
    }
}

#[test]
fn packed_gemm_panels_row_blocks_and_epilogues_at_every_vector_width() {
    use dlc_ir::ops::{Activation, Gemm, MatMul};
    let f32t = |d: &[u64]| TensorType::fixed(DType::F32, d);
    let acts = [
        Activation::None,
        Activation::Relu,
        Activation::Clip { min: -0.5, max: 0.25 },
        Activation::Gelu,
        Activation::Sigmoid,
        Activation::Swish,
        Activation::HardSwish,
    ];
    // (A dims, B dims): N a multiple of no panel width and of some, M leaving row
    // tails, a batch folded into M, and a product big enough for pool tasks.
    let shapes: [(&[u64], &[u64]); 4] =
        [(&[5, 7], &[7, 11]), (&[2, 3, 9], &[9, 32]), (&[13, 4], &[4, 8]), (&[64, 96], &[96, 80])];
    let mut cases: Vec<(Op, Vec<TensorType>, Vec<bool>)> = Vec::new();
    for (a, bd) in shapes {
        for act in acts {
            let op: Op = MatMul { act }.into();
            cases.push((op.clone(), vec![f32t(a), f32t(bd)], vec![false, true]));
            // A bias operand, constant (in registers for the vector activations) or not.
            let bias = f32t(&[bd[1]]);
            cases.push((op.clone(), vec![f32t(a), f32t(bd), bias.clone()], vec![false, true, true]));
            cases.push((op, vec![f32t(a), f32t(bd), bias], vec![false, true, false]));
        }
        if a.len() == 2 {
            let (m, nn) = (a[0], bd[1]);
            for (trans_b, c_dims, alpha, beta) in [
                (false, None, 1.0, 1.0),
                (true, Some(vec![nn]), 0.5, 2.0),
                (false, Some(vec![m, nn]), 1.0, 1.0),
                (true, Some(vec![1]), 1.0, -1.0),
            ] {
                let op: Op = Gemm { alpha, beta, trans_a: false, trans_b, act: Activation::Relu }.into();
                let b = if trans_b { f32t(&[bd[1], bd[0]]) } else { f32t(bd) };
                let mut tys = vec![f32t(a), b];
                tys.extend(c_dims.map(|d| f32t(&d)));
                let consts = (0..tys.len()).map(|i| i == 1).collect();
                cases.push((op, tys, consts));
            }
        }
    }
    for (op, tys, is_const) in &cases {
        let out = op.infer("n", tys).unwrap();
        let xs: Vec<TensorData> = tys.iter().enumerate().map(|(i, t)| floats(t, 40 + i as u64)).collect();
        let consts: Vec<Option<&TensorData>> = xs.iter().zip(is_const).map(|(x, c)| c.then_some(x)).collect();
        let node = dlc_lower::Node { name: "n", op, inputs: tys, outputs: &out, consts: &consts, operand_max: &[] };
        assert!(dlc_lower::gemm::plan(&node).is_some(), "{op:?} {tys:?}");
        for lanes in [4, 8, 16] {
            let k = dlc_lower::lower("k", &node, &dlc_lower::Target::with_lanes(lanes)).expect("ported").unwrap();
            // B lives in the kernel, packed (and a constant bias with a vector epilogue).
            assert_eq!(k.data[0].name, "bpack");
            compare_kernel(&k, op, &xs, &out);
        }
    }
    // Without a constant B: the plain loop nests, no packed copy.
    let tys = vec![f32t(&[3, 4]), f32t(&[4, 5])];
    let op: Op = MatMul { act: Activation::None }.into();
    let out = op.infer("n", &tys).unwrap();
    let node = dlc_lower::Node { name: "n", op: &op, inputs: &tys, outputs: &out, consts: &[], operand_max: &[] };
    assert!(dlc_lower::gemm::plan(&node).is_none());
    assert!(dlc_lower::lower("k", &node, &T).unwrap().unwrap().data.is_empty());
}

#[test]
fn pointwise_convolutions_with_partial_panels_channel_tails_and_epilogues() {
    use dlc_ir::ops::{Activation, AutoPad, Conv};
    let acts = [
        Activation::None,
        Activation::Relu,
        Activation::Clip { min: 0.0, max: 6.0 },
        Activation::Gelu,
        Activation::Sigmoid,
        Activation::Swish,
    ];
    // (x dims, output channels): pixel counts that fill whole panels at some widths and
    // leave a partial one at others, channel counts with tails, two images, and one
    // layer big enough for pool tasks.
    let shapes: [([u64; 4], u64); 4] =
        [([2, 3, 4, 4], 7), ([1, 5, 3, 5], 16), ([2, 4, 2, 3], 13), ([1, 32, 14, 14], 24)];
    for (xd, m) in shapes {
        for (i, act) in acts.into_iter().enumerate() {
            let op: Op = Conv {
                kernel_shape: vec![],
                strides: vec![],
                pads: vec![],
                dilations: vec![],
                group: 1,
                auto_pad: AutoPad::NotSet,
                act,
            }
            .into();
            let mut tys = vec![TensorType::fixed(DType::F32, &xd), TensorType::fixed(DType::F32, &[m, xd[1], 1, 1])];
            // Bias on some cases, bias and residual on others.
            if i % 2 == 1 || i == 4 {
                tys.push(TensorType::fixed(DType::F32, &[m]));
            }
            if i >= 3 {
                tys.push(TensorType::fixed(DType::F32, &[xd[0], m, xd[2], xd[3]]));
            }
            let Op::Conv(cv) = &op else { unreachable!() };
            let out = op.infer("n", &tys).unwrap();
            let node =
                dlc_lower::Node { name: "n", op: &op, inputs: &tys, outputs: &out, consts: &[], operand_max: &[] };
            assert!(dlc_lower::conv1x1::applies(&node, cv));
            let xs: Vec<TensorData> = tys.iter().enumerate().map(|(i, t)| floats(t, 30 + i as u64)).collect();
            for lanes in [4, 8, 16] {
                let k = dlc_lower::conv1x1::conv1x1("k", &node, cv, &dlc_lower::Target::with_lanes(lanes)).unwrap();
                compare_kernel(&k, &op, &xs, &out);
            }
        }
    }
}

#[test]
fn direct_convolutions_strided_depthwise_and_at_the_borders() {
    use dlc_ir::ops::{Activation, AutoPad, Conv};
    let conv = |group: i64, s: i64, p: [i64; 4], act: Activation| -> Op {
        Conv {
            kernel_shape: vec![],
            strides: vec![s, s],
            pads: p.to_vec(),
            dilations: vec![1, 1],
            group,
            auto_pad: AutoPad::NotSet,
            act,
        }
        .into()
    };
    // (op, x dims, w dims, bias, residual): stride 1 and 2 with padding on every side,
    // a 7x7 stem, rows narrower and wider than a tile, depthwise with a channel group
    // remainder, and vector and lane-wise activations.
    type Case = (Op, [u64; 4], [u64; 4], bool, bool);
    let cases: Vec<Case> = vec![
        (conv(1, 1, [1, 1, 1, 1], Activation::Relu), [1, 3, 9, 13], [5, 3, 3, 3], true, false),
        (conv(1, 2, [1, 0, 2, 1], Activation::None), [2, 2, 11, 17], [7, 2, 3, 3], false, false),
        (conv(1, 2, [3, 3, 3, 3], Activation::Clip { min: 0.0, max: 6.0 }), [1, 3, 20, 20], [4, 3, 7, 7], true, false),
        (conv(1, 1, [2, 2, 2, 2], Activation::Sigmoid), [1, 4, 7, 7], [13, 4, 5, 5], true, true),
        (conv(1, 1, [1, 1, 1, 1], Activation::Swish), [1, 5, 8, 9], [6, 5, 3, 3], true, false),
        (
            conv(24, 1, [1, 1, 1, 1], Activation::Clip { min: 0.0, max: 6.0 }),
            [1, 24, 14, 14],
            [24, 1, 3, 3],
            true,
            false,
        ),
        (conv(20, 2, [1, 1, 1, 1], Activation::Gelu), [1, 20, 30, 30], [20, 1, 3, 3], true, true),
        (conv(1, 1, [1, 1, 1, 1], Activation::None), [1, 16, 28, 28], [16, 16, 3, 3], true, false),
    ];
    for (op, xd, wd, bias, res) in &cases {
        let tys = conv_operands(op, xd, wd, *bias, *res);
        let Op::Conv(cv) = op else { unreachable!() };
        let out = op.infer("n", &tys).unwrap();
        let node = dlc_lower::Node { name: "n", op, inputs: &tys, outputs: &out, consts: &[], operand_max: &[] };
        let g = cv.geometry("n", &tys[0], &tys[1]).unwrap();
        let xs: Vec<TensorData> = tys.iter().enumerate().map(|(i, t)| floats(t, 60 + i as u64)).collect();
        for lanes in [4, 8, 16] {
            let t = dlc_lower::Target::with_lanes(lanes);
            assert!(dlc_lower::convdirect::applies(&g, cv, &node, &t), "{op:?} at {lanes} lanes");
            let k = dlc_lower::convdirect::conv_direct("k", &node, cv, &g, &t).unwrap();
            compare_kernel(&k, op, &xs, &out);
        }
    }
}

#[test]
fn channel_blocked_convolutions_with_constant_weights() {
    use dlc_ir::ops::{Activation, AutoPad, Conv};
    let grouped = |s: i64, p: [i64; 4], d: i64, act: Activation, group: i64| -> Op {
        Conv {
            kernel_shape: vec![],
            strides: vec![s, s],
            pads: p.to_vec(),
            dilations: vec![d, d],
            group,
            auto_pad: AutoPad::NotSet,
            act,
        }
        .into()
    };
    let conv = |s: i64, p: [i64; 4], d: i64, act: Activation| grouped(s, p, d, act, 1);
    // (op, x dims, w dims, bias, residual): padding on every side and border tiles, a
    // strided 7x7 stem, dilation, a 1x1 split into rows, channel counts that leave the
    // last block partly empty, a layer whose weights make the blocks the outer loop, and
    // grouped ones (RegNet's groups of 8 filters, strided; groups of 24 filters whose
    // blocks of 16 leave the last one half empty; a grouped 1x1; groups of 4 filters).
    type Case = (Op, [u64; 4], [u64; 4], bool, bool);
    let cases: Vec<Case> = vec![
        (conv(1, [1, 1, 1, 1], 1, Activation::Relu), [1, 3, 9, 30], [20, 3, 3, 3], true, false),
        (conv(2, [3, 3, 3, 3], 1, Activation::None), [1, 3, 21, 21], [8, 3, 7, 7], true, false),
        (conv(1, [2, 0, 2, 1], 2, Activation::Gelu), [2, 4, 10, 11], [13, 4, 3, 3], true, true),
        (conv(1, [0, 0, 0, 0], 1, Activation::Sigmoid), [1, 16, 6, 6], [24, 16, 1, 1], true, true),
        (conv(1, [1, 1, 1, 1], 2, Activation::Swish), [1, 16, 9, 9], [32, 16, 3, 3], true, false),
        (
            conv(1, [1, 1, 1, 1], 1, Activation::Clip { min: 0.0, max: 6.0 }),
            [1, 128, 4, 4],
            [64, 128, 3, 3],
            true,
            true,
        ),
        (grouped(2, [1, 1, 1, 1], 1, Activation::Relu, 6), [1, 48, 9, 10], [48, 8, 3, 3], true, false),
        (grouped(1, [1, 1, 1, 1], 1, Activation::None, 2), [2, 8, 7, 13], [48, 4, 3, 3], true, true),
        (grouped(1, [0, 0, 0, 0], 1, Activation::Relu, 4), [1, 16, 5, 5], [32, 4, 1, 1], true, true),
        (grouped(1, [2, 1, 0, 2], 2, Activation::None, 3), [1, 12, 8, 9], [12, 4, 3, 3], true, false),
    ];
    for (op, xd, wd, bias, res) in &cases {
        let tys = conv_operands(op, xd, wd, *bias, *res);
        let Op::Conv(cv) = op else { unreachable!() };
        let out = op.infer("n", &tys).unwrap();
        let xs: Vec<TensorData> = tys.iter().enumerate().map(|(i, t)| floats(t, 70 + i as u64)).collect();
        let consts = [None, Some(&xs[1])];
        let node = dlc_lower::Node { name: "n", op, inputs: &tys, outputs: &out, consts: &consts, operand_max: &[] };
        let g = cv.geometry("n", &tys[0], &tys[1]).unwrap();
        for lanes in [4, 8, 16] {
            let t = dlc_lower::Target::with_lanes(lanes);
            let groups = cv.group as u64;
            assert!(groups == 1 || dlc_lower::convblk::applies(&node, cv, &t).is_some(), "{op:?} at {lanes} lanes");
            let w = dlc_lower::convblk::lanes(&t, groups, wd[0] / groups).unwrap().0;
            assert!(groups == 1 || (wd[0] / groups).is_multiple_of(w), "{op:?} at {lanes} lanes: {w}");
            let k = dlc_lower::convblk::conv("k", &node, cv, &(&g).into(), &t).unwrap();
            assert_eq!(k.data[0].name, "wpack");
            compare_kernel(&k, op, &xs, &out);
        }
    }
}

/// Runs kernel `k` on `xs` and returns its results (of types `out`), each filled with
/// 0xAA first so that an element the kernel does not write shows.
fn run_outputs(k: &dlc_kir::Kernel, xs: &[TensorData], out: &[TensorType]) -> Vec<Vec<u8>> {
    let mut bufs: Vec<Vec<u8>> = xs.iter().map(|x| x.bytes().to_vec()).collect();
    bufs.extend(out.iter().map(|t| vec![0xAA; t.size_bytes().unwrap() as usize]));
    run_kernel(k, &mut bufs, &BTreeMap::new()).unwrap_or_else(|e| panic!("{e}\n{}", dlc_kir::print::kernel(k)));
    bufs.split_off(xs.len())
}

fn f32_of(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

/// `n` pseudo-random values (a 64-bit LCG's high 31 bits) from `seed`.
fn lcg(seed: u64, n: u64) -> impl Iterator<Item = u64> {
    let mut x = seed | 1;
    (0..n).map(move |_| {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        x >> 33
    })
}

/// int8: `quant_pack` (NCHW with padding and channels past C, matrix rows, dynamic
/// ranges) is exact; `qconv` on every dot-product path (VNNI, the AVX2 pairs, exact i32)
/// and with 7-bit inputs (the pairs added in 16 bits), partial channel blocks, strides,
/// dilations, residuals, activations, matrix rows and dynamic quantization, within the
/// ONNX tolerances of the f32 epilogue.
#[test]
fn int8_packs_and_convolutions_on_every_dot_path() {
    use dlc_ir::ops::{Activation, QConv, QuantPack};
    use dlc_lower::{Int8Dot, Target};
    let f32t = |d: &[u64]| TensorType::fixed(DType::F32, d);
    let pack_op = |qmax: i64, pads: [i64; 4], rows: bool, dynamic: bool| -> Op {
        QuantPack { scale: 0.02, zero_point: qmax / 2, qmax, pads: pads.to_vec(), rows, dynamic }.into()
    };
    // quant_pack alone: exact.
    let packs: [(&[u64], [i64; 4], bool, bool); 6] = [
        (&[1, 6, 5, 11], [1, 2, 0, 1], false, false),
        (&[2, 8, 4, 16], [0, 0, 0, 0], false, true),
        (&[1, 3, 7, 9], [1, 1, 1, 1], false, true),
        (&[1, 16, 30, 30], [1, 1, 1, 1], false, false),
        (&[5, 10], [0; 4], true, false),
        (&[6, 8], [0; 4], true, true),
    ];
    for (dims, pads, rows, dynamic) in packs {
        for qmax in [255, 127] {
            let op = pack_op(qmax, pads, rows, dynamic);
            let x = floats(&f32t(dims), 3);
            let out = op.infer("n", &[x.ty().clone()]).unwrap();
            let node = dlc_lower::Node {
                name: "n",
                op: &op,
                inputs: std::slice::from_ref(x.ty()),
                outputs: &out,
                consts: &[],
                operand_max: &[],
            };
            let k = dlc_lower::lower("k", &node, &T).expect("ported").unwrap();
            let got = run_outputs(&k, std::slice::from_ref(&x), &out);
            let want = dlc_interp::eval(&op, std::slice::from_ref(&x), &out).unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g, w.bytes(), "{op:?} on {dims:?}");
            }
        }
    }
    // qconv on a pack of a float input: (x dims, M, KH, KW, strides, dilations, pads,
    // residual, largest weight).
    struct Case {
        x: &'static [u64],
        m: u64,
        k: [u64; 2],
        s: [i64; 2],
        d: [i64; 2],
        pads: [i64; 4],
        res: bool,
        wmax: i64,
    }
    let cases = [
        Case { x: &[1, 8, 9, 9], m: 20, k: [3, 3], s: [1, 1], d: [1, 1], pads: [1, 1, 1, 1], res: true, wmax: 63 },
        Case { x: &[1, 6, 8, 8], m: 16, k: [1, 1], s: [2, 2], d: [1, 1], pads: [0; 4], res: false, wmax: 63 },
        Case { x: &[2, 16, 7, 7], m: 40, k: [3, 3], s: [1, 1], d: [2, 2], pads: [2, 2, 2, 2], res: false, wmax: 63 },
        Case { x: &[1, 12, 5, 6], m: 24, k: [2, 3], s: [1, 2], d: [1, 1], pads: [0, 1, 1, 0], res: true, wmax: 127 },
        Case { x: &[1, 32, 14, 14], m: 64, k: [3, 3], s: [1, 1], d: [1, 1], pads: [1, 1, 1, 1], res: false, wmax: 63 },
    ];
    let acts = [Activation::None, Activation::Relu, Activation::Clip { min: -0.5, max: 0.75 }];
    let paths = [Int8Dot::Vnni512, Int8Dot::Vnni, Int8Dot::Avx2Pairs, Int8Dot::Exact];
    let weights = |dims: &[u64], wmax: i64, seed: u64| -> TensorData {
        let v: Vec<u8> =
            lcg(seed, dims.iter().product()).map(|x| ((x as i64 % (2 * wmax + 1)) - wmax) as i8 as u8).collect();
        TensorData::new(TensorType::fixed(DType::I8, dims), Arc::from(v)).unwrap()
    };
    let check = |op: &Op, xs: &[TensorData], qmax: i64, path: Int8Dot, what: &str| {
        let tys: Vec<TensorType> = xs.iter().map(|x| x.ty().clone()).collect();
        let out = op.infer("n", &tys).unwrap();
        let consts: Vec<Option<&TensorData>> = (0..xs.len()).map(|i| (1..=3).contains(&i).then_some(&xs[i])).collect();
        let bound = [Some(qmax as u64)];
        let node = dlc_lower::Node { name: "n", op, inputs: &tys, outputs: &out, consts: &consts, operand_max: &bound };
        let k =
            dlc_lower::lower("k", &node, &Target { f32_lanes: 8, int8: path, pool: true }).expect("ported").unwrap();
        let text = dlc_kir::print::kernel(&k);
        let wmax_ok = xs[1].bytes().iter().all(|&v| (-63..=63).contains(&(v as i8)));
        let used = |name: &str| text.contains(name);
        assert_eq!(used("vpdpbusd.256"), path == Int8Dot::Vnni, "{what}");
        assert_eq!(used("vpdpbusd.512"), path == Int8Dot::Vnni512, "{what}");
        // AVX2: the pairs, on the weights' halves where they pass +-63.
        assert_eq!(used("pmadd.ub.sw"), path == Int8Dot::Avx2Pairs, "{what}");
        assert_eq!(used(" = ashr "), path == Int8Dot::Avx2Pairs && !wmax_ok, "{what}");
        let got = run_outputs(&k, xs, &out);
        let want = dlc_interp::eval(op, xs, &out).unwrap();
        for (g, w) in f32_of(&got[0]).iter().zip(f32_of(want[0].bytes())) {
            assert!((g - w).abs() <= 1e-5 + 1e-4 * w.abs(), "{what} {path:?}: {g} vs {w}");
        }
    };
    for (ci, cs) in cases.iter().enumerate() {
        let (ch, kk) = (cs.x[1], cs.k);
        let w = weights(&[cs.m, ch, kk[0], kk[1]], cs.wmax, ci as u64);
        let mult = TensorData::from_f32(&[cs.m], &(0..cs.m).map(|i| 1e-3 * (i % 7 + 1) as f32).collect::<Vec<_>>());
        let off = TensorData::from_f32(&[cs.m], &(0..cs.m).map(|i| 0.1 * (i % 5) as f32 - 0.2).collect::<Vec<_>>());
        for (qmax, act) in [(255, acts[ci % 3]), (127, acts[(ci + 1) % 3])] {
            let pk = pack_op(qmax, cs.pads, false, false);
            let x = floats(&f32t(cs.x), 10 + ci as u64);
            let xt = [x.ty().clone()];
            let packed = dlc_interp::eval(&pk, std::slice::from_ref(&x), &pk.infer("p", &xt).unwrap()).unwrap();
            let op: Op =
                QConv { strides: cs.s.to_vec(), dilations: cs.d.to_vec(), act, rows: false, dynamic: false }.into();
            let mut xs = vec![packed[0].clone(), w.clone(), mult.clone().unwrap(), off.clone().unwrap()];
            if cs.res {
                let tys: Vec<TensorType> = xs.iter().map(|x| x.ty().clone()).collect();
                let y = op.infer("n", &tys).unwrap();
                xs.push(floats(&y[0], 77));
            }
            for path in paths {
                check(&op, &xs, qmax, path, &format!("case {ci} qmax {qmax}"));
            }
        }
    }
    // Matrix rows (a MatMul's int8 form) and dynamic quantization (NCHW and rows).
    for (dims, rows) in [(&[9u64, 20][..], true), (&[1, 8, 6, 6][..], false)] {
        for dynamic in [false, true] {
            let pk = pack_op(255, [0; 4], rows, dynamic);
            let x = floats(&f32t(dims), 5);
            let packed =
                dlc_interp::eval(&pk, std::slice::from_ref(&x), &pk.infer("p", &[x.ty().clone()]).unwrap()).unwrap();
            let (m, c) = (12, dims[1]);
            let w = weights(&[m, c, 1, 1], 63, 9);
            let mult = TensorData::from_f32(&[m], &vec![if dynamic { 0.01 } else { 2e-4 }; m as usize]).unwrap();
            let off = TensorData::from_f32(&[m], &(0..m).map(|i| i as f32 * 0.01).collect::<Vec<_>>()).unwrap();
            let op: Op = QConv { strides: vec![], dilations: vec![], act: Activation::Relu, rows, dynamic }.into();
            let mut xs = vec![packed[0].clone(), w, mult, off];
            if dynamic {
                xs.push(packed[1].clone());
            }
            for path in paths {
                check(&op, &xs, 255, path, &format!("rows {rows} dynamic {dynamic}"));
            }
        }
    }
}

/// `int_matmul` (MatMulInteger with a u8 left operand) on every dot-product path (on
/// AVX2 full-range weights split into pairs that cannot saturate plus fix-up steps): u8 weights (taken as i8 less 128) and i8 ones, one zero point or one per column,
/// columns that leave the last block part empty, `K` past a vector of bytes and not a
/// whole number of them, and rows that are run-time dims (none, fewer than a row tile,
/// several tiles and a remainder, past the 256 rows whose sums a task keeps), in
/// parallel tasks: bytes equal to dlc-interp's exact sum.
#[test]
fn int8_matrix_products_on_every_dot_path_at_run_time_rows() {
    use dlc_ir::ops::IntMatMul;
    use dlc_lower::{Int8Dot, Target};
    let bytes = |dims: &[u64], dt: DType, seed: u64| -> TensorData {
        let v: Vec<u8> = lcg(seed, dims.iter().product()).map(|x| (x >> 7) as u8).collect();
        TensorData::new(TensorType::fixed(dt, dims), Arc::from(v)).unwrap()
    };
    // (K, N, weights' type, per-column zero points, the symbols' values)
    type Case = (u64, u64, DType, bool, &'static [(u64, u64)]);
    let cases: [Case; 6] = [
        (8, 5, DType::U8, false, &[(0, 1), (1, 3), (2, 7)]),
        (68, 70, DType::I8, true, &[(1, 13), (3, 2)]),
        (132, 33, DType::U8, true, &[(1, 1), (2, 9)]),
        (16, 130, DType::U8, false, &[(1, 300)]),
        (260, 64, DType::I8, false, &[(2, 5)]),
        // Enough work for parallel tasks: two runs of rows by column groups.
        (252, 250, DType::U8, true, &[(1, 257)]),
    ];
    let paths = [Int8Dot::Vnni512, Int8Dot::Vnni, Int8Dot::Avx2Pairs, Int8Dot::Exact];
    for (ci, &(k, n, wt, per_column, sizes)) in cases.iter().enumerate() {
        let op: Op = IntMatMul {}.into();
        let b = bytes(&[k, n], wt, 3 + ci as u64);
        let zdims: Vec<u64> = if per_column { vec![n] } else { vec![] };
        let bzp = bytes(&zdims, wt, 5 + ci as u64);
        let tys = [
            ty(DType::U8, &[s("B"), s("M"), f(k)]),
            b.ty().clone(),
            TensorType::fixed(DType::U8, &[]),
            bzp.ty().clone(),
        ];
        let out = op.infer("n", &tys).unwrap();
        let consts = [None, Some(&b), None, Some(&bzp)];
        for path in paths {
            let node =
                dlc_lower::Node { name: "n", op: &op, inputs: &tys, outputs: &out, consts: &consts, operand_max: &[] };
            let target = Target { f32_lanes: if path == Int8Dot::Vnni512 { 16 } else { 8 }, int8: path, pool: true };
            let kern = dlc_lower::lower("k", &node, &target).expect("ported").unwrap();
            let text = dlc_kir::print::kernel(&kern);
            assert_eq!(text.contains("vpdpbusd.512"), path == Int8Dot::Vnni512, "case {ci} {path:?}");
            // Full-range weights on AVX2: the pairs on split weights, and fix-up steps.
            assert_eq!(text.contains("fix_steps"), path == Int8Dot::Avx2Pairs, "case {ci} {path:?}");
            // Rows only the run knows count as many: pool tasks by runs of rows.
            assert!(text.contains("parallel"), "case {ci} {path:?}");
            for &(batch, rows) in sizes {
                let a = bytes(&[batch, rows, k], DType::U8, 11 + rows);
                let azp = bytes(&[], DType::U8, 13 + batch);
                let xs = [a, b.clone(), azp, bzp.clone()];
                let fout = op.infer("n", &xs.iter().map(|x| x.ty().clone()).collect::<Vec<_>>()).unwrap();
                let want = dlc_interp::eval(&op, &xs, &fout).unwrap();
                let syms: BTreeMap<String, i64> =
                    [("B".to_string(), batch as i64), ("M".to_string(), rows as i64)].into();
                let mut bufs: Vec<Vec<u8>> = xs.iter().map(|x| x.bytes().to_vec()).collect();
                bufs.push(vec![0xAA; fout[0].size_bytes().unwrap() as usize]);
                run_kernel(&kern, &mut bufs, &syms).unwrap_or_else(|e| panic!("case {ci} {path:?}: {e}"));
                assert_eq!(bufs.last().unwrap(), want[0].bytes(), "case {ci} {path:?} at {batch}x{rows}");
            }
        }
    }
}

/// `int_matmul` on AVX2 with weights past +-63 whose pairs cannot saturate (each large
/// weight beside a zero): the pairs alone, no fix-up steps, exact at the worst codes.
#[test]
fn int8_matrix_products_whose_large_weights_pair_with_zeros_need_no_fixes() {
    use dlc_ir::ops::IntMatMul;
    use dlc_lower::{Int8Dot, Target};
    let (k, n) = (8u64, 24u64);
    let w: Vec<u8> =
        (0..k * n).map(|i| if (i / n) % 2 == 0 { [127i8, -128, 100][(i % 3) as usize] as u8 } else { 0 }).collect();
    let b = TensorData::new(TensorType::fixed(DType::I8, &[k, n]), Arc::from(w)).unwrap();
    let zp = TensorData::new(TensorType::fixed(DType::I8, &[]), Arc::from(vec![0u8])).unwrap();
    let op: Op = IntMatMul {}.into();
    let tys = [ty(DType::U8, &[s("M"), f(k)]), b.ty().clone(), TensorType::fixed(DType::U8, &[]), zp.ty().clone()];
    let out = op.infer("n", &tys).unwrap();
    let consts = [None, Some(&b), None, Some(&zp)];
    let node = dlc_lower::Node { name: "n", op: &op, inputs: &tys, outputs: &out, consts: &consts, operand_max: &[] };
    let target = Target { f32_lanes: 8, int8: Int8Dot::Avx2Pairs, pool: true };
    let kern = dlc_lower::lower("k", &node, &target).expect("ported").unwrap();
    let text = dlc_kir::print::kernel(&kern);
    assert!(text.contains("pmadd.ub.sw") && !text.contains("fix_steps"), "{text}");
    let a = TensorData::new(TensorType::fixed(DType::U8, &[3, k]), Arc::from(vec![255u8; (3 * k) as usize])).unwrap();
    let azp = TensorData::new(TensorType::fixed(DType::U8, &[]), Arc::from(vec![0u8])).unwrap();
    let xs = [a, b.clone(), azp, zp.clone()];
    let fout = op.infer("n", &xs.iter().map(|x| x.ty().clone()).collect::<Vec<_>>()).unwrap();
    let want = dlc_interp::eval(&op, &xs, &fout).unwrap();
    let mut bufs: Vec<Vec<u8>> = xs.iter().map(|x| x.bytes().to_vec()).collect();
    bufs.push(vec![0xAA; fout[0].size_bytes().unwrap() as usize]);
    run_kernel(&kern, &mut bufs, &[("M".to_string(), 3)].into()).unwrap();
    assert_eq!(bufs.last().unwrap(), want[0].bytes());
}

/// `patches` (im2col over u8 codes): strides, dilations, asymmetric padding that takes
/// the padding value, 1x1 and 3x3 windows, at run-time batch and image dims (two sizes,
/// one where some windows lie wholly in the padding's reach): bytes equal to
/// dlc-interp's.
#[test]
fn patches_of_run_time_images() {
    use dlc_ir::ops::{AutoPad, Patches};
    type Case = (&'static [i64], &'static [i64], &'static [i64], &'static [i64], AutoPad);
    let cases: [Case; 4] = [
        (&[3, 3], &[1, 1], &[1, 1, 1, 1], &[1, 1], AutoPad::NotSet),
        (&[3, 2], &[2, 1], &[0, 1, 2, 0], &[2, 1], AutoPad::NotSet),
        (&[1, 1], &[2, 2], &[0, 0, 0, 0], &[1, 1], AutoPad::NotSet),
        (&[3, 3], &[1, 1], &[], &[1, 1], AutoPad::SameUpper),
    ];
    // NCHW (taps (c, ky, kx)), and NHWC (taps (ky, kx, c), each a run of C bytes copied
    // in vectors of 32, 16, 8 and 1 bytes at C = 57), rows padded by 1 or 3 bytes.
    for (channels_last, ch, row_pad) in [(false, 3, 1), (true, 3, 3), (true, 57, 0)] {
        for (k, st, pads, d, auto_pad) in cases {
            let op: Op = Patches {
                kernel_shape: k.to_vec(),
                strides: st.to_vec(),
                pads: pads.to_vec(),
                dilations: d.to_vec(),
                auto_pad,
                channels_last,
                row_pad,
            }
            .into();
            let x = if channels_last { [s("N"), s("H"), s("W"), f(ch)] } else { [s("N"), f(ch), s("H"), s("W")] };
            let tys = [ty(DType::U8, &x), TensorType::fixed(DType::U8, &[])];
            let make =
                |t: &[TensorType]| vec![data(&t[0], 5), TensorData::new(t[1].clone(), Arc::from(vec![77u8])).unwrap()];
            check_with(op, &tys, &make, &[&[("N", 1), ("H", 5), ("W", 7)], &[("N", 2), ("H", 4), ("W", 3)]]);
        }
    }
}

#[test]
fn attention_with_run_time_batch_and_lengths_at_two_sizes() {
    use dlc_ir::ops::Attention;
    // (heads, head size, value head size): vectors of 8 lanes, and the scalar form.
    for (h, d, dv) in [(2u64, 16u64, 8u64), (3, 5, 7)] {
        let qkv = vec![
            ty(DType::F32, &[s("N"), s("S"), f(h * d)]),
            ty(DType::F32, &[s("N"), s("T"), f(h * d)]),
            ty(DType::F32, &[s("N"), s("T"), f(h * dv)]),
        ];
        // No mask; a float mask over keys whose first key is -inf (the running max
        // starts at -inf: no NaN may come of it); a key-padding mask in i64.
        let masks = [
            None,
            Some((false, ty(DType::F32, &[s("N"), f(1), f(1), s("T")]))),
            Some((true, ty(DType::I64, &[s("N"), s("T")]))),
        ];
        for mask in masks {
            let key_padding = mask.as_ref().is_some_and(|m| m.0);
            let op: Op = Attention { heads: h as i64, scale: 0.4, key_padding, padding_fill: -1e4 }.into();
            let mut tys = qkv.clone();
            tys.extend(mask.map(|m| m.1));
            let make = |t: &[TensorType]| -> Vec<TensorData> {
                t.iter()
                    .enumerate()
                    .map(|(i, t)| {
                        let dims = t.shape.as_fixed().unwrap();
                        match (i, t.dtype) {
                            (3, DType::I64) => i64s(
                                &dims,
                                &(0..dims.iter().product::<u64>()).map(|j| (j % 3 != 1) as i64).collect::<Vec<_>>(),
                            ),
                            (3, _) => {
                                let keys = dims[3];
                                let v: Vec<f32> = (0..dims.iter().product::<u64>())
                                    .map(|j| if j % keys == 0 { f32::NEG_INFINITY } else { (j % 5) as f32 * -0.5 })
                                    .collect();
                                TensorData::from_f32(&dims, &v).unwrap()
                            }
                            _ => floats(t, 60 + i as u64),
                        }
                    })
                    .collect()
            };
            check_with(op, &tys, &make, &[&[("N", 1), ("S", 3), ("T", 5)], &[("N", 2), ("S", 4), ("T", 9)]]);
        }
    }
}

/// Run-time image dims: Convs (plain, grouped, strided, dilated, with epilogues and
/// constant weights) and pools whose input is `[N, C, H, W]` with `N`, `H` and `W`
/// symbols, lowered once through `lower` and run at two sizes in the kir interpreter,
/// against dlc-interp on the same op at those sizes.
#[test]
fn run_time_image_dims_in_convolutions_and_pools() {
    use dlc_ir::ops::{Activation, AutoPad, AveragePool, Conv, GlobalAveragePool, MaxPool};
    let conv = |group: i64, strides: Vec<i64>, pads: Vec<i64>, dilations: Vec<i64>, act: Activation| -> Op {
        Conv { kernel_shape: vec![], strides, pads, dilations, group, auto_pad: AutoPad::NotSet, act }.into()
    };
    let same = Conv {
        kernel_shape: vec![],
        strides: vec![],
        pads: vec![],
        dilations: vec![],
        group: 1,
        auto_pad: AutoPad::SameUpper,
        act: Activation::Relu,
    };
    // (op, channels, weight dims or none for a pool, bias, residual)
    type Case = (Op, u64, Option<[u64; 4]>, bool, bool);
    let cases: Vec<Case> = vec![
        (conv(1, vec![1, 1], vec![1, 1, 1, 1], vec![1, 1], Activation::None), 3, Some([4, 3, 3, 3]), false, false),
        (conv(2, vec![2, 1], vec![0, 1, 2, 0], vec![2, 1], Activation::Relu), 4, Some([6, 2, 3, 2]), true, false),
        (conv(4, vec![2, 2], vec![1, 1, 1, 1], vec![1, 1], Activation::Gelu), 4, Some([4, 1, 3, 3]), true, true),
        // Depthwise, unit stride along rows: the depthwise vector kernel (a 5x5 with
        // wide padding, a 3x3 striding down the columns with a residual).
        (conv(6, vec![1, 1], vec![2, 2, 2, 2], vec![1, 1], Activation::Relu), 6, Some([6, 1, 5, 5]), true, false),
        (conv(3, vec![2, 1], vec![1, 1, 1, 1], vec![1, 1], Activation::None), 3, Some([3, 1, 3, 3]), true, true),
        (same.into(), 2, Some([3, 2, 3, 3]), true, false),
        // Several channel blocks (the last one partial) at 8 and 16 lanes, stride 2.
        (conv(1, vec![2, 2], vec![1, 1, 1, 1], vec![1, 1], Activation::Relu), 5, Some([40, 5, 3, 3]), true, false),
        // Depthwise with stride 2 along the rows (two loads, even lanes): MobileNet's and
        // EfficientNet's downsampling 3x3 and 5x5, and TF-style asymmetric padding.
        (conv(6, vec![2, 2], vec![1, 1, 1, 1], vec![1, 1], Activation::Relu), 6, Some([6, 1, 3, 3]), true, false),
        (conv(5, vec![2, 2], vec![2, 2, 2, 2], vec![1, 1], Activation::Swish), 5, Some([5, 1, 5, 5]), true, true),
        (conv(4, vec![1, 2], vec![0, 0, 1, 1], vec![1, 1], Activation::None), 4, Some([4, 1, 3, 3]), false, false),
        // SiLU epilogues (YOLO's): channel blocks and depthwise.
        (conv(1, vec![1, 1], vec![1, 1, 1, 1], vec![1, 1], Activation::Swish), 8, Some([16, 8, 3, 3]), true, false),
        (conv(6, vec![1, 1], vec![1, 1, 1, 1], vec![1, 1], Activation::Swish), 6, Some([6, 1, 3, 3]), true, false),
        (conv(1, vec![2, 2], vec![1, 1, 1, 1], vec![1, 1], Activation::HardSwish), 3, Some([16, 3, 3, 3]), true, false),
        (conv(1, vec![1, 1], vec![0, 0, 0, 0], vec![1, 1], Activation::None), 6, Some([37, 6, 1, 1]), true, true),
        // Grouped, groups of 8 filters (RegNet's): the channel-blocked kernel per group,
        // with residual; strided with dilation.
        (conv(4, vec![1, 1], vec![1, 1, 1, 1], vec![1, 1], Activation::Relu), 16, Some([32, 4, 3, 3]), true, true),
        (conv(2, vec![2, 2], vec![2, 1, 2, 1], vec![2, 1], Activation::None), 8, Some([16, 4, 3, 3]), true, false),
        // A 1x1 with few output channels: the pixel-vector GEMM with run-time panels.
        (conv(1, vec![1, 1], vec![0, 0, 0, 0], vec![1, 1], Activation::Relu), 16, Some([3, 16, 1, 1]), true, true),
        (
            MaxPool {
                kernel_shape: vec![3, 2],
                strides: vec![2, 1],
                pads: vec![1, 0, 1, 1],
                dilations: vec![],
                auto_pad: AutoPad::NotSet,
                ceil_mode: false,
            }
            .into(),
            3,
            None,
            false,
            false,
        ),
        (
            AveragePool {
                kernel_shape: vec![2, 3],
                strides: vec![1, 2],
                pads: vec![0, 1, 1, 1],
                dilations: vec![],
                auto_pad: AutoPad::NotSet,
                ceil_mode: false,
                count_include_pad: false,
            }
            .into(),
            2,
            None,
            false,
            false,
        ),
        (GlobalAveragePool {}.into(), 3, None, false, false),
        // ceil_mode with stride 2 (SqueezeNet's and GoogLeNet's pools): the count
        // rounds up; no window starts in the end padding when it plus a stride fits in
        // the window.
        (
            MaxPool {
                kernel_shape: vec![3, 3],
                strides: vec![2, 2],
                pads: vec![1, 1, 1, 1],
                dilations: vec![],
                auto_pad: AutoPad::NotSet,
                ceil_mode: true,
            }
            .into(),
            2,
            None,
            false,
            false,
        ),
        (
            AveragePool {
                kernel_shape: vec![3, 3],
                strides: vec![2, 2],
                pads: vec![1, 1, 1, 1],
                dilations: vec![],
                auto_pad: AutoPad::NotSet,
                ceil_mode: true,
                count_include_pad: true,
            }
            .into(),
            2,
            None,
            false,
            false,
        ),
        (
            AveragePool {
                kernel_shape: vec![3, 3],
                strides: vec![2, 2],
                pads: vec![1, 1, 1, 1],
                dilations: vec![],
                auto_pad: AutoPad::NotSet,
                ceil_mode: true,
                count_include_pad: false,
            }
            .into(),
            2,
            None,
            false,
            false,
        ),
    ];
    let sym = |s: &str| Dim::sym(s);
    for (op, ch, wd, bias, res) in &cases {
        // The symbolic operand types; constant weights and bias (the blocked kernel's
        // case when shapes are known).
        let x = ty(DType::F32, &[sym("N"), Dim::Fixed(*ch), sym("H"), sym("W")]);
        let mut tys = vec![x];
        if let Some(wd) = wd {
            tys.push(TensorType::fixed(DType::F32, wd));
            if *bias {
                tys.push(TensorType::fixed(DType::F32, &[wd[0]]));
            }
        }
        if *res {
            tys.push(op.infer("n", &tys).unwrap()[0].clone());
        }
        let out = op.infer("n", &tys).unwrap();
        assert!(!out[0].shape.is_fixed(), "{op:?}: {}", out[0]);
        // Weights and bias are constants (as after import); a residual is not.
        let consts: Vec<TensorData> =
            tys.iter().enumerate().skip(1).take(2).map(|(i, t)| floats(t, 40 + i as u64)).collect();
        let const_refs: Vec<Option<&TensorData>> = std::iter::once(None).chain(consts.iter().map(Some)).collect();
        let node =
            dlc_lower::Node { name: "n", op, inputs: &tys, outputs: &out, consts: &const_refs, operand_max: &[] };
        for target in [T, dlc_lower::Target { f32_lanes: 16, ..T }] {
            let k = dlc_lower::lower("k", &node, &target).unwrap().unwrap();
            dlc_kir::verify::kernel(&k).unwrap();
            let text = dlc_kir::print::kernel(&k);
            // A one-group Conv takes the channel-blocked kernel (weights packed in a
            // `data` array) or, a 1x1, the pixel-vector GEMM with run-time panels (masks
            // on the last one); the 1x1 with 3 output channels the latter.
            let one_group = matches!(op, Op::Conv(c) if c.group == 1);
            let blocked = text.contains("\"wpack\"");
            let pixel_gemm = !blocked && text.contains(" parallel {") && text.contains(" mask ");
            assert!(!one_group || blocked || pixel_gemm, "{op:?}:\n{text}");
            // Grouped with groups of filters a vector width divides (4 or more): the
            // channel-blocked kernel group by group; other grouped ones the loop nests.
            let grouped_blocked = matches!(op, Op::Conv(c) if c.group > 1 && wd.is_some_and(|w| (w[0] / c.group as u64).is_multiple_of(4)));
            assert!(one_group || grouped_blocked == blocked, "{op:?}:\n{text}");
            if one_group && wd.is_some_and(|w| w[0] == 3 && w[2] == 1) {
                assert!(pixel_gemm, "{op:?}:\n{text}");
            }
            // Depthwise with row stride 1 or 2: the vector kernel (vectors of the
            // target's width, lane masks at the ends of the rows).
            let depthwise =
                matches!(op, Op::Conv(c) if c.group as u64 == *ch && matches!(c.strides.get(1), Some(&1) | Some(&2)));
            let vectors = text.contains(&format!("load f32x{},", target.f32_lanes)) && text.contains(" mask ");
            assert!(!depthwise || vectors, "{op:?}:\n{text}");
            // Rows narrower than a tile, rows of whole tiles and every remainder; 80 columns
            // at stride 2 end a four-vector tile where its second load reached one element
            // past the row (past the input on the last row: the interpreter's fault).
            let sizes = [(1i64, 7i64, 9i64), (2, 12, 5), (1, 3, 2), (1, 5, 37), (1, 4, 50), (1, 3, 150), (2, 3, 80)];
            for (n, h, w) in sizes.into_iter().chain((2..=30).map(|w| (1, 3, w))) {
                let env = BTreeMap::from([("N".to_string(), n), ("H".to_string(), h), ("W".to_string(), w)]);
                let fix = |t: &TensorType| {
                    let d: Vec<u64> = t.shape.0.iter().map(|d| d.expr().eval(&env).unwrap() as u64).collect();
                    TensorType::fixed(t.dtype, &d)
                };
                let ftys: Vec<TensorType> = tys.iter().map(fix).collect();
                let fout = op.infer("n", &ftys).unwrap();
                assert_eq!(fout[0], fix(&out[0]), "{op:?}: the symbolic shape rule at N={n} H={h} W={w}");
                let mut xs = vec![floats(&ftys[0], 7 + n as u64)];
                for (i, t) in ftys.iter().enumerate().skip(1) {
                    xs.push(if i < 3 { consts[i - 1].clone() } else { floats(t, 90) });
                }
                let want = dlc_interp::eval(op, &xs, &fout).unwrap();
                let mut bufs: Vec<Vec<u8>> = xs.iter().map(|x| x.bytes().to_vec()).collect();
                bufs.push(vec![0; fout[0].size_bytes().unwrap() as usize]);
                run_kernel(&k, &mut bufs, &env).unwrap();
                let got: Vec<f32> =
                    bufs.last().unwrap().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
                let want = want[0].to_f32().unwrap();
                assert_eq!(got.len(), want.len());
                for (g, w) in got.iter().zip(&want) {
                    assert!((g - w).abs() <= 1e-5 + 1e-4 * w.abs(), "{op:?} at N={n} H={h} W={w}: {g} vs {w}");
                }
            }
        }
    }
}

/// The run-time index check (`dlc_lower::check`) in the kir interpreter: its code is
/// nonzero exactly when dlc-interp (ONNX's rule) refuses the indices, for every index
/// op, int32 and int64 indices, fixed and symbolic extents.
#[test]
fn index_checks_fail_exactly_on_out_of_range_indices() {
    let reason = dlc_ir::bind::Reason::IndexRange.code();
    // (op, data type, indices type, binding of N, index values to try)
    let d = |dims: &[Dim]| ty(DType::F32, dims);
    let cases: Vec<(Op, TensorType, TensorType, i64)> = vec![
        (Gather { axis: 0 }.into(), d(&[f(5), f(3)]), ty(DType::I64, &[f(4)]), 5),
        (Gather { axis: 1 }.into(), d(&[f(2), s("N")]), ty(DType::I32, &[f(3)]), 4),
        (GatherElements { axis: 1 }.into(), d(&[f(3), f(4)]), ty(DType::I64, &[f(3), f(2)]), 4),
        (
            ScatterElements { axis: 0, reduction: ScatterReduction::None }.into(),
            d(&[f(4), f(2)]),
            ty(DType::I64, &[f(2), f(2)]),
            4,
        ),
        (ScatterND { reduction: ScatterReduction::None }.into(), d(&[f(4), f(5)]), ty(DType::I64, &[f(3), f(2)]), 4),
    ];
    for (op, dt, it, n) in cases {
        let mut tys = vec![dt.clone(), it.clone()];
        if matches!(op, Op::ScatterElements(_)) {
            tys.push(TensorType { dtype: DType::F32, shape: it.shape.clone() });
        }
        if matches!(op, Op::ScatterND(_)) {
            tys.push(d(&[f(3)]));
        }
        let out_ty = op.infer("n", &tys).unwrap();
        let node =
            dlc_lower::Node { name: "n", op: &op, inputs: &tys, outputs: &out_ty, consts: &[], operand_max: &[] };
        let k = dlc_lower::check::kernel("k", &node).expect("an index op").unwrap();
        let env: BTreeMap<String, i64> = [("N".to_string(), n)].into();
        let fix = |t: &TensorType| {
            let dims: Vec<u64> = t.shape.0.iter().map(|x| x.expr().eval(&env).unwrap() as u64).collect();
            TensorType::fixed(t.dtype, &dims)
        };
        let fin: Vec<TensorType> = tys.iter().map(fix).collect();
        let count = fin[1].shape.as_fixed().unwrap().iter().product::<u64>() as usize;
        let mut seen = [0; 2];
        for shift in -7i64..=7 {
            let vals: Vec<i64> = (0..count as i64).map(|i| i % 3 + shift).collect();
            let idx = if fin[1].dtype == DType::I32 {
                i32s(&fin[1].shape.as_fixed().unwrap(), &vals.iter().map(|&v| v as i32).collect::<Vec<_>>())
            } else {
                i64s(&fin[1].shape.as_fixed().unwrap(), &vals)
            };
            let mut xs = vec![data(&fin[0], 1), idx.clone()];
            for t in &fin[2..] {
                xs.push(data(t, 2));
            }
            let fout = op.infer("n", &fin).unwrap();
            let refused = dlc_interp::eval(&op, &xs, &fout).is_err();
            let mut bufs = vec![idx.bytes().to_vec(), vec![0xAA; 8]];
            run_kernel(&k, &mut bufs, &env).unwrap();
            let code = i64::from_le_bytes(bufs[1][..8].try_into().unwrap());
            assert_eq!(code, if refused { reason } else { 0 }, "{op:?} indices {vals:?}");
            seen[refused as usize] += 1;
        }
        assert!(seen[0] > 0 && seen[1] > 0, "{op:?}: both outcomes tried ({seen:?})");
    }
}

/// TopK's kernel in the kir interpreter against dlc-interp (a stable sort): both
/// outputs exact, largest and smallest, ties, NaN, every axis, int64 and uint64.
#[test]
fn topk_matches_a_stable_sort() {
    use dlc_ir::ops::TopK;
    let cases: Vec<(TensorType, i64, &str)> = vec![
        (ty(DType::F32, &[f(3), f(10)]), 1, "4"),
        (ty(DType::F32, &[f(7), f(2), f(3)]), 0, "7"),
        (ty(DType::F32, &[f(2), f(6), f(3)]), 1, "0"),
        (ty(DType::I64, &[f(4), f(9)]), -1, "3"),
        (ty(DType::U64, &[f(2), f(8)]), 1, "5"),
    ];
    for (t, axis, k) in cases {
        for largest in [true, false] {
            let op: Op = TopK { axis, largest, k: k.into() }.into();
            let out_ty = op.infer("n", std::slice::from_ref(&t)).unwrap();
            let node = dlc_lower::Node {
                name: "n",
                op: &op,
                inputs: std::slice::from_ref(&t),
                outputs: &out_ty,
                consts: &[],
                operand_max: &[],
            };
            let kern = dlc_lower::lower("k", &node, &T).expect("ported").unwrap();
            let dims = t.shape.as_fixed().unwrap();
            let n = dims.iter().product::<u64>() as usize;
            let x = if t.dtype == DType::F32 {
                let mut v: Vec<f32> = (0..n).map(|i| ((i * 7919) % 13) as f32 - 6.0).collect();
                v[1] = f32::NAN;
                TensorData::from_f32(&dims, &v).unwrap()
            } else {
                let v: Vec<i64> = (0..n).map(|i| ((i * 7919) % 11) as i64 - 5).collect();
                TensorData::new(t.clone(), Arc::from(v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()))
                    .unwrap()
            };
            let want = dlc_interp::eval(&op, std::slice::from_ref(&x), &out_ty).unwrap();
            let mut bufs = vec![
                x.bytes().to_vec(),
                vec![0xAA; out_ty[0].size_bytes().unwrap() as usize],
                vec![0xAA; out_ty[1].size_bytes().unwrap() as usize],
            ];
            run_kernel(&kern, &mut bufs, &BTreeMap::new()).unwrap();
            assert_eq!(bufs[1], want[0].bytes(), "{t} axis {axis} k {k} largest {largest}: values");
            assert_eq!(bufs[2], want[1].bytes(), "{t} axis {axis} k {k} largest {largest}: indices");
        }
    }
}

/// UTF-8 text with letters of one and two bytes, three-byte characters, and malformed
/// sequences (a lead byte at the end, a stray continuation byte), `len` bytes long.
fn text_bytes(t: &TensorType, seed: usize) -> TensorData {
    let pieces: [&[u8]; 10] = [
        b"Ab",
        "é".as_bytes(),
        "Ω".as_bytes(),
        "ж".as_bytes(),
        "€".as_bytes(),
        &[0xC3],
        &[0xA9],
        b"z",
        "ß".as_bytes(),
        b" ",
    ];
    let n = t.shape.as_fixed().unwrap()[0] as usize;
    let mut v = Vec::new();
    let mut i = seed;
    while v.len() < n {
        v.extend_from_slice(pieces[i % pieces.len()]);
        i = (i * 7 + 3) % 1009;
    }
    v.truncate(n);
    TensorData::new(t.clone(), Arc::from(v)).unwrap()
}

#[test]
fn string_case_matches_the_reference_on_utf8_and_malformed_bytes() {
    for (upper, ascii) in [(true, false), (false, false), (true, true), (false, true)] {
        let op: Op = dlc_ir::ops::StringCase { upper, ascii }.into();
        for n in [1, 2, 7, 64] {
            check_with(op.clone(), &[ty(DType::U8, &[f(n)])], &|t| vec![text_bytes(&t[0], n as usize)], &[&[]]);
        }
        check_with(op, &[ty(DType::U8, &[s("B")])], &|t| vec![text_bytes(&t[0], 5)], &[&[("B", 1)], &[("B", 33)]]);
    }
}

#[test]
fn string_equal_matches_the_reference_with_broadcasting_and_bad_ranges() {
    // Tables into 12 bytes: equal strings at different places, prefixes, empty strings,
    // and ranges outside the bytes or reversed (clamped by the kernel; the reference
    // refuses them, so they are compared against the clamped table's reference).
    let bytes = b"abcabcabxab\0";
    let a = [[0, 3], [3, 6], [0, 2], [4, 4], [9, 11], [6, 8]];
    let b = [[3, 6], [9, 11], [5, 5], [0, 2]];
    let table = |rows: &[[i64; 2]], dims: &[u64]| {
        let flat: Vec<i64> = rows.iter().flatten().copied().collect();
        i64s(dims, &flat)
    };
    let op: Op = dlc_ir::ops::StringEqual {}.into();
    let bt = TensorType::fixed(DType::U8, &[12]);
    let bd = TensorData::new(bt.clone(), Arc::from(&bytes[..])).unwrap();
    let (ta, tb) = (TensorType::fixed(DType::I64, &[6, 1, 2]), TensorType::fixed(DType::I64, &[4, 2]));
    let make = |_: &[TensorType]| vec![table(&a, &[6, 1, 2]), bd.clone(), table(&b, &[4, 2]), bd.clone()];
    check_with(op.clone(), &[ta, bt.clone(), tb, bt.clone()], &make, &[&[]]);
    // Symbolic element counts.
    let sa = ty(DType::I64, &[s("N"), f(2)]);
    let make = |t: &[TensorType]| {
        let n = t[0].shape.as_fixed().unwrap()[0] as usize;
        vec![table(&a[..n], &[n as u64, 2]), bd.clone(), table(&b[..1], &[1, 2]), bd.clone()]
    };
    let one = TensorType::fixed(DType::I64, &[1, 2]);
    check_with(op.clone(), &[sa, bt.clone(), one, bt.clone()], &make, &[&[("N", 2)], &[("N", 6)]]);
    // A range outside the bytes reads only what lies inside them.
    let k = {
        let tys =
            [TensorType::fixed(DType::I64, &[2, 2]), bt.clone(), TensorType::fixed(DType::I64, &[2, 2]), bt.clone()];
        let out = op.infer("n", &tys).unwrap();
        let node = dlc_lower::Node { name: "n", op: &op, inputs: &tys, outputs: &out, consts: &[], operand_max: &[] };
        dlc_lower::lower("k", &node, &T).unwrap().unwrap()
    };
    let mut bufs = vec![
        table(&[[9, 40], [-5, 3]], &[2, 2]).bytes().to_vec(),
        bytes.to_vec(),
        table(&[[9, 12], [0, 3]], &[2, 2]).bytes().to_vec(),
        bytes.to_vec(),
        vec![0xAA; 2],
    ];
    run_kernel(&k, &mut bufs, &BTreeMap::new()).unwrap();
    assert_eq!(bufs[4], vec![1, 1], "clamped to 9..12 and 0..3");
}

#[test]
fn string_concat_matches_the_reference_and_stops_at_the_end_of_its_bytes() {
    let bytes = b"abcdefgh";
    let bt = TensorType::fixed(DType::U8, &[8]);
    let bd = TensorData::new(bt.clone(), Arc::from(&bytes[..])).unwrap();
    let table = |rows: &[[i64; 2]], dims: &[u64]| i64s(dims, &rows.iter().flatten().copied().collect::<Vec<_>>());
    let op: Op = dlc_ir::ops::StringConcat {}.into();
    // Disjoint ranges (room for all), broadcast [2,1] x [3]; then overlapping ones whose
    // bytes exceed the room (cut at the end) and ranges outside the bytes (clamped).
    for (a, b) in
        [(vec![[0, 2], [2, 5]], vec![[5, 6], [6, 6], [6, 8]]), (vec![[0, 8], [0, 8]], vec![[0, 8], [-3, 99], [7, 2]])]
    {
        let (ta, tb) = (TensorType::fixed(DType::I64, &[2, 1, 2]), TensorType::fixed(DType::I64, &[3, 2]));
        let make = |_: &[TensorType]| vec![table(&a, &[2, 1, 2]), bd.clone(), table(&b, &[3, 2]), bd.clone()];
        let tys = [ta, bt.clone(), tb, bt.clone()];
        // Both results: the kernel's table and bytes against the reference's.
        let out = op.infer("n", &tys).unwrap();
        let node = dlc_lower::Node { name: "n", op: &op, inputs: &tys, outputs: &out, consts: &[], operand_max: &[] };
        let k = dlc_lower::lower("k", &node, &T).unwrap().unwrap();
        let xs = make(&tys);
        let want = dlc_interp::eval(&op, &xs, &out).unwrap();
        let mut bufs: Vec<Vec<u8>> = xs.iter().map(|x| x.bytes().to_vec()).collect();
        bufs.extend(out.iter().map(|t| vec![0xAA; t.size_bytes().unwrap() as usize]));
        run_kernel(&k, &mut bufs, &BTreeMap::new()).unwrap();
        assert_eq!(bufs[4], want[0].bytes(), "table");
        assert_eq!(bufs[5], want[1].bytes(), "bytes");
        assert_eq!(out[1].shape.as_fixed().unwrap(), vec![3 * 8 + 2 * 8]);
    }
    // The first case's strings, as ONNX gives them.
    let t: Vec<i64> = {
        let tys = [TensorType::fixed(DType::I64, &[2, 1, 2]), bt.clone(), TensorType::fixed(DType::I64, &[3, 2]), bt];
        let out = op.infer("n", &tys).unwrap();
        let xs = vec![table(&[[0, 2], [2, 5]], &[2, 1, 2]), bd.clone(), table(&[[5, 6], [6, 6], [6, 8]], &[3, 2]), bd];
        let r = dlc_interp::eval(&op, &xs, &out).unwrap();
        let (t, b) = (r[0].to_i64().unwrap(), r[1].bytes().to_vec());
        let s: Vec<String> =
            t.chunks(2).map(|p| String::from_utf8(b[p[0] as usize..p[1] as usize].to_vec()).unwrap()).collect();
        assert_eq!(s, ["abf", "ab", "abgh", "cdef", "cde", "cdegh"]);
        t
    };
    assert_eq!(t.len(), 12);
}

#[test]
fn string_split_kernels_match_the_reference() {
    let text = "a,b,,c|  x  y\tz |,|é<>ü<><>|one| |<>|a\u{1c}b  |p\rq\u{b}r\u{1f}";
    let bytes = text.as_bytes();
    // Every element a '|'-separated field, and two ranges outside the bytes (clamped).
    let mut rows: Vec<[i64; 2]> = Vec::new();
    let mut at = 0;
    for f in text.split('|') {
        rows.push([at as i64, (at + f.len()) as i64]);
        at += f.len() + 1;
    }
    rows.push([-4, 3]);
    rows.push([40, 999]);
    let n = rows.len() as u64;
    let flat: Vec<i64> = rows.iter().flatten().copied().collect();
    let bt = TensorType::fixed(DType::U8, &[bytes.len() as u64]);
    let bd = TensorData::new(bt.clone(), Arc::from(bytes)).unwrap();
    for (delimiter, maxsplit) in [(",", -1), ("<>", -1), ("", -1), ("", 1), (",", 1), ("", 0)] {
        let make = |_: &[TensorType]| vec![i64s(&[n, 2], &flat), bd.clone()];
        let tys = [TensorType::fixed(DType::I64, &[n, 2]), bt.clone()];
        for most in [false, true] {
            let op: Op = dlc_ir::ops::StringSplitCount { delimiter: delimiter.into(), maxsplit, most }.into();
            check_with(op, &tys, &make, &[&[]]);
        }
        let split = |pieces: &str| -> Op {
            dlc_ir::ops::StringSplit { delimiter: delimiter.into(), maxsplit, pieces: pieces.into() }.into()
        };
        for pieces in ["5", "2"] {
            check_with(split(pieces), &tys, &make, &[&[]]);
        }
        // A run-time piece count (a computed dim): the kernel at K = 5 gives the table of 5.
        let (sym, fixed) = (split("K"), split("5"));
        let out = sym.infer("n", &tys).unwrap();
        let node = dlc_lower::Node { name: "n", op: &sym, inputs: &tys, outputs: &out, consts: &[], operand_max: &[] };
        let k = dlc_lower::lower("k", &node, &T).unwrap().unwrap();
        let xs = make(&tys);
        let want = dlc_interp::eval(&fixed, &xs, &fixed.infer("n", &tys).unwrap()).unwrap();
        let mut bufs: Vec<Vec<u8>> = xs.iter().map(|x| x.bytes().to_vec()).collect();
        bufs.push(vec![0xAA; want[0].bytes().len()]);
        run_kernel(&k, &mut bufs, &BTreeMap::from([("K".to_string(), 5)])).unwrap();
        assert_eq!(bufs[2], want[0].bytes(), "{delimiter:?} {maxsplit}");
    }
}

#[test]
fn roi_align_matches_the_reference() {
    let rois: Vec<f32> = vec![0.5, 1.0, 6.0, 5.5, -2.0, -1.0, 3.0, 4.0, 7.0, 7.0, 7.0, 7.0, 9.0, 1.0, 30.0, 20.0];
    for (max, half_pixel, sampling_ratio) in [(false, true, 0), (true, true, 2), (false, false, 1), (true, false, 0)] {
        let op: Op = dlc_ir::ops::RoiAlign {
            max,
            half_pixel,
            output_height: 2,
            output_width: 3,
            sampling_ratio,
            spatial_scale: 0.75,
        }
        .into();
        let tys = [
            TensorType::fixed(DType::F32, &[2, 3, 9, 11]),
            TensorType::fixed(DType::F32, &[4, 4]),
            TensorType::fixed(DType::I64, &[4]),
        ];
        let make = |t: &[TensorType]| {
            vec![floats(&t[0], 5), TensorData::from_f32(&[4, 4], &rois).unwrap(), i64s(&[4], &[1, 0, 1, 0])]
        };
        check_with(op, &tys, &make, &[&[]]);
    }
}

#[test]
fn string_regex_match_kernel_matches_the_regex_crate() {
    // The DFA kernel against dlc-interp's `regex` crate on ASCII, UTF-8, malformed bytes
    // and empty elements, for patterns with RE2's ASCII classes and boundaries, Unicode
    // properties, alternation, repetition counts and case folding.
    let text: &[&[u8]] = &[
        b"www.example.com",
        b"www.a-b.c.com",
        b"jo.doe@gmail.com",
        b" x@yahoo.com!",
        "\u{3b1}\u{3b2}\u{3b3}".as_bytes(),
        b"",
        b"\xff\xfe",
        b"HeLLo",
        b"abc_9",
        "\u{e9}t\u{e9}".as_bytes(),
    ];
    let mut bytes = Vec::new();
    let mut rows = Vec::new();
    for t in text {
        rows.push(bytes.len() as i64);
        bytes.extend_from_slice(t);
        rows.push(bytes.len() as i64);
    }
    bytes.push(0);
    let n = text.len() as u64;
    let bt = TensorType::fixed(DType::U8, &[bytes.len() as u64]);
    let bd = TensorData::new(bt.clone(), Arc::from(&bytes[..])).unwrap();
    let tt = TensorType::fixed(DType::I64, &[2, n / 2, 2]);
    for pattern in [
        r"www\.[\w.-]+\.\bcom\b",
        r"(\W|^)[\w.\-]{0,25}@(yahoo|gmail)\.com(\W|$)",
        r"\p{Greek}+",
        r"(?i)hello",
        r"\w+",
        r"",
        r".t.",
        r"[^\d\s]{2,}",
    ] {
        let op: Op = dlc_ir::ops::StringRegexMatch { pattern: pattern.into() }.into();
        let make = |_: &[TensorType]| vec![i64s(&[2, n / 2, 2], &rows), bd.clone()];
        check_with(op, &[tt.clone(), bt.clone()], &make, &[&[]]);
    }
}

#[test]
fn col2im_kernel_matches_the_reference_scatter() {
    // The kernel gathers per pixel; the reference scatters per column: 2-D and 3-D, with
    // strides, dilations and uneven pads.
    let f32t = |d: &[u64]| TensorType::fixed(DType::F32, d);
    let cases = [
        (
            dlc_ir::ops::Col2Im {
                image: "5;4".into(),
                block: "2;3".into(),
                dilations: vec![1, 1],
                pads: vec![0, 1, 1, 0],
                strides: vec![1, 2],
            },
            f32t(&[2, 3 * 6, 5 * 2]),
        ),
        (
            dlc_ir::ops::Col2Im {
                image: "6;5".into(),
                block: "2;2".into(),
                dilations: vec![2, 1],
                pads: vec![1, 0, 0, 1],
                strides: vec![2, 1],
            },
            f32t(&[1, 2 * 4, 3 * 5]),
        ),
        (
            dlc_ir::ops::Col2Im {
                image: "3;4;2".into(),
                block: "2;2;1".into(),
                dilations: vec![1, 1, 1],
                pads: vec![0, 0, 0, 0, 0, 0],
                strides: vec![1, 2, 1],
            },
            f32t(&[1, 3 * 4, 2 * 2 * 2]),
        ),
    ];
    for (op, x) in cases {
        let op: Op = op.into();
        check_with(op, &[x], &|t| vec![floats(&t[0], 9)], &[&[]]);
    }
}

/// ReduceMax/ReduceMin of f32 over trailing axes take the vector kernel: rows whose
/// length is and is not a multiple of the lanes (a masked remainder), a run-time length,
/// and a NaN in the full vectors or in the remainder making its row's result NaN.
#[test]
fn f32_extremes_over_trailing_axes_in_vectors() {
    for (dims, axes) in [
        (vec![s("N"), f(37)], vec![-1]),
        (vec![f(3), s("N"), f(5)], vec![1, 2]),
        (vec![s("N"), f(2), f(8)], vec![]),
        (vec![f(2), s("N")], vec![1]),
    ] {
        let t = ty(DType::F32, &dims);
        for max in [true, false] {
            let op: Op = match max {
                true => ReduceMax { axes: axes.clone(), keepdims: false }.into(),
                false => ReduceMin { axes: axes.clone(), keepdims: true }.into(),
            };
            let with_nans = |t: &[TensorType]| {
                let mut v = floats(&t[0], 5).to_f32().unwrap();
                // A NaN early (a full vector of the first row) and one late (the last row's
                // remainder when it has one).
                let n = v.len();
                v[1] = f32::NAN;
                v[n - 1] = f32::NAN;
                vec![TensorData::from_f32(&t[0].shape.as_fixed().unwrap(), &v).unwrap()]
            };
            let plain = |t: &[TensorType]| vec![floats(&t[0], 6)];
            for make in [&with_nans as &dyn Fn(&[TensorType]) -> Vec<TensorData>, &plain] {
                check_with(op.clone(), std::slice::from_ref(&t), make, &[&[("N", 1)], &[("N", 4)], &[("N", 19)]]);
            }
        }
    }
    // The kernel is the vector one (a masked load for the remainder, a lane reduction).
    let t = ty(DType::F32, &[s("N"), f(37)]);
    let op: Op = ReduceMax { axes: vec![-1], keepdims: false }.into();
    let out = op.infer("n", std::slice::from_ref(&t)).unwrap();
    let node = dlc_lower::Node { name: "n", op: &op, inputs: &[t], outputs: &out, consts: &[], operand_max: &[] };
    let text = dlc_kir::print::kernel(&dlc_lower::lower("k", &node, &T).unwrap().unwrap());
    assert!(text.contains("reduce fmax") && text.contains("mask"), "{text}");
}
