"""Run-time dims: the reference models with a symbolic batch `N` (as exporters with
dynamic axes write them) compile with no flags into one artifact that matches ONNX
Runtime at batch 0 (an empty batch: a run-time dim's minimum is 0), 1, 3 and 8; inputs that break the model's dims are clear errors from
`dlc run`, dlc-runtime (the Rust example) and the C ABI."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from conftest import ROOT, assert_close, dlc, dlc_bin, dlc_run

sys.path.insert(0, str(ROOT / "tests" / "models"))
from dlc_model import random_feeds  # noqa: E402
from make_symbolic import make_symbolic  # noqa: E402

MODELS = ["mlp", "mnist_cnn", "mobilenetv2", "resnet18", "bert"]
BATCHES = [0, 1, 3, 8]


@pytest.fixture(scope="module")
def symbolic(generated_models, tmp_path_factory):
    """{name: (symbolic model path, its artifact)}, compiled lazily."""
    out = tmp_path_factory.mktemp("symbolic")
    cache = {}

    def get(name):
        if name not in cache:
            path = out / f"{name}.onnx"
            m = make_symbolic(onnx.load(generated_models / f"{name}.onnx"), {0: "N"})
            onnx.checker.check_model(m)
            onnx.save(m, path)
            art = out / f"{name}_art"
            dlc("compile", path, "-o", art, "--name", name)
            cache[name] = (path, art)
        return cache[name]

    return get


@pytest.mark.parametrize("name", MODELS)
def test_one_artifact_matches_ort_at_every_batch(symbolic, name, tmp_path):
    path, art = symbolic(name)
    manifest = json.loads((art / "manifest.json").read_text())
    assert [s["name"] for s in manifest["symbols"]] == ["N"], manifest.get("symbols")
    assert manifest["inputs"][0]["shape"][0] == {"symbol": "N"}
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in BATCHES:
        feeds = random_feeds(sess.get_inputs(), np.random.RandomState(n), {"N": n})
        want = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
        work = tmp_path / f"n{n}"
        work.mkdir()
        got = dlc_run(art, path, feeds, work)
        for k, w in want.items():
            assert w.shape[0] == n
            assert_close(got[k], w, f"{name} at N={n}: {k}")


def test_two_threads_match_ort(symbolic, tmp_path):
    """The batched kernels' parallel loops split samples and tiles across the pool."""
    path, art = symbolic("mobilenetv2")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = random_feeds(sess.get_inputs(), np.random.RandomState(5), {"N": 3})
    want = sess.run(None, feeds)[0]
    args = []
    for k, x in feeds.items():
        np.save(tmp_path / "x.npy", x)
        args += ["--input", f"{k}={tmp_path / 'x.npy'}"]
    env = {**os.environ, "DLC_NUM_THREADS": "2"}
    subprocess.run([dlc_bin(), "run", art, *args, "-o", tmp_path / "out"], check=True, env=env, capture_output=True)
    got = np.load(tmp_path / "out" / "logits.npy")
    assert_close(got, want, "mobilenetv2 at N=3 on 2 threads")


def _run_err(art, tmp_path, arrays):
    args = []
    for i, (k, x) in enumerate(arrays.items()):
        f = tmp_path / f"in{i}.npy"
        np.save(f, x)
        args += ["--input", f"{k}={f}"]
    p = dlc("run", art, *args, "-o", tmp_path / "out", check=False)
    assert p.returncode != 0, "dlc run accepted inputs that break the model's dims"
    assert "panicked" not in p.stderr and "Segmentation" not in p.stderr, p.stderr
    return p.stderr


def test_broken_dims_are_errors_from_dlc_run(symbolic, tmp_path):
    _, mlp = symbolic("mlp")
    e = _run_err(mlp, tmp_path, {"input": np.zeros((3, 7), np.float32)})
    assert "input 'input': dim 1 must be 784, got 7" in e, e
    # A batch of 0 is a run (ONNX's dims may be 0): an empty result.
    x = tmp_path / "empty.npy"
    np.save(x, np.zeros((0, 784), np.float32))
    dlc("run", mlp, "--input", f"input={x}", "-o", tmp_path / "empty")
    assert np.load(tmp_path / "empty" / "logits.npy").shape == (0, 10)
    e = _run_err(mlp, tmp_path, {"input": np.zeros((2, 3, 784), np.float32)})
    assert "rank 2" in e, e
    # Two inputs sharing the batch: they must agree.
    _, bert = symbolic("bert")
    e = _run_err(bert, tmp_path, {"input_ids": np.zeros((3, 128), np.int64),
                                  "attention_mask": np.ones((4, 128), np.int64)})
    assert "input 'attention_mask': dim 0 must equal N = 3 (N = 3 from input 'input_ids' dim 0), got 4" in e, e


