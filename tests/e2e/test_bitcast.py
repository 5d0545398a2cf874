"""BitCast (opset 26) with a run-time batch, as a graph output and feeding an op (it is a
view of its operand's buffer): the result must be numpy's `view` of the input, the
definition of reinterpreting bits."""
import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from conftest import dlc, dlc_run


def test_bitcast_is_numpy_view(tmp_path):
    x = h.make_tensor_value_info("x", T.FLOAT, ["n", 3])
    nodes = [h.make_node("BitCast", ["x"], ["i"], to=T.INT32), h.make_node("Add", ["i", "one"], ["y"])]
    outs = [h.make_tensor_value_info("i", T.INT32, None), h.make_tensor_value_info("y", T.INT32, None)]
    g = h.make_graph(nodes, "g", [x], outs, initializer=[nh.from_array(np.array(1, np.int32), "one")])
    path = tmp_path / "bitcast.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 26)]), str(path))
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    for n in (1, 4):
        xs = np.random.default_rng(n).standard_normal((n, 3)).astype(np.float32)
        xs[0, :] = [np.inf, -0.0, np.nan]
        got = dlc_run(art, path, {"x": xs}, tmp_path)
        np.testing.assert_array_equal(got["i"], xs.view(np.int32))
        np.testing.assert_array_equal(got["y"], xs.view(np.int32) + 1)
