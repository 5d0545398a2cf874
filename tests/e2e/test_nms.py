"""NonMaxSuppression against ONNX Runtime: corner and centre box formats, several
batches and classes, overlapping boxes and tied scores, thresholds and the per-class
maximum given at run time (one artifact, several settings), a constant setting,
absent optional operands, and nearly every box kept (the kept boxes' scratch region
full)."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from conftest import dlc, dlc_run, ort_run

B, C, N = 2, 3, 40


def _boxes(rng, center):
    xy = rng.uniform(0, 10, (B, N, 2)).astype(np.float32)
    wh = rng.uniform(0.5, 4, (B, N, 2)).astype(np.float32)
    if center:
        return np.concatenate([xy, wh], -1)
    corners = np.concatenate([xy[..., ::-1], (xy + wh)[..., ::-1]], -1)  # [y1, x1, y2, x2]
    corners[:, ::5] = corners[:, ::5][..., [2, 3, 0, 1]]  # some corners given the other way round
    return corners


def _model(path, center, runtime, operands=5):
    ins = [h.make_tensor_value_info("boxes", T.FLOAT, [B, N, 4]), h.make_tensor_value_info("scores", T.FLOAT, [B, C, N])]
    names = ["boxes", "scores", "max", "iou", "sthr"][:operands]
    inits = []
    if runtime:
        ins += [h.make_tensor_value_info("max", T.INT64, [1]), h.make_tensor_value_info("iou", T.FLOAT, [1]),
                h.make_tensor_value_info("sthr", T.FLOAT, [1])][:operands - 2]
    else:
        inits += [nh.from_array(np.array([4], np.int64), "max"), nh.from_array(np.array([0.3], np.float32), "iou"),
                  nh.from_array(np.array([0.2], np.float32), "sthr")][:operands - 2]
    node = h.make_node("NonMaxSuppression", names, ["sel"], center_point_box=int(center))
    g = h.make_graph([node], "g", ins, [h.make_tensor_value_info("sel", T.INT64, None)], initializer=inits)
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 11)]), str(path))


@pytest.mark.parametrize("center", [False, True])
@pytest.mark.parametrize("runtime", [False, True])
def test_nms_matches_ort(center, runtime, tmp_path):
    path = tmp_path / "nms.onnx"
    _model(path, center, runtime)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    rng = np.random.default_rng(int(center) * 2 + int(runtime))
    settings = [(4, 0.3, 0.2), (100, 0.5, -1.0), (0, 0.3, 0.0), (3, 0.0, 0.6)] if runtime else [None]
    for s in settings:
        scores = rng.uniform(0, 1, (B, C, N)).astype(np.float32)
        scores[:, :, ::4] = scores[:, :, :1]  # ties
        feeds = {"boxes": _boxes(rng, center), "scores": scores}
        if s:
            feeds.update(max=np.array([s[0]], np.int64), iou=np.array([s[1]], np.float32),
                         sthr=np.array([s[2]], np.float32))
        got, want = dlc_run(art, path, feeds, tmp_path), ort_run(path, feeds)
        np.testing.assert_array_equal(got["sel"], want["sel"], err_msg=f"settings {s}")


@pytest.mark.parametrize("operands", [2, 3, 4])
def test_nms_optional_operands(operands, tmp_path):
    path = tmp_path / "nms.onnx"
    _model(path, False, True, operands)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    rng = np.random.default_rng(operands)
    feeds = {"boxes": _boxes(rng, False), "scores": rng.uniform(0, 1, (B, C, N)).astype(np.float32)}
    if operands > 2:
        feeds["max"] = np.array([5], np.int64)
    if operands > 3:
        feeds["iou"] = np.array([0.4], np.float32)
    got, want = dlc_run(art, path, feeds, tmp_path), ort_run(path, feeds)
    np.testing.assert_array_equal(got["sel"], want["sel"])


def test_many_boxes_of_a_run_time_count(tmp_path, monkeypatch):
    """Thousands of boxes (the kernel heap-sorts them by score first), a run-time box
    count, many ties and a large per-class maximum, against ORT; seven classes on two
    threads (the classes are pool tasks, their rows gathered in order after)."""
    monkeypatch.setenv("DLC_NUM_THREADS", "2")
    ins = [h.make_tensor_value_info("boxes", T.FLOAT, [1, "n", 4]), h.make_tensor_value_info("scores", T.FLOAT, [1, 7, "n"])]
    inits = [nh.from_array(np.array([3000], np.int64), "max"), nh.from_array(np.array([0.4], np.float32), "iou")]
    node = h.make_node("NonMaxSuppression", ["boxes", "scores", "max", "iou"], ["sel"])
    g = h.make_graph([node], "g", ins, [h.make_tensor_value_info("sel", T.INT64, None)], initializer=inits)
    path = tmp_path / "nms.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 11)]), str(path))
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    rng = np.random.default_rng(9)
    for n in (1, 257, 2500):
        xy = rng.uniform(0, 100, (1, n, 2)).astype(np.float32)
        boxes = np.concatenate([xy, xy + rng.uniform(1, 8, (1, n, 2)).astype(np.float32)], -1)
        scores = np.round(rng.uniform(0, 1, (1, 7, n)), 2).astype(np.float32)  # many ties
        feeds = {"boxes": boxes, "scores": scores}
        got, want = dlc_run(art, path, feeds, tmp_path), ort_run(path, feeds)
        np.testing.assert_array_equal(got["sel"], want["sel"], err_msg=f"n={n}")


@pytest.mark.parametrize("center", [0, 1])
def test_nearly_every_box_kept(center, tmp_path):
    """Boxes spread along x (as torchvision's batched NMS offsets classes apart), every
    fifth one a copy of the first: nearly all are kept, so the kept boxes' x extents
    fill their whole scratch region; at run-time box counts of 1 to 300, against ORT."""
    ins = [h.make_tensor_value_info("boxes", T.FLOAT, [1, "n", 4]), h.make_tensor_value_info("scores", T.FLOAT, [1, 2, "n"])]
    inits = [nh.from_array(np.array([1000], np.int64), "max"), nh.from_array(np.array([0.5], np.float32), "iou"),
             nh.from_array(np.array([0.0], np.float32), "sthr")]
    node = h.make_node("NonMaxSuppression", ["boxes", "scores", "max", "iou", "sthr"], ["sel"], center_point_box=center)
    g = h.make_graph([node], "g", ins, [h.make_tensor_value_info("sel", T.INT64, None)], initializer=inits)
    path = tmp_path / "nms.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), str(path))
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    rng = np.random.default_rng(center)
    for n in (1, 7, 300):
        xs = np.arange(n) * 10.0
        if center:
            boxes = np.stack([xs, rng.uniform(0, 100, n), np.full(n, 4.0), np.full(n, 4.0)], 1)
        else:
            boxes = np.stack([rng.uniform(0, 100, n), xs, rng.uniform(0, 100, n) + 0.5, xs + 4], 1)
        boxes[::5] = boxes[0]
        feeds = {"boxes": boxes[None].astype(np.float32), "scores": rng.uniform(0.1, 1, (1, 2, n)).astype(np.float32)}
        work = tmp_path / f"n{n}"
        work.mkdir()
        got, want = dlc_run(art, path, feeds, work)["sel"], ort_run(path, feeds)["sel"]
        assert len(want) > 1.5 * n * 0.8 - 2
        np.testing.assert_array_equal(got, want)
