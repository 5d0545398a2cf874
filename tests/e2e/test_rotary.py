"""RotaryEmbedding (opset 23) against ONNX Runtime: 4-D and 3-D inputs, halves and
interleaved pairs, partial rotation, with and without position ids (run-time ids are
checked against the caches' rows like any Gather index)."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from conftest import assert_close, dlc, dlc_run, ort_run

CASES = {
    "4d_halves_positions": (dict(), True, 4),
    "4d_interleaved_partial": (dict(interleaved=1, rotary_embedding_dim=4), True, 4),
    "3d_heads": (dict(num_heads=2), True, 3),
    "4d_no_positions_interleaved": (dict(interleaved=1), False, 4),
}
B, H, S, D, ROWS = 2, 2, 5, 8, 16


@pytest.mark.parametrize("name", list(CASES))
def test_rotary_matches_ort(name, tmp_path):
    attrs, with_pos, rank = CASES[name]
    rd = attrs.get("rotary_embedding_dim", D)
    xs = [B, H, S, D] if rank == 4 else [B, S, H * D]
    cs = [ROWS, rd // 2] if with_pos else [B, S, rd // 2]
    ins = [h.make_tensor_value_info("x", T.FLOAT, xs), h.make_tensor_value_info("cos", T.FLOAT, cs),
           h.make_tensor_value_info("sin", T.FLOAT, cs)]
    names = ["x", "cos", "sin"]
    if with_pos:
        ins.append(h.make_tensor_value_info("pos", T.INT64, [B, S]))
        names.append("pos")
    node = h.make_node("RotaryEmbedding", names, ["y"], **attrs)
    g = h.make_graph([node], "g", ins, [h.make_tensor_value_info("y", T.FLOAT, None)])
    path = tmp_path / f"{name}.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 23)]), str(path))
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    rng = np.random.default_rng(1)
    ang = rng.uniform(0, 6.28, cs).astype(np.float32)
    feeds = {"x": rng.standard_normal(xs).astype(np.float32), "cos": np.cos(ang), "sin": np.sin(ang)}
    if with_pos:
        feeds["pos"] = rng.integers(0, ROWS, (B, S)).astype(np.int64)
    got, want = dlc_run(art, path, feeds, tmp_path), ort_run(path, feeds)
    assert_close(got["y"], want["y"], name)
