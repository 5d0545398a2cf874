"""Softmax along an axis that is not the last (YOLOv8's distribution-focal head: 16 bins
by 4 sides over the anchors, their count a run-time dim at run-time image sizes), which
dlc runs a vector of inner positions at a time (`norm::softmax_columns`), against ONNX
Runtime: inner extents below, at and above a vector's width, known and run-time."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from conftest import assert_close, dlc, dlc_run, ort_run


@pytest.mark.parametrize("anchors", ["A", 37])
def test_softmax_over_bins_against_onnx_runtime(tmp_path, anchors):
    g = h.make_graph([h.make_node("Softmax", ["x"], ["y"], axis=1)], "g",
                     [h.make_tensor_value_info("x", T.FLOAT, ["N", 16, 4, anchors])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)])
    path = tmp_path / "m.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 13)]), str(path))
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    rng = np.random.default_rng(3)
    sizes = (1, 3, 37, 2100) if anchors == "A" else (37,)
    for a in sizes:
        feeds = {"x": (rng.standard_normal((2, 16, 4, a)) * 4).astype(np.float32)}
        want = ort_run(path, feeds)
        (tmp_path / f"r{a}").mkdir()
        got = dlc_run(art, path, feeds, tmp_path / f"r{a}")
        assert_close(got["y"], want["y"], f"y at {a} anchors")
