"""The `dlc` Python package as a user installs it (`pip install .` into a fresh venv;
scripts/test.sh does that and runs this file with that venv's Python).

References are ONNX Runtime's outputs; tolerances as the end-to-end tests' (rtol 1e-4,
atol 1e-5). Error messages are compared with the `dlc` CLI's when DLC_BIN names one.
"""
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import dlc

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "models"))
from dlc_model import random_feeds  # noqa: E402
from make_symbolic import make_symbolic  # noqa: E402

RTOL, ATOL = 1e-4, 1e-5
REFERENCE = ["mlp", "resnet18", "mobilenetv2", "bert"]


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    out = tmp_path_factory.mktemp("models")
    subprocess.run([sys.executable, str(ROOT / "tests" / "models" / "gen_models.py"), str(out), *REFERENCE],
                   check=True, capture_output=True)
    return out


def ort_outputs(path_or_proto, feeds):
    src = path_or_proto.SerializeToString() if isinstance(path_or_proto, onnx.ModelProto) else str(path_or_proto)
    s = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    return {o.name: v for o, v in zip(s.get_outputs(), s.run(None, feeds))}


def feeds_for(path_or_proto, seed=0, dims=None):
    src = path_or_proto.SerializeToString() if isinstance(path_or_proto, onnx.ModelProto) else str(path_or_proto)
    s = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    return random_feeds(s.get_inputs(), np.random.RandomState(seed), dims)


def assert_close(got, want, what):
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    bad = err > ATOL + RTOL * np.abs(want.astype(np.float64))
    assert not bad.any(), f"{what}: {bad.sum()} of {bad.size} outside tolerance, max abs err {err.max():.3g}"


def check_against_ort(model, source, seeds=(0, 1)):
    for seed in seeds:
        feeds = feeds_for(source, seed)
        want = ort_outputs(source, feeds)
        got = model.run(feeds)
        assert list(got) == list(want), "outputs in the model's order"
        for k in want:
            assert np.abs(want[k]).max() > 1e-2, f"{k} is degenerate"
            assert_close(got[k], want[k], f"{k} (seed {seed})")


@pytest.mark.parametrize("name", REFERENCE)
def test_reference_model_from_path(models, name):
    model = dlc.compile(models / f"{name}.onnx")
    check_against_ort(model, models / f"{name}.onnx")


@pytest.mark.parametrize("name", REFERENCE)
def test_reference_model_from_modelproto(models, name):
    proto = onnx.load(str(models / f"{name}.onnx"))
    model = dlc.compile(proto)
    check_against_ort(model, proto)


def test_model_metadata_call_forms_and_threads(models):
    path = models / "mlp.onnx"
    model = dlc.compile(path)
    assert [i.name for i in model.inputs] == ["input"]
    assert model.inputs[0].shape == (1, 784) and model.inputs[0].dtype == "f32"
    assert model.inputs[0].numpy_dtype == np.float32
    assert [o.name for o in model.outputs] == ["logits", "probs"]
    feeds = feeds_for(path)
    want = ort_outputs(path, feeds)
    logits, probs = model(feeds["input"])  # positional: a tuple for several outputs
    assert_close(logits, want["logits"], "logits")
    assert_close(probs, want["probs"], "probs")
    model.threads = 2
    assert model.threads == 2
    assert_close(model.run(feeds)["probs"], want["probs"], "probs on 2 threads")
    with pytest.raises(ValueError):
        model.threads = 0
    r = model.report
    assert r["parameters"] == 784 * 1024 + 1024 + 1024 * 1024 + 1024 + 1024 * 10 + 10
    b = model.bench(iters=5)
    assert b["iters"] == 5 and 0 < b["min_ms"] <= b["median_ms"] <= b["max_ms"]
    assert "input: f32[1,784]" in repr(model)


