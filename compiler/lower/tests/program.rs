//! Whole graphs as kir programs: a model made of ported ops is lowered with its memory
//! plan, its text form round-trips, and the program run in the kir interpreter matches
//! dlc-interp's evaluation of the graph (int8 ops included).
use dlc_kir::{interp, parse, print};
use std::collections::BTreeMap;

fn graph(src: &str) -> dlc_ir::Graph {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.dlc");
    std::fs::write(&path, src).unwrap();
    dlc_dsl::import(&path).unwrap()
}

#[test]
fn a_graph_of_ported_ops_runs_as_one_program() {
    let g = graph(
        "model m(x: f32[2, 3, 4]) -> (y: f32[2, 4, 3], s: f32[2, 4], z: f32[2, 3, 4]) {
  let t = transpose(softmax(x, axis=1), perm=[0, 2, 1])
  let p = pad(t, pads=[0, 0, 1, 0, 0, 1], mode=\"reflect\")
  return t, reduce_sum(p, axes=[2], keepdims=false), x
}
",
    );
    let plan = dlc_passes::plan_memory(&g).unwrap();
    let p = dlc_lower::program::program(&g, &plan, &dlc_lower::Target::with_lanes(8), dlc_lower::program::Family::Cpu)
        .unwrap();
    assert!(p.kernels.len() >= 3, "{}", print::program(&p));
    // The text form reads back to the same program.
    let text = print::program(&p);
    assert_eq!(parse::program(&text).unwrap(), p);
    // The output that is the model's input is copied; the others are computed in place.
    assert!(text.contains("copy %b"), "{text}");
    if std::env::var_os("DLC_PRINT_KIR").is_some() {
        println!("{text}");
    }
    let x: Vec<f32> = (0..24).map(|i| ((i * 7) % 13) as f32 / 5.0 - 1.0).collect();
    let xb: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    let got = interp::run_program(&p, &[xb], &BTreeMap::new()).unwrap();
    let want = dlc_interp::run_graph(&g, &[dlc_ir::TensorData::from_f32(&[2, 3, 4], &x).unwrap()]).unwrap();
    assert_eq!(got.len(), want.len());
    for (k, (g, w)) in got.iter().zip(&want).enumerate() {
        let g: Vec<f32> = g.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        let w = w.to_f32().unwrap();
        assert_eq!(g.len(), w.len(), "output {k}");
        for (a, b) in g.iter().zip(&w) {
            assert!((a - b).abs() <= 1e-5 + 1e-4 * b.abs(), "output {k}: {a} vs {b}");
        }
    }
}

#[test]
fn an_int8_pack_runs_as_part_of_a_program_exactly() {
    let g = graph(
        "model m(x: f32[1, 6, 3, 5]) -> (y: u8[1, 2, 4, 7, 4]) {\n  \
         return quant_pack(relu(x), scale=0.01, zero_point=3, pads=[1, 1, 0, 1])\n}\n",
    );
    let plan = dlc_passes::plan_memory(&g).unwrap();
    let p = dlc_lower::program::program(&g, &plan, &dlc_lower::Target::with_lanes(8), dlc_lower::program::Family::Cpu)
        .unwrap();
    assert_eq!(parse::program(&print::program(&p)).unwrap(), p);
    let x: Vec<f32> = (0..90).map(|i| ((i * 11) % 17) as f32 / 8.0 - 0.5).collect();
    let xb: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    let got = interp::run_program(&p, &[xb], &BTreeMap::new()).unwrap();
    let want = dlc_interp::run_graph(&g, &[dlc_ir::TensorData::from_f32(&[1, 6, 3, 5], &x).unwrap()]).unwrap();
    assert_eq!(got[0], want[0].bytes());
}

