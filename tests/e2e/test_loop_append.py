"""A Loop whose body grows a carried tensor by Concat (`acc = torch.cat((acc, piece))`
in a scripted PyTorch loop, torchvision's mask paste): the value changes its type every
iteration, so dlc passes it through the loop unchanged and gives the pieces as a scan
output laid end to end after it. Pieces whose dims the body computes from values of the
iteration are checked each iteration against the dims ONNX requires (a run where they
differ fails, as ONNX Runtime's Concat does). Each against ONNX Runtime."""
import numpy as np
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

from conftest import assert_close, dlc, dlc_run, dlc_run_process, ort_run
from test_loop import _const, _save, _vi


@pytest.fixture(scope="module")
def paste(tmp_path_factory):
    """For each of N rows: image[:ends[i]] (rows, clamped to H) times scale[i], stacked
    on an empty [0, H, W] as in torchvision's `_onnx_paste_masks_in_image_loop`. The
    piece's rows are min(ends[i], H), H only as numbers."""
    d = tmp_path_factory.mktemp("paste")
    body = h.make_graph(
        [
            h.make_node("Identity", ["cond_in"], ["cond_out"]),
            _const("at0", np.array([0], np.int64)),
            h.make_node("Gather", ["ends", "i"], ["e"], axis=0),
            h.make_node("Unsqueeze", ["e", "at0"], ["e1"]),
            h.make_node("Slice", ["image", "at0", "e1", "at0"], ["rows"]),
            h.make_node("Gather", ["scale", "i"], ["s"], axis=0),
            h.make_node("Mul", ["rows", "s"], ["scaled"]),
            h.make_node("Unsqueeze", ["scaled", "at0"], ["piece"]),
            h.make_node("Concat", ["acc_in", "piece"], ["acc_out"], axis=0),
        ],
        "body", [_vi("i", T.INT64, []), _vi("cond_in", T.BOOL, []), _vi("acc_in", T.FLOAT)],
        [_vi("cond_out", T.BOOL, []), _vi("acc_out", T.FLOAT)])
    nodes = [
        h.make_node("Shape", ["image"], ["hw"]),
        h.make_node("Shape", ["ends"], ["n1"]),
        _const("zero", np.array([0], np.int64)),
        h.make_node("Concat", ["zero", "hw"], ["empty_shape"], axis=0),
        h.make_node("ConstantOfShape", ["empty_shape"], ["empty"],
                    value=numpy_helper.from_array(np.zeros(1, np.float32), "z")),
        h.make_node("Squeeze", ["n1", "zero"], ["n"]),
        _const("yes", np.array(True)),
        h.make_node("Loop", ["n", "yes", "empty"], ["pasted"], body=body, name="paste"),
    ]
    path = _save(d / "paste.onnx", nodes,
                 [_vi("image", T.FLOAT, ["H", "W"]), _vi("ends", T.INT64, ["N"]), _vi("scale", T.FLOAT, ["N"])],
                 [_vi("pasted", T.FLOAT)])
    art = d / "art"
    dlc("compile", path, "-o", art)
    return path, art


@pytest.mark.parametrize("n,hw", [(3, (5, 4)), (1, (7, 9)), (0, (4, 4)), (6, (2, 3))])
def test_pieces_of_run_time_dims_appended_in_a_loop(paste, n, hw, tmp_path):
    path, art = paste
    rng = np.random.default_rng(n)
    # Ends at or past the image's rows: each piece has all H rows (ONNX Runtime's Concat
    # accepts nothing else).
    feeds = {"image": rng.standard_normal(hw).astype(np.float32),
             "ends": (hw[0] + rng.integers(0, 4, n)).astype(np.int64),
             "scale": rng.standard_normal(n).astype(np.float32)}
    want = ort_run(path, feeds)
    got = dlc_run(art, path, feeds, tmp_path)
    assert got["pasted"].shape == want["pasted"].shape == (n, *hw), (got["pasted"].shape, want["pasted"].shape)
    assert_close(got["pasted"], want["pasted"], f"n={n} hw={hw}")


