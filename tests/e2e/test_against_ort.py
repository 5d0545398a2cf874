"""dlc compile + dlc run against ONNX Runtime on the same inputs (rtol 1e-4, atol 1e-5)."""
import subprocess
import numpy as np
import pytest
import onnxruntime as ort

from conftest import FILETESTS, assert_close, dlc, dlc_compile_run, ort_run, random_inputs

# Every committed filetest model that dlc is expected to compile.
OP_MODELS = sorted(
    p.name for p in FILETESTS.glob("*.onnx") if p.name not in ("unsupported.onnx", "symbolic_batch.onnx")
)


@pytest.mark.parametrize("name", OP_MODELS)
def test_op_model_matches_ort(name, tmp_path):
    model = FILETESTS / name
    feeds = random_inputs(model, seed=1)
    want = ort_run(model, feeds)
    got = dlc_compile_run(model, feeds, tmp_path)
    assert set(got) == set(want)
    for k in want:
        assert_close(got[k], want[k], f"{name}:{k}")


@pytest.mark.parametrize("name", ["mlp", "resnet18", "mobilenetv2", "bert"])
def test_reference_model_matches_ort(name, generated_models, tmp_path):
    model = generated_models / f"{name}.onnx"
    for seed in (0, 1):
        feeds = random_inputs(model, seed=seed)
        want = ort_run(model, feeds)
        got = dlc_compile_run(model, feeds, tmp_path / f"s{seed}")
        for k in want:
            # The outputs must carry signal, or the comparison proves little.
            assert np.abs(want[k]).max() > 1e-2, f"{name}:{k} is degenerate"
            assert_close(got[k], want[k], f"{name}:{k} (seed {seed})")


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv2", "bert"])
def test_threaded_runs_match_ort(name, generated_models, tmp_path, monkeypatch):
    """The same models with the kernels' parallel loops on two threads (DLC_NUM_THREADS)."""
    monkeypatch.setenv("DLC_NUM_THREADS", "2")
    model = generated_models / f"{name}.onnx"
    feeds = random_inputs(model, seed=2)
    want = ort_run(model, feeds)
    got = dlc_compile_run(model, feeds, tmp_path)
    for k in want:
        assert_close(got[k], want[k], f"{name}:{k} (2 threads)")


def test_artifact_forms_and_manifest(generated_models, tmp_path):
    import json

    art = tmp_path / "mlp"
    from conftest import dlc

    dlc("compile", generated_models / "mlp.onnx", "-o", art)
    for f in ["model.so", "model.a", "model.h", "model.manifest", "manifest.json", "report.json"]:
        assert (art / f).is_file(), f
    m = json.loads((art / "manifest.json").read_text())
    assert m["abi_version"] == 4  # 4: the library exports signature()
    import hashlib

    assert m["library_sha256"] == hashlib.sha256((art / "model.so").read_bytes()).hexdigest()
    assert "symbols" not in m  # every dim fixed
    assert [i["name"] for i in m["inputs"]] == ["input"]
    assert [d["fixed"] for d in m["inputs"][0]["shape"]] == [1, 784]
    assert [o["name"] for o in m["outputs"]] == ["logits", "probs"]
    assert len(m["weights_sha256"]) == 64
    assert m["target_triple"].startswith("x86_64") or m["target_triple"].startswith("aarch64")
    r = json.loads((art / "report.json").read_text())
    # 784*1024 + 1024*1024 + 1024*10 multiply-adds, 2 FLOPs each, plus elementwise work.
    assert r["flops"] >= 2 * (784 * 1024 + 1024 * 1024 + 1024 * 10)
    assert r["parameters"] == 784 * 1024 + 1024 + 1024 * 1024 + 1024 + 10 * 1024 + 10
    assert 0 < r["arena_bytes"] <= r["arena_bytes_without_reuse"]


