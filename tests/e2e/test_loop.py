"""ONNX Loop: the body is compiled once as a graph of its own and run by a loop step of
the artifact. A trip count given at run time runs any number of iterations (0 included)
with carried values, scan outputs (their length a dim computed at run time) and outer
values the body reads; a body that computes its condition stops when it turns false; a
run-time batch sizes the loop's state; nested loops; each against ONNX Runtime. A loop
over constants folds at compile time."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

from conftest import assert_close, dlc, dlc_run, dlc_run_process, ort_run


def _vi(name, dtype, shape=None):
    return h.make_tensor_value_info(name, dtype, shape)


def _const(name, a):
    return h.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(a), name + "_v"))


def _save(path, nodes, inputs, outputs, opset=17):
    g = h.make_graph(nodes, "g", inputs, outputs)
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", opset)]), str(path))
    return path


def _for_body(scale=0.5):
    """y <- y * scale + x[i % 5] (x read from outside); scan: y; the condition passes through."""
    nodes = [
        h.make_node("Identity", ["cond_in"], ["cond_out"]),
        _const("five", np.array(5, np.int64)),
        _const("scale", np.array(scale, np.float32)),
        h.make_node("Mod", ["i", "five"], ["row"]),
        h.make_node("Gather", ["x", "row"], ["xr"], axis=0),
        h.make_node("Mul", ["y_in", "scale"], ["ys"]),
        h.make_node("Add", ["ys", "xr"], ["y_out"]),
        h.make_node("Identity", ["y_out"], ["scan"]),
    ]
    return h.make_graph(nodes, "body", [_vi("i", T.INT64, []), _vi("cond_in", T.BOOL, []), _vi("y_in", T.FLOAT)],
                        [_vi("cond_out", T.BOOL, []), _vi("y_out", T.FLOAT), _vi("scan", T.FLOAT, [3])])


@pytest.fixture(scope="module")
def for_loop(tmp_path_factory):
    d = tmp_path_factory.mktemp("loop")
    path = _save(d / "for.onnx", [h.make_node("Loop", ["m", "c", "y0"], ["y", "ys"], body=_for_body(), name="for")],
                 [_vi("m", T.INT64, []), _vi("c", T.BOOL, []), _vi("y0", T.FLOAT, [3]), _vi("x", T.FLOAT, [5, 3])],
                 [_vi("y", T.FLOAT), _vi("ys", T.FLOAT)])
    art = d / "art"
    dlc("compile", path, "-o", art)
    return path, art


@pytest.mark.parametrize("m,c", [(4, True), (0, True), (1, True), (7, True), (4, False)])
def test_a_run_time_trip_count_runs_that_many_iterations(for_loop, m, c, tmp_path):
    path, art = for_loop
    rng = np.random.default_rng(m)
    feeds = {"m": np.array(m, np.int64), "c": np.array(c), "y0": rng.standard_normal(3).astype(np.float32),
             "x": rng.standard_normal((5, 3)).astype(np.float32)}
    want = ort_run(path, feeds)
    got = dlc_run(art, path, feeds, tmp_path)
    for k in ("y", "ys"):
        assert got[k].shape == want[k].shape, (k, got[k].shape, want[k].shape)
        assert_close(got[k], want[k], f"{k} at m={m} c={c}")


def test_a_negative_trip_count_fails_the_run_naming_the_loop(for_loop, tmp_path):
    path, art = for_loop
    feeds = {"m": np.array(-2, np.int64), "c": np.array(True), "y0": np.zeros(3, np.float32),
             "x": np.zeros((5, 3), np.float32)}
    p = dlc_run_process(art, feeds, tmp_path, tmp_path / "o")
    assert p.returncode == 1, p.stderr
    assert "node 'for" in p.stderr and "a computed extent is negative" in p.stderr, p.stderr
    assert "panicked" not in p.stderr


def test_the_kir_text_form_keeps_the_loop(for_loop, tmp_path):
    """`--emit kir`, then compiling the .kir file: the same results (a consistency check
    of two dlc artifacts; each is compared with ORT)."""
    path, _ = for_loop
    direct = tmp_path / "direct"
    dlc("compile", path, "-o", direct, "--emit", "so,kir")
    kir = (direct / "model.kir").read_text()
    assert " index %b" in kir and " scan (%b" in kir, kir[-3000:]
    art = tmp_path / "from_kir"
    dlc("compile", direct / "model.kir", "-o", art)
    feeds = {"m": np.array(3, np.int64), "c": np.array(True), "y0": np.ones(3, np.float32),
             "x": np.arange(15, dtype=np.float32).reshape(5, 3)}
    want = ort_run(path, feeds)
    w = tmp_path / "w"
    w.mkdir()
    got = dlc_run(art, path, feeds, w)
    for k in ("y", "ys"):
        assert_close(got[k], want[k], k)


@pytest.fixture(scope="module")
def while_loop(tmp_path_factory):
    """Doubles a vector of a run-time batch until its sum passes a limit (at most 50
    times); counts the iterations in a carried i64."""
    d = tmp_path_factory.mktemp("while")
    body = h.make_graph(
        [
            _const("two", np.array(2, np.float32)),
            _const("one", np.array(1, np.int64)),
            h.make_node("Mul", ["v_in", "two"], ["v_out"]),
            h.make_node("Add", ["n_in", "one"], ["n_out"]),
            h.make_node("ReduceSum", ["v_out"], ["s"], keepdims=0),
            h.make_node("Less", ["s", "limit"], ["cond_out"]),
        ],
        "body", [_vi("i", T.INT64, []), _vi("cond_in", T.BOOL, []), _vi("v_in", T.FLOAT), _vi("n_in", T.INT64)],
        [_vi("cond_out", T.BOOL, []), _vi("v_out", T.FLOAT), _vi("n_out", T.INT64)])
    nodes = [_const("max", np.array(50, np.int64)),
             h.make_node("Loop", ["max", "c", "v0", "n0"], ["v", "n"], body=body, name="while")]
    path = _save(d / "while.onnx", nodes,
                 [_vi("c", T.BOOL, []), _vi("v0", T.FLOAT, ["B"]), _vi("n0", T.INT64, []), _vi("limit", T.FLOAT, [])],
                 [_vi("v", T.FLOAT), _vi("n", T.INT64)])
    art = d / "art"
    dlc("compile", path, "-o", art)
    return path, art


@pytest.mark.parametrize("batch,limit,c", [(3, 100.0, True), (1, 5.0, True), (6, 1e30, True), (4, 100.0, False)])
def test_a_condition_the_body_computes_ends_the_loop(while_loop, batch, limit, c, tmp_path):
    path, art = while_loop
    feeds = {"c": np.array(c), "v0": np.linspace(0.5, 1.5, batch).astype(np.float32),
             "n0": np.array(0, np.int64), "limit": np.array(limit, np.float32)}
    want = ort_run(path, feeds)
    got = dlc_run(art, path, feeds, tmp_path)
    assert int(got["n"]) == int(want["n"]), (got["n"], want["n"])
    assert_close(got["v"], want["v"], f"v at batch={batch} limit={limit} c={c}")


def test_nested_loops_with_a_run_time_batch(tmp_path):
    """An outer loop of m iterations whose body runs an inner loop of k iterations over a
    state of a run-time batch; the outer one scans the inner one's result."""
    inner = h.make_graph(
        [h.make_node("Identity", ["ci"], ["co"]), h.make_node("Cast", ["j"], ["jf"], to=T.FLOAT),
         h.make_node("Add", ["z_in", "jf"], ["z1"]), h.make_node("Mul", ["z1", "w"], ["z_out"])],
        "inner", [_vi("j", T.INT64, []), _vi("ci", T.BOOL, []), _vi("z_in", T.FLOAT)],
        [_vi("co", T.BOOL, []), _vi("z_out", T.FLOAT)])
    outer = h.make_graph(
        [h.make_node("Identity", ["c_in"], ["c_out"]),
         h.make_node("Loop", ["k", "", "s_in"], ["s_mid"], body=inner, name="inner_loop"),
         h.make_node("Tanh", ["s_mid"], ["s_out"]), h.make_node("Identity", ["s_out"], ["scan"])],
        "outer", [_vi("i", T.INT64, []), _vi("c_in", T.BOOL, []), _vi("s_in", T.FLOAT)],
        [_vi("c_out", T.BOOL, []), _vi("s_out", T.FLOAT), _vi("scan", T.FLOAT)])
    path = _save(tmp_path / "nested.onnx", [h.make_node("Loop", ["m", "", "s0"], ["s", "scans"], body=outer, name="outer_loop")],
                 [_vi("m", T.INT64, []), _vi("k", T.INT64, []), _vi("s0", T.FLOAT, ["B", 4]), _vi("w", T.FLOAT, [4])],
                 [_vi("s", T.FLOAT), _vi("scans", T.FLOAT)])
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    rng = np.random.default_rng(3)
    for m, k, b in [(3, 2, 2), (0, 4, 1), (2, 0, 5), (5, 3, 3)]:
        feeds = {"m": np.array(m, np.int64), "k": np.array(k, np.int64),
                 "s0": rng.standard_normal((b, 4)).astype(np.float32), "w": rng.uniform(0.5, 1.0, 4).astype(np.float32)}
        want = ort_run(path, feeds)
        got = dlc_run(art, path, feeds, tmp_path)
        assert_close(got["s"], want["s"], f"s at m={m} k={k} batch={b}")
        if m == 0:
            # ORT gives an empty scan output the shape {0} when the body does not declare
            # its shape; ONNX's is [0, B, 4].
            assert want["scans"].size == 0 and got["scans"].shape == (0, b, 4), got["scans"].shape
            continue
        assert got["scans"].shape == want["scans"].shape, (got["scans"].shape, want["scans"].shape)
        assert_close(got["scans"], want["scans"], f"scans at m={m} k={k} batch={b}")


