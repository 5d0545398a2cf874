"""ai.onnx.preview.training::Gradient (reverse-mode differentiation at import) against a
float64 reference: the same function written in numpy, differentiated by central
differences (ONNX Runtime's CPU build has no Gradient kernel). Covers broadcasting
(a batched MatMul with shared weights, a bias), every rule's op, a gradient taken at
values other than the graph's own, an `x` that `y` does not depend on, and the refusal
of a path through an op dlc does not differentiate."""
import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

from conftest import assert_close, dlc, dlc_run_process, sanitize

DOMAIN = "ai.onnx.preview.training"


def run(art, feeds, tmp_path, outputs):
    p = dlc_run_process(art, feeds, tmp_path)
    assert p.returncode == 0, p.stderr
    return {o: np.load(tmp_path / "out" / sanitize(o)) for o in outputs}


def model(nodes, inputs, outputs, inits=(), opset=17):
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info(n, T.FLOAT, s) for n, s in inputs],
                     [h.make_tensor_value_info(n, T.FLOAT, None) for n in outputs],
                     [numpy_helper.from_array(v if isinstance(v, np.ndarray) else np.array(v, np.float32), n)
                      for n, v in inits])
    return h.make_model(g, opset_imports=[h.make_opsetid("", opset), h.make_opsetid(DOMAIN, 1)])


def forward64(X, W, b, t):
    """The float64 twin of the graph in `test_gradient_matches_central_differences`."""
    A = X @ W + b
    R = np.maximum(A, 0)
    S = 1 / (1 + np.exp(-A))
    E = np.exp(S * 0.5)
    Q = np.sqrt((E + 1) ** 2.0 + 1)
    L = np.log(Q)
    D = (np.tanh(R) - t) / (E + 1)
    Dt = np.transpose(D, (0, 2, 1)).reshape(-1)
    return np.sum(Dt * Dt) + np.sum(np.mean(L, axis=1)) - np.mean(X)


def central(f, args, i, eps=1e-6):
    x = args[i]
    g = np.zeros_like(x)
    for k in np.ndindex(x.shape):
        hi = [a.copy() for a in args]
        lo = [a.copy() for a in args]
        hi[i][k] += eps
        lo[i][k] -= eps
        g[k] = (f(*hi) - f(*lo)) / (2 * eps)
    return g


