"""Double-precision MatMul and Softmax (models that compute in float64, FlexAttention's
double cases) against ONNX Runtime at a tolerance only float64 arithmetic meets: the
product with a bias and Relu (which dlc's optimiser fuses into it), Softmax, LogSoftmax
and Hardmax (against numpy: ONNX Runtime has no double Hardmax), at a run-time batch."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from conftest import dlc, dlc_run_process, ort_run


def _model(path, op):
    d = T.DOUBLE
    rng = np.random.default_rng(0)
    w = nh.from_array(rng.standard_normal((24, 40)), "w")
    bias = nh.from_array(rng.standard_normal(40), "bias")
    nodes = [h.make_node("MatMul", ["x", "y"], ["xy"]), h.make_node("MatMul", ["xy", "w"], ["p"]),
             h.make_node("Add", ["p", "bias"], ["pb"]), h.make_node("Relu", ["pb"], ["r"]),
             h.make_node(op, ["r"], ["out"], **({} if op == "Identity" else {"axis": -1}))]
    g = h.make_graph(nodes, "f64", [h.make_tensor_value_info("x", d, ["n", 3, 16]),
                                    h.make_tensor_value_info("y", d, ["n", 16, 24])],
                     [h.make_tensor_value_info("out", d, None), h.make_tensor_value_info("r", d, None)],
                     initializer=[w, bias])
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
def test_f64_products_and_softmax_match_ort_in_double(op, tmp_path):
    path = _model(tmp_path / "m.onnx", op)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    rng = np.random.default_rng(1)
    for n in (1, 3):
        feeds = {"x": rng.standard_normal((n, 3, 16)), "y": rng.standard_normal((n, 16, 24))}
        work = tmp_path / f"n{n}"
        work.mkdir()
        p = dlc_run_process(art, feeds, work)
        assert p.returncode == 0, p.stderr
        got = {k: np.load(work / "out" / f"{k}.npy") for k in ("r", "out")}
        if op == "Hardmax":
            # ONNX Runtime has no float64 Hardmax: the first maximum of its product, in numpy.
            want = ort_run(_model(tmp_path / "ref.onnx", "Identity"), feeds)
            r = want["r"]
            want["out"] = (np.arange(r.shape[-1]) == r.argmax(-1)[..., None]).astype(np.float64)
        else:
            want = ort_run(path, feeds)
        for k in ("r", "out"):
            assert got[k].dtype == np.float64 and got[k].shape == want[k].shape, k
            # float32 arithmetic would be off by about 1e-7 relative; float64 by 1e-15.
            np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-12, err_msg=f"{op} {k} n={n}")