def test_a_loop_over_constants_folds_at_compile_time(tmp_path):
    """A trip count and state known at compile time: the interpreter runs the loop, and
    the compiled graph has no loop left."""
    path = _save(tmp_path / "const.onnx",
                 [_const("m", np.array(3, np.int64)), _const("y0", np.ones(3, np.float32)),
                  _const("x", np.arange(15, dtype=np.float32).reshape(5, 3)),
                  h.make_node("Loop", ["m", "", "y0"], ["y", "ys"], body=_for_body(), name="for"),
                  h.make_node("Add", ["y", "a"], ["out"])],
                 [_vi("a", T.FLOAT, [3])], [_vi("out", T.FLOAT), _vi("ys", T.FLOAT)])
    got, want = _folded_and_run(path, tmp_path)
    for k in ("out", "ys"):
        assert_close(got[k], want[k], k)


def _folded_and_run(path, tmp_path):
    """Checks that the compiled graph of `path` has no loop left, runs it on `a` =
    [1, 2, 3] and returns dlc's and ONNX Runtime's outputs."""
    dlc("compile", path, "-o", tmp_path / "ir", "--emit", "ir")
    ir = (tmp_path / "ir" / "model.dlcir").read_text()
    assert "= loop" not in ir, ir
    dlc("compile", path, "-o", tmp_path / "art")
    feeds = {"a": np.array([1, 2, 3], np.float32)}
    return dlc_run(tmp_path / "art", path, feeds, tmp_path), ort_run(path, feeds)


