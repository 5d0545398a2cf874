"""CUDA artifacts (`dlc compile --target nvptx64-nvidia-cuda`), checked without a GPU:

- every PTX dlc emits assembles with NVIDIA's `ptxas` (PyPI's nvidia-cuda-nvcc, installed
  by scripts/setup.sh) for sm_80 and sm_90;
- `dlc run --simulate` (the same kernels compiled for the host, grid and block indices as
  loops, shared memory and barriers modelled) matches ONNX Runtime on the reference
  models and on small models that reach every kernel variant;
- a CUDA artifact run without a driver fails with a clear error.

scripts/gpu-check runs the same artifacts on a real GPU.
"""
import glob
import json
import os
import re
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import FILETESTS, ROOT, assert_close, dlc, dlc_bin, dlc_run, ort_run, random_inputs
from test_against_ort import OP_MODELS

CUDA = ["--target", "nvptx64-nvidia-cuda"]
ARCHS = ["sm_80", "sm_90"]


@pytest.fixture(scope="session")
def ptxas():
    found = sorted(glob.glob(str(ROOT / ".venv" / "lib" / "python*" / "site-packages" / "nvidia" / "*" / "bin" /
                                 "ptxas")))
    assert found, "ptxas not found in .venv (scripts/setup.sh installs nvidia-cuda-nvcc)"
    return found[-1]


def assemble(ptxas, art, arch):
    """ptxas on the artifact's PTX for `arch`; returns its resource report."""
    p = subprocess.run([ptxas, f"-arch={arch}", "-v", str(art / "model.ptx"), "-o", os.devnull],
                       capture_output=True, text=True)
    assert p.returncode == 0, f"ptxas -arch={arch} rejected {art}/model.ptx:\n{p.stderr}"
    return p.stderr


def simulate(art, model_path, feeds, workdir):
    return dlc_run(art, model_path, feeds, workdir, ["--simulate"]), ort_run(model_path, feeds)


def compile_check(model_path, tmp_path, ptxas, archs=ARCHS):
    """Compiles for every arch (each PTX through ptxas); returns the first artifact."""
    arts = []
    for arch in archs:
        art = tmp_path / f"cuda_{arch}"
        dlc("compile", model_path, "-o", art, *CUDA, "--cpu", arch)
        report = assemble(ptxas, art, arch)
        # Accumulators and indices stay in registers: no kernel spills.
        spills = re.findall(r"(\d+) bytes spill stores", report)
        assert spills and all(s == "0" for s in spills), report
        arts.append(art)
    return arts[0]


@pytest.mark.parametrize("name", ["mlp", "resnet18", "mobilenetv2", "bert"])
def test_reference_model_on_cuda(name, generated_models, tmp_path, ptxas):
    model_path = generated_models / f"{name}.onnx"
    art = compile_check(model_path, tmp_path, ptxas)
    manifest = json.loads((art / "manifest.json").read_text())
    assert manifest["target_triple"] == "nvptx64-nvidia-cuda" and manifest["cpu"] == "sm_80"
    table = json.loads((art / "launch.json").read_text())
    ptx = (art / "model.ptx").read_text()
    # Every launch names a kernel of the PTX with a grid and block within CUDA's limits.
    for launch in table["launches"]:
        assert f".entry {launch['kernel']}(" in ptx
        assert 1 <= launch["block"][0] <= 1024 and launch["block"][0] % 32 == 0
        assert all(g >= 1 for g in launch["grid"])
        assert launch["shared_bytes"] <= 48 * 1024
        assert not launch["serial"], f"{launch['node']} has no parallel kernel"
    assert (art / "model.weights").stat().st_size == table["weight_bytes"]
    feeds = random_inputs(model_path, seed=3)
    got, want = simulate(art, model_path, feeds, tmp_path)
    for k in want:
        assert_close(got[k], want[k], f"{name} output {k} (simulated CUDA)")


