"""ConvTranspose whose stride equals its kernel (the 2x2 stride-2 upsampling of U-Nets and
DBNet heads), which dlc imports as one matrix product laid out as patches
(`frontends/onnx/src/ops/nn.rs::conv_transpose_patches`), against ONNX Runtime: run-time
batch and image dims, a bias given as a constant or at run time, a non-square kernel,
and the shapes where the general gather kernel takes over (stride below the kernel)."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from conftest import assert_close, dlc, dlc_run, ort_run


@pytest.mark.parametrize("kernel,strides,bias", [
    ((2, 2), (2, 2), "constant"),
    ((2, 3), (2, 3), "input"),
    ((3, 3), (3, 3), None),
    ((3, 3), (2, 2), "constant"),  # overlapping patches: the gather kernel
])
def test_stride_equal_to_kernel_against_onnx_runtime(tmp_path, kernel, strides, bias):
    rng = np.random.default_rng(sum(kernel) + sum(strides))
    w = rng.standard_normal((6, 4) + kernel).astype(np.float32)
    inits, inputs, operands = [nh.from_array(w, "w")], [h.make_tensor_value_info("x", T.FLOAT, ["N", 6, "H", "W"])], ["x", "w"]
    b = rng.standard_normal(4).astype(np.float32)
    if bias == "constant":
        inits.append(nh.from_array(b, "b"))
    elif bias == "input":
        inputs.append(h.make_tensor_value_info("b", T.FLOAT, [4]))
    if bias:
        operands.append("b")
    node = h.make_node("ConvTranspose", operands, ["y"], kernel_shape=list(kernel), strides=list(strides))
    g = h.make_graph([node], "g", inputs, [h.make_tensor_value_info("y", T.FLOAT, None)], inits)
    path = tmp_path / "m.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), str(path))
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    for n, hh, ww in ((1, 5, 7), (2, 3, 4)):
        feeds = {"x": rng.standard_normal((n, 6, hh, ww)).astype(np.float32)}
        if bias == "input":
            feeds["b"] = b
        want = ort_run(path, feeds)
        (tmp_path / f"r{n}").mkdir()
        got = dlc_run(art, path, feeds, tmp_path / f"r{n}")
        assert got["y"].shape == want["y"].shape
        assert_close(got["y"], want["y"], f"y at {(n, 6, hh, ww)}")
