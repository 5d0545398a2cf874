//! Post-training static int8 quantization of convolutions (`dlc compile --quantize int8
//! --calibrate DIR`).
//!
//! The driver runs the optimised f32 graph on calibration samples and hands this module
//! what it saw at each candidate convolution (its input's range, and a few samples of
//! its input, residual and output). For each candidate this module then
//! - picks the input's u8 quantization from the range ([`ActQuant::from_range`]),
//! - quantizes the weights per output channel, symmetric, to +-63 ([`WEIGHT_MAX`]: with
//!   7-bit weights AVX2's `vpmaddubsw` pairs cannot saturate; ONNX Runtime's
//!   `reduce_range` makes the same trade on CPUs without VNNI),
//! - measures the layer's own error (quantized layer on the f32 input against the f32
//!   output, relative L2 over sampled outputs), and
//! - rewrites `conv(x, W, B, R)` into `qconv(quant_pack(x), Wq, mult, offset, R)` when
//!   the error is within the threshold, or leaves the layer in f32 and says why.
//!
//! Contract: only `conv` nodes with one group and constant f32 weights (and bias) are
//! rewritten; each rewritten node keeps its name, result type and users. The pass never
//! changes what the graph computes beyond the quantization it reports.
use dlc_interp::nn;
use dlc_ir::ops::{Infer, QConv, QuantPack, Reshape};
use dlc_ir::{DType, Graph, IrError, NodeId, Op, TensorData, TensorType, Value};

/// The largest weight magnitude after quantization.
pub const WEIGHT_MAX: f32 = 63.0;

/// The largest quantized activation: 7 bits, so that two u8 x i8 pair sums of the
/// kernels (`vpmaddubsw`) add up in 16 bits (4 x 127 x 63 < 2^15) before widening, three
/// multiply instructions per 64 products instead of four.
pub const ACT_MAX: i64 = 127;

/// Outputs of a layer the error check looks at, at most.
const CHECKED_OUTPUTS: usize = 4096;

/// Per-tensor asymmetric quantization of an activation to `0..=qmax`:
/// `q = round(x / scale) + zero_point`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActQuant {
    /// Step between quantized values.
    pub scale: f32,
    /// The quantized value of 0.0.
    pub zero_point: i64,
    /// The largest quantized value.
    pub qmax: i64,
}

impl ActQuant {
    /// The quantization of `[lo, hi]` to `0..=qmax` (the range widened to include 0, so
    /// padding and ReLU outputs are exact): a non-negative range uses zero point 0.
    pub fn from_range(lo: f32, hi: f32, qmax: i64) -> ActQuant {
        let (scale, zero_point) = dlc_ir::ops::range_quantization(lo, hi, qmax);
        ActQuant { scale, zero_point, qmax }
    }
}

/// How a tensor's range is taken from the calibration samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RangeMethod {
    /// The smallest and largest value seen.
    MinMax,
    /// The mean over samples of each sample's `p`-th and `(100 - p)`-th percentiles
    /// (ignores rare outliers, which would otherwise stretch the steps).
    Percentile(f64),
}

/// What the calibration saw of one tensor, sample by sample.
#[derive(Debug, Clone, Default)]
pub struct RangeStats {
    min: f32,
    max: f32,
    pct_lo: f64,
    pct_hi: f64,
    samples: u64,
}

impl RangeStats {
    /// Adds one sample's values; `percentile` is the upper percentile to track.
    pub fn observe(&mut self, values: &[f32], percentile: f64) {
        let finite: Vec<f32> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if finite.is_empty() {
            return;
        }
        let (mn, mx) = finite.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        if self.samples == 0 {
            (self.min, self.max) = (mn, mx);
        } else {
            (self.min, self.max) = (self.min.min(mn), self.max.max(mx));
        }
        let at = |p: f64, v: &mut Vec<f32>| -> f64 {
            let last = v.len() - 1;
            let k = ((p / 100.0) * last as f64).round() as usize;
            *v.select_nth_unstable_by(k.min(last), f32::total_cmp).1 as f64
        };
        let mut v = finite;
        self.pct_hi += at(percentile, &mut v);
        self.pct_lo += at(100.0 - percentile, &mut v);
        self.samples += 1;
    }