def test_a_loop_that_would_run_forever_is_refused(tmp_path):
    path = _save(tmp_path / "forever.onnx", [h.make_node("Loop", ["", "", "y0"], ["y", "ys"], body=_for_body(), name="forever")],
                 [_vi("y0", T.FLOAT, [3]), _vi("x", T.FLOAT, [5, 3])], [_vi("y", T.FLOAT), _vi("ys", T.FLOAT)])
    r = dlc("compile", path, "-o", tmp_path / "art", check=False)
    assert r.returncode == 1 and "node 'forever'" in r.stderr and "it would run forever" in r.stderr, r.stderr


def test_a_carried_value_sliced_at_run_time_keeps_its_shape(tmp_path):
    """`y += x[i:i+1]` (Slice bounds from the iteration number, so the slice's extent is
    a run-time dim) carries a fixed-shape value: a bind checks the extent each
    iteration; an iteration past x's end fails the run naming the check."""
    body = h.make_graph(
        [h.make_node("Identity", ["c_in"], ["c_out"]), _const("one", np.array(1, np.int64)),
         h.make_node("Add", ["i", "one"], ["end"]), _const("axes0", np.array([0], np.int64)),
         h.make_node("Unsqueeze", ["i", "axes0"], ["starts"]), h.make_node("Unsqueeze", ["end", "axes0"], ["ends"]),
         h.make_node("Slice", ["x", "starts", "ends"], ["xs"]), h.make_node("Add", ["y_in", "xs"], ["y_out"]),
         h.make_node("Identity", ["y_out"], ["scan"])],
        "body", [_vi("i", T.INT64, []), _vi("c_in", T.BOOL, []), _vi("y_in", T.FLOAT, [1])],
        [_vi("c_out", T.BOOL, []), _vi("y_out", T.FLOAT, [1]), _vi("scan", T.FLOAT, [1])])
    path = _save(tmp_path / "slice.onnx", [h.make_node("Loop", ["m", "", "y0"], ["y", "ys"], body=body, name="sum")],
                 [_vi("m", T.INT64, []), _vi("y0", T.FLOAT, [1]), _vi("x", T.FLOAT, [6])],
                 [_vi("y", T.FLOAT, [1]), _vi("ys", T.FLOAT, [None, 1])])
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    x = np.arange(1, 7, dtype=np.float32)
    for m in (0, 3, 6):
        feeds = {"m": np.array(m, np.int64), "y0": np.array([-2], np.float32), "x": x}
        want = ort_run(path, feeds)
        got = dlc_run(art, path, feeds, tmp_path)
        assert_close(got["y"], want["y"], f"y at m={m}")
        assert got["ys"].shape == (m, 1) and (m == 0 or np.allclose(got["ys"], want["ys"])), (got["ys"], want["ys"])
    args = []
    for k, v in {"m": np.array(7, np.int64), "y0": np.array([0], np.float32), "x": x}.items():
        np.save(tmp_path / f"{k}.npy", v)
        args += ["--input", f"{k}={tmp_path / f'{k}.npy'}"]
    p = dlc("run", art, *args, "-o", tmp_path / "o", check=False)
    assert p.returncode == 1 and "node 'sum/y_out_fixed'" in p.stderr, p.stderr
    assert "panicked" not in p.stderr


