#!/usr/bin/env python3
"""The body of scripts/gpu-check (run that, which builds dlc and sets up .venv first).

    python scripts/gpu_check.py [--arch sm_90] [--models mlp,resnet18,bert] [--iters 50] [--simulate]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "models"))
from dlc_model import random_feeds  # noqa: E402

DLC = Path(os.environ.get("DLC_BIN", ROOT / "target" / "release" / "dlc"))
RTOL, ATOL = 1e-4, 1e-5


def sh(*args, **kw):
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(map(str, args))}\n{p.stderr}")
    return p.stdout


def gpu_arch():
    """sm_XX of GPU 0 from nvidia-smi, or None."""
    if not shutil.which("nvidia-smi"):
        return None, None
    out = sh("nvidia-smi", "--query-gpu=compute_cap,name", "--format=csv,noheader").splitlines()[0]
    cap, name = [s.strip() for s in out.split(",", 1)]
    return "sm_" + cap.replace(".", ""), name


def run(art, feeds, work, extra=()):
    args = []
    for name, x in feeds.items():
        f = work / f"in_{name.replace('/', '_')}.npy"
        np.save(f, x)
        args += ["--input", f"{name}={f}"]
    out = work / ("out_" + art.name)
    sh(DLC, "run", art, *extra, *args, "--output-dir", out)
    return {f.stem: np.load(f) for f in out.glob("*.npy")}


def worst(a, b):
    """max |a - b| and whether every element is within rtol/atol of b."""
    err = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return float(err.max()), bool((err <= ATOL + RTOL * np.abs(b.astype(np.float64))).all())


def ort_cuda_ms(model, feeds, iters):
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return None
    s = ort.InferenceSession(str(model), providers=["CUDAExecutionProvider"])
    for _ in range(5):
        s.run(None, feeds)
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        s.run(None, feeds)
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", help="GPU architecture, e.g. sm_90 [default: GPU 0's, from nvidia-smi]")
    ap.add_argument("--models", default="mlp,resnet18,bert")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--simulate", action="store_true", help="no GPU: run the kernels simulated, no timings")
    a = ap.parse_args()
    arch, name = gpu_arch()
    arch = a.arch or arch or "sm_80"
    if not a.simulate and name is None:
        raise SystemExit("gpu-check: nvidia-smi not found; this needs an NVIDIA GPU and driver (or --simulate)")
    work = Path(tempfile.mkdtemp(prefix="dlc-gpu-check-"))
    models = a.models.split(",")
    sh(sys.executable, ROOT / "tests" / "models" / "gen_models.py", work, *models)
    print(f"# dlc gpu-check: {name or 'no GPU (simulated)'}, {arch}, {time.strftime('%Y-%m-%d')}")
    print()
    print("| model | dlc GPU ms | ORT CUDA ms | dlc/ORT | dlc CPU ms (1 thread) | max abs GPU-CPU | max abs GPU-ORT |")
    print("|---|---|---|---|---|---|---|")
    ok = True
    for m in models:
        model = work / f"{m}.onnx"
        cpu, gpu = work / f"{m}_cpu", work / f"{m}_cuda"
        sh(DLC, "compile", model, "-o", cpu)
        sh(DLC, "compile", model, "-o", gpu, "--target", "nvptx64-nvidia-cuda", "--cpu", arch)
        sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        feeds = random_feeds(sess.get_inputs(), np.random.RandomState(0))
        want = dict(zip([o.name.replace("/", "_") for o in sess.get_outputs()], sess.run(None, feeds)))
        on_cpu = run(cpu, feeds, work)
        on_gpu = run(gpu, feeds, work, ["--simulate"] if a.simulate else [])
        e_cpu = [worst(on_gpu[k], on_cpu[k]) for k in want]
        e_ort = [worst(on_gpu[k], want[k]) for k in want]
        ok &= all(good for _, good in e_cpu + e_ort)
        cpu_ms = json.loads(sh(DLC, "bench", cpu, "--iters", str(a.iters), "--json"))["median_ms"]
        if a.simulate:
            gpu_ms, ort_ms = None, None
        else:
            gpu_ms = json.loads(sh(DLC, "bench", gpu, "--iters", str(a.iters), "--json"))["median_ms"]
            ort_ms = ort_cuda_ms(model, feeds, a.iters)
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        ratio = f"{gpu_ms / ort_ms:.2f}" if gpu_ms and ort_ms else "-"
        print(f"| {m} | {fmt(gpu_ms)} | {fmt(ort_ms)} | {ratio} | {cpu_ms:.2f} | "
              f"{max(e for e, _ in e_cpu):.2e} | {max(e for e, _ in e_ort):.2e} |")
    if not a.simulate and "CUDAExecutionProvider" not in ort.get_available_providers():
        print("\nONNX Runtime's CUDA provider is not installed (.venv/bin/pip install onnxruntime-gpu) : no ORT column.")
    print(f"\noutputs {'agree' if ok else 'DISAGREE'} (rtol {RTOL}, atol {ATOL}); artifacts in {work}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
