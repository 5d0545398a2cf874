"""Volumetric GridSample (X [N, C, D, H, W], grid [N, OD, OH, OW, 3]) against ONNX Runtime
for linear and nearest modes in every padding mode and alignment, with grid positions
well outside the volume so each padding rule is exercised; cubic mode (64 taps), which
ONNX Runtime refuses for 5-D inputs, against onnx's reference implementation. Also the
1-D form (X [N, C, W], grid [N, OW, 1]) against the reference."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx.reference import ReferenceEvaluator

from conftest import dlc, dlc_run, ort_run


def _model(path, xshape, gshape, **attrs):
    node = h.make_node("GridSample", ["x", "grid"], ["y"], **attrs)
    ins = [h.make_tensor_value_info("x", T.FLOAT, xshape), h.make_tensor_value_info("grid", T.FLOAT, gshape)]
    g = h.make_graph([node], "g", ins, [h.make_tensor_value_info("y", T.FLOAT, None)])
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 22)]), str(path))
    return onnx.load(str(path))


def _feeds(rng, xshape, gshape):
    # Multiples of 1/64: denormalising is exact in f32, so `nearest` sees the same ties
    # as the reference.
    grid = np.round(rng.uniform(-1.8, 1.8, gshape) * 64) / 64
    return {"x": rng.standard_normal(xshape).astype(np.float32), "grid": grid.astype(np.float32)}


@pytest.mark.parametrize("mode", ["linear", "nearest"])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align", [0, 1])
def test_volumetric_matches_ort(mode, padding, align, tmp_path):
    xs, gs = [2, 3, 4, 5, 6], [2, 3, 2, 4, 3]
    path = tmp_path / "gs.onnx"
    _model(path, xs, gs, mode=mode, padding_mode=padding, align_corners=align)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    feeds = _feeds(np.random.default_rng(len(mode) * 7 + len(padding) + align), xs, gs)
    got, want = dlc_run(art, path, feeds, tmp_path)["y"], ort_run(path, feeds)["y"]
    assert got.shape == (2, 3, 3, 2, 4)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("xs,gs", [([1, 2, 3, 4, 5], [1, 2, 3, 2, 3]), ([2, 2, 7], [2, 5, 1])])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
def test_cubic_and_1d_match_the_reference(xs, gs, padding, tmp_path):
    path = tmp_path / "gs.onnx"
    model = _model(path, xs, gs, mode="cubic", padding_mode=padding, align_corners=0)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    feeds = _feeds(np.random.default_rng(len(padding)), xs, gs)
    got = dlc_run(art, path, feeds, tmp_path)["y"]
    want = ReferenceEvaluator(model).run(None, feeds)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rank", [2, 3])
def test_a_run_time_batch_matches_ort(rank, tmp_path):
    # N a run-time dim (the kernel runs per sample): one artifact at two batch sizes.
    spatial, outs = ([5, 6], [3, 4]) if rank == 2 else ([4, 5, 6], [3, 2, 4])
    path = tmp_path / "gs.onnx"
    _model(path, ["N", 3, *spatial], ["N", *outs, rank], mode="linear", padding_mode="reflection")
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    for n in (1, 3):
        feeds = _feeds(np.random.default_rng(n), [n, 3, *spatial], [n, *outs, rank])
        w = tmp_path / f"n{n}"
        w.mkdir()
        got, want = dlc_run(art, path, feeds, w)["y"], ort_run(path, feeds)["y"]
        assert got.shape == want.shape == (n, 3, *outs)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