@pytest.mark.parametrize("name", ["mlp", "mnist_cnn", "bert"])
def test_models_kir_compiles_for_cuda(name, generated_models, tmp_path, ptxas):
    """`--emit kir` for CUDA writes the program of the CUDA kernels (block kernels, one
    element per thread); `dlc compile model.kir --target nvptx64-nvidia-cuda` compiles it
    into an artifact whose PTX and launch table equal the directly compiled artifact's (a
    consistency check of two dlc paths), which ptxas assembles and which, simulated,
    matches ONNX Runtime."""
    src = generated_models / f"{name}.onnx"
    dlc("compile", src, "-o", tmp_path / "direct", *CUDA)
    dlc("compile", src, "-o", tmp_path / "k", *CUDA, "--emit", "kir")
    text = (tmp_path / "k" / "model.kir").read_text()
    assert " threads {" in text and " parallel {" not in text
    art = tmp_path / "from_kir"
    dlc("compile", tmp_path / "k" / "model.kir", "-o", art, *CUDA)
    assert (art / "model.ptx").read_text() == (tmp_path / "direct" / "model.ptx").read_text()
    assert (json.loads((art / "launch.json").read_text()) ==
            json.loads((tmp_path / "direct" / "launch.json").read_text()))
    for arch in ARCHS:
        assemble(ptxas, art, arch)
    feeds = random_inputs(src, seed=4)
    got, want = simulate(art, src, feeds, tmp_path)
    for k in want:
        assert_close(got[k], want[k], f"{name} output {k} (simulated CUDA, from kir)")


def test_kernels_use_shared_memory_barriers_and_shuffles(generated_models, tmp_path):
    art = tmp_path / "bert"
    dlc("compile", generated_models / "bert.onnx", "-o", art, *CUDA)
    ptx = (art / "model.ptx").read_text()
    table = json.loads((art / "launch.json").read_text())
    ops = {l["op"] for l in table["launches"]}
    assert {"matmul", "attention", "layernorm", "gather"} <= ops
    assert ".shared" in ptx and "bar.sync" in ptx and "shfl.sync.bfly" in ptx
    # The tiled GEMM stages tiles in shared memory; the row kernels reduce with shuffles.
    gemm = next(l for l in table["launches"] if l["op"] == "matmul")
    assert gemm["shared_bytes"] >= 2 * 16 * 64 * 4


def model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "cuda_case", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8 if opset < 21 else 10
    onnx.checker.check_model(m)
    return m


