"""RNN, GRU and LSTM over a run-time sequence length: the step is the body of a loop
(one artifact for every length and batch), both directions, initial states, biases,
LSTM peepholes and GRU's linear_before_reset; against ONNX Runtime (which has no
batch-first layout for them)."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

from conftest import assert_close, dlc, dlc_run, ort_run

HIDDEN, INPUT = 5, 3


def _model(path, kind, direction, layout=0, states=True, seq="S", lens=False, **attrs):
    gates = {"RNN": 1, "GRU": 3, "LSTM": 4}[kind]
    dirs = 2 if direction == "bidirectional" else 1
    rng = np.random.default_rng(len(kind) + dirs)
    init = [numpy_helper.from_array(rng.uniform(-0.5, 0.5, s).astype(np.float32), n) for n, s in [
        ("W", (dirs, gates * HIDDEN, INPUT)), ("R", (dirs, gates * HIDDEN, HIDDEN)), ("B", (dirs, 2 * gates * HIDDEN))]]
    ins = ["x", "W", "R", "B", "lens" if lens else ""]
    x_shape = ["B", seq, INPUT] if layout else [seq, "B", INPUT]
    st_shape = ["B", dirs, HIDDEN] if layout else [dirs, "B", HIDDEN]
    inputs = [h.make_tensor_value_info("x", T.FLOAT, x_shape)]
    if lens:
        inputs.append(h.make_tensor_value_info("lens", T.INT32, ["B"]))
    outs = ["y", "y_h"] + (["y_c"] if kind == "LSTM" else [])
    if states:
        ins.append("h0")
        inputs.append(h.make_tensor_value_info("h0", T.FLOAT, st_shape))
        if kind == "LSTM":
            ins.append("c0")
            inputs.append(h.make_tensor_value_info("c0", T.FLOAT, st_shape))
    if kind == "LSTM" and attrs.pop("peepholes", False):
        ins += [""] * (7 - len(ins)) + ["P"]
        init.append(numpy_helper.from_array(rng.uniform(-0.5, 0.5, (dirs, 3 * HIDDEN)).astype(np.float32), "P"))
    node = h.make_node(kind, ins, outs, hidden_size=HIDDEN, direction=direction, layout=layout, **attrs)
    g = h.make_graph([node], "g", inputs, [h.make_tensor_value_info(o, T.FLOAT, None) for o in outs], initializer=init)
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 14)]), str(path))
    return path


def _compare(art, path, feeds, work, what):
    """Every output of `dlc run` (in its own folder `work`) against ONNX Runtime's."""
    want = ort_run(path, feeds)
    work.mkdir()
    got = dlc_run(art, path, feeds, work)
    for k, v in want.items():
        assert got[k].shape == v.shape, (k, got[k].shape, v.shape)
        assert_close(got[k], v, f"{what}: {k}")


CASES = {
    "lstm_bidirectional_peepholes": dict(kind="LSTM", direction="bidirectional", peepholes=True),
    "lstm_reverse_zero_states": dict(kind="LSTM", direction="reverse", states=False),
    "gru_linear_before_reset": dict(kind="GRU", direction="bidirectional", linear_before_reset=1),
    "gru_forward_zero_states": dict(kind="GRU", direction="forward", states=False),
    "rnn_reverse": dict(kind="RNN", direction="reverse"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_run_time_sequence_length_runs_as_a_loop(case, tmp_path):
    cfg = dict(CASES[case])
    layout, states = cfg.get("layout", 0), cfg.get("states", True)
    path = _model(tmp_path / "m.onnx", **cfg)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    dirs = 2 if cfg["direction"] == "bidirectional" else 1
    rng = np.random.default_rng(7)
    for seq, batch in [(1, 1), (6, 2), (13, 3)]:
        x = rng.standard_normal((batch, seq, INPUT) if layout else (seq, batch, INPUT)).astype(np.float32)
        feeds = {"x": x}
        if states:
            shape = (batch, dirs, HIDDEN) if layout else (dirs, batch, HIDDEN)
            feeds["h0"] = rng.standard_normal(shape).astype(np.float32)
            if cfg["kind"] == "LSTM":
                feeds["c0"] = rng.standard_normal(shape).astype(np.float32)
        _compare(art, path, feeds, tmp_path / f"s{seq}", f"{case} at seq={seq} batch={batch}")


@pytest.mark.parametrize("case", sorted(CASES))
def test_sequence_lens_at_run_time(case, tmp_path):
    # A known sequence length (the recurrence unrolled) and each row's length given at
    # run time: past it a row keeps its state and its outputs are zeros; a reverse
    # direction starts at the row's last valid step.
    cfg = dict(CASES[case])
    states = cfg.get("states", True)
    path = _model(tmp_path / "m.onnx", seq=6, lens=True, **cfg)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    dirs = 2 if cfg["direction"] == "bidirectional" else 1
    rng = np.random.default_rng(3)
    for lens in ([6, 2, 4], [1], [3, 6]):
        batch = len(lens)
        feeds = {"x": rng.standard_normal((6, batch, INPUT)).astype(np.float32), "lens": np.array(lens, np.int32)}
        if states:
            feeds["h0"] = rng.standard_normal((dirs, batch, HIDDEN)).astype(np.float32)
            if cfg["kind"] == "LSTM":
                feeds["c0"] = rng.standard_normal((dirs, batch, HIDDEN)).astype(np.float32)
        _compare(art, path, feeds, tmp_path / f"b{batch}_{lens[0]}", f"{case} lens={lens}")