def _while_scan_body():
    """Doubles a vector of a run-time batch while its sum is under a limit; scans the
    vector and the iteration number (a tf2onnx while loop over a TensorArray looks so)."""
    return h.make_graph(
        [
            _const("two", np.array(2, np.float32)),
            h.make_node("Mul", ["v_in", "two"], ["v_out"]),
            h.make_node("ReduceSum", ["v_out"], ["s"], keepdims=0),
            h.make_node("Less", ["s", "limit"], ["cond_out"]),
            h.make_node("Identity", ["v_out"], ["scan_v"]),
            h.make_node("Identity", ["i"], ["scan_i"]),
        ],
        "body", [_vi("i", T.INT64, []), _vi("cond_in", T.BOOL, []), _vi("v_in", T.FLOAT)],
        [_vi("cond_out", T.BOOL, []), _vi("v_out", T.FLOAT), _vi("scan_v", T.FLOAT), _vi("scan_i", T.INT64, [])])


@pytest.fixture(scope="module")
def while_scan(tmp_path_factory):
    """The body computes its condition and gives scan outputs; the trip count bounds
    them (a constant 12, or given at run time)."""
    d = tmp_path_factory.mktemp("while_scan")
    made = {}
    for how in ("const", "input"):
        nodes = [h.make_node("Loop", ["max", "c", "v0"], ["v", "vs", "is"], body=_while_scan_body(), name="while")]
        inputs = [_vi("c", T.BOOL, []), _vi("v0", T.FLOAT, ["B"]), _vi("limit", T.FLOAT, [])]
        if how == "const":
            nodes.insert(0, _const("max", np.array(12, np.int64)))
        else:
            inputs.insert(0, _vi("max", T.INT64, []))
        path = _save(d / f"{how}.onnx", nodes, inputs, [_vi("v", T.FLOAT), _vi("vs", T.FLOAT), _vi("is", T.INT64)])
        art = d / f"art_{how}"
        dlc("compile", path, "-o", art)
        made[how] = (path, art)
    return made