def vi(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def w(rng, name, shape, scale=0.5):
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def case_models():
    rng = np.random.default_rng(7)
    cases = {}
    # Elementwise with broadcasting, fused into one kernel by the optimiser.
    cases["elementwise"] = model(
        [helper.make_node("Add", ["x", "b"], ["s"]), helper.make_node("Sigmoid", ["s"], ["g"]),
         helper.make_node("Mul", ["s", "g"], ["m"]), helper.make_node("Tanh", ["m"], ["t"]),
         helper.make_node("Abs", ["x"], ["a"]), helper.make_node("Sqrt", ["a"], ["r"]),
         helper.make_node("Sub", ["t", "r"], ["y"])],
        [vi("x", [2, 3, 4, 5])], [vi("y", [2, 3, 4, 5])], [w(rng, "b", [3, 1, 5])])
    # Grouped, strided, dilated convolution with asymmetric padding, and a depthwise one
    # with Clip (ReLU6), then a 1x1 with bias, residual and ReLU.
    cases["conv"] = model(
        [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], group=2, strides=[2, 1], dilations=[1, 2],
                          pads=[1, 2, 0, 1]),
         helper.make_node("Conv", ["c1", "w2"], ["c2"], group=6, pads=[1, 1, 1, 1]),
         helper.make_node("Clip", ["c2", "lo", "hi"], ["c3"]),
         helper.make_node("Conv", ["c3", "w3", "b3"], ["c4"]),
         helper.make_node("Add", ["c4", "c3"], ["c5"]), helper.make_node("Relu", ["c5"], ["y"])],
        [vi("x", [2, 4, 11, 9])], [vi("y", [2, 6, 5, 8])],
        [w(rng, "w1", [6, 2, 3, 3]), w(rng, "b1", [6]), w(rng, "w2", [6, 1, 3, 3]),
         numpy_helper.from_array(np.float32(0.0), "lo"), numpy_helper.from_array(np.float32(6.0), "hi"),
         w(rng, "w3", [6, 6, 1, 1]), w(rng, "b3", [6])])
    # Batched, broadcasting matmul with a ragged (non-tile-multiple) shape.
    cases["matmul"] = model(
        [helper.make_node("MatMul", ["a", "b"], ["y"])],
        [vi("a", [2, 1, 70, 33]), vi("b", [3, 33, 65])], [vi("y", [2, 3, 70, 65])])
    # Gemm with both transposes, alpha, beta and a broadcast column C; then Softmax along a
    # middle axis.
    cases["gemm_softmax"] = model(
        [helper.make_node("Gemm", ["a", "b", "c"], ["g"], transA=1, transB=1, alpha=0.5, beta=2.0),
         helper.make_node("Reshape", ["g", "shape"], ["r"]),
         helper.make_node("Softmax", ["r"], ["y"], axis=1)],
        [vi("a", [40, 18])], [vi("y", [2, 9, 20])],
        [w(rng, "b", [20, 40]), w(rng, "c", [18, 1]),
         numpy_helper.from_array(np.array([2, 9, 20], np.int64), "shape")])
    # Pools: max with padding and dilation, average counting the padding, global average.
    cases["pools"] = model(
        [helper.make_node("MaxPool", ["x"], ["p1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                          dilations=[1, 2]),
         helper.make_node("AveragePool", ["x"], ["p2"], kernel_shape=[3, 2], pads=[1, 0, 1, 1],
                          count_include_pad=1),
         helper.make_node("GlobalAveragePool", ["x"], ["p3"])],
        [vi("x", [2, 3, 10, 12])], [vi("p1", [2, 3, 5, 5]), vi("p2", [2, 3, 10, 12]), vi("p3", [2, 3, 1, 1])])
    # LayerNorm over the last two dims (with its mean and inverse deviation), and Gather of
    # rows with negative indices.
    cases["layernorm_gather"] = model(
        [helper.make_node("Gather", ["table", "idx"], ["e"], axis=0),
         helper.make_node("LayerNormalization", ["e", "scale", "bias"], ["y", "mean", "inv_std"], axis=-2,
                          epsilon=1e-5)],
        [vi("idx", [3, 2], TensorProto.INT64)],
        [vi("y", [3, 2, 6, 5]), vi("mean", [3, 2, 1, 1]), vi("inv_std", [3, 2, 1, 1])],
        [w(rng, "table", [10, 6, 5], 2.0), w(rng, "scale", [6, 5]), w(rng, "bias", [5])])
    # Data movement: a transpose, a slice with a negative step, a concat.
    slice_args = [numpy_helper.from_array(np.array([v], np.int64), k)
                  for k, v in [("st", 4), ("en", -100), ("ax", 3), ("sp", -2)]]
    cases["movement"] = model(
        [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
         helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["s"]),
         helper.make_node("Concat", ["x", "s"], ["c"], axis=3)],
        [vi("x", [2, 3, 4, 5])], [vi("t", [2, 4, 5, 3]), vi("c", [2, 3, 4, 8])], slice_args)
    # Reductions (one thread per output), LogSoftmax, Pad and Trilu (one thread per
    # element), and ops that run their CPU loop nest on one GPU thread (CumSum, Hardmax).
    cases["reductions_serial"] = model(
        [helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=1),
         helper.make_node("ReduceMax", ["x", "axes"], ["mx"], keepdims=0),
         helper.make_node("ArgMax", ["x"], ["am"], axis=2, select_last_index=1),
         helper.make_node("LogSoftmax", ["x"], ["ls"], axis=-1),
         helper.make_node("CumSum", ["x", "cax"], ["cs"], reverse=1),
         helper.make_node("Pad", ["x", "pads"], ["pd"], mode="reflect"),
         helper.make_node("Trilu", ["x"], ["tr"], upper=1),
         helper.make_node("Hardmax", ["x"], ["hm"], axis=1)],
        [vi("x", [2, 5, 7])],
        [vi("m", [2, 1, 7]), vi("mx", [2, 7]), vi("am", [2, 5, 1], TensorProto.INT64), vi("ls", [2, 5, 7]),
         vi("cs", [2, 5, 7]), vi("pd", [2, 7, 9]), vi("tr", [2, 5, 7]), vi("hm", [2, 5, 7])],
        [numpy_helper.from_array(np.array([1], np.int64), "axes"), numpy_helper.from_array(np.int64(1), "cax"),
         numpy_helper.from_array(np.array([0, 1, 1, 0, 1, 1], np.int64), "pads")], opset=18)
    # Reductions of long rows: a block per output, warp shuffles (and a short one per thread).
    ax = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)  # noqa: E731
    cases["row_reductions"] = model(
        [helper.make_node("ReduceMean", ["x", "a23"], ["mean"], keepdims=1),
         helper.make_node("ReduceMax", ["x", "a23"], ["max"], keepdims=0),
         helper.make_node("ReduceMin", ["x", "a3"], ["min"], keepdims=0),
         helper.make_node("ReduceL2", ["x", "a123"], ["l2"], keepdims=0),
         helper.make_node("ReduceL1", ["x", "a23"], ["l1"], keepdims=0),
         helper.make_node("ReduceSumSquare", ["x", "a23"], ["ss"], keepdims=0),
         helper.make_node("ReduceSum", ["x"], ["sum"], keepdims=0),
         helper.make_node("GlobalAveragePool", ["x"], ["gap"])],
        [vi("x", [3, 4, 20, 15])],
        [vi("mean", [3, 4, 1, 1]), vi("max", [3, 4]), vi("min", [3, 4, 20]), vi("l2", [3]), vi("l1", [3, 4]),
         vi("ss", [3, 4]), vi("sum", []), vi("gap", [3, 4, 1, 1])],
        [ax("a23", [2, 3]), ax("a3", [3]), ax("a123", [1, 2, 3])], opset=18)
    # The math functions the GPU has no library for (fastmath and compositions), at the
    # tests' usual tolerance.
    three = numpy_helper.from_array(np.float32(3.0), "three")
    tenth = numpy_helper.from_array(np.float32(0.1), "tenth")
    one = numpy_helper.from_array(np.float32(1.0), "one")
    nine = numpy_helper.from_array(np.float32(0.9), "nine")
    math_nodes = [
        helper.make_node("Mul", ["x", "three"], ["x3"]), helper.make_node("Tanh", ["x"], ["th"]),
        helper.make_node("Abs", ["x"], ["ax"]), helper.make_node("Add", ["ax", "tenth"], ["pos"]),
        helper.make_node("Mul", ["x", "x"], ["xx"]), helper.make_node("Add", ["xx", "one"], ["ge1"]),
        helper.make_node("Mul", ["th", "nine"], ["th9"]),
        helper.make_node("Sin", ["x3"], ["sin"]), helper.make_node("Cos", ["x3"], ["cos"]),
        helper.make_node("Tan", ["x"], ["tan"]), helper.make_node("Atan", ["x3"], ["atan"]),
        helper.make_node("Asin", ["th"], ["asin"]), helper.make_node("Acos", ["th"], ["acos"]),
        helper.make_node("Sinh", ["x"], ["sinh"]), helper.make_node("Cosh", ["x"], ["cosh"]),
        helper.make_node("Asinh", ["x3"], ["asinh"]), helper.make_node("Acosh", ["ge1"], ["acosh"]),
        helper.make_node("Atanh", ["th9"], ["atanh"]), helper.make_node("Log", ["pos"], ["log"]),
        helper.make_node("Pow", ["pos", "x"], ["pow"]), helper.make_node("LogSoftmax", ["x3"], ["lsm"]),
    ]
    outs = ["sin", "cos", "tan", "atan", "asin", "acos", "sinh", "cosh", "asinh", "acosh", "atanh", "log", "pow",
            "lsm"]
    cases["math"] = model(math_nodes, [vi("x", [4, 64])], [vi(o, [4, 64]) for o in outs], [three, tenth, one, nine])
    # ConvTranspose, GridSample and Einsum: one output per thread from their kir kernels.
    grid = numpy_helper.from_array((rng.random((2, 5, 6, 2)) * 2.4 - 1.2).astype(np.float32), "grid")
    cases["kir_per_output"] = model(
        [helper.make_node("ConvTranspose", ["x", "wt", "bt"], ["ct"], strides=[2, 2], pads=[1, 1, 1, 1]),
         helper.make_node("GridSample", ["ct", "grid"], ["gs"], mode="linear", padding_mode="reflection"),
         helper.make_node("Einsum", ["gs", "e"], ["y"], equation="nchw,wk->nchk")],
        [vi("x", [2, 3, 4, 4])], [vi("y", [2, 2, 5, 4])],
        [w(rng, "wt", [3, 2, 3, 3]), w(rng, "bt", [2]), grid, w(rng, "e", [6, 4])], opset=20)
    # RMS normalisation (opset 23).
    cases["rmsnorm"] = model(
        [helper.make_node("RMSNormalization", ["x", "s"], ["y"], axis=-1, epsilon=1e-5)],
        [vi("x", [4, 300])], [vi("y", [4, 300])], [w(rng, "s", [300])], opset=23)
    return cases