def test_a_piece_whose_dims_differ_fails_the_run_as_in_onnx_runtime(paste, tmp_path):
    path, art = paste
    feeds = {"image": np.ones((5, 4), np.float32), "ends": np.array([5, 3, 6], np.int64),
             "scale": np.ones(3, np.float32)}
    with pytest.raises(Exception):
        ort_run(path, feeds)
    p = dlc_run_process(art, feeds, tmp_path)
    assert p.returncode == 1, p.stderr
    assert "node 'paste" in p.stderr and "a dim differs from the one it must have" in p.stderr, p.stderr
    assert "panicked" not in p.stderr


@pytest.fixture(scope="module")
def columns(tmp_path_factory):
    """Appends columns [x * i, x * i + 1] (two pieces) along axis 1 to a given [B, K]
    until the iteration number reaches a run-time limit (a condition the body
    computes), at most M times."""
    d = tmp_path_factory.mktemp("columns")
    body = h.make_graph(
        [
            h.make_node("Cast", ["i"], ["fi"], to=T.FLOAT),
            h.make_node("Mul", ["x", "fi"], ["a"]),
            _const("one", np.array(1.0, np.float32)),
            h.make_node("Add", ["a", "one"], ["b"]),
            h.make_node("Concat", ["acc_in", "a", "b"], ["acc_out"], axis=-1),
            _const("onei", np.array(1, np.int64)),
            h.make_node("Add", ["i", "onei"], ["next"]),
            h.make_node("Less", ["next", "limit"], ["cond_out"]),
        ],
        "body", [_vi("i", T.INT64, []), _vi("cond_in", T.BOOL, []), _vi("acc_in", T.FLOAT)],
        [_vi("cond_out", T.BOOL, []), _vi("acc_out", T.FLOAT)])
    nodes = [_const("yes", np.array(True)),
             h.make_node("Loop", ["m", "yes", "acc0"], ["acc"], body=body, name="columns")]
    path = _save(d / "columns.onnx", nodes,
                 [_vi("m", T.INT64, []), _vi("limit", T.INT64, []), _vi("acc0", T.FLOAT, ["B", "K"]),
                  _vi("x", T.FLOAT, ["B", 1])],
                 [_vi("acc", T.FLOAT)])
    art = d / "art"
    dlc("compile", path, "-o", art)
    return path, art


@pytest.mark.parametrize("m,limit,b,k", [(5, 3, 2, 1), (4, 100, 3, 0), (0, 2, 2, 2), (6, 0, 1, 3)])
def test_two_pieces_appended_along_the_last_axis_by_a_loop_that_ends_early(columns, m, limit, b, k, tmp_path):
    path, art = columns
    rng = np.random.default_rng(m * 10 + limit)
    feeds = {"m": np.array(m, np.int64), "limit": np.array(limit, np.int64),
             "acc0": rng.standard_normal((b, k)).astype(np.float32),
             "x": rng.standard_normal((b, 1)).astype(np.float32)}
    want = ort_run(path, feeds)
    got = dlc_run(art, path, feeds, tmp_path)
    assert got["acc"].shape == want["acc"].shape, (got["acc"].shape, want["acc"].shape)
    assert_close(got["acc"], want["acc"], f"m={m} limit={limit}")


def test_rows_appended_by_a_loop_with_no_trip_count(tmp_path):
    """No trip count: the loop runs until its condition (the row's sum passes a limit)
    turns false, appending a row [1, K] each time; a first loop counts the
    iterations so that the rows have their slots."""
    body = h.make_graph(
        [
            h.make_node("Cast", ["i"], ["fi"], to=T.FLOAT),
            h.make_node("Mul", ["x", "fi"], ["row"]),
            h.make_node("Concat", ["acc_in", "row"], ["acc_out"], axis=0),
            h.make_node("ReduceSum", ["row"], ["s"], keepdims=0),
            h.make_node("Less", ["s", "limit"], ["cond_out"]),
        ],
        "body", [_vi("i", T.INT64, []), _vi("cond_in", T.BOOL, []), _vi("acc_in", T.FLOAT)],
        [_vi("cond_out", T.BOOL, []), _vi("acc_out", T.FLOAT)])
    nodes = [_const("yes", np.array(True)),
             h.make_node("Loop", ["", "yes", "acc0"], ["acc"], body=body, name="rows")]
    path = _save(tmp_path / "rows.onnx", nodes,
                 [_vi("limit", T.FLOAT, []), _vi("acc0", T.FLOAT, [1, 3]), _vi("x", T.FLOAT, [1, 3])],
                 [_vi("acc", T.FLOAT)])
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    for limit in [0.5, 10.0, 100.0]:
        feeds = {"limit": np.array(limit, np.float32), "acc0": np.zeros((1, 3), np.float32),
                 "x": np.array([[1.0, 0.5, 0.25]], np.float32)}
        want = ort_run(path, feeds)
        got = dlc_run(art, path, feeds, tmp_path)
        assert got["acc"].shape == want["acc"].shape, (limit, got["acc"].shape, want["acc"].shape)
        assert_close(got["acc"], want["acc"], f"limit={limit}")


