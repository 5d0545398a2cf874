#!/usr/bin/env python3
"""Writes the small ONNX test models committed under tests/filetests/onnx/.

    python tests/models/gen_test_models.py tests/filetests/onnx

Each model exercises one family of ops with edge cases (broadcasting, groups,
asymmetric pads, dilations, ceil_mode, legacy opsets, typed-field and external
initializers). Weights come from fixed seeds; rerunning writes identical files.
Expected outputs never come from here: tests compare dlc with ONNX Runtime.
"""
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

F = TensorProto.FLOAT


def vi(name, shape, t=F):
    if shape is None:
        return helper.make_empty_tensor_value_info(name)
    return helper.make_tensor_value_info(name, t, shape)


def save(out, name, nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, name, inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="dlc-tests")
    m.ir_version = 8
    # Output types come from ONNX's own shape inference.
    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(m).graph.value_info}
    for o in m.graph.output:
        if not o.type.HasField("tensor_type"):
            o.type.CopyFrom(inferred[o.name].type)
    onnx.checker.check_model(m)
    onnx.save(m, out / f"{name}.onnx")


def arr(rng, *shape, scale=1.0):
    return (rng.randn(*shape) * scale).astype(np.float32)


def elementwise(out):
    rng = np.random.RandomState(10)
    n = helper.make_node
    nodes = [
        n("Add", ["a", "b"], ["add"], name="add"),
        n("Sub", ["a", "b"], ["sub"], name="sub"),
        n("Mul", ["a", "c"], ["mul"], name="mul"),
        n("Div", ["a", "d"], ["div"], name="div"),
        n("Relu", ["a"], ["relu"], name="relu"),
        n("Sigmoid", ["a"], ["sigmoid"], name="sigmoid"),
        n("Tanh", ["a"], ["tanh"], name="tanh"),
        n("Clip", ["a", "lo", "hi"], ["clip"], name="clip"),
        n("Clip", ["a", "", "hi"], ["clip_hi"], name="clip_hi_only"),
    ]
    inits = [
        numpy_helper.from_array(arr(rng, 4), "c"),
        numpy_helper.from_array((np.abs(arr(rng, 3, 1)) + 0.5).astype(np.float32), "d"),
        numpy_helper.from_array(np.array(-0.5, np.float32), "lo"),
        numpy_helper.from_array(np.array(0.7, np.float32), "hi"),
    ]
    outs = ["add", "sub", "mul", "div", "relu", "sigmoid", "tanh", "clip", "clip_hi"]
    save(out, "elementwise", nodes, [vi("a", [2, 3, 4]), vi("b", [3, 1])], [vi(o, None) for o in outs], inits)


def conv_variants(out):
    rng = np.random.RandomState(11)
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w1", "b1"], ["grouped"], name="grouped", group=2, strides=[2, 1], pads=[1, 0, 2, 1],
          dilations=[2, 1], kernel_shape=[3, 3]),
        n("Conv", ["x", "w2"], ["depthwise"], name="depthwise", group=4, pads=[1, 1, 1, 1]),
        n("Conv", ["x", "w3"], ["same"], name="same_upper", auto_pad="SAME_UPPER", strides=[2, 2]),
        n("Conv", ["x", "w4", "b4"], ["pointwise"], name="pointwise"),
    ]
    inits = [
        numpy_helper.from_array(arr(rng, 6, 2, 3, 3), "w1"),
        numpy_helper.from_array(arr(rng, 6), "b1"),
        numpy_helper.from_array(arr(rng, 4, 1, 3, 3), "w2"),
        numpy_helper.from_array(arr(rng, 5, 4, 4, 4), "w3"),
        numpy_helper.from_array(arr(rng, 3, 4, 1, 1), "w4"),
        numpy_helper.from_array(arr(rng, 3), "b4"),
    ]
    outs = ["grouped", "depthwise", "same", "pointwise"]
    save(out, "conv_variants", nodes, [vi("x", [2, 4, 9, 9])], [vi(o, None) for o in outs], inits)