def test_broken_dims_are_errors_from_the_runtime(symbolic, tmp_path):
    path, art = symbolic("mlp")
    exe = ROOT / "target" / "debug" / "dlc-run-example"
    x = np.random.RandomState(2).randn(3, 784).astype(np.float32)
    x.tofile(tmp_path / "x.f32")
    subprocess.run([str(exe), art, tmp_path / "out", f"input={tmp_path / 'x.f32'}@3x784"], check=True)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    assert_close(np.fromfile(tmp_path / "out" / "logits.f32", np.float32).reshape(3, 10), want[0], "runtime N=3")
    p = subprocess.run([str(exe), art, tmp_path / "out", f"input={tmp_path / 'x.f32'}@3x783"],
                       capture_output=True, text=True)
    assert p.returncode == 1 and "input 'input': dim 1 must be 784, got 783" in p.stderr, p.stderr


def test_c_abi_runs_at_any_batch_and_refuses_bad_dims(generated_models, tmp_path):
    path = tmp_path / "mlp.onnx"
    onnx.save(make_symbolic(onnx.load(generated_models / "mlp.onnx"), {0: "N"}), path)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art, "--name", "mlp")
    header = (art / "model.h").read_text()
    assert "#define DLC_MLP_NUM_SYMBOLS 1" in header and '#define DLC_MLP_SYMBOLS "N"' in header
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang-22")
    exe = tmp_path / "run_batch"
    subprocess.run([cc, "-O2", "-std=c11", "-Wall", "-Werror", "-I", str(art), str(ROOT / "examples/c/run_batch.c"),
                    str(art / "model.a"), "-lm", "-o", str(exe)], check=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in [1, 5]:
        x = np.random.RandomState(n).randn(n, 784).astype(np.float32)
        x.tofile(tmp_path / "x.f32")
        subprocess.run([str(exe), str(n), tmp_path / "x.f32", tmp_path / "l.f32", tmp_path / "p.f32"], check=True)
        want = sess.run(None, {"input": x})
        assert_close(np.fromfile(tmp_path / "l.f32", np.float32).reshape(n, 10), want[0], f"C ABI logits N={n}")
        assert_close(np.fromfile(tmp_path / "p.f32", np.float32).reshape(n, 10), want[1], f"C ABI probs N={n}")


def test_bench_times_the_shape_asked_for(symbolic):
    _, art = symbolic("mlp")
    p = dlc("bench", art, "--iters", "3", "--input-shape", "input=4x784", "--json")
    v = json.loads(p.stdout)
    assert v["input_shapes"] == {"input": [4, 784]}


def test_bench_refuses_an_input_the_model_lacks(symbolic, tmp_path):
    _, art = symbolic("mlp")
    np.save(tmp_path / "x.npy", np.zeros((2, 784), np.float32))
    for flag, value in [("--input", f"images={tmp_path / 'x.npy'}"), ("--input-shape", "images=2x784")]:
        p = dlc("bench", art, "--iters", "1", flag, value, check=False)
        assert p.returncode != 0, p.stdout
        assert f"{flag}: the model has no input named 'images'; inputs are 'input'" in p.stderr, p.stderr


def test_inspect_shows_the_symbols(symbolic):
    path, _ = symbolic("bert")
    out = dlc("inspect", path).stdout
    assert 'symbol      N >= 0, run-time dim of "input_ids" dim 0, "attention_mask" dim 0 (must agree)' in out, out


def _shape_reshape_cnn(path, tail=None):
    """A CNN whose Reshape targets come from `Shape` of a tensor with a symbolic batch,
    as torch.onnx.export writes `x.view(x.size(0), -1)`: Shape -> Gather -> Unsqueeze ->
    Concat -> Reshape, and a second target computed with ReduceProd, Mul and Div."""
    from onnx import TensorProto, helper, numpy_helper as nh
    r = np.random.RandomState(0)

    def c(n, a):
        return nh.from_array(np.asarray(a), n)

    inits = [c("w", r.randn(4, 3, 3, 3).astype(np.float32) * 0.3), c("w2", r.randn(256, 10).astype(np.float32) * 0.1),
             c("b2", r.randn(10).astype(np.float32)), c("w3", r.randn(128, 10).astype(np.float32) * 0.1),
             c("i0", np.array(0, np.int64)), c("i1", np.array(1, np.int64)), c("i23", np.array([2, 3], np.int64)),
             c("m1", np.array([-1], np.int64)), c("two", np.array(2, np.int64)), c("two1", np.array([2], np.int64)),
             c("ax0", np.array([0], np.int64))]
    N = helper.make_node
    nodes = [
        N("Conv", ["x", "w"], ["h0"], pads=[1, 1, 1, 1]), N("Relu", ["h0"], ["h"]),
        N("Shape", ["h"], ["s"]), N("Gather", ["s", "i0"], ["n"], axis=0), N("Unsqueeze", ["n", "ax0"], ["n1"]),
        N("Concat", ["n1", "m1"], ["t1"], axis=0), N("Reshape", ["h", "t1"], ["flat"]),
        N("MatMul", ["flat", "w2"], ["y1"]), N("Add", ["y1", "b2"], ["y1b"]),
        N("Gather", ["s", "i1"], ["c"], axis=0), N("Gather", ["s", "i23"], ["hw"], axis=0),
        N("ReduceProd", ["hw"], ["hwp"], keepdims=0),
        N("Mul", ["c", "hwp"], ["chw"]), N("Div", ["chw", "two"], ["half"]), N("Unsqueeze", ["half", "ax0"], ["half1"]),
        N("Concat", ["n1", "half1", "two1"], ["t2"], axis=0), N("Reshape", ["h", "t2"], ["pairs"]),
        N("ReduceSum", ["pairs", "m1"], ["summed"], keepdims=0), N("MatMul", ["summed", "w3"], ["y2"]),
        N("Add", ["y1b", "y2"], ["y"]),
    ]
    out = "y"
    if tail == "undecided_equal":
        # Whether the run-time batch is 1: only a run decides it.
        nodes.append(N("Equal", ["n", "i1"], ["is_one"]))
        out = "y"
    outputs = [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", 10])]
    if tail == "shape_output":
        outputs.append(helper.make_tensor_value_info("s", TensorProto.INT64, [4]))
    if tail == "undecided_equal":
        outputs.append(helper.make_tensor_value_info("is_one", TensorProto.BOOL, []))
    g = helper.make_graph(nodes, "shape_reshape_cnn",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])], outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m)
    onnx.save(m, path)


