"""LinearAttention (opset 27) with a run-time batch: one artifact run at two batch sizes
for each update rule, with grouped heads and a past state, against onnx's reference
implementation (the node suite covers the fixed-shape cases); and the clear error for a
sequence length known only at run time (the recurrence is unrolled)."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx.reference import ReferenceEvaluator

from conftest import dlc, dlc_run, dlc_run_process

HQ, HK, DK, DV = 4, 2, 3, 5


def _model(path, rule, seq=3):
    f = T.FLOAT
    ins = [h.make_tensor_value_info("q", f, ["batch", seq, HQ * DK]),
           h.make_tensor_value_info("k", f, ["batch", seq, HK * DK]),
           h.make_tensor_value_info("v", f, ["batch", seq, HK * DV]),
           h.make_tensor_value_info("past", f, ["batch", HK, DK, DV])]
    names = ["q", "k", "v", "past"]
    if rule in ("gated", "gated_delta"):
        ins.append(h.make_tensor_value_info("decay", f, ["batch", seq, HK]))
        names.append("decay")
    else:
        names.append("")
    if rule in ("delta", "gated_delta"):
        ins.append(h.make_tensor_value_info("beta", f, ["batch", seq, HK]))
        names.append("beta")
    node = h.make_node("LinearAttention", names, ["y", "state"], q_num_heads=HQ, kv_num_heads=HK, update_rule=rule)
    outs = [h.make_tensor_value_info(n, f, None) for n in ("y", "state")]
    m = h.make_model(h.make_graph([node], "la", ins, outs), opset_imports=[h.make_opsetid("", 27)])
    onnx.save(m, str(path))
    return m


@pytest.mark.parametrize("rule", ["linear", "gated", "delta", "gated_delta"])
def test_run_time_batch_matches_the_reference(rule, tmp_path):
    path = tmp_path / "la.onnx"
    model = _model(path, rule)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    ref = ReferenceEvaluator(model)
    for b in (1, 3):
        rng = np.random.default_rng(b)
        n = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
        feeds = {"q": n(b, 3, HQ * DK), "k": n(b, 3, HK * DK) / 2, "v": n(b, 3, HK * DV), "past": n(b, HK, DK, DV)}
        if rule in ("gated", "gated_delta"):
            feeds["decay"] = -np.abs(n(b, 3, HK))
        if rule in ("delta", "gated_delta"):
            feeds["beta"] = 1 / (1 + np.exp(-n(b, 3, HK)))
        got = dlc_run(art, path, feeds, tmp_path)
        want = dict(zip(("y", "state"), ref.run(None, feeds)))
        for name in ("y", "state"):
            np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5, err_msg=f"{rule} {b} {name}")


def test_run_time_sequence_length_is_a_clear_error(tmp_path):
    path = tmp_path / "la.onnx"
    _model(path, "linear", seq="seq")
    p = dlc("compile", path, "-o", tmp_path / "art", check=False)
    assert p.returncode != 0 and "LinearAttention" in p.stderr and "sequence length" in p.stderr, p.stderr
    assert "panicked" not in p.stderr


def test_flex_attention_at_a_run_time_batch_matches_the_reference(tmp_path):
    # FlexAttention (ai.onnx.preview) with grouped heads and a causal score_mod graph
    # that reads the scores' shape; one artifact at two batch sizes.
    f = T.FLOAT
    mod = h.make_graph(
        [h.make_node("Shape", ["scores"], ["shape"]),
         h.make_node("Gather", ["shape", "i2"], ["l"], axis=0), h.make_node("Gather", ["shape", "i3"], ["s"], axis=0),
         h.make_node("Range", ["zero", "l", "one"], ["qr"]), h.make_node("Reshape", ["qr", "qs"], ["qi"]),
         h.make_node("Range", ["zero", "s", "one"], ["kr"]), h.make_node("Reshape", ["kr", "ks"], ["ki"]),
         h.make_node("GreaterOrEqual", ["qi", "ki"], ["keep"]),
         h.make_node("Where", ["keep", "scores", "neg"], ["out"])],
        "causal", [h.make_tensor_value_info("scores", f, None)], [h.make_tensor_value_info("out", f, None)],
        initializer=[h.make_tensor("i2", T.INT64, [], [2]), h.make_tensor("i3", T.INT64, [], [3]),
                     h.make_tensor("zero", T.INT64, [], [0]), h.make_tensor("one", T.INT64, [], [1]),
                     h.make_tensor("qs", T.INT64, [2], [-1, 1]), h.make_tensor("ks", T.INT64, [2], [1, -1]),
                     h.make_tensor("neg", f, [], [-np.inf])])
    node = h.make_node("FlexAttention", ["Q", "K", "V"], ["Y"], domain="ai.onnx.preview", score_mod=mod)
    ins = [h.make_tensor_value_info("Q", f, ["batch", 4, 5, 8]), h.make_tensor_value_info("K", f, ["batch", 2, 5, 8]),
           h.make_tensor_value_info("V", f, ["batch", 2, 5, 6])]
    model = h.make_model(h.make_graph([node], "flex", ins, [h.make_tensor_value_info("Y", f, None)]),
                         opset_imports=[h.make_opsetid("", 26), h.make_opsetid("ai.onnx.preview", 1)])
    path = tmp_path / "flex.onnx"
    onnx.save(model, str(path))
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    ref = ReferenceEvaluator(model)
    for b in (1, 3):
        rng = np.random.default_rng(b)
        feeds = {"Q": rng.standard_normal((b, 4, 5, 8)).astype(np.float32),
                 "K": rng.standard_normal((b, 2, 5, 8)).astype(np.float32),
                 "V": rng.standard_normal((b, 2, 5, 6)).astype(np.float32)}
        # (ONNX Runtime has no FlexAttention, so dlc_run's output names come from here.)
        out = tmp_path / f"out{b}"
        p = dlc_run_process(art, feeds, tmp_path, out=out)
        assert p.returncode == 0, p.stderr
        got = np.load(out / "Y.npy")
        np.testing.assert_allclose(got, ref.run(None, feeds)[0], rtol=1e-5, atol=1e-5, err_msg=str(b))