def pools(out):
    n = helper.make_node
    nodes = [
        n("MaxPool", ["x"], ["max_ceil"], name="max_ceil", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
          ceil_mode=1),
        n("MaxPool", ["x"], ["max_dilated"], name="max_dilated", kernel_shape=[2, 2], dilations=[2, 2]),
        n("AveragePool", ["x"], ["avg_incl"], name="avg_incl", kernel_shape=[3, 3], strides=[2, 2],
          pads=[1, 1, 1, 1], count_include_pad=1),
        n("AveragePool", ["x"], ["avg_excl"], name="avg_excl", kernel_shape=[3, 2], strides=[1, 2],
          pads=[1, 0, 1, 1]),
        n("AveragePool", ["x"], ["avg_same"], name="avg_same", kernel_shape=[2, 2], auto_pad="SAME_LOWER"),
        n("GlobalAveragePool", ["x"], ["gap"], name="gap"),
    ]
    outs = ["max_ceil", "max_dilated", "avg_incl", "avg_excl", "avg_same", "gap"]
    save(out, "pools", nodes, [vi("x", [1, 3, 8, 7])], [vi(o, None) for o in outs])


def movement(out):
    n = helper.make_node
    nodes = [
        n("Transpose", ["x"], ["t"], name="transpose", perm=[2, 0, 3, 1]),
        n("Reshape", ["x", "shape"], ["r"], name="reshape"),
        n("Flatten", ["x"], ["f"], name="flatten", axis=2),
        n("Concat", ["x", "y", "x"], ["cat"], name="concat", axis=1),
        n("Identity", ["y"], ["id"], name="identity"),
        n("Transpose", ["y"], ["t_default"], name="transpose_default"),
    ]
    inits = [numpy_helper.from_array(np.array([0, -1, 5], np.int64), "shape")]
    outs = ["t", "r", "f", "cat", "id", "t_default"]
    save(out, "movement", nodes, [vi("x", [2, 3, 4, 5]), vi("y", [2, 1, 4, 5])], [vi(o, None) for o in outs], inits)


def linalg(out):
    rng = np.random.RandomState(12)
    n = helper.make_node
    nodes = [
        n("MatMul", ["a", "w"], ["batched"], name="batched"),
        n("MatMul", ["v", "w"], ["vec"], name="vec_mat"),
        n("Gemm", ["m", "g", "c"], ["gemm_t"], name="gemm_trans_a", transA=1, alpha=0.5, beta=2.0),
        n("Gemm", ["m2", "g"], ["gemm_noc"], name="gemm_no_c", transB=1),
    ]
    # Typed-field initializers (float_data), not raw_data.
    w = helper.make_tensor("w", F, [5, 6], arr(rng, 5, 6).flatten().tolist(), raw=False)
    g = helper.make_tensor("g", F, [7, 3], arr(rng, 7, 3).flatten().tolist(), raw=False)
    c = numpy_helper.from_array(arr(rng, 3), "c")
    outs = ["batched", "vec", "gemm_t", "gemm_noc"]
    save(out, "linalg", nodes, [vi("a", [2, 3, 4, 5]), vi("v", [5]), vi("m", [7, 4]), vi("m2", [4, 3])],
         [vi(o, None) for o in outs], [w, g, c])


def legacy_softmax_bn(out):
    rng = np.random.RandomState(13)
    n = helper.make_node
    nodes = [
        n("Softmax", ["x"], ["sm_axis1"], name="softmax_axis1", axis=1),
        n("Softmax", ["x"], ["sm_last"], name="softmax_default_last", axis=2),
        n("BatchNormalization", ["img", "s", "bb", "mean", "var"], ["bn"], name="bn", epsilon=1e-3),
    ]
    inits = [
        numpy_helper.from_array(arr(rng, 3), "s"),
        numpy_helper.from_array(arr(rng, 3), "bb"),
        numpy_helper.from_array(arr(rng, 3), "mean"),
        numpy_helper.from_array((np.abs(arr(rng, 3)) + 0.1).astype(np.float32), "var"),
    ]
    save(out, "softmax_bn_opset11", nodes, [vi("x", [2, 3, 4]), vi("img", [2, 3, 4, 4])],
         [vi("sm_axis1", None), vi("sm_last", None), vi("bn", None)], inits, opset=11)


