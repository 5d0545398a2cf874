//! Property: on random small graphs built from the patterns the optimiser rewrites
//! (convolutions, BatchNorm, activations, residual adds, identities, transpose and
//! reshape pairs, MatMul + bias, Erf GELU, LayerNorm over a residual, shared values and
//! extra outputs), the reference interpreter gives the same outputs before and after
//! the e-graph optimiser, on random inputs.
use dlc_ir::ops::*;
use dlc_ir::{DType, Graph, TensorData, TensorType, Value};
use dlc_passes::{EGraphOpt, Pass, PassCx};

/// xorshift64*: a small deterministic generator (seeded per case).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn f(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    fn tensor(&mut self, dims: &[u64], lo: f32) -> TensorData {
        let n: u64 = dims.iter().product();
        let v: Vec<f32> =
            (0..n).map(|_| lo + self.f().abs().max(0.05) * if lo > 0.0 { 1.0 } else { self.f().signum() }).collect();
        TensorData::from_f32(dims, &v).unwrap()
    }
}

fn splat(g: &mut Graph, v: f32, dims: &[u64]) -> Value {
    let n: u64 = dims.iter().product();
    g.add_const("k", TensorData::from_f32(dims, &vec![v; n as usize]).unwrap())
}

fn build(r: &mut Rng) -> (Graph, Vec<TensorData>) {
    let mut g = Graph::new("random");
    let (c, h, w) = (2 + r.below(2), 3 + r.below(3), 3 + r.below(3));
    let dims = [1, c, h, w];
    let x = g.add_input("x", TensorType::fixed(DType::F32, &dims));
    let mut cur = x;
    let mut seen = vec![x];
    let mut outputs = Vec::new();
    for step in 0..3 + r.below(6) {
        let name = format!("s{step}");
        cur = match r.below(11) {
            9 => {
                // Per-channel scale, a power-of-two division and a constant subtraction.
                let sc = g.add_const("scale", r.tensor(&[c, 1, 1], 0.0));
                let v = g.add_node(format!("{name}x"), Mul {}, &[cur, sc]).unwrap()[0];
                let two = splat(&mut g, 2.0, &[]);
                let v = g.add_node(format!("{name}d"), Div {}, &[v, two]).unwrap()[0];
                let k = g.add_const("k", r.tensor(&[w], 0.0));
                let v = g.add_node(format!("{name}s"), Sub {}, &[v, k]).unwrap()[0];
                // A per-channel shift, as exporters write a folded BatchNorm's bias.
                let shift = g.add_const("shift", r.tensor(&[1, c, 1, 1], 0.0));
                g.add_node(name, Add {}, &[shift, v]).unwrap()[0]
            }
            0 | 1 => {
                let k = [1, 3][r.below(2) as usize];
                let wt = g.add_const("w", r.tensor(&[c, c, k, k], 0.0));
                let mut ops = vec![cur, wt];
                if r.below(2) == 0 {
                    ops.push(g.add_const("b", r.tensor(&[c], 0.0)));
                }
                let op = Conv {
                    kernel_shape: vec![k as i64, k as i64],
                    strides: vec![],
                    pads: vec![k as i64 / 2; 4],
                    dilations: vec![],
                    group: 1,
                    auto_pad: AutoPad::NotSet,
                    act: Activation::None,
                };
                g.add_node(name, op, &ops).unwrap()[0]
            }
            2 => {
                let p: Vec<Value> =
                    (0..4).map(|i| g.add_const("bn", r.tensor(&[c], if i == 3 { 0.5 } else { 0.0 }))).collect();
                g.add_node(name, BatchNormalization { epsilon: 1e-5 }, &[cur, p[0], p[1], p[2], p[3]]).unwrap()[0]
            }
            3 => {
                let op: Op = match r.below(5) {
                    0 => Relu {}.into(),
                    1 => Clip { min: 0.0, max: 0.5 }.into(),
                    2 => Sigmoid {}.into(),
                    3 => Tanh {}.into(),
                    _ => HardSwish {}.into(),
                };
                g.add_node(name, op, &[cur]).unwrap()[0]
            }
            4 => {
                let other = seen[r.below(seen.len() as u64) as usize];
                let ops = if r.below(2) == 0 { [cur, other] } else { [other, cur] };
                g.add_node(name, Add {}, &ops).unwrap()[0]
            }
            5 => {
                let (op, k): (Op, f32) = if r.below(2) == 0 { (Mul {}.into(), 1.0) } else { (Add {}.into(), 0.0) };
                let kc = splat(&mut g, k, &[w]);
                g.add_node(name, op, &[kc, cur]).unwrap()[0]
            }
            6 => {
                // Transposes around a unary op: pushed through it, they cancel.
                let t = g.add_node(format!("{name}a"), Transpose { perm: vec![0, 1, 3, 2] }, &[cur]).unwrap()[0];
                let t = if r.below(2) == 0 { g.add_node(format!("{name}u"), Tanh {}, &[t]).unwrap()[0] } else { t };
                g.add_node(name, Transpose { perm: vec![0, 1, 3, 2] }, &[t]).unwrap()[0]
            }
            7 => {
                let t = g.add_node(format!("{name}a"), Reshape { shape: vec![1, -1], allowzero: false }, &[cur]);
                let t = t.unwrap()[0];
                let d: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
                g.add_node(name, Reshape { shape: d, allowzero: false }, &[t]).unwrap()[0]
            }
            8 => {
                // An elementwise tree: swish, then a broadcast bias and a unary op.
                let sg = g.add_node(format!("{name}s"), Sigmoid {}, &[cur]).unwrap()[0];
                let sw = g.add_node(format!("{name}m"), Mul {}, &[cur, sg]).unwrap()[0];
                let bc = g.add_const("bc", r.tensor(&[w], 0.0));
                let sb = g.add_node(format!("{name}b"), Add {}, &[sw, bc]).unwrap()[0];
                let op: Op = if r.below(2) == 0 { Tanh {}.into() } else { Neg {}.into() };
                g.add_node(name, op, &[sb]).unwrap()[0]
            }
            _ => {
                // A value that is also a model output: fusing it away would be wrong.
                outputs.push(cur);
                cur
            }
        };
        seen.push(cur);
    }
    // A dense head: flatten, MatMul + bias, Erf GELU or an activation, LayerNorm over a
    // residual.
    let n = c * h * w;
    let flat = g.add_node("flat", Reshape { shape: vec![1, n as i64], allowzero: false }, &[cur]).unwrap()[0];
    let m = if r.below(2) == 0 {
        let wm = g.add_const("wm", r.tensor(&[n, 6], 0.0));
        let m = g.add_node("mm", MatMul { act: Activation::None }, &[flat, wm]).unwrap()[0];
        let bias = g.add_const("bias", r.tensor(&[6], 0.0));
        g.add_node("mm_bias", Add {}, &[m, bias]).unwrap()[0]
    } else {
        // Gemm (B transposed or not) followed by BatchNorm over its columns.
        let trans_b = r.below(2) == 0;
        let wdims = if trans_b { [6, n] } else { [n, 6] };
        let wm = g.add_const("wg", r.tensor(&wdims, 0.0));
        let bias = g.add_const("bias", r.tensor(&[6], 0.0));
        let op = Gemm { alpha: 1.0, beta: 1.0, trans_a: false, trans_b, act: Activation::None };
        let m = g.add_node("gemm", op, &[flat, wm, bias]).unwrap()[0];
        let p: Vec<Value> = (0..4).map(|i| g.add_const("bn", r.tensor(&[6], if i == 3 { 0.5 } else { 0.0 }))).collect();
        g.add_node("gemm_bn", BatchNormalization { epsilon: 1e-5 }, &[m, p[0], p[1], p[2], p[3]]).unwrap()[0]
    };
    let m = if r.below(2) == 0 {
        let s2 = splat(&mut g, std::f32::consts::SQRT_2, &[]);
        let d = g.add_node("g_div", Div {}, &[m, s2]).unwrap()[0];
        let e = g.add_node("g_erf", Erf {}, &[d]).unwrap()[0];
        let one = splat(&mut g, 1.0, &[]);
        let a = g.add_node("g_add", Add {}, &[e, one]).unwrap()[0];
        let p = g.add_node("g_mul", Mul {}, &[m, a]).unwrap()[0];
        let half = splat(&mut g, 0.5, &[]);
        g.add_node("g_half", Mul {}, &[p, half]).unwrap()[0]
    } else {
        g.add_node("act", Relu {}, &[m]).unwrap()[0]
    };
    let res = g.add_const("res", r.tensor(&[6], 0.0));
    let s = g.add_node("skip", Add {}, &[m, res]).unwrap()[0];
    let gamma = g.add_const("gamma", r.tensor(&[6], 0.0));
    let y = if r.below(2) == 0 {
        let ln = LayerNormalization { axis: -1, epsilon: 1e-5, rms: false, stats: false, skip: false };
        g.add_node("ln", ln, &[s, gamma]).unwrap()[0]
    } else {
        // LayerNorm written out as exporters without the op do.
        let mean = g.add_node("mean", ReduceMean { axes: vec![-1], keepdims: true }, &[s]).unwrap()[0];
        let d = g.add_node("centered", Sub {}, &[s, mean]).unwrap()[0];
        let two = splat(&mut g, 2.0, &[]);
        let sq = g.add_node("squared", Pow {}, &[d, two]).unwrap()[0];
        let var = g.add_node("var", ReduceMean { axes: vec![-1], keepdims: true }, &[sq]).unwrap()[0];
        let eps = splat(&mut g, 1e-5, &[]);
        let ve = g.add_node("var_eps", Add {}, &[var, eps]).unwrap()[0];
        let sd = g.add_node("std", Sqrt {}, &[ve]).unwrap()[0];
        let n = g.add_node("normed", Div {}, &[d, sd]).unwrap()[0];
        let y = g.add_node("scaled", Mul {}, &[n, gamma]).unwrap()[0];
        let beta = g.add_const("beta", r.tensor(&[6], 0.0));
        g.add_node("shifted", Add {}, &[y, beta]).unwrap()[0]
    };
    g.add_output("y", y);
    for (i, v) in outputs.into_iter().enumerate() {
        g.add_output(format!("extra{i}"), v);
    }
    let input = r.tensor(&dims, 0.0);
    (g, vec![input])
}

