"""ONNX Attention (opsets 24 and 25) with `nonpad_kv_seqlen` (an external KV cache: each batch
holds its own number of valid keys) against ONNX Runtime: causal, sliding windows, a
boolean mask shorter than the keys, and GQA, with the lengths given at run time."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from conftest import assert_close, dlc, dlc_run, ort_run

B, HQ, HK, SQ, SKV, D = 3, 4, 2, 3, 7, 8

CASES = {
    "padding_only": dict(),
    "causal": dict(is_causal=1),
    "causal_left_window": dict(is_causal=1, left_window_size=2),
    "right_window_bool_mask": dict(right_window_size=1, mask=True),
}


def _model(attrs, mask, path):
    ins = [h.make_tensor_value_info("q", T.FLOAT, [B, HQ, SQ, D]),
           h.make_tensor_value_info("k", T.FLOAT, [B, HK, SKV, D]),
           h.make_tensor_value_info("v", T.FLOAT, [B, HK, SKV, D])]
    names = ["q", "k", "v", "", "", "", "len"]
    if mask:
        ins.append(h.make_tensor_value_info("mask", T.BOOL, [SQ, SKV - 2]))
        names[3] = "mask"
    ins.append(h.make_tensor_value_info("len", T.INT64, [B]))
    node = h.make_node("Attention", names, ["y"], **attrs)
    g = h.make_graph([node], "g", ins, [h.make_tensor_value_info("y", T.FLOAT, None)])
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 25 if any("window" in a for a in attrs) else 24)]), str(path))


@pytest.mark.parametrize("name", list(CASES))
def test_nonpad_kv_seqlen_matches_ort(name, tmp_path):
    attrs = dict(CASES[name])
    mask = attrs.pop("mask", False)
    path = tmp_path / f"{name}.onnx"
    _model(attrs, mask, path)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    rng = np.random.default_rng(0)
    for lens in ([7, 3, 5], [4, 7, 6]):
        feeds = {n: rng.standard_normal(s).astype(np.float32)
                 for n, s in [("q", (B, HQ, SQ, D)), ("k", (B, HK, SKV, D)), ("v", (B, HK, SKV, D))]}
        if mask:
            feeds["mask"] = rng.random((SQ, SKV - 2)) > 0.3
        feeds["len"] = np.array(lens, np.int64)
        got, want = dlc_run(art, path, feeds, tmp_path), ort_run(path, feeds)
        assert_close(got["y"], want["y"], f"{name} lens {lens}")
