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