#[test]
fn optimised_graphs_compute_the_same_outputs() {
    let mut fired = std::collections::BTreeMap::new();
    for seed in 1..=150u64 {
        let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let (mut g, inputs) = build(&mut r);
        let before_text = dlc_ir::print_graph(&g).unwrap();
        let before = dlc_interp::run_graph(&g, &inputs).unwrap();
        let mut cx = PassCx::default();
        EGraphOpt::default().run(&mut g, &mut cx).unwrap();
        dlc_ir::verify(&g).unwrap();
        for (rule, n) in cx.optimizer.unwrap().rules_fired {
            *fired.entry(rule).or_insert(0) += n;
        }
        let after = dlc_interp::run_graph(&g, &inputs).unwrap();
        for (a, b) in before.iter().zip(&after) {
            let (a, b) = (a.to_f32().unwrap(), b.to_f32().unwrap());
            for (x, y) in a.iter().zip(&b) {
                assert!(
                    (x - y).abs() <= 1e-5 + 1e-4 * x.abs(),
                    "seed {seed}: {x} vs {y}\nbefore:\n{before_text}\nafter:\n{}",
                    dlc_ir::print_graph(&g).unwrap()
                );
            }
        }
    }
    // The generator must exercise every family.
    for rule in
        ["bn-into-conv", "act-into-producer", "residual-into-conv", "gelu-erf", "bias-into-matmul", "elementwise-chain"]
    {
        assert!(fired.contains_key(rule), "{rule} never fired: {fired:?}");
    }
}
