"""TopK against ONNX Runtime: constant and run-time k (one artifact, several k), largest
and smallest, ties (the lower index first), float and integer data, a run-time batch,
the axis first or last, rows in pool tasks (known and run-time rows, run with 2 threads); a run-time k past the axis's extent fails the run naming the
node, as ONNX Runtime's does."""
import subprocess

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from conftest import dlc, dlc_bin, dlc_run, ort_run


def _model(path, dtype, shape, axis, largest, k=None):
    ins = [h.make_tensor_value_info("x", dtype, shape)]
    inits = []
    if k is None:
        ins.append(h.make_tensor_value_info("k", T.INT64, [1]))
    else:
        inits.append(nh.from_array(np.array([k], np.int64), "k"))
    node = h.make_node("TopK", ["x", "k"], ["values", "indices"], axis=axis, largest=largest)
    outs = [h.make_tensor_value_info("values", dtype, None), h.make_tensor_value_info("indices", T.INT64, None)]
    g = h.make_graph([node], "g", ins, outs, initializer=inits)
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), str(path))


CASES = {
    # name: (dtype, shape, axis, largest, constant k or None, feeds' shapes and ks)
    "f32_last_axis_const_k": (T.FLOAT, ["n", 37], -1, 1, 5, [((1, 37), None), ((4, 37), None)]),
    "f32_smallest_runtime_k": (T.FLOAT, [6, 9, 4], 1, 0, None, [((6, 9, 4), 3), ((6, 9, 4), 9), ((6, 9, 4), 0)]),
    "i64_ties_runtime_k": (T.INT64, [5, 12], 1, 1, None, [((5, 12), 4), ((5, 12), 12)]),
    "f32_axis0": (T.FLOAT, [8, 3], 0, 1, 2, [((8, 3), None)]),
    # Enough work for pool tasks of rows (CPU): known rows, then rows of a run-time batch.
    "f32_many_rows_in_tasks": (T.FLOAT, [96, 4096], 1, 1, 12, [((96, 4096), None)]),
    "f32_inner_axis_in_tasks": (T.FLOAT, [3, 2048, 40], 1, 1, 16, [((3, 2048, 40), None)]),
    "f32_run_time_rows_in_tasks": (T.FLOAT, ["n", 4, 30000], 2, 0, 8, [((3, 4, 30000), None), ((1, 4, 30000), None)]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_topk_matches_ort(name, tmp_path):
    dtype, shape, axis, largest, k, runs = CASES[name]
    path = tmp_path / f"{name}.onnx"
    _model(path, dtype, shape, axis, largest, k)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art, "--emit", "so,kir")
    if name.endswith("_in_tasks"):
        kir = (art / "model.kir").read_text()
        topk = kir[kir.index("_topk"):]
        assert " parallel {" in topk[:topk.index("\n}\n")], "TopK rows are not pool tasks"
    rng = np.random.default_rng(0)
    for xs, kk in runs:
        if dtype == T.INT64:
            x = rng.integers(-3, 4, xs).astype(np.int64)  # many ties
        else:
            x = rng.standard_normal(xs).astype(np.float32)
            x.flat[::7] = x.flat[0]  # ties
        feeds = {"x": x}
        if kk is not None:
            feeds["k"] = np.array([kk], np.int64)
        got, want = dlc_run(art, path, feeds, tmp_path), ort_run(path, feeds)
        for o in ("values", "indices"):
            np.testing.assert_array_equal(got[o], want[o], err_msg=f"{name} {o} at {xs}, k={kk}")


def test_runtime_k_past_the_axis_fails(tmp_path):
    path = tmp_path / "topk.onnx"
    _model(path, T.FLOAT, [2, 5], 1, 1)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    np.save(tmp_path / "x.npy", np.zeros((2, 5), np.float32))
    np.save(tmp_path / "k.npy", np.array([6], np.int64))
    p = subprocess.run([dlc_bin(), "run", art, "--input", f"x={tmp_path / 'x.npy'}", "--input",
                        f"k={tmp_path / 'k.npy'}", "-o", tmp_path / "o"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1, p.stderr
    assert "node 'TopK_0" in p.stderr and "outside 0 to the axis's extent" in p.stderr, p.stderr


def test_k_from_runtime_dims(tmp_path):
    """k = min(length, 5) computed from a run-time dim (Shape, Gather, ReduceMin over
    a Concat with a constant, as detection post-processing writes it): one artifact,
    lengths below and above 5."""
    x = h.make_tensor_value_info("x", T.FLOAT, [2, "n"])
    c = lambda name, v: nh.from_array(np.array(v, np.int64), name)  # noqa: E731
    nodes = [
        h.make_node("Shape", ["x"], ["s"]),
        h.make_node("Gather", ["s", "one"], ["n"], axis=0),
        h.make_node("Unsqueeze", ["n", "zero"], ["n1"]),
        h.make_node("Concat", ["n1", "five"], ["cands"], axis=0),
        h.make_node("ReduceMin", ["cands"], ["k"], keepdims=1),
        h.make_node("TopK", ["x", "k"], ["values", "indices"], axis=1),
    ]
    outs = [h.make_tensor_value_info("values", T.FLOAT, None), h.make_tensor_value_info("indices", T.INT64, None)]
    g = h.make_graph(nodes, "g", [x], outs, initializer=[c("one", 1), c("zero", [0]), c("five", [5])])
    path = tmp_path / "k_dims.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), str(path))
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    for n in (3, 9):
        feeds = {"x": np.random.default_rng(n).standard_normal((2, n)).astype(np.float32)}
        got, want = dlc_run(art, path, feeds, tmp_path), ort_run(path, feeds)
        for o in ("values", "indices"):
            np.testing.assert_array_equal(got[o], want[o], err_msg=f"{o} at n={n}")
