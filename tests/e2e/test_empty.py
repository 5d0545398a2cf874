"""Products with an empty side compile and run (against ONNX Runtime): a MatMul and a
Gemm by constant weights with no columns, and one with no terms. The packed GEMM once
computed its last panel's width as `n - (panels - 1) * nr`, which wraps for n = 0 (a
panic in debug builds, found by the node suite's one-sided inverse DFT)."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from conftest import dlc, dlc_run, ort_run


@pytest.mark.parametrize("op,k,n", [("MatMul", 3, 0), ("Gemm", 3, 0), ("MatMul", 0, 4)])
def test_empty_products(op, k, n, tmp_path):
    w = nh.from_array(np.ones((k, n), np.float32), "w")
    node = h.make_node(op, ["x", "w"], ["y"])
    g = h.make_graph([node], "g", [h.make_tensor_value_info("x", T.FLOAT, [2, k])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)], initializer=[w])
    path = tmp_path / "m.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), str(path))
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    feeds = {"x": np.ones((2, k), np.float32)}
    got, want = dlc_run(art, path, feeds, tmp_path)["y"], ort_run(path, feeds)["y"]
    assert got.shape == want.shape == (2, n)
    np.testing.assert_array_equal(got, want)
