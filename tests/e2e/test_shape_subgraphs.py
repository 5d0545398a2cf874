"""Shape subgraphs over run-time dims, as exporters write them (PyTorch's
`x[:, :seq]`, `torch.arange(x.shape[1])`, `expand`, `new_ones`, YOLO's anchor grids):
the importer folds them into dim expressions and a few small kernels (a strided read,
an iota, a broadcast), and one artifact matches ONNX Runtime at several shapes."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import assert_close, dlc, dlc_run, ort_run


def _save(path, nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
                          initializer=list(inits))
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]), path)
    return path


def _i64(name, v):
    return numpy_helper.from_array(np.asarray(v, dtype=np.int64), name)


def _f32(name, v):
    return numpy_helper.from_array(np.asarray(v, dtype=np.float32), name)


@pytest.fixture(scope="module")
def embeddings(tmp_path_factory):
    """BERT's embeddings: a position table sliced to the sequence length (`[1, S, 8]`),
    added to `[B, S, 8]` and normalised (a residual that must broadcast over the batch,
    not be fused as if it had the batch's elements), plus positions from a Range over
    the sequence length and a mask of ones expanded to `[B, 1, S, S]`."""
    d = tmp_path_factory.mktemp("emb")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "S", 8])
    rng = np.random.RandomState(0)
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "one_s"], ["s"], axis=0),
        helper.make_node("Unsqueeze", ["s", "zero_axis"], ["s1"]),
        helper.make_node("Slice", ["table", "zero", "s1", "one_axis"], ["pos"]),
        helper.make_node("Add", ["x", "pos"], ["sum"]),
        helper.make_node("LayerNormalization", ["sum", "gamma", "beta"], ["y"], axis=-1),
        # torch.arange(seq) as float, added to every row.
        helper.make_node("Range", ["zero_s", "s", "one_s"], ["ar"]),
        helper.make_node("Cast", ["ar"], ["arf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["arf", "zero_axis"], ["arf1"]),
        helper.make_node("Transpose", ["arf1"], ["arf1_t"], perm=[1, 0]),
        helper.make_node("Add", ["y", "arf1_t"], ["y2"]),
        # new_ones(B, 1, S, S) via ConstantOfShape of a shape value, and Expand to it.
        helper.make_node("Gather", ["shape", "zero"], ["b1"], axis=0),
        helper.make_node("Concat", ["b1", "one", "s1", "s1"], ["mshape"], axis=0),
        helper.make_node("ConstantOfShape", ["mshape"], ["ones"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
        helper.make_node("Expand", ["bias", "mshape"], ["wide"]),
        helper.make_node("Mul", ["ones", "wide"], ["mask"]),
    ]
    inits = [_f32("table", rng.randn(1, 64, 8)), _i64("zero", [0]), _i64("one", [1]), _i64("zero_axis", [0]),
             _i64("one_axis", [1]), _f32("gamma", rng.rand(8) + 0.5), _f32("beta", rng.randn(8)),
             _i64("zero_s", 0), _i64("one_s", 1), _f32("bias", rng.randn(1, 1, 1, 1))]
    path = _save(d / "model.onnx", nodes, [x], ["y2", "mask"], inits)
    art = d / "art"
    dlc("compile", path, "-o", art)
    return path, art


@pytest.mark.parametrize("shape", [(1, 16, 8), (2, 9, 8), (3, 37, 8)])
def test_embeddings_at_run_time_batch_and_sequence_match_ort(embeddings, shape, tmp_path):
    path, art = embeddings
    feeds = {"x": np.random.RandomState(shape[1]).randn(*shape).astype(np.float32)}
    want = ort_run(path, feeds)
    got = dlc_run(art, path, feeds, tmp_path)
    for k in want:
        assert_close(got[k], want[k], f"{shape}: {k}")


def test_a_float_range_over_a_feature_maps_width(tmp_path):
    """YOLOv8's anchors: `Range(0, Cast<float>(W), 1) + 0.5` over a run-time width."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, "H", "W"])
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "three"], ["w"], axis=0),
        helper.make_node("Cast", ["w"], ["wf"], to=TensorProto.FLOAT),
        helper.make_node("Range", ["zero", "wf", "one"], ["r"]),
        helper.make_node("Add", ["r", "half"], ["a"]),
        helper.make_node("Add", ["x", "a"], ["y"]),
    ]
    inits = [_i64("three", 3), _f32("zero", 0.0), _f32("one", 1.0), _f32("half", 0.5)]
    path = _save(tmp_path / "m.onnx", nodes, [x], ["y"], inits)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    for shape in [(1, 4, 3, 5), (2, 4, 2, 11)]:
        feeds = {"x": np.random.RandomState(1).randn(*shape).astype(np.float32)}
        assert_close(dlc_run(art, path, feeds, tmp_path)["y"], ort_run(path, feeds)["y"], str(shape))


def test_the_size_of_a_shape_is_its_rank(tmp_path):
    """`Size(Shape(x))` (Silero's decoder counts a shape's elements): a constant."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Size", ["s"], ["r"]),
        helper.make_node("Cast", ["r"], ["rf"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["x", "rf"], ["y"]),
    ]
    path = _save(tmp_path / "m.onnx", nodes, [x], ["y"])
    dlc("compile", path, "-o", tmp_path / "art")
    feeds = {"x": np.random.RandomState(4).randn(3, 4).astype(np.float32)}
    assert_close(dlc_run(tmp_path / "art", path, feeds, tmp_path)["y"], ort_run(path, feeds)["y"], "size of a shape")
