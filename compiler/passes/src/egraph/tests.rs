//! One small graph per rule family: the IR before and after the optimiser, snapshotted
//! (the `@before`/`@after` snapshots sit side by side in snapshots/).
use super::EGraphOpt;
use crate::{Pass, PassCx};
use dlc_ir::ops::*;
use dlc_ir::{DType, Graph, Op, TensorData, TensorType, Value};

fn f32s(g: &mut Graph, name: &str, dims: &[u64], seed: u32) -> Value {
    let n: u64 = dims.iter().product();
    let v: Vec<f32> = (0..n).map(|i| ((i as u32 * 7 + seed) % 11) as f32 / 10.0 - 0.4).collect();
    g.add_const(name, TensorData::from_f32(dims, &v).unwrap())
}

fn splat(g: &mut Graph, name: &str, dims: &[u64], v: f32) -> Value {
    let n: u64 = dims.iter().product();
    g.add_const(name, TensorData::from_f32(dims, &vec![v; n as usize]).unwrap())
}

fn conv(k: i64) -> Conv {
    Conv {
        kernel_shape: vec![k, k],
        strides: vec![],
        pads: vec![k / 2; 4],
        dilations: vec![],
        group: 1,
        auto_pad: AutoPad::NotSet,
        act: Activation::None,
    }
}

/// Runs the optimiser and snapshots the IR before and after, plus the rules that fired.
fn check(name: &str, mut g: Graph) {
    let before = dlc_ir::print_graph(&g).unwrap();
    let mut cx = PassCx::default();
    EGraphOpt::default().run(&mut g, &mut cx).unwrap();
    dlc_ir::verify(&g).unwrap();
    let r = cx.optimizer.unwrap();
    let after = format!("{}\n# stop: {}; fired: {:?}", dlc_ir::print_graph(&g).unwrap(), r.stop_reason, r.rules_fired);
    insta::assert_snapshot!(format!("{name}@before"), before);
    insta::assert_snapshot!(format!("{name}@after"), after);
}

#[test]
fn algebra() {
    let mut g = Graph::new("algebra");
    let x = g.add_input("x", TensorType::fixed(DType::F32, &[2, 3]));
    let one = splat(&mut g, "one", &[3], 1.0);
    let zero = splat(&mut g, "zero", &[], 0.0);
    let big_one = splat(&mut g, "one_2x2x3", &[2, 2, 3], 1.0);
    let a = g.add_node("times_one", Mul {}, &[x, one]).unwrap()[0];
    let a = g.add_node("plus_zero", Add {}, &[zero, a]).unwrap()[0];
    let t = g.add_node("t1", Transpose { perm: vec![1, 0] }, &[a]).unwrap()[0];
    let t = g.add_node("t2", Transpose { perm: vec![1, 0] }, &[t]).unwrap()[0];
    let r = g.add_node("r1", Reshape { shape: vec![6], allowzero: false }, &[t]).unwrap()[0];
    let r = g.add_node("r2", Reshape { shape: vec![3, 2], allowzero: false }, &[r]).unwrap()[0];
    // Broadcasting changes the type: this multiplication by one stays.
    let b = g.add_node("widening_one", Mul {}, &[x, big_one]).unwrap()[0];
    let w = f32s(&mut g, "w", &[2, 4], 1);
    let c = f32s(&mut g, "c", &[4], 2);
    let m = g.add_node("mm", MatMul { act: Activation::None }, &[r, w]).unwrap()[0];
    let m = g.add_node("mm_bias", Add {}, &[m, c]).unwrap()[0];
    g.add_output("y", m);
    g.add_output("z", b);
    check("algebra", g);
}

#[test]
fn folding() {
    let mut g = Graph::new("folding");
    let x = g.add_input("x", TensorType::fixed(DType::F32, &[1, 2, 4, 4]));
    let w = f32s(&mut g, "w", &[3, 2, 3, 3], 0);
    let b = f32s(&mut g, "b", &[3], 1);
    let y = g.add_node("conv", conv(3), &[x, w, b]).unwrap()[0];
    let (s, t, mean) = (f32s(&mut g, "scale", &[3], 2), f32s(&mut g, "shift", &[3], 3), f32s(&mut g, "mean", &[3], 4));
    let var = splat(&mut g, "var", &[3], 0.5);
    let y = g.add_node("bn", BatchNormalization { epsilon: 1e-5 }, &[y, s, t, mean, var]).unwrap()[0];
    let y = g.add_node("id", Identity {}, &[y]).unwrap()[0];
    g.add_output("y", y);
    // No kernel absorbs this one's normalization: a multiply and add, fused with the relu.
    let r = g.add_node("relu", Relu {}, &[x]).unwrap()[0];
    let (s2, t2, m2) =
        (f32s(&mut g, "scale2", &[2], 5), f32s(&mut g, "shift2", &[2], 6), f32s(&mut g, "mean2", &[2], 7));
    let var2 = splat(&mut g, "var2", &[2], 2.0);
    let z = g.add_node("bn2", BatchNormalization { epsilon: 1e-5 }, &[r, s2, t2, m2, var2]).unwrap()[0];
    g.add_output("z", z);
    check("folding", g);
}

