"""A detector's post-processing as torchvision exports it, in small: boxes kept by a
TopK whose k is a run-time count (the number of boxes over a threshold, min'd with a
cap), NonMaxSuppression over that run-time number of boxes, an If whose then-branch
gives empty results when nothing was found, and the image's scale as a quotient of
float shape values. Against ONNX Runtime, both ways through the If."""
import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

from conftest import assert_close, dlc, dlc_run, ort_run


def _c(name, a):
    return h.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(a), name + "_v"))


def _model(path):
    then_g = h.make_graph([_c("none_idx", np.zeros(0, np.int64))], "then", [],
                          [h.make_tensor_value_info("none_idx", T.INT64, [0])])
    else_g = h.make_graph(
        [
            # k = min(count over 0.3, 6); the top k boxes, then NMS among them.
            h.make_node("Greater", ["scores", "thr"], ["over"]), h.make_node("Cast", ["over"], ["over_i"], to=T.INT64),
            h.make_node("ReduceSum", ["over_i"], ["n_over"], keepdims=1), h.make_node("Min", ["n_over", "cap"], ["k"]),
            h.make_node("TopK", ["scores", "k"], ["top_s", "top_i"]),
            h.make_node("Gather", ["boxes", "top_i"], ["top_b"], axis=0),
            h.make_node("Unsqueeze", ["top_b", "ax0"], ["nb"]), h.make_node("Unsqueeze", ["top_s", "ax01"], ["ns"]),
            h.make_node("NonMaxSuppression", ["nb", "ns", "max_out", "iou"], ["sel"]),
            h.make_node("Gather", ["sel", "two"], ["sel_i"], axis=1),
            h.make_node("Gather", ["top_i", "sel_i"], ["kept"], axis=0),
        ],
        "else", [], [h.make_tensor_value_info("kept", T.INT64, None)])
    nodes = [
        _c("thr", np.array(0.3, np.float32)), _c("cap", np.array([6], np.int64)), _c("ax0", np.array([0], np.int64)),
        _c("ax01", np.array([0, 1], np.int64)), _c("max_out", np.array([10], np.int64)),
        _c("iou", np.array([0.5], np.float32)), _c("two", np.array(2, np.int64)),
        h.make_node("ReduceMax", ["scores"], ["best"], keepdims=0), h.make_node("Less", ["best", "thr"], ["nothing"]),
        h.make_node("If", ["nothing"], ["idx"], then_branch=then_g, else_branch=else_g, name="found"),
        # The scale from the image's size over a fixed size, as float shape values.
        h.make_node("Shape", ["image"], ["shp"]), _c("i1", np.array(1, np.int64)),
        h.make_node("Gather", ["shp", "i1"], ["hgt"], axis=0), h.make_node("Cast", ["hgt"], ["hf"], to=T.FLOAT),
        _c("base", np.array(320.0, np.float32)), h.make_node("Div", ["hf", "base"], ["scale"]),
        h.make_node("Gather", ["boxes", "idx"], ["picked"], axis=0), h.make_node("Mul", ["picked", "scale"], ["out"]),
    ]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("boxes", T.FLOAT, ["N", 4]),
                                  h.make_tensor_value_info("scores", T.FLOAT, ["N"]),
                                  h.make_tensor_value_info("image", T.FLOAT, [3, "H", "W"])],
                     [h.make_tensor_value_info("out", T.FLOAT, None)])
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 13)]), str(path))
    return path


def test_post_processing_with_run_time_counts_matches_ort(tmp_path):
    path = _model(tmp_path / "post.onnx")
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    rng = np.random.default_rng(5)
    for n, hgt, top in [(40, 240, 0.9), (12, 320, 0.9), (25, 200, 0.2), (7, 480, 0.35)]:
        xy = rng.uniform(0, 200, (n, 2)).astype(np.float32)
        boxes = np.concatenate([xy, xy + rng.uniform(10, 60, (n, 2)).astype(np.float32)], axis=1)
        scores = (rng.random(n) * top).astype(np.float32)
        feeds = {"boxes": boxes, "scores": scores, "image": np.zeros((3, hgt, 64), np.float32)}
        want = ort_run(path, feeds)
        w = tmp_path / f"n{n}"
        w.mkdir()
        got = dlc_run(art, path, feeds, w)
        assert got["out"].shape == want["out"].shape, (n, got["out"].shape, want["out"].shape)
        if want["out"].size:
            assert_close(got["out"], want["out"], f"n={n} height={hgt}")