def test_inputs_read_in_place_or_copied(models):
    """Non-contiguous, misaligned and big-endian arrays give the same answer as a plain
    contiguous array (they are copied; plain ones are read where they are)."""
    path = models / "mlp.onnx"
    model = dlc.compile(path)
    x = feeds_for(path)["input"]
    want = model.run({"input": x})["probs"]
    wide = np.zeros((1, 784 * 2), np.float32)
    wide[:, ::2] = x
    assert_close(model.run({"input": wide[:, ::2]})["probs"], want, "strided input")
    raw = np.zeros(784 * 4 + 1, np.uint8)
    misaligned = raw[1:].view(np.float32).reshape(1, 784)
    misaligned[:] = x
    assert misaligned.ctypes.data % 4 != 0
    assert_close(model.run({"input": misaligned})["probs"], want, "misaligned input")
    assert_close(model.run({"input": x.astype(">f4")})["probs"], want, "big-endian input")
    # The caller's array is not written.
    before = x.copy()
    model.run({"input": x})
    assert np.array_equal(x, before)


def test_symbolic_batch_and_sequence(models, tmp_path):
    """One artifact, several shapes: the MLP and BERT with a symbolic batch."""
    mlp = make_symbolic(onnx.load(str(models / "mlp.onnx")), {0: "N"})
    model = dlc.compile(mlp)
    assert model.inputs[0].shape == ("N", 784)
    for n in (1, 3, 8):
        feeds = {"input": np.random.RandomState(n).standard_normal((n, 784)).astype(np.float32)}
        want = ort_outputs(mlp, feeds)
        got = model.run(feeds)
        for k in want:
            assert_close(got[k], want[k], f"{k} at batch {n}")
    bert = make_symbolic(onnx.load(str(models / "bert.onnx")), {0: "batch"})
    model = dlc.compile(bert)
    assert model.inputs[0].shape == ("batch", 128)
    for batch in (1, 3):
        feeds = feeds_for(bert, batch, {"batch": batch})
        want = ort_outputs(bert, feeds)
        got = model.run(feeds)
        for k in want:
            assert_close(got[k], want[k], f"{k} at batch {batch}")


def test_computed_dims_from_input_values():
    """A Resize whose sizes are an input and a ConstantOfShape whose shape is one: the
    output extents are computed from the values before each run (one artifact)."""
    nodes = [
        helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="linear"),
        helper.make_node("ConstantOfShape", ["sizes"], ["z"], value=helper.make_tensor("v", TensorProto.FLOAT, [1],
                                                                                        [0.5])),
    ]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4]),
                                       helper.make_tensor_value_info("sizes", TensorProto.INT64, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                           helper.make_tensor_value_info("z", TensorProto.FLOAT, None)])
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    model = dlc.compile(proto)
    x = np.random.RandomState(0).standard_normal((1, 2, 4, 4)).astype(np.float32)
    for sizes in ([1, 2, 7, 3], [1, 2, 2, 9]):
        feeds = {"x": x, "sizes": np.array(sizes, np.int64)}
        want = ort_outputs(proto, feeds)
        got = model.run(feeds)
        for k in want:
            assert got[k].shape == tuple(sizes), (k, got[k].shape)
            assert_close(got[k], want[k], f"{k} at sizes {sizes}")


def test_load_and_save(models, tmp_path):
    path = models / "mlp.onnx"
    feeds = feeds_for(path)
    want = ort_outputs(path, feeds)
    compiled = dlc.compile(path, out_dir=tmp_path / "art")
    assert (tmp_path / "art" / "model.so").exists()
    loaded = dlc.load(tmp_path / "art")
    assert_close(loaded.run(feeds)["probs"], want["probs"], "loaded")
    compiled.save(tmp_path / "copy")
    assert_close(dlc.load(tmp_path / "copy").run(feeds)["probs"], want["probs"], "saved copy")
    # A compile into a temporary directory lives as long as its model.
    tmp_model = dlc.compile(path)
    where = tmp_model.path
    assert where.exists()
    del tmp_model
    assert not where.exists()


@pytest.mark.skipif(not os.environ.get("DLC_BIN"), reason="needs the dlc CLI (DLC_BIN)")
def test_load_artifact_compiled_by_cli(models, tmp_path):
    path = models / "resnet18.onnx"
    subprocess.run([os.environ["DLC_BIN"], "compile", str(path), "-o", str(tmp_path / "art")], check=True,
                   capture_output=True)
    check_against_ort(dlc.load(tmp_path / "art"), path, seeds=(0,))


