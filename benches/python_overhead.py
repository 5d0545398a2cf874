#!/usr/bin/env python3
"""Per-call overhead of the Python package: `Model.run(feeds)` against a C program that
calls the same artifact's generated entry point in a loop (benches/call_loop.c, the
floor any binding pays), on the same machine in one run.

    python benches/python_overhead.py [--calls 20000] [--rounds 5]

Needs the `dlc` package (`pip install .`), onnx and a C compiler (clang-22 or cc).
Models: a 16-element Relu (the call costs almost nothing, so the difference is the
binding's own work) and the reference MLP (784-1024-1024-10, tests/models/gen_models.py)
with zero inputs in both. For each, rounds alternate C, Python, and the runtime's checked
call in a Rust loop (`Model.bench`: dlc-runtime's own work per call, no Python between
calls); the table shows the best round's mean per call of each and the difference
Python - C, which issue 18 asks to stay within 10 us. The CPU is printed with the table.
"""
import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

import dlc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "models"))


def cpu_name():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def tiny_model(path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu16", [x], [y])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def c_loop(work):
    exe = work / "call_loop"
    cc = shutil.which("clang-22") or shutil.which("cc")
    subprocess.run([cc, "-O2", "-o", exe, ROOT / "benches" / "call_loop.c", "-ldl"], check=True)
    return exe


def nbytes(info):
    return int(np.prod(info.shape)) * info.numpy_dtype.itemsize


def measure(model, exe, calls, rounds):
    m = model.manifest
    ins = ",".join(str(nbytes(i)) for i in model.inputs)
    outs = ",".join(str(nbytes(o)) for o in model.outputs)
    feeds = {i.name: np.zeros(i.shape, i.numpy_dtype) for i in model.inputs}
    model.threads = 1
    c_best, py_best, rs_best = float("inf"), float("inf"), float("inf")
    for _ in range(rounds):
        out = subprocess.run([exe, model.path / "model.so", m["symbol_prefix"], str(calls), ins, outs],
                             check=True, capture_output=True, text=True).stdout
        c_best = min(c_best, float(out) / 1e3)
        for _ in range(100):
            model.run(feeds)
        t = time.perf_counter()
        for _ in range(calls):
            model.run(feeds)
        py_best = min(py_best, (time.perf_counter() - t) / calls * 1e6)
        # The runtime's own checked call in a Rust loop (Model.bench): no Python between calls.
        times = model._art.bench(feeds, calls, 100)
        rs_best = min(rs_best, sum(times) / len(times) * 1e6)
    return c_best, rs_best, py_best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        exe = c_loop(work)
        subprocess.run([sys.executable, str(ROOT / "tests" / "models" / "gen_models.py"), str(work), "mlp"],
                       check=True, capture_output=True)
        rows = []
        for name, path, calls in (("relu16", tiny_model(work / "relu16.onnx"), a.calls),
                                  ("mlp", work / "mlp.onnx", max(a.calls // 40, 100))):
            c, rs, py = measure(dlc.compile(path), exe, calls, a.rounds)
            rows.append((name, c, rs, py, py - c))
    print(f"\nPython Model.run vs the C entry point, 1 thread, best of {a.rounds} rounds; CPU: {cpu_name()}")
    print(f"{'model':<8} {'C call (us)':>12} {'runtime loop (us)':>18} {'Model.run (us)':>15} {'overhead (us)':>14}")
    for name, c, rs, py, d in rows:
        print(f"{name:<8} {c:>12.2f} {rs:>18.2f} {py:>15.2f} {d:>14.2f}")
    print(json.dumps({r[0]: {"c_us": round(r[1], 3), "runtime_loop_us": round(r[2], 3), "python_us": round(r[3], 3)}
                      for r in rows}))


if __name__ == "__main__":
    main()
