"""Computed dims: extents a model computes from tensor values with no bound the input
shapes give (ConstantOfShape's shape, Range's bounds, Expand/Tile/Pad operands, OneHot's
depth, Resize's sizes or scales, window sizes, all given as inputs). One artifact per
model runs at several values and matches ONNX Runtime; a value that makes an extent
negative fails the run naming the node; the C ABI computes the dims with shape_values
before run_dims, and run_dims refuses dims that disagree with the inputs' values; the
text kir form keeps the prologue."""
import shutil
import subprocess

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from conftest import assert_close, dlc, dlc_run, dlc_run_process, ort_run


def _save(path, nodes, inputs, outputs, opset=19, dtype=T.FLOAT):
    """`outputs`: names (of `dtype`) or (name, dtype) pairs."""
    outs = [o if isinstance(o, tuple) else (o, dtype) for o in outputs]
    g = h.make_graph(nodes, "g", inputs, [h.make_tensor_value_info(o, t, None) for o, t in outs])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    onnx.save(m, str(path))
    return path


def _vi(name, dtype, shape):
    return h.make_tensor_value_info(name, dtype, shape)


def _models(d):
    """name: (model path, [feeds...])."""
    f32 = lambda *s: np.random.default_rng(len(s)).standard_normal(s).astype(np.float32)  # noqa: E731
    i64 = lambda *v: np.array(v, np.int64)  # noqa: E731
    out = {}
    out["constant_of_shape"] = (
        _save(d / "cos.onnx", [h.make_node("ConstantOfShape", ["s"], ["y"],
                                           value=h.make_tensor("v", T.FLOAT, [1], [2.5]))],
              [_vi("s", T.INT64, [3])], ["y"]),
        [{"s": i64(2, 3, 4)}, {"s": i64(0, 5, 1)}, {"s": i64(1, 1, 17)}],
    )
    out["range_f32"] = (
        _save(d / "range.onnx", [h.make_node("Range", ["a", "b", "c"], ["y"])],
              [_vi("a", T.FLOAT, []), _vi("b", T.FLOAT, []), _vi("c", T.FLOAT, [])], ["y"]),
        [{"a": np.array(1, np.float32), "b": np.array(7.5, np.float32), "c": np.array(0.5, np.float32)},
         {"a": np.array(3, np.float32), "b": np.array(-4, np.float32), "c": np.array(-2, np.float32)},
         {"a": np.array(5, np.float32), "b": np.array(1, np.float32), "c": np.array(1, np.float32)}],
    )
    out["range_i32"] = (
        _save(d / "range_i.onnx", [h.make_node("Range", ["a", "b", "c"], ["y"])],
              [_vi("a", T.INT32, []), _vi("b", T.INT32, []), _vi("c", T.INT32, [])], [("y", T.INT32)]),
        [{"a": np.array(-3, np.int32), "b": np.array(10, np.int32), "c": np.array(4, np.int32)}, {"a": np.array(0, np.int32), "b": np.array(0, np.int32),
                                                                    "c": np.array(1, np.int32)}],
    )
    out["expand_tile"] = (
        _save(d / "expand.onnx", [h.make_node("Expand", ["x", "s"], ["e"]), h.make_node("Tile", ["x", "r"], ["t"])],
              [_vi("x", T.FLOAT, [3, 1]), _vi("s", T.INT64, [3]), _vi("r", T.INT64, [2])], ["e", "t"]),
        [{"x": f32(3, 1), "s": i64(2, 1, 6), "r": i64(1, 4)}, {"x": f32(3, 1), "s": i64(1, 3, 1), "r": i64(3, 0)}],
    )
    out["pad"] = (
        _save(d / "pad.onnx", [h.make_node("Pad", ["x", "p", "v"], ["c"], mode="constant"),
                               h.make_node("Pad", ["x", "p"], ["r"], mode="reflect")],
              [_vi("x", T.FLOAT, [2, 3, 4]), _vi("p", T.INT64, [6]), _vi("v", T.FLOAT, [])], ["c", "r"]),
        [{"x": f32(2, 3, 4), "p": i64(0, 1, 2, 1, 0, 3), "v": np.array(-7, np.float32)},
         {"x": f32(2, 3, 4), "p": i64(0, 0, 0, 0, 2, 1), "v": np.array(0.5, np.float32)}],
    )
    out["onehot"] = (
        _save(d / "onehot.onnx", [h.make_node("OneHot", ["i", "depth", "vals"], ["y"], axis=1)],
              [_vi("i", T.INT64, [2, 3]), _vi("depth", T.INT64, []), _vi("vals", T.FLOAT, [2])], ["y"]),
        [{"i": i64(0, 2, -1, 5, 1, -4).reshape(2, 3), "depth": np.array(d_, np.int64), "vals": np.array([0, 3], np.float32)}
         for d_ in (3, 6)],
    )
    out["resize_sizes"] = (
        _save(d / "resize_sizes.onnx", [h.make_node("Resize", ["x", "", "", "sz"], ["y"], mode="linear")],
              [_vi("x", T.FLOAT, ["n", 2, 5, 6]), _vi("sz", T.INT64, [4])], ["y"]),
        [{"x": f32(1, 2, 5, 6), "sz": i64(1, 2, 9, 4)}, {"x": f32(3, 2, 5, 6), "sz": i64(3, 2, 2, 13)}],
    )
    out["resize_scales"] = (
        _save(d / "resize_scales.onnx",
              [h.make_node("Resize", ["x", "", "sc"], ["y"], mode="nearest", nearest_mode="floor")],
              [_vi("x", T.FLOAT, [1, 2, 5, 6]), _vi("sc", T.FLOAT, [4])], ["y"]),
        [{"x": f32(1, 2, 5, 6), "sc": np.array([1, 1, 2, 0.5], np.float32)},
         {"x": f32(1, 2, 5, 6), "sc": np.array([1, 1, 0.7, 3.25], np.float32)}],
    )
    out["hann"] = (
        _save(d / "hann.onnx", [h.make_node("HannWindow", ["n"], ["y"], periodic=0)], [_vi("n", T.INT64, [])],
              ["y"], opset=17),
        [{"n": np.array(8, np.int64)}, {"n": np.array(33, np.int64)}],
    )
    # Two AffineGrid nodes share one (CSE'd) slice of `size`, which the second's bind
    # reads much later: it once lost its slot to a later tensor (the memory plan did not
    # count a bind's read of its shape operand), so the run failed.
    out["affine_grid"] = (
        _save(d / "affine.onnx", [h.make_node("AffineGrid", ["theta", "size"], ["y"], align_corners=0),
                                  h.make_node("AffineGrid", ["theta", "size"], ["z"], align_corners=1)],
              [_vi("theta", T.FLOAT, [2, 2, 3]), _vi("size", T.INT64, [4])], ["y", "z"], opset=20),
        [{"theta": f32(2, 2, 3), "size": i64(2, 3, 5, 7)}, {"theta": f32(2, 2, 3), "size": i64(2, 1, 1, 4)}],
    )
    # MaxPool's Indices (row- and column-major, with padding) and MaxUnpool of a pool's
    # values at their indices, its output shape given at run time (6x6, and 7x8: the
    # indices address the whole output, as in ONNX Runtime's kernel).
    out["pool_unpool"] = (
        _save(d / "unpool.onnx",
              [h.make_node("MaxPool", ["x"], ["y", "idx"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
               h.make_node("MaxPool", ["x"], ["y2", "idx2"], kernel_shape=[2, 2], strides=[2, 2], storage_order=1),
               h.make_node("MaxPool", ["x"], ["y3", "idx2_rm"], kernel_shape=[2, 2], strides=[2, 2]),
               h.make_node("MaxUnpool", ["y3", "idx2_rm", "os"], ["u"], kernel_shape=[2, 2], strides=[2, 2])],
              [_vi("x", T.FLOAT, [2, 3, 6, 6]), _vi("os", T.INT64, [4])],
              ["y", ("idx", T.INT64), "y2", ("idx2", T.INT64), "u"], opset=22),
        [{"x": f32(2, 3, 6, 6), "os": i64(2, 3, 6, 6)}, {"x": f32(2, 3, 6, 6), "os": i64(2, 3, 7, 8)}],
    )
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("computed")
    out = {}
    for name, (path, feeds) in _models(d).items():
        art = d / f"art_{name}"
        dlc("compile", path, "-o", art)
        out[name] = (path, art, feeds)
    return out


NAMES = ["constant_of_shape", "range_f32", "range_i32", "expand_tile", "pad", "onehot", "resize_sizes",
         "resize_scales", "hann", "affine_grid", "pool_unpool"]


@pytest.mark.parametrize("name", NAMES)
def test_one_artifact_matches_ort_at_every_value(models, name, tmp_path):
    path, art, runs = models[name]
    manifest = dlc("inspect", art).stdout
    assert "computed from the inputs' values before the run" in manifest, manifest
    for i, feeds in enumerate(runs):
        w = tmp_path / f"run{i}"
        w.mkdir()
        got, want = dlc_run(art, path, feeds, w), ort_run(path, feeds)
        for k in want:
            assert_close(got[k], want[k], f"{name} run {i}: {k}")


def test_a_negative_extent_fails_the_run_naming_the_node(models, tmp_path):
    _, art, _ = models["constant_of_shape"]
    np.save(tmp_path / "s.npy", np.array([2, -1, 3], np.int64))
    p = dlc("run", art, "--input", f"s={tmp_path / 's.npy'}", "-o", tmp_path / "o", check=False)
    assert p.returncode == 1, p.stderr
    assert "node 'ConstantOfShape_0" in p.stderr and "a computed extent is negative" in p.stderr, p.stderr
    assert "panicked" not in p.stderr


def test_expand_to_an_incompatible_shape_fails_the_run(models, tmp_path):
    _, art, _ = models["expand_tile"]
    for k, v in {"x": np.zeros((3, 1), np.float32), "s": np.array([2, 2, 6], np.int64),
                 "r": np.array([1, 1], np.int64)}.items():
        np.save(tmp_path / f"{k}.npy", v)
    args = [a for k in ("x", "s", "r") for a in ("--input", f"{k}={tmp_path / f'{k}.npy'}")]
    p = dlc("run", art, *args, "-o", tmp_path / "o", check=False)
    assert p.returncode == 1 and "node 'Expand_0" in p.stderr, p.stderr


def test_kir_round_trip_keeps_the_prologue(models, tmp_path):
    """`--emit kir`, then compiling the .kir file: the same results (a consistency check
    of two dlc artifacts; each is compared with ORT)."""
    path, _, runs = models["range_f32"]
    direct = tmp_path / "direct"
    dlc("compile", path, "-o", direct, "--emit", "so,kir")
    kir = (direct / "model.kir").read_text()
    assert "computed" in kir and "\nprologue " in kir, kir[:2000]
    art = tmp_path / "from_kir"
    dlc("compile", direct / "model.kir", "-o", art)
    for i, feeds in enumerate(runs):
        w = tmp_path / f"k{i}"
        w.mkdir()
        got, want = dlc_run(art, path, feeds, w), ort_run(path, feeds)
        assert_close(got["y"], want["y"], f"kir-compiled range run {i}")


def test_c_abi_computes_the_dims_before_the_run(tmp_path):
    """shape_values fills the computed dims from the inputs' values; the caller sizes
    the output and workspace by them and run_dims runs; dims that disagree with the
    values are refused with 3 (never a write past the buffers sized for them)."""
    path = _save(tmp_path / "cos.onnx", [h.make_node("ConstantOfShape", ["s"], ["y"],
                                                     value=h.make_tensor("v", T.FLOAT, [1], [2.5]))],
                 [_vi("s", T.INT64, [3])], ["y"])
    art = tmp_path / "art"
    dlc("compile", path, "-o", art, "--name", "cs")
    header = (art / "model.h").read_text()
    assert "dlc_cs_shape_values(" in header and "#define DLC_CS_NUM_SYMBOLS 3" in header, header
    src = tmp_path / "main.c"
    src.write_text(r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include "model.h"
int main(void) {
    int64_t shape[3] = {2, 3, 4};
    int64_t dims[DLC_CS_NUM_SYMBOLS] = {0, 0, 0};
    const void *in[1] = {shape};
    void *w0 = aligned_alloc(64, dlc_cs_workspace_size_dims(dims) + 64);
    int s = dlc_cs_shape_values(in, w0, dims, NULL, NULL);
    if (s != 0 || dims[0] != 2 || dims[1] != 3 || dims[2] != 4) { printf("shape_values %d\n", s); return 1; }
    float *y = aligned_alloc(64, 64 * sizeof(float));
    void *out[1] = {y};
    void *w = aligned_alloc(64, dlc_cs_workspace_size_dims(dims) + 64);
    s = dlc_cs_run_dims(in, out, w, dims, NULL, NULL);
    if (s != 0) { printf("run %d\n", s); return 1; }
    for (int i = 0; i < 24; i++) if (y[i] != 2.5f) { printf("y[%d] = %g\n", i, y[i]); return 1; }
    dims[2] = 5;
    s = dlc_cs_run_dims(in, out, w, dims, NULL, NULL);
    if (s != 3) { printf("disagreeing dims: status %d\n", s); return 1; }
    printf("ok\n");
    return 0;
}
""")
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang-22")
    exe = tmp_path / "main"
    subprocess.run([cc, "-O2", "-std=c11", "-Wall", "-Werror", "-I", str(art), str(src), str(art / "model.a"), "-lm",
                    "-o", str(exe)], check=True)
    p = subprocess.run([str(exe)], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stdout + p.stderr


def test_det_matches_numpy_in_float64(tmp_path):
    """Det by Leibniz's formula against numpy's float64 determinant, n = 1 to 5."""
    for n in range(1, 6):
        path = _save(tmp_path / f"det{n}.onnx", [h.make_node("Det", ["x"], ["y"])], [_vi("x", T.FLOAT, [3, n, n])],
                     ["y"], opset=22)
        x = np.random.default_rng(n).standard_normal((3, n, n)).astype(np.float32)
        w = tmp_path / f"d{n}"
        w.mkdir()
        got = dlc_run(dlc_compile(path, w), path, {"x": x}, w)["y"]
        want = np.linalg.det(x.astype(np.float64))
        np.testing.assert_allclose(got.astype(np.float64), want, rtol=1e-4, atol=1e-5, err_msg=f"n={n}")


def dlc_compile(path, w):
    art = w / "art"
    dlc("compile", path, "-o", art)
    return art


def test_an_equality_of_computed_dims_is_checked_before_the_run(tmp_path):
    """`Range(0, n, 1) + Range(0, m, 1)`: both extents are computed dims, and the Add
    needs them equal (dlc does not broadcast two run-time extents). Checked after the
    prologue computes them, before the run: equal values match ONNX Runtime, others
    fail naming the node and both values (ONNX Runtime fails too)."""
    path = _save(tmp_path / "eq.onnx", [
        h.make_node("Constant", [], ["zero"], value=h.make_tensor("z", T.INT64, [], [0])),
        h.make_node("Constant", [], ["one"], value=h.make_tensor("o", T.INT64, [], [1])),
        h.make_node("Range", ["zero", "n", "one"], ["a"]),
        h.make_node("Range", ["zero", "m", "one"], ["b"]),
        h.make_node("Mul", ["a", "a"], ["a2"]),
        h.make_node("Add", ["a2", "b"], ["y"], name="the_add"),
    ], [_vi("n", T.INT64, []), _vi("m", T.INT64, [])], [("y", T.INT64)])
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    out = dlc("inspect", art).stdout
    assert "requires    " in out and "(node 'the_add" in out, out
    for v in (4, 9):
        feeds = {"n": np.array(v, np.int64), "m": np.array(v, np.int64)}
        w = tmp_path / f"ok{v}"
        w.mkdir()
        assert_close(dlc_run(art, path, feeds, w)["y"], ort_run(path, feeds)["y"], f"extent {v}")
    feeds = {"n": np.array(4, np.int64), "m": np.array(3, np.int64)}
    with pytest.raises(Exception):
        ort_run(path, feeds)
    p = dlc_run_process(art, feeds, tmp_path)
    assert p.returncode == 1 and "node 'the_add" in p.stderr and "needs them equal" in p.stderr, p.stderr
    assert "= 4 computed from tensor values" in p.stderr and "= 3 computed from tensor values" in p.stderr, p.stderr


def test_a_fused_broadcast_of_a_computed_extent_is_checked(tmp_path):
    """`ConstantOfShape(s) + Range(0, n, 1)`: the optimiser fuses the Add, broadcasting
    the constant inside the fused kernel, so no value shows the extent `s[0]`; its
    equality with the Range's length is still checked before the run (it once vanished
    in the fusion, and `s = [4], n = 3` gave 3 numbers where ONNX Runtime fails)."""
    path = _save(tmp_path / "fused.onnx", [
        h.make_node("ConstantOfShape", ["s"], ["ones"], value=h.make_tensor("v", T.FLOAT, [1], [1.5])),
        h.make_node("Constant", [], ["zero"], value=h.make_tensor("z", T.INT64, [], [0])),
        h.make_node("Constant", [], ["one"], value=h.make_tensor("o", T.INT64, [], [1])),
        h.make_node("Range", ["zero", "n", "one"], ["r"]),
        h.make_node("Cast", ["r"], ["rf"], to=T.FLOAT),
        h.make_node("Add", ["ones", "rf"], ["y"], name="the_add"),
    ], [_vi("s", T.INT64, [1]), _vi("n", T.INT64, [])], ["y"])
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    feeds = {"s": np.array([4], np.int64), "n": np.array(4, np.int64)}
    assert_close(dlc_run(art, path, feeds, tmp_path)["y"], ort_run(path, feeds)["y"], "s = [4], n = 4")
    bad = {"s": np.array([4], np.int64), "n": np.array(3, np.int64)}
    with pytest.raises(Exception):
        ort_run(path, bad)
    p = dlc_run_process(art, bad, tmp_path)
    assert p.returncode == 1 and "node 'the_add" in p.stderr and "needs them equal" in p.stderr, p.stderr
