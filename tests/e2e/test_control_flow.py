"""ONNX If: a condition given at run time runs correctly both ways (both branches are
compiled, each a graph of its own, and only the branch taken runs: the program's
schedule holds each branch's kernel calls inside one `if` step), nested Ifs and branches
that read outer values included; for CUDA, whose schedules have no control flow yet,
both branches run and a select picks the results (simulated); a condition that folds at
compile time leaves only the branch taken in the compiled graph."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import assert_close, dlc, dlc_run, ort_run


def _f(name, a):
    return numpy_helper.from_array(np.asarray(a, dtype=np.float32), name)


def _branch(name, nodes, out, inits=()):
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
                             initializer=list(inits))


def _if(cond, out, then_g, else_g, name):
    return helper.make_node("If", [cond], [out], then_branch=then_g, else_branch=else_g, name=name)


@pytest.fixture(scope="module")
def run_time_if(tmp_path_factory):
    d = tmp_path_factory.mktemp("if")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    c = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    c2 = helper.make_tensor_value_info("c2", TensorProto.BOOL, [1])
    inner = _if("c2", "inner", _branch("inner_then", [helper.make_node("Sigmoid", ["x"], ["it"])], "it"),
                _branch("inner_else", [helper.make_node("Neg", ["x"], ["ie"])], "ie"), "inner_if")
    then_g = _branch("then", [helper.make_node("MatMul", ["x", "w"], ["t0"]), helper.make_node("Relu", ["t0"], ["t"])], "t",
                     [_f("w", np.random.RandomState(0).randn(4, 4))])
    else_g = _branch("else", [inner, helper.make_node("Add", ["inner", "x"], ["e"])], "e")
    g = helper.make_graph([_if("c", "y", then_g, else_g, "outer_if")], "g", [x, c, c2],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path = d / "if.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    art = d / "art"
    dlc("compile", path, "-o", art)
    return path, art


@pytest.mark.parametrize("c,c2", [(True, True), (False, True), (False, False), (True, False)])
def test_a_run_time_condition_takes_either_branch(run_time_if, c, c2, tmp_path):
    path, art = run_time_if
    feeds = {"x": np.random.RandomState(1).randn(3, 4).astype(np.float32), "c": np.array(c), "c2": np.array([c2])}
    want = ort_run(path, feeds)
    got = dlc_run(art, path, feeds, tmp_path)
    assert_close(got["y"], want["y"], f"c={c} c2={c2}")


def test_only_the_taken_branch_runs(run_time_if, tmp_path):
    path, _ = run_time_if
    art = tmp_path / "art"
    dlc("compile", path, "-o", art, "--emit", "ir,kir")
    ir = (art / "model.dlcir").read_text()
    # The outer If and the inner one are `if` nodes with their branches nested; nothing
    # selects between computed branches.
    assert ir.count(" = if(") == 2 and "where" not in ir, ir
    kir = (art / "model.kir").read_text()
    sched = kir[kir.index("schedule {"):]
    lines = [ln.strip() for ln in sched.splitlines()]
    # schedule { if %c { <then: the MatMul+Relu> } else { if %c2 { Sigmoid } else { Neg } Add } }
    assert lines[1].startswith("if %b") and "then_branch/Relu" in lines[2] and lines[3] == "} else {", sched
    assert lines[4].startswith("if %b") and "inner_if/then_branch/Sigmoid" in lines[5], sched
    assert "inner_if/else_branch/Neg" in lines[7] and "else_branch/Add" in lines[9], sched


@pytest.mark.parametrize("c,c2", [(True, True), (False, False)])
def test_a_run_time_condition_on_simulated_cuda(run_time_if, c, c2, tmp_path):
    """CUDA schedules have no `if` step yet: both branches run, a `where` selects."""
    path, _ = run_time_if
    art = tmp_path / "art"
    dlc("compile", path, "-o", art, "--target", "nvptx64-nvidia-cuda", "--input-shape", "x=3x4", "--emit", "ptx,ir")
    ir = (art / "model.dlcir").read_text()
    assert " = if(" not in ir and "where" in ir, ir
    feeds = {"x": np.random.RandomState(1).randn(3, 4).astype(np.float32), "c": np.array(c), "c2": np.array([c2])}
    got = dlc_run(art, path, feeds, tmp_path, ["--simulate"])
    assert_close(got["y"], ort_run(path, feeds)["y"], f"c={c} c2={c2} (simulated CUDA)")


def test_a_condition_known_at_compile_time_leaves_one_branch(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("ReduceProd", ["s"], ["n"], keepdims=0),
        helper.make_node("Greater", ["n", "five"], ["big"]),
        _if("big", "y", _branch("then", [helper.make_node("Exp", ["x"], ["taken_branch_exp"])], "taken_branch_exp"),
            _branch("else", [helper.make_node("Tanh", ["x"], ["other_branch_tanh"])], "other_branch_tanh"), "folded_if"),
    ]
    g = helper.make_graph(nodes, "g", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=[numpy_helper.from_array(np.array(5, np.int64), "five")])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art, "--emit", "ir")
    ir = (art / "model.dlcir").read_text()
    assert "exp(" in ir and "tanh" not in ir and "where" not in ir, ir
    dlc("compile", path, "-o", tmp_path / "run")
    feeds = {"x": np.random.RandomState(2).randn(2, 3).astype(np.float32)}
    assert_close(dlc_run(tmp_path / "run", path, feeds, tmp_path)["y"], ort_run(path, feeds)["y"], "folded")


def test_branches_of_different_shapes_are_refused(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    c = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    then_g = _branch("then", [helper.make_node("Identity", ["x"], ["t"])], "t")
    else_g = _branch("else", [helper.make_node("Transpose", ["x"], ["e"])], "e")
    g = helper.make_graph([_if("c", "y", then_g, else_g, "if")], "g", [x, c],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    p = dlc("compile", path, "-o", tmp_path / "art", check=False)
    assert p.returncode == 1 and "f32[2,3] in then_branch and f32[3,2] in else_branch" in p.stderr, p.stderr