#[test]
fn epilogue() {
    let mut g = Graph::new("epilogue");
    let x = g.add_input("x", TensorType::fixed(DType::F32, &[1, 2, 4, 4]));
    let w = f32s(&mut g, "w", &[2, 2, 3, 3], 0);
    let b = f32s(&mut g, "b", &[2], 1);
    let y = g.add_node("conv", conv(3), &[x, w, b]).unwrap()[0];
    let y = g.add_node("residual", Add {}, &[y, x]).unwrap()[0];
    let y = g.add_node("relu6", Clip { min: 0.0, max: 6.0 }, &[y]).unwrap()[0];
    // A product used twice is not fused (it would be computed twice).
    let a = g.add_input("a", TensorType::fixed(DType::F32, &[3, 4]));
    let m = f32s(&mut g, "m", &[4, 5], 2);
    let p = g.add_node("shared_mm", MatMul { act: Activation::None }, &[a, m]).unwrap()[0];
    let s = g.add_node("sig", Sigmoid {}, &[p]).unwrap()[0];
    g.add_output("y", y);
    g.add_output("p", p);
    g.add_output("s", s);
    check("epilogue", g);
}

#[test]
fn same_graph_same_result() {
    let build = || {
        let mut g = Graph::new("det");
        let x = g.add_input("x", TensorType::fixed(DType::F32, &[1, 2, 4, 4]));
        let w = f32s(&mut g, "w", &[2, 2, 3, 3], 0);
        let y = g.add_node("conv", conv(3), &[x, w]).unwrap()[0];
        let y = g.add_node("add", Add {}, &[x, y]).unwrap()[0];
        let y = g.add_node("relu", Relu {}, &[y]).unwrap()[0];
        g.add_output("y", y);
        g
    };
    let run = || {
        let mut g = build();
        EGraphOpt::default().run(&mut g, &mut PassCx::default()).unwrap();
        dlc_ir::print_graph(&g).unwrap()
    };
    assert_eq!(run(), run());
}

#[test]
fn patterns() {
    // BERT's attention block over packed heads with a key-padding mask, and Erf GELU.
    let mut g = Graph::new("patterns");
    let x = g.add_input("x", TensorType::fixed(DType::F32, &[1, 4, 8]));
    let mask = g.add_input("mask", TensorType::fixed(DType::I64, &[1, 4]));
    let heads = |g: &mut Graph, v: Value, perm: Vec<i64>, tag: &str| {
        let r =
            g.add_node(format!("{tag}_split"), Reshape { shape: vec![1, 4, 2, 4], allowzero: false }, &[v]).unwrap()[0];
        g.add_node(format!("{tag}_heads"), Transpose { perm }, &[r]).unwrap()[0]
    };
    let q = heads(&mut g, x, vec![0, 2, 1, 3], "q");
    let k = heads(&mut g, x, vec![0, 2, 3, 1], "k");
    let v = heads(&mut g, x, vec![0, 2, 1, 3], "v");
    let s = g.add_node("scores", MatMul { act: Activation::None }, &[q, k]).unwrap()[0];
    let c = splat(&mut g, "sqrt_d", &[], 2.0);
    let s = g.add_node("scaled", Div {}, &[s, c]).unwrap()[0];
    let m = g.add_node("mask_f", Cast::new(DType::F32), &[mask]).unwrap()[0];
    let one = splat(&mut g, "one", &[], 1.0);
    let m = g.add_node("inverted", Sub {}, &[one, m]).unwrap()[0];
    let big = splat(&mut g, "neg_big", &[], -10000.0);
    let m = g.add_node("additive", Mul {}, &[m, big]).unwrap()[0];
    let m = g.add_node("mask4", Reshape { shape: vec![1, 1, 1, 4], allowzero: true }, &[m]).unwrap()[0];
    let s = g.add_node("masked", Add {}, &[s, m]).unwrap()[0];
    let p = g.add_node("probs", Softmax { axis: -1, mode: SoftmaxMode::Softmax }, &[s]).unwrap()[0];
    let o = g.add_node("context", MatMul { act: Activation::None }, &[p, v]).unwrap()[0];
    let o = g.add_node("merge_t", Transpose { perm: vec![0, 2, 1, 3] }, &[o]).unwrap()[0];
    let o = g.add_node("merge", Reshape { shape: vec![1, 4, 8], allowzero: false }, &[o]).unwrap()[0];
    let sqrt2 = splat(&mut g, "sqrt2", &[], std::f32::consts::SQRT_2);
    let half = splat(&mut g, "half", &[], 0.5);
    let d = g.add_node("g_div", Div {}, &[o, sqrt2]).unwrap()[0];
    let e = g.add_node("g_erf", Erf {}, &[d]).unwrap()[0];
    let a = g.add_node("g_add", Add {}, &[e, one]).unwrap()[0];
    let y = g.add_node("g_mul", Mul {}, &[o, a]).unwrap()[0];
    let y = g.add_node("g_half", Mul {}, &[y, half]).unwrap()[0];
    let scale = f32s(&mut g, "gamma", &[8], 3);
    let y = g.add_node(
        "ln",
        LayerNormalization { axis: -1, epsilon: 1e-5, rms: false, stats: false, skip: false },
        &[y, scale],
    );
    let y = y.unwrap()[0];
    g.add_output("y", y);
    check("patterns", g);
}

