"""Optionals known at import (frontends/onnx/src/ops/optional.rs) against ONNX Runtime:
an optional built from a tensor and one built empty, OptionalHasElement of each (and of
an optional model input), OptionalGetElement feeding arithmetic, and the compile-time
error for an element read from an empty optional."""
import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h

from conftest import dlc, dlc_run, ort_run


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