def softmax13(out):
    n = helper.make_node
    nodes = [n("Softmax", ["x"], ["sm0"], name="softmax_axis0", axis=0),
             n("Softmax", ["x"], ["sm1"], name="softmax_axis1", axis=1)]
    save(out, "softmax_opset13", nodes, [vi("x", [3, 5, 2])], [vi("sm0", None), vi("sm1", None)])


def external_data(out):
    rng = np.random.RandomState(14)
    w = arr(rng, 8, 16)
    b = arr(rng, 16)
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc")]
    g = helper.make_graph(nodes, "external_data", [vi("x", [2, 8])], [vi("y", [2, 16])],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="dlc-tests")
    m.ir_version = 8
    (out / "external_data.weights").unlink(missing_ok=True)  # onnx.save appends to an existing file
    onnx.save(m, out / "external_data.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="external_data.weights", size_threshold=0)


def symbolic_batch(out):
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    save(out, "symbolic_batch", nodes, [vi("x", ["N", 4])], [vi("y", ["N", 4])])


def fusion_patterns(out):
    """Subgraphs the optimiser recognises (attention with an additive float mask and a
    Mul scale, Erf GELU in another operand order, LayerNorm over a broadcast residual,
    MatMul + bias + Relu, an elementwise tree), so each fused kernel is checked against
    ONNX Runtime."""
    rng = np.random.RandomState(17)
    n = helper.make_node
    c = lambda name, v: numpy_helper.from_array(np.array(v, np.float32), name)  # noqa: E731
    def attention_block(tag, split, mask):
        t = lambda name: f"{tag}_{name}"  # noqa: E731
        return [
            n("Reshape", ["q", split], [t("q4")]), n("Transpose", [t("q4")], [t("qh")], perm=[0, 2, 1, 3]),
            n("Reshape", ["k", split], [t("k4")]), n("Transpose", [t("k4")], [t("kt")], perm=[0, 2, 3, 1]),
            n("Reshape", ["v", split], [t("v4")]), n("Transpose", [t("v4")], [t("vh")], perm=[0, 2, 1, 3]),
            n("MatMul", [t("qh"), t("kt")], [t("s")]), n("Mul", [t("s"), "scale"], [t("ss")]),
            n("Add", [mask, t("ss")], [t("sm")]),
            n("Softmax", [t("sm")], [t("p")], axis=-1), n("MatMul", [t("p"), t("vh")], [t("o")]),
            n("Transpose", [t("o")], [t("ot")], perm=[0, 2, 1, 3]), n("Reshape", [t("ot"), "merge"], [t("attn")]),
        ]

    # Two heads of 16 (the vectorised kernel) and eight heads of 4 (the scalar one).
    nodes = attention_block("a", "split2", "mask2") + attention_block("b", "split8", "mask8") + [
        n("Mul", ["a_attn", "inv_sqrt2"], ["g0"]), n("Erf", ["g0"], ["g1"]), n("Add", ["one", "g1"], ["g2"]),
        n("Mul", ["a_attn", "g2"], ["g3"]), n("Mul", ["half", "g3"], ["gelu"]),
        n("Add", ["pos", "gelu"], ["res"]),
        n("LayerNormalization", ["res", "gamma", "beta"], ["ln"], axis=-1, epsilon=1e-5),
        n("MatMul", ["ln", "w"], ["mm"]), n("Add", ["mm", "bias"], ["mb"]), n("Relu", ["mb"], ["y"]),
        # An elementwise tree with a broadcast operand: one fused kernel.
        n("Sigmoid", ["ln"], ["sg"]), n("Mul", ["ln", "sg"], ["sw"]), n("Add", ["sw", "beta"], ["sb"]),
        n("Tanh", ["sb"], ["z"]),
        n("Identity", ["b_attn"], ["u"]),
    ]
    inits = [
        numpy_helper.from_array(np.array([1, 4, 2, 16], np.int64), "split2"),
        numpy_helper.from_array(np.array([1, 4, 8, 4], np.int64), "split8"),
        numpy_helper.from_array(np.array([1, 4, 32], np.int64), "merge"),
        c("scale", 0.25), c("inv_sqrt2", 1 / np.sqrt(2)), c("one", 1.0), c("half", 0.5),
        numpy_helper.from_array(arr(rng, 4, 32), "pos"),
        numpy_helper.from_array(arr(rng, 32), "gamma"), numpy_helper.from_array(arr(rng, 32), "beta"),
        numpy_helper.from_array(arr(rng, 32, 6), "w"), numpy_helper.from_array(arr(rng, 6), "bias"),
    ]
    ins = [vi("q", [1, 4, 32]), vi("k", [1, 4, 32]), vi("v", [1, 4, 32]), vi("mask2", [1, 1, 4, 4]),
           vi("mask8", [1, 8, 4, 4])]
    save(out, "fusion_patterns", nodes, ins, [vi("y", None), vi("z", None), vi("u", None)], inits)


def gemm_packed(out):
    """Products with constant B (the packed-GEMM kernel): row and column counts that are
    not multiples of the tile, batched A, transposed B, bias/C epilogues with alpha,
    beta and activations."""
    rng = np.random.RandomState(23)
    n = helper.make_node
    nodes = [
        n("MatMul", ["a3", "w1"], ["m1"]), n("Add", ["m1", "b1"], ["m1b"]), n("Relu", ["m1b"], ["y1"]),
        n("Gemm", ["a2", "w2", "c2"], ["y2"], alpha=0.5, beta=2.0, transB=1),
        n("Gemm", ["a2", "w3"], ["g3"]), n("Sigmoid", ["g3"], ["y3"]),
        n("MatMul", ["a1", "w4"], ["y4"]),
    ]
    inits = [
        numpy_helper.from_array(arr(rng, 17, 37), "w1"), numpy_helper.from_array(arr(rng, 37), "b1"),
        numpy_helper.from_array(arr(rng, 70, 13), "w2"), numpy_helper.from_array(arr(rng, 1, 70), "c2"),
        numpy_helper.from_array(arr(rng, 13, 33), "w3"), numpy_helper.from_array(arr(rng, 13, 64), "w4"),
    ]
    ins = [vi("a3", [3, 5, 17]), vi("a2", [9, 13]), vi("a1", [13])]
    save(out, "gemm_packed", nodes, ins, [vi("y1", None), vi("y2", None), vi("y3", None), vi("y4", None)], inits)


def conv_pointwise(out):
    """1x1 convolutions (the GEMM kernel): pixel counts that are not multiples of the
    vector tile, channel counts that are not multiples of the row block, batch 2, with and
    without bias, a residual + Clip epilogue and a Sigmoid one."""
    rng = np.random.RandomState(29)
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[1, 1]),
        n("Add", ["c1", "r"], ["s1"]), n("Clip", ["s1", "lo", "hi"], ["y1"]),
        n("Conv", ["x", "w2"], ["c2"], kernel_shape=[1, 1]), n("Sigmoid", ["c2"], ["y2"]),
        n("Conv", ["big", "w3", "b3"], ["y3"], kernel_shape=[1, 1]),
    ]
    inits = [
        numpy_helper.from_array(arr(rng, 13, 6, 1, 1), "w1"), numpy_helper.from_array(arr(rng, 13), "b1"),
        numpy_helper.from_array(np.array(0, np.float32), "lo"), numpy_helper.from_array(np.array(6, np.float32), "hi"),
        numpy_helper.from_array(arr(rng, 9, 6, 1, 1), "w2"),
        numpy_helper.from_array(arr(rng, 16, 8, 1, 1), "w3"), numpy_helper.from_array(arr(rng, 16), "b3"),
    ]
    ins = [vi("x", [2, 6, 5, 7]), vi("r", [2, 13, 5, 7]), vi("big", [1, 8, 8, 8])]
    save(out, "conv_pointwise", nodes, ins, [vi("y1", None), vi("y2", None), vi("y3", None)], inits)


