//! The kernel of a Bind node (`dlc_lower::bind`) against its rule's definition
//! (`dlc_ir::bind::eval`): for every rule, valid and invalid values, input dims fixed
//! and run-time, the kir interpreter's results (the bound dims, or the first broken
//! rule's reason code) equal the definition's.
use dlc_ir::bind::{eval, BindRule};
use dlc_ir::ops::Bind;
use dlc_ir::{DType, Dim, Op, Shape, TensorType};
use dlc_kir::interp::run_kernel;
use std::collections::BTreeMap;

/// Runs the Bind kernel of `rule` for an input of dims `d` (symbol `s{i}` where
/// `symbolic`) and values `t`; checks it against `eval`.
fn check(rule: BindRule, d: &[i64], t: &[i64], symbolic: bool) {
    let n = d.len();
    let dims: Vec<Dim> =
        (0..n).map(|i| if symbolic { Dim::sym(format!("s{i}")) } else { Dim::Fixed(d[i] as u64) }).collect();
    let x = TensorType { dtype: DType::F32, shape: Shape(dims) };
    let tt = TensorType::fixed(DType::I64, &[t.len() as u64]);
    let Some(k) = rule.count(n, t.len()) else { return };
    let syms: Vec<String> = (0..k).map(|j| format!("r{j}")).collect();
    let op: Op = Bind { rule: rule.text(), syms: syms.join(" ") }.into();
    let inputs = [x, tt];
    let out = op.infer("b", &inputs).unwrap();
    let node =
        dlc_lower::Node { name: "b", op: &op, inputs: &inputs, outputs: &out, consts: &[None, None], operand_max: &[] };
    let kernel = dlc_lower::lower("k", &node, &dlc_lower::Target::with_lanes(8)).unwrap().unwrap();
    let env: BTreeMap<String, i64> = (0..n).map(|i| (format!("s{i}"), d[i])).collect();
    let mut bufs = vec![t.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>(), vec![0xAA; 8 * (k + 1)]];
    run_kernel(&kernel, &mut bufs, &env).unwrap();
    let got: Vec<i64> = bufs[1].chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
    let what = format!("{} on {d:?} with {t:?} (symbolic: {symbolic})", rule.name());
    match eval(rule, d, t) {
        Ok(want) => {
            assert_eq!(got[k], 0, "{what}: kernel fails with reason {}", got[k]);
            assert_eq!(&got[..k], &want[..], "{what}");
        }
        Err(reason) => assert_eq!(got[k], reason.code(), "{what}: expected {reason:?}"),
    }
}

#[test]
fn reshape_kernel_follows_the_rule() {
    let d = [2, 3, 4];
    let targets: &[&[i64]] = &[
        &[4, 3, 2],
        &[0, -1],
        &[-1],
        &[2, 0, 2, 2],
        &[6, -1, 1],
        &[-1, -1],
        &[5, -1],
        &[5, 5],
        &[-3, 8],
        &[0, 0, 0, 0],
        &[0, 12],
        &[1 << 40, 1 << 40, 0],
        &[1 << 62, 4],
    ];
    for t in targets {
        for symbolic in [false, true] {
            check(BindRule::Reshape { allowzero: false }, &d, t, symbolic);
            check(BindRule::Reshape { allowzero: true }, &d, t, symbolic);
        }
    }
    check(BindRule::Reshape { allowzero: true }, &[0, 3], &[3, 0], false);
    check(BindRule::Reshape { allowzero: true }, &[0, 3], &[0, -1], false);
    check(BindRule::Reshape { allowzero: false }, &[0, 3], &[0, -1], true);
}

