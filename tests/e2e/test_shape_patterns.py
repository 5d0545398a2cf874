"""Shape patterns of exported transformers and windowed vision models at run-time dims
(found exporting GPT-2 with a KV cache, ViT, T5 and Swin with `torch.onnx`): a negated
length as a Slice start (`bias[:, -S:]`), `expand(B, -1, -1)`'s Where over an Equal of
dims, a Range that starts at a cache's run-time length, `F.pad` to whole windows (Mod of
dims, the pairs reordered through a 2-D Reshape, Slice backwards and Transpose), a
Reshape into windows whose element count equals the input's only as numbers (checked
when the model runs), a ScatterND into a run-time-sized mask, and float math on dims
computed while the model runs. Each artifact is compiled once with no flags and matches
ONNX Runtime at several shapes."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

from conftest import assert_close, dlc, dlc_run, dlc_run_process, ort_run


def _save(path, nodes, inputs, outputs, inits=(), opset=17):
    outs = [h.make_tensor_value_info(o, T.INT64 if o in ("pos",) else T.FLOAT, None) for o in outputs]
    g = h.make_graph(nodes, "g", inputs, outs,
                     initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in dict(inits).items()])
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", opset)]), str(path))
    return path


def _i64(v):
    return np.asarray(v, np.int64)


def _check(path, art, feeds_list, tmp_path):
    for i, feeds in enumerate(feeds_list):
        want = ort_run(path, feeds)
        work = tmp_path / f"run{i}"
        work.mkdir()
        got = dlc_run(art, path, feeds, work)
        for k in want:
            assert got[k].shape == want[k].shape, (k, got[k].shape, want[k].shape)
            if want[k].dtype.kind == "f":
                assert_close(got[k], want[k], f"{i}: {k}")
            else:
                np.testing.assert_array_equal(got[k], want[k], err_msg=f"{i}: {k}")


def _compile(path, tmp_path):
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    return art


def test_negated_length_slice_expand_where_and_range_from_a_cache_length(tmp_path):
    """T5's `bias[:, -S:]` (Neg of a dim as a Slice start), ViT's `cls.expand(B, -1, -1)`
    (Where over Equal(shape, -1)) and GPT-2's positions after a cache,
    `arange(P, P + S)` (a Range from a run-time start)."""
    n = h.make_node
    nodes = [
        n("Shape", ["q"], ["qs"]), n("Gather", ["qs", "one"], ["s"], axis=0),
        n("Neg", ["s"], ["ns"]), n("Unsqueeze", ["ns", "zero_v"], ["ns1"]),
        n("Slice", ["bias", "ns1", "big", "one_v"], ["tail"]),
        n("Gather", ["qs", "zero"], ["b"], axis=0), n("Unsqueeze", ["b", "zero_v"], ["b1"]),
        n("Concat", ["b1", "minus1", "minus1"], ["want"], axis=0),
        n("Equal", ["want", "minus1x3"], ["is_free"]),
        n("Where", ["is_free", "ones3", "want"], ["target"]),
        n("Expand", ["cls", "target"], ["cls_b"]),
        n("Shape", ["past"], ["ps"]), n("Gather", ["ps", "one"], ["p"], axis=0),
        n("Add", ["p", "s"], ["end"]), n("Range", ["p", "end", "one"], ["pos"]),
    ]
    inputs = [h.make_tensor_value_info("q", T.FLOAT, ["B", "S", 4]),
              h.make_tensor_value_info("bias", T.FLOAT, [2, "L"]),
              h.make_tensor_value_info("past", T.FLOAT, ["B", "P", 4])]
    inits = {"zero": _i64(0), "one": _i64(1), "zero_v": _i64([0]), "one_v": _i64([1]), "big": _i64([1 << 62]),
             "minus1": _i64([-1]), "minus1x3": _i64([-1, -1, -1]), "ones3": _i64([1, 1, 1]),
             "cls": np.arange(4, dtype=np.float32).reshape(1, 1, 4)}
    path = _save(tmp_path / "m.onnx", nodes, inputs, ["tail", "cls_b", "pos"], inits)
    art = _compile(path, tmp_path)
    rng = np.random.default_rng(0)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)
    _check(path, art, [{"q": f(2, 3, 4), "bias": f(2, 9), "past": f(2, 5, 4)},
                       {"q": f(1, 6, 4), "bias": f(2, 6), "past": f(1, 1, 4)},
                       {"q": f(3, 1, 4), "bias": f(2, 4), "past": f(3, 12, 4)}], tmp_path)


def _pad_to_windows(x, win):
    """torch.onnx's `F.pad(x, (0, (win - W % win) % win, 0, (win - H % win) % win))` on
    NCHW `x`: the pads in PyTorch's order (last dim first), reordered through a 2-D
    Reshape, a backwards Slice and a Transpose into ONNX's."""
    n = h.make_node
    nodes = [
        n("Shape", [x], ["xs"]),
        n("Gather", ["xs", "two"], ["hh"], axis=0), n("Gather", ["xs", "three"], ["ww"], axis=0),
        n("Mod", ["ww", "win"], ["wm"]), n("Sub", ["win", "wm"], ["wr"]), n("Mod", ["wr", "win"], ["pr"]),
        n("Mod", ["hh", "win"], ["hm"]), n("Sub", ["win", "hm"], ["hr"]), n("Mod", ["hr", "win"], ["pb"]),
        n("Unsqueeze", ["pr", "zero_v"], ["pr1"]), n("Unsqueeze", ["pb", "zero_v"], ["pb1"]),
        n("Concat", ["zero_v", "pr1", "zero_v", "pb1", "zeros4"], ["torch_pads"], axis=0),
        n("Reshape", ["torch_pads", "pairs"], ["p2"]),
        n("Slice", ["p2", "minus1_v", "most_negative", "zero_v", "minus1_v"], ["p2r"]),
        n("Transpose", ["p2r"], ["p2t"], perm=[1, 0]),
        n("Reshape", ["p2t", "minus1_v"], ["p1"]), n("Cast", ["p1"], ["pads"], to=T.INT64),
        n("Pad", [x, "pads"], ["padded"], mode="constant"),
    ]
    inits = {"two": _i64(2), "three": _i64(3), "win": _i64(win), "zero_v": _i64([0]), "zeros4": _i64([0, 0, 0, 0]),
             "pairs": _i64([-1, 2]), "minus1_v": _i64([-1]), "most_negative": _i64([-(1 << 62)])}
    return nodes, inits


