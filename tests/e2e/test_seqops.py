"""ReverseSequence and TensorScatter against ONNX Runtime (lengths and write positions
given at run time, both axis orders, linear and circular writes; a write past the
cache fails the run), and SwiGLU against ONNX's reference evaluator (ONNX Runtime has
no SwiGLU kernel yet)."""
import subprocess

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx.reference import ReferenceEvaluator

from conftest import assert_close, dlc, dlc_bin, dlc_run, ort_run


def _save(path, node, ins, opset):
    g = h.make_graph([node], "g", ins, [h.make_tensor_value_info("y", T.FLOAT, None)])
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", opset)]), str(path))


@pytest.mark.parametrize("batch_axis", [0, 1])
def test_reverse_sequence_matches_ort(batch_axis, tmp_path):
    shape = [5, 7, 3] if batch_axis == 0 else [7, 5, 3]
    ins = [h.make_tensor_value_info("x", T.FLOAT, shape), h.make_tensor_value_info("lens", T.INT64, [5])]
    path = tmp_path / "rs.onnx"
    _save(path, h.make_node("ReverseSequence", ["x", "lens"], ["y"], batch_axis=batch_axis,
                            time_axis=1 - batch_axis), ins, 10)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    rng = np.random.default_rng(batch_axis)
    for lens in ([7, 1, 0, 4, 6], [2, 2, 7, 7, 3]):
        feeds = {"x": rng.standard_normal(shape).astype(np.float32), "lens": np.array(lens, np.int64)}
        assert_close(dlc_run(art, path, feeds, tmp_path)["y"], ort_run(path, feeds)["y"], f"lens {lens}")


@pytest.mark.parametrize("mode", ["linear", "circular"])
def test_tensor_scatter_matches_ort(mode, tmp_path):
    ins = [h.make_tensor_value_info("past", T.FLOAT, [3, 2, 6, 4]), h.make_tensor_value_info("upd", T.FLOAT, [3, 2, 2, 4]),
           h.make_tensor_value_info("w", T.INT64, [3])]
    path = tmp_path / "ts.onnx"
    _save(path, h.make_node("TensorScatter", ["past", "upd", "w"], ["y"], mode=mode), ins, 24)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    rng = np.random.default_rng(0)
    for w in ([0, 3, 4], [5, 1, 2] if mode == "circular" else [4, 0, 1]):
        feeds = {"past": rng.standard_normal((3, 2, 6, 4)).astype(np.float32),
                 "upd": rng.standard_normal((3, 2, 2, 4)).astype(np.float32), "w": np.array(w, np.int64)}
        assert_close(dlc_run(art, path, feeds, tmp_path)["y"], ort_run(path, feeds)["y"], f"{mode} at {w}")
    if mode == "linear":
        # Batch 0 would write rows 5 and 6 of a 6-row cache.
        for name, v in feeds.items():
            np.save(tmp_path / f"{name}.npy", np.array([5, 0, 0], np.int64) if name == "w" else v)
        args = [a for n in feeds for a in ("--input", f"{n}={tmp_path / (n + '.npy')}")]
        p = subprocess.run([dlc_bin(), "run", art, *args, "-o", tmp_path / "bad"], capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 1 and "an index is out of range" in p.stderr, p.stderr


def test_swiglu_matches_onnx_reference(tmp_path):
    ins = [h.make_tensor_value_info("a", T.FLOAT, ["n", 6]), h.make_tensor_value_info("b", T.FLOAT, ["n", 6])]
    path = tmp_path / "swiglu.onnx"
    _save(path, h.make_node("SwiGLU", ["a", "b"], ["y"], alpha=1.702), ins, 28)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    ref = ReferenceEvaluator(str(path))
    for n in (1, 4):
        rng = np.random.default_rng(n)
        feeds = {"a": rng.standard_normal((n, 6)).astype(np.float32), "b": rng.standard_normal((n, 6)).astype(np.float32)}
        for k, v in feeds.items():
            np.save(tmp_path / f"{k}.npy", v)
        dlc("run", art, "--input", f"a={tmp_path / 'a.npy'}", "--input", f"b={tmp_path / 'b.npy'}", "-o", tmp_path / "o")
        assert_close(np.load(tmp_path / "o" / "y.npy"), ref.run(None, feeds)[0], f"n={n}")