CASES = case_models()


@pytest.mark.parametrize("name", sorted(CASES))
def test_kernel_variants_simulated(name, tmp_path, ptxas):
    path = tmp_path / f"{name}.onnx"
    onnx.save(CASES[name], path)
    art = compile_check(path, tmp_path, ptxas)
    rng = np.random.RandomState(11)
    feeds = {}
    for i in CASES[name].graph.input:
        shape = [d.dim_value for d in i.type.tensor_type.shape.dim]
        if i.type.tensor_type.elem_type == TensorProto.INT64:
            feeds[i.name] = rng.randint(-10, 10, size=shape).astype(np.int64)
        else:
            feeds[i.name] = rng.randn(*shape).astype(np.float32)
    got, want = simulate(art, path, feeds, tmp_path)
    for k in want:
        assert_close(got[k], want[k], f"{name} output {k} (simulated CUDA)")
    if name == "kir_per_output":
        launches = json.loads((art / "launch.json").read_text())["launches"]
        assert launches and not any(la["serial"] for la in launches), launches


@pytest.mark.parametrize("name", OP_MODELS)
def test_op_models_simulated(name, tmp_path, ptxas):
    """Every committed filetest model (elementwise ops of every dtype, fusion patterns,
    activations, integer ops, convolutions, pools, linalg, movement...) for CUDA: ptxas
    for sm_80, and the simulation against ONNX Runtime."""
    model = FILETESTS / name
    art = compile_check(model, tmp_path, ptxas, archs=["sm_80"])
    feeds = random_inputs(model, seed=1)
    got, want = simulate(art, model, feeds, tmp_path)
    assert set(got) == set(want)
    for k in want:
        assert_close(got[k], want[k], f"{name}:{k} (simulated CUDA)")