def test_padding_to_whole_windows_and_windows_of_the_padded_image(tmp_path):
    """Swin's window partition at run-time image dims: pad to multiples of 4, then
    `[N, C, Hp/4, 4, Wp/4, 4]` by a Reshape of explicit dims (Hp/4 * 4 == Hp only as
    numbers), then ScatterND of ones into a `[Hp, Wp]` mask at rows from a run-time
    Range (the shifted-window mask), and `sqrt(float(W))` computed as data."""
    nodes, inits = _pad_to_windows("x", 4)
    n = h.make_node
    nodes += [
        n("Shape", ["padded"], ["ps"]),
        n("Gather", ["ps", "zero"], ["pn"], axis=0), n("Gather", ["ps", "one"], ["pc"], axis=0),
        n("Gather", ["ps", "two"], ["ph"], axis=0), n("Gather", ["ps", "three"], ["pw"], axis=0),
        n("Div", ["ph", "win"], ["nh"]), n("Div", ["pw", "win"], ["nw"]),
        *[n("Unsqueeze", [v, "zero_v"], [f"{v}_1"]) for v in ("pn", "pc", "nh", "nw", "ph", "pw")],
        n("Concat", [*[f"{v}_1" for v in ("pn", "pc", "nh")], "win_v", "nw_1", "win_v"], ["wshape"], axis=0),
        n("Reshape", ["padded", "wshape"], ["windows"]),
        # The mask: zeros [Hp, Wp], ones scattered into rows 1.. (a run-time Range).
        n("Concat", ["ph_1", "pw_1"], ["mshape"], axis=0),
        n("ConstantOfShape", ["mshape"], ["mask0"], value=h.make_tensor("v", T.FLOAT, [1], [0.0])),
        n("Range", ["one", "ph", "one"], ["rows"]), n("Unsqueeze", ["rows", "minus1_v"], ["idx"]),
        n("Sub", ["ph", "one"], ["k"]), n("Unsqueeze", ["k", "zero_v"], ["k1"]),
        n("Concat", ["k1", "pw_1"], ["ushape"], axis=0),
        n("ConstantOfShape", ["ushape"], ["upd"], value=h.make_tensor("v", T.FLOAT, [1], [1.0])),
        n("ScatterND", ["mask0", "idx", "upd"], ["mask"]),
        # Float math on a dim, computed while the model runs.
        n("Gather", ["ps", "three"], ["w_again"], axis=0), n("Cast", ["w_again"], ["wf"], to=T.FLOAT),
        n("Sqrt", ["wf"], ["root"]),
    ]
    inits.update({"zero": _i64(0), "one": _i64(1), "win_v": _i64([4])})
    x = h.make_tensor_value_info("x", T.FLOAT, ["N", 3, "H", "W"])
    path = _save(tmp_path / "m.onnx", nodes, [x], ["padded", "windows", "mask", "root"], inits)
    art = _compile(path, tmp_path)
    rng = np.random.default_rng(1)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)
    _check(path, art, [{"x": f(1, 3, 8, 8)}, {"x": f(2, 3, 5, 10)}, {"x": f(1, 3, 13, 3)}], tmp_path)