def test_concurrent_calls_and_gil_release(models):
    """Several Python threads call one model at once and each gets its own right answer;
    while the generated code runs, other Python threads keep running (the GIL is free)."""
    path = models / "resnet18.onnx"
    model = dlc.compile(path)
    cases = [feeds_for(path, seed) for seed in range(4)]
    wants = [ort_outputs(path, f) for f in cases]
    results, errors = [None] * 4, []

    def work(i):
        try:
            for _ in range(3):
                results[i] = model.run(cases[i])
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for got, want in zip(results, wants):
        for k in want:
            assert_close(got[k], want[k], k)

    # GIL: count in this thread while another one is inside a long run.
    inside = threading.Event()
    done = threading.Event()

    def long_run():
        inside.set()
        model.bench(iters=10, feeds=cases[0])
        done.set()

    t = threading.Thread(target=long_run)
    t.start()
    inside.wait()
    ticks = 0
    while not done.is_set():
        ticks += 1
        time.sleep(0)
    t.join()
    # With the GIL held for the whole run this thread would count a handful of times.
    assert ticks > 1000, ticks


def cli_error(*args):
    p = subprocess.run([os.environ["DLC_BIN"], *map(str, args)], capture_output=True, text=True)
    assert p.returncode != 0
    return p.stderr.strip().removeprefix("error: ")


