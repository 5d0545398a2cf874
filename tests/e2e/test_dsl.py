"""Models written in the dlc language (examples/dsl/*.dlc) against ONNX Runtime.

The examples initialise their parameters from seeds. The reference rebuilds each model
in ONNX with weights from this file's own implementation of the initialisers as
docs/dsl.md documents them (splitmix64 seeded with `seed ^ fnv1a64(full name)`,
Box-Muller normals), so the check covers the language's semantics, its initialisers and
the compiled code; nothing in the expected outputs comes from dlc. A safetensors case
checks `weights` / `param ... from`.
"""
import json
import struct

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import ROOT, assert_close, dlc, ort_run

EXAMPLES = ROOT / "examples" / "dsl"
M64 = (1 << 64) - 1


class Rng:
    def __init__(self, seed, name):
        h = 0xCBF29CE484222325
        for b in name.encode():
            h = ((h ^ b) * 0x100000001B3) & M64
        self.state = (seed ^ h) & M64

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & M64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)

    def uniform(self):
        return (self.next() >> 11) / float(1 << 53)

    def normal(self):
        u1 = 1.0 - self.uniform()
        u2 = self.uniform()
        return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def normal(name, shape, seed, std, mean=0.0):
    r = Rng(seed, name)
    n = int(np.prod(shape))
    return np.array([mean + std * r.normal() for _ in range(n)], np.float64).astype(np.float32).reshape(shape)


def save(nodes, inputs, outputs, inits, path):
    g = helper.make_graph(nodes, "ref", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)
    return path


def vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def mlp_reference(path):
    w = {
        "w1": normal("w1", (784, 128), 1, 0.05), "b1": np.zeros(128, np.float32),
        "w2": normal("w2", (128, 10), 2, 0.1), "b2": np.full(10, 0.01, np.float32),
    }
    n = helper.make_node
    nodes = [n("MatMul", ["x", "w1"], ["m1"]), n("Add", ["m1", "b1"], ["a1"]), n("Relu", ["a1"], ["h"]),
             n("MatMul", ["h", "w2"], ["m2"]), n("Add", ["m2", "b2"], ["logits"])]
    return save(nodes, [vi("x", [1, 784])], [vi("logits", [1, 10])], w, path)


def cnn_reference(path):
    w = {"stem": normal("stem", (16, 3, 3, 3), 1, 0.2), "stem_b": np.zeros(16, np.float32),
         "fc": normal("fc", (16, 10), 2, 0.3), "fc_b": np.zeros(10, np.float32)}
    n = helper.make_node
    pads = [1, 1, 1, 1]
    nodes = [n("Conv", ["image", "stem", "stem_b"], ["s"], strides=[2, 2], pads=pads), n("Relu", ["s"], ["x"])]
    prev = "x"
    for b in ("b1", "b2"):
        w[f"{b}.w1"] = normal(f"{b}.w1", (16, 16, 3, 3), 3, 0.1)
        w[f"{b}.b1"] = np.zeros(16, np.float32)
        w[f"{b}.w2"] = normal(f"{b}.w2", (16, 16, 3, 3), 4, 0.1)
        w[f"{b}.b2"] = np.full(16, 0.05, np.float32)
        nodes += [n("Conv", [prev, f"{b}.w1", f"{b}.b1"], [f"{b}c1"], pads=pads), n("Relu", [f"{b}c1"], [f"{b}h"]),
                  n("Conv", [f"{b}h", f"{b}.w2", f"{b}.b2"], [f"{b}c2"], pads=pads),
                  n("Add", [f"{b}c2", prev], [f"{b}s"]), n("Relu", [f"{b}s"], [b])]
        prev = b
    nodes += [n("GlobalAveragePool", ["b2"], ["gap"]), n("Flatten", ["gap"], ["pooled"]),
              n("MatMul", ["pooled", "fc"], ["mm"]), n("Add", ["mm", "fc_b"], ["logits"])]
    return save(nodes, [vi("image", [1, 3, 32, 32])], [vi("logits", [1, 10])], w, path)


