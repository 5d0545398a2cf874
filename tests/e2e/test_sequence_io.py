"""Sequences as model inputs and outputs (docs/sequences.md) against ONNX Runtime: a
sequence input compiled at a fixed length (`--sequence-length`) whose elements are inputs
of their own (`x[0]`, `x[1]`, ...) and may differ in shape, a sequence output returned
element by element (the manifest lists them), SequenceMap, an If on a run-time condition
that gives a sequence (both ways), a Loop that carries a sequence (unrolled), the
errors a user gets for what dlc cannot compile, and `dlc inspect`'s sequence lines."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from conftest import assert_close, dlc, dlc_run_process, sanitize


def seq_info(name, dtype, shape):
    return h.make_tensor_sequence_value_info(name, dtype, shape)


def save(path, nodes, ins, outs, opset=18):
    m = h.make_model(h.make_graph(nodes, "g", ins, outs), opset_imports=[h.make_opsetid("", opset)])
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return path


def ort_outputs(path, feeds):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def run_dlc(art, feeds, work):
    """`dlc run` with each sequence input fed as its elements; {output: array or list}
    (a sequence output gathered from its elements, as the manifest names them)."""
    flat = {}
    for name, x in feeds.items():
        if isinstance(x, list):
            flat.update({f"{name}[{i}]": e for i, e in enumerate(x)})
        else:
            flat[name] = x
    out = work / "out"
    p = dlc_run_process(art, flat, work, out)
    assert p.returncode == 0, p.stderr
    manifest = json.loads((art / "manifest.json").read_text())
    seqs = {q["name"]: q.get("elements", []) for q in manifest.get("sequences", []) if q.get("output")}
    res = {}
    for o in manifest["outputs"]:
        owner = next((s for s, elems in seqs.items() if o["name"] in elems), None)
        value = np.load(out / sanitize(o["name"]))
        if owner is None:
            res[o["name"]] = value
        else:
            res.setdefault(owner, []).append(value)
    for s in seqs:
        res.setdefault(s, [])
    return res


def check(got, want, what):
    assert set(got) == set(want), f"{what}: outputs {sorted(got)} != {sorted(want)}"
    for k, w in want.items():
        if isinstance(w, list):
            assert isinstance(got[k], list) and len(got[k]) == len(w), f"{what}: {k} has {len(got[k])} elements"
            for i, (g, e) in enumerate(zip(got[k], w)):
                assert_close(g, e, f"{what}: {k}[{i}]")
        else:
            assert_close(got[k], w, f"{what}: {k}")


def test_sequence_map_over_a_sequence_input(tmp_path):
    """y[i] = x[i] * 2 + b for elements of different lengths, and their sizes: the body
    runs once per element on that element's own run-time dims."""
    body = h.make_graph(
        [h.make_node("Mul", ["e", "two"], ["m"]), h.make_node("Add", ["m", "b_in"], ["y_e"]),
         h.make_node("Size", ["e"], ["n_e"])],
        "body", [h.make_tensor_value_info("e", T.FLOAT, ["n"]), h.make_tensor_value_info("b_in", T.FLOAT, [1])],
        [h.make_tensor_value_info("y_e", T.FLOAT, ["n"]), h.make_tensor_value_info("n_e", T.INT64, [])],
        [h.make_tensor("two", T.FLOAT, [1], [2.0])])
    path = save(tmp_path / "map.onnx", [h.make_node("SequenceMap", ["x", "b"], ["y", "sizes"], body=body)],
                [seq_info("x", T.FLOAT, ["n"]), h.make_tensor_value_info("b", T.FLOAT, [1])],
                [seq_info("y", T.FLOAT, ["n"]), seq_info("sizes", T.INT64, [])])
    art = tmp_path / "art"
    dlc("compile", path, "-o", art, "--sequence-length", "x=3")
    manifest = json.loads((art / "manifest.json").read_text())
    assert [i["name"] for i in manifest["inputs"]] == ["x[0]", "x[1]", "x[2]", "b"]
    assert {"name": "y", "output": True, "elements": ["y[0]", "y[1]", "y[2]"]} in manifest["sequences"]
    rng = np.random.default_rng(0)
    for lengths in [(4, 1, 7), (2, 9, 3)]:  # one artifact, elements of other lengths
        feeds = {"x": [rng.standard_normal(n).astype(np.float32) for n in lengths],
                 "b": np.array([0.5], np.float32)}
        check(run_dlc(art, feeds, tmp_path), ort_outputs(path, feeds), f"lengths {lengths}")


