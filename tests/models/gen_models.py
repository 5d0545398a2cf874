#!/usr/bin/env python3
"""Builds the reference models with onnx.helper and seeded random weights.

    python tests/models/gen_models.py OUTDIR [mlp resnet18 ...]

Models: mlp (784-1024-1024-10, MatMul/Gemm/Relu/Softmax), resnet18 (ResNet-18
shaped CNN on 1x3x224x224: Conv, BatchNormalization, Relu, MaxPool, residual Add,
GlobalAveragePool, Flatten, Gemm), mobilenetv2 (depthwise convs, Clip 0..6,
inverted residuals), bert (2-layer BERT-base encoder: seq 128, hidden 768, 12 heads,
attention mask, LayerNormalization, Erf Gelu) and mnist_cnn (the small example
bundled in examples/models/). Weights are He-initialised from a fixed seed so the
files are identical on every run.
"""
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8


class Builder:
    def __init__(self, seed):
        self.rng = np.random.RandomState(seed)
        self.nodes, self.inits = [], []
        self.count = 0

    def name(self, base):
        self.count += 1
        return f"{base}_{self.count}"

    def weight(self, base, shape, std):
        n = self.name(base)
        self.inits.append(numpy_helper.from_array((self.rng.randn(*shape) * std).astype(np.float32), n))
        return n

    def const(self, base, array):
        n = self.name(base)
        self.inits.append(numpy_helper.from_array(array, n))
        return n

    def node(self, op, inputs, name=None, **attrs):
        name = name or self.name(op.lower())
        out = name + "_out"
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def model(self, name, inputs, outputs):
        g = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="dlc-gen")
        m.ir_version = IR_VERSION
        onnx.checker.check_model(m)
        return m


def mlp():
    b = Builder(1)
    x = "input"
    w1 = b.weight("fc1_w", (784, 1024), np.sqrt(2 / 784))
    h = b.node("MatMul", [x, w1], name="fc1")
    h = b.node("Add", [h, b.weight("fc1_b", (1024,), 0.1)], name="fc1_bias")
    h = b.node("Relu", [h], name="relu1")
    h = b.node("Gemm", [h, b.weight("fc2_w", (1024, 1024), np.sqrt(2 / 1024)), b.weight("fc2_b", (1024,), 0.1)],
               name="fc2", transB=1)
    h = b.node("Relu", [h], name="relu2")
    logits = b.node("Gemm", [h, b.weight("fc3_w", (10, 1024), np.sqrt(1 / 1024)), b.weight("fc3_b", (10,), 0.1)],
                    name="fc3", transB=1)
    b.nodes[-1].output[0] = "logits"
    b.nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1))
    return b.model(
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 784])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10]),
         helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 10])],
    )


def conv_bn(b, x, cin, cout, k, stride, pad, relu=True):
    w = b.weight("conv_w", (cout, cin, k, k), np.sqrt(2 / (cin * k * k)))
    y = b.node("Conv", [x, w], kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4)
    scale = b.const("bn_scale", b.rng.uniform(0.5, 1.0, cout).astype(np.float32))
    bias = b.const("bn_bias", (b.rng.randn(cout) * 0.1).astype(np.float32))
    mean = b.const("bn_mean", (b.rng.randn(cout) * 0.1).astype(np.float32))
    var = b.const("bn_var", b.rng.uniform(0.5, 1.5, cout).astype(np.float32))
    y = b.node("BatchNormalization", [y, scale, bias, mean, var], epsilon=1e-5)
    return b.node("Relu", [y]) if relu else y


def basic_block(b, x, cin, cout, stride):
    y = conv_bn(b, x, cin, cout, 3, stride, 1)
    y = conv_bn(b, y, cout, cout, 3, 1, 1, relu=False)
    short = conv_bn(b, x, cin, cout, 1, stride, 0, relu=False) if (stride != 1 or cin != cout) else x
    return b.node("Relu", [b.node("Add", [y, short])])


def resnet18():
    b = Builder(2)
    x = conv_bn(b, "input", 3, 64, 7, 2, 3)
    x = b.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        x = basic_block(b, x, cin, cout, stride)
        x = basic_block(b, x, cout, cout, 1)
        cin = cout
    x = b.node("GlobalAveragePool", [x])
    x = b.node("Flatten", [x], axis=1)
    w = b.weight("fc_w", (1000, 512), np.sqrt(1 / 512))
    fc = b.node("Gemm", [x, w, b.weight("fc_b", (1000,), 0.01)], transB=1)
    b.nodes[-1].output[0] = "logits"
    return b.model(
        "resnet18",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1000])],
    )


def mnist_cnn():
    b = Builder(3)
    x = b.node("Conv", ["input", b.weight("c1_w", (8, 1, 3, 3), np.sqrt(2 / 9)), b.weight("c1_b", (8,), 0.1)],
               pads=[1, 1, 1, 1])
    x = b.node("MaxPool", [b.node("Relu", [x])], kernel_shape=[2, 2], strides=[2, 2])
    x = b.node("Conv", [x, b.weight("c2_w", (16, 8, 3, 3), np.sqrt(2 / 72)), b.weight("c2_b", (16,), 0.1)],
               pads=[1, 1, 1, 1])
    x = b.node("MaxPool", [b.node("Relu", [x])], kernel_shape=[2, 2], strides=[2, 2])
    x = b.node("Flatten", [x], axis=1)
    b.node("Gemm", [x, b.weight("fc_w", (10, 784), np.sqrt(1 / 784)), b.weight("fc_b", (10,), 0.1)], transB=1)
    b.nodes[-1].output[0] = "logits"
    b.nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1))
    return b.model(
        "mnist_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10]),
         helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 10])],
    )