def test_a_reshape_whose_counts_differ_at_run_time_is_refused_before_the_run(tmp_path):
    """A Reshape to `[N, floor(L / 4), 4]` holds the input's elements only when 4
    divides L: the artifact checks it before running and names the node."""
    n = h.make_node
    nodes = [n("Shape", ["x"], ["xs"]), n("Gather", ["xs", "zero"], ["nn"], axis=0),
             n("Gather", ["xs", "one"], ["ll"], axis=0), n("Div", ["ll", "four"], ["q"]),
             n("Unsqueeze", ["nn", "zero_v"], ["n1"]), n("Unsqueeze", ["q", "zero_v"], ["q1"]),
             n("Concat", ["n1", "q1", "four_v"], ["target"], axis=0),
             n("Reshape", ["x", "target"], ["y"], name="into_fours")]
    inits = {"zero": _i64(0), "one": _i64(1), "four": _i64(4), "zero_v": _i64([0]), "four_v": _i64([4])}
    x = h.make_tensor_value_info("x", T.FLOAT, ["N", "L"])
    path = _save(tmp_path / "m.onnx", nodes, [x], ["y"], inits)
    art = _compile(path, tmp_path)
    rng = np.random.default_rng(2)
    _check(path, art, [{"x": rng.standard_normal((2, 12)).astype(np.float32)}], tmp_path)
    (tmp_path / "bad").mkdir()
    p = dlc_run_process(art, {"x": rng.standard_normal((2, 10)).astype(np.float32)}, tmp_path / "bad")
    assert p.returncode != 0, p.stdout
    assert "into_fours" in p.stderr, p.stderr