@pytest.mark.parametrize("name", ["conv_variants.onnx", "fusion_patterns.onnx", "bert"])
def test_compiling_twice_is_deterministic(name, generated_models, tmp_path):
    """Byte-identical artifacts, the optimiser's rewrites and weight packing included,
    whatever the number of threads LLVM compiles the kernel modules on (one, then three
    on a machine of fewer cores: the grouping of kernels must not depend on it)."""
    from conftest import dlc

    model = generated_models / f"{name}.onnx" if name == "bert" else FILETESTS / name
    dlc("compile", model, "-o", tmp_path / "a", "--jobs", "1")
    dlc("compile", model, "-o", tmp_path / "b", "--jobs", "3")
    members = subprocess.run(["ar", "t", str(tmp_path / "a" / "model.a")], capture_output=True, text=True,
                             check=True).stdout.split()
    assert len(members) > 1, members  # the entry points' object and the kernel modules'
    for f in ["model.so", "model.a", "model.h", "model.manifest", "manifest.json"]:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_symbolic_batch_pinned_with_input_shape(tmp_path):
    model = FILETESTS / "symbolic_batch.onnx"
    feeds = {"x": np.random.RandomState(5).randn(3, 4).astype(np.float32)}
    want = ort_run(model, feeds)
    got = dlc_compile_run(model, feeds, tmp_path, extra=["--input-shape", "x=3x4"])
    assert_close(got["y"], want["y"], "symbolic_batch:y")


def test_cross_compile_for_aarch64(tmp_path):
    """--target aarch64 writes a static library of AArch64 code and refuses to link a .so."""
    from conftest import dlc

    art = tmp_path / "arm"
    dlc("compile", FILETESTS / "conv_variants.onnx", "-o", art, "--target", "aarch64-unknown-linux-gnu")
    data = (art / "model.a").read_bytes()
    assert data.startswith(b"!<arch>\n")
    elf = data.index(b"\x7fELF")
    assert int.from_bytes(data[elf + 18:elf + 20], "little") == 183  # EM_AARCH64
    assert not (art / "model.so").exists()
    p = dlc("compile", FILETESTS / "conv_variants.onnx", "-o", art, "--target", "aarch64-unknown-linux-gnu",
            "--emit", "so", check=False)
    assert p.returncode == 1 and "cross linker" in p.stderr


@pytest.mark.parametrize("name,max_kernels", [("resnet18", 24), ("bert", 20)])
def test_optimiser_fuses_the_reference_models(name, max_kernels, generated_models, tmp_path):
    """Issue targets: every BatchNorm, Relu and residual Add of ResNet-18 fused (<= 24
    kernels); BERT's attention, GELU and residuals fused (<= 20); the report is complete
    and the optimiser fast (the artifacts' numerics are checked against ORT above)."""
    import json

    from conftest import dlc

    dlc("compile", generated_models / f"{name}.onnx", "-o", tmp_path / "art")
    r = json.loads((tmp_path / "art" / "report.json").read_text())
    assert r["kernels"] <= max_kernels, r["kernels"]
    o = r["optimizer"]
    for k in ["egraph_nodes", "iterations", "stop_reason", "seconds", "rules_fired", "cost_before", "cost_after"]:
        assert k in o, k
    assert o["seconds"] < 2.0 and o["cost_after"] <= o["cost_before"]
    for k in ["flops", "weight_bytes", "arena_bytes"]:
        assert r[k] > 0, k


