"""Optionals known at import (frontends/onnx/src/ops/optional.rs) against ONNX Runtime:
an optional built from a tensor and one built empty, OptionalHasElement of each (and of
an optional model input), OptionalGetElement feeding arithmetic, and the compile-time
error for an element read from an empty optional; an optional model input compiled
absent (`--absent`) and present, against ONNX Runtime fed None and a tensor."""
import numpy as np
import onnxruntime as ort
import onnx
from onnx import TensorProto as T
from onnx import helper as h

from conftest import assert_close, dlc, dlc_run, ort_run


def test_optionals_match_ort(tmp_path):
    x_ty = h.make_tensor_type_proto(T.FLOAT, [3])
    nodes = [
        h.make_node("Optional", ["x"], ["ox"]),
        h.make_node("Optional", [], ["none"], type=x_ty),
        h.make_node("OptionalHasElement", ["ox"], ["has_x"]),
        h.make_node("OptionalHasElement", ["none"], ["has_none"]),
        h.make_node("OptionalHasElement", ["oin"], ["has_in"]),
        h.make_node("OptionalGetElement", ["ox"], ["gx"]),
        h.make_node("OptionalGetElement", ["oin"], ["gin"]),
        h.make_node("Add", ["gx", "gin"], ["y"]),
    ]
    ins = [h.make_tensor_value_info("x", T.FLOAT, [3]),
           h.make_value_info("oin", h.make_optional_type_proto(x_ty))]
    outs = [h.make_tensor_value_info(n, T.BOOL, []) for n in ("has_x", "has_none", "has_in")]
    outs.append(h.make_tensor_value_info("y", T.FLOAT, [3]))
    path = tmp_path / "opt.onnx"
    g = h.make_graph(nodes, "g", ins, outs)
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 18)]), str(path))
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    feeds = {"x": np.array([1, 2, 3], np.float32), "oin": np.array([0.5, -1, 4], np.float32)}
    got, want = dlc_run(art, path, feeds, tmp_path), ort_run(path, feeds)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    assert got["has_none"] == False and got["has_x"] == True  # noqa: E712 (a check that both kinds ran)


def test_element_of_an_empty_optional_is_a_compile_error(tmp_path):
    x_ty = h.make_tensor_type_proto(T.FLOAT, [3])
    nodes = [h.make_node("Optional", [], ["none"], type=x_ty), h.make_node("OptionalGetElement", ["none"], ["y"])]
    path = tmp_path / "bad.onnx"
    g = h.make_graph(nodes, "g", [], [h.make_tensor_value_info("y", T.FLOAT, [3])])
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 18)]), str(path))
    p = dlc("compile", path, "-o", tmp_path / "art", check=False)
    assert p.returncode != 0 and "OptionalGetElement" in p.stderr and "empty" in p.stderr, p.stderr


def _cache_model(path):
    """`y = concat(past, x)` along the sequence axis when the optional `past` holds a
    tensor, else `x` (an If on OptionalHasElement, as a key/value cache a first prompt
    does not have); `has` says which. Batch and lengths are run-time dims."""
    f = lambda shape: h.make_tensor_type_proto(T.FLOAT, shape)  # noqa: E731
    then = h.make_graph([h.make_node("OptionalGetElement", ["past"], ["p"]),
                         h.make_node("Concat", ["p", "x"], ["yt"], axis=1)], "then", [],
                        [h.make_value_info("yt", f(["B", "T", 4]))])
    other = h.make_graph([h.make_node("Identity", ["x"], ["ye"])], "else", [],
                         [h.make_value_info("ye", f(["B", "S", 4]))])
    nodes = [h.make_node("OptionalHasElement", ["past"], ["has"]),
             h.make_node("If", ["has"], ["y"], then_branch=then, else_branch=other),
             h.make_node("Mul", ["y", "two"], ["z"])]
    ins = [h.make_value_info("x", f(["B", "S", 4])), h.make_value_info("past", h.make_optional_type_proto(f(["B", "P", 4])))]
    outs = [h.make_tensor_value_info("z", T.FLOAT, None), h.make_tensor_value_info("has", T.BOOL, [])]
    two = h.make_tensor("two", T.FLOAT, [], [2.0])
    g = h.make_graph(nodes, "cache", ins, outs, initializer=[two])
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 18)]), str(path))


def test_an_optional_input_compiled_absent_and_present_matches_ort(tmp_path):
    path = tmp_path / "cache.onnx"
    _cache_model(path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.RandomState(0)
    absent, present = tmp_path / "absent", tmp_path / "present"
    dlc("compile", path, "-o", absent, "--absent", "past")
    dlc("compile", path, "-o", present)
    for b, s, p in [(1, 3, 5), (2, 7, 1)]:
        x = rng.randn(b, s, 4).astype(np.float32)
        past = rng.randn(b, p, 4).astype(np.float32)
        want_z, want_has = sess.run(None, {"x": x, "past": None})
        got = dlc_run(absent, path, {"x": x}, tmp_path)
        assert_close(got["z"], want_z, "absent: z")
        assert got["has"] == want_has == False  # noqa: E712
        want_z, want_has = sess.run(None, {"x": x, "past": past})
        got = dlc_run(present, path, {"x": x, "past": past}, tmp_path)
        assert_close(got["z"], want_z, "present: z")
        assert got["z"].shape == (b, p + s, 4) and got["has"] == want_has == True  # noqa: E712
    # The artifact says which input it was compiled without, and a run that gives it
    # anyway is refused naming it (not "unknown input").
    assert 'absent      "past"' in dlc("inspect", absent).stdout
    np.save(tmp_path / "x.npy", np.zeros((1, 2, 4), np.float32))
    p = dlc("run", absent, "--input", f"x={tmp_path / 'x.npy'}", "--input", f"past={tmp_path / 'x.npy'}",
            "-o", tmp_path / "o", check=False)
    assert p.returncode == 1 and "input 'past' was compiled absent (dlc compile --absent past)" in p.stderr, p.stderr


def test_absent_names_an_optional_input(tmp_path):
    path = tmp_path / "cache.onnx"
    _cache_model(path)
    p = dlc("compile", path, "-o", tmp_path / "a", "--absent", "x", check=False)
    assert p.returncode == 1 and "--absent x: input 'x' is not of optional type" in p.stderr, p.stderr
    p = dlc("compile", path, "-o", tmp_path / "a", "--absent", "pst", check=False)
    assert p.returncode == 1 and "no optional input of that name" in p.stderr and '["past"]' in p.stderr, p.stderr
