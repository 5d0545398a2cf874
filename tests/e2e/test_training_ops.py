"""The optimiser ops of ai.onnx.preview.training (Adagrad, Momentum standard and
Nesterov, Adam) against ONNX's reference evaluator (ONNX Runtime's CPU build has no
kernels for that domain): two tensors updated at once, at the first step (T = 0) and a
later one, with R and T given at run time."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx.reference import ReferenceEvaluator

from conftest import assert_close, dlc

DOMAIN = "ai.onnx.preview.training"
CASES = {
    "Adagrad": (dict(decay_factor=0.1, epsilon=1e-5, norm_coefficient=0.001), 1),
    "Momentum": (dict(alpha=0.9, beta=0.3, mode="standard", norm_coefficient=0.01), 1),
    "Nesterov": (dict(alpha=0.9, beta=0.3, mode="nesterov", norm_coefficient=0.01), 1),
    "Adam": (dict(alpha=0.9, beta=0.8, epsilon=1e-3, norm_coefficient=0.01, norm_coefficient_post=0.02), 2),
}


@pytest.mark.parametrize("name", list(CASES))
def test_optimiser_matches_onnx_reference(name, tmp_path):
    attrs, states = CASES[name]
    op = "Momentum" if name == "Nesterov" else name
    shapes = [(3, 4), (5,)]
    lists = ["X", "G"] + {"Adagrad": ["H"], "Momentum": ["V"], "Adam": ["V", "H"]}[op]
    assert len(lists) == 2 + states
    ins = [h.make_tensor_value_info("R", T.FLOAT, []), h.make_tensor_value_info("T", T.INT64, [])]
    names = ["R", "T"]
    for kind in lists:
        for j, s in enumerate(shapes):
            names.append(f"{kind}{j}")
            ins.append(h.make_tensor_value_info(f"{kind}{j}", T.FLOAT, list(s)))
    outs = [f"{k}{j}_new" for k in [lists[0]] + lists[2:] for j in range(len(shapes))]
    node = h.make_node(op, names, outs, domain=DOMAIN, **attrs)
    g = h.make_graph([node], "g", ins, [h.make_tensor_value_info(o, T.FLOAT, None) for o in outs])
    path = tmp_path / f"{name}.onnx"
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17), h.make_opsetid(DOMAIN, 1)])
    onnx.save(m, str(path))
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    ref = ReferenceEvaluator(m)
    rng = np.random.default_rng(0)
    for step in (0, 3):
        feeds = {"R": np.array(0.1, np.float32), "T": np.array(step, np.int64)}
        for kind in lists:
            for j, s in enumerate(shapes):
                v = rng.standard_normal(s).astype(np.float32)
                feeds[f"{kind}{j}"] = np.abs(v) if kind == "H" else v
        args = []
        for k, v in feeds.items():
            np.save(tmp_path / f"{k}.npy", v)
            args += ["--input", f"{k}={tmp_path / (k + '.npy')}"]
        dlc("run", art, *args, "-o", tmp_path / "o")
        want = ref.run(None, feeds)
        for o, w in zip(outs, want):
            assert_close(np.load(tmp_path / "o" / f"{o}.npy"), np.asarray(w, np.float32), f"{name} {o} at T={step}")
