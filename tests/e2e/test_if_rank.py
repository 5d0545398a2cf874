"""An If on a run-time condition whose branches give `f32[]` and `f32[1]` (ONNX's
AffineGrid function body: `step = If(D == 1, 0.0, 2 / (D - 1))` with `D` a 1-element
slice of the size input): the rank of the result is the run's. dlc types it at the
higher rank and takes it where the result is the same either way (elementwise ops
against an operand of the full rank, CastLike's type input), against ONNX Runtime both
ways; anything else (a model output, Shape, Reshape, a Loop body output) is refused
naming the value."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

from conftest import assert_close, dlc, dlc_run, ort_run


def _c(name, a):
    return h.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(a), name + "_v"))


def _model(path, tail, outputs):
    """`step = If(n == 1, 0.0 (f32[]), 2 / (n - 1) (f32[1]))` for an i64[1] input `n`, then
    `tail`."""
    then = h.make_graph([_c("zero", np.array(0.0, np.float32))], "then", [],
                        [h.make_tensor_value_info("zero", T.FLOAT, [])])
    other = h.make_graph([h.make_node("Cast", ["n"], ["nf"], to=T.FLOAT), _c("one_f", np.array(1.0, np.float32)),
                          _c("two_f", np.array(2.0, np.float32)), h.make_node("Sub", ["nf", "one_f"], ["nm1"]),
                          h.make_node("Div", ["two_f", "nm1"], ["q"])],
                         "else", [], [h.make_tensor_value_info("q", T.FLOAT, [1])])
    nodes = [_c("one", np.array([1], np.int64)), h.make_node("Equal", ["n", "one"], ["is1"]),
             h.make_node("Squeeze", ["is1"], ["is1_s"]),
             h.make_node("If", ["is1_s"], ["step"], then_branch=then, else_branch=other, name="pick"), *tail]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("n", T.INT64, [1]),
                                  h.make_tensor_value_info("x", T.FLOAT, [4])], outputs)
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 18)]), str(path))
    return path


def test_elementwise_uses_match_onnx_runtime_both_ways(tmp_path):
    tail = [
        # A range scaled by the step (as AffineGrid does), its type taken by CastLike.
        _c("ramp_i", np.arange(4, dtype=np.int64)),
        h.make_node("CastLike", ["ramp_i", "step"], ["ramp"]),
        h.make_node("Mul", ["ramp", "step"], ["scaled"]),
        # Unary ops and a scalar operand keep the rank open; x (f32[4]) closes it.
        h.make_node("Neg", ["step"], ["neg"]),
        _c("half", np.array(0.5, np.float32)),
        h.make_node("Add", ["neg", "half"], ["shifted"]),
        h.make_node("Mul", ["shifted", "x"], ["y"]),
        h.make_node("Add", ["scaled", "y"], ["out"]),
    ]
    path = _model(tmp_path / "m.onnx", tail, [h.make_tensor_value_info("out", T.FLOAT, [4])])
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    x = np.array([1.0, -2.0, 3.5, 0.25], np.float32)
    for n in (1, 5, 2):
        feeds = {"n": np.array([n], np.int64), "x": x}
        want = ort_run(path, feeds)
        (tmp_path / f"r{n}").mkdir()
        got = dlc_run(art, path, feeds, tmp_path / f"r{n}")
        assert got["out"].shape == want["out"].shape == (4,)
        assert_close(got["out"], want["out"], f"out at n={n}")


@pytest.mark.parametrize("use", ["output", "shape", "scalar_only"])
def test_uses_whose_result_would_differ_are_refused(tmp_path, use):
    if use == "output":
        tail, out, node, what = [], "step", None, "graph output 'step' is f32[1] or of rank 0"
    elif use == "shape":
        tail = [h.make_node("Shape", ["step"], ["s"], name="shape_of")]
        out, node, what = "s", "shape_of", "'step' is f32[1] or of rank 0"
    else:
        # Against a scalar the rank stays the run's: returning it is refused.
        tail = [_c("k", np.array(3.0, np.float32)), h.make_node("Mul", ["step", "k"], ["s"])]
        out, node, what = "s", None, "graph output 's' is f32[1] or of rank 0"
    path = _model(tmp_path / f"{use}.onnx", tail, [h.make_tensor_value_info(out, T.FLOAT, None)])
    p = dlc("compile", path, "-o", tmp_path / "art", check=False)
    assert p.returncode != 0, p.stderr
    assert what in p.stderr, p.stderr
    if node:
        assert f"node '{node}'" in p.stderr, p.stderr


def test_a_loop_does_not_carry_or_scan_it(tmp_path):
    # The If inside a Loop's body, its result a scan output: refused by name.
    m = onnx.load(str(_model(tmp_path / "inner.onnx", [], [h.make_tensor_value_info("step", T.FLOAT, None)])))
    body = h.make_graph(list(m.graph.node) + [h.make_node("Identity", ["c_in"], ["c_out"])], "body",
                        [h.make_tensor_value_info("i", T.INT64, []), h.make_tensor_value_info("c_in", T.BOOL, [])],
                        [h.make_tensor_value_info("c_out", T.BOOL, []), h.make_tensor_value_info("step", T.FLOAT, None)])
    g = h.make_graph([_c("trips", np.array(3, np.int64)),
                      h.make_node("Loop", ["trips", ""], ["steps"], body=body, name="loop")], "g",
                     list(m.graph.input), [h.make_tensor_value_info("steps", T.FLOAT, None)])
    path = tmp_path / "loop.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 18)]), str(path))
    p = dlc("compile", path, "-o", tmp_path / "art", check=False)
    assert p.returncode != 0 and "node 'loop'" in p.stderr, p.stderr
    assert "body output 'step' is f32[1] or of rank 0" in p.stderr, p.stderr