#[test]
fn a_shortcut_is_not_fused_into_the_conv_that_produces_it() {
    // x0 = relu(conv0(x)); y = conv2(relu(conv1(x0))) + x0: conv0's value is needed by
    // conv1, so only conv2 may absorb the residual; conv0 must not be computed twice.
    let mut g = Graph::new("shortcut");
    let x = g.add_input("x", TensorType::fixed(DType::F32, &[1, 2, 4, 4]));
    let mut v = x;
    let mut convs = Vec::new();
    for i in 0..3 {
        let w = f32s(&mut g, &format!("w{i}"), &[2, 2, 3, 3], i);
        v = g.add_node(format!("conv{i}"), conv(3), &[v, w]).unwrap()[0];
        convs.push(v);
    }
    let y = g.add_node("add", Add {}, &[convs[2], convs[0]]).unwrap()[0];
    g.add_output("y", y);
    let mut cx = PassCx::default();
    EGraphOpt::default().run(&mut g, &mut cx).unwrap();
    let ops: Vec<_> = g.node_ids().into_iter().map(|id| g.node(id).op.clone()).collect();
    let convs: Vec<_> = ops.iter().filter_map(|op| if let Op::Conv(c) = op { Some(c) } else { None }).collect();
    assert_eq!(convs.len(), 3, "{}", dlc_ir::print_graph(&g).unwrap());
    assert!(!ops.iter().any(|op| matches!(op, Op::Add(_))), "the residual add is fused");
}

#[test]
fn fusion() {
    // tanh(x * sigmoid(x) + b) becomes one fused kernel; `e = exp(x)` is also a model
    // output, so it stays its own kernel and the fused `log(e + 1)` reads it.
    let mut g = Graph::new("fusion");
    let x = g.add_input("x", TensorType::fixed(DType::F32, &[2, 3]));
    let b = f32s(&mut g, "b", &[3], 1);
    let s = g.add_node("sig", Sigmoid {}, &[x]).unwrap()[0];
    let m = g.add_node("swish", Mul {}, &[x, s]).unwrap()[0];
    let a = g.add_node("bias", Add {}, &[m, b]).unwrap()[0];
    let y = g.add_node("tanh", Tanh {}, &[a]).unwrap()[0];
    let e = g.add_node("exp", Exp {}, &[x]).unwrap()[0];
    let one = splat(&mut g, "one", &[], 1.0);
    let e1 = g.add_node("exp_plus_one", Add {}, &[e, one]).unwrap()[0];
    let z = g.add_node("log", Log {}, &[e1]).unwrap()[0];
    g.add_output("y", y);
    g.add_output("e", e);
    g.add_output("z", z);
    check("fusion", g);
}

#[test]
fn decomposed_layernorm() {
    let mut g = Graph::new("ln");
    let x = g.add_input("x", TensorType::fixed(DType::F32, &[2, 8]));
    let mean = g.add_node("mean", ReduceMean { axes: vec![-1], keepdims: true }, &[x]).unwrap()[0];
    let d = g.add_node("centered", Sub {}, &[x, mean]).unwrap()[0];
    let sq = g.add_node("squared", Mul {}, &[d, d]).unwrap()[0];
    let var = g.add_node("var", ReduceMean { axes: vec![1], keepdims: true }, &[sq]).unwrap()[0];
    let eps = splat(&mut g, "eps", &[], 1e-6);
    let ve = g.add_node("var_eps", Add {}, &[var, eps]).unwrap()[0];
    let sd = g.add_node("std", Sqrt {}, &[ve]).unwrap()[0];
    let n = g.add_node("normed", Div {}, &[d, sd]).unwrap()[0];
    let gamma = f32s(&mut g, "gamma", &[8], 1);
    let beta = f32s(&mut g, "beta", &[8], 2);
    let y = g.add_node("scaled", Mul {}, &[gamma, n]).unwrap()[0];
    let y = g.add_node("shifted", Add {}, &[y, beta]).unwrap()[0];
    g.add_output("y", y);
    check("decomposed_layernorm", g);
}

