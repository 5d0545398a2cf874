"""RoiAlign against ONNX Runtime: both modes and coordinate modes, fixed and adaptive
sampling, a spatial scale, regions partly or wholly outside the image, several images,
and a batch index out of range (the run fails naming the node)."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from conftest import dlc, dlc_run, dlc_run_process, ort_run

N, C, H, W, R = 2, 3, 12, 10, 9


def _model(path, **attrs):
    node = h.make_node("RoiAlign", ["x", "rois", "idx"], ["y"], **attrs)
    ins = [h.make_tensor_value_info("x", T.FLOAT, [N, C, H, W]), h.make_tensor_value_info("rois", T.FLOAT, [R, 4]),
           h.make_tensor_value_info("idx", T.INT64, [R])]
    g = h.make_graph([node], "g", ins, [h.make_tensor_value_info("y", T.FLOAT, None)])
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 16)]), str(path))


def _feeds(rng, scale):
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    xy = rng.uniform(-3, 12, (R, 2)) / scale
    wh = rng.uniform(0.2, 8, (R, 2)) / scale
    rois = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    rois[0] = [20 / scale, 20 / scale, 30 / scale, 30 / scale]  # wholly outside
    rois[1] = [2, 2, 2, 2]  # empty
    return {"x": x, "rois": rois, "idx": rng.integers(0, N, R).astype(np.int64)}


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("ctm", ["half_pixel", "output_half_pixel"])
@pytest.mark.parametrize("ratio,scale", [(0, 1.0), (2, 0.5)])
def test_roialign_matches_ort(mode, ctm, ratio, scale, tmp_path):
    path = tmp_path / "roi.onnx"
    _model(path, mode=mode, coordinate_transformation_mode=ctm, output_height=3, output_width=4,
           sampling_ratio=ratio, spatial_scale=scale)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    rng = np.random.default_rng(ratio + len(ctm))
    for trial in range(2):
        feeds = _feeds(rng, scale)
        got, want = dlc_run(art, path, feeds, tmp_path)["y"], ort_run(path, feeds)["y"]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"trial {trial}")


def test_batch_index_out_of_range_fails_the_run(tmp_path):
    path = tmp_path / "roi.onnx"
    _model(path)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    for bad in (N, -1):
        feeds = _feeds(np.random.default_rng(0), 1.0)
        feeds["idx"][3] = bad
        p = dlc_run_process(art, feeds, tmp_path)
        assert p.returncode != 0 and "RoiAlign" in p.stderr and "panicked" not in p.stderr, p.stderr
