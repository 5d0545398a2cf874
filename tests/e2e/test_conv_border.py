"""Convolutions at run-time image dims whose windows reach past the image for many
pixels (DeepLab's ASPP: 3x3 kernels dilated by 12 to 36 over small maps): the
channel-blocked kernel takes the border pixels in whole tiles, each kernel column tested
once per tile (all inside, all outside, or each pixel checked), against ONNX Runtime at
image sizes where a tile is in each of the three cases."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from conftest import assert_close, dlc, dlc_run, ort_run


@pytest.mark.parametrize("dilation,stride", [(1, 1), (2, 1), (12, 1), (36, 1), (5, 2)])
def test_dilated_convolution_at_run_time_dims(tmp_path, dilation, stride):
    rng = np.random.default_rng(dilation * 10 + stride)
    w = (rng.standard_normal((24, 16, 3, 3)) * 0.2).astype(np.float32)
    b = rng.standard_normal(24).astype(np.float32)
    node = h.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[3, 3], dilations=[dilation] * 2,
                       strides=[stride] * 2, pads=[dilation] * 4)
    g = h.make_graph([node, h.make_node("Relu", ["y"], ["z"])], "g",
                     [h.make_tensor_value_info("x", T.FLOAT, ["N", 16, "H", "W"])],
                     [h.make_tensor_value_info("z", T.FLOAT, None)], [nh.from_array(w, "w"), nh.from_array(b, "b")])
    path = tmp_path / "m.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), str(path))
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    for shape in ((1, 16, 28, 28), (2, 16, 5, 7), (1, 16, 13, 40), (1, 16, 9, 75), (1, 16, 6, 13), (1, 16, 3, 47)):
        feeds = {"x": rng.standard_normal(shape).astype(np.float32)}
        want = ort_run(path, feeds)
        d = tmp_path / "x".join(map(str, shape))
        d.mkdir()
        got = dlc_run(art, path, feeds, d)
        assert got["z"].shape == want["z"].shape
        assert_close(got["z"], want["z"], f"z at {shape}")


@pytest.mark.parametrize(
    "kernel,stride,pads",
    [
        (3, 1, (1, 1)),  # YOLO, ResNet 3x3
        (3, 2, (1, 1)),  # downsampling: the right border depends on the width's parity
        (7, 2, (3, 3)),  # ResNet's stem
        (5, 1, (2, 1)),  # asymmetric
        (3, 1, (0, 2)),  # right padding only
        (3, 2, (0, 1)),  # TF-style SAME padding after export
        (5, 3, (2, 2)),  # three residues of the width
        (1, 1, (0, 0)),  # pointwise
    ],
)
def test_border_layout_at_every_width(tmp_path, kernel, stride, pads):
    """Run-time widths lay the row out as a known width would: left border tiles with
    their padding taps left out, the last tiles per residue of the width modulo the
    stride, whole tiles and binary remainders between; a row too short for its border
    tiles runs its border pixels one at a time (each kernel column checked) around the
    same interior tiles. Each width below lands in a different mix of them."""
    rng = np.random.default_rng(kernel * 100 + stride * 10 + sum(pads))
    w = (rng.standard_normal((24, 16, kernel, kernel)) * 0.2).astype(np.float32)
    b = rng.standard_normal(24).astype(np.float32)
    node = h.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[kernel] * 2, strides=[stride] * 2,
                       pads=[pads[0], pads[0], pads[1], pads[1]])
    g = h.make_graph([node], "g", [h.make_tensor_value_info("x", T.FLOAT, [1, 16, "H", "W"])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)], [nh.from_array(w, "w"), nh.from_array(b, "b")])
    path = tmp_path / "m.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), str(path))
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    for width in (1, 2, 3, 5, 6, 7, 8, 11, 12, 13, 17, 19, 20, 23, 29, 40):
        shape = (1, 16, 4, width)
        if (width + sum(pads) - kernel) < 0:
            continue
        feeds = {"x": rng.standard_normal(shape).astype(np.float32)}
        want = ort_run(path, feeds)
        d = tmp_path / f"w{width}"
        d.mkdir()
        got = dlc_run(art, path, feeds, d)
        assert got["y"].shape == want["y"].shape
        assert_close(got["y"], want["y"], f"y at width {width}")