def test_shape_subgraphs_fold_into_dim_expressions(tmp_path):
    path = tmp_path / "m.onnx"
    _shape_reshape_cnn(path)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # Not batch 0: ONNX Runtime refuses this model's Reshape to [N, -1] over no elements.
    for n in [n for n in BATCHES if n > 0]:
        x = np.random.RandomState(n).randn(n, 3, 8, 8).astype(np.float32)
        work = tmp_path / f"n{n}"
        work.mkdir()
        got = dlc_run(art, path, {"x": x}, work)
        assert_close(got["y"], sess.run(None, {"x": x})[0], f"shape-computed reshapes at N={n}")


def test_comparisons_of_run_time_dims_compute_at_run_time(tmp_path):
    """`Shape(x)[0] == 1` with a run-time batch: only a run decides it, so the artifact
    computes it (it was a compile error before 2026-12-05)."""
    path = tmp_path / "m.onnx"
    _shape_reshape_cnn(path, "undecided_equal")
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 3):
        x = np.random.RandomState(n).randn(n, 3, 8, 8).astype(np.float32)
        work = tmp_path / f"n{n}"
        work.mkdir()
        got = dlc_run(art, path, {"x": x}, work)
        want = dict(zip(["y", "is_one"], sess.run(None, {"x": x})))
        assert got["is_one"] == want["is_one"] == (n == 1), (n, got["is_one"], want["is_one"])
        assert_close(got["y"], want["y"], f"y at N={n}")