_ENDS = [(3, 100.0, True, 12), (1, 5.0, True, 12), (6, 1e30, True, 12), (4, 100.0, False, 12)]


@pytest.mark.parametrize("how,batch,limit,c,m", [("const", *e) for e in _ENDS] + [
    ("input", *e) for e in _ENDS + [(2, 1e30, True, 5), (2, 1e30, True, 0), (5, 40.0, True, 3)]])
def test_scan_outputs_of_a_loop_that_ends_early_have_the_iterations_run(while_scan, how, batch, limit, c, m, tmp_path):
    """The constant model's trip count is 12."""
    path, art = while_scan[how]
    feeds = {"c": np.array(c), "v0": np.linspace(0.5, 1.5, batch).astype(np.float32),
             "limit": np.array(limit, np.float32)}
    if how == "input":
        feeds["max"] = np.array(m, np.int64)
    want = ort_run(path, feeds)
    got = dlc_run(art, path, feeds, tmp_path)
    runs = int(want["is"].shape[0]) if want["is"].size else 0
    assert got["is"].shape == (runs,), (got["is"].shape, want["is"].shape)
    assert np.array_equal(got["is"], np.arange(runs)), got["is"]
    assert got["vs"].shape == (runs, batch), (got["vs"].shape, want["vs"].shape)
    if runs:
        assert_close(got["vs"], want["vs"], f"vs at batch={batch} limit={limit} c={c} m={m}")
    assert_close(got["v"], want["v"], f"v at batch={batch} limit={limit} c={c} m={m}")


@pytest.mark.parametrize("bound", ["int64_max", "none"])
def test_scan_outputs_of_a_while_loop_with_no_bound(bound, tmp_path):
    """INT64_MAX as the trip count (what exporters write for no bound), or none: a first
    loop counts the iterations before the run, and the count sizes the scan outputs."""
    nodes = [h.make_node("Loop", ["max" if bound == "int64_max" else "", "c", "v0"], ["v", "vs", "is"],
                         body=_while_scan_body(), name="while")]
    if bound == "int64_max":
        nodes.insert(0, _const("max", np.array(np.iinfo(np.int64).max, np.int64)))
    path = _save(tmp_path / "unbounded.onnx", nodes,
                 [_vi("c", T.BOOL, []), _vi("v0", T.FLOAT, ["B"]), _vi("limit", T.FLOAT, [])],
                 [_vi("v", T.FLOAT), _vi("vs", T.FLOAT), _vi("is", T.INT64)])
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    for batch, limit, c in ((3, 100.0, True), (1, 5.0, True), (4, 1e6, True), (2, 1.0, True), (3, 100.0, False)):
        feeds = {"c": np.array(c), "v0": np.linspace(0.5, 1.5, batch).astype(np.float32),
                 "limit": np.array(limit, np.float32)}
        want = ort_run(path, feeds)
        (tmp_path / f"r{batch}{c}").mkdir()
        got = dlc_run(art, path, feeds, tmp_path / f"r{batch}{c}")
        # (ONNX Runtime gives an empty scan output as shape (0,): it has no iteration to
        # learn the rest from.)
        runs = int(want["is"].shape[0]) if want["is"].size else 0
        assert got["is"].shape == (runs,) and got["vs"].shape == (runs, batch), (got["vs"].shape, want["vs"].shape)
        assert np.array_equal(got["is"], np.arange(runs)), got["is"]
        if runs:
            assert_close(got["vs"], want["vs"], f"vs at batch={batch} limit={limit} c={c}")
        assert_close(got["v"], want["v"], f"v at batch={batch} limit={limit} c={c}")