def test_a_grown_value_the_body_also_reads_is_unrolled_over_a_constant_trip_count(tmp_path):
    """acc <- Concat(acc, x * sum(acc)): the body reads the value it grows, so it cannot
    run as a loop over pieces; with 4 iterations known when compiling it is unrolled."""
    body = h.make_graph(
        [
            h.make_node("Identity", ["cond_in"], ["cond_out"]),
            h.make_node("ReduceSum", ["acc_in"], ["s"], keepdims=0),
            h.make_node("Mul", ["x", "s"], ["row"]),
            h.make_node("Concat", ["acc_in", "row"], ["acc_out"], axis=0),
        ],
        "body", [_vi("i", T.INT64, []), _vi("cond_in", T.BOOL, []), _vi("acc_in", T.FLOAT)],
        [_vi("cond_out", T.BOOL, []), _vi("acc_out", T.FLOAT)])
    nodes = [_const("yes", np.array(True)), _const("m", np.array(4, np.int64)),
             h.make_node("Loop", ["m", "yes", "acc0"], ["acc"], body=body, name="sums")]
    path = _save(tmp_path / "sums.onnx", nodes, [_vi("acc0", T.FLOAT, [1, 3]), _vi("x", T.FLOAT, [1, 3])],
                 [_vi("acc", T.FLOAT)])
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    feeds = {"acc0": np.array([[0.5, -0.25, 1.0]], np.float32), "x": np.array([[0.3, 0.2, -0.1]], np.float32)}
    want = ort_run(path, feeds)
    got = dlc_run(art, path, feeds, tmp_path)
    assert got["acc"].shape == want["acc"].shape == (5, 3), (got["acc"].shape, want["acc"].shape)
    assert_close(got["acc"], want["acc"], "unrolled")


def test_a_grown_value_the_body_also_reads_is_refused_naming_the_reader(tmp_path):
    """As above over a trip count only the run knows: refused, naming the node that
    reads the value."""
    body = h.make_graph(
        [
            h.make_node("Concat", ["acc_in", "x"], ["acc_out"], axis=0),
            h.make_node("ReduceSum", ["acc_out"], ["s"], keepdims=0),
            h.make_node("Less", ["s", "limit"], ["cond_out"]),
        ],
        "body", [_vi("i", T.INT64, []), _vi("cond_in", T.BOOL, []), _vi("acc_in", T.FLOAT)],
        [_vi("cond_out", T.BOOL, []), _vi("acc_out", T.FLOAT)])
    nodes = [_const("yes", np.array(True)),
             h.make_node("Loop", ["m", "yes", "acc0"], ["acc"], body=body, name="sums")]
    path = _save(tmp_path / "sums.onnx", nodes,
                 [_vi("m", T.INT64, []), _vi("limit", T.FLOAT, []), _vi("acc0", T.FLOAT, [1, 3]),
                  _vi("x", T.FLOAT, [1, 3])],
                 [_vi("acc", T.FLOAT)])
    p = dlc("compile", path, "-o", tmp_path / "art", check=False)
    assert p.returncode == 1, p.stderr
    assert "node 'sums' (Loop)" in p.stderr and "grows by a Concat every iteration" in p.stderr, p.stderr
    assert "ReduceSum" in p.stderr and "panicked" not in p.stderr, p.stderr