def conv_direct(out):
    """Convolutions for the direct vector kernel: 3x3 stride 1 and 2, a 7x7 stride-2 stem
    with padding 3, 5x5 with SAME_UPPER padding, rows wider than one pixel tile (37) and
    narrower ones, channel counts off the row block, a residual + Relu epilogue."""
    rng = np.random.RandomState(31)
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        n("Add", ["c1", "x9"], ["s1"]), n("Relu", ["s1"], ["y1"]),
        n("Conv", ["x", "w2"], ["y2"], kernel_shape=[3, 3], pads=[1, 0, 1, 2], strides=[2, 2]),
        n("Conv", ["x", "w3", "b3"], ["y3"], kernel_shape=[7, 7], pads=[3, 3, 3, 3], strides=[2, 2]),
        n("Conv", ["x", "w4"], ["y4"], kernel_shape=[5, 5], auto_pad="SAME_UPPER"),
        # Depthwise, stride 1 and 2.
        n("Conv", ["x", "dw1", "db1"], ["y5"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=3),
        n("Conv", ["x", "dw2"], ["y6"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2], group=3),
    ]
    inits = [
        numpy_helper.from_array(arr(rng, 9, 3, 3, 3), "w1"), numpy_helper.from_array(arr(rng, 9), "b1"),
        numpy_helper.from_array(arr(rng, 5, 3, 3, 3), "w2"),
        numpy_helper.from_array(arr(rng, 10, 3, 7, 7), "w3"), numpy_helper.from_array(arr(rng, 10), "b3"),
        numpy_helper.from_array(arr(rng, 4, 3, 5, 5), "w4"),
        numpy_helper.from_array(arr(rng, 3, 1, 3, 3), "dw1"), numpy_helper.from_array(arr(rng, 3), "db1"),
        numpy_helper.from_array(arr(rng, 3, 1, 3, 3), "dw2"),
    ]
    ins = [vi("x", [2, 3, 11, 37]), vi("x9", [2, 9, 11, 37])]
    outs = [vi(f"y{i}", None) for i in range(1, 7)]
    save(out, "conv_direct", nodes, ins, outs, inits)


