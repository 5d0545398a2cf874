"""An If on whether a run-time dim is 1, whose branches differ in rank: PyTorch's export
of `x.squeeze(-1)` on a dim only the input's length decides (Silero VAD's decoder has
it). dlc compiles the squeezing branch as an assumption checked while the model runs:
at lengths where the dim is 1 the results are ONNX Runtime's; at a length where it is
not, the run fails naming the assumption (ORT would give a tensor of another rank,
which one artifact cannot); and inside a branch of an outer If that is computed
speculatively, an assumption that does not hold fails nothing unless that branch is
taken.

The model: `x: [N, 1, L]`; an outer If on the bool input `use_a`. Its then-branch
convolves with kernel 4, stride 4 (time extent `floor((L - 4) / 4) + 1`: 1 for L in
4..7, 2 for L in 8..11), its else-branch with kernel 2, stride 8 (1 for L in 2..9);
each then squeezes its time dim when it is 1 (the exported pattern) and scales."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

from conftest import assert_close, dlc, dlc_run, dlc_run_process, ort_run


def _c(name, a):
    return h.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(a), name + "_v"))


def _branch(tag, k, stride, post):
    """Conv (kernel `k`, stride `stride`), then `If(time == 1, Squeeze, Identity)`, then `post`."""
    w = np.random.default_rng(k).standard_normal((2, 1, k)).astype(np.float32)
    sq = h.make_graph([_c(f"{tag}_ax", np.array([-1], np.int64)),
                       h.make_node("Squeeze", [f"{tag}_y", f"{tag}_ax"], [f"{tag}_sq"])],
                      f"{tag}_then", [], [h.make_tensor_value_info(f"{tag}_sq", T.FLOAT, None)])
    keep = h.make_graph([h.make_node("Identity", [f"{tag}_y"], [f"{tag}_id"])],
                        f"{tag}_else", [], [h.make_tensor_value_info(f"{tag}_id", T.FLOAT, None)])
    nodes = [
        _c(f"{tag}_w", w),
        h.make_node("Conv", ["x", f"{tag}_w"], [f"{tag}_y"], kernel_shape=[k], strides=[stride]),
        h.make_node("Shape", [f"{tag}_y"], [f"{tag}_shape"]),
        _c(f"{tag}_last", np.array(-1, np.int64)),
        h.make_node("Gather", [f"{tag}_shape", f"{tag}_last"], [f"{tag}_t"], axis=0),
        _c(f"{tag}_one", np.array(1, np.int64)),
        h.make_node("Equal", [f"{tag}_t", f"{tag}_one"], [f"{tag}_is1"]),
        h.make_node("If", [f"{tag}_is1"], [f"{tag}_z"], then_branch=sq, else_branch=keep, name=f"{tag}_squeeze"),
        *post,
    ]
    return h.make_graph(nodes, tag, [], [h.make_tensor_value_info(f"{tag}_out", T.FLOAT, None)])


def _model(path, outer=True):
    a = _branch("a", 4, 4, [_c("a_two", np.array(2.0, np.float32)), h.make_node("Mul", ["a_z", "a_two"], ["a_out"])])
    if not outer:
        # The then-branch alone, as a graph of its own.
        g = h.make_graph(a.node, "g", [h.make_tensor_value_info("x", T.FLOAT, ["N", 1, "L"])],
                         [h.make_tensor_value_info("a_out", T.FLOAT, None)])
        onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), str(path))
        return path
    b = _branch("b", 2, 8, [_c("b_one_f", np.array(1.0, np.float32)), h.make_node("Add", ["b_z", "b_one_f"], ["b_out"])])
    g = h.make_graph([h.make_node("If", ["use_a"], ["y"], then_branch=a, else_branch=b, name="pick")], "g",
                     [h.make_tensor_value_info("x", T.FLOAT, ["N", 1, "L"]),
                      h.make_tensor_value_info("use_a", T.BOOL, [])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)])
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    d = tmp_path_factory.mktemp("if_assume")
    path = _model(d / "squeeze_if_one.onnx")
    art = d / "art"
    dlc("compile", path, "-o", art)
    return path, art


def _feeds(n, length, use_a, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, 1, length)).astype(np.float32)
    return {"x": x, "use_a": np.array(use_a)}


@pytest.mark.parametrize("n,length,use_a", [(1, 5, True), (3, 7, True), (2, 4, False), (1, 9, False),
                                           # The then-branch's assumption breaks at L = 8
                                           # (its time extent is 2), but it is not taken.
                                           (2, 8, False)])
def test_one_artifact_matches_ort_where_the_assumption_holds(compiled, tmp_path, n, length, use_a):
    path, art = compiled
    feeds = _feeds(n, length, use_a)
    want = ort_run(path, feeds)["y"]
    assert want.shape == (n, 2), want.shape  # ORT took the squeezing branch too
    got = dlc_run(art, path, feeds, tmp_path)["y"]
    assert_close(got, want, f"N={n} L={length} use_a={use_a}")


def test_a_run_that_breaks_the_assumption_fails_naming_it(compiled, tmp_path):
    path, art = compiled
    feeds = _feeds(2, 8, True)
    # ONNX Runtime takes the other branch: a rank-3 result, which this artifact cannot give.
    assert ort_run(path, feeds)["y"].shape == (2, 2, 2)
    p = dlc_run_process(art, feeds, tmp_path)
    assert p.returncode == 1, p.stderr
    assert "a_squeeze/then_branch assumes dim 2 of a_y is 1" in p.stderr, p.stderr
    assert not (tmp_path / "out" / "y.npy").exists()


def test_a_pinned_length_folds_the_condition_and_takes_either_branch(tmp_path):
    """With `--input-shape` the condition is a constant: the branch taken is the only one
    compiled, whichever it is (the rank-3 one ORT gives at L = 8, the squeezing one at
    L = 6)."""
    path = _model(tmp_path / "m.onnx", outer=False)
    for length, rank in [(8, 3), (6, 2)]:
        x = np.random.default_rng(length).standard_normal((2, 1, length)).astype(np.float32)
        art = tmp_path / f"art{length}"
        dlc("compile", path, "-o", art, "--input-shape", f"x=2x1x{length}")
        want = ort_run(path, {"x": x})["a_out"]
        assert want.ndim == rank
        assert_close(dlc_run(art, path, {"x": x}, tmp_path)["a_out"], want, f"pinned L={length}")


def _one_branch_model(path):
    """`y = If(flag, relu(x) * 2, Imputer(x))`: dlc has no ai.onnx.ml Imputer."""
    then_g = h.make_graph([h.make_node("Relu", ["x"], ["r"]), _c("two", np.array(2.0, np.float32)),
                           h.make_node("Mul", ["r", "two"], ["t_out"])], "then", [],
                          [h.make_tensor_value_info("t_out", T.FLOAT, ["N", 3])])
    imputer = h.make_node("Imputer", ["x"], ["e_out"], domain="ai.onnx.ml", imputed_value_floats=[0.0],
                          replaced_value_float=float("nan"))
    else_g = h.make_graph([imputer], "else", [], [h.make_tensor_value_info("e_out", T.FLOAT, ["N", 3])])
    g = h.make_graph([h.make_node("If", ["flag"], ["y"], then_branch=then_g, else_branch=else_g, name="pick")], "g",
                     [h.make_tensor_value_info("x", T.FLOAT, ["N", 3]), h.make_tensor_value_info("flag", T.BOOL, [])],
                     [h.make_tensor_value_info("y", T.FLOAT, ["N", 3])])
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("ai.onnx.ml", 3)]), str(path))
    return path


def test_a_branch_dlc_cannot_compile_fails_only_the_runs_that_take_it(tmp_path):
    """One branch has an op dlc lacks: the other is compiled alone, checked to be the
    one taken; runs that take it match ORT, a run that takes the other fails naming the
    check (never a wrong answer)."""
    path = _one_branch_model(tmp_path / "one_branch.onnx")
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    x = np.random.default_rng(3).standard_normal((4, 3)).astype(np.float32)
    feeds = {"x": x, "flag": np.array(True)}
    assert_close(dlc_run(art, path, feeds, tmp_path)["y"], ort_run(path, feeds)["y"], "then")
    p = dlc_run_process(art, {"x": x, "flag": np.array(False)}, tmp_path, tmp_path / "out_else")
    assert p.returncode == 1, p.stderr
    assert "node 'pick/then_branch only (output 0)'" in p.stderr, p.stderr


def test_silero_pinned_to_a_length_compiles_the_branch_that_length_allows(tmp_path):
    """Silero VAD's default export pinned to 512 samples: its 8 kHz path cannot run at
    that length (ORT fails there too: its LSTM gets a rank-5 input), so only the 16 kHz
    path is compiled; at 16 kHz it matches ORT, at 8 kHz the run fails naming the check."""
    import sys
    from conftest import ROOT
    sys.path.insert(0, str(ROOT / "tests" / "models"))
    import real_models
    src = real_models.path("silero_vad_v5_if")
    art = tmp_path / "art"
    dlc("compile", src, "-o", art, "--input-shape", "input=1x512", "--input-shape", "state=2x1x128")
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal((1, 512)) * 0.1).astype(np.float32)
    feeds = {"input": audio, "state": np.zeros((2, 1, 128), np.float32), "sr": np.array(16000, np.int64)}
    got, want = dlc_run(art, src, feeds, tmp_path), ort_run(src, feeds)
    for k in want:
        assert_close(got[k], want[k], k)
    p = dlc_run_process(art, {**feeds, "sr": np.array(8000, np.int64)}, tmp_path, tmp_path / "out8k")
    assert p.returncode == 1 and "If_0/then_branch only" in p.stderr, p.stderr
