"""Operands that decide shapes and arrive at run time (a Reshape target, reduction and
Squeeze/Unsqueeze axes given as inputs): one artifact computes the dims from the
values while it runs and matches ONNX Runtime for every value tried; values that break
the op's rule are clear errors from `dlc run` (dlc-runtime) and statuses from the C
ABI, never a crash or a wrong answer."""
import shutil
import subprocess

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from conftest import ROOT, assert_close, dlc, dlc_run


def _model(path, nodes, inputs, outputs, opset=18):
    g = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    onnx.save(m, path)
    return path


def _ort(path, feeds):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def _check(path, art, feeds, tmp_path, what):
    want = _ort(path, feeds)
    got = dlc_run(art, path, feeds, tmp_path)
    for k in want:
        assert_close(got[k], want[k], f"{what}: {k}")


def _run_c(art, src, tmp_path):
    """Builds C program `src` against artifact `art`'s static library and header and
    runs it; it prints `ok` when every check it makes holds."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang-22")
    exe = tmp_path / "main"
    subprocess.run([cc, "-O2", "-std=c11", "-Wall", "-Werror", "-I", str(art), str(src), str(art / "model.a"), "-lm",
                    "-o", str(exe)], check=True)
    p = subprocess.run([str(exe)], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stdout + p.stderr


def _run_err(art, feeds, tmp_path):
    args = []
    for k, x in feeds.items():
        f = tmp_path / f"bad_{k}.npy"
        np.save(f, x)
        args += ["--input", f"{k}={f}"]
    p = dlc("run", art, *args, "-o", tmp_path / "bad_out", check=False)
    assert p.returncode != 0, "dlc run accepted values that break the op's rule"
    assert "panicked" not in p.stderr and "Segmentation" not in p.stderr, p.stderr
    return p.stderr


@pytest.fixture(scope="module")
def reshape(tmp_path_factory):
    d = tmp_path_factory.mktemp("reshape")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 12])
    s = helper.make_tensor_value_info("s", TensorProto.INT64, [3])
    path = _model(d / "reshape.onnx", [helper.make_node("Reshape", ["x", "s"], ["r"]),
                                       helper.make_node("Relu", ["r"], ["y"])], [x, s], ["y"])
    art = d / "art"
    dlc("compile", path, "-o", art, "--name", "rs")
    return path, art


@pytest.mark.parametrize("n,target", [(1, [0, 3, -1]), (3, [-1, 6, 2]), (2, [4, 3, 2]), (5, [60, 1, 1])])
def test_reshape_target_at_run_time_matches_ort(reshape, n, target, tmp_path):
    path, art = reshape
    x = np.random.RandomState(n).randn(n, 12).astype(np.float32)
    _check(path, art, {"x": x, "s": np.array(target, np.int64)}, tmp_path, f"reshape N={n} to {target}")


@pytest.mark.parametrize("target,reason", [
    ([5, -1, 1], "the -1 cannot be inferred"),
    ([-1, -1, 4], "more than one extent is -1"),
    ([2, 2, 2], "the element count would change"),
    ([-2, 3, 4], "an extent is below -1"),
])
def test_bad_reshape_targets_are_errors(reshape, target, reason, tmp_path):
    _, art = reshape
    e = _run_err(art, {"x": np.zeros((2, 12), np.float32), "s": np.array(target, np.int64)}, tmp_path)
    assert "node 'Reshape_0'" in e and reason in e, e


def test_c_abi_binds_the_dims_and_reports_bad_values(reshape, tmp_path):
    """run_dims writes the computed dims into dims[] and returns 16 + 16 * site + reason
    for a target that breaks Reshape's rule."""
    _, art = reshape
    header = (art / "model.h").read_text()
    assert "#define DLC_RS_NUM_SYMBOLS 4" in header, header
    src = tmp_path / "main.c"
    src.write_text(r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include "model.h"
int main(void) {
    float x[24], y[24];
    for (int i = 0; i < 24; i++) x[i] = (float)(i - 12);
    int64_t good[3] = {4, -1, 2}, bad[3] = {5, -1, 1};
    int64_t dims[DLC_RS_NUM_SYMBOLS] = {2, 0, 0, 0};
    uint64_t ws = dlc_rs_workspace_size_dims(dims);
    void *w = aligned_alloc(64, ws + 64);
    const void *in_good[2] = {x, good}, *in_bad[2] = {x, bad};
    void *out[1] = {y};
    int s = dlc_rs_run_dims(in_good, out, w, dims, NULL, NULL);
    if (s != 0) { printf("good: status %d\n", s); return 1; }
    if (dims[1] != 4 || dims[2] != 3 || dims[3] != 2) { printf("dims %lld %lld %lld\n", (long long)dims[1], (long long)dims[2], (long long)dims[3]); return 1; }
    for (int i = 0; i < 24; i++) if (y[i] != (x[i] > 0 ? x[i] : 0)) { printf("y[%d] = %g\n", i, y[i]); return 1; }
    s = dlc_rs_run_dims(in_bad, out, w, dims, NULL, NULL);
    if (s != 16 + 4) { printf("bad: status %d\n", s); return 1; }
    printf("ok\n");
    return 0;
}
""")
    _run_c(art, src, tmp_path)


@pytest.fixture(scope="module")
def reductions(tmp_path_factory):
    d = tmp_path_factory.mktemp("reduce")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4, 5])
    a = helper.make_tensor_value_info("axes", TensorProto.INT64, [2])
    nodes = [
        helper.make_node("ReduceSum", ["x", "axes"], ["sum_keep"], keepdims=1),
        helper.make_node("ReduceMean", ["x", "axes"], ["mean"], keepdims=0),
        helper.make_node("ReduceMax", ["x", "axes"], ["max"], keepdims=0),
        helper.make_node("ReduceL2", ["x", "axes"], ["l2"], keepdims=1),
        helper.make_node("ReduceLogSumExp", ["x", "axes"], ["lse"], keepdims=0),
    ]
    path = _model(d / "reduce.onnx", nodes, [x, a], ["sum_keep", "mean", "max", "l2", "lse"])
    art = d / "art"
    dlc("compile", path, "-o", art)
    return path, art


@pytest.mark.parametrize("axes", [[0, 1], [2, -3], [-1, 1], [1, 2]])
def test_reduction_axes_at_run_time_match_ort(reductions, axes, tmp_path):
    path, art = reductions
    x = np.random.RandomState(sum(axes) + 7).randn(3, 4, 5).astype(np.float32)
    _check(path, art, {"x": x, "axes": np.array(axes, np.int64)}, tmp_path, f"axes {axes}")


def test_bad_reduction_axes_are_errors(reductions, tmp_path):
    _, art = reductions
    x = np.zeros((3, 4, 5), np.float32)
    e = _run_err(art, {"x": x, "axes": np.array([0, 3], np.int64)}, tmp_path)
    assert "an axis is out of range" in e, e
    e = _run_err(art, {"x": x, "axes": np.array([1, -2], np.int64)}, tmp_path)
    assert "an axis is given twice" in e, e


def test_squeeze_and_unsqueeze_axes_at_run_time_match_ort(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 1, 3])
    a = helper.make_tensor_value_info("a", TensorProto.INT64, [1])
    b = helper.make_tensor_value_info("b", TensorProto.INT64, [2])
    nodes = [helper.make_node("Squeeze", ["x", "a"], ["s"]), helper.make_node("Unsqueeze", ["s", "b"], ["u"]),
             helper.make_node("Neg", ["u"], ["y"])]
    path = _model(tmp_path / "sq.onnx", nodes, [x, a, b], ["y"])
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    x = np.random.RandomState(0).randn(1, 4, 1, 3).astype(np.float32)
    for i, (sq, usq) in enumerate([([0], [0, 4]), ([2], [-1, 1]), ([-2], [2, 3])]):
        feeds = {"x": x, "a": np.array(sq, np.int64), "b": np.array(usq, np.int64)}
        (tmp_path / str(i)).mkdir()
        _check(path, art, feeds, tmp_path / str(i), f"squeeze {sq} unsqueeze {usq}")
    e = _run_err(art, {"x": x, "a": np.array([1], np.int64), "b": np.array([0, 1], np.int64)}, tmp_path)
    assert "a squeezed dim is not 1" in e, e


def test_broadcasting_a_computed_dim_is_a_clear_error(tmp_path):
    """x - max(x, axes, keepdims) with run-time axes needs broadcasting decided at run
    time, which dlc does not do yet: refused at compile time, naming the node."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])
    a = helper.make_tensor_value_info("a", TensorProto.INT64, [1])
    nodes = [helper.make_node("ReduceMax", ["x", "a"], ["m"], keepdims=1), helper.make_node("Sub", ["x", "m"], ["y"])]
    path = _model(tmp_path / "b.onnx", nodes, [x, a], ["y"])
    p = dlc("compile", path, "-o", tmp_path / "art", check=False)
    assert p.returncode != 0 and "node 'Sub_1'" in p.stderr and "computed from tensor values" in p.stderr, p.stderr


def test_kir_round_trip_keeps_the_bind_steps(reshape, tmp_path):
    """`--emit kir`, then compiling the .kir file: the same results (a consistency check
    of two dlc artifacts, each also compared with ORT)."""
    path, _ = reshape
    direct = tmp_path / "direct"
    dlc("compile", path, "-o", direct, "--emit", "so,kir")
    kir = (direct / "model.kir").read_text()
    assert "bind @" in kir and " data max [" in kir, kir[:2000]
    art = tmp_path / "from_kir"
    dlc("compile", direct / "model.kir", "-o", art)
    x = np.random.RandomState(3).randn(2, 12).astype(np.float32)
    feeds = {"x": x, "s": np.array([3, 2, -1], np.int64)}
    (tmp_path / "k").mkdir()
    _check(path, art, feeds, tmp_path / "k", "kir-compiled reshape")
    e = _run_err(art, {"x": x, "s": np.array([7, -1, 1], np.int64)}, tmp_path)
    assert "node 'Reshape_0'" in e and "cannot be inferred" in e, e


def test_slice_and_split_operands_at_run_time_match_ort(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6, 5])
    # int32 indices (Slice's other index type), cast to i64 by the importer.
    starts = helper.make_tensor_value_info("starts", TensorProto.INT32, [2])
    ends = helper.make_tensor_value_info("ends", TensorProto.INT32, [2])
    steps = helper.make_tensor_value_info("steps", TensorProto.INT32, [2])
    sizes = helper.make_tensor_value_info("sizes", TensorProto.INT64, [3])
    axes = helper.make_tensor("axes", TensorProto.INT32, [2], [1, -1])
    nodes = [
        helper.make_node("Slice", ["x", "starts", "ends", "axes", "steps"], ["s"]),
        helper.make_node("Split", ["x", "sizes"], ["p0", "p1", "p2"], axis=1),
        helper.make_node("Relu", ["s"], ["y"]),
    ]
    g = helper.make_graph(nodes, "g", [x, starts, ends, steps, sizes],
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in ["y", "p0", "p1", "p2"]],
                          initializer=[axes])
    path = tmp_path / "slice.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), path)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    cases = [
        (2, [1, 0], [5, 5], [2, 1], [1, 2, 3]),
        (1, [-1, 4], [-7, -6], [-1, -2], [6, 0, 0]),
        (3, [0, -100], [100, 100], [3, 1], [0, 0, 6]),
        (2, [4, 2], [1, 3], [1, 1], [2, 2, 2]),
    ]
    for i, (n, st, en, sp, sz) in enumerate(cases):
        feeds = {"x": np.random.RandomState(i).randn(n, 6, 5).astype(np.float32), "starts": np.array(st, np.int32),
                 "ends": np.array(en, np.int32), "steps": np.array(sp, np.int32), "sizes": np.array(sz, np.int64)}
        (tmp_path / str(i)).mkdir()
        _check(path, art, feeds, tmp_path / str(i), f"slice {st}:{en}:{sp}, split {sz} at N={n}")
    good = {"x": np.zeros((2, 6, 5), np.float32), "starts": np.array([0, 0], np.int32),
            "ends": np.array([5, 5], np.int32), "steps": np.array([1, 1], np.int32), "sizes": np.array([1, 2, 3], np.int64)}
    e = _run_err(art, {**good, "steps": np.array([1, 0], np.int32)}, tmp_path)
    assert "node 'Slice_0/window'" in e and "a step is 0" in e, e
    e = _run_err(art, {**good, "sizes": np.array([1, 2, 4], np.int64)}, tmp_path)
    assert "node 'Split_1/parts'" in e and "do not add up" in e, e


