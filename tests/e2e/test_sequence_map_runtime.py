"""SequenceMap over sequences whose length only the run knows (SplitToSequence of a
run-time dim, with and without keepdims): dlc maps them as a Scan over the stacked
elements, with the body's tensor operands read from outside, and the results go on to
ConcatFromSequence, SequenceAt and SequenceLength. Against ONNX Runtime at several
lengths from one artifact; a sequence of elements of different shapes is refused with
a message that says why."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from conftest import assert_close, dlc, dlc_run, ort_run


def _vi(name, dtype=T.FLOAT, shape=None):
    return h.make_tensor_value_info(name, dtype, shape)


def _model(path, nodes, ins, outs, inits=()):
    g = h.make_graph(nodes, "g", ins, outs, list(inits))
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 18)])
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def _check(tmp_path, path, feeds_at, lengths):
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    for n in lengths:
        feeds = feeds_at(n)
        want = ort_run(path, feeds)
        d = tmp_path / f"n{n}"
        d.mkdir()
        got = dlc_run(art, path, feeds, d)
        for k, w in want.items():
            assert got[k].shape == w.shape, f"{k} at {n}: {got[k].shape} vs {w.shape}"
            assert_close(got[k], w, f"{k} at length {n}")


def test_two_sequences_and_a_tensor_operand(tmp_path):
    # Rows of x and y (N of them, N a run-time dim) mapped with a bias t: e1 * t + e2 and
    # the sum of e1; the first concatenated back, the second stacked, its last element
    # taken, and the sequence's length.
    body = h.make_graph(
        [h.make_node("Mul", ["e1", "bias"], ["m"]), h.make_node("Add", ["m", "e2"], ["o1"]),
         h.make_node("ReduceSum", ["e1"], ["o2"], keepdims=0)],
        "body", [_vi("e1", shape=[5]), _vi("e2", shape=[5]), _vi("bias", shape=[5])],
        [_vi("o1", shape=[5]), _vi("o2", shape=[])])
    nodes = [
        h.make_node("SplitToSequence", ["x"], ["sx"], axis=0, keepdims=0),
        h.make_node("SplitToSequence", ["y"], ["sy"], axis=0, keepdims=0),
        h.make_node("SequenceMap", ["sx", "sy", "t"], ["r1", "r2"], body=body),
        h.make_node("ConcatFromSequence", ["r1"], ["cat"], axis=0, new_axis=1),
        h.make_node("ConcatFromSequence", ["r2"], ["sums"], axis=0, new_axis=1),
        h.make_node("SequenceAt", ["r1", "last"], ["tail"]),
        h.make_node("SequenceLength", ["r2"], ["count"]),
    ]
    path = tmp_path / "m.onnx"
    _model(path, nodes, [_vi("x", shape=["N", 5]), _vi("y", shape=["N", 5]), _vi("t", shape=[5])],
           [_vi("cat", shape=["N", 5]), _vi("sums", shape=["N"]), _vi("tail", shape=[5]),
            _vi("count", T.INT64, [])], [nh.from_array(np.array(-1, np.int64), "last")])
    rng = np.random.default_rng(0)
    _check(tmp_path, path, lambda n: {"x": rng.standard_normal((n, 5)).astype(np.float32),
                                      "y": rng.standard_normal((n, 5)).astype(np.float32),
                                      "t": rng.standard_normal(5).astype(np.float32)}, [1, 2, 9])


def test_keepdims_along_a_middle_axis(tmp_path):
    # Slices of 1 along the run-time axis 1 of [2, W, 3], kept as [2, 1, 3], each
    # transposed to [3, 1, 2] by the body, concatenated along axis 1 back to [3, W, 2].
    body = h.make_graph([h.make_node("Transpose", ["e"], ["o"], perm=[2, 1, 0])], "body",
                        [_vi("e", shape=[2, 1, 3])], [_vi("o", shape=[3, 1, 2])])
    nodes = [h.make_node("SplitToSequence", ["x"], ["s"], axis=1, keepdims=1),
             h.make_node("SequenceMap", ["s"], ["r"], body=body),
             h.make_node("ConcatFromSequence", ["r"], ["y"], axis=1)]
    path = tmp_path / "m.onnx"
    _model(path, nodes, [_vi("x", shape=[2, "W", 3])], [_vi("y", shape=[3, "W", 2])])
    rng = np.random.default_rng(1)
    _check(tmp_path, path, lambda w: {"x": rng.standard_normal((2, w, 3)).astype(np.float32)}, [1, 4, 11])


def test_elements_of_different_shapes_are_refused(tmp_path):
    # Chunks of a run-time size k: the last one is shorter, which only the run knows.
    body = h.make_graph([h.make_node("Neg", ["e"], ["o"])], "body", [_vi("e", shape=["K", 5])],
                        [_vi("o", shape=["K", 5])])
    nodes = [h.make_node("SplitToSequence", ["x", "k"], ["s"], axis=0),
             h.make_node("SequenceMap", ["s"], ["r"], body=body),
             h.make_node("ConcatFromSequence", ["r"], ["y"], axis=0)]
    path = tmp_path / "m.onnx"
    _model(path, nodes, [_vi("x", shape=["N", 5]), _vi("k", T.INT64, [])], [_vi("y", shape=["N", 5])])
    r = dlc("compile", path, "-o", tmp_path / "art", check=False)
    assert r.returncode != 0
    assert "SequenceMap" in r.stderr and "different shapes" in r.stderr, r.stderr
