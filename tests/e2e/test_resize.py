"""Resize and Upsample.

- Every Resize/Upsample case of ONNX's node suite, with its scales, sizes and roi made
  constants (the suite feeds them as graph inputs, whose values would decide the result's
  shape at run time): dlc's output matches the suite's expected output, which the ONNX
  reference computes in float64. This covers nearest, linear and cubic, every
  coordinate transformation and nearest mode, antialias, exclude_outside, axes,
  keep_aspect_ratio_policy and tf_crop_and_resize.
- Run-time image dims (the taps computed while the model runs): one artifact per model
  at three shapes against ONNX Runtime, as detection and segmentation heads use it.
- A feature-pyramid Add of an upsampled map and a lateral one: equal only for inputs of
  even size, which a run checks first (a clear error otherwise)."""
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import assert_close, dlc, dlc_run, ort_run


def _suite_cases():
    np.random.seed(0)
    from onnx.backend.test.case import node

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [c for c in node.collect_testcases(None) if c.name.startswith(("test_resize_", "test_upsample_"))]


CASES = _suite_cases()


def test_the_suite_has_the_resize_cases():
    # 39 Resize cases and Upsample's nearest one in onnx 1.2x; a newer onnx adds more.
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_node_suite_case_with_constant_operands_matches_the_onnx_reference(case, tmp_path):
    m = onnx.ModelProto()
    m.CopyFrom(case.model)
    inputs, outputs = case.data_sets[0]
    for i, vi in enumerate(m.graph.input[1:], 1):
        if inputs[i] is not None:
            m.graph.initializer.append(numpy_helper.from_array(np.asarray(inputs[i]), vi.name))
    del m.graph.input[1:]
    path = tmp_path / "model.onnx"
    onnx.save(m, path)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    got = dlc_run(art, path, {m.graph.input[0].name: np.asarray(inputs[0])}, tmp_path)
    want = np.asarray(outputs[0])
    assert_close(got[m.graph.output[0].name], want, case.name)


def _model(path, nodes, inputs, outputs, inits=(), opset=19):
    g = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
                          initializer=list(inits))
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]), path)
    return path


def _floats(name, v):
    return numpy_helper.from_array(np.asarray(v, dtype=np.float32), name)


def _ints(name, v):
    return numpy_helper.from_array(np.asarray(v, dtype=np.int64), name)


@pytest.fixture(scope="module")
def run_time_dims(tmp_path_factory):
    d = tmp_path_factory.mktemp("resize_sym")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])
    ref = helper.make_tensor_value_info("ref", TensorProto.FLOAT, ["N", 3, "R", "S"])
    nodes = [
        # YOLO / DBNet style: nearest, asymmetric, floor, x2.
        helper.make_node("Resize", ["x", "", "s2"], ["up"], mode="nearest",
                         coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
        # Linear to another tensor's size (sizes computed from its Shape).
        helper.make_node("Shape", ["ref"], ["ref_shape"]),
        helper.make_node("Slice", ["ref_shape", "two", "four"], ["hw"]),
        helper.make_node("Resize", ["x", "", "", "hw"], ["to_ref"], mode="linear", axes=[2, 3]),
        # Cubic by a half, antialiased, half_pixel.
        helper.make_node("Resize", ["x", "", "half"], ["down"], mode="cubic", antialias=1),
        # Align corners, x1.5 on the width only.
        helper.make_node("Resize", ["x", "", "s15"], ["wide"], mode="linear",
                         coordinate_transformation_mode="align_corners", axes=[3]),
    ]
    inits = [_floats("s2", [1, 1, 2, 2]), _ints("two", [2]), _ints("four", [4]), _floats("half", [1, 1, 0.5, 0.5]),
             _floats("s15", [1.5])]
    path = _model(d / "model.onnx", nodes, [x, ref], ["up", "to_ref", "down", "wide"], inits)
    art = d / "art"
    dlc("compile", path, "-o", art)
    return path, art


@pytest.mark.parametrize("shape,ref", [((1, 3, 8, 8), (9, 5)), ((2, 3, 5, 12), (16, 16)), ((3, 3, 17, 6), (4, 30))])
def test_run_time_image_dims_match_ort(run_time_dims, shape, ref, tmp_path):
    path, art = run_time_dims
    rng = np.random.RandomState(sum(shape))
    feeds = {"x": rng.randn(*shape).astype(np.float32),
             "ref": rng.randn(shape[0], 3, *ref).astype(np.float32)}
    want = ort_run(path, feeds)
    got = dlc_run(art, path, feeds, tmp_path)
    for k, v in want.items():
        assert_close(got[k], v, f"{shape}: {k}")


def test_a_feature_pyramid_sum_runs_where_its_sizes_agree(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, "H", "W"])
    nodes = [
        helper.make_node("MaxPool", ["x"], ["deep"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Resize", ["deep", "", "s2"], ["up"], mode="nearest",
                         coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
        helper.make_node("Add", ["up", "x"], ["y"]),
    ]
    path = _model(tmp_path / "fpn.onnx", nodes, [x], ["y"], [_floats("s2", [1, 1, 2, 2])], opset=13)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    for shape in [(1, 4, 8, 6), (2, 4, 4, 10)]:
        feeds = {"x": np.random.RandomState(1).randn(*shape).astype(np.float32)}
        assert_close(dlc_run(art, path, feeds, tmp_path)["y"], ort_run(path, feeds)["y"], str(shape))
    # An odd height: the upsampled map has one row less; ONNX Runtime fails too.
    np.save(tmp_path / "odd.npy", np.zeros((1, 4, 7, 6), np.float32))
    p = dlc("run", art, "--input", f"x={tmp_path / 'odd.npy'}", "-o", tmp_path / "odd", check=False)
    assert p.returncode != 0 and "panicked" not in p.stderr, p.stderr
    assert "H" in p.stderr, p.stderr


@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("given", ["scales", "sizes"])
def test_antialias_at_a_run_time_scale_matches_ort(mode, given, tmp_path):
    # The scale (or the sizes) is a graph input: the tables' width is a bound from the
    # input's extent, the taps past each scale's footprint weigh nothing. One artifact,
    # several scales, down to a single output pixel, and an upscale.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 13, 9])
    kind = TensorProto.FLOAT if given == "scales" else TensorProto.INT64
    p = helper.make_tensor_value_info("p", kind, [4])
    ins = ["x", "", "p"] if given == "scales" else ["x", "", "", "p"]
    nodes = [helper.make_node("Resize", ins, ["y"], mode=mode, antialias=1)]
    path = _model(tmp_path / "aa.onnx", nodes, [x, p], ["y"])
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    xv = np.random.RandomState(7).randn(1, 2, 13, 9).astype(np.float32)
    for hw in [(0.5, 0.4), (0.1, 0.25), (0.08, 0.12), (1.5, 0.7)]:
        pv = (np.array([1, 1, *hw], np.float32) if given == "scales"
              else np.array([1, 2, max(1, int(13 * hw[0])), max(1, int(9 * hw[1]))], np.int64))
        feeds = {"x": xv, "p": pv}
        want = ort_run(path, feeds)["y"]
        got = dlc_run(art, path, feeds, tmp_path)["y"]
        assert got.shape == want.shape, (hw, got.shape, want.shape)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=str(hw))