def test_equalities_of_run_time_dims_are_checked_before_a_run(tmp_path):
    """Concat of a: f32[N, 4] and b: f32[P, 4] along axis 1 needs N == P: dlc-runtime
    (`dlc run`) names both sides and the node, the C ABI's run_dims returns 3 and
    workspace_size_dims UINT64_MAX; equal dims run and match ORT."""
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 4])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["P", 4])
    path = _model(tmp_path / "c.onnx", [helper.make_node("Concat", ["a", "b"], ["y"], axis=1)], [a, b], ["y"])
    art = tmp_path / "art"
    dlc("compile", path, "-o", art, "--name", "cc")
    feeds = {"a": np.ones((3, 4), np.float32), "b": np.full((3, 4), 2, np.float32)}
    _check(path, art, feeds, tmp_path, "concat N = P = 3")
    e = _run_err(art, {"a": np.ones((2, 4), np.float32), "b": np.ones((3, 4), np.float32)}, tmp_path)
    assert "give P = 3 and N = 2, but node 'Concat_0' needs them equal" in e, e
    src = tmp_path / "main.c"
    src.write_text(r"""
#include <stdint.h>
#include <stdio.h>
#include "model.h"
int main(void) {
    int64_t bad[2] = {2, 3}, good[2] = {3, 3};
    if (dlc_cc_workspace_size_dims(bad) != UINT64_MAX) { printf("workspace for N != P\n"); return 1; }
    if (dlc_cc_workspace_size_dims(good) == UINT64_MAX) { printf("no workspace for N == P\n"); return 1; }
    if (dlc_cc_run_dims(NULL, NULL, NULL, bad, NULL, NULL) != 3) { printf("run_dims accepted N != P\n"); return 1; }
    printf("ok\n");
    return 0;
}
""")
    _run_c(art, src, tmp_path)