def test_if_on_a_run_time_condition_gives_a_sequence(tmp_path):
    """Both branches build a sequence of two from the inputs; the condition picks one
    while the model runs (both ways, one artifact)."""
    def branch(name, a, b):
        return h.make_graph([h.make_node("Add", [a, b], [f"{name}_s"]),
                             h.make_node("SequenceConstruct", [f"{name}_s", a], [f"{name}_out"])],
                            name, [], [seq_info(f"{name}_out", T.FLOAT, [3])])
    path = save(tmp_path / "if.onnx",
                [h.make_node("If", ["c"], ["seq"], then_branch=branch("then", "p", "q"),
                             else_branch=branch("else", "q", "q")),
                 h.make_node("ConcatFromSequence", ["seq"], ["cat"], axis=0)],
                [h.make_tensor_value_info("c", T.BOOL, []), h.make_tensor_value_info("p", T.FLOAT, [3]),
                 h.make_tensor_value_info("q", T.FLOAT, [3])],
                [seq_info("seq", T.FLOAT, [3]), h.make_tensor_value_info("cat", T.FLOAT, [6])])
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    for c in (True, False):
        feeds = {"c": np.array(c), "p": np.array([1, 2, 3], np.float32), "q": np.array([10, 20, 30], np.float32)}
        check(run_dlc(art, feeds, tmp_path), ort_outputs(path, feeds), f"condition {c}")


def test_loop_carrying_a_sequence_is_unrolled(tmp_path):
    """A Loop of 4 iterations appends x * i to a sequence given as an input (of 2):
    the result has 6 elements; the scan output stacks the iteration numbers."""
    body = h.make_graph(
        [h.make_node("Cast", ["i"], ["fi"], to=T.FLOAT), h.make_node("Mul", ["x", "fi"], ["xi"]),
         h.make_node("SequenceInsert", ["s_in", "xi"], ["s_out"]), h.make_node("Identity", ["cond_in"], ["cond_out"]),
         h.make_node("Identity", ["i"], ["i_out"])],
        "body", [h.make_tensor_value_info("i", T.INT64, []), h.make_tensor_value_info("cond_in", T.BOOL, []),
                 seq_info("s_in", T.FLOAT, [2])],
        [h.make_tensor_value_info("cond_out", T.BOOL, []), seq_info("s_out", T.FLOAT, [2]),
         h.make_tensor_value_info("i_out", T.INT64, [])])
    path = save(tmp_path / "loop.onnx",
                [h.make_node("Constant", [], ["m"], value=h.make_tensor("m", T.INT64, [], [4])),
                 h.make_node("Constant", [], ["t"], value=h.make_tensor("t", T.BOOL, [], [1])),
                 h.make_node("Loop", ["m", "t", "s"], ["s_final", "iters"], body=body)],
                [seq_info("s", T.FLOAT, [2]), h.make_tensor_value_info("x", T.FLOAT, [2])],
                [seq_info("s_final", T.FLOAT, [2]), h.make_tensor_value_info("iters", T.INT64, [4])])
    art = tmp_path / "art"
    dlc("compile", path, "-o", art, "--sequence-length", "s=2")
    rng = np.random.default_rng(1)
    feeds = {"s": [rng.standard_normal(2).astype(np.float32) for _ in range(2)],
             "x": rng.standard_normal(2).astype(np.float32)}
    got, want = run_dlc(art, feeds, tmp_path), ort_outputs(path, feeds)
    assert len(want["s_final"]) == 6
    check(got, want, "loop")


def test_an_empty_sequence_input(tmp_path):
    """A sequence of 0 elements (no inputs for it) and SequenceLength of it."""
    path = save(tmp_path / "empty.onnx",
                [h.make_node("SequenceLength", ["s"], ["n"]), h.make_node("Add", ["n", "k"], ["y"])],
                [seq_info("s", T.FLOAT, [3]), h.make_tensor_value_info("k", T.INT64, [])],
                [h.make_tensor_value_info("y", T.INT64, [])])
    art = tmp_path / "art"
    dlc("compile", path, "-o", art, "--sequence-length", "s=0")
    feeds = {"s": [], "k": np.array(5, np.int64)}
    check(run_dlc(art, feeds, tmp_path), ort_outputs(path, feeds), "empty")


