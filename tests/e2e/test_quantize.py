"""int8 post-training quantization (`dlc compile --quantize int8 --calibrate DIR`).

- Each int8 convolution kernel against ONNX Runtime running the same quantization as a
  QDQ graph (QuantizeLinear, DequantizeLinear, a Clip to the 7-bit range, and the
  dequantized weights), built from the scales dlc reports and the documented weight
  rule: per output channel `s = max|w| / 63`, `q = round_half_even(w / s)`.
- The generated ResNet-18: int8 against fp32 over 100 held-back inputs (not the
  calibration ones): mean cosine similarity >= 0.99, top-1 agreement reported; int8
  weights at most 0.3x the fp32 bytes.
- Fallback, calibration methods and the errors users see.
"""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import dlc
from dlc_model import DlcModel  # tests/models, on the path through conftest

WEIGHT_MAX = 63.0
ACT_MAX = 127


def save_samples(folder, name, shape, n, seed, shift=0.0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        d = folder / f"sample{i:03d}"
        d.mkdir(parents=True, exist_ok=True)
        np.save(d / f"{name}.npy", (rng.standard_normal(shape) + shift).astype(np.float32))
    return folder


def quantize_weights(w):
    """dlc's documented rule, in f32 like the compiler."""
    flat = w.reshape(w.shape[0], -1)
    amax = np.abs(flat).max(axis=1).astype(np.float32)
    s = np.where(amax > 0, amax / np.float32(WEIGHT_MAX), np.float32(1)).astype(np.float32)
    q = np.clip(np.round(flat / s[:, None]), -WEIGHT_MAX, WEIGHT_MAX)
    return (q * s[:, None]).astype(np.float32).reshape(w.shape)


# (name, cin, cout, kernel, stride, pad, dilation, relu, residual)
LAYERS = [
    ("odd_channels", 3, 10, 3, 1, 1, 1, True, False),
    ("stride2", 16, 16, 3, 2, 1, 1, False, False),
    ("dilated", 16, 24, 3, 1, 2, 2, True, False),
    ("pointwise", 16, 8, 1, 1, 0, 1, False, False),
    ("stem7x7", 3, 16, 7, 2, 3, 1, True, False),
    ("residual", 16, 16, 3, 1, 1, 1, True, True),
]


def conv_model(rng, layer, h=13, w=11):
    name, cin, cout, k, s, p, d, relu, res = layer
    wt = (rng.standard_normal((cout, cin, k, k)) * np.sqrt(2 / (cin * k * k))).astype(np.float32)
    b = (rng.standard_normal(cout) * 0.1).astype(np.float32)
    oh = (h + 2 * p - d * (k - 1) - 1) // s + 1
    ow = (w + 2 * p - d * (k - 1) - 1) // s + 1
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[k, k], strides=[s, s], pads=[p] * 4,
                              dilations=[d, d])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, h, w])]
    last = "c"
    if res:
        inputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, cout, oh, ow]))
        nodes.append(helper.make_node("Add", ["c", "r"], ["a"]))
        last = "a"
    nodes.append(helper.make_node("Relu" if relu else "Identity", [last], ["y"]))
    graph = helper.make_graph(nodes, name, inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(wt, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), wt, b, (oh, ow)


def qdq_reference(model, wt, scale, zp, feeds, transpose=False):
    """ORT on the model with x quantized (QuantizeLinear/DequantizeLinear at dlc's scale
    and zero point, clipped to the 7-bit range) and the weights dequantized (`wt` with
    output channels first; `transpose` stores them transposed, as a MatMul's B)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    g.initializer.extend([
        numpy_helper.from_array(np.array(scale, np.float32), "q_scale"),
        numpy_helper.from_array(np.array(zp, np.uint8), "q_zp"),
        numpy_helper.from_array(np.array((0 - zp) * np.float32(scale), np.float32), "q_lo"),
        numpy_helper.from_array(np.array((ACT_MAX - zp) * np.float32(scale), np.float32), "q_hi"),
    ])
    for init in g.initializer:
        if init.name == "w":
            q = quantize_weights(wt)
            init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(q.T if transpose else q), "w"))
    pre = [helper.make_node("QuantizeLinear", ["x", "q_scale", "q_zp"], ["xq"]),
           helper.make_node("DequantizeLinear", ["xq", "q_scale", "q_zp"], ["xdq"]),
           helper.make_node("Clip", ["xdq", "q_lo", "q_hi"], ["xc"])]
    g.node[0].input[0] = "xc"
    nodes = pre + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


@pytest.mark.parametrize("cpu", ["native", "x86-64"])
@pytest.mark.parametrize("layer", LAYERS, ids=[l[0] for l in LAYERS])
def test_int8_conv_matches_ort_qdq(tmp_path, layer, cpu):
    """One int8 layer (`--quantize-last`: it is the model's only layer) against ORT on the
    same quantization; `--cpu x86-64` (no AVX2) takes the exact i32 path instead of
    vpmaddubsw. Inputs with a negative shift give a non-zero zero point."""
    rng = np.random.default_rng(LAYERS.index(layer))
    model, wt, _, (oh, ow) = conv_model(rng, layer)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    cal = tmp_path / "cal"
    save_samples(cal, "x", shape, 6, seed=1, shift=0.5)
    if layer[8]:
        save_samples(cal, "r", [1, layer[2], oh, ow], 6, seed=2)
    art = tmp_path / "int8"
    dlc("compile", path, "-o", art, "--quantize", "int8", "--calibrate", cal, "--quantize-last", "--cpu", cpu)
    rep = json.loads((art / "report.json").read_text())["quantization"]
    assert rep["int8_layers"] == 1, rep
    layer_rep = rep["layers"][0]
    feeds = {"x": (np.random.default_rng(9).standard_normal(shape) + 0.5).astype(np.float32)}
    if layer[8]:
        feeds["r"] = np.random.default_rng(10).standard_normal((1, layer[2], oh, ow)).astype(np.float32)
    args = []
    for k, v in feeds.items():
        np.save(tmp_path / f"{k}.npy", v)
        args += ["--input", f"{k}={tmp_path / f'{k}.npy'}"]
    dlc("run", art, *args, "--output-dir", tmp_path / "out")
    got = np.load(tmp_path / "out" / "y.npy")
    want = qdq_reference(model, wt, layer_rep["scale"], layer_rep["zero_point"], feeds)
    # Same integers on both sides; what differs is f32 rounding of the epilogue (dlc:
    # acc x (sx * sw) + offset; ORT: sums of dequantized products).
    err = np.abs(got - want).max()
    assert err <= 1e-4 * max(1.0, np.abs(want).max()), f"max abs err {err}"
    # And quantization changed the result only a little (the layer's own error).
    f32 = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    rel = np.linalg.norm(got - f32) / np.linalg.norm(f32)
    assert rel < 0.05, rel


def range_quantization(x, qmax=ACT_MAX):
    """dlc's rule (dlc_ir::ops::range_quantization), in f32."""
    lo, hi = min(np.float32(np.nanmin(x)), np.float32(0)), max(np.float32(np.nanmax(x)), np.float32(0))
    scale = (hi - lo) / np.float32(qmax)
    return float(scale), int(np.clip(np.round(-lo / scale), 0, qmax))


@pytest.mark.parametrize("scheme", ["int8", "int8-dynamic"])
@pytest.mark.parametrize("cpu", ["native", "x86-64"])
@pytest.mark.parametrize("k,relu", [(24, False), (22, True)], ids=["k24", "k22_relu"])
def test_int8_matmul_matches_ort_qdq(tmp_path, k, relu, cpu, scheme):
    """A matrix product x[2,5,K] @ B[K,12] + bias (a row count and K that are not
    multiples of the kernels' blocks) as one int8 layer against ORT on the same
    quantization (per-column weight scales). Static: the scale and zero point dlc
    reports; dynamic: those of this input's own range, computed here."""
    rng = np.random.default_rng(k)
    wt = (rng.standard_normal((k, 12)) / np.sqrt(k)).astype(np.float32)
    b = (rng.standard_normal(12) * 0.1).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["a"]),
             helper.make_node("Relu" if relu else "Identity", ["a"], ["y"])]
    graph = helper.make_graph(nodes, "mm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(wt, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    art = tmp_path / "int8"
    if scheme == "int8":
        cal = save_samples(tmp_path / "cal", "x", [2, 5, k], 6, seed=3, shift=0.3)
        dlc("compile", path, "-o", art, "--quantize", "int8", "--calibrate", cal, "--quantize-last", "--cpu", cpu)
    else:
        dlc("compile", path, "-o", art, "--quantize", "int8-dynamic", "--quantize-last", "--cpu", cpu)
    rep = json.loads((art / "report.json").read_text())["quantization"]
    assert rep["int8_layers"] == 1 and rep["scheme"] == scheme, rep
    x = (np.random.default_rng(4).standard_normal((2, 5, k)) + 0.3).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    dlc("run", art, "--input", f"x={tmp_path / 'x.npy'}", "--output-dir", tmp_path / "out")
    got = np.load(tmp_path / "out" / "y.npy")
    # Weight channels are B's columns.
    scale, zp = ((rep["layers"][0]["scale"], rep["layers"][0]["zero_point"]) if scheme == "int8"
                 else range_quantization(x))
    want = qdq_reference(model, wt.T, scale, zp, {"x": x}, transpose=True)
    err = np.abs(got - want).max()
    assert err <= 1e-4 * max(1.0, np.abs(want).max()), f"max abs err {err}"


@pytest.mark.parametrize("cpu,want", [("icelake-server", "vpdpbusd"), ("alderlake", "vpdpbusd"),
                                      ("znver3", "vpmaddubsw"), ("x86-64", None)])
def test_int8_kernel_per_target(generated_models, tmp_path, cpu, want):
    """Which multiply instruction the int8 kernels use per target CPU: VNNI's vpdpbusd
    (AVX512-VNNI or AVX-VNNI), AVX2's vpmaddubsw, or neither (portable i32). Checked in
    the assembly only: the machine may lack the instructions, so that code is compiled
    here, not run (kir's interpreter runs every path in `cargo test`).
    Calibration runs on this machine whatever the target (a model built for a CPU with
    instructions it lacks would stop it), so compiling for them works, and so does a
    cross compile to aarch64."""
    cal = save_samples(tmp_path / "cal", "input", [1, 1, 28, 28], 4, seed=6)
    art = tmp_path / cpu
    dlc("compile", generated_models / "mnist_cnn.onnx", "-o", art, "--quantize", "int8", "--calibrate", cal,
        "--cpu", cpu, "--emit", "asm")
    asm = (art / "model.s").read_text()
    for insn in ("vpdpbusd", "vpmaddubsw"):
        assert (insn in asm) == (insn == want), f"{cpu}: {insn}"
    arm = tmp_path / "arm"
    dlc("compile", generated_models / "mnist_cnn.onnx", "-o", arm, "--quantize", "int8", "--calibrate", cal,
        "--target", "aarch64-unknown-linux-gnu", "--emit", "asm")
    assert json.loads((arm / "report.json").read_text())["quantization"]["int8_layers"] == 2


def first_output(model, x):
    """Runs a DlcModel on its one input `x`; a copy of its first output."""
    model.bind({model.input_names[0]: x})
    return model.run()[0].copy()


def test_resnet18_int8_accuracy_size(generated_models, tmp_path):
    model = generated_models / "resnet18.onnx"
    cal = save_samples(tmp_path / "cal", "input", [1, 3, 224, 224], 16, seed=100)
    fp32, int8 = tmp_path / "fp32", tmp_path / "int8"
    dlc("compile", model, "-o", fp32)
    dlc("compile", model, "-o", int8, "--quantize", "int8", "--calibrate", cal)
    r32 = json.loads((fp32 / "report.json").read_text())
    r8 = json.loads((int8 / "report.json").read_text())
    q = r8["quantization"]
    assert q["int8_layers"] == 20 and q["f32_layers"] == [], q  # every conv; the FC layer stays f32
    ratio = r8["weight_bytes"] / r32["weight_bytes"]
    assert ratio <= 0.3, ratio

    a, b = DlcModel(fp32), DlcModel(int8)
    rng = np.random.default_rng(2024)  # held back: not the calibration seed
    cos, top1 = [], 0
    for _ in range(100):
        x = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
        ya, yb = first_output(a, x).ravel(), first_output(b, x).ravel()
        cos.append(float(ya @ yb / np.linalg.norm(ya) / np.linalg.norm(yb)))
        top1 += int(ya.argmax() == yb.argmax())
    print(f"\nResNet-18 int8 vs fp32 over 100 held-back inputs: mean cosine {np.mean(cos):.5f} "
          f"(min {np.min(cos):.5f}), top-1 agreement {top1}/100, weights {ratio:.3f}x")
    assert np.mean(cos) >= 0.99, np.mean(cos)


@pytest.mark.parametrize("scheme", ["int8", "int8-dynamic"])
def test_bert_int8_accuracy(generated_models, tmp_path, scheme):
    """The BERT-shaped encoder: its matrix products int8 (the last one stays f32), against
    the fp32 artifact over 100 held-back inputs (token ids and masks not used for
    calibration): mean cosine similarity of the hidden states >= 0.99. Static with 16
    calibration samples; dynamic with none."""
    model = generated_models / "bert.onnx"
    rng = np.random.default_rng(200)
    cal = tmp_path / "cal"
    for i in range(16):
        d = cal / f"s{i:02d}"
        d.mkdir(parents=True)
        np.save(d / "input_ids.npy", rng.integers(0, 8192, (1, 128)).astype(np.int64))
        mask = np.ones((1, 128), np.int64)
        mask[:, rng.integers(64, 129):] = 0
        np.save(d / "attention_mask.npy", mask)
    fp32, int8 = tmp_path / "fp32", tmp_path / "int8"
    dlc("compile", model, "-o", fp32)
    extra = ["--calibrate", cal] if scheme == "int8" else []
    dlc("compile", model, "-o", int8, "--quantize", scheme, *extra)
    q = json.loads((int8 / "report.json").read_text())["quantization"]
    assert q["int8_layers"] == 11 and q["f32_layers"] == [], q
    a, b = DlcModel(fp32), DlcModel(int8)
    rng = np.random.default_rng(2025)
    cos = []
    for _ in range(100):
        mask = np.ones((1, 128), np.int64)
        mask[:, rng.integers(64, 129):] = 0
        feeds = {"input_ids": rng.integers(0, 8192, (1, 128)).astype(np.int64), "attention_mask": mask}
        a.bind(feeds)
        b.bind(feeds)
        ya, yb = a.run()[0].ravel().astype(np.float64), b.run()[0].ravel().astype(np.float64)
        cos.append(ya @ yb / np.linalg.norm(ya) / np.linalg.norm(yb))
    print(f"\nBERT {scheme} vs fp32 over 100 held-back inputs: mean cosine {np.mean(cos):.6f} (min {np.min(cos):.6f})")
    assert np.mean(cos) >= 0.99, np.mean(cos)


def test_threshold_fallback_and_percentile(generated_models, tmp_path):
    """An outlier in one calibration sample stretches min-max ranges: the first layer's
    error goes over the threshold and it stays f32 (the report names it); percentile
    calibration ignores the outlier and quantizes it. A zero threshold keeps every layer
    f32, and the model then computes exactly what the fp32 artifact does."""
    model = generated_models / "mnist_cnn.onnx"
    cal = save_samples(tmp_path / "cal", "input", [1, 1, 28, 28], 8, seed=5)
    spiked = np.load(cal / "sample000" / "input.npy")
    spiked[0, 0, 3, 3] = 2000.0
    np.save(cal / "sample000" / "input.npy", spiked)
    mm = tmp_path / "minmax"
    dlc("compile", model, "-o", mm, "--quantize", "int8", "--calibrate", cal, "--quantize-last")
    q = json.loads((mm / "report.json").read_text())["quantization"]
    first = q["layers"][0]
    assert not first["int8"] and first["error"] > q["threshold"] and first["layer"] in q["f32_layers"], q
    pc = tmp_path / "pct"
    dlc("compile", model, "-o", pc, "--quantize", "int8", "--calibrate", cal, "--quantize-last",
        "--calibration", "percentile", "--percentile", "99.9")
    q = json.loads((pc / "report.json").read_text())["quantization"]
    assert q["layers"][0]["int8"], q

    none = tmp_path / "none"
    p = dlc("compile", model, "-o", none, "--quantize", "int8", "--calibrate", cal, "--quantize-threshold", "0",
            "--report")
    q = json.loads((none / "report.json").read_text())["quantization"]
    assert q["int8_layers"] == 0 and len(q["f32_layers"]) == len(q["layers"]) > 0
    assert "kept f32" in p.stdout
    fp32 = tmp_path / "fp32"
    dlc("compile", model, "-o", fp32)
    x = np.random.default_rng(1).standard_normal((1, 1, 28, 28)).astype(np.float32)
    ya, yb = first_output(DlcModel(fp32), x), first_output(DlcModel(none), x)
    assert np.array_equal(ya, yb)


def test_quantize_errors(generated_models, tmp_path):
    model = generated_models / "resnet18.onnx"
    p = dlc("compile", model, "-o", tmp_path / "a", "--quantize", "int8", check=False)
    assert p.returncode != 0 and "--calibrate" in p.stderr
    p = dlc("compile", model, "-o", tmp_path / "a", "--calibrate", tmp_path, check=False)
    assert p.returncode != 0 and "--quantize int8" in p.stderr
    (tmp_path / "cal" / "s0").mkdir(parents=True)
    np.save(tmp_path / "cal" / "s0" / "other.npy", np.zeros(3, np.float32))
    p = dlc("compile", model, "-o", tmp_path / "a", "--quantize", "int8", "--calibrate", tmp_path / "cal",
            check=False)
    assert p.returncode != 0 and "input.npy" in p.stderr and "s0" in p.stderr, p.stderr
    p = dlc("compile", model, "-o", tmp_path / "a", "--quantize", "int8-dynamic", "--calibrate", tmp_path,
            check=False)
    assert p.returncode != 0 and "run time" in p.stderr, p.stderr
    (tmp_path / "empty").mkdir()
    p = dlc("compile", model, "-o", tmp_path / "a", "--quantize", "int8", "--calibrate", tmp_path / "empty",
            check=False)
    assert p.returncode != 0 and "no sample folders" in p.stderr, p.stderr