/// A graph with an `if` whose branches are graphs of their own: the program has one
/// `if` step holding each branch's calls (no select, nothing of a branch outside it), and
/// run in the kir interpreter gives dlc-interp's results with the condition either way,
/// a branch that passes an outer value through (a copy) and a result read after the `if`
/// included.
#[test]
fn an_if_runs_only_its_taken_branch() {
    use dlc_ir::ops::{Body, Exp, If, Neg, Softmax, Tanh};
    use dlc_ir::{DType, Graph, TensorData, TensorType};
    use std::sync::Arc;
    let f32s = |d: &[u64]| TensorType::fixed(DType::F32, d);
    let mut then = Graph::new("if/then_branch");
    let tx = then.add_input("x", f32s(&[2, 8]));
    let ta = then.add_node("if/then_branch/exp", Exp {}, &[tx]).unwrap()[0];
    let tb = then
        .add_node("if/then_branch/softmax", Softmax { axis: -1, mode: dlc_ir::ops::SoftmaxMode::Softmax }, &[tx])
        .unwrap()[0];
    then.add_output("a", ta);
    then.add_output("b", tb);
    let mut els = Graph::new("if/else_branch");
    let ex = els.add_input("x", f32s(&[2, 8]));
    let ea = els.add_node("if/else_branch/neg", Neg {}, &[ex]).unwrap()[0];
    els.add_output("a", ea);
    els.add_output("b", ex);
    let mut g = Graph::new("m");
    let c = g.add_input("c", TensorType::fixed(DType::Bool, &[1]));
    let x = g.add_input("x", f32s(&[2, 8]));
    let op = If { then: Body(Arc::new(then)), els: Body(Arc::new(els)) };
    let r = g.add_node("if", op, &[c, x]).unwrap();
    let y = g.add_node("after", Tanh {}, &[r[1]]).unwrap()[0];
    g.add_output("a", r[0]);
    g.add_output("y", y);
    dlc_ir::verify(&g).unwrap();
    let plan = dlc_passes::plan_memory(&g).unwrap();
    let p = dlc_lower::program::program(&g, &plan, &dlc_lower::Target::with_lanes(8), dlc_lower::program::Family::Cpu)
        .unwrap();
    let text = print::program(&p);
    assert_eq!(parse::program(&text).unwrap(), p);
    let [dlc_kir::Step::If { then, els, .. }, dlc_kir::Step::Call { label, .. }] = &p.schedule[..] else {
        panic!("one if step, then the node after it:\n{text}")
    };
    assert_eq!(label.as_deref(), Some("after"), "{text}");
    let calls = |s: &[dlc_kir::Step]| s.iter().filter(|s| matches!(s, dlc_kir::Step::Call { .. })).count();
    let copies = |s: &[dlc_kir::Step]| s.iter().filter(|s| matches!(s, dlc_kir::Step::Copy { .. })).count();
    assert_eq!((calls(then), copies(then)), (2, 0), "{text}");
    assert_eq!((calls(els), copies(els)), (1, 1), "{text}");
    let xs: Vec<f32> = (0..16).map(|i| ((i * 5) % 11) as f32 / 4.0 - 1.2).collect();
    let xb: Vec<u8> = xs.iter().flat_map(|v| v.to_le_bytes()).collect();
    for taken in [true, false] {
        let cb = vec![u8::from(taken)];
        let got = interp::run_program(&p, &[cb.clone(), xb.clone()], &BTreeMap::new()).unwrap();
        let ct = TensorData::new(TensorType::fixed(DType::Bool, &[1]), Arc::from(cb)).unwrap();
        let want = dlc_interp::run_graph(&g, &[ct, TensorData::from_f32(&[2, 8], &xs).unwrap()]).unwrap();
        for (k, (gv, w)) in got.iter().zip(&want).enumerate() {
            let gv: Vec<f32> = gv.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
            for (a, b) in gv.iter().zip(&w.to_f32().unwrap()) {
                assert!((a - b).abs() <= 1e-5 + 1e-4 * b.abs(), "taken={taken} output {k}: {a} vs {b}");
            }
        }
    }
}

/// Two convolutions of one shape with different weights: their kernels pack the weights
/// at compile time, so they differ only in those arrays, and the program makes them one
/// code (`share_kernel_code`): equal but for their names, with no constant arrays, the
/// weights in constant buffers each call passes. The program still computes what
/// dlc-interp's evaluation of the graph does.
#[test]
fn layers_of_one_shape_share_their_kernel_code() {
    let g = graph(
        "model m(x: f32[1, 8, 6, 6]) -> (y: f32[1, 8, 6, 6]) {
  param w1: f32[8, 8, 3, 3] = normal(seed=3, std=0.1)
  param b1: f32[8] = zeros()
  param w2: f32[8, 8, 3, 3] = normal(seed=4, std=0.1)
  param b2: f32[8] = constant(value=0.5)
  let h = relu(conv(x, w1, b1, pads=[1, 1, 1, 1]))
  return relu(conv(h, w2, b2, pads=[1, 1, 1, 1]))
}
",
    );
    let plan = dlc_passes::plan_memory(&g).unwrap();
    let p = dlc_lower::program::program(&g, &plan, &dlc_lower::Target::with_lanes(8), dlc_lower::program::Family::Cpu)
        .unwrap();
    let text = print::program(&p);
    assert_eq!(parse::program(&text).unwrap(), p);
    let convs: Vec<&dlc_kir::Kernel> = p.kernels.iter().filter(|k| k.name.contains("conv")).collect();
    assert_eq!(convs.len(), 2, "{text}");
    let (a, b) = (convs[0], convs[1]);
    assert!(a.data.is_empty() && b.data.is_empty(), "the packed weights are buffers now:\n{text}");
    assert_eq!((&a.params, &a.body), (&b.params, &b.body), "{text}");
    // Each call passes its own weights: the calls' extra arguments are different constants.
    let args: Vec<&Vec<u32>> = p
        .schedule
        .iter()
        .filter_map(|s| match s {
            dlc_kir::Step::Call { kernel, args, .. } if p.kernels[*kernel as usize].name.contains("conv") => Some(args),
            _ => None,
        })
        .collect();
    assert_eq!(args.len(), 2);
    let consts = |a: &[u32]| -> Vec<std::sync::Arc<[u8]>> {
        a.iter()
            .filter_map(|&i| match &p.buffers[i as usize].kind {
                dlc_kir::BufKind::Const(d) if !d.is_empty() => Some(d.clone()),
                _ => None,
            })
            .collect()
    };
    let (ca, cb) = (consts(args[0]), consts(args[1]));
    assert!(!ca.is_empty() && ca.len() == cb.len(), "{text}");
    assert_ne!(ca, cb, "{text}");
    let x: Vec<f32> = (0..288).map(|i| ((i * 7) % 19) as f32 / 9.0 - 1.0).collect();
    let xb: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    let got = interp::run_program(&p, &[xb], &BTreeMap::new()).unwrap();
    let want = dlc_interp::run_graph(&g, &[dlc_ir::TensorData::from_f32(&[1, 8, 6, 6], &x).unwrap()]).unwrap();
    let got: Vec<f32> = got[0].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    let want = want[0].to_f32().unwrap();
    assert_eq!(got.len(), want.len());
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() <= 1e-5 + 1e-4 * b.abs(), "{a} vs {b}");
    }
}
