//! Every ported lowering family, run through the kir interpreter and compared with
//! dlc-interp (the graph's reference interpreter) on the same op: constant extents,
//! and symbolic extents evaluated at two sizes. Data movement must be exact.
use dlc_ir::ops::{Slice, Transpose};
use dlc_ir::{DType, Dim, Op, Shape, TensorData, TensorType};
use dlc_kir::interp::run_kernel;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Deterministic bytes for a tensor of `ty`.
fn data(ty: &TensorType, seed: u8) -> TensorData {
    let n = ty.size_bytes().unwrap() as usize;
    let bytes: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
    TensorData::new(ty.clone(), Arc::from(bytes)).unwrap()
}

/// Lowers `op` on operands of `in_ty` (possibly symbolic), then for each binding of the
/// symbols runs the kernel and dlc-interp on the fixed types and compares bytes.
fn check(op: Op, in_ty: TensorType, bindings: &[&[(&str, u64)]]) {
    let out_ty = op.infer("n", std::slice::from_ref(&in_ty)).unwrap();
    let node = dlc_lower::Node { name: "n", op: &op, inputs: std::slice::from_ref(&in_ty), outputs: &out_ty };
    let k = dlc_lower::lower("k", &node).expect("ported").unwrap();
    for b in bindings {
        let fix = |t: &TensorType| TensorType {
            dtype: t.dtype,
            shape: Shape(
                t.shape
                    .0
                    .iter()
                    .map(|d| match d {
                        Dim::Fixed(n) => Dim::Fixed(*n),
                        Dim::Sym(s) => Dim::Fixed(b.iter().find(|(n, _)| n == s).expect("bound").1),
                    })
                    .collect(),
            ),
        };
        let (fin, fout) = (fix(&in_ty), op.infer("n", &[fix(&in_ty)]).unwrap());
        let x = data(&fin, 7);
        let want = dlc_interp::eval(&op, std::slice::from_ref(&x), &fout).unwrap();
        let syms: BTreeMap<String, i64> = b.iter().map(|(n, v)| (n.to_string(), *v as i64)).collect();
        let mut bufs = vec![x.bytes().to_vec(), vec![0xAA; fout[0].size_bytes().unwrap() as usize]];
        run_kernel(&k, &mut bufs, &syms)
            .unwrap_or_else(|e| panic!("{op:?} at {b:?}: {e}\n{}", dlc_kir::print::kernel(&k)));
        assert_eq!(bufs[1], want[0].bytes(), "{op:?} at {b:?}\n{}", dlc_kir::print::kernel(&k));
    }
}

fn ty(dtype: DType, dims: &[Dim]) -> TensorType {
    TensorType { dtype, shape: Shape(dims.to_vec()) }
}

fn f(d: u64) -> Dim {
    Dim::Fixed(d)
}

fn s(n: &str) -> Dim {
    Dim::Sym(n.into())
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

#[test]
fn symbolic_slice_is_a_clear_error() {
    let t = ty(DType::F32, &[s("N"), f(4)]);
    let op: Op = Slice { starts: vec![1], ends: vec![3], axes: vec![1], steps: vec![] }.into();
    let out = vec![ty(DType::F32, &[s("N"), f(2)])];
    let node = dlc_lower::Node { name: "sl", op: &op, inputs: std::slice::from_ref(&t), outputs: &out };
    let e = dlc_lower::lower("k", &node).unwrap().unwrap_err();
    assert_eq!(e.to_string(), "node 'sl' (slice): symbolic shape f32[N,4]");
}