def test_qlinear_ops_match_ort_within_one_step(tmp_path):
    """QLinearMatMul (K = 300: two exact chunks) and QLinearConv (uint8, per-channel
    weight scales, int32 bias) against ONNX Runtime. dlc requantizes in f64 like the ONNX
    reference; ORT's kernels requantize in f32, so an output may differ by one
    quantization step where the scaled value sits at a rounding tie. Stated tolerance:
    every element within 1, and at least 99% identical."""
    from onnx import TensorProto, helper, numpy_helper
    import onnx

    rng = np.random.RandomState(5)
    n = helper.make_node
    f = lambda v: np.array(v, np.float32)  # noqa: E731
    inits = {
        "b": rng.randint(0, 256, (300, 9)).astype(np.uint8), "sa": f(0.02), "za": np.array(128, np.uint8),
        "sb": f(0.013), "zb": np.array(120, np.uint8), "sy": f(1.9), "zy": np.array(131, np.uint8),
        "w": rng.randint(0, 256, (6, 4, 3, 3)).astype(np.uint8), "sx": f(0.05), "zx": np.array(7, np.uint8),
        "sw": rng.uniform(0.005, 0.02, 6).astype(np.float32), "zw": np.array(128, np.uint8),
        "sc": f(0.4), "zc": np.array(100, np.uint8), "bias": rng.randint(-2000, 2000, 6).astype(np.int32),
    }
    nodes = [
        n("QLinearMatMul", ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"], ["mm"]),
        n("QLinearConv", ["x", "sx", "zx", "w", "sw", "zw", "sc", "zc", "bias"], ["cv"], pads=[1, 1, 1, 1]),
    ]
    g = helper.make_graph(
        nodes, "qlinear",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [4, 300]),
         helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 4, 7, 7])],
        [helper.make_tensor_value_info("mm", TensorProto.UINT8, None),
         helper.make_tensor_value_info("cv", TensorProto.UINT8, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    path = tmp_path / "qlinear.onnx"
    onnx.save(m, path)
    feeds = random_inputs(path, seed=3)
    want = ort_run(path, feeds)
    got = dlc_compile_run(path, feeds, tmp_path)
    for k in ("mm", "cv"):
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape
        diff = np.abs(got[k].astype(np.int64) - want[k].astype(np.int64))
        assert diff.max() <= 1, f"{k}: max diff {diff.max()}"
        assert (diff == 0).mean() >= 0.99, f"{k}: only {(diff == 0).mean():.3f} identical"


def test_quantize_static_qdq_model_matches_ort(tmp_path):
    """A small CNN quantized by onnxruntime.quantization.quantize_static (QDQ format,
    uint8 activations, per-channel int8 weights, int32 biases) compiles and matches ONNX
    Runtime executing the QDQ graph as written (graph optimisations off) within the usual
    rtol 1e-4 / atol 1e-5 (measured: identical). With its optimisations on, ORT fuses the
    patterns into integer kernels whose rounding differs (up to a few output quantization
    steps); dlc must be no further from that fused output than ORT's own unfused run is.
    dlc has no fused integer kernels yet (the int8 issue's next step)."""
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    import onnx

    rng = np.random.RandomState(0)
    n = helper.make_node
    inits = {"w1": (rng.randn(8, 3, 3, 3) * 0.3).astype(np.float32), "b1": (rng.randn(8) * 0.1).astype(np.float32),
             "w2": (rng.randn(16, 8, 3, 3) * 0.2).astype(np.float32), "b2": (rng.randn(16) * 0.1).astype(np.float32),
             "fc": (rng.randn(16, 10) * 0.3).astype(np.float32), "fcb": (rng.randn(10) * 0.1).astype(np.float32)}
    nodes = [n("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]), n("Relu", ["c1"], ["r1"]),
             n("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]), n("Relu", ["c2"], ["r2"]),
             n("GlobalAveragePool", ["r2"], ["g"]), n("Flatten", ["g"], ["f"]), n("MatMul", ["f", "fc"], ["m"]),
             n("Add", ["m", "fcb"], ["y"])]
    g = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    fp32, qdq = tmp_path / "fp32.onnx", tmp_path / "qdq.onnx"
    onnx.save(m, fp32)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": rng.randn(1, 3, 16, 16).astype(np.float32)} for _ in range(16)])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(fp32), str(qdq), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
    y_scale = float(next(numpy_helper.to_array(i) for i in onnx.load(qdq).graph.initializer if i.name == "y_scale"))
    art = tmp_path / "art"
    dlc("compile", qdq, "-o", art)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    plain = ort.InferenceSession(str(qdq), so, providers=["CPUExecutionProvider"])
    fused = ort.InferenceSession(str(qdq), providers=["CPUExecutionProvider"])
    for i in range(30):
        x = np.random.RandomState(100 + i).randn(1, 3, 16, 16).astype(np.float32)
        np.save(tmp_path / "x.npy", x)
        dlc("run", art, "--input", f"x={tmp_path / 'x.npy'}", "--output-dir", tmp_path / "out")
        got = np.load(tmp_path / "out" / "y.npy")
        want, want_fused = plain.run(None, {"x": x})[0], fused.run(None, {"x": x})[0]
        assert_close(got, want, f"qdq input {i}")
        ort_gap = np.abs(want_fused.astype(np.float64) - want).max()
        assert np.abs(got.astype(np.float64) - want_fused).max() <= ort_gap + 1e-5 + 1e-3 * y_scale