    /// The range by `method` (`(0, 0)` when nothing was observed).
    pub fn range(&self, method: RangeMethod) -> (f32, f32) {
        match method {
            _ if self.samples == 0 => (0.0, 0.0),
            RangeMethod::MinMax => (self.min, self.max),
            RangeMethod::Percentile(_) => {
                ((self.pct_lo / self.samples as f64) as f32, (self.pct_hi / self.samples as f64) as f32)
            }
        }
    }
}

/// The layers the pass can quantize, in graph order: convolutions with one group and
/// matrix products (`matmul`) whose right operand is a 2-D matrix, with constant f32
/// weights and bias and f32 operands of known shapes. With `keep_last`, the last compute
/// layer (conv, matmul or gemm) of the graph stays f32 even when it is one.
pub fn candidates(g: &Graph, keep_last: bool) -> Result<Vec<NodeId>, IrError> {
    let order = g.topo_order()?;
    let last = order.iter().rev().find(|&&id| {
        matches!(g.node(id).op, Op::Conv(_) | Op::MatMul(_) | Op::Gemm(_) | Op::ConvTranspose(_) | Op::Einsum(_))
    });
    Ok(order
        .iter()
        .copied()
        .filter(|id| !(keep_last && Some(id) == last))
        .filter(|&id| {
            let ops = g.operands(id);
            let is_const = |i: usize| ops.get(i).is_none_or(|v| matches!(g.node(v.node).op, Op::Const(_)));
            let types = ops.iter().map(|v| g.value_type(*v)).chain(&g.node(id).outputs);
            let ok_types = types.into_iter().all(|t| t.dtype == DType::F32 && t.shape.is_fixed());
            let rank = |i: usize| g.value_type(ops[i]).shape.rank();
            let shape_ok = match &g.node(id).op {
                Op::Conv(c) => c.group == 1 && rank(0) == 4 && rank(1) == 4,
                Op::MatMul(_) => rank(0) >= 2 && rank(1) == 2,
                _ => false,
            };
            shape_ok && ok_types && is_const(1) && is_const(2)
        })
        .collect())
}

/// A layer's int8 form, ready to replace it.
#[derive(Debug, Clone)]
pub struct QuantizedConv {
    /// The input's quantization and layout.
    pub pack: QuantPack,
    /// The integer convolution.
    pub conv: QConv,
    /// `[M, C, KH, KW]` i8 weights (`[N, K, 1, 1]` for a matrix product).
    pub weights: TensorData,
    /// Per output channel: input scale x weight scale.
    pub mult: Vec<f32>,
    /// Per output channel: bias - mult x zero point x sum of the channel's weights.
    pub offset: Vec<f32>,
}

fn const_of(g: &Graph, v: Value) -> Option<&TensorData> {
    match &g.node(v.node).op {
        Op::Const(c) => Some(&c.value),
        _ => None,
    }
}