def test_a_loop_that_ends_early_over_constants_folds_at_compile_time(tmp_path):
    """The same while loop over constants: the interpreter runs it (scan slots past the
    iterations run are cut off) and the compiled graph has no loop left."""
    nodes = [_const("max", np.array(12, np.int64)), _const("c", np.array(True)),
             _const("v0", np.array([0.5, 1.0, 1.5], np.float32)), _const("limit", np.array(100.0, np.float32)),
             h.make_node("Loop", ["max", "c", "v0"], ["v", "vs", "is"], body=_while_scan_body(), name="while"),
             h.make_node("Add", ["vs", "a"], ["out"])]
    path = _save(tmp_path / "folded.onnx", nodes, [_vi("a", T.FLOAT, [3])],
                 [_vi("out", T.FLOAT), _vi("is", T.INT64)])
    got, want = _folded_and_run(path, tmp_path)
    assert got["out"].shape == want["out"].shape == (6, 3), (got["out"].shape, want["out"].shape)
    assert_close(got["out"], want["out"], "out")
    assert np.array_equal(got["is"], want["is"]), got["is"]


@pytest.mark.parametrize("check", [False, True])
def test_a_trip_count_from_a_run_time_dim(check, tmp_path):
    """`for i in range(x.shape[0])` as exporters write it (Shape, Gather, then the Loop),
    over an input whose first dim is a run-time one: the trip count is that dim, the scan
    outputs `[N, ...]`; with `check` the body also stops when its sum passes a limit (the
    scan outputs cut to the iterations run)."""
    cond = (
        [h.make_node("ReduceSum", ["y_out"], ["s"], keepdims=0), h.make_node("Less", ["s", "limit"], ["c_out"])]
        if check else [h.make_node("Identity", ["c_in"], ["c_out"])]
    )
    body = h.make_graph(
        [h.make_node("Gather", ["x", "i"], ["row"], axis=0), h.make_node("Add", ["y_in", "row"], ["y_out"]),
         h.make_node("Identity", ["y_out"], ["scan"]), *cond],
        "body", [_vi("i", T.INT64, []), _vi("c_in", T.BOOL, []), _vi("y_in", T.FLOAT, [3])],
        [_vi("c_out", T.BOOL, []), _vi("y_out", T.FLOAT, [3]), _vi("scan", T.FLOAT, [3])])
    nodes = [h.make_node("Shape", ["x"], ["shape"]), _const("zero", np.array(0, np.int64)),
             h.make_node("Gather", ["shape", "zero"], ["n"], axis=0), _const("true", np.array(True)),
             h.make_node("Loop", ["n", "true", "y0"], ["y", "ys"], body=body, name="rows")]
    path = _save(tmp_path / "rows.onnx", nodes,
                 [_vi("x", T.FLOAT, ["N", 3]), _vi("y0", T.FLOAT, [3]), _vi("limit", T.FLOAT, [])],
                 [_vi("y", T.FLOAT, [3]), _vi("ys", T.FLOAT, [None, 3])])
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    rng = np.random.default_rng(5)
    for n, limit in [(4, 1e30), (1, 1e30), (0, 1e30), (9, 6.0)]:
        feeds = {"x": rng.uniform(0.5, 1.0, (n, 3)).astype(np.float32), "y0": np.zeros(3, np.float32),
                 "limit": np.array(limit, np.float32)}
        want = ort_run(path, feeds)
        got = dlc_run(art, path, feeds, tmp_path)
        runs = want["ys"].shape[0] if want["ys"].size else 0
        assert got["ys"].shape == (runs, 3), (got["ys"].shape, want["ys"].shape, n)
        if check and limit < 1e29:
            assert 0 < runs < n, runs  # the body's condition ended it early
        else:
            assert runs == n, runs
        assert_close(got["y"], want["y"], f"y at N={n} limit={limit}")
        if runs:
            assert_close(got["ys"], want["ys"], f"ys at N={n} limit={limit}")


