"""ONNX Scan over a length only the run knows (a symbolic sequence dim): it runs as a loop
of the model (the scanned axis's length its trip count, each step's slices gathered at
the iteration number), not unrolled; scan inputs and outputs in either direction, on any
axis, with a body that reads outer values, at several lengths, against ONNX Runtime."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

from conftest import assert_close, dlc, dlc_run, ort_run


def _vi(name, dtype, shape=None):
    return h.make_tensor_value_info(name, dtype, shape)


@pytest.fixture(scope="module")
def scan_model(tmp_path_factory):
    """s' = s * w + x_t + y_t; outputs: the final s, each step's s' (reversed, on axis
    1) and x_t * 2 (forward, axis 0); x scanned forward along axis 0, y backward along
    axis 1; w read from outside the body."""
    d = tmp_path_factory.mktemp("scan")
    body = h.make_graph([
        h.make_node("Mul", ["s_in", "w"], ["sw"]),
        h.make_node("Add", ["sw", "x_t"], ["sx"]),
        h.make_node("Add", ["sx", "y_t"], ["s_out"]),
        h.make_node("Identity", ["s_out"], ["each"]),
        h.make_node("Add", ["x_t", "x_t"], ["twice"]),
    ], "body", [_vi("s_in", T.FLOAT, [3]), _vi("x_t", T.FLOAT, [3]), _vi("y_t", T.FLOAT, [3])],
        [_vi("s_out", T.FLOAT, [3]), _vi("each", T.FLOAT, [3]), _vi("twice", T.FLOAT, [3])])
    node = h.make_node("Scan", ["s0", "x", "y"], ["s", "each", "twice"], body=body, num_scan_inputs=2,
                       scan_input_axes=[0, 1], scan_input_directions=[0, 1], scan_output_axes=[1, 0],
                       scan_output_directions=[1, 0], name="scan")
    g = h.make_graph([node], "g", [_vi("s0", T.FLOAT, [3]), _vi("x", T.FLOAT, ["T", 3]), _vi("y", T.FLOAT, [3, "T"])],
                     [_vi("s", T.FLOAT), _vi("each", T.FLOAT), _vi("twice", T.FLOAT)],
                     initializer=[numpy_helper.from_array(np.array([0.5, -1.0, 0.25], np.float32), "w")])
    path = d / "scan.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 16)]), str(path))
    art = d / "art"
    dlc("compile", path, "-o", art, "--emit", "so,ir")
    return path, art


def test_a_scan_of_run_time_length_is_a_loop(scan_model):
    _, art = scan_model
    ir = (art / "model.dlcir").read_text()
    assert " = loop(" in ir, ir


@pytest.mark.parametrize("t", [1, 2, 9])
def test_a_scan_of_run_time_length_matches_ort(scan_model, t, tmp_path):
    path, art = scan_model
    rng = np.random.default_rng(t)
    feeds = {"s0": rng.standard_normal(3).astype(np.float32), "x": rng.standard_normal((t, 3)).astype(np.float32),
             "y": rng.standard_normal((3, t)).astype(np.float32)}
    got, want = dlc_run(art, path, feeds, tmp_path), ort_run(path, feeds)
    for k in ("s", "each", "twice"):
        assert got[k].shape == want[k].shape, (k, got[k].shape, want[k].shape)
        assert_close(got[k], want[k], f"{k} at T={t}")
