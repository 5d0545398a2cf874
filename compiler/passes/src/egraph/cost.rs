//! The cost model: a roofline per kernel. A kernel costs the larger of its FLOPs over the
//! target's peak FLOP/s and its bytes moved (operands read once, result written once)
//! over the memory bandwidth, plus a fixed launch cost; inputs and constants cost 0.
//! Data movement that the backend turns into a copy costs its bytes. The numbers are
//! per target and configurable (docs/optimizer.md).
use super::lang::{EGraph, Node};
use crate::stats::op_flops;
use dlc_ir::{Graph, Op, OpKind, TensorType};
use egg::{CostFunction, Id};

/// A target's roofline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Roofline {
    /// Peak floating-point operations per second the kernels reach.
    pub flops_per_s: f64,
    /// Memory bandwidth, bytes per second.
    pub bytes_per_s: f64,
    /// Fixed cost of one kernel call, seconds.
    pub launch_s: f64,
}

impl Default for Roofline {
    /// One core of a current x86-64 server: 50 GFLOP/s sustained by dlc's kernels,
    /// 20 GB/s from memory, 1 microsecond per kernel call.
    fn default() -> Self {
        Roofline { flops_per_s: 50e9, bytes_per_s: 20e9, launch_s: 1e-6 }
    }
}

impl Roofline {
    /// The numbers for a target triple: dlc's kernels on one core of the machine kind
    /// (x86-64 as above; AArch64 cores at half the FLOP rate; a CUDA GPU with a higher
    /// launch cost). `--roofline` on `dlc compile` overrides them.
    pub fn for_target(triple: &str) -> Roofline {
        let arch = triple.split('-').next().unwrap_or("");
        match arch {
            "aarch64" | "arm64" => Roofline { flops_per_s: 25e9, bytes_per_s: 15e9, launch_s: 1e-6 },
            "nvptx64" | "nvptx" => Roofline { flops_per_s: 20e12, bytes_per_s: 2e12, launch_s: 5e-6 },
            _ => Roofline::default(),
        }
    }

    /// Parses `GFLOPS,GBPS,LAUNCH_US` (e.g. `50,20,1`).
    pub fn parse(s: &str) -> Result<Roofline, String> {
        let v: Vec<f64> = s
            .split(',')
            .map(|x| x.trim().parse::<f64>().map_err(|_| format!("'{x}' is not a number")))
            .collect::<Result<_, _>>()?;
        match v[..] {
            [f, b, l] if f > 0.0 && b > 0.0 && l >= 0.0 => {
                Ok(Roofline { flops_per_s: f * 1e9, bytes_per_s: b * 1e9, launch_s: l * 1e-6 })
            }
            _ => Err(format!("--roofline wants GFLOPS,GBPS,LAUNCH_US with positive numbers, got '{s}'")),
        }
    }
}

/// What one call of a C math function costs per element, in the roofline's FLOPs: the
/// elementwise kernels call the library for these (one element at a time, which also
/// keeps their loops from vectorising), where dlc's own inline functions (exp, log,
/// tanh, the erf of a GELU) run in vectors. Without it a chain of steps that spells out
/// a GELU through `erf` costs the same as the `gelu` step it matches (both move the
/// same bytes), and extraction may keep the library call.
const LIBRARY_CALL_FLOPS: u64 = 100;

/// The C math library calls per element of an elementwise op (each step of a fused one).
fn library_calls(op: &Op) -> u64 {
    match op {
        Op::Fused(f) => f.steps.iter().map(|s| library_calls(&s.op)).sum(),
        Op::Erf(_)
        | Op::Sin(_)
        | Op::Cos(_)
        | Op::Tan(_)
        | Op::Asin(_)
        | Op::Acos(_)
        | Op::Atan(_)
        | Op::Sinh(_)
        | Op::Cosh(_)
        | Op::Asinh(_)
        | Op::Acosh(_)
        | Op::Atanh(_) => 1,
        _ => 0,
    }
}

/// Bytes of `t` (symbolic dims at 1, as the cost of one sample).
fn bytes(t: &TensorType) -> f64 {
    t.shape.at_ones().iter().product::<u64>() as f64 * t.dtype.size() as f64
}

impl Roofline {
    /// Seconds for one kernel of `op` reading `ins` and writing `out`.
    pub fn kernel(&self, op: &Op, ins: &[&TensorType], out: &TensorType) -> f64 {
        if op.kind() == OpKind::Source {
            return 0.0;
        }
        let dims: Vec<Vec<u64>> = ins.iter().map(|t| t.shape.at_ones()).collect();
        let numel: u64 = out.shape.at_ones().iter().product();
        let flops = op_flops(op, &dims, numel) as f64 + (LIBRARY_CALL_FLOPS * library_calls(op) * numel) as f64;
        let moved: f64 = ins.iter().map(|t| bytes(t)).sum::<f64>() + bytes(out);
        (flops / self.flops_per_s).max(moved / self.bytes_per_s) + self.launch_s
    }

    /// Seconds for every kernel of a graph (each node once).
    pub fn graph(&self, g: &Graph) -> f64 {
        g.node_ids()
            .into_iter()
            .map(|id| {
                let n = g.node(id);
                let ins: Vec<TensorType> = g.operands(id).iter().map(|v| g.value_type(*v).clone()).collect();
                let refs: Vec<&TensorType> = ins.iter().collect();
                n.outputs.first().map(|o| self.kernel(&n.op, &refs, o)).unwrap_or(0.0)
            })
            .sum()
    }
}

