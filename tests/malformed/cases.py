"""The malformed-input corpus (issue 19): hostile or broken inputs, each with the clean
error dlc must give. `make(dir)` writes every case's files into `dir` and returns the
cases; tests/e2e/test_malformed.py runs each through the `dlc` CLI and checks the exit
code (1 or 2), the message, and that nothing panicked, aborted or died by a signal.

A case is (name, argv, pattern): argv uses `{dlc}` for the binary and `{d}` for the
case folder; the pattern is a regular expression the combined output must match. A
case whose pattern starts with `ok:` must instead succeed (valid input, right answer
checked elsewhere).
"""
import random
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh


FILES = Path(__file__).resolve().parent / "files"


def _model(nodes, inputs, outputs, inits=(), opsets=(("", 17),)):
    g = h.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return h.make_model(g, opset_imports=[h.make_opsetid(d, v) for d, v in opsets])


def _x(name="x", shape=(2, 3)):
    return h.make_tensor_value_info(name, T.FLOAT, list(shape))


def _y(name="y"):
    return h.make_tensor_value_info(name, T.FLOAT, None)


def _relu():
    return _model([h.make_node("Relu", ["x"], ["y"])], [_x()], [_x("y")])


def make(d):
    cases = []

    def onnx_case(name, model, pattern, extra=()):
        onnx.save(model, str(d / f"{name}.onnx"))
        cases.append((name, ["{dlc}", "compile", f"{{d}}/{name}.onnx", "-o", f"{{d}}/{name}_out", *extra], pattern))

    def dsl_case(name, text, pattern):
        (d / f"{name}.dlc").write_text(text)
        cases.append((name, ["{dlc}", "compile", f"{{d}}/{name}.dlc", "-o", f"{{d}}/{name}_out"], pattern))

    # --- Sizes: checked arithmetic, no wrap, no abort on allocation.
    reps = nh.from_array(np.array([2**30, 2**32], np.int64), "reps")
    onnx_case("tile_huge", _model([h.make_node("Tile", ["x", "reps"], ["y"])], [_x()], [_y()], [reps]),
              r"node 'Tile_0' \(Tile\): output 0: .* more than 2\^64 bytes")
    w = nh.from_array(np.ones((1, 1, 1, 1), np.float32), "w")
    onnx_case("conv_pads_huge",
              _model([h.make_node("Conv", ["x", "w"], ["y"], pads=[2**40] * 4)], [_x("x", (1, 1, 4, 4))], [_y()], [w]),
              r"node 'Conv_0' \(Conv\): output 0: f32\[1,1,2199023255556,2199023255556\] would take more than")
    sh = nh.from_array(np.array([2**20, 2**20, 2**10], np.int64), "sh")
    onnx_case("expand_huge", _model([h.make_node("Expand", ["x", "sh"], ["y"])], [_x("x", (1, 1))], [_y()], [sh]),
              r"node 'Expand_0' \(Expand\): output 0: .* more than dlc's limit of 2\^40 bytes")
    pads = nh.from_array(np.array([0, 2**40, 0, 2**40], np.int64), "pads")
    onnx_case("pad_huge", _model([h.make_node("Pad", ["x", "pads"], ["y"])], [_x()], [_y()], [pads]),
              r"node 'Pad_0' \(Pad\): output 0: .* bytes")

    # Found by fuzzing (scripts/fuzz.sh onnx_import): a product of dims past i64 panicked.
    shp = nh.from_array(np.array([-1], np.int64), "shp")
    onnx_case("reshape_dims_overflow",
              _model([h.make_node("Reshape", ["x", "shp"], ["y"])], [_x("x", (2**33, 2**33))], [_y()], [shp]),
              r"(more than 2\^64 bytes|more than dlc's limit)")

    # Found by fuzzing (ASan: a stack overflow in rust-protobuf's skip_group): the fuzzer's
    # own input, kept in tests/malformed/files/, and 100,000 nested groups in the graph.
    cases.append(("fuzz_onnx_nested_groups",
                  ["{dlc}", "compile", str(FILES / "fuzz_onnx_nested_groups.onnx"), "-o", "{d}/fuzz_groups_out"],
                  r"protobuf groups nested more than 32 deep"))
    groups = b"\x9b\x06" * 100_000
    graph = _relu().graph.SerializeToString() + groups
    n, length = len(graph), b""
    while n >= 0x80:
        length += bytes([(n & 0x7F) | 0x80])
        n >>= 7
    (d / "nested_groups.onnx").write_bytes(b"\x3a" + length + bytes([n]) + graph)
    cases.append(("onnx_nested_groups", ["{dlc}", "compile", "{d}/nested_groups.onnx", "-o", "{d}/groups_out"],
                  r"protobuf groups nested more than 32 deep"))

    # --- ONNX that ONNX Runtime refuses.
    idx = nh.from_array(np.array([0, 5], np.int64), "idx")
    onnx_case("gather_index_out_of_range",
              _model([h.make_node("Gather", ["x", "idx"], ["y"], axis=0)], [_x()], [_y()], [idx]),
              r"node 'Gather_0' \(Gather\): index 5 is out of range for axis 0 of extent 2")
    n = h.make_node("Softmax", ["x"], ["y"])
    n.attribute.append(h.make_attribute("axis", 0.0))
    onnx_case("float_axis", _model([n], [_x()], [_x("y")]), r"attribute 'axis' is FLOAT, ONNX defines it as INT")
    n = h.make_node("MaxPool", ["x"], ["y"])
    n.attribute.append(h.make_attribute("kernel_shape", "2x2"))
    onnx_case("string_kernel_shape", _model([n], [_x("x", (1, 1, 4, 4))], [_y()]),
              r"attribute 'kernel_shape' is STRING, ONNX defines it as INTS")
    n = h.make_node("Softmax", ["x"], ["y"])
    n.attribute.append(onnx.AttributeProto(name="axis", i=1))
    onnx_case("untyped_attribute", _model([n], [_x()], [_x("y")]), r"attribute 'axis' has no type")
    onnx_case("unknown_attribute", _model([h.make_node("Relu", ["x"], ["y"], bogus=3)], [_x()], [_x("y")]),
              r"unknown attribute 'bogus' \(Relu at opset 17 has none\)")
    onnx_case("missing_required_attribute", _model([h.make_node("Cast", ["x"], ["y"])], [_x()], [_y()]),
              r"required attribute 'to' is missing")
    m = _relu()
    m.opset_import[0].version = 1
    onnx_case("opset_1", m, r"Relu-1 \(opset 1\) is an old version dlc does not implement")
    m = _relu()
    m.opset_import[0].version = 99
    onnx_case("opset_99", m, r"default-domain opset 99 is newer than any ONNX defines")
    m = _relu()
    del m.opset_import[:]
    onnx_case("no_opset_import", m, r"imports no opset for the default domain")
    onnx_case("op_from_a_later_opset",
              _model([h.make_node("Gelu", ["x"], ["y"])], [_x()], [_x("y")], opsets=(("", 17),)),
              r"Gelu does not exist at opset 17 \(ONNX added it in opset 20\)")
    onnx_case("two_nodes_one_output",
              _model([h.make_node("Relu", ["x"], ["y"]), h.make_node("Neg", ["x"], ["y"])], [_x()], [_x("y")]),
              r"value 'y' is defined twice: by node 'Relu_0' and by node 'Neg_1'")
    raw = _relu().SerializeToString()
    (d / "truncated.onnx").write_bytes(raw[: len(raw) * 2 // 3])
    cases.append(("truncated", ["{dlc}", "compile", "{d}/truncated.onnx", "-o", "{d}/truncated_out"],
                  r"is not a valid ONNX model \(truncated or corrupt\?\)"))
    # External data through a symlink that points outside the model's folder.
    ext = d / "ext"
    ext.mkdir()
    (d / "outside.bin").write_bytes(np.ones(6, np.float32).tobytes())
    (ext / "w.bin").symlink_to(d / "outside.bin")
    t = onnx.TensorProto(name="b", data_type=T.FLOAT, dims=[2, 3], data_location=onnx.TensorProto.EXTERNAL)
    t.external_data.add(key="location", value="w.bin")
    onnx.save(_model([h.make_node("Add", ["x", "b"], ["y"])], [_x()], [_x("y")], [t]), str(ext / "m.onnx"))
    cases.append(("external_data_symlink_out", ["{dlc}", "compile", "{d}/ext/m.onnx", "-o", "{d}/ext_out"],
                  r"tensor 'b': external data location 'w.bin': it resolves to .*outside the model's folder"))

    # --- The DSL.
    head = "model m(x: f32[4]) -> (y: f32[4]) {\n  return "
    dsl_case("dsl_deep_parens", head + "(" * 10000 + "x" + ")" * 10000 + "\n}\n",
             r"expression nested too deeply \(more than 256 levels")
    dsl_case("dsl_deep_calls", head + "relu(" * 10000 + "x" + ")" * 10000 + "\n}\n", r"expression nested too deeply")
    dsl_case("dsl_deep_lists", head + "x + " + "[" * 10000 + "1" + "]" * 10000 + "\n}\n", r"expression nested too deeply")
    dsl_case("dsl_long_sum", head + " + ".join(["x"] * 100000) + "\n}\n", r"expression nested too deeply")
    dsl_case("dsl_infinite_literal", head + "x * 1e400\n}\n", r"number '1e400' is out of range")
    fns = "".join(f"fn f{i}(a) {{\n  return f{i + 1}(a) + f{i + 1}(a)\n}}\n" for i in range(30))
    dsl_case("dsl_exponential_inlining", fns + "fn f30(a) {\n  return a\n}\n" + head + "f0(x)\n}\n",
             r"(inlines more than 10000 function calls|function calls nest more than 32 deep)")
    rng = random.Random(0)
    dsl_case("dsl_junk_10mb", "".join(rng.choice("(){}[]<>:;,.=+-*/ abcxyz0123\n@#$%") for _ in range(10_000_000)),
             r"\.\.\. and \d+ more error\(s\) not shown")
    dsl_case("dsl_weights_outside", 'weights "../../etc/passwd"\n' + head.replace("return ", "") + "  return x\n}\n",
             r"cannot read weights file '../../etc/passwd': .*must be a relative path inside")

    # --- Operands that become computed dims, and sequences: malformed ones are compile
    # errors naming the node.
    vi = h.make_tensor_value_info
    onnx_case("cos_shape_matrix", _model([h.make_node("ConstantOfShape", ["s"], ["y"])], [vi("s", T.INT64, [2, 2])],
                                         [_y()]), r"node 'ConstantOfShape_0' .*shape must be a vector")
    onnx_case("range_vector_bounds",
              _model([h.make_node("Range", ["a", "b", "c"], ["y"])],
                     [vi("a", T.FLOAT, [2]), vi("b", T.FLOAT, []), vi("c", T.FLOAT, [])], [_y()]),
              r"node 'Range_0' .*must be scalars of one type")
    onnx_case("resize_sizes_length",
              _model([h.make_node("Resize", ["x", "", "", "s"], ["y"])],
                     [_x("x", (1, 1, 4, 4)), vi("s", T.INT64, [3])], [_y()], opsets=(("", 19),)),
              r"node 'Resize_0' .*sizes has 3 values for 4 axes")
    onnx_case("pad_amounts_length",
              _model([h.make_node("Pad", ["x", "p"], ["y"])], [_x(), vi("p", T.INT64, [3])], [_y()]),
              r"node 'Pad_0' .*pads give 3 amounts for the 2 dims")
    onnx_case("onehot_values_length",
              _model([h.make_node("OneHot", ["i", "d", "v"], ["y"])],
                     [vi("i", T.INT64, [3]), vi("d", T.INT64, []), vi("v", T.FLOAT, [3])], [_y()]),
              r"node 'OneHot_0' .*values must hold \[off_value, on_value\]")
    onnx_case("sequence_as_output", _model([h.make_node("SequenceConstruct", ["x"], ["y"])], [_x()], [_y()]),
              r"graph output 'y': value 'y' is a sequence")
    onnx_case("sequence_at_past_the_end",
              _model([h.make_node("SequenceConstruct", ["x", "x"], ["s"]),
                      h.make_node("SequenceAt", ["s", "p"], ["y"])], [_x()], [_y()],
                     [nh.from_array(np.array(2, np.int64), "p")]),
              r"node 'SequenceAt_1' .*position 2 is out of range for a sequence of 2")
    onnx_case("det_too_large", _model([h.make_node("Det", ["x"], ["y"])], [_x("x", (7, 7))], [_y()],
                                      opsets=(("", 22),)), r"node 'Det_0' .*at most 5x5")

    # --- Loop bodies that do not fit their loop.
    def body(nodes, ins, outs):
        vi = lambda n, t=T.FLOAT, s=None: h.make_tensor_value_info(n, t, s)  # noqa: E731
        return h.make_graph(nodes, "body", [vi(n, t, s) for n, t, s in ins], [vi(n, t, s) for n, t, s in outs])
    i_c = [("i", T.INT64, []), ("c", T.BOOL, [])]
    m = nh.from_array(np.array(3, np.int64), "m")
    m_in = h.make_tensor_value_info("m", T.INT64, [])
    onnx_case("loop_body_arity", _model([h.make_node("Loop", ["m", "", "x"], ["y"], body=body(
        [h.make_node("Identity", ["c"], ["co"])], i_c, [("co", T.BOOL, [])]))], [_x(), m_in], [_y()]),
        r"node 'Loop_0' \(Loop\): the body takes 2 inputs; with 1 carried values it must take 3")
    onnx_case("loop_carried_type_changes", _model([h.make_node("Loop", ["m", "", "x"], ["y"], body=body(
        [h.make_node("Identity", ["c"], ["co"]), h.make_node("Transpose", ["v"], ["vo"])],
        [*i_c, ("v", T.FLOAT, None)], [("co", T.BOOL, []), ("vo", T.FLOAT, None)]))], [_x(), m_in], [_y()]),
        r"node 'Loop_0' .*carried value 0 is f32\[2,3\] but the body makes it f32\[3,2\]")
    onnx_case("loop_forever", _model([h.make_node("Loop", ["", "", "x"], ["y"], body=body(
        [h.make_node("Identity", ["c"], ["co"]), h.make_node("Relu", ["v"], ["vo"])],
        [*i_c, ("v", T.FLOAT, None)], [("co", T.BOOL, []), ("vo", T.FLOAT, None)]))], [_x()], [_y()]),
        r"node 'Loop_0' .*it would run forever")
    loop_ok = _model([h.make_node("Loop", ["m", "", "x"], ["y"], body=body(
        [h.make_node("Identity", ["c"], ["co"]), h.make_node("Relu", ["v"], ["vo"])],
        [*i_c, ("v", T.FLOAT, None)], [("co", T.BOOL, []), ("vo", T.FLOAT, None)]))], [_x()], [_y()], [m])
    onnx_case("loop_cuda", loop_ok, r"node 'Loop_0' \(loop\): loops run on the CPU only",
              extra=("--target", "nvptx64-nvidia-cuda"))

    # --- The CLI.
    onnx.save(_relu(), str(d / "relu.onnx"))
    r = ["{dlc}", "compile", "{d}/relu.onnx", "-o"]
    cases.append(("cli_unknown_cpu", [*r, "{d}/o1", "--cpu", "pentium99"], r"--cpu 'pentium99' is not a CPU LLVM knows"))
    cases.append(("cli_unknown_sm", [*r, "{d}/o2", "--target", "nvptx64-nvidia-cuda", "--cpu", "sm_1"],
                  r"--cpu 'sm_1' is not a GPU architecture LLVM knows"))
    cases.append(("cli_old_sm", [*r, "{d}/o3", "--target", "nvptx64-nvidia-cuda", "--cpu", "sm_60"],
                  r"--cpu sm_60: dlc's CUDA kernels need sm_70"))
    cases.append(("cli_input_shape_twice", [*r, "{d}/o4", "--input-shape", "x=2x3", "--input-shape", "x=2x3"],
                  r"--input-shape given twice for input 'x'"))
    # Found by fuzzing (scripts/fuzz.sh npy): a deeply nested header took npyz minutes.
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (" + b"[" * 40 + b"1,), }"
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    (d / "nested_header.npy").write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + b"\0" * 4)
    cases.append(("npy_nested_header", ["{dlc}", "run", "{d}/relu_art", "--input", "x={d}/nested_header.npy",
                                        "-o", "{d}/o6"], r"header nests \d+ deep"))
    # Found by fuzzing (CI's npy target): a shape whose element count overflows u64.
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (0014984508623109546893, 3), }"
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    (d / "overflow.npy").write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + b"\0" * 4)
    cases.append(("npy_shape_overflows", ["{dlc}", "run", "{d}/relu_art", "--input", "x={d}/overflow.npy",
                                          "-o", "{d}/o7"], r"more than 2\^64 elements"))
    cases.append(("cli_dev_zero_input", ["{dlc}", "run", "{d}/relu_art", "--input", "x=/dev/zero", "-o", "{d}/o5"],
                  r"'/dev/zero' is not a regular file"))
    return cases