def _identity(tmp_path, elem_shape=(2, 3)):
    return save(tmp_path / "id.onnx", [h.make_node("Identity", ["x"], ["y"])],
                [seq_info("x", T.FLOAT, list(elem_shape) if elem_shape else None)],
                [seq_info("y", T.FLOAT, None)])


@pytest.mark.parametrize("flags,message", [
    ((), "input 'x' is a sequence of tensors; dlc compiles a sequence of a fixed length: give it with "
         "--sequence-length x=N"),
    (("--sequence-length", "x=2", "--sequence-length", "z=1"), "--sequence-length names [\"z\"], which are not "
                                                                "sequence inputs"),
    (("--sequence-length", "x=two"), "--sequence-length 'x=two': the length must be an integer"),
    (("--sequence-length", "x=5000"), "more elements than dlc allows (4096"),
])
def test_sequence_input_errors(tmp_path, flags, message):
    p = dlc("compile", _identity(tmp_path), "-o", tmp_path / "art", *flags, check=False)
    assert p.returncode != 0 and "panicked" not in p.stderr
    assert message in p.stderr, p.stderr


def test_an_element_with_no_shape_takes_input_shape(tmp_path):
    """A sequence whose element type has no shape: each element's is given by
    --input-shape 'x[i]=...'; without it the error says so."""
    path = _identity(tmp_path, elem_shape=None)
    p = dlc("compile", path, "-o", tmp_path / "a1", "--sequence-length", "x=2", check=False)
    assert p.returncode != 0 and "input 'x[0]' has no shape" in p.stderr and "--input-shape 'x[0]=" in p.stderr
    art = tmp_path / "a2"
    dlc("compile", path, "-o", art, "--sequence-length", "x=2", "--input-shape", "x[0]=2x3",
        "--input-shape", "x[1]=4")
    feeds = {"x": [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(4, np.float32)]}
    check(run_dlc(art, feeds, tmp_path), ort_outputs(path, feeds), "shapeless elements")


def test_a_missing_element_is_a_clear_run_error(tmp_path):
    art = tmp_path / "art"
    dlc("compile", _identity(tmp_path), "-o", art, "--sequence-length", "x=2")
    p = dlc_run_process(art, {"x[0]": np.zeros((2, 3), np.float32)}, tmp_path)
    assert p.returncode != 0 and "panicked" not in p.stderr
    assert "x[1]" in p.stderr, p.stderr


def test_inspect_groups_a_sequence_s_elements(tmp_path):
    """`dlc inspect` takes `--sequence-length` as `dlc compile` does (without it, its error
    says to give it), and lists each sequence input and output with its elements, for
    the model and for its artifact."""
    path = save(tmp_path / "m.onnx",
                [h.make_node("Constant", [], ["zero"], value=h.make_tensor("z", T.INT64, [], [0])),
                 h.make_node("SequenceAt", ["xs", "zero"], ["first"]),
                 h.make_node("SplitToSequence", ["first"], ["parts"], axis=1)],
                [seq_info("xs", T.FLOAT, ["N", 3])],
                [h.make_tensor_value_info("first", T.FLOAT, ["N", 3]), seq_info("parts", T.FLOAT, ["N", 1])])
    p = dlc("inspect", path, check=False)
    assert p.returncode != 0 and "--sequence-length xs=N" in p.stderr, p.stderr
    out = dlc("inspect", path, "--sequence-length", "xs=2").stdout
    assert 'sequence    "xs" (input): 2 element(s): "xs[0]", "xs[1]"' in out, out
    assert 'sequence    "parts" (output): 3 element(s): "parts[0]", "parts[1]", "parts[2]"' in out, out
    art = tmp_path / "art"
    dlc("compile", path, "-o", art, "--sequence-length", "xs=2")
    out = dlc("inspect", art).stdout
    assert 'sequence    "xs" (input): 2 element(s): "xs[0]", "xs[1]"' in out, out
    assert 'sequence    "parts" (output): 3 element(s)' in out, out