def unsupported(out):
    n = helper.make_node
    nodes = [
        n("Relu", ["x"], ["r"], name="ok_relu"),
        n("LSTMx", ["r"], ["l"], name="mystery"),
        n("ImageDecoder", ["l"], ["e"], name="decoder_1"),
        n("CustomThing", ["e"], ["y"], name="custom", domain="com.example"),
    ]
    g = helper.make_graph(nodes, "unsupported", [vi("x", [1, 4])], [vi("y", [1, 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 2)])
    m.ir_version = 8
    onnx.save(m, out / "unsupported.onnx")


def conv_blocked(out):
    """Convolutions for the channel-blocked kernel (constant weights, one group): dilation
    2, stride 3 with a 1x3 kernel and asymmetric padding, output channels that leave a
    partial channel block (20, 3) with bias, residual and Clip / Sigmoid epilogues, a row
    narrower than a pixel tile; and the same 3x3 convolution with its weights given as an
    input, which takes the vector-along-pixels kernel instead."""
    rng = np.random.RandomState(41)
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[2, 2, 2, 2], dilations=[2, 2]),
        n("Add", ["c1", "r1"], ["s1"]), n("Clip", ["s1", "lo", "hi"], ["y1"]),
        n("Conv", ["x", "w2", "b2"], ["c2"], kernel_shape=[1, 3], pads=[0, 1, 0, 0], strides=[3, 3]),
        n("Sigmoid", ["c2"], ["y2"]),
        n("Conv", ["xs", "w3"], ["y3"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        n("Conv", ["x", "wx"], ["y4"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    ]
    inits = [
        numpy_helper.from_array(arr(rng, 20, 5, 3, 3), "w1"), numpy_helper.from_array(arr(rng, 20), "b1"),
        numpy_helper.from_array(np.array(-1.5, np.float32), "lo"), numpy_helper.from_array(np.array(2.0, np.float32), "hi"),
        numpy_helper.from_array(arr(rng, 3, 5, 1, 3), "w2"), numpy_helper.from_array(arr(rng, 3), "b2"),
        numpy_helper.from_array(arr(rng, 33, 5, 3, 3), "w3"),
    ]
    ins = [vi("x", [2, 5, 13, 17]), vi("r1", [2, 20, 13, 17]), vi("xs", [1, 5, 3, 2]), vi("wx", [7, 5, 3, 3])]
    outs = [vi(f"y{i}", None) for i in range(1, 5)]
    save(out, "conv_blocked", nodes, ins, outs, inits)


def integer_ops(out):
    """MatMulInteger and ConvInteger whose reductions exceed 256 terms (dlc splits them
    into exact f32 chunks): K = 300, and 32 input channels x 3x3 taps; uint8/int8 with
    zero points."""
    rng = np.random.RandomState(51)
    n = helper.make_node
    nodes = [
        n("MatMulInteger", ["a", "b", "a_zp", "b_zp"], ["mm"]),
        n("ConvInteger", ["x", "w", "x_zp"], ["cv"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    ]
    inits = [
        numpy_helper.from_array(rng.randint(0, 256, (300, 7)).astype(np.uint8), "b"),
        numpy_helper.from_array(np.array(131, np.uint8), "a_zp"),
        numpy_helper.from_array(np.array(97, np.uint8), "b_zp"),
        numpy_helper.from_array(rng.randint(0, 256, (5, 32, 3, 3)).astype(np.uint8), "w"),
        numpy_helper.from_array(np.array(12, np.uint8), "x_zp"),
    ]
    ins = [vi("a", [3, 300], TensorProto.UINT8), vi("x", [1, 32, 6, 6], TensorProto.UINT8)]
    save(out, "integer_ops", nodes, ins, [vi("mm", None), vi("cv", None)], inits)


def activations(out):
    """Activations with float attributes, given (non-default) and left out (ONNX's
    defaults): the importer and the exporter read and write them from one table."""
    n = helper.make_node
    nodes = [
        n("HardSigmoid", ["x"], ["a"], alpha=0.3, beta=0.4), n("LeakyRelu", ["x"], ["b"], alpha=0.2),
        n("Elu", ["x"], ["c"], alpha=0.7), n("Selu", ["x"], ["d"], alpha=1.5, gamma=1.1),
        n("Celu", ["x"], ["e"], alpha=0.9), n("ThresholdedRelu", ["x"], ["f"], alpha=0.3),
        n("Shrink", ["x"], ["g"], lambd=0.2, bias=0.1), n("LeakyRelu", ["x"], ["h"]), n("Selu", ["x"], ["i"]),
    ]
    save(out, "activations", nodes, [vi("x", [4, 5])], [vi(o, None) for o in "abcdefghi"])


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for f in [elementwise, conv_variants, pools, movement, linalg, legacy_softmax_bn, softmax13, external_data,
              symbolic_batch, fusion_patterns, gemm_packed, conv_pointwise, conv_direct, conv_blocked,
              integer_ops, activations, unsupported]:
        f(out)


if __name__ == "__main__":
    main()
