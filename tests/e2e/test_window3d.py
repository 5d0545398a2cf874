"""3-D Conv, MaxPool and AveragePool (built from 2-D kernels over depth slices, see
frontends/onnx/src/ops/window3d.rs) against ONNX Runtime: groups, dilations, strides,
explicit and SAME padding, ceil_mode, count_include_pad, and a run-time batch compiled
once and run at two batch sizes."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from conftest import assert_close, dlc, dlc_run, ort_run

CASES = {
    "conv_groups_dilated": ("Conv", dict(group=2, dilations=[2, 1, 1], strides=[1, 2, 1], pads=[1, 0, 1, 2, 1, 0]),
                            (4, 2, 3, 2, 3)),
    "conv_same_upper": ("Conv", dict(auto_pad="SAME_UPPER", strides=[2, 2, 2]), (3, 4, 3, 3, 3)),
    "conv_no_bias_valid": ("Conv", dict(auto_pad="VALID"), (2, 4, 2, 2, 2)),
    "maxpool_ceil": ("MaxPool", dict(kernel_shape=[3, 2, 2], strides=[2, 2, 2], pads=[1, 0, 1, 1, 1, 0], ceil_mode=1),
                     None),
    "maxpool_dilated": ("MaxPool", dict(kernel_shape=[2, 2, 2], dilations=[2, 1, 2]), None),
    "avgpool_exclude_pad_ceil": ("AveragePool", dict(kernel_shape=[3, 3, 2], strides=[2, 2, 2], pads=[1, 1, 0, 1, 1, 1],
                                                     ceil_mode=1), None),
    "avgpool_include_pad": ("AveragePool", dict(kernel_shape=[2, 3, 3], strides=[1, 2, 2], pads=[1, 1, 1, 0, 1, 1],
                                                count_include_pad=1), None),
    "avgpool_same_lower": ("AveragePool", dict(kernel_shape=[3, 2, 3], auto_pad="SAME_LOWER", strides=[2, 1, 2]), None),
}


def _model(op, attrs, wshape, path):
    x = h.make_tensor_value_info("x", T.FLOAT, ["n", 4, 7, 6, 5])
    y = h.make_tensor_value_info("y", T.FLOAT, None)
    rng = np.random.default_rng(3)
    inits, ins = [], ["x"]
    if wshape:
        inits.append(nh.from_array(rng.standard_normal(wshape).astype(np.float32), "w"))
        ins.append("w")
        if "no_bias" not in path.stem:
            inits.append(nh.from_array(rng.standard_normal(wshape[0]).astype(np.float32), "b"))
            ins.append("b")
    g = h.make_graph([h.make_node(op, ins, ["y"], **attrs)], "g", [x], [y], initializer=inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 19)])
    onnx.save(m, str(path))


@pytest.mark.parametrize("name", list(CASES))
def test_3d_window_matches_ort(name, tmp_path):
    op, attrs, wshape = CASES[name]
    path = tmp_path / f"{name}.onnx"
    _model(op, attrs, wshape, path)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    for batch in (1, 3):
        feeds = {"x": np.random.default_rng(batch).standard_normal((batch, 4, 7, 6, 5)).astype(np.float32)}
        got = dlc_run(art, path, feeds, tmp_path)
        want = ort_run(path, feeds)
        assert_close(got["y"], want["y"], f"{name} at batch {batch}")


@pytest.mark.parametrize("strides,dil,pads,opad,group", [
    ([1, 1, 1], [1, 1, 1], [0, 0, 0, 0, 0, 0], [0, 0, 0], 1),
    ([2, 2, 1], [1, 2, 1], [1, 0, 1, 0, 1, 0], [1, 0, 0], 1),
    ([3, 1, 2], [2, 1, 1], [0, 1, 0, 2, 0, 1], [2, 0, 1], 2),
])
def test_conv_transpose_3d_matches_ort(strides, dil, pads, opad, group, tmp_path):
    """3-D ConvTranspose from the 2-D one per depth tap (ops/nn.rs conv_transpose_3d)."""
    n, ci, co, d, hw, k = 2, 4, 6, 4, 5, (2, 3, 2)
    node = h.make_node("ConvTranspose", ["x", "w", "b"], ["y"], strides=strides, dilations=dil, pads=pads,
                       output_padding=opad, group=group)
    ins = [h.make_tensor_value_info("x", T.FLOAT, [n, ci, d, hw, hw]),
           h.make_tensor_value_info("w", T.FLOAT, [ci, co // group, *k]),
           h.make_tensor_value_info("b", T.FLOAT, [co])]
    g = h.make_graph([node], "g", ins, [h.make_tensor_value_info("y", T.FLOAT, None)])
    path = tmp_path / "ct3.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), str(path))
    rng = np.random.default_rng(sum(strides))
    feeds = {"x": rng.standard_normal((n, ci, d, hw, hw)).astype(np.float32),
             "w": rng.standard_normal((ci, co // group, *k)).astype(np.float32),
             "b": rng.standard_normal(co).astype(np.float32)}
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    got, want = dlc_run(art, path, feeds, tmp_path)["y"], ort_run(path, feeds)["y"]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_lp_pool_3d_matches_ort(tmp_path):
    for p_norm in (2, 3):
        node = h.make_node("LpPool", ["x"], ["y"], kernel_shape=[2, 3, 2], strides=[1, 2, 2], pads=[1, 0, 1, 0, 1, 1],
                           p=p_norm)
        g = h.make_graph([node], "g", [h.make_tensor_value_info("x", T.FLOAT, [2, 3, 5, 7, 6])],
                         [h.make_tensor_value_info("y", T.FLOAT, None)])
        path = tmp_path / f"lp{p_norm}.onnx"
        onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 18)]), str(path))
        art = tmp_path / f"art{p_norm}"
        dlc("compile", path, "-o", art)
        feeds = {"x": np.random.default_rng(p_norm).standard_normal((2, 3, 5, 7, 6)).astype(np.float32)}
        got, want = dlc_run(art, path, feeds, tmp_path)["y"], ort_run(path, feeds)["y"]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=f"p={p_norm}")