def encoder_reference(path):
    n = helper.make_node
    w, nodes = {}, []

    def dense(x, din, dout, seed, label, out):
        w[f"{label}.w"] = normal(f"{label}.w", (din, dout), seed, 0.08)
        w[f"{label}.b"] = np.zeros(dout, np.float32)
        nodes.extend([n("MatMul", [x, f"{label}.w"], [out + "_mm"]), n("Add", [out + "_mm", f"{label}.b"], [out])])

    def heads(t, out):
        nodes.extend([n("Reshape", [t, "shape4"], [out + "_r"]), n("Transpose", [out + "_r"], [out], perm=[0, 2, 1, 3])])

    w["shape4"] = np.array([1, 16, 4, 16], np.int64)
    w["shape3"] = np.array([1, 16, 64], np.int64)
    w["scale"] = np.array(0.25, np.float32)
    for i, name in enumerate("qkv"):
        dense("x", 64, 64, i + 1, f"dense{i + 1}", name + "_d")
        heads(name + "_d", name)
    nodes += [n("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]), n("MatMul", ["q", "kt"], ["qk"]),
              n("Mul", ["qk", "scale"], ["qks"]), n("Softmax", ["qks"], ["scores"], axis=-1),
              n("MatMul", ["scores", "v"], ["sv"]), n("Transpose", ["sv"], ["svt"], perm=[0, 2, 1, 3]),
              n("Reshape", ["svt", "shape3"], ["ctx"])]
    dense("ctx", 64, 64, 4, "dense4", "o")
    w["ln1_g"], w["ln1_b"] = np.ones(64, np.float32), np.zeros(64, np.float32)
    nodes += [n("Add", ["x", "o"], ["r1"]), n("LayerNormalization", ["r1", "ln1_g", "ln1_b"], ["a"], epsilon=1e-12)]
    dense("a", 64, 256, 5, "dense5", "f1")
    nodes += [n("Gelu", ["f1"], ["g"])] if False else [
        n("Div", ["f1", "sqrt2"], ["g0"]), n("Erf", ["g0"], ["g1"]), n("Add", ["g1", "one"], ["g2"]),
        n("Mul", ["f1", "g2"], ["g3"]), n("Mul", ["g3", "half"], ["g"])]
    w["sqrt2"], w["one"], w["half"] = (np.array(v, np.float32) for v in (np.sqrt(2.0), 1.0, 0.5))
    dense("g", 256, 64, 6, "f", "f")
    w["ln2_g"], w["ln2_b"] = np.ones(64, np.float32), np.zeros(64, np.float32)
    nodes += [n("Add", ["a", "f"], ["r2"]), n("LayerNormalization", ["r2", "ln2_g", "ln2_b"], ["y"], epsilon=1e-12)]
    return save(nodes, [vi("x", [1, 16, 64])], [vi("y", [1, 16, 64])], w, path)


def dlc_compile_run_dsl(model, feeds, workdir):
    """Compiles a .dlc model, runs it with `dlc run`; returns {output name: array}."""
    art = workdir / "art"
    dlc("compile", model, "-o", art)
    args = []
    for k, v in feeds.items():
        np.save(workdir / f"{k}.npy", v)
        args += ["--input", f"{k}={workdir / f'{k}.npy'}"]
    dlc("run", art, *args, "--output-dir", workdir / "out")
    return {p.stem: np.load(p) for p in (workdir / "out").glob("*.npy")}


CASES = {"mlp": (mlp_reference, "x", (1, 784)), "cnn_residual": (cnn_reference, "image", (1, 3, 32, 32)),
         "encoder": (encoder_reference, "x", (1, 16, 64))}


@pytest.mark.parametrize("name", sorted(CASES))
def test_dsl_example_matches_ort(name, tmp_path):
    build, input_name, shape = CASES[name]
    ref = build(tmp_path / "ref.onnx")
    x = np.random.RandomState(7).randn(*shape).astype(np.float32)
    want = ort_run(ref, {input_name: x})
    got = dlc_compile_run_dsl(EXAMPLES / f"{name}.dlc", {input_name: x}, tmp_path)
    assert set(got) == set(want)
    for out, ref_value in want.items():
        assert_close(got[out], ref_value, f"{name}:{out}")


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for k, v in tensors.items():
        b = np.ascontiguousarray(v).tobytes()
        header[k] = {"dtype": {np.float32: "F32"}[v.dtype.type], "shape": list(v.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def test_dsl_weights_from_safetensors(tmp_path):
    rng = np.random.RandomState(3)
    w = {"fc.weight": rng.randn(6, 4).astype(np.float32), "fc.bias": rng.randn(4).astype(np.float32)}
    write_safetensors(tmp_path / "w.safetensors", w)
    (tmp_path / "m.dlc").write_text(
        'weights "w.safetensors"\n'
        "model m(x: f32[2, 6]) -> (y: f32[2, 4]) {\n"
        '  param w: f32[6, 4] from "fc.weight"\n'
        '  param b: f32[4] from "fc.bias"\n'
        "  return sigmoid(x @ w + b) * 2 - 1\n"
        "}\n")
    n = helper.make_node
    ref = save([n("MatMul", ["x", "w"], ["m"]), n("Add", ["m", "b"], ["a"]), n("Sigmoid", ["a"], ["s"]),
                n("Mul", ["s", "two"], ["t"]), n("Sub", ["t", "one"], ["y"])],
               [vi("x", [2, 6])], [vi("y", [2, 4])],
               {"w": w["fc.weight"], "b": w["fc.bias"], "two": np.array(2, np.float32), "one": np.array(1, np.float32)},
               tmp_path / "ref.onnx")
    x = rng.randn(2, 6).astype(np.float32)
    want = ort_run(ref, {"x": x})["y"]
    got = dlc_compile_run_dsl(tmp_path / "m.dlc", {"x": x}, tmp_path)["y"]
    assert_close(got, want, "safetensors")


def test_dsl_errors_exit_nonzero_with_located_diagnostics(tmp_path):
    bad = tmp_path / "bad.dlc"
    bad.write_text("model m(x: f32[2]) -> (y: f32[2]) {\n  return relu(z)\n}\n")
    p = dlc("compile", bad, "-o", tmp_path / "art", check=False)
    assert p.returncode != 0
    assert "unknown name 'z'" in p.stderr and f"{bad}:2:15" in p.stderr, p.stderr



@pytest.mark.parametrize("name", sorted(CASES))
def test_dsl_example_exported_to_onnx_matches_dlc(name, tmp_path):
    """`dlc export` writes the model as ONNX; ONNX Runtime on it agrees with dlc."""
    _, input_name, shape = CASES[name]
    exported = tmp_path / f"{name}.onnx"
    dlc("export", EXAMPLES / f"{name}.dlc", "-o", exported)
    onnx.checker.check_model(onnx.load(exported), full_check=True)
    x = np.random.RandomState(11).randn(*shape).astype(np.float32)
    want = ort_run(exported, {input_name: x})
    got = dlc_compile_run_dsl(EXAMPLES / f"{name}.dlc", {input_name: x}, tmp_path)
    assert set(got) == set(want)
    for out, ref_value in want.items():
        assert_close(got[out], ref_value, f"{name}:{out} (exported)")


def test_export_error_names_the_node(tmp_path):
    (tmp_path / "s.dlc").write_text("model m(x: f32[3]) -> (y: f32[3]) {\n  let act = swish(x)\n  return act\n}\n")
    p = dlc("export", tmp_path / "s.dlc", "-o", tmp_path / "s.onnx", check=False)
    assert p.returncode != 0
    assert "node 'act' (swish): no ONNX export for this op yet" in p.stderr, p.stderr


def test_inspect_describes_a_dlc_model():
    p = dlc("inspect", EXAMPLES / "mlp.dlc")
    params = 784 * 128 + 128 + 128 * 10 + 10
    assert f"parameters  {params} " in p.stdout, p.stdout
    assert 'input       "x": f32[1,784]' in p.stdout and 'output      "logits": f32[1,10]' in p.stdout