def runtime_index_cases(d):
    """Models whose indices arrive at run time, with feeds in range (dlc must match ONNX
    Runtime) and out of range (ONNX Runtime fails the run; dlc must too, naming the node,
    never clamp silently). Returns (name, model path, feeds, in_range) tuples. The `If`
    case computes its branches speculatively: an index out of range in the branch not
    taken must not fail the run."""
    def save(name, nodes, inputs):
        m = _model(nodes, inputs, [_y()])
        m = onnx.shape_inference.infer_shapes(m)
        onnx.save(m, str(d / f"{name}.onnx"))
        return d / f"{name}.onnx"

    f32, i64, i32 = np.float32, np.int64, np.int32

    def vi(name, ty, shape):
        return h.make_tensor_value_info(name, ty, shape)

    out = []
    p = save("rt_gather", [h.make_node("Gather", ["data", "idx"], ["y"], axis=0)],
             [vi("data", T.FLOAT, [5, 3]), vi("idx", T.INT64, [4])])
    data = np.arange(15, dtype=f32).reshape(5, 3)
    out += [("rt_gather", p, {"data": data, "idx": np.array([0, 4, -5, 2], i64)}, True),
            ("rt_gather_past_end", p, {"data": data, "idx": np.array([0, 5, 1, 2], i64)}, False),
            ("rt_gather_below_start", p, {"data": data, "idx": np.array([0, -6, 1, 2], i64)}, False)]
    p = save("rt_gather_sym", [h.make_node("Gather", ["data", "idx"], ["y"], axis=1)],
             [vi("data", T.FLOAT, ["n", 7]), vi("idx", T.INT64, ["n", 2])])
    data = np.arange(21, dtype=f32).reshape(3, 7)
    out += [("rt_gather_sym", p, {"data": data, "idx": np.array([[0, 6], [1, -7], [2, 3]], i64)}, True),
            ("rt_gather_sym_past_end", p, {"data": data, "idx": np.array([[0, 7], [1, 1], [2, 3]], i64)}, False)]
    p = save("rt_gather_elements", [h.make_node("GatherElements", ["data", "idx"], ["y"], axis=1)],
             [vi("data", T.FLOAT, [3, 4]), vi("idx", T.INT32, [3, 2])])
    data = np.arange(12, dtype=f32).reshape(3, 4)
    out += [("rt_gather_elements", p, {"data": data, "idx": np.array([[0, 3], [1, -4], [2, 3]], i32)}, True),
            ("rt_gather_elements_past_end", p, {"data": data, "idx": np.array([[0, 3], [1, 4], [2, 3]], i32)}, False)]
    p = save("rt_scatter_nd", [h.make_node("ScatterND", ["data", "idx", "upd"], ["y"])],
             [vi("data", T.FLOAT, [4, 5]), vi("idx", T.INT64, [3, 2]), vi("upd", T.FLOAT, [3])])
    data, upd = np.zeros((4, 5), f32), np.array([1, 2, 3], f32)
    out += [("rt_scatter_nd", p, {"data": data, "idx": np.array([[0, 4], [3, -5], [1, 1]], i64), "upd": upd}, True),
            ("rt_scatter_nd_past_end", p, {"data": data, "idx": np.array([[0, 5], [3, 1], [1, 1]], i64), "upd": upd},
             False)]
    p = save("rt_scatter_elements", [h.make_node("ScatterElements", ["data", "idx", "upd"], ["y"], axis=0)],
             [vi("data", T.FLOAT, [4, 5]), vi("idx", T.INT64, [2, 5]), vi("upd", T.FLOAT, [2, 5])])
    data, upd = np.zeros((4, 5), f32), np.arange(10, dtype=f32).reshape(2, 5)
    out += [("rt_scatter_elements", p, {"data": data, "idx": np.full((2, 5), 3, i64), "upd": upd}, True),
            ("rt_scatter_elements_past_end", p, {"data": data, "idx": np.full((2, 5), 4, i64), "upd": upd}, False)]
    # GatherND (built from a Gather over flattened rows): an entry out of range whose row
    # number would still be valid ([0, 5] of a [4, 5] is row 5) must fail, not read row 5.
    p = save("rt_gather_nd", [h.make_node("GatherND", ["data", "idx"], ["y"], batch_dims=1)],
             [vi("data", T.FLOAT, [2, 4, 5]), vi("idx", T.INT64, [2, 3, 2])])
    data = np.arange(40, dtype=f32).reshape(2, 4, 5)
    ok = np.array([[[0, 4], [3, -5], [-1, -1]], [[1, 1], [2, 0], [0, 3]]], i64)
    bad = ok.copy()
    bad[1, 2] = [0, 5]
    out += [("rt_gather_nd", p, {"data": data, "idx": ok}, True),
            ("rt_gather_nd_entry_past_end", p, {"data": data, "idx": bad}, False)]
    # If with a run-time condition: then gathers with idx, else negates the data.
    then_g = h.make_graph([h.make_node("Gather", ["data", "idx"], ["t"], axis=0)], "then", [],
                          [vi("t", T.FLOAT, [2, 3])])
    else_g = h.make_graph([h.make_node("Slice", ["data", "s0", "s2"], ["e"])], "else", [],
                          [vi("e", T.FLOAT, [2, 3])],
                          initializer=[nh.from_array(np.array([0], i64), "s0"), nh.from_array(np.array([2], i64), "s2")])
    p = save("rt_if_gather", [h.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)],
             [vi("c", T.BOOL, []), vi("data", T.FLOAT, [5, 3]), vi("idx", T.INT64, [2])])
    data = np.arange(15, dtype=f32).reshape(5, 3)
    out += [("rt_if_gather_taken", p, {"c": np.array(True), "data": data, "idx": np.array([4, 1], i64)}, True),
            ("rt_if_bad_index_not_taken", p, {"c": np.array(False), "data": data, "idx": np.array([9, 1], i64)}, True),
            ("rt_if_bad_index_taken", p, {"c": np.array(True), "data": data, "idx": np.array([9, 1], i64)}, False)]
    return out