def test_unsupported_ops_are_named(tmp_path):
    path = tmp_path / "exp64.onnx"
    d = TensorProto.DOUBLE
    onnx.save(model([helper.make_node("Exp", ["x"], ["y"], name="the_exp")], [vi("x", [4], d)], [vi("y", [4], d)]),
              path)
    p = dlc("compile", path, "-o", tmp_path / "a", *CUDA, check=False)
    assert p.returncode == 1
    assert "node 'the_exp' (exp)" in p.stderr and "'exp'" in p.stderr and "CUDA" in p.stderr, p.stderr


def test_cli_errors(generated_models, tmp_path):
    mlp = generated_models / "mlp.onnx"
    p = dlc("compile", mlp, "-o", tmp_path / "x", *CUDA, "--emit", "so", check=False)
    assert p.returncode == 1 and "--emit so is for CPU targets" in p.stderr, p.stderr
    p = dlc("compile", mlp, "-o", tmp_path / "x", *CUDA, "--cpu", "znver3", check=False)
    assert p.returncode == 1 and "'znver3' is not a GPU architecture" in p.stderr, p.stderr
    cpu = tmp_path / "cpu"
    dlc("compile", mlp, "-o", cpu)
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 784), np.float32))
    p = dlc("run", cpu, "--simulate", "--input", f"input={x}", "-o", tmp_path / "o", check=False)
    assert p.returncode == 1 and "--simulate runs CUDA artifacts" in p.stderr, p.stderr