#[test]
fn axis_kernels_follow_their_rules() {
    let axes: &[&[i64]] = &[&[0], &[-1], &[2, 0], &[1, -2], &[3], &[-4], &[0, 1, 2], &[1, 1]];
    for t in axes {
        for symbolic in [false, true] {
            for d in [[2, 3, 4], [1, 3, 1], [0, 1, 5]] {
                check(BindRule::ReduceAxes, &d, t, symbolic);
                check(BindRule::ReduceSqueeze, &d, t, symbolic);
                check(BindRule::Squeeze, &d, t, symbolic);
                check(BindRule::Unsqueeze, &d, t, symbolic);
                check(BindRule::SqueezeAll, &d, t, symbolic);
            }
        }
    }
    // Squeeze without axes: the dims that were 1 when compiling, and none.
    for (d, t) in
        [([1, 3, 1], &[0i64, 2][..]), ([1, 1, 4], &[0]), ([2, 3, 4], &[]), ([2, 1, 4], &[]), ([0, 1, 5], &[1])]
    {
        check(BindRule::SqueezeAll, &d, t, true);
    }
}

#[test]
fn slice_and_split_kernels_follow_their_rules() {
    // starts, ends, axes, steps.
    let slices: &[&[i64]] = &[
        &[1, 3, 0, 1],
        &[-1, -4, 1, -1],
        &[0, i64::MAX, 2, 2],
        &[10, -10, 0, -3],
        &[-100, 100, -1, 1],
        &[2, 1, 0, 1],
        &[0, 5, 1, 0],
        &[0, 5, 4, 1],
        &[3, 0, 0, i64::MIN],
        &[0, 1, 1, 2, 0, -1, 1, 1],
        &[0, 1, 1, 1, 0, 0, 1, 1],
    ];
    for t in slices {
        for symbolic in [false, true] {
            for d in [[4, 5, 6], [0, 3, 1]] {
                check(BindRule::Slice, &d, t, symbolic);
            }
        }
    }
    let sizes: &[&[i64]] = &[&[1, 2, 3], &[6], &[0, 6, 0], &[2, 2, 3], &[-1, 7], &[i64::MAX, i64::MAX, 2]];
    for t in sizes {
        for axis in 0..3 {
            for symbolic in [false, true] {
                check(BindRule::Split { axis }, &[6, 6, 6], t, symbolic);
            }
        }
    }
}

#[test]
fn count_kernel_follows_its_rule() {
    for t in [0, 5, 24, 25, -1, i64::MAX] {
        for symbolic in [false, true] {
            check(BindRule::Count, &[2, 3, 4], &[t], symbolic);
        }
    }
}

#[test]
fn dims_kernel_follows_its_rule() {
    for t in [[2, 3, 4], [2, 3, 5], [3, 3, 4], [0, 3, 4], [-2, 3, 4]] {
        for symbolic in [false, true] {
            check(BindRule::Dims, &[2, 3, 4], &t, symbolic);
        }
    }
}

/// Entries `=EXPR` give the result dims of symbols bound before the Bind (no symbol
/// bound, so the program's step writes `_` for them); a number is a fixed dim.
#[test]
fn dims_entries_may_be_expressions_of_dims_bound_before() {
    let x = TensorType { dtype: DType::F32, shape: Shape(vec![Dim::Fixed(1), Dim::sym("k0"), Dim::sym("k1")]) };
    let t = TensorType::fixed(DType::I64, &[3]);
    let b = Bind { rule: BindRule::Dims.text(), syms: "1 =H =floordiv(W+31,32)*32".into() };
    assert_eq!(b.symbols().count(), 0);
    let op: Op = b.into();
    let out = op.infer("b", &[x.clone(), t.clone()]).unwrap();
    let w = Bind::fixed_entry("=32*floordiv(W + 31, 32)").unwrap();
    let want = vec![Dim::Fixed(1), Dim::sym("H"), w];
    assert_eq!(out[0].shape.0, want);
    assert_eq!(Bind::entry_of(&want[2]), "=32*floordiv(W+31,32)");
    // A name binds it; an expression that does not parse is refused.
    let bad: Op = Bind { rule: BindRule::Dims.text(), syms: "1 =H+ r".into() }.into();
    assert!(bad.infer("b", &[x, t]).is_err());
}