def test_a_detector_transform_resizes_by_a_float_scale_and_pads_to_whole_strides(tmp_path):
    """torchvision's detection transform at run-time image sizes (Faster R-CNN): a Resize
    to `[*x.shape[:2], floor(float(h) * s), ...]` keeps the known batch and channels
    (only the computed sizes are dims the run gives), the padding to whole strides,
    `ceil(float(h') / 32.0) * 32 - h'`, is a dim expression (float math on dims that stays
    exact), so the Conv after it knows its channels; a Range over dims cast to int32 is
    int32 (the anchors' grid, multiplied by an int32 stride)."""
    n = h.make_node
    nodes = [
        n("Unsqueeze", ["x", "zero_v"], ["x4"]),
        n("Shape", ["x4"], ["xs"]), n("Slice", ["xs", "zero_v", "two_v"], ["lead"]),
        n("Slice", ["xs", "two_v", "four_v"], ["hw"]), n("Cast", ["hw"], ["hwf"], to=T.FLOAT),
        n("Mul", ["hwf", "scale"], ["hws"]), n("Floor", ["hws"], ["hwfl"]), n("Cast", ["hwfl"], ["hwi"], to=T.INT64),
        n("Concat", ["lead", "hwi"], ["sizes"], axis=0),
        n("Resize", ["x4", "", "", "sizes"], ["r"], mode="linear"),
        n("Shape", ["r"], ["rs"]), n("Slice", ["rs", "two_v", "four_v"], ["rhw"]),
        n("Cast", ["rhw"], ["rf"], to=T.FLOAT), n("Div", ["rf", "stride"], ["q"]), n("Ceil", ["q"], ["qc"]),
        n("Mul", ["qc", "stride"], ["whole"]), n("Cast", ["whole"], ["wi"], to=T.INT64),
        n("Sub", ["wi", "rhw"], ["more"]),
        n("Concat", ["zeros4", "zeros2", "more"], ["pads"], axis=0),
        n("Pad", ["r", "pads"], ["padded"]),
        n("Conv", ["padded", "w"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1]),
        # The anchors' grid: Range(0, int32(w'), 1) * an int32 stride.
        n("Gather", ["rs", "three"], ["wd"], axis=0), n("Cast", ["wd"], ["w32"], to=T.INT32),
        n("Range", ["zero32", "w32", "one32"], ["cols"]), n("Mul", ["cols", "stride32"], ["shifts"]),
        n("Cast", ["shifts"], ["grid"], to=T.FLOAT),
    ]
    inits = {"zero_v": _i64([0]), "two_v": _i64([2]), "four_v": _i64([4]), "three": _i64(3),
             "zeros4": _i64([0, 0, 0, 0]), "zeros2": _i64([0, 0]),
             "scale": np.float32(0.75), "stride": np.float32(32.0),
             "zero32": np.int32(0), "one32": np.int32(1), "stride32": np.int32(16),
             "w": (0.1 * np.random.default_rng(3).standard_normal((4, 3, 3, 3))).astype(np.float32)}
    x = h.make_tensor_value_info("x", T.FLOAT, [3, "H", "W"])
    path = _save(tmp_path / "m.onnx", nodes, [x], ["padded", "y", "grid"], inits)
    art = _compile(path, tmp_path)
    ir = tmp_path / "ir"
    dlc("compile", path, "-o", ir, "--emit", "ir")
    text = (ir / "model.dlcir").read_text()
    # Only the computed sizes are bound; the Resize's batch and channels stay 1 and 3.
    assert "sizes_part1_0 " in text and "sizes_0" not in text, text
    rng = np.random.default_rng(4)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)
    # Sizes that 0.75 of scales exactly (ONNX Runtime takes the scale of a Resize to
    # sizes as out / in in f32, dlc in f64: at other sizes they differ in the last bits).
    _check(path, art, [{"x": f(3, 52, 72)}, {"x": f(3, 64, 64)}, {"x": f(3, 36, 100)}], tmp_path)


def test_gather_nd_from_data_of_run_time_extents(tmp_path):
    """RetinaNet's and FCOS's post-processing: the scores of every anchor and class,
    `[A, C]` with a run-time A, gathered by index tuples (GatherND, rows and columns):
    the extents and strides are computed while the model runs; a tuple out of range
    fails the run naming no wrong row."""
    n = h.make_node
    nodes = [n("GatherND", ["x", "idx"], ["y"])]
    x = h.make_tensor_value_info("x", T.FLOAT, ["A", "C"])
    idx = h.make_tensor_value_info("idx", T.INT64, ["K", 2])
    path = _save(tmp_path / "m.onnx", nodes, [x, idx], ["y"], {})
    art = _compile(path, tmp_path)
    rng = np.random.default_rng(5)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)
    _check(path, art, [{"x": f(7, 5), "idx": _i64([[0, 0], [6, 4], [-1, 2], [3, -5]])},
                       {"x": f(40, 3), "idx": _i64([[39, 2], [1, 1]])}], tmp_path)
    (tmp_path / "bad").mkdir()
    p = dlc_run_process(art, {"x": f(7, 5), "idx": _i64([[7, 0]])}, tmp_path / "bad")
    assert p.returncode != 0 and "panicked" not in p.stderr, p.stderr
