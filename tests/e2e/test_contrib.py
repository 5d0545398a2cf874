"""`com.microsoft` contrib ops that ONNX Runtime's tools write (an extended-level
session saving its graph, the transformer optimizer): each against ONNX Runtime, which
defines them, on one small model per op and variant."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import assert_close, dlc, dlc_run, ort_run


def _model(path, nodes, inputs, outputs, inits):
    g = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
                          initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    onnx.save(m, path)
    return path


def _f(name, a):
    return numpy_helper.from_array(np.asarray(a, dtype=np.float32), name)


def _ms(op, inputs, outputs, **attrs):
    return helper.make_node(op, inputs, outputs, domain="com.microsoft", **attrs)


RNG = np.random.RandomState(0)
W = RNG.randn(6, 4, 3, 3).astype(np.float32) * 0.3
B = RNG.randn(6).astype(np.float32)

CASES = {
    "quick_gelu": ([_ms("QuickGelu", ["x"], ["y"], alpha=1.5)], (2, 4, 5, 5), []),
    "bias_gelu": ([_ms("BiasGelu", ["x", "b"], ["y"])], (2, 4, 5, 5), [_f("b", RNG.randn(5))]),
    "fast_gelu": ([_ms("FastGelu", ["x", "b"], ["y"])], (2, 4, 5, 5), [_f("b", RNG.randn(5))]),
    "fused_conv_relu": ([_ms("FusedConv", ["x", "w", "bias"], ["y"], activation="Relu", pads=[1, 1, 1, 1])],
                        (2, 4, 5, 5), [_f("w", W), _f("bias", B)]),
    "fused_conv_sigmoid_stride": ([_ms("FusedConv", ["x", "w", "bias"], ["y"], activation="Sigmoid", strides=[2, 2])],
                                  (1, 4, 7, 7), [_f("w", W), _f("bias", B)]),
    "fused_conv_leaky": ([_ms("FusedConv", ["x", "w", "bias"], ["y"], activation="LeakyRelu",
                              activation_params=[0.2])], (1, 4, 5, 5), [_f("w", W), _f("bias", B)]),
    "fused_conv_clip_z": ([_ms("FusedConv", ["x", "w", "bias", "z"], ["y"], activation="Clip",
                               activation_params=[-0.5, 0.7])], (1, 4, 5, 5),
                          [_f("w", W), _f("bias", B), _f("z", RNG.randn(1, 6, 3, 3))]),
    "skip_layernorm": ([_ms("SkipLayerNormalization", ["x", "s", "g", "be", "bi"], ["y", "", "", "sum"], epsilon=1e-5)],
                       (2, 3, 8), [_f("s", RNG.randn(2, 3, 8)), _f("g", RNG.rand(8) + 0.5), _f("be", RNG.randn(8)),
                                   _f("bi", RNG.randn(8))]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_contrib_op_matches_ort(name, tmp_path):
    nodes, shape, inits = CASES[name]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))
    outs = [o for o in nodes[0].output if o]
    path = _model(tmp_path / "m.onnx", nodes, [x], outs, inits)
    art = tmp_path / "art"
    dlc("compile", path, "-o", art)
    feeds = {"x": np.random.RandomState(1).randn(*shape).astype(np.float32)}
    want = ort_run(path, feeds)
    got = dlc_run(art, path, feeds, tmp_path)
    for k in want:
        assert_close(got[k], want[k], f"{name}: {k}")


def test_unsupported_contrib_ops_are_listed_with_their_domain(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    path = _model(tmp_path / "m.onnx", [_ms("NotAnOp", ["x"], ["y"])], [x], ["y"], [])
    p = dlc("compile", path, "-o", tmp_path / "art", check=False)
    assert p.returncode == 1 and "NotAnOp (domain com.microsoft" in p.stderr, p.stderr


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    """The transformer optimizer's BERT front: EmbedLayerNormalization (its mask_index, the
    count of each row's ones) into Attention, then Attention again on a raw 0/1 mask; batch
    and sequence at run time."""
    d = tmp_path_factory.mktemp("enc")
    rng = np.random.RandomState(3)
    h, heads, vocab = 16, 4, 50
    ids = helper.make_tensor_value_info("ids", TensorProto.INT32, ["B", "S"])
    mask = helper.make_tensor_value_info("mask", TensorProto.INT32, ["B", "S"])
    seg = helper.make_tensor_value_info("seg", TensorProto.INT32, ["B", "S"])
    nodes = [
        _ms("EmbedLayerNormalization", ["ids", "seg", "word", "pos", "segemb", "gamma", "beta", "mask"],
            ["emb", "mask_index"], epsilon=1e-5),
        _ms("Attention", ["emb", "w1", "b1", "mask_index"], ["a1"], num_heads=heads),
        _ms("Attention", ["a1", "w2", "b2", "mask"], ["a2"], num_heads=heads, mask_filter_value=-1e4),
    ]
    inits = [_f("word", rng.randn(vocab, h)), _f("pos", rng.randn(64, h)), _f("segemb", rng.randn(2, h)),
             _f("gamma", rng.rand(h) + 0.5), _f("beta", rng.randn(h)), _f("w1", rng.randn(h, 3 * h) * 0.3),
             _f("b1", rng.randn(3 * h)), _f("w2", rng.randn(h, 3 * h) * 0.3), _f("b2", rng.randn(3 * h))]
    g = helper.make_graph(nodes, "g", [ids, seg, mask], [helper.make_tensor_value_info("a2", TensorProto.FLOAT, None),
                                                         helper.make_tensor_value_info("mask_index", TensorProto.INT32,
                                                                                       None)], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    path = d / "enc.onnx"
    onnx.save(m, path)
    art = d / "art"
    dlc("compile", path, "-o", art)
    return path, art


@pytest.mark.parametrize("b,s", [(1, 7), (3, 12)])
def test_embed_layernorm_and_attention_with_padding_match_ort(encoder, b, s, tmp_path):
    path, art = encoder
    rng = np.random.RandomState(b * s)
    lens = rng.randint(1, s + 1, size=b)
    mask = (np.arange(s)[None, :] < lens[:, None]).astype(np.int32)
    feeds = {"ids": rng.randint(0, 50, size=(b, s)).astype(np.int32), "seg": rng.randint(0, 2, size=(b, s)).astype(np.int32),
             "mask": mask}
    want = ort_run(path, feeds)
    got = dlc_run(art, path, feeds, tmp_path)
    for k in want:
        assert_close(got[k], want[k], f"{b}x{s}: {k}")