/// Quantizes candidate `id` (see [`candidates`]) for input quantization `act`, or with
/// `None` for dynamic quantization (7-bit, each run's own range: the `quant_pack` and
/// `qconv` are `dynamic`, `mult` holds the weight scales and `offset` the bias). A
/// matrix product `x[..., K] @ B[K, N]` becomes a 1x1 convolution over the rows of `x`
/// (`rows` layouts) with weights `B` transposed to `[N, K, 1, 1]`.
pub fn prepare(g: &Graph, id: NodeId, act: Option<ActQuant>) -> Result<QuantizedConv, IrError> {
    let node = g.node(id);
    let bad = |m: &str| IrError::shape(&node.name, node.op.mnemonic(), m.to_string());
    let ops = g.operands(id);
    let w = const_of(g, ops[1]).and_then(|t| t.to_f32()).ok_or_else(|| bad("weights must be an f32 constant"))?;
    let wd = g.value_type(ops[1]).shape.as_fixed().ok_or_else(|| bad("weights need known dims"))?;
    let (w, wd, pads, conv) = match &node.op {
        Op::Conv(c) => {
            let geom = c.geometry(&node.name, g.value_type(ops[0]), g.value_type(ops[1]))?;
            let pads = [geom.pad_begin[0], geom.pad_begin[1], geom.pad_end[0], geom.pad_end[1]].map(|p| p as i64);
            let conv = QConv {
                strides: geom.strides.iter().map(|&s| s as i64).collect(),
                dilations: geom.dilations.iter().map(|&d| d as i64).collect(),
                act: c.act,
                rows: false,
                dynamic: act.is_none(),
            };
            (w, wd, pads, conv)
        }
        Op::MatMul(m) => {
            let (k, n) = (wd[0] as usize, wd[1] as usize);
            let wt: Vec<f32> = (0..n * k).map(|i| w[(i % k) * n + i / k]).collect();
            let conv =
                QConv { strides: vec![1, 1], dilations: vec![1, 1], act: m.act, rows: true, dynamic: act.is_none() };
            (wt, vec![n as u64, k as u64, 1, 1], [0; 4], conv)
        }
        _ => return Err(bad("not a convolution or matrix product")),
    };
    let bias = match ops.get(2) {
        Some(v) => const_of(g, *v).and_then(|t| t.to_f32()).ok_or_else(|| bad("bias must be an f32 constant"))?,
        None => vec![0.0; wd[0] as usize],
    };
    let per = (wd[1] * wd[2] * wd[3]) as usize;
    let (mut wq, mut mult, mut offset) = (Vec::with_capacity(w.len()), Vec::new(), Vec::new());
    for (m, chan) in w.chunks(per.max(1)).enumerate() {
        let amax = chan.iter().fold(0f32, |a, v| a.max(v.abs()));
        let ws = if amax > 0.0 && amax.is_finite() { amax / WEIGHT_MAX } else { 1.0 };
        let q: Vec<i8> = chan.iter().map(|v| (v / ws).round_ties_even().clamp(-WEIGHT_MAX, WEIGHT_MAX) as i8).collect();
        let sum: i64 = q.iter().map(|&v| v as i64).sum();
        match act {
            Some(act) => {
                let mu = act.scale as f64 * ws as f64;
                mult.push(mu as f32);
                offset.push((bias[m] as f64 - mu * act.zero_point as f64 * sum as f64) as f32);
            }
            None => {
                mult.push(ws);
                offset.push(bias[m]);
            }
        }
        wq.extend(q);
    }
    let bytes: Vec<u8> = wq.iter().map(|&v| v as u8).collect();
    let weights = TensorData::new(TensorType::fixed(DType::I8, &wd), bytes.into()).ok_or_else(|| bad("weight size"))?;
    let act = act.unwrap_or(ActQuant { scale: 1.0, zero_point: 0, qmax: ACT_MAX });
    Ok(QuantizedConv {
        pack: QuantPack {
            scale: act.scale,
            zero_point: act.zero_point,
            qmax: act.qmax,
            pads: pads.to_vec(),
            rows: conv.rows,
            dynamic: conv.dynamic,
        },
        conv,
        weights,
        mult,
        offset,
    })
}

/// The layer's own quantization error: `||q - y|| / ||y||` over (at most 4096 evenly
/// spaced) outputs, where `q` is the int8 layer applied to the f32 input `x` (and
/// residual `r`) and `y` the f32 layer's output on the same input.
pub fn layer_error(q: &QuantizedConv, xd: &[u64], x: &[f32], r: Option<&[f32]>, y: &[f32]) -> f64 {
    let xf: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let (xq, scale, zp) = nn::quant_pack(&q.pack, &xf, xd);
    let Ok(Some(pd)) = q.pack.infer("", &[TensorType::fixed(DType::F32, xd)]).map(|t| t[0].shape.as_fixed()) else {
        return f64::INFINITY;
    };
    let wd = q.weights.ty().shape.as_fixed().unwrap_or_default();
    let w: Vec<i64> = q.weights.bytes().iter().map(|&v| v as i8 as i64).collect();
    let (mut mult, mut offset): (Vec<f64>, Vec<f64>) =
        (q.mult.iter().map(|&v| v as f64).collect(), q.offset.iter().map(|&v| v as f64).collect());
    if q.conv.dynamic {
        (mult, offset) = nn::qconv_dynamic_params(&mult, &offset, &w, scale as f64, zp as f64);
    }
    let step = y.len().div_ceil(CHECKED_OUTPUTS).max(1);
    let (mut num, mut den) = (0f64, 0f64);
    for i in (0..y.len()).step_by(step) {
        let acc = nn::qconv_at(&q.conv, &xq, &pd, &w, &wd, i);
        let m = nn::qconv_coords(&q.conv, &pd, &wd, i)[1];
        let v = acc as f64 * mult[m as usize] + offset[m as usize] + r.map_or(0.0, |r| r[i] as f64);
        let d = nn::activation(q.conv.act, v) - y[i] as f64;
        num += d * d;
        den += (y[i] as f64) * (y[i] as f64);
    }
    if den == 0.0 {
        return if num == 0.0 { 0.0 } else { f64::INFINITY };
    }
    (num / den).sqrt()
}