@pytest.mark.parametrize("tail,message", [
    ("shape_output", "graph output 's' is a shape of run-time dims [N, 4, 8, 8]"),
])
def test_shapes_of_run_time_dims_dlc_cannot_use_are_clear_errors(tmp_path, tail, message):
    path = tmp_path / "m.onnx"
    _shape_reshape_cnn(path, tail)
    p = dlc("compile", path, "-o", tmp_path / "art", check=False)
    assert p.returncode == 1 and message in p.stderr, p.stderr


def with_position_ids(m):
    """BERT reading its position embeddings by a `position_ids` input (as exports of
    Hugging Face models can), instead of adding the whole 128-row table: then the
    sequence length is free (up to 128)."""
    g = m.graph
    add = next(n for n in g.node if n.name == "add_4")
    table = next(x for x in add.input if x == "pos_emb_3")
    ids = onnx.helper.make_tensor_value_info("position_ids", onnx.TensorProto.INT64, ["N", "S"])
    g.input.append(ids)
    gather = onnx.helper.make_node("Gather", [table, "position_ids"], ["pos_rows"], name="pos_gather")
    add.input[1] = "pos_rows"
    g.node.insert(list(g.node).index(add), gather)
    return m


@pytest.fixture(scope="module")
def bert_any_length(generated_models, tmp_path_factory):
    """BERT with its batch `N` and sequence length `S` both run-time dims."""
    out = tmp_path_factory.mktemp("bert_ns")
    path = out / "bert_ns.onnx"
    m = make_symbolic(with_position_ids(onnx.load(generated_models / "bert.onnx")), {0: "N", 1: "S"})
    onnx.checker.check_model(m)
    onnx.save(m, path)
    art = out / "art"
    dlc("compile", path, "-o", art, "--name", "bert")
    return path, art


@pytest.mark.parametrize("n,s", [(1, 128), (1, 7), (2, 33), (3, 1)])
def test_bert_at_any_sequence_length_matches_ort(bert_any_length, n, s, tmp_path):
    """One artifact for every (batch, length): positions of the sequence are samples of
    the row-wise kernels (embeddings, GEMMs, norms) and attention reads its lengths at
    run time."""
    path, art = bert_any_length
    manifest = json.loads((art / "manifest.json").read_text())
    assert [x["name"] for x in manifest["symbols"]] == ["N", "S"], manifest.get("symbols")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = random_feeds(sess.get_inputs(), np.random.RandomState(s), {"N": n, "S": s})
    feeds["position_ids"] = np.tile(np.arange(s, dtype=np.int64), (n, 1))
    want = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    got = dlc_run(art, path, feeds, tmp_path)
    for k, w in want.items():
        assert w.shape[0] == n
        assert_close(got[k], w, f"bert at N={n}, S={s}: {k}")


def test_a_dim_the_model_ties_to_a_constant_becomes_that_constant(generated_models, tmp_path):
    """The reference BERT adds its whole 128-row position table: a symbolic length can
    only be 128 (ONNX Runtime fails at any other), so dlc fixes it and refuses others at
    the input instead of reading past the table."""
    path = tmp_path / "bert_s.onnx"
    onnx.save(make_symbolic(onnx.load(generated_models / "bert.onnx"), {0: "N", 1: "S"}), path)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    manifest = json.loads((art / "manifest.json").read_text())
    assert manifest["inputs"][0]["shape"] == [{"symbol": "N"}, {"fixed": 128}], manifest["inputs"][0]
    e = _run_err(art, tmp_path, {"input_ids": np.zeros((1, 7), np.int64),
                                 "attention_mask": np.ones((1, 7), np.int64)})
    assert "input 'input_ids': dim 1 must be 128, got 7" in e, e