def unsupported_model(path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="ok"),
             helper.make_node("NoSuchOp", ["a"], ["b"], name="first_bad"),
             helper.make_node("AlsoMissing", ["b"], ["y"], name="second_bad", domain="com.example")]
    m = helper.make_model(helper.make_graph(nodes, "g", [x], [y]),
                          opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    onnx.save(m, str(path))
    return path


def test_errors_are_the_documented_exceptions(models, tmp_path):
    path = models / "mlp.onnx"
    model = dlc.compile(path, out_dir=tmp_path / "art")
    x = feeds_for(path)["input"]
    cases = {
        "wrong shape": ({"input": x[:, :100]}, "input 'input': expected shape [1,784], got [1,100]"),
        "wrong dtype": ({"input": x.astype(np.float64)}, "input 'input': expected dtype f32, got f64"),
        "missing input": ({}, "the model takes 1 input(s) ('input'), got 0"),
        "unknown input": ({"input": x, "extra": x}, "the model has no input named 'extra'; inputs are 'input'"),
    }
    for what, (feeds, message) in cases.items():
        with pytest.raises(dlc.InputError) as e:
            model.run(feeds)
        assert str(e.value) == message, what
        if os.environ.get("DLC_BIN"):
            args = []
            for i, (n, v) in enumerate(feeds.items()):
                np.save(tmp_path / f"in{i}.npy", v)
                args += ["--input", f"{n}={tmp_path / f'in{i}.npy'}"]
            assert cli_error("run", tmp_path / "art", *args, "--output-dir", tmp_path / "o") == message, what
    with pytest.raises(dlc.InputError, match="takes 1 input"):
        model(x, x)
    assert issubclass(dlc.InputError, dlc.Error) and issubclass(dlc.UnsupportedOpError, dlc.CompileError)

    bad = unsupported_model(tmp_path / "bad.onnx")
    with pytest.raises(dlc.UnsupportedOpError) as e:
        dlc.compile(bad)
    assert e.value.nodes == [("first_bad", "NoSuchOp", "ai.onnx", 17), ("second_bad", "AlsoMissing", "com.example", 1)]
    assert "2 unsupported node(s)" in str(e.value)
    if os.environ.get("DLC_BIN"):
        assert cli_error("compile", bad, "-o", tmp_path / "bad_art") == str(e.value)

    with pytest.raises(dlc.CompileError, match="is not a valid ONNX model"):
        (tmp_path / "junk.onnx").write_bytes(b"\x08\xff\xff junk")
        dlc.compile(tmp_path / "junk.onnx")
    with pytest.raises(dlc.CompileError, match="needs calibration"):
        dlc.compile(path, quantize="int8")
    with pytest.raises(dlc.CompileError, match="not implemented yet"):
        dlc.compile(path, backend="cranelift")
    with pytest.raises(dlc.LoadError, match="cannot load artifact"):
        dlc.load(tmp_path / "nothing_here")
    with pytest.raises(TypeError):
        dlc.compile(42)


def test_quantize_with_calibration(models):
    """Static int8 from calibration feeds given as numpy arrays: every ResNet-18 conv is
    int8 and the outputs stay close to the float model's (cosine >= 0.99 on held-back
    inputs, as tests/e2e/test_quantize.py asks of the CLI)."""
    path = models / "resnet18.onnx"
    rng = np.random.default_rng(100)
    calibration = ({"input": rng.standard_normal((1, 3, 224, 224)).astype(np.float32)} for _ in range(8))
    int8 = dlc.compile(path, quantize="int8", calibration=calibration)
    q = int8.report["quantization"]
    assert q["int8_layers"] == 20 and q["samples"] == 8, q
    fp32 = dlc.compile(path)
    rng = np.random.default_rng(2024)
    cos = []
    for _ in range(10):
        x = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
        a, b = fp32(x).ravel().astype(np.float64), int8(x).ravel().astype(np.float64)
        cos.append(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert np.mean(cos) >= 0.99, cos
    dyn = dlc.compile(models / "mlp.onnx", quantize="int8-dynamic")
    assert dyn.report["quantization"]["scheme"] == "int8-dynamic"


def test_pinned_shapes_and_dims(models):
    mlp = make_symbolic(onnx.load(str(models / "mlp.onnx")), {0: "N"})
    pinned = dlc.compile(mlp, input_shapes={"input": (4, 784)})
    assert pinned.inputs[0].shape == (4, 784)
    assert dlc.compile(mlp, dims={"N": 2}).inputs[0].shape == (2, 784)
    with pytest.raises(dlc.CompileError, match="not a dim dlc accepts"):
        dlc.compile(mlp, input_shapes={"input": (0, 784)})


def test_cross_compile_is_described_not_run(models, tmp_path):
    model = dlc.compile(models / "mlp.onnx", target="aarch64-unknown-linux-gnu", out_dir=tmp_path / "arm")
    assert (tmp_path / "arm" / "model.a").exists() and (tmp_path / "arm" / "model.h").exists()
    assert model.inputs[0].shape == (1, 784) and model.manifest["target_triple"].startswith("aarch64")
    with pytest.raises(dlc.LoadError, match="aarch64"):
        model.run({"input": np.zeros((1, 784), np.float32)})
    with pytest.raises(dlc.LoadError):
        dlc.load(tmp_path / "arm")


def test_hostile_feeds_are_input_errors(models):
    """Whatever Python hands over is an InputError, never a crash or a panic."""
    model = dlc.compile(models / "mlp.onnx")
    x = np.zeros((1, 784), np.float32)
    for feeds, message in [
        ({"input": "hello"}, "numpy dtype <U5 is not one dlc takes"),
        ({"input": None}, "numpy dtype object is not one dlc takes"),
        ({"input": [[object()]]}, "numpy dtype object is not one dlc takes"),
        ({"input": np.zeros((1, 784), np.complex64)}, "numpy dtype complex64 is not one dlc takes"),
        ({"input": np.float32(1.0)}, "expected shape [1,784], got []"),
        ({"input": np.zeros((0, 784), np.float32)}, "expected shape [1,784], got [0,784]"),
        ({1: x}, "feed names must be strings"),
    ]:
        with pytest.raises(dlc.InputError) as e:
            model.run(feeds)
        assert message in str(e.value), (feeds, str(e.value))
    with pytest.raises(dlc.InputError, match="takes 1 input"):
        model()
    with pytest.raises(TypeError):
        model.run(42)


def test_string_tensors_in_and_out(tmp_path):
    """A StringNormalizer model: string arrays in, string arrays out, as ONNX Runtime's
    (docs/strings.md); its metadata shows one string input and output."""
    node = helper.make_node("StringNormalizer", ["x"], ["y"], case_change_action="UPPER", stopwords=["b"],
                            locale="C.UTF-8")
    g = helper.make_graph([node], "s", [helper.make_tensor_value_info("x", TensorProto.STRING, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.STRING, None)])
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m = dlc.compile(proto)
    assert [(i.name, i.dtype) for i in m.inputs] == [("x", "string")]
    assert [(o.name, o.dtype) for o in m.outputs] == [("y", "string")]
    for x in (["a", "B", "été", ""], ["b", "b", "b", "b"]):
        feeds = {"x": np.array(x, dtype=object)}
        got, want = m.run(feeds)["y"], ort_outputs(proto, feeds)["y"]
        assert got.dtype == object and got.tolist() == want.tolist(), (x, got, want)
    assert m(np.array(["x", "y", "b", "z"], dtype=object)).tolist() == ["X", "Y", "Z"]
    with pytest.raises(dlc.InputError, match="'x'"):
        m.run({"x": np.array([1, 2, 3, 4], dtype=object)})


def test_optional_input_compiled_absent():
    """``absent`` compiles an optional input as an empty optional: ``run`` takes None for
    it (as ONNX Runtime does) or no entry, and giving it a tensor is an InputError."""
    x_ty = helper.make_tensor_type_proto(TensorProto.FLOAT, [3])
    nodes = [helper.make_node("OptionalHasElement", ["o"], ["has"]), helper.make_node("Neg", ["x"], ["y"])]
    g = helper.make_graph(nodes, "opt", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3]),
                                         helper.make_value_info("o", helper.make_optional_type_proto(x_ty))],
                          [helper.make_tensor_value_info("has", TensorProto.BOOL, []),
                           helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m = dlc.compile(proto, absent=["o"])
    assert [i.name for i in m.inputs] == ["x"]
    assert [i.name for i in dlc.compile(proto, absent="o").inputs] == ["x"]  # one name as a str
    x = np.array([1, -2, 3], np.float32)
    want = ort_outputs(proto, {"x": x, "o": None})
    for feeds in ({"x": x, "o": None}, {"x": x}):
        got = m.run(feeds)
        assert got["has"] == want["has"] == False  # noqa: E712
        np.testing.assert_array_equal(got["y"], want["y"])
    with pytest.raises(dlc.InputError, match="compiled absent"):
        m.run({"x": x, "o": x})
    with pytest.raises(dlc.CompileError, match="not of optional type"):
        dlc.compile(proto, absent=["x"])


def test_sequences_in_and_out():
    """A sequence input compiled at a fixed length (``sequence_lengths``) is fed as a
    list, and a sequence output comes back as one, as ONNX Runtime's (docs/sequences.md);
    a list of another length is an InputError."""
    seq = helper.make_tensor_sequence_value_info
    nodes = [helper.make_node("SequenceInsert", ["s", "x"], ["t"]),
             helper.make_node("ConcatFromSequence", ["t"], ["cat"], axis=0)]
    g = helper.make_graph(nodes, "seq", [seq("s", TensorProto.FLOAT, ["n"]),
                                         helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [seq("t", TensorProto.FLOAT, None), helper.make_tensor_value_info("cat", TensorProto.FLOAT, None)])
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(dlc.CompileError, match="sequence_length|--sequence-length s=N"):
        dlc.compile(proto)
    m = dlc.compile(proto, sequence_lengths={"s": 2})
    assert [i.name for i in m.inputs] == ["s[0]", "s[1]", "x"]
    rng = np.random.default_rng(0)
    feeds = {"s": [rng.standard_normal(3).astype(np.float32), rng.standard_normal(1).astype(np.float32)],
             "x": rng.standard_normal(2).astype(np.float32)}
    got, want = m.run(feeds), ort_outputs(proto, feeds)
    assert list(got) == ["t", "cat"]
    assert isinstance(got["t"], list) and len(got["t"]) == 3
    for g_, w_ in zip(got["t"], want["t"]):
        np.testing.assert_array_equal(g_, w_)
    np.testing.assert_array_equal(got["cat"], want["cat"])
    with pytest.raises(dlc.InputError, match="compiled for 2 elements"):
        m.run({"s": feeds["s"][:1], "x": feeds["x"]})


@pytest.mark.parametrize("first", ["empty", "scalar"])
def test_a_sequence_a_loop_grows_comes_back_as_a_list(first):
    """A Loop whose trip count is an input appends x[:i+1] to a sequence: its length and
    its elements' shapes are only known when the model runs; ``run`` returns the list, as
    ONNX Runtime does (docs/sequences.md). Started with a scalar, the first element has a
    lower rank than the rest (the dims it lacks are -1 in its row of the shapes output)."""
    h, T = helper, TensorProto
    vi, seq = h.make_tensor_value_info, h.make_tensor_sequence_value_info
    body = h.make_graph(
        [h.make_node("Constant", [], ["one"], value=h.make_tensor("o", T.INT64, [1], [1])),
         h.make_node("Constant", [], ["zero"], value=h.make_tensor("z", T.INT64, [1], [0])),
         h.make_node("Add", ["i", "one"], ["end"]),
         h.make_node("Slice", ["x", "zero", "end", "zero"], ["elem"]),
         h.make_node("SequenceInsert", ["s_in", "elem"], ["s_out"]),
         h.make_node("Identity", ["c_in"], ["c_out"])],
        "body", [vi("i", T.INT64, []), vi("c_in", T.BOOL, []), seq("s_in", T.FLOAT, None)],
        [vi("c_out", T.BOOL, []), seq("s_out", T.FLOAT, None)])
    start = h.make_node("SequenceEmpty", [], ["s0"], dtype=T.FLOAT)
    inputs = [vi("m", T.INT64, []), vi("x", T.FLOAT, [4, 2])]
    if first == "scalar":
        start = h.make_node("SequenceConstruct", ["x0"], ["s0"])
        inputs.append(vi("x0", T.FLOAT, []))
    g = h.make_graph([start, h.make_node("Loop", ["m", "", "s0"], ["s"], body=body)], "grow", inputs,
                     [seq("s", T.FLOAT, None)])
    proto = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m = dlc.compile(proto)
    rng = np.random.default_rng(1)
    for trips in (3, 0, 6):
        feeds = {"m": np.array(trips, np.int64), "x": rng.standard_normal((4, 2)).astype(np.float32)}
        if first == "scalar":
            feeds["x0"] = np.array(2.5, np.float32)
        got, want = m.run(feeds), ort_outputs(proto, feeds)
        n = trips + (first == "scalar")
        assert list(got) == ["s"] and isinstance(got["s"], list) and len(got["s"]) == len(want["s"]) == n
        for g_, w_ in zip(got["s"], want["s"]):
            assert g_.shape == w_.shape
            np.testing.assert_array_equal(g_, w_)


def test_an_optional_the_run_decides_is_none_when_absent():
    """An If on a run-time condition gives an empty optional or a sequence: ``run``
    returns None or the list, as ONNX Runtime does (docs/sequences.md)."""
    h, T = helper, TensorProto
    x_ty = h.make_tensor_type_proto(T.FLOAT, [3])
    opt_ty = h.make_optional_type_proto(h.make_sequence_type_proto(x_ty))
    then_g = h.make_graph([h.make_node("Optional", [], ["none"], type=h.make_sequence_type_proto(x_ty))], "then", [],
                          [h.make_value_info("none", opt_ty)])
    else_g = h.make_graph([h.make_node("SequenceConstruct", ["x"], ["s"]), h.make_node("Optional", ["s"], ["some"])],
                          "else", [], [h.make_value_info("some", opt_ty)])
    g = h.make_graph([h.make_node("If", ["c"], ["o"], then_branch=then_g, else_branch=else_g)], "g",
                     [h.make_tensor_value_info("c", T.BOOL, []), h.make_tensor_value_info("x", T.FLOAT, [3])],
                     [h.make_value_info("o", opt_ty)])
    proto = h.make_model(g, opset_imports=[h.make_opsetid("", 18)])
    m = dlc.compile(proto)
    x = np.array([1.0, 2.0, 3.0], np.float32)
    assert m.run({"c": np.array(True), "x": x}) == {"o": None}
    got = m.run({"c": np.array(False), "x": x})
    assert list(got) == ["o"] and len(got["o"]) == 1
    np.testing.assert_array_equal(got["o"][0], x)
