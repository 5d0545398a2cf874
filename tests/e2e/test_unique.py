"""Unique against ONNX Runtime: flattened and along an axis, sorted and in order of
first occurrence, float and integer data with many repeats, all four results; one
artifact run on data with different numbers of distinct values."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from conftest import dlc, dlc_run, ort_run

CASES = {
    "flat_sorted_f32": (T.FLOAT, [4, 6], None, 1),
    "flat_first_seen_i64": (T.INT64, [30], None, 0),
    "axis0_sorted_f32": (T.FLOAT, [7, 3], 0, 1),
    "axis1_sorted_i64": (T.INT64, [2, 9, 2], 1, 1),
    "axis_last_first_seen_f32": (T.FLOAT, [3, 8], -1, 0),
}
OUTS = ["Y", "indices", "inverse_indices", "counts"]


@pytest.mark.parametrize("name", list(CASES))
def test_unique_matches_ort(name, tmp_path):
    dtype, shape, axis, sorted_ = CASES[name]
    attrs = {"sorted": sorted_} if axis is None else {"sorted": sorted_, "axis": axis}
    node = h.make_node("Unique", ["x"], OUTS, **attrs)
    outs = [h.make_tensor_value_info(o, dtype if o == "Y" else T.INT64, None) for o in OUTS]
    g = h.make_graph([node], "g", [h.make_tensor_value_info("x", dtype, shape)], outs)
    path = tmp_path / f"{name}.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 11)]), str(path))
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    rng = np.random.default_rng(0)
    for levels in (2, 3, 50):
        x = rng.integers(0, levels, shape)
        x = x.astype(np.float32) * 0.5 - 1 if dtype == T.FLOAT else x.astype(np.int64)
        feeds = {"x": x}
        got, want = dlc_run(art, path, feeds, tmp_path), ort_run(path, feeds)
        for o in OUTS:
            np.testing.assert_array_equal(got[o], want[o], err_msg=f"{name} {o} with {levels} levels")
