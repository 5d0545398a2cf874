#!/usr/bin/env python3
"""Compiles a model with dlc, runs it with `dlc run` and compares with ONNX Runtime."""
import argparse
import subprocess
from pathlib import Path

import numpy as np
import onnxruntime as ort


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dlc", default="target/release/dlc")
    ap.add_argument("--model", default="examples/models/mnist_cnn.onnx")
    ap.add_argument("--out", default="out/demo")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    print(f"$ dlc compile {a.model} -o {out / 'artifact'} --report")
    subprocess.run([a.dlc, "compile", a.model, "-o", out / "artifact", "--report"], check=True)

    sess = ort.InferenceSession(a.model, providers=["CPUExecutionProvider"])
    rng = np.random.RandomState(a.seed)
    feeds, args = {}, []
    for i in sess.get_inputs():
        x = rng.rand(*i.shape).astype(np.float32)
        feeds[i.name] = x
        np.save(out / f"{i.name}.npy", x)
        args += ["--input", f"{i.name}={out / (i.name + '.npy')}"]
    print(f"$ dlc run {out / 'artifact'} {' '.join(args)} --output-dir {out / 'outputs'}")
    subprocess.run([a.dlc, "run", out / "artifact", *args, "--output-dir", out / "outputs"], check=True)

    ok = True
    for o, want in zip(sess.get_outputs(), sess.run(None, feeds)):
        got = np.load(out / "outputs" / f"{o.name}.npy")
        err = np.abs(got.astype(np.float64) - want)
        within = bool((err <= 1e-5 + 1e-4 * np.abs(want)).all())
        ok &= within
        np.set_printoptions(precision=5, suppress=True)
        print(f"\noutput {o.name} {list(got.shape)}:\n  dlc: {got.ravel()[:10]}\n  ort: {want.ravel()[:10]}")
        print(f"  max |dlc - ort| = {err.max():.3g}  ({'within' if within else 'OUTSIDE'} rtol 1e-4, atol 1e-5)")
    if not ok:
        raise SystemExit("dlc and ONNX Runtime disagree")


if __name__ == "__main__":
    main()
