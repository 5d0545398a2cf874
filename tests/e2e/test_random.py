"""RandomUniform(Like), RandomNormal(Like) and Bernoulli (docs/random.md). ONNX Runtime's
generator is its own, so the values are checked against an independent Python
implementation of dlc's documented generator (SplitMix64's finaliser on a counter), the
shapes and dtypes against ONNX Runtime, and the distributions statistically."""
import os
import subprocess

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from conftest import dlc, dlc_bin, dlc_run, dlc_run_process, ort_run

M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def mix64(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def seed_key(seed):
    return mix64(int(np.float32(seed).view(np.uint32)) | (1 << 32))


def units(key, n, stream, f64):
    z = [mix64((key + (2 * i + stream + 1) * GOLDEN) & M64) for i in range(n)]
    if f64:
        return np.array([x >> 11 for x in z], np.float64) * 2.0 ** -53
    return np.array([x >> 40 for x in z], np.float64) * 2.0 ** -24


def reference(normal, a, b, seed, n, f64):
    key = seed_key(seed)
    u0 = units(key, n, 0, f64)
    if not normal:
        return a + (b - a) * u0
    u1 = units(key, n, 1, f64)
    return a + b * np.sqrt(-2 * np.log(1 - u0)) * np.cos(2 * np.pi * u1)


def _save(path, nodes, ins, outs):
    onnx.save(h.make_model(h.make_graph(nodes, "g", ins, outs), opset_imports=[h.make_opsetid("", 15)]), str(path))


@pytest.mark.parametrize("normal", [False, True])
@pytest.mark.parametrize("dtype", [T.FLOAT, T.DOUBLE, T.FLOAT16])
def test_random_values_follow_the_documented_generator(normal, dtype, tmp_path):
    op, (ka, kb), (a, b) = ("RandomNormal", ("mean", "scale"), (0.5, 2.0)) if normal else \
        ("RandomUniform", ("low", "high"), (-2.0, 5.0))
    shape = [40, 25]
    path = tmp_path / "r.onnx"
    _save(path, [h.make_node(op, [], ["y"], dtype=dtype, shape=shape, seed=3.0, **{ka: a, kb: b})], [],
          [h.make_tensor_value_info("y", dtype, shape)])
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    assert dlc_run_process(art, {}, tmp_path).returncode == 0
    got = np.load(tmp_path / "out" / "y.npy")
    if dtype != T.FLOAT16:  # (ONNX Runtime has no float16 random ops)
        want = ort_run(path, {})["y"]
        assert got.shape == want.shape and got.dtype == want.dtype
    assert got.shape == tuple(shape) and got.dtype == {T.FLOAT: np.float32, T.DOUBLE: np.float64, T.FLOAT16: np.float16}[dtype]
    ref = reference(normal, a, b, 3.0, 1000, dtype == T.DOUBLE).reshape(shape)
    tol = {T.DOUBLE: 1e-12, T.FLOAT: 2e-5, T.FLOAT16: 4e-3}[dtype]
    np.testing.assert_allclose(got.astype(np.float64), ref, rtol=tol, atol=tol * 4)


def test_like_ops_bernoulli_and_statistics(tmp_path):
    nodes = [h.make_node("RandomUniformLike", ["x"], ["u"], seed=1.5),
             h.make_node("RandomNormalLike", ["x"], ["g"], seed=2.5, mean=1.0, scale=3.0),
             h.make_node("Bernoulli", ["p"], ["bits"], seed=4.0),
             h.make_node("Bernoulli", ["p"], ["flags"], seed=4.0, dtype=T.BOOL)]
    n = 100_000
    path = tmp_path / "like.onnx"
    _save(path, nodes, [h.make_tensor_value_info("x", T.FLOAT, [n]), h.make_tensor_value_info("p", T.FLOAT, [1000])],
          [h.make_tensor_value_info(o, t, None) for o, t in (("u", T.FLOAT), ("g", T.FLOAT), ("bits", T.FLOAT),
                                                              ("flags", T.BOOL))])
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    p = np.linspace(0, 1, 1000, dtype=np.float32)
    feeds = {"x": np.zeros(n, np.float32), "p": p}
    got, want = dlc_run(art, path, feeds, tmp_path), ort_run(path, feeds)
    for k in want:
        assert got[k].shape == want[k].shape and got[k].dtype == want[k].dtype, k
    u, g = got["u"].astype(np.float64), got["g"].astype(np.float64)
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.005
    assert abs(g.mean() - 1.0) < 0.05 and abs(g.std() - 3.0) < 0.05
    # Bernoulli is `u < p` with the documented uniforms: exactly.
    want_bits = (units(seed_key(4.0), 1000, 0, False) < p).astype(np.float32)
    np.testing.assert_array_equal(got["bits"], want_bits)
    np.testing.assert_array_equal(got["flags"], want_bits.astype(bool))


def test_without_seed_every_run_is_the_same_and_nodes_differ(tmp_path):
    nodes = [h.make_node("RandomUniform", [], [o], shape=[64]) for o in ("a", "b")]
    path = tmp_path / "noseed.onnx"
    _save(path, nodes, [], [h.make_tensor_value_info(o, T.FLOAT, [64]) for o in ("a", "b")])
    art = tmp_path / "art"
    r = subprocess.run([dlc_bin(), "compile", str(path), "-o", str(art)], capture_output=True, text=True,
                       env={**os.environ, "RUST_LOG": "warn"})
    assert r.returncode == 0 and "has no seed" in r.stderr, r.stderr
    runs = []
    for k in range(2):
        (tmp_path / str(k)).mkdir()
        runs.append(dlc_run(art, path, {}, tmp_path / str(k)))
    np.testing.assert_array_equal(runs[0]["a"], runs[1]["a"])
    assert not np.array_equal(runs[0]["a"], runs[0]["b"])


@pytest.mark.parametrize("batch", [4, "N"])
def test_dropout_in_training_mode(batch, tmp_path):
    """Dropout with training_mode and ratio as inputs: false gives x and an all-true
    mask; true gives x * mask / (1 - ratio) with the mask `u >= ratio` for dlc's uniform
    draws (about 1 - ratio of the elements kept), the same values every run (seeded);
    ratio 0 keeps everything. A run-time batch takes the same path."""
    ins = [h.make_tensor_value_info("x", T.FLOAT, [batch, 2500]), h.make_tensor_value_info("r", T.FLOAT, []),
           h.make_tensor_value_info("t", T.BOOL, [])]
    node = h.make_node("Dropout", ["x", "r", "t"], ["y", "mask"], seed=7)
    g = h.make_graph([node], "g", ins, [h.make_tensor_value_info("y", T.FLOAT, None),
                                        h.make_tensor_value_info("mask", T.BOOL, None)])
    path = tmp_path / "dropout.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 13)]), str(path))
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    x = np.random.default_rng(1).normal(size=(4, 2500)).astype(np.float32) + 3.0
    runs = {}
    for ratio, mode in ((0.3, False), (0.3, True), (0.0, True), (0.3, True)):
        w = tmp_path / f"r{ratio}_{mode}_{len(runs)}"
        w.mkdir()
        got = dlc_run(art, path, {"x": x, "r": np.array(ratio, np.float32), "t": np.array(mode)}, w)
        y, mask = got["y"], got["mask"]
        assert mask.dtype == np.bool_ and mask.shape == x.shape
        if not mode or ratio == 0.0:
            np.testing.assert_array_equal(y, x)
            assert mask.all()
            continue
        np.testing.assert_allclose(y, np.where(mask, x / np.float32(1 - ratio), 0), rtol=1e-6)
        assert abs(mask.mean() - (1 - ratio)) < 0.02, mask.mean()
        runs.setdefault(ratio, []).append(mask)
    np.testing.assert_array_equal(runs[0.3][0], runs[0.3][1])