def test_squeeze_and_unsqueeze_that_move_run_time_dims(tmp_path):
    """Squeeze of a leading 1 before two run-time dims (and Unsqueeze inserting 1s between
    them) cannot be one Reshape; dlc moves the 1s with a Transpose. A Conv with run-time
    image dims feeds it, so the image dims are expressions, not plain symbols."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.RandomState(3)
    w = numpy_helper.from_array(rng.randn(4, 2, 3, 3).astype(np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], strides=[2, 1]),
        helper.make_node("Unsqueeze", ["c", "ax0"], ["u"]),          # [1, N, 4, H', W]
        helper.make_node("Squeeze", ["u", "ax0"], ["s"]),            # [N, 4, H', W]
        helper.make_node("Unsqueeze", ["s", "ax13"], ["v"]),         # [N, 1, 4, 1, H', W]
        helper.make_node("Relu", ["v"], ["y"]),
    ]
    inits = [w, numpy_helper.from_array(np.array([0], np.int64), "ax0"),
             numpy_helper.from_array(np.array([1, 3], np.int64), "ax13")]
    g = helper.make_graph(nodes, "moves", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, "H", "W"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    src = tmp_path / "moves.onnx"
    onnx.save(m, src)
    art = tmp_path / "art"
    dlc("compile", src, "-o", art)
    sess = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    for shape in [(1, 2, 5, 7), (3, 2, 8, 3)]:
        feeds = {"x": rng.randn(*shape).astype(np.float32)}
        want = sess.run(None, feeds)[0]
        got = dlc_run(art, src, feeds, tmp_path)["y"]
        assert_close(got, want, f"moves at {shape}")


@pytest.mark.parametrize("shape", [["N", 4, 3, "W"], [1, 4, 3, "W"], ["N", 4, "H", "W"]])
@pytest.mark.parametrize("opt", [[], ["--no-opt"]])
def test_a_constant_broadcast_along_run_time_dims(shape, opt, tmp_path):
    """x + b with b: f32[1,4,1,1] and x's run-time dims after its channels: b varies along
    dims before the last run-time one, so it is not shared by 'samples' of those dims
    (the one-sample kernel read b[0] for every channel, found on PP-OCRv6's recogniser)."""
    from onnx import TensorProto, helper, numpy_helper
    b = numpy_helper.from_array(np.arange(4, dtype=np.float32).reshape(1, 4, 1, 1), "b")
    g = helper.make_graph([helper.make_node("Add", ["x", "b"], ["y"]), helper.make_node("Mul", ["y", "b"], ["z"])],
                          "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], initializer=[b])
    path = tmp_path / "add.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art, *opt)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for dims in [(1, 4, 3, 5), (1, 4, 3, 2)] if shape[0] == 1 else [(2, 4, 3, 5), (3, 4, 3, 7)]:
        x = np.random.RandomState(sum(dims)).randn(*dims).astype(np.float32)
        got = dlc_run(art, path, {"x": x}, tmp_path)
        assert_close(got["z"], sess.run(None, {"x": x})[0], f"{shape} at {dims}")


def test_gather_elements_along_a_run_time_axis(tmp_path):
    """GatherElements whose gathered axis and index extents are run-time dims (a cache of
    a run-time length, as GroupQueryAttention's present cache gathers it), negative
    indices wrapped: one artifact at three shapes against ONNX Runtime."""
    from onnx import TensorProto as T
    from onnx import helper as h
    g = h.make_graph([h.make_node("GatherElements", ["x", "i"], ["y"], axis=1)], "ge",
                     [h.make_tensor_value_info("x", T.FLOAT, ["b", "n", 3]),
                      h.make_tensor_value_info("i", T.INT64, ["b", "m", 3])],
                     [h.make_tensor_value_info("y", T.FLOAT, ["b", "m", 3])])
    path = tmp_path / "ge.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), str(path))
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    rng = np.random.default_rng(0)
    for b, n, m in [(1, 5, 2), (2, 9, 7), (3, 1, 4)]:
        feeds = {"x": rng.standard_normal((b, n, 3)).astype(np.float32),
                 "i": rng.integers(-n, n, (b, m, 3)).astype(np.int64)}
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        want = sess.run(None, feeds)[0]
        work = tmp_path / f"{b}_{n}_{m}"
        work.mkdir()
        assert_close(dlc_run(art, path, feeds, work)["y"], want, f"b={b} n={n} m={m}")