/// `conv(x) * sigmoid(conv(x))` (SiLU as YOLO's exporters write it) on the fused graph,
/// both operand orders; and whether the result is one Conv.
fn silu_graph(conv_first: bool, also_output: bool) -> Graph {
    let mut g = Graph::new("silu");
    let x = g.add_input("x", TensorType::fixed(DType::F32, &[1, 2, 4, 4]));
    let w = f32s(&mut g, "w", &[3, 2, 3, 3], 1);
    let c = g.add_node("conv", conv(3), &[x, w]).unwrap()[0];
    let s = g.add_node("sig", Sigmoid {}, &[c]).unwrap()[0];
    let ops = if conv_first { [c, s] } else { [s, c] };
    let y = g.add_node("silu", Mul {}, &ops).unwrap()[0];
    g.add_output("y", y);
    if also_output {
        g.add_output("conv_out", c);
    }
    g
}

#[test]
fn silu_after_a_conv_is_its_epilogue() {
    check("silu", silu_graph(true, false));
    for conv_first in [true, false] {
        let mut g = silu_graph(conv_first, false);
        EGraphOpt::default().run(&mut g, &mut PassCx::default()).unwrap();
        let ops: Vec<_> = g.node_ids().into_iter().map(|id| g.node(id).op.clone()).collect();
        let kernels: Vec<_> = ops.iter().filter(|op| !matches!(op, Op::Input(_) | Op::Const(_))).collect();
        assert!(
            matches!(kernels[..], [Op::Conv(c)] if c.act == Activation::Swish),
            "{}",
            dlc_ir::print_graph(&g).unwrap()
        );
    }
}

#[test]
fn silu_of_a_conv_whose_value_is_also_used_elsewhere_stays_apart() {
    let mut g = silu_graph(true, true);
    EGraphOpt::default().run(&mut g, &mut PassCx::default()).unwrap();
    let ops: Vec<_> = g.node_ids().into_iter().map(|id| g.node(id).op.clone()).collect();
    assert!(
        ops.iter().any(|op| matches!(op, Op::Conv(c) if c.act == Activation::None)),
        "{}",
        dlc_ir::print_graph(&g).unwrap()
    );
    assert!(!ops.iter().any(|op| matches!(op, Op::Conv(c) if c.act == Activation::Swish)));
}

/// A GELU spelled through `erf` (a library call per element) below a hundred levels that
/// each read the level before twice (tree costs past 1e18 seconds) still becomes `gelu`.
/// (The comparison's arithmetic at such costs is `cost.rs`'s unit test; which of two
/// alternatives that f64 would tie egg then keeps is not something a test can force.)
#[test]
fn a_gelu_deep_in_a_graph_is_still_found_the_cheaper() {
    let mut g = Graph::new("deep_gelu");
    let mut x = g.add_input("x", TensorType::fixed(DType::F32, &[4, 64]));
    for i in 0..100 {
        let s = g.add_node(format!("softmax{i}"), Softmax { axis: -1, mode: SoftmaxMode::Softmax }, &[x]).unwrap()[0];
        let l = g.add_node(format!("log_softmax{i}"), Softmax { axis: -1, mode: SoftmaxMode::LogSoftmax }, &[x]);
        x = g.add_node(format!("sum{i}"), Add {}, &[s, l.unwrap()[0]]).unwrap()[0];
    }
    let sqrt2 = splat(&mut g, "sqrt2", &[], std::f32::consts::SQRT_2);
    let one = splat(&mut g, "one", &[], 1.0);
    let half = splat(&mut g, "half", &[], 0.5);
    let d = g.add_node("div", Div {}, &[x, sqrt2]).unwrap()[0];
    let e = g.add_node("erf", Erf {}, &[d]).unwrap()[0];
    let a = g.add_node("plus_one", Add {}, &[e, one]).unwrap()[0];
    let m = g.add_node("times_x", Mul {}, &[x, a]).unwrap()[0];
    let y = g.add_node("gelu_out", Mul {}, &[m, half]).unwrap()[0];
    g.add_output("y", y);
    let mut cx = PassCx::default();
    EGraphOpt::default().run(&mut g, &mut cx).unwrap();
    let text = dlc_ir::print_graph(&g).unwrap();
    assert!(text.contains("gelu") && !text.contains("erf("), "{text}");
}