def test_gradient_matches_central_differences(tmp_path):
    nodes = [
        h.make_node("MatMul", ["X", "W"], ["H"]),
        h.make_node("Add", ["H", "b"], ["A"]),
        h.make_node("Relu", ["A"], ["R"]),
        h.make_node("Sigmoid", ["A"], ["S"]),
        h.make_node("Mul", ["S", "half"], ["Sh"]),
        h.make_node("Exp", ["Sh"], ["E"]),
        h.make_node("Add", ["E", "one"], ["E1"]),
        h.make_node("Pow", ["E1", "two"], ["P"]),
        h.make_node("Add", ["P", "one"], ["P1"]),
        h.make_node("Sqrt", ["P1"], ["Q"]),
        h.make_node("Log", ["Q"], ["L"]),
        h.make_node("Tanh", ["R"], ["Th"]),
        h.make_node("Sub", ["Th", "t"], ["N"]),
        h.make_node("Div", ["N", "E1"], ["D"]),
        h.make_node("Transpose", ["D"], ["Dt"], perm=[0, 2, 1]),
        h.make_node("Reshape", ["Dt", "flat"], ["Df"]),
        h.make_node("Mul", ["Df", "Df"], ["Sq"]),
        h.make_node("ReduceSum", ["Sq"], ["S1"], keepdims=0),
        h.make_node("ReduceMean", ["L"], ["Lm"], axes=[1], keepdims=0),
        h.make_node("ReduceSum", ["Lm"], ["S2"], keepdims=0),
        h.make_node("ReduceMean", ["X"], ["Xm"], keepdims=0),
        h.make_node("Add", ["S1", "S2"], ["S12"]),
        h.make_node("Sub", ["S12", "Xm"], ["Y"]),
        h.make_node("Gradient", ["X", "W", "b", "t"], ["dX", "dW", "db"], domain=DOMAIN,
                    xs=["X", "W", "b"], zs=["t"], y="Y"),
    ]
    inits = [("half", 0.5), ("one", 1.0), ("two", 2.0), ("flat", np.array([-1], np.int64))]
    m = model(nodes, [("X", [2, 4, 3]), ("W", [3, 5]), ("b", [5]), ("t", [2, 4, 5])], ["Y", "dX", "dW", "db"], inits)
    path = tmp_path / "grad.onnx"
    onnx.save(m, path)
    rng = np.random.default_rng(0)
    feeds = {"X": rng.standard_normal((2, 4, 3)), "W": rng.standard_normal((3, 5)) * 0.7,
             "b": rng.standard_normal(5) * 0.3, "t": rng.standard_normal((2, 4, 5))}
    feeds = {k: v.astype(np.float32) for k, v in feeds.items()}
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    got = run(art, feeds, tmp_path, ["Y", "dX", "dW", "db"])
    args = [feeds[k].astype(np.float64) for k in ("X", "W", "b", "t")]
    assert_close(got["Y"], np.asarray(forward64(*args), np.float32), "Y")
    for i, name in enumerate(["dX", "dW", "db"]):
        want = central(forward64, args, i)
        err = np.abs(got[name] - want).max()
        assert got[name].shape == want.shape, name
        assert err <= 2e-4 * max(1.0, np.abs(want).max()), f"{name}: max abs err {err:.3g}"


def test_gradient_at_other_values_and_of_an_unused_x(tmp_path):
    # dY/dH at H = H1 (an input of its own, not the graph's H) is 2 H1; U does not
    # reach Y: its gradient is zeros of its shape.
    nodes = [
        h.make_node("Tanh", ["X"], ["H"]),
        h.make_node("Mul", ["H", "H"], ["H2"]),
        h.make_node("ReduceSum", ["H2"], ["Y"], keepdims=0),
        h.make_node("Gradient", ["H1", "U"], ["dH", "dU"], domain=DOMAIN, xs=["H", "U"], y="Y"),
    ]
    m = model(nodes, [("X", [3, 4]), ("H1", [3, 4]), ("U", [2])], ["Y", "dH", "dU"])
    path = tmp_path / "at.onnx"
    onnx.save(m, path)
    rng = np.random.default_rng(1)
    feeds = {"X": rng.standard_normal((3, 4)).astype(np.float32), "H1": rng.standard_normal((3, 4)).astype(np.float32),
             "U": np.ones(2, np.float32)}
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    got = run(art, feeds, tmp_path, ["Y", "dH", "dU"])
    assert_close(got["dH"], 2 * feeds["H1"], "dY/dH at H1")
    assert np.array_equal(got["dU"], np.zeros(2, np.float32)), got["dU"]
    assert_close(got["Y"], np.sum(np.tanh(feeds["X"].astype(np.float64)) ** 2).astype(np.float32), "Y")


def test_a_path_through_an_op_without_a_rule_is_refused(tmp_path):
    nodes = [
        h.make_node("Softmax", ["X"], ["S"], name="soft"),
        h.make_node("ReduceSum", ["S"], ["Y"], keepdims=0),
        h.make_node("Gradient", ["X"], ["dX"], domain=DOMAIN, xs=["X"], y="Y"),
    ]
    path = tmp_path / "soft.onnx"
    onnx.save(model(nodes, [("X", [2, 3])], ["dX"]), path)
    p = dlc("compile", path, "-o", tmp_path / "art", check=False)
    assert p.returncode != 0
    assert "node 'soft' (Softmax), which dlc does not differentiate" in p.stderr, p.stderr
