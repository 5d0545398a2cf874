"""Sequences of known length inside a model (SplitToSequence, SequenceConstruct,
SequenceInsert/Erase/At with constant or run-time positions, SequenceLength,
ConcatFromSequence) against ONNX Runtime, one artifact at several positions; a run-time
position out of range fails the run (ORT fails too)."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from conftest import assert_close, dlc, dlc_run, ort_run


def _model(path):
    vi = h.make_tensor_value_info
    nodes = [
        h.make_node("SplitToSequence", ["x"], ["parts"], axis=0, keepdims=0),  # 4 rows of [3, 5]
        h.make_node("SequenceInsert", ["parts", "y", "pos_insert"], ["more"]),
        h.make_node("SequenceErase", ["more", "pos_erase"], ["fewer"]),
        h.make_node("SequenceAt", ["fewer", "pos_at"], ["picked"]),
        h.make_node("SequenceLength", ["fewer"], ["n"]),
        h.make_node("ConcatFromSequence", ["fewer"], ["stacked"], axis=0, new_axis=1),
        h.make_node("SequenceConstruct", ["y", "picked"], ["pair"]),
        h.make_node("ConcatFromSequence", ["pair"], ["joined"], axis=-1),
    ]
    ins = [vi("x", T.FLOAT, [4, 3, 5]), vi("y", T.FLOAT, [3, 5]), vi("pos_insert", T.INT64, []),
           vi("pos_erase", T.INT32, []), vi("pos_at", T.INT64, [])]
    outs = [vi("picked", T.FLOAT, None), vi("n", T.INT64, None), vi("stacked", T.FLOAT, None),
            vi("joined", T.FLOAT, None)]
    onnx.save(h.make_model(h.make_graph(nodes, "g", ins, outs), opset_imports=[h.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    d = tmp_path_factory.mktemp("seq")
    path = _model(d / "seq.onnx")
    art = d / "art"
    dlc("compile", path, "-o", art)
    return path, art


def _feeds(pi, pe, pa):
    rng = np.random.default_rng(abs(pi * 7 + pe))
    return {"x": rng.standard_normal((4, 3, 5)).astype(np.float32),
            "y": rng.standard_normal((3, 5)).astype(np.float32),
            "pos_insert": np.array(pi, np.int64), "pos_erase": np.array(pe, np.int32),
            "pos_at": np.array(pa, np.int64)}


@pytest.mark.parametrize("pi,pe,pa", [(0, 0, 0), (4, -1, 3), (-2, 2, -1), (2, -5, 1)])
def test_sequence_ops_match_ort(compiled, pi, pe, pa, tmp_path):
    path, art = compiled
    feeds = _feeds(pi, pe, pa)
    got, want = dlc_run(art, path, feeds, tmp_path), ort_run(path, feeds)
    for k in want:
        assert_close(got[k], want[k], f"{k} at insert {pi}, erase {pe}, at {pa}")


def test_a_position_out_of_range_fails_the_run(compiled, tmp_path):
    path, art = compiled
    for i, (pi, pe, pa) in enumerate([(6, 0, 0), (0, 5, 0), (0, 0, 4)]):
        args = []
        for k, v in _feeds(pi, pe, pa).items():
            np.save(tmp_path / f"{k}{i}.npy", v)
            args += ["--input", f"{k}={tmp_path / f'{k}{i}.npy'}"]
        p = dlc("run", art, *args, "-o", tmp_path / f"o{i}", check=False)
        assert p.returncode == 1 and "index is out of range" in p.stderr, (pi, pe, pa, p.stderr)