def test_nonzero_has_a_data_dependent_shape(tmp_path):
    """NonZero's result is i64[rank, count], count known only when the model runs: one
    artifact, inputs with different counts (none, some, all; NaN counts), matched with
    ORT; its count feeds later kernels (a Transpose of the indices)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4])
    nodes = [helper.make_node("NonZero", ["x"], ["i"]), helper.make_node("Transpose", ["i"], ["y"], perm=[1, 0])]
    g = helper.make_graph(nodes, "g", [x], [helper.make_tensor_value_info("y", TensorProto.INT64, None)])
    path = tmp_path / "nz.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), path)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.RandomState(0)
    for i, x in enumerate([np.zeros((2, 3, 4), np.float32), np.ones((1, 3, 4), np.float32),
                           rng.randint(-1, 2, (3, 3, 4)).astype(np.float32),
                           np.where(rng.rand(2, 3, 4) > 0.5, np.nan, 0).astype(np.float32)]):
        (tmp_path / str(i)).mkdir()
        got = dlc_run(art, path, {"x": x}, tmp_path / str(i))["y"]
        want = sess.run(None, {"x": x})[0]
        assert got.shape == want.shape and np.array_equal(got, want), f"case {i}: {got} vs {want}"
    out = dlc("inspect", art).stdout
    assert "computed at run time from tensor values" in out, out


def test_compress_has_a_data_dependent_shape(tmp_path):
    """Compress keeps the slices whose condition entry is true: the count is known only
    when the model runs (a condition input), matched with ORT for none, some and all
    true, with and without an axis; a constant condition is a Gather."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])
    c = helper.make_tensor_value_info("c", TensorProto.BOOL, [4])
    k = helper.make_tensor("k", TensorProto.BOOL, [3], [True, False, True])
    nodes = [helper.make_node("Compress", ["x", "c"], ["y"], axis=1), helper.make_node("Compress", ["x", "c"], ["f"]),
             helper.make_node("Compress", ["x", "k"], ["g"], axis=0)]
    g = helper.make_graph(nodes, "g", [x, c], [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                                               for o in ["y", "f", "g"]], initializer=[k])
    path = tmp_path / "compress.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 11)]), path)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    xv = np.arange(12, dtype=np.float32).reshape(3, 4)
    for i, cond in enumerate([[False] * 4, [True, False, False, True], [True] * 4]):
        (tmp_path / str(i)).mkdir()
        _check(path, art, {"x": xv, "c": np.array(cond)}, tmp_path / str(i), f"condition {cond}")