/// Extraction cost: the kernel's roofline time plus its operands' (a tree cost: a value
/// used twice counts twice, which biases extraction against duplicating work), in whole
/// picoseconds. A tree cost grows with the uses of every value upstream (a transformer's
/// layer output feeds several products and a residual, so six layers in the costs run to
/// many orders of magnitude), and in f64 the microseconds that tell two alternatives of
/// a late layer apart were lost in the sum: integers keep every picosecond (saturating
/// at `u128::MAX`, 3e26 seconds).
pub struct Cost<'a> {
    /// The e-graph whose e-nodes are costed.
    pub egraph: &'a EGraph,
    /// The target's numbers.
    pub roof: Roofline,
    /// Each e-node's own time in picoseconds (`None`: it cannot be extracted), found
    /// once: the extractor costs every e-node again on each of its passes, and typing
    /// one re-parses its attributes (an `Expand`'s target dims, which at run-time dims
    /// grow into long expressions: 90% of a debug build's compile of Swin-T went there).
    own: std::collections::HashMap<Node, Option<u128>>,
}

impl<'a> Cost<'a> {
    /// Costs of `egraph`'s e-nodes under the roofline `roof`.
    pub fn new(egraph: &'a EGraph, roof: Roofline) -> Cost<'a> {
        Cost { egraph, roof, own: Default::default() }
    }
}

impl CostFunction<Node> for Cost<'_> {
    type Cost = u128;

    fn cost<C: FnMut(Id) -> u128>(&mut self, enode: &Node, mut costs: C) -> u128 {
        let Node::Op(_, ch) = enode else { return 0 };
        let own = match self.own.get(enode) {
            Some(own) => *own,
            None => {
                let own = self.own_time(enode);
                self.own.insert(enode.clone(), own);
                own
            }
        };
        match own {
            Some(own) => tree_cost(own, ch.iter().map(|c| costs(*c))),
            None => u128::MAX,
        }
    }
}

/// Seconds in whole picoseconds.
fn picoseconds(s: f64) -> u128 {
    (s * 1e12).round().clamp(0.0, 1e30) as u128
}

/// A kernel of `own` picoseconds over operands of tree costs `children`.
fn tree_cost(own: u128, children: impl IntoIterator<Item = u128>) -> u128 {
    children.into_iter().fold(own, |acc, c| acc.saturating_add(c))
}

impl Cost<'_> {
    /// The roofline time of e-node `enode`'s kernel in picoseconds, or `None` where it
    /// has no type.
    fn own_time(&self, enode: &Node) -> Option<u128> {
        let Node::Op(k, ch) = enode else { return Some(0) };
        let (op, out) = (self.egraph.analysis.ops.get(k)?, self.node_type(enode)?);
        let ins: Option<Vec<&TensorType>> = ch.iter().map(|c| self.egraph[*c].data.ty.as_ref()).collect();
        Some(picoseconds(self.roof.kernel(op, &ins?, &out)))
    }

    /// The type this e-node computes (its class's type, checked by its rule).
    fn node_type(&self, enode: &Node) -> Option<TensorType> {
        let Node::Op(k, ch) = enode else { return None };
        let op = self.egraph.analysis.ops.get(k)?;
        let ins: Option<Vec<TensorType>> = ch.iter().map(|c| self.egraph[*c].data.ty.clone()).collect();
        let mut out = op.infer("egraph", &ins?).ok()?;
        (out.len() == 1).then(|| out.remove(0))
    }
}

#[cfg(test)]
mod tests {
    use super::Roofline;

    /// Two kernels a microsecond apart over the same operands of a deep graph (a tree
    /// cost of 1e12 seconds) still compare as they should; in f64 seconds the sums are
    /// equal.
    #[test]
    fn tree_costs_keep_microseconds_atop_huge_operands() {
        let deep = 1u128 << 100;
        let (a, b) =
            (super::tree_cost(super::picoseconds(2e-6), [deep]), super::tree_cost(super::picoseconds(3e-6), [deep]));
        assert!(a < b && b - a == 1_000_000, "{a} {b}");
        assert_eq!(2e-6 + deep as f64 * 1e-12, 3e-6 + deep as f64 * 1e-12);
        assert_eq!(super::tree_cost(super::picoseconds(1.0), [u128::MAX]), u128::MAX);
    }

    /// A C math library call per element (erf) costs more than dlc's inline GELU over
    /// the same bytes, so extraction prefers a matched `gelu` to the chain through `erf`.
    #[test]
    fn library_calls_cost_more_than_inline_math() {
        use dlc_ir::ops::{Erf, Gelu};
        use dlc_ir::{DType, Op, TensorType};
        let t = TensorType::fixed(DType::F32, &[16, 1536]);
        let r = Roofline::default();
        let erf = r.kernel(&Op::from(Erf {}), &[&t], &t);
        let gelu = r.kernel(&Op::from(Gelu { tanh_approximation: false }), &[&t], &t);
        assert!(erf > 2.0 * gelu, "erf {erf} gelu {gelu}");
    }

    #[test]
    fn rooflines_per_target_and_from_the_command_line() {
        assert_eq!(Roofline::for_target("x86_64-unknown-linux-gnu"), Roofline::default());
        assert!(Roofline::for_target("aarch64-unknown-linux-gnu").flops_per_s < Roofline::default().flops_per_s);
        let r = Roofline::parse("100, 40, 2").unwrap();
        assert_eq!((r.flops_per_s, r.bytes_per_s, r.launch_s), (100e9, 40e9, 2e-6));
        assert!(Roofline::parse("100,40").is_err());
        assert!(Roofline::parse("0,40,1").is_err());
        assert!(Roofline::parse("a,b,c").unwrap_err().contains("'a' is not a number"));
    }
}
