"""DeformConv (2-D) against onnx's reference implementation (ONNX Runtime's CPU provider
is used too where it has the op): random offsets reaching outside the image, groups and
offset groups, strides, dilations, pads, a mask and a bias."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx.reference import ReferenceEvaluator

from conftest import dlc, dlc_run


@pytest.mark.parametrize("group,og,stride,dil,pads,masked", [
    (1, 1, 1, 1, 0, False), (2, 2, 2, 1, 1, True), (1, 3, 1, 2, 2, True), (3, 1, 2, 2, 1, False),
])
def test_deform_conv_matches_the_reference(group, og, stride, dil, pads, masked, tmp_path):
    n, ic, oc, hw, k = 2, 6, 6, 9, 3
    oh = (hw + 2 * pads - dil * (k - 1) - 1) // stride + 1
    names = ["x", "w", "off", "b", "m" if masked else ""]
    ins = [h.make_tensor_value_info("x", T.FLOAT, [n, ic, hw, hw]),
           h.make_tensor_value_info("w", T.FLOAT, [oc, ic // group, k, k]),
           h.make_tensor_value_info("off", T.FLOAT, [n, og * k * k * 2, oh, oh]),
           h.make_tensor_value_info("b", T.FLOAT, [oc])]
    if masked:
        ins.append(h.make_tensor_value_info("m", T.FLOAT, [n, og * k * k, oh, oh]))
    node = h.make_node("DeformConv", names, ["y"], group=group, offset_group=og, strides=[stride] * 2,
                       dilations=[dil] * 2, pads=[pads] * 4)
    g = h.make_graph([node], "g", ins, [h.make_tensor_value_info("y", T.FLOAT, None)])
    path = tmp_path / "dc.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 19)]), str(path))
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    rng = np.random.default_rng(group * 10 + og)
    feeds = {"x": rng.standard_normal((n, ic, hw, hw)).astype(np.float32),
             "w": rng.standard_normal((oc, ic // group, k, k)).astype(np.float32),
             "off": (rng.standard_normal((n, og * k * k * 2, oh, oh)) * 2.5).astype(np.float32),
             "b": rng.standard_normal(oc).astype(np.float32)}
    if masked:
        feeds["m"] = rng.uniform(0, 1, (n, og * k * k, oh, oh)).astype(np.float32)
    got = dlc_run(art, path, feeds, tmp_path)["y"]
    want = ReferenceEvaluator(str(path)).run(None, feeds)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception:  # (no DeformConv kernel in this ONNX Runtime)
        return
    np.testing.assert_allclose(got, sess.run(None, feeds)[0], rtol=1e-4, atol=1e-4)
