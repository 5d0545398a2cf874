"""Squeeze over run-time dims, against ONNX Runtime.

Without axes, ONNX's Squeeze drops every dim that is 1, so its result's rank depends on
the dims when the model runs; dlc fixes the rank when compiling (it drops the dims that
are 1 then) and checks when the model runs that no other dim is 1, failing with the
node's name if one is. With axes on a run-time dim, the dim must be 1 when the model
runs (checked then, as ONNX Runtime checks it)."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import assert_close, dlc, dlc_run, dlc_run_process, ort_run


def _model(path, x_shape, axes, out_shape):
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)]
    nodes, inits = [], []
    if axes is not None:
        inits.append(helper.make_tensor("axes", TensorProto.INT64, [len(axes)], axes))
        nodes.append(helper.make_node("Squeeze", ["x", "axes"], ["s"], name="sq"))
    else:
        nodes.append(helper.make_node("Squeeze", ["x"], ["s"], name="sq"))
    # Something after it that reads the squeezed value's dims.
    nodes.append(helper.make_node("Softmax", ["s"], ["y"], axis=-1))
    g = helper.make_graph(nodes, "squeeze", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                          initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(m)
    onnx.save(m, path)
    return path


def test_squeeze_without_axes_keeps_run_time_dims_and_refuses_a_1(tmp_path):
    src = _model(tmp_path / "m.onnx", ["N", 1, 3], None, ["N", 3])
    art = tmp_path / "art"
    dlc("compile", src, "-o", art)
    rng = np.random.RandomState(0)
    for n in (2, 5):
        feeds = {"x": rng.randn(n, 1, 3).astype(np.float32)}
        got = dlc_run(art, src, feeds, tmp_path)
        assert_close(got["y"], ort_run(src, feeds)["y"], f"N={n}")
    # At N = 1, ONNX would drop that dim too (a result of another rank): refused, named.
    feeds = {"x": rng.randn(1, 1, 3).astype(np.float32)}
    assert ort_run(src, feeds)["y"].shape == (3,)
    p = dlc_run_process(art, feeds, tmp_path)
    assert p.returncode == 1, p.stderr
    assert "'sq" in p.stderr and "(Squeeze without axes) a run-time dim is 1" in p.stderr, p.stderr
    assert "panicked" not in p.stderr


@pytest.mark.parametrize("axes", [[1], [-2]])
def test_squeeze_of_a_run_time_dim_checks_it_is_1(tmp_path, axes):
    src = _model(tmp_path / "m.onnx", [2, "M", 4], axes, [2, 4])
    art = tmp_path / "art"
    dlc("compile", src, "-o", art)
    feeds = {"x": np.random.RandomState(1).randn(2, 1, 4).astype(np.float32)}
    got = dlc_run(art, src, feeds, tmp_path)
    assert_close(got["y"], ort_run(src, feeds)["y"], "M=1")
    # M = 3: not squeezable; ONNX Runtime fails too.
    feeds = {"x": np.zeros((2, 3, 4), np.float32)}
    with pytest.raises(Exception):
        ort_run(src, feeds)
    p = dlc_run_process(art, feeds, tmp_path)
    assert p.returncode == 1, p.stderr
    assert "a squeezed dim is not 1" in p.stderr and "panicked" not in p.stderr, p.stderr
