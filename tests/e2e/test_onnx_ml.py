"""ai.onnx.ml ops that are tensor arithmetic, against ONNX Runtime: Binarizer (float; int64,
which ORT lacks, against numpy), ArrayFeatureExtractor (a matrix at a run-time batch, a
vector) and LabelEncoder (string keys to int64 or float values, int64 keys to float,
int64 or string keys to string values (a string tensor), with and without defaults, at
a run-time length)."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from conftest import assert_close, dlc, dlc_run_process, ort_run


def _save(path, node, ins, outs, ml=3):
    g = h.make_graph([node], "ml", ins, outs)
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("ai.onnx.ml", ml)]), str(path))
    return path


def _run(path, feeds, tmp_path):
    art = tmp_path / "art"
    if not art.exists():
        dlc("compile", path, "-o", art)
    p = dlc_run_process(art, feeds, tmp_path)
    assert p.returncode == 0, p.stderr
    return np.load(tmp_path / "out" / "y.npy")


def _to_numpy_strings(feeds):
    return {k: v.astype(str) if v.dtype == object else v for k, v in feeds.items()}


@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_binarizer(dtype, tmp_path):
    t = T.FLOAT if dtype == np.float32 else T.INT64
    path = _save(tmp_path / "b.onnx", h.make_node("Binarizer", ["x"], ["y"], domain="ai.onnx.ml", threshold=0.5),
                 [h.make_tensor_value_info("x", t, ["n", 4])], [h.make_tensor_value_info("y", t, None)])
    x = (np.random.default_rng(0).standard_normal((3, 4)) * 3).astype(dtype)
    got = _run(path, {"x": x}, tmp_path)
    # ONNX Runtime has no int64 Binarizer: onnx's reference (numpy) for that one.
    want = ort_run(path, {"x": x})["y"] if dtype == np.float32 else (x > 0.5).astype(dtype)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("shape,idx", [((2, 5), [4, 0, 4, 2]), ((6,), [[1, 5]])])
def test_array_feature_extractor(shape, idx, tmp_path):
    dims = ["n"] + list(shape[1:]) if len(shape) > 1 else list(shape)
    idx = np.array(idx, np.int64)
    path = _save(tmp_path / "a.onnx", h.make_node("ArrayFeatureExtractor", ["x", "i"], ["y"], domain="ai.onnx.ml"),
                 [h.make_tensor_value_info("x", T.FLOAT, dims), h.make_tensor_value_info("i", T.INT64, idx.shape)],
                 [h.make_tensor_value_info("y", T.FLOAT, None)])
    rng = np.random.default_rng(1)
    for n in ((1, 3) if len(shape) > 1 else (None,)):
        x = rng.standard_normal((n, *shape[1:]) if n else shape).astype(np.float32)
        work = tmp_path / f"n{n}"
        work.mkdir()
        feeds = {"x": x, "i": idx}
        assert_close(_run(path, feeds, work), ort_run(path, feeds)["y"], f"{shape} n={n}")


@pytest.mark.parametrize("keys,values,default", [
    (dict(keys_strings=["cat", "dog", "été"]), dict(values_int64s=[7, -3, 11]), dict(default_int64=99)),
    (dict(keys_strings=["cat", "dog", "été"]), dict(values_floats=[0.5, 1.5, -2.0]), {}),
    (dict(keys_int64s=[3, 1, 4]), dict(values_floats=[0.25, 1.0, 9.5]), dict(default_float=-1.0)),
])
def test_label_encoder(keys, values, default, tmp_path):
    out_t = T.INT64 if "values_int64s" in values else T.FLOAT
    for got, want in _encode(keys, values, default, out_t, [3, 1, 4, 5, -1], tmp_path):
        np.testing.assert_array_equal(got, want)


def _encode(keys, values, default, out_t, int_pool, tmp_path):
    """A LabelEncoder run by dlc and ORT on 1 and 7 elements drawn from a pool (strings
    for string keys, else `int_pool`): [(dlc's, ORT's)]."""
    string_in = "keys_strings" in keys
    node = h.make_node("LabelEncoder", ["x"], ["y"], domain="ai.onnx.ml", **keys, **values, **default)
    path = _save(tmp_path / "l.onnx", node, [h.make_tensor_value_info("x", T.STRING if string_in else T.INT64, ["n"])],
                 [h.make_tensor_value_info("y", out_t, None)], ml=2)
    pool = np.array(["cat", "dog", "été", "emu", ""], dtype=object) if string_in else np.array(int_pool)
    rng = np.random.default_rng(2)
    out = []
    for n in (1, 7):
        x = pool[rng.integers(0, len(pool), n)]
        work = tmp_path / f"n{n}"
        work.mkdir()
        out.append((_run(path, _to_numpy_strings({"x": x}), work), ort_run(path, {"x": x})["y"]))
    return out


@pytest.mark.parametrize("keys,default", [
    (dict(keys_int64s=[1, 2, 40]), dict(default_string="none")),
    (dict(keys_strings=["cat", "dog", "été"]), {}),
])
def test_label_encoder_to_strings(keys, default, tmp_path):
    """String values: the result is a string tensor (the values' bytes), the default
    `_Unused` when none is given, as ONNX Runtime gives it."""
    values = dict(values_strings=["ä", "bee", ""])
    for got, want in _encode(keys, values, default, T.STRING, [1, 2, 40, 5, -1], tmp_path):
        assert [str(v) for v in got] == [str(v) for v in want], (got, want)
