"""A Loop run by the model that appends to a sequence (docs/sequences.md), the pattern
of a scripted PyTorch loop that appends to a list: the trip count (and condition) given
at run time, so the sequence's length is only known then. Elements that differ in shape
from one iteration to the next (`x[:i+1]`) come out padded to a box with their dims
beside them; elements of one shape also concatenate and stack. Each case against ONNX
Runtime: the sequence as a model output, SequenceLength, SequenceAt at run-time
positions (negative ones too, and one out of range failing the run), ConcatFromSequence
both ways, a body that computes its condition, and the errors for what dlc refuses."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

from conftest import assert_close, dlc, dlc_run_process, sanitize


def _vi(name, dtype, shape=None):
    return h.make_tensor_value_info(name, dtype, shape)


def _seq(name, dtype=T.FLOAT):
    return h.make_tensor_sequence_value_info(name, dtype, None)


def _const(name, a):
    return h.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(a), name + "_v"))


def _save(path, nodes, inputs, outputs):
    m = h.make_model(h.make_graph(nodes, "g", inputs, outputs), opset_imports=[h.make_opsetid("", 17)])
    onnx.save(m, str(path))
    return path


def _ort(path, feeds):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def _run(art, path, feeds, tmp_path):
    """`dlc run`; a sequence output read back as the list of its elements (row i of its
    data cut to row i of its shapes, as the manifest says)."""
    out = tmp_path / "out"
    p = dlc_run_process(art, feeds, tmp_path, out)
    assert p.returncode == 0, p.stderr
    manifest = json.loads((art / "manifest.json").read_text())
    padded = {q["name"]: q for q in manifest.get("sequences", []) if q.get("data")}
    res = {}
    for o in onnx.load(str(path)).graph.output:
        if o.name in padded:
            q = padded[o.name]
            data, dims = np.load(out / sanitize(q["data"])), np.load(out / sanitize(q["shapes"]))
            assert dims.shape == (len(data), data.ndim - 1), (data.shape, dims.shape)
            res[o.name] = [data[i][tuple(slice(0, int(k)) if k >= 0 else 0 for k in row)] for i, row in enumerate(dims)]
        else:
            res[o.name] = np.load(out / sanitize(o.name))
    return res


def _same(got, want, what):
    if isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), (what, len(got), len(want))
        for i, (g, w) in enumerate(zip(got, want)):
            assert_close(g, w, f"{what}[{i}]")
    else:
        assert_close(np.asarray(got), np.asarray(want), what)


def _ragged_body(check):
    """Appends x[:i+1] * (i + 1) (rows of the outer x); with `check`, the condition is
    computed: i + 1 < limit."""
    nodes = [
        _const("one", np.array(1, np.int64)),
        _const("zero1", np.array([0], np.int64)),
        _const("ax", np.array([0], np.int64)),
        h.make_node("Add", ["i", "one"], ["i1"]),
        h.make_node("Unsqueeze", ["i1", "ax"], ["end"]),
        h.make_node("Slice", ["x", "zero1", "end", "ax"], ["rows"]),
        h.make_node("Cast", ["i1"], ["f"], to=T.FLOAT),
        h.make_node("Mul", ["rows", "f"], ["elem"]),
        h.make_node("SequenceInsert", ["s_in", "elem"], ["s_out"]),
    ]
    if check:
        nodes.append(h.make_node("Less", ["i1", "limit"], ["c_out"]))
    else:
        nodes.append(h.make_node("Identity", ["c_in"], ["c_out"]))
    return h.make_graph(nodes, "body", [_vi("i", T.INT64, []), _vi("c_in", T.BOOL, []), _seq("s_in")],
                        [_vi("c_out", T.BOOL, []), _seq("s_out")])


def _ragged_model(path, check, first=None):
    """`first`: the sequence starts with an input `a` of that shape (else empty)."""
    start = (h.make_node("SequenceConstruct", ["a"], ["s0"]) if first
             else h.make_node("SequenceEmpty", [], ["s0"], dtype=T.FLOAT))
    nodes = [
        start,
        h.make_node("Loop", ["m", "c", "s0"], ["s"], body=_ragged_body(check), name="grow"),
        h.make_node("SequenceLength", ["s"], ["n"]),
        h.make_node("SequenceAt", ["s", "p"], ["at"]),
    ]
    ins = [_vi("m", T.INT64, []), _vi("c", T.BOOL, []), _vi("x", T.FLOAT, [5, 3]), _vi("p", T.INT64, [])]
    if check:
        ins.append(_vi("limit", T.INT64, []))
    if first:
        ins.append(_vi("a", T.FLOAT, first))
    return _save(path, nodes, ins, [_seq("s"), _vi("n", T.INT64, []), _vi("at", T.FLOAT)])


@pytest.fixture(scope="module", params=[False, True], ids=["for", "while"])
def ragged(request, tmp_path_factory):
    d = tmp_path_factory.mktemp("ragged")
    path = _ragged_model(d / "m.onnx", request.param)
    art = d / "art"
    dlc("compile", path, "-o", art)
    return path, art, request.param


@pytest.mark.parametrize("m,c,p,limit", [(4, True, 2, 9), (4, True, -1, 9), (1, True, 0, 9), (7, True, -7, 9),
                                         (5, True, 4, 3), (3, False, 0, 9), (0, True, 0, 9)])
def test_a_sequence_a_loop_grows_by_elements_of_other_shapes(ragged, m, c, p, limit, tmp_path):
    path, art, check = ragged
    x = np.random.default_rng(m).standard_normal((5, 3)).astype(np.float32)
    feeds = {"m": np.array(m, np.int64), "c": np.array(c), "x": x, "p": np.array(p, np.int64)}
    if check:
        feeds["limit"] = np.array(limit, np.int64)
    runs = 0 if not c else (min(m, limit) if check else m)
    if not -runs <= p < runs:
        # SequenceAt out of range: ONNX Runtime fails too; dlc fails the run naming the node.
        proc = dlc_run_process(art, feeds, tmp_path, tmp_path / "o")
        assert proc.returncode == 1 and "index" in proc.stderr and "panicked" not in proc.stderr, proc.stderr
        with pytest.raises(Exception):
            _ort(path, feeds)
        return
    want = _ort(path, feeds)
    got = _run(art, path, feeds, tmp_path)
    assert len(want["s"]) == runs
    for k in ("s", "n", "at"):
        _same(got[k], want[k], f"{k} at m={m} c={c} p={p}")


def test_the_manifest_and_inspect_say_how_to_read_it(ragged, tmp_path):
    path, art, _ = ragged
    q = [q for q in json.loads((art / "manifest.json").read_text())["sequences"] if q.get("output")]
    assert q == [{"name": "s", "output": True, "elements": [], "data": "s", "shapes": "s.shapes"}], q
    text = dlc("inspect", art).stdout
    assert 'sequence    "s" (output): a length only the run knows' in text, text


@pytest.mark.parametrize("first", [[6, 3], [2, 3], [5, 3]])
def test_a_sequence_that_starts_with_elements(first, tmp_path):
    """The loop's rows padded to the first element's box when it is larger; the first
    element padded to theirs when smaller."""
    path = _ragged_model(tmp_path / "m.onnx", False, first)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    for m, p in ((3, -1), (0, 0), (6, 2)):
        rng = np.random.default_rng(m)
        feeds = {"m": np.array(m, np.int64), "c": np.array(True), "x": rng.standard_normal((5, 3)).astype(np.float32),
                 "p": np.array(p, np.int64), "a": rng.standard_normal(first).astype(np.float32)}
        want = _ort(path, feeds)
        (tmp_path / f"r{m}").mkdir()
        got = _run(art, path, feeds, tmp_path / f"r{m}")
        assert len(want["s"]) == m + 1
        for k in ("s", "n", "at"):
            _same(got[k], want[k], f"{k} at m={m} p={p} first={first}")


def _uniform_model(path, check, first=False):
    """Appends x * i (x [2, 3] outer); outputs the sequence, its stack and its concat.
    `first`: the sequence starts with y0."""
    nodes_b = [
        h.make_node("Cast", ["i"], ["f"], to=T.FLOAT),
        h.make_node("Mul", ["x", "f"], ["elem"]),
        h.make_node("SequenceInsert", ["s_in", "elem"], ["s_out"]),
        h.make_node("Add", ["y_in", "elem"], ["y_out"]),
    ]
    if check:
        nodes_b += [_const("three", np.array(3, np.int64)), h.make_node("Less", ["i", "three"], ["c_out"])]
    else:
        nodes_b.append(h.make_node("Identity", ["c_in"], ["c_out"]))
    body = h.make_graph(nodes_b, "body", [_vi("i", T.INT64, []), _vi("c_in", T.BOOL, []), _seq("s_in"),
                                          _vi("y_in", T.FLOAT, [2, 3])],
                        [_vi("c_out", T.BOOL, []), _seq("s_out"), _vi("y_out", T.FLOAT, [2, 3])])
    nodes = [
        h.make_node("SequenceConstruct", ["y0"], ["s0"]) if first
        else h.make_node("SequenceEmpty", [], ["s0"], dtype=T.FLOAT),
        h.make_node("Loop", ["m", "", "s0", "y0"], ["s", "y"], body=body, name="grow"),
        h.make_node("ConcatFromSequence", ["s"], ["stacked"], axis=1, new_axis=1),
        h.make_node("ConcatFromSequence", ["s"], ["joined"], axis=-1),
        h.make_node("ConcatFromSequence", ["s"], ["rows"], axis=0),
    ]
    return _save(path, nodes, [_vi("m", T.INT64, []), _vi("x", T.FLOAT, [2, 3]), _vi("y0", T.FLOAT, [2, 3])],
                 [_seq("s"), _vi("y", T.FLOAT), _vi("stacked", T.FLOAT), _vi("joined", T.FLOAT),
                  _vi("rows", T.FLOAT)])


@pytest.mark.parametrize("check,first", [(False, False), (True, False), (False, True)],
                         ids=["for", "while", "for-from-y0"])
def test_elements_of_one_shape_stack_and_concatenate(check, first, tmp_path):
    path = _uniform_model(tmp_path / "m.onnx", check, first)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    for m in (4, 1, 6):
        x = np.random.default_rng(m).standard_normal((2, 3)).astype(np.float32)
        feeds = {"m": np.array(m, np.int64), "x": x, "y0": np.ones((2, 3), np.float32)}
        want = _ort(path, feeds)
        (tmp_path / f"r{m}").mkdir()
        got = _run(art, path, feeds, tmp_path / f"r{m}")
        for k in want:
            _same(got[k], want[k], f"{k} at m={m}")


def test_what_dlc_refuses_it_says(tmp_path):
    # The body reads the sequence (its length), not only appends to it.
    body = h.make_graph(
        [h.make_node("SequenceLength", ["s_in"], ["k"]), h.make_node("Cast", ["k"], ["f"], to=T.FLOAT),
         h.make_node("Mul", ["x", "f"], ["e"]), h.make_node("SequenceInsert", ["s_in", "e"], ["s_out"]),
         h.make_node("Identity", ["c_in"], ["c_out"])],
        "body", [_vi("i", T.INT64, []), _vi("c_in", T.BOOL, []), _seq("s_in")],
        [_vi("c_out", T.BOOL, []), _seq("s_out")])
    path = _save(tmp_path / "reads.onnx",
                 [h.make_node("SequenceEmpty", [], ["s0"], dtype=T.FLOAT),
                  h.make_node("Loop", ["m", "", "s0"], ["s"], body=body, name="grow")],
                 [_vi("m", T.INT64, []), _vi("x", T.FLOAT, [2])], [_seq("s")])
    p = dlc("compile", path, "-o", tmp_path / "a", check=False)
    assert p.returncode != 0 and "node 'grow'" in p.stderr, p.stderr
    assert "its body may append to it" in p.stderr and "not take SequenceLength of it" in p.stderr, p.stderr
    # Elements of other shapes do not stack along a new axis.
    path = _ragged_model(tmp_path / "cat.onnx", False)
    m = onnx.load(str(path))
    m.graph.node.append(h.make_node("ConcatFromSequence", ["s"], ["cat"], axis=0, new_axis=1, name="cat"))
    m.graph.output.append(_vi("cat", T.FLOAT))
    onnx.save(m, str(path))
    p = dlc("compile", path, "-o", tmp_path / "b", check=False)
    assert p.returncode != 0 and "node 'cat'" in p.stderr and "differ in shape along dim(s) [0]" in p.stderr, p.stderr


def _detections_model(path):
    """A per-class loop as scripted detection post-processing writes it: for class i,
    the boxes whose score passes a threshold (Compress: a count only the run knows) are
    appended to a list, which is concatenated after the loop; also the columns x[:, :i+1]
    concatenated along axis 1."""
    body = h.make_graph(
        [_const("ax1", np.array([1], np.int64)), _const("zero1", np.array([0], np.int64)),
         _const("one", np.array(1, np.int64)),
         h.make_node("Gather", ["scores", "i"], ["col"], axis=1),
         h.make_node("Greater", ["col", "thr"], ["keep"]),
         h.make_node("Compress", ["boxes", "keep"], ["kept"], axis=0),
         h.make_node("Cast", ["i"], ["fi"], to=T.FLOAT),
         h.make_node("Add", ["kept", "fi"], ["tagged"]),
         h.make_node("SequenceInsert", ["d_in", "tagged"], ["d_out"]),
         h.make_node("Add", ["i", "one"], ["i1"]),
         h.make_node("Unsqueeze", ["i1", "zero1"], ["end"]),
         h.make_node("Slice", ["x", "zero1", "end", "ax1"], ["cols"]),
         h.make_node("SequenceInsert", ["c_in_seq", "cols"], ["c_out_seq"]),
         h.make_node("Identity", ["c_in"], ["c_out"])],
        "body", [_vi("i", T.INT64, []), _vi("c_in", T.BOOL, []), _seq("d_in"), _seq("c_in_seq")],
        [_vi("c_out", T.BOOL, []), _seq("d_out"), _seq("c_out_seq")])
    nodes = [h.make_node("SequenceEmpty", [], ["d0"], dtype=T.FLOAT),
             h.make_node("SequenceEmpty", [], ["c0"], dtype=T.FLOAT),
             h.make_node("Loop", ["m", "", "d0", "c0"], ["d", "c"], body=body, name="classes"),
             h.make_node("ConcatFromSequence", ["d"], ["dets"], axis=0),
             h.make_node("ConcatFromSequence", ["c"], ["cols_joined"], axis=-1)]
    return _save(path, nodes, [_vi("m", T.INT64, []), _vi("boxes", T.FLOAT, ["N", 4]),
                               _vi("scores", T.FLOAT, ["N", 3]), _vi("thr", T.FLOAT, []), _vi("x", T.FLOAT, [2, 5])],
                 [_vi("dets", T.FLOAT), _vi("cols_joined", T.FLOAT)])


def test_elements_that_differ_along_one_dim_concatenate_along_it(tmp_path):
    path = _detections_model(tmp_path / "m.onnx")
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    for n, m, thr in ((6, 3, 0.3), (1, 2, -5.0), (9, 3, 5.0), (5, 0, 0.0), (7, 1, 0.9)):
        rng = np.random.default_rng(n)
        feeds = {"m": np.array(m, np.int64), "boxes": rng.standard_normal((n, 4)).astype(np.float32),
                 "scores": rng.standard_normal((n, 3)).astype(np.float32), "thr": np.array(thr, np.float32),
                 "x": rng.standard_normal((2, 5)).astype(np.float32)}
        try:
            want = _ort(path, feeds)
        except Exception:
            # ONNX Runtime refuses to concatenate an empty sequence (m = 0).
            assert m == 0
            continue
        (tmp_path / f"r{n}{m}").mkdir()
        got = _run(art, path, feeds, tmp_path / f"r{n}{m}")
        for k in want:
            _same(got[k], want[k], f"{k} at N={n} m={m} thr={thr}")


@pytest.fixture(scope="module")
def chunked(tmp_path_factory):
    """SplitToSequence by a size given at run time, along axis 1 of x [N, 6] (N a
    run-time dim), then SequenceAt of a run-time position."""
    d = tmp_path_factory.mktemp("chunks")
    path = _save(d / "m.onnx",
                 [h.make_node("SplitToSequence", ["x", "k"], ["s"], axis=1, name="split"),
                  h.make_node("SequenceAt", ["s", "p"], ["at"]),
                  h.make_node("SequenceLength", ["s"], ["n"])],
                 [_vi("x", T.FLOAT, ["N", 6]), _vi("k", T.INT32, []), _vi("p", T.INT64, [])],
                 [_seq("s"), _vi("at", T.FLOAT), _vi("n", T.INT64, [])])
    art = d / "art"
    dlc("compile", path, "-o", art)
    return path, art


@pytest.mark.parametrize("k,rows,p", [(2, 3, 1), (4, 2, -1), (1, 1, 5), (6, 4, 0), (9, 2, 0), (5, 0, 1)])
def test_chunks_of_a_size_given_at_run_time(chunked, k, rows, p, tmp_path):
    path, art = chunked
    x = np.random.default_rng(k).standard_normal((rows, 6)).astype(np.float32)
    feeds = {"x": x, "k": np.array(k, np.int32), "p": np.array(p, np.int64)}
    want = _ort(path, feeds)
    got = _run(art, path, feeds, tmp_path)
    for key in ("s", "at", "n"):
        _same(got[key], want[key], f"{key} at k={k} N={rows}")


def test_a_chunk_size_below_one_fails_the_run(chunked, tmp_path):
    path, art = chunked
    feeds = {"x": np.ones((2, 6), np.float32), "k": np.array(0, np.int32), "p": np.array(0, np.int64)}
    proc = dlc_run_process(art, feeds, tmp_path, tmp_path / "o")
    assert proc.returncode == 1 and "node 'split" in proc.stderr and "panicked" not in proc.stderr, proc.stderr


def test_run_time_positions_among_elements_of_other_shapes(tmp_path):
    """SequenceInsert, SequenceErase and SequenceAt at positions given at run time over
    elements that differ in shape: which element has which shape is only known when the
    model runs."""
    path = _save(tmp_path / "m.onnx",
                 [h.make_node("SequenceConstruct", ["a", "b", "c"], ["s"]),
                  h.make_node("SequenceInsert", ["s", "x", "p"], ["ins"]),
                  h.make_node("SequenceErase", ["s", "p"], ["era"]),
                  h.make_node("SequenceAt", ["ins", "q"], ["at"])],
                 [_vi("a", T.FLOAT, [4, 2]), _vi("b", T.FLOAT, [1, 2]), _vi("c", T.FLOAT, [3, 3]),
                  _vi("x", T.FLOAT, [2, 5]), _vi("p", T.INT64, []), _vi("q", T.INT64, [])],
                 [_seq("ins"), _seq("era"), _vi("at", T.FLOAT)])
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    rng = np.random.default_rng(0)
    base = {k: rng.standard_normal(s).astype(np.float32)
            for k, s in (("a", (4, 2)), ("b", (1, 2)), ("c", (3, 3)), ("x", (2, 5)))}
    for p, q in ((0, 0), (2, -1), (-1, 3), (1, 1), (-3, 2)):
        feeds = dict(base, p=np.array(p, np.int64), q=np.array(q, np.int64))
        want = _ort(path, feeds)
        (tmp_path / f"r{p}{q}").mkdir()
        got = _run(art, path, feeds, tmp_path / f"r{p}{q}")
        for key in ("ins", "era", "at"):
            _same(got[key], want[key], f"{key} at p={p} q={q}")


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_cumsum_along_run_time_dims(axis, tmp_path):
    """CumSum over x [N, M] (both run-time dims), the axis given at run time too, forward
    and reversed, against ONNX Runtime at several shapes (0 rows included)."""
    path = _save(tmp_path / "m.onnx",
                 [h.make_node("CumSum", ["x", "a"], ["y"]), h.make_node("CumSum", ["x", "a"], ["z"], reverse=1,
                                                                        exclusive=1)],
                 [_vi("x", T.FLOAT, ["N", "M"]), _vi("a", T.INT64, [])], [_vi("y", T.FLOAT), _vi("z", T.FLOAT)])
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    for n, m in ((3, 4), (1, 7), (0, 2), (5, 1)):
        feeds = {"x": np.random.default_rng(n).standard_normal((n, m)).astype(np.float32),
                 "a": np.array(axis, np.int64)}
        want = _ort(path, feeds)
        (tmp_path / f"r{n}{m}").mkdir()
        got = _run(art, path, feeds, tmp_path / f"r{n}{m}")
        for k in ("y", "z"):
            _same(got[k], want[k], f"{k} at {n}x{m} axis {axis}")


@pytest.mark.parametrize("empty", [False, True], ids=["two-or-one", "none-or-one"])
def test_an_if_whose_branches_give_sequences_of_other_lengths(empty, tmp_path):
    """A run-time condition picks a sequence of 2 elements (or none) or of 1: the result's
    length is only known when the model runs."""
    then_nodes = ([h.make_node("SequenceEmpty", [], ["t"], dtype=T.FLOAT)] if empty
                  else [h.make_node("SequenceConstruct", ["a", "b"], ["t"])])
    then_g = h.make_graph(then_nodes, "then", [], [_seq("t")])
    else_g = h.make_graph([h.make_node("SequenceConstruct", ["b"], ["e"])], "else", [], [_seq("e")])
    path = _save(tmp_path / "m.onnx",
                 [h.make_node("If", ["c"], ["s"], then_branch=then_g, else_branch=else_g, name="pick"),
                  h.make_node("SequenceLength", ["s"], ["n"]),
                  h.make_node("ConcatFromSequence", ["s"], ["rows"], axis=0)],
                 [_vi("c", T.BOOL, []), _vi("a", T.FLOAT, [2, 3]), _vi("b", T.FLOAT, [4, 3])],
                 [_seq("s"), _vi("n", T.INT64, []), _vi("rows", T.FLOAT)])
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    rng = np.random.default_rng(3)
    for c in (True, False):
        feeds = {"c": np.array(c), "a": rng.standard_normal((2, 3)).astype(np.float32),
                 "b": rng.standard_normal((4, 3)).astype(np.float32)}
        try:
            want = _ort(path, feeds)
        except Exception:
            assert empty and c  # ONNX Runtime refuses to concatenate an empty sequence
            continue
        (tmp_path / f"r{c}").mkdir()
        got = _run(art, path, feeds, tmp_path / f"r{c}")
        for k in want:
            _same(got[k], want[k], f"{k} at c={c}")


def test_two_appends_per_iteration(tmp_path):
    """The body appends x[:i+1] and then x[i:] (of other shapes): the sequence holds them
    in that order, iteration by iteration."""
    body = h.make_graph(
        [_const("one", np.array(1, np.int64)), _const("zero1", np.array([0], np.int64)),
         _const("big", np.array([100], np.int64)), _const("ax", np.array([0], np.int64)),
         h.make_node("Add", ["i", "one"], ["i1"]),
         h.make_node("Unsqueeze", ["i1", "ax"], ["end"]),
         h.make_node("Unsqueeze", ["i", "ax"], ["start"]),
         h.make_node("Slice", ["x", "zero1", "end", "ax"], ["head"]),
         h.make_node("Slice", ["x", "start", "big", "ax"], ["tail"]),
         h.make_node("SequenceInsert", ["s_in", "head"], ["s_mid"]),
         h.make_node("SequenceInsert", ["s_mid", "tail"], ["s_out"]),
         h.make_node("Identity", ["c_in"], ["c_out"])],
        "body", [_vi("i", T.INT64, []), _vi("c_in", T.BOOL, []), _seq("s_in")],
        [_vi("c_out", T.BOOL, []), _seq("s_out")])
    path = _save(tmp_path / "m.onnx",
                 [h.make_node("SequenceEmpty", [], ["s0"], dtype=T.FLOAT),
                  h.make_node("Loop", ["m", "", "s0"], ["s"], body=body, name="grow"),
                  h.make_node("SequenceLength", ["s"], ["n"])],
                 [_vi("m", T.INT64, []), _vi("x", T.FLOAT, [4, 2])], [_seq("s"), _vi("n", T.INT64, [])])
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    for m in (3, 0, 1, 4):
        feeds = {"m": np.array(m, np.int64), "x": np.random.default_rng(m).standard_normal((4, 2)).astype(np.float32)}
        want = _ort(path, feeds)
        (tmp_path / f"r{m}").mkdir()
        got = _run(art, path, feeds, tmp_path / f"r{m}")
        assert len(want["s"]) == 2 * m
        for k in want:
            _same(got[k], want[k], f"{k} at m={m}")


@pytest.mark.parametrize("rows", [2, 7])
def test_appending_after_the_loop(rows, tmp_path):
    """The grown sequence, then one more element (smaller or larger than the loop's box):
    the list, its length and its rows concatenated."""
    path = _ragged_model(tmp_path / "m.onnx", False)
    m = onnx.load(str(path))
    m.graph.node.extend([h.make_node("SequenceInsert", ["s", "y"], ["t"], name="append"),
                         h.make_node("SequenceLength", ["t"], ["tn"]),
                         h.make_node("ConcatFromSequence", ["t"], ["cat"], axis=0)])
    m.graph.input.append(_vi("y", T.FLOAT, [rows, 3]))
    m.graph.output.extend([_seq("t"), _vi("tn", T.INT64, []), _vi("cat", T.FLOAT)])
    onnx.save(m, str(path))
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    for trips in (3, 0, 5):
        rng = np.random.default_rng(trips)
        feeds = {"m": np.array(trips, np.int64), "c": np.array(True), "p": np.array(0, np.int64),
                 "x": rng.standard_normal((5, 3)).astype(np.float32),
                 "y": rng.standard_normal((rows, 3)).astype(np.float32)}
        if trips == 0:
            feeds["p"] = np.array(0, np.int64)  # SequenceAt of the empty loop result fails in ORT too
            proc = dlc_run_process(art, feeds, tmp_path, tmp_path / "o0")
            assert proc.returncode == 1 and "panicked" not in proc.stderr, proc.stderr
            continue
        want = _ort(path, feeds)
        (tmp_path / f"r{trips}").mkdir()
        got = _run(art, path, feeds, tmp_path / f"r{trips}")
        for k in ("t", "tn", "cat"):
            _same(got[k], want[k], f"{k} at m={trips}")


def _against_ort(art, path, feeds, d, what):
    """Every output of `dlc run` of `art` on `feeds` (in a new folder `d`) against ONNX
    Runtime's."""
    want = _ort(path, feeds)
    d.mkdir()
    got = _run(art, path, feeds, d)
    for name in want:
        _same(got[name], want[name], f"{name} ({what})")


def _seq_none_body():
    """ONNX's loop16_seq_none body: the carried value is an optional sequence; an If on
    its presence starts a sequence with the scalar 0 when it is empty and takes its
    element otherwise, then appends x[:i+1] (x read from outside)."""
    opt = h.make_optional_type_proto(h.make_sequence_type_proto(h.make_tensor_type_proto(T.FLOAT, [])))
    then = h.make_graph([_const("zero", np.array(0.0, np.float32)),
                         h.make_node("SequenceConstruct", ["zero"], ["fresh"])],
                        "then", [], [_seq("fresh")])
    other = h.make_graph([h.make_node("OptionalGetElement", ["o_in"], ["held"])], "else", [], [_seq("held")])
    nodes = [
        h.make_node("Identity", ["c_in"], ["c_out"]),
        h.make_node("OptionalHasElement", ["o_in"], ["has"]),
        h.make_node("Not", ["has"], ["none"]),
        h.make_node("If", ["none"], ["s"], then_branch=then, else_branch=other),
        _const("one", np.array(1, np.int64)),
        _const("zero1", np.array([0], np.int64)),
        _const("ax", np.array([0], np.int64)),
        h.make_node("Add", ["i", "one"], ["end"]),
        h.make_node("Unsqueeze", ["end", "ax"], ["end1"]),
        h.make_node("Slice", ["x", "zero1", "end1"], ["part"]),
        h.make_node("SequenceInsert", ["s", "part"], ["s_out"]),
    ]
    return h.make_graph(nodes, "body",
                        [_vi("i", T.INT64, []), _vi("c_in", T.BOOL, []), h.make_value_info("o_in", opt)],
                        [_vi("c_out", T.BOOL, []), _seq("s_out")])


@pytest.mark.parametrize("start", ["present", "empty"])
def test_an_optional_sequence_carried_through_an_if(tmp_path, start):
    # Present at the start: the If folds (the optional is present in every iteration) and
    # the loop runs as a loop of the model, its trip count given at run time; the first
    # element (a scalar) is of a lower rank than those appended (-1 in its dims row).
    # Empty at the start: the first iteration differs from the rest, so the Loop must
    # unroll (a constant trip count); given at run time, it is refused by name.
    opt = h.make_optional_type_proto(h.make_sequence_type_proto(h.make_tensor_type_proto(T.FLOAT, [])))
    first = [h.make_node("Optional", [], ["o0"], type=opt.optional_type.elem_type)]
    if start == "present":
        first = [h.make_node("SequenceConstruct", ["x0"], ["s0"]), h.make_node("Optional", ["s0"], ["o0"])]
    for trip in ("input", "constant"):
        nodes = list(first)
        if trip == "constant":
            nodes.append(_const("m", np.array(3, np.int64)))
        nodes += [h.make_node("Loop", ["m", "", "o0"], ["s"], body=_seq_none_body(), name="grow"),
                  h.make_node("SequenceLength", ["s"], ["n"])]
        if trip == "constant":
            nodes += [_const("last_at", np.array(-1, np.int64)), h.make_node("SequenceAt", ["s", "last_at"], ["last"])]
        inputs = [_vi("x", T.FLOAT, [5]), _vi("x0", T.FLOAT, [])] + ([_vi("m", T.INT64, [])] if trip == "input" else [])
        outputs = [_vi("n", T.INT64, [])]
        # The whole sequence when it has a length only the run knows; its last element
        # (a vector, or the scalar when nothing was appended) when unrolled.
        outputs.append(_seq("s") if trip == "input" else _vi("last", T.FLOAT, None))
        path = tmp_path / f"{trip}.onnx"
        m = h.make_model(h.make_graph(nodes, "g", inputs, outputs), opset_imports=[h.make_opsetid("", 16)])
        onnx.save(m, str(path))
        art = tmp_path / f"art_{trip}"
        p = dlc("compile", path, "-o", art, check=False)
        if start == "empty" and trip == "input":
            assert p.returncode != 0 and "node 'grow'" in p.stderr, p.stderr
            assert "carried value 'o0' starts as an empty optional" in p.stderr, p.stderr
            continue
        assert p.returncode == 0, p.stderr
        x = np.arange(1, 6, dtype=np.float32)
        for k in ((0, 1, 4, 5) if trip == "input" else (None,)):
            feeds = {"x": x, "x0": np.array(7.5, np.float32)}
            if k is not None:
                feeds["m"] = np.array(k, np.int64)
            _against_ort(art, path, feeds, tmp_path / f"r_{trip}_{k}", f"{trip}, m={k}")
        if start == "present" and trip == "input":
            # Which element is a scalar only the run knows: taking one is refused.
            m.graph.node.extend([_const("at", np.array(0, np.int64)),
                                 h.make_node("SequenceAt", ["s", "at"], ["e0"], name="take")])
            m.graph.output.append(_vi("e0", T.FLOAT, None))
            onnx.save(m, str(path))
            p = dlc("compile", path, "-o", tmp_path / "refused", check=False)
            assert p.returncode != 0 and "node 'take'" in p.stderr, p.stderr
            assert "its elements differ in rank" in p.stderr, p.stderr


@pytest.mark.parametrize("other", ["construct", "empty", "loop_of_pairs"])
def test_an_if_whose_branch_grows_a_sequence(tmp_path, other):
    # then_branch: a Loop over a run-time trip count appends x * i (a length only the run
    # knows); else_branch: two elements of x (a length known when compiling), an empty
    # sequence, or another such Loop appending x[:2] (another box). The If's condition is
    # given at run time; the result against ONNX Runtime both ways.
    def grow(tag, trips, take):
        nodes = [h.make_node("Cast", ["i"], ["fi"], to=T.FLOAT), h.make_node("Mul", ["x", "fi"], ["e"])]
        if take:
            nodes = [_const("z1", np.array([0], np.int64)), _const("t1", np.array([take], np.int64)),
                     h.make_node("Slice", ["x", "z1", "t1"], ["xs"]), h.make_node("Cast", ["i"], ["fi"], to=T.FLOAT),
                     h.make_node("Mul", ["xs", "fi"], ["e"])]
        body = h.make_graph(nodes + [h.make_node("SequenceInsert", ["s_in", "e"], ["s_out"]),
                                     h.make_node("Identity", ["c_in"], ["c_out"])],
                            f"{tag}_body", [_vi("i", T.INT64, []), _vi("c_in", T.BOOL, []), _seq("s_in")],
                            [_vi("c_out", T.BOOL, []), _seq("s_out")])
        return [h.make_node("SequenceEmpty", [], [f"{tag}_s0"], dtype=T.FLOAT),
                h.make_node("Loop", [trips, "", f"{tag}_s0"], [f"{tag}_s"], body=body)]
    then = h.make_graph(grow("a", "m", 0), "then", [], [_seq("a_s")])
    if other == "construct":
        other_nodes, out = [h.make_node("SequenceConstruct", ["x", "x"], ["b_s"])], "b_s"
    elif other == "empty":
        other_nodes, out = [h.make_node("SequenceEmpty", [], ["b_s"], dtype=T.FLOAT)], "b_s"
    else:
        other_nodes, out = grow("b", "k", 2), "b_s"
    else_g = h.make_graph(other_nodes, "else", [], [_seq(out)])
    path = _save(tmp_path / f"{other}.onnx",
                 [h.make_node("If", ["c"], ["s"], then_branch=then, else_branch=else_g, name="pick"),
                  h.make_node("SequenceLength", ["s"], ["n"])],
                 [_vi("c", T.BOOL, []), _vi("m", T.INT64, []), _vi("k", T.INT64, []), _vi("x", T.FLOAT, [3])],
                 [_seq("s"), _vi("n", T.INT64, [])])
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    x = np.array([1.0, -2.0, 0.5], np.float32)
    for c, m, k in ((True, 3, 1), (False, 3, 4), (True, 0, 2), (False, 1, 0)):
        feeds = {"c": np.array(c), "m": np.array(m, np.int64), "k": np.array(k, np.int64), "x": x}
        _against_ort(art, path, feeds, tmp_path / f"r_{c}_{m}_{k}", f"c={c}, m={m}, k={k}")


@pytest.mark.parametrize("ragged", [True, False], ids=["ragged", "one_shape"])
def test_insert_and_erase_at_positions_in_a_grown_sequence(ragged, tmp_path):
    """SequenceInsert at a position and SequenceErase (at a position, and without one:
    the last) on a sequence a Loop grew: its length only the run knows. The positions
    are inputs, negative ones too; one out of range fails the run, as in ONNX Runtime."""
    if ragged:
        path = _ragged_model(tmp_path / "m.onnx", False)
    else:
        body = h.make_graph(
            [h.make_node("Cast", ["i"], ["f"], to=T.FLOAT), h.make_node("Mul", ["x", "f"], ["e"]),
             h.make_node("SequenceInsert", ["s_in", "e"], ["s_out"]), h.make_node("Identity", ["c_in"], ["c_out"])],
            "body", [_vi("i", T.INT64, []), _vi("c_in", T.BOOL, []), _seq("s_in")],
            [_vi("c_out", T.BOOL, []), _seq("s_out")])
        path = _save(tmp_path / "m.onnx",
                     [h.make_node("SequenceEmpty", [], ["s0"], dtype=T.FLOAT),
                      h.make_node("Loop", ["m", "c", "s0"], ["s"], body=body, name="grow")],
                     [_vi("m", T.INT64, []), _vi("c", T.BOOL, []), _vi("x", T.FLOAT, [5, 3])], [_seq("s")])
    m = onnx.load(str(path))
    m.graph.node.extend([h.make_node("SequenceInsert", ["s", "y", "q"], ["ins"], name="insert"),
                         h.make_node("SequenceErase", ["s", "r"], ["era"], name="erase"),
                         h.make_node("SequenceErase", ["ins"], ["popped"], name="pop"),
                         h.make_node("SequenceLength", ["era"], ["era_n"]),
                         h.make_node("SequenceAt", ["ins", "q"], ["inserted"])])
    m.graph.input.extend([_vi("y", T.FLOAT, [2, 3]), _vi("q", T.INT64, []), _vi("r", T.INT64, [])])
    del m.graph.output[:]
    m.graph.output.extend([_seq("ins"), _seq("era"), _seq("popped"), _vi("era_n", T.INT64, []),
                           _vi("inserted", T.FLOAT)])
    onnx.save(m, str(path))
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    rng = np.random.default_rng(3)
    base = {"c": np.array(True), "p": np.array(0, np.int64), "x": rng.standard_normal((5, 3)).astype(np.float32),
            "y": rng.standard_normal((2, 3)).astype(np.float32)}
    if not ragged:
        del base["p"]
    for trips, q, r in ((4, 0, 0), (4, 4, -1), (4, -2, 3), (3, -3, -3), (1, 1, 0), (5, 2, 2)):
        feeds = dict(base, m=np.array(trips, np.int64), q=np.array(q, np.int64), r=np.array(r, np.int64))
        _against_ort(art, path, feeds, tmp_path / f"t{trips}_{q}_{r}", f"m={trips} q={q} r={r}")
    for trips, q, r, node in ((3, 4, 0, "insert"), (3, -4, 0, "insert"), (3, 0, 3, "erase"), (3, 0, -4, "erase"),
                              (0, 0, 0, "erase")):
        feeds = dict(base, m=np.array(trips, np.int64), q=np.array(q, np.int64), r=np.array(r, np.int64))
        with pytest.raises(Exception):
            _ort(path, feeds)
        proc = dlc_run_process(art, feeds, tmp_path, tmp_path / f"bad{trips}_{q}_{r}")
        assert proc.returncode == 1 and "panicked" not in proc.stderr, proc.stderr
        assert f"node '{node}" in proc.stderr, (node, proc.stderr)
        if trips == 0:
            assert "erase from an empty sequence" in proc.stderr, proc.stderr
