"""Optionals known at import (frontends/onnx/src/ops/optional.rs) against ONNX Runtime:
an optional built from a tensor and one built empty, OptionalHasElement of each (and of
an optional model input), OptionalGetElement feeding arithmetic, and the compile-time
error for an element read from an empty optional; an optional model input compiled
absent (`--absent`) and present, against ONNX Runtime fed None and a tensor."""
import json

import numpy as np
import onnxruntime as ort
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from conftest import assert_close, dlc, dlc_run, dlc_run_process, ort_run


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


def _if_optional_model(path, kind):
    """An If on a run-time condition: then an empty optional, else an optional holding a
    tensor x * 2 (`kind` "tensor") or the sequence [x, x * 2] ("sequence"); outputs the
    optional and OptionalHasElement of it."""
    x_ty = h.make_tensor_type_proto(T.FLOAT, [3])
    el_ty = x_ty if kind == "tensor" else h.make_sequence_type_proto(x_ty)
    opt_ty = h.make_optional_type_proto(el_ty)
    then_g = h.make_graph([h.make_node("Optional", [], ["none"], type=el_ty)], "then", [],
                          [h.make_value_info("none", opt_ty)])
    else_nodes = [h.make_node("Add", ["x", "x"], ["x2"])]
    if kind == "tensor":
        else_nodes.append(h.make_node("Optional", ["x2"], ["some"]))
    else:
        else_nodes += [h.make_node("SequenceConstruct", ["x", "x2"], ["s"]), h.make_node("Optional", ["s"], ["some"])]
    else_g = h.make_graph(else_nodes, "else", [], [h.make_value_info("some", opt_ty)])
    nodes = [h.make_node("If", ["c"], ["o"], then_branch=then_g, else_branch=else_g, name="pick"),
             h.make_node("OptionalHasElement", ["o"], ["has"])]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("c", T.BOOL, []), h.make_tensor_value_info("x", T.FLOAT, [3])],
                     [h.make_value_info("o", opt_ty), h.make_tensor_value_info("has", T.BOOL, [])])
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 18)]), str(path))
    return path


@pytest.mark.parametrize("kind", ["tensor", "sequence"])
def test_an_optional_whose_presence_only_the_run_knows(kind, tmp_path):
    """The artifact returns the optional's element and a flag `o.present` (the Python
    package's None: tests/python)."""
    path = _if_optional_model(tmp_path / "m.onnx", kind)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    m = json.loads((art / "manifest.json").read_text())
    assert m["optional_outputs"] == ["o"] and "o.present" in [o["name"] for o in m["outputs"]], m
    assert 'optional    "o": present only when output "o.present" is true' in dlc("inspect", art).stdout
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for c in (True, False):
        feeds = {"c": np.array(c), "x": np.array([1.5, -2.0, 3.0], np.float32)}
        want = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
        (tmp_path / f"r{c}").mkdir()
        out = tmp_path / f"r{c}" / "out"
        p = dlc_run_process(art, feeds, tmp_path / f"r{c}", out)
        assert p.returncode == 0, p.stderr
        assert bool(np.load(out / "o.present.npy")) == (want["o"] is not None) == bool(want["has"])
        assert bool(np.load(out / "has.npy")) == bool(want["has"])
        if want["o"] is None:
            continue
        if kind == "tensor":
            assert_close(np.load(out / "o.npy"), want["o"], "o")
        else:
            assert len(want["o"]) == 2
            for i, w_ in enumerate(want["o"]):
                assert_close(np.load(out / f"o_{i}_.npy"), w_, f"o[{i}]")


def test_reading_an_optional_the_run_decides_is_refused_by_name(tmp_path):
    path = _if_optional_model(tmp_path / "m.onnx", "tensor")
    m = onnx.load(str(path))
    m.graph.node.append(h.make_node("OptionalGetElement", ["o"], ["e"], name="get"))
    m.graph.output.append(h.make_tensor_value_info("e", T.FLOAT, [3]))
    onnx.save(m, str(path))
    p = dlc("compile", path, "-o", tmp_path / "art", check=False)
    assert p.returncode != 0 and "node 'get'" in p.stderr and "presence only the run knows" in p.stderr, p.stderr
    assert "panicked" not in p.stderr