def clip6(b, x):
    return b.node("Clip", [x, b.const("zero", np.array(0, np.float32)), b.const("six", np.array(6, np.float32))])


def conv_bn_generic(b, x, cin, cout, k, stride, group=1, act=True):
    w = b.weight("conv_w", (cout, cin // group, k, k), np.sqrt(2 / (cin // group * k * k)))
    y = b.node("Conv", [x, w], kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4, group=group)
    scale = b.const("bn_scale", b.rng.uniform(0.5, 1.0, cout).astype(np.float32))
    bias = b.const("bn_bias", (b.rng.randn(cout) * 0.1).astype(np.float32))
    mean = b.const("bn_mean", (b.rng.randn(cout) * 0.1).astype(np.float32))
    var = b.const("bn_var", b.rng.uniform(0.5, 1.5, cout).astype(np.float32))
    y = b.node("BatchNormalization", [y, scale, bias, mean, var], epsilon=1e-5)
    return clip6(b, y) if act else y


def mobilenetv2():
    """MobileNetV2 on 1x3x224x224: inverted residuals with depthwise convs, Clip(0, 6)."""
    b = Builder(4)
    x = conv_bn_generic(b, "input", 3, 32, 3, 2)
    cin = 32
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                       (6, 320, 1, 1)]:
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = cin * t
            y = conv_bn_generic(b, x, cin, hidden, 1, 1) if t != 1 else x
            y = conv_bn_generic(b, y, hidden, hidden, 3, stride, group=hidden)
            y = conv_bn_generic(b, y, hidden, c, 1, 1, act=False)
            x = b.node("Add", [x, y]) if stride == 1 and cin == c else y
            cin = c
    x = conv_bn_generic(b, x, cin, 1280, 1, 1)
    x = b.node("Flatten", [b.node("GlobalAveragePool", [x])], axis=1)
    b.node("Gemm", [x, b.weight("fc_w", (1000, 1280), np.sqrt(1 / 1280)), b.weight("fc_b", (1000,), 0.01)], transB=1)
    b.nodes[-1].output[0] = "logits"
    return b.model(
        "mobilenetv2",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1000])],
    )


def bert(layers=2, seq=128, hidden=768, heads=12, ffn=3072, vocab=8192):
    """A BERT-base-shaped encoder: embeddings (Gather), attention with a padding mask,
    LayerNormalization and Erf-based Gelu."""
    b = Builder(5)
    dh = hidden // heads
    i64 = lambda *v: np.array(v, np.int64)  # noqa: E731
    emb = b.node("Gather", [b.weight("word_emb", (vocab, hidden), 0.02), "input_ids"], axis=0)
    x = b.node("Add", [emb, b.weight("pos_emb", (seq, hidden), 0.02)])

    def layernorm(x):
        g = b.const("ln_g", b.rng.uniform(0.8, 1.2, hidden).astype(np.float32))
        bb = b.const("ln_b", (b.rng.randn(hidden) * 0.02).astype(np.float32))
        return b.node("LayerNormalization", [x, g, bb], axis=-1, epsilon=1e-12)

    def dense(x, n_in, n_out):
        y = b.node("MatMul", [x, b.weight("dense_w", (n_in, n_out), 0.02 * np.sqrt(768 / n_in))])
        return b.node("Add", [y, b.weight("dense_b", (n_out,), 0.02)])

    x = layernorm(x)
    # (1 - mask) * -10000 as an additive bias over the key positions.
    m = b.node("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    m = b.node("Sub", [b.const("one", np.array(1, np.float32)), m])
    m = b.node("Mul", [m, b.const("neg", np.array(-10000, np.float32))])
    mask = b.node("Unsqueeze", [m, b.const("axes", i64(1, 2))])
    # Reshape targets copy the batch and sequence dims (0), as exporters with dynamic
    # axes write them, so that the batch can be made symbolic (tests/models/make_symbolic.py).
    heads_shape = b.const("heads_shape", i64(0, 0, heads, dh))
    for _ in range(layers):
        def split(t, perm):
            return b.node("Transpose", [b.node("Reshape", [t, heads_shape])], perm=perm)

        q = split(dense(x, hidden, hidden), [0, 2, 1, 3])
        k = split(dense(x, hidden, hidden), [0, 2, 3, 1])
        v = split(dense(x, hidden, hidden), [0, 2, 1, 3])
        scores = b.node("Div", [b.node("MatMul", [q, k]), b.const("sqrt_dh", np.array(np.sqrt(dh), np.float32))])
        probs = b.node("Softmax", [b.node("Add", [scores, mask])], axis=-1)
        ctx = b.node("Transpose", [b.node("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        ctx = b.node("Reshape", [ctx, b.const("hidden_shape", i64(0, 0, hidden))])
        x = layernorm(b.node("Add", [x, dense(ctx, hidden, hidden)]))
        h = dense(x, hidden, ffn)
        erf = b.node("Erf", [b.node("Div", [h, b.const("sqrt2", np.array(np.sqrt(2), np.float32))])])
        g = b.node("Mul", [b.node("Mul", [h, b.node("Add", [erf, b.const("one", np.array(1, np.float32))])]),
                           b.const("half", np.array(0.5, np.float32))])
        x = layernorm(b.node("Add", [x, dense(g, ffn, hidden)]))
    b.nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="output"))
    return b.model(
        "bert",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, seq]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [1, seq])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [1, seq, hidden])],
    )


MODELS = {"mlp": mlp, "resnet18": resnet18, "mnist_cnn": mnist_cnn, "mobilenetv2": mobilenetv2, "bert": bert}


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name in sys.argv[2:] or MODELS:
        onnx.save(MODELS[name](), out / f"{name}.onnx")
        print(out / f"{name}.onnx")


if __name__ == "__main__":
    main()
