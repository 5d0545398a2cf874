#!/usr/bin/env python3
"""One convolution layer at run-time image dims against the same layer pinned, at a
CNN's stage scales: where the price of run-time dims in a convolution comes from.

    .venv/bin/python benches/conv_rows.py [--dlc target/release/dlc] [--image 224] [--iters 100]

Each model is a 3x3 Conv (pads 1, bias, ReLU) over `[n, C, h, w]` after a 1x1 MaxPool
of stride `s`, so that with every symbol at 224 (the image the cost models judge a
run-time layer at, `dlc_lower::convblk::NOMINAL_DIM`) the layer sees the rows of a
ResNet stage: 56, 28, 14 and 7 pixels, and two stride-2 layers into 28 and 7 (the pool
reads one pixel of every s x s and costs the same in both artifacts). Both artifacts are
timed by `dlc bench --json` at `1 x C x image x image`, alternating, --rounds rounds;
the table gives the median of the rounds' medians and the ratio run-time/pinned.
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

ROOT = Path(__file__).resolve().parent.parent

# name, input channels, output channels, stride, pool stride (rows at 224: 224 / pool / stride)
LAYERS = [
    ("3x3, 64 ch, 56-pixel rows", 64, 64, 1, 4),
    ("3x3, 128 ch, 28-pixel rows", 128, 128, 1, 8),
    ("3x3, 256 ch, 14-pixel rows", 256, 256, 1, 16),
    ("3x3, 512 ch, 7-pixel rows", 512, 512, 1, 32),
    ("3x3 stride 2, 128 -> 256 ch, into 14-pixel rows", 128, 256, 2, 8),
    ("3x3 stride 2, 256 -> 512 ch, into 7-pixel rows", 256, 512, 2, 16),
]


def model(path, c, m, stride, down, seed):
    rng = np.random.default_rng(seed)
    w = nh.from_array((rng.standard_normal((m, c, 3, 3)) * 0.05).astype(np.float32), "w")
    b = nh.from_array(rng.standard_normal(m).astype(np.float32), "b")
    nodes = [
        h.make_node("MaxPool", ["x"], ["xd"], kernel_shape=[1, 1], strides=[down, down]),
        h.make_node("Conv", ["xd", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1] * 4, strides=[stride] * 2),
        h.make_node("Relu", ["c"], ["y"]),
    ]
    g = h.make_graph(nodes, "conv_rows", [h.make_tensor_value_info("x", T.FLOAT, ["n", c, "h", "w"])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)], [w, b])
    mo = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    mo.ir_version = 8
    onnx.save(mo, str(path))


def bench(dlc, art, shape, iters):
    out = subprocess.run([dlc, "bench", str(art), "--input-shape", f"x={shape}", "--iters", str(iters),
                          "--threads", "1", "--json"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["median_ms"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dlc", default=str(ROOT / "target" / "release" / "dlc"))
    ap.add_argument("--image", type=int, default=224, help="the image size the layers are timed at")
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    info = {}
    for line in open("/proc/cpuinfo"):
        k, _, v = line.partition(":")
        info.setdefault(k.strip(), v.strip())
    isa = "AVX-512" if "avx512f" in info.get("flags", "").split() else "AVX2"
    cpu = f"{info.get('model name', '?')}, family {info.get('cpu family', '?')} model {info.get('model', '?')}, {isa}"
    print(f"# one 3x3 convolution, run-time dims against pinned, at {a.image}x{a.image}, 1 thread ({cpu})\n")
    print("| layer | pinned ms | run-time dims ms | run-time/pinned |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for i, (name, c, m, stride, down) in enumerate(LAYERS):
            path = tmp / f"l{i}.onnx"
            model(path, c, m, stride, down, i)
            shape = f"1x{c}x{a.image}x{a.image}"
            arts = {"pinned": tmp / f"l{i}_p", "run-time": tmp / f"l{i}_s"}
            subprocess.run([a.dlc, "compile", str(path), "--input-shape", f"x={shape}", "-o", str(arts["pinned"])],
                           check=True, capture_output=True)
            subprocess.run([a.dlc, "compile", str(path), "-o", str(arts["run-time"])], check=True, capture_output=True)
            times = {k: [] for k in arts}
            for _ in range(a.rounds):
                for k, art in arts.items():
                    times[k].append(bench(a.dlc, art, shape, a.iters))
            p, s = (statistics.median(times[k]) for k in ("pinned", "run-time"))
            print(f"| {name} | {p:.3f} | {s:.3f} | {s / p:.2f} |")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