/// Replaces layer `id` by its int8 form `q`: `quant_pack` (named `<layer>.quant`) then
/// `qconv` (the layer's name), with a convolution's residual operand if it has one; a
/// matrix product's `[P, N]` result is reshaped (a view) to the original shape.
pub fn apply(g: &mut Graph, id: NodeId, q: &QuantizedConv) -> Result<(), IrError> {
    let name = g.node(id).name.clone();
    let ops = g.operands(id);
    let pack = g.add_node(format!("{name}.quant"), q.pack.clone(), &[ops[0]])?;
    let m = q.mult.len() as u64;
    let w = g.add_const(format!("{name}.wq"), q.weights.clone());
    let f = |v: &[f32]| TensorData::from_f32(&[m], v).ok_or_else(|| IrError::shape(&name, "qconv", "per-channel size"));
    let mult = g.add_const(format!("{name}.mult"), f(&q.mult)?);
    let offset = g.add_const(format!("{name}.offset"), f(&q.offset)?);
    let mut operands = vec![pack[0], w, mult, offset];
    // A dynamic pack's scale and zero point, or a convolution's residual.
    operands.extend(if q.conv.dynamic { pack.get(1) } else { ops.get(3) }.copied());
    let out_ty = g.node(id).outputs[0].clone();
    let mut out = g.add_node(name.clone(), q.conv.clone(), &operands)?[0];
    if q.conv.rows {
        let shape = out_ty.shape.as_fixed().unwrap_or_default().iter().map(|&d| d as i64).collect();
        out = g.add_node(format!("{name}.rows"), Reshape { shape, allowzero: false }, &[out])?[0];
    }
    g.replace_uses(Value { node: id, port: 0 }, out);
    g.remove_node(id);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Pass;
    use dlc_ir::ops::{Activation, AutoPad, Conv, Relu};

    fn conv_graph() -> Graph {
        let mut g = Graph::new("q");
        let x = g.add_input("x", TensorType::fixed(DType::F32, &[1, 3, 6, 5]));
        let wv: Vec<f32> = (0..8 * 3 * 9).map(|i| ((i * 37 % 23) as f32 - 11.0) / 10.0).collect();
        let w = g.add_const("w", TensorData::from_f32(&[8, 3, 3, 3], &wv).unwrap());
        let b = g.add_const("b", TensorData::from_f32(&[8], &[0.5, -0.25, 0.0, 1.0, 0.1, 0.2, -0.3, 0.4]).unwrap());
        let conv = |pads: i64, strides: i64| Conv {
            kernel_shape: vec![3, 3],
            strides: vec![strides; 2],
            pads: vec![pads; 4],
            dilations: vec![],
            group: 1,
            auto_pad: AutoPad::NotSet,
            act: Activation::Relu,
        };
        let y = g.add_node("c1", conv(1, 2), &[x, w, b]).unwrap()[0];
        let w2v: Vec<f32> = (0..4 * 8 * 9).map(|i| ((i * 13 % 17) as f32 - 8.0) / 20.0).collect();
        let w2 = g.add_const("w2", TensorData::from_f32(&[4, 8, 3, 3], &w2v).unwrap());
        let z = g.add_node("c2", conv(1, 1), &[y, w2]).unwrap()[0];
        let z = g.add_node("out", Relu {}, &[z]).unwrap()[0];
        g.add_output("z", z);
        g
    }

    #[test]
    fn ranges_become_zero_points_and_scales() {
        assert_eq!(ActQuant::from_range(0.0, 12.7, 127), ActQuant { scale: 0.1, zero_point: 0, qmax: 127 });
        let q = ActQuant::from_range(-1.0, 3.0, 255);
        assert!((q.scale - 4.0 / 255.0).abs() < 1e-7 && q.zero_point == 64);
        // A range that misses 0 is widened to include it; a point range does not divide by 0.
        assert_eq!(ActQuant::from_range(2.0, 4.0, 127).zero_point, 0);
        assert_eq!(ActQuant::from_range(0.0, 0.0, 127), ActQuant { scale: 1.0, zero_point: 0, qmax: 127 });
        assert_eq!(ActQuant::from_range(f32::NEG_INFINITY, 1.0, 127).scale, 1.0);
    }

    #[test]
    fn percentiles_ignore_outliers_and_minmax_does_not() {
        let mut s = RangeStats::default();
        let mut v: Vec<f32> = (0..10_000).map(|i| i as f32 / 10_000.0).collect();
        v[17] = 1000.0;
        v[18] = f32::NAN;
        s.observe(&v, 99.9);
        assert_eq!(s.range(RangeMethod::MinMax), (0.0, 1000.0));
        let (lo, hi) = s.range(RangeMethod::Percentile(99.9));
        assert!(lo < 0.002 && (0.99..1.0).contains(&hi), "{lo} {hi}");
        assert_eq!(RangeStats::default().range(RangeMethod::MinMax), (0.0, 0.0));
    }

    #[test]
    fn keeps_the_last_layer_unless_asked() {
        let g = conv_graph();
        let names = |ids: Vec<NodeId>| ids.iter().map(|&i| g.node(i).name.clone()).collect::<Vec<_>>();
        assert_eq!(names(candidates(&g, true).unwrap()), ["c1"]);
        assert_eq!(names(candidates(&g, false).unwrap()), ["c1", "c2"]);
    }

    #[test]
    fn rewrite_matches_the_f32_graph_within_quantization_error() {
        let g0 = conv_graph();
        let mut g = g0.clone();
        let xv: Vec<f32> = (0..90).map(|i| ((i * 7 % 19) as f32 - 6.0) / 4.0).collect();
        let x = TensorData::from_f32(&[1, 3, 6, 5], &xv).unwrap();
        let want = dlc_interp::run_graph(&g0, std::slice::from_ref(&x)).unwrap()[0].to_f32().unwrap();
        for id in candidates(&g0, false).unwrap() {
            // Ranges of this input, as calibration would measure them.
            let ops = g.operands(id);
            let xin = if ops[0].node == g.inputs()[0] { xv.clone() } else { vec![0.0, 20.0] };
            let (lo, hi) = xin.iter().fold((0f32, 0f32), |(a, b), &v| (a.min(v), b.max(v)));
            let q = prepare(&g, id, Some(ActQuant::from_range(lo, hi, ACT_MAX))).unwrap();
            assert!(q.weights.bytes().iter().all(|&b| (-63..=63).contains(&(b as i8))));
            apply(&mut g, id, &q).unwrap();
        }
        crate::Dce.run(&mut g, &mut Default::default()).unwrap();
        dlc_ir::verify(&g).unwrap();
        insta::assert_snapshot!(dlc_ir::print_graph(&g).unwrap());
        let got = dlc_interp::run_graph(&g, &[x]).unwrap()[0].to_f32().unwrap();
        let num: f32 = got.iter().zip(&want).map(|(a, b)| (a - b) * (a - b)).sum();
        let den: f32 = want.iter().map(|b| b * b).sum();
        assert!(den > 0.0 && (num / den).sqrt() < 0.05, "relative error {}", (num / den).sqrt());
    }

    #[test]
    fn matrix_products_become_row_convolutions() {
        for dynamic in [false, true] {
            matrix_product_case(dynamic);
        }
    }

    /// A matmul rewritten (statically from its input's range, or dynamic) computes what
    /// `layer_error` predicts, within the quantization error.
    fn matrix_product_case(dynamic: bool) {
        let mut g = Graph::new("mm");
        let x = g.add_input("x", TensorType::fixed(DType::F32, &[2, 3, 6]));
        let bv: Vec<f32> = (0..6 * 5).map(|i| ((i * 11 % 13) as f32 - 6.0) / 7.0).collect();
        let b = g.add_const("b", TensorData::from_f32(&[6, 5], &bv).unwrap());
        let bias = g.add_const("bias", TensorData::from_f32(&[5], &[0.1, -0.2, 0.3, 0.0, 0.5]).unwrap());
        let y = g.add_node("mm", dlc_ir::ops::MatMul { act: Activation::Relu }, &[x, b, bias]).unwrap()[0];
        g.add_output("y", y);
        let xv: Vec<f32> = (0..36).map(|i| ((i * 5 % 17) as f32 - 5.0) / 3.0).collect();
        let xt = TensorData::from_f32(&[2, 3, 6], &xv).unwrap();
        let want = dlc_interp::run_graph(&g, std::slice::from_ref(&xt)).unwrap()[0].to_f32().unwrap();
        let id = candidates(&g, false).unwrap()[0];
        let (lo, hi) = xv.iter().fold((0f32, 0f32), |(a, b), &v| (a.min(v), b.max(v)));
        let q = prepare(&g, id, (!dynamic).then(|| ActQuant::from_range(lo, hi, ACT_MAX))).unwrap();
        assert_eq!((q.pack.dynamic, q.conv.dynamic), (dynamic, dynamic));
        assert_eq!(q.weights.ty().shape.as_fixed().unwrap(), [5, 6, 1, 1]);
        let err = layer_error(&q, &[2, 3, 6], &xv, None, &want);
        apply(&mut g, id, &q).unwrap();
        crate::Dce.run(&mut g, &mut Default::default()).unwrap();
        dlc_ir::verify(&g).unwrap();
        let text = dlc_ir::print_graph(&g).unwrap();
        assert!(text.contains("rows=true") && text.contains(": f32[6,5]") && text.contains("reshape"), "{text}");
        let got = dlc_interp::run_graph(&g, &[xt]).unwrap()[0].to_f32().unwrap();
        let num: f32 = got.iter().zip(&want).map(|(a, b)| (a - b) * (a - b)).sum();
        let den: f32 = want.iter().map(|b| b * b).sum();
        // The rewritten graph's error is the one layer_error measured on the same input.
        let rel = ((num / den).sqrt()) as f64;
        assert!(rel < 0.05 && (rel - err).abs() < 1e-3, "dynamic={dynamic}: graph {rel}, layer_error {err}");
    }

    #[test]
    fn layer_error_is_zero_for_exact_inputs_and_grows_with_coarse_steps() {
        let g = conv_graph();
        let id = candidates(&g, true).unwrap()[0];
        // Inputs on the quantization grid and weights quantized exactly: error from the
        // weights only; a grid twenty times coarser is worse.
        let xv: Vec<f32> = (0..90).map(|i| ((i * 7 % 19) as f32) / 8.0).collect();
        let x = TensorData::from_f32(&[1, 3, 6, 5], &xv).unwrap();
        let mut probe = g.clone();
        probe.add_output("y", Value { node: id, port: 0 });
        let y = dlc_interp::run_graph(&probe, &[x]).unwrap()[1].to_f32().unwrap();
        let fine = prepare(&g, id, Some(ActQuant { scale: 0.125, zero_point: 0, qmax: 127 })).unwrap();
        let coarse = prepare(&g, id, Some(ActQuant { scale: 2.5, zero_point: 0, qmax: 127 })).unwrap();
        let (ef, ec) =
            (layer_error(&fine, &[1, 3, 6, 5], &xv, None, &y), layer_error(&coarse, &[1, 3, 6, 5], &xv, None, &y));
        assert!(ef < 0.02 && ec > 5.0 * ef, "{ef} {ec}");
    }
}