def test_running_without_a_driver_says_so(generated_models, tmp_path):
    art = tmp_path / "mlp"
    dlc("compile", generated_models / "mlp.onnx", "-o", art, *CUDA)
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 784), np.float32))
    env = dict(os.environ, DLC_CUDA_DRIVER="/nonexistent/libcuda.so.1")
    p = subprocess.run([dlc_bin(), "run", str(art), "--input", f"input={x}", "-o", str(tmp_path / "o")],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 1
    assert "cannot open the CUDA driver (tried /nonexistent/libcuda.so.1)" in p.stderr, p.stderr
    assert "--simulate" in p.stderr, p.stderr
    p = subprocess.run([dlc_bin(), "bench", str(art), "--iters", "2"], capture_output=True, text=True, env=env)
    assert p.returncode == 1
    assert "running on the GPU: cannot open the CUDA driver" in p.stderr, p.stderr


def test_gpu_check_script_dry_run(tmp_path):
    """scripts/gpu-check's comparison logic, with the kernels simulated (no GPU here)."""
    script = ROOT / "scripts" / "gpu_check.py"
    p = subprocess.run([sys.executable, str(script), "--simulate", "--models", "mlp", "--iters", "3"],
                       capture_output=True, text=True, env=dict(os.environ, DLC_BIN=dlc_bin()))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "| mlp |" in p.stdout and "outputs agree" in p.stdout, p.stdout


def test_int8_model_on_cuda_matches_the_cpu_artifact(generated_models, tmp_path, ptxas):
    """`--quantize int8` for CUDA: the int8 kernels are dlc-lower's exact-i32 path on one
    GPU thread (noted at compile time). Its PTX assembles; simulated, it gives the CPU
    int8 artifact's outputs (VNNI, AVX2 pairs or exact i32 there: a consistency check of
    two dlc targets, the int8 numbers themselves are checked against ORT in
    test_quantize.py)."""
    from test_quantize import save_samples
    src = generated_models / "mnist_cnn.onnx"
    cal = save_samples(tmp_path / "cal", "input", [1, 1, 28, 28], 4, seed=6)
    gpu, cpu = tmp_path / "gpu", tmp_path / "cpu"
    p = dlc("compile", src, "-o", gpu, "--quantize", "int8", "--calibrate", cal, *CUDA)
    assert "(qconv)" in p.stderr and "(quant_pack)" in p.stderr, p.stderr
    assemble(ptxas, gpu, "sm_80")
    dlc("compile", src, "-o", cpu, "--quantize", "int8", "--calibrate", cal)
    feeds = random_inputs(src, seed=4)
    got = dlc_run(gpu, src, feeds, tmp_path, ["--simulate"])
    want = dlc_run(cpu, src, feeds, tmp_path)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=k)