def test_an_if_in_a_loop_body_takes_a_branch_per_iteration(tmp_path):
    """A body whose If picks its branch from the iteration number (even: y * 0.5 + x[i],
    odd: y - x[i] with an inner Gather): the If stays an `if` of the body (only the
    branch taken runs each iteration), at run-time trip counts, against ONNX Runtime."""
    then_g = h.make_graph([_const("half", np.array(0.5, np.float32)), h.make_node("Mul", ["y_in", "half"], ["t0"]),
                           h.make_node("Add", ["t0", "xr"], ["t"])], "then", [], [_vi("t", T.FLOAT, [3])])
    else_g = h.make_graph([h.make_node("Sub", ["y_in", "xr"], ["e"])], "else", [], [_vi("e", T.FLOAT, [3])])
    body = h.make_graph([
        h.make_node("Identity", ["cond_in"], ["cond_out"]),
        _const("two", np.array(2, np.int64)), _const("zero", np.array(0, np.int64)), _const("five", np.array(5, np.int64)),
        h.make_node("Mod", ["i", "five"], ["row"]),
        h.make_node("Gather", ["x", "row"], ["xr"], axis=0),
        h.make_node("Mod", ["i", "two"], ["parity"]),
        h.make_node("Equal", ["parity", "zero"], ["even"]),
        h.make_node("If", ["even"], ["y_out"], then_branch=then_g, else_branch=else_g, name="pick"),
        h.make_node("Identity", ["y_out"], ["scan"]),
    ], "body", [_vi("i", T.INT64, []), _vi("cond_in", T.BOOL, []), _vi("y_in", T.FLOAT, [3])],
        [_vi("cond_out", T.BOOL, []), _vi("y_out", T.FLOAT, [3]), _vi("scan", T.FLOAT, [3])])
    path = _save(tmp_path / "m.onnx", [h.make_node("Loop", ["m", "c", "y0"], ["y", "ys"], body=body, name="for")],
                 [_vi("m", T.INT64, []), _vi("c", T.BOOL, []), _vi("y0", T.FLOAT, [3]), _vi("x", T.FLOAT, [5, 3])],
                 [_vi("y", T.FLOAT), _vi("ys", T.FLOAT)])
    art = tmp_path / "art"
    dlc("compile", path, "-o", art, "--emit", "so,ir")
    ir = (art / "model.dlcir").read_text()
    # Nothing selects between computed branches (the loop's own trip count is a Where).
    assert " = loop(" in ir and " = if(" in ir and not any("where" in ln and "pick" in ln for ln in ir.splitlines()), ir
    for m in (0, 1, 6):
        rng = np.random.default_rng(m)
        feeds = {"m": np.array(m, np.int64), "c": np.array(True), "y0": rng.standard_normal(3).astype(np.float32),
                 "x": rng.standard_normal((5, 3)).astype(np.float32)}
        work = tmp_path / f"m{m}"
        work.mkdir()
        got, want = dlc_run(art, path, feeds, work), ort_run(path, feeds)
        for k in ("y", "ys"):
            assert got[k].shape == want[k].shape, (k, m)
            assert_close(got[k], want[k], f"{k} at m={m}")
