#!/usr/bin/env python3
"""Runs the ONNX backend test suites through `dlc compile` + `dlc run`.

    python tests/onnx_suite/run_suite.py [--suites node,simple,pytorch-converted,pytorch-operator]
                                         [--update] [--filter SUBSTR] [--jobs N] [--keep DIR] [--cuda PTXAS]

Suites:
  node               generated from the installed onnx package with
                     onnx.backend.test.case.node.collect_testcases (numpy seeded with 0 first,
                     since some cases draw random data); expected outputs are onnx's numpy
                     reference implementation.
  simple, pytorch-converted, pytorch-operator
                     shipped as files under onnx/backend/test/data/.

A case passes when dlc compiles it, runs it, and every output has the expected dtype and
shape and matches within rtol 1e-3, atol 1e-4 (floats; NaNs must match) or exactly
(integers, bools). The manifest tests/onnx_suite/expected_pass.txt lists the cases
expected to pass: a case that newly passes or newly fails makes the run fail until the
manifest is updated (--update rewrites it). A case that makes dlc crash or panic always
fails the run. Each suite prints `SUITE: N passed, N failed`, and the last line the
total and whether the manifest agrees; the exit status is 0 only when it does.

With --cuda PTXAS every case is compiled for CUDA (`--target nvptx64-nvidia-cuda`), its
PTX must assemble with that ptxas for sm_80 (a rejected PTX counts as a crash), and it runs
with `dlc run --simulate` (the kernels on the CPU); its manifest is
tests/onnx_suite/expected_pass_cuda.txt.
"""
import argparse
import concurrent.futures as cf
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = Path(__file__).resolve().parent / "expected_pass.txt"
MANIFEST_CUDA = Path(__file__).resolve().parent / "expected_pass_cuda.txt"
RTOL, ATOL = 1e-3, 1e-4
# bfloat16 keeps 8 significant bits: RTOL is below its resolution (one ulp is 2^-7 to
# 2^-8 of the value), so a bf16 output may differ from the reference by one ulp, as an
# f16 one may by RTOL (about one f16 ulp). The references of bf16 Attention round to bf16
# after every numpy step; dlc rounds once (docs/testing.md).
BF16_ULPS = 1
FILE_SUITES = ["simple", "pytorch-converted", "pytorch-operator"]


def as_array(x):
    """Test data is numpy arrays or, for some cases, TensorProtos."""
    return numpy_helper.to_array(x) if isinstance(x, onnx.TensorProto) else x


def node_cases():
    np.random.seed(0)
    import warnings

    from onnx.backend.test.case import node

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for c in node.collect_testcases(None):
            inputs, outputs = c.data_sets[0]
            yield f"node/{c.name}", c.model, [as_array(x) for x in inputs], [as_array(x) for x in outputs]


def file_cases(suite):
    base = Path(onnx.__file__).parent / "backend" / "test" / "data" / suite
    for d in sorted(p for p in base.iterdir() if (p / "model.onnx").exists()):
        model = onnx.load(str(d / "model.onnx"))
        ds = d / "test_data_set_0"
        if not ds.exists():
            continue

        def load(prefix):
            out = []
            for f in sorted(ds.glob(f"{prefix}_*.pb"), key=lambda p: int(p.stem.split("_")[1])):
                t = onnx.TensorProto()
                t.ParseFromString(f.read_bytes())
                out.append(numpy_helper.to_array(t))
            return out

        yield f"{suite}/{d.name}", model, load("input"), load("output")


ML_INTS = {"int4", "uint4", "int2", "uint2"}


def ml_float(dt):
    """ml_dtypes' 8- and 4-bit floats (numpy cannot save them portably)."""
    return dt.itemsize == 1 and (dt.name.startswith("float8") or dt.name.startswith("float4"))


def to_npy(x):
    """The array as dlc reads it: 8- and 4-bit floats as raw codes, 4- and 2-bit ints as values."""
    if ml_float(x.dtype):
        return x.view(np.uint8)
    if x.dtype.name in ML_INTS:
        return x.astype(np.int8 if x.dtype.name.startswith("int") else np.uint8)
    return x


def from_npy(got, want_dtype):
    """dlc's output as an array of the reference's dtype (inverse of to_npy)."""
    if want_dtype.name == "bfloat16" and got.dtype == np.uint16:
        return got.view(want_dtype)  # dlc writes bf16 as its raw 16-bit patterns
    if ml_float(want_dtype) and got.dtype == np.uint8:
        return got.view(want_dtype)
    if want_dtype.name in ML_INTS and got.dtype in (np.int8, np.uint8):
        return got.astype(want_dtype)
    return got


NARROW_RANGE = {"int4": (-8, 7), "uint4": (0, 15), "int2": (-2, 1), "uint2": (0, 3)}


def defined_cast_reference(model, inputs, outputs):
    """ONNX leaves a float cast to an integer undefined where the value is out of range,
    and onnx's reference (numpy's astype) then gives what the CPU gives: 0 on one
    machine, the wrapped value on another. For a Cast/CastLike model from a float to a
    4- or 2-bit integer, the out-of-range (and NaN) elements of the reference are
    replaced by dlc's documented rule (docs/onnx-coverage.md): truncate toward zero and
    saturate to the type's range, NaN giving 0. In-range elements keep onnx's values."""
    ops = {n.op_type for n in model.graph.node}
    if not ops or not ops <= {"Cast", "CastLike"} or not inputs or len(outputs) != 1:
        return outputs
    x, want = np.asarray(inputs[0]), np.asarray(outputs[0])
    rng = NARROW_RANGE.get(want.dtype.name)
    if rng is None or x.dtype.kind != "f" or x.shape != want.shape:
        return outputs
    xf = x.astype(np.float64)
    with np.errstate(invalid="ignore"):
        t = np.trunc(xf)
        undefined = np.isnan(xf) | (t < rng[0]) | (t > rng[1])
    rule = np.where(np.isnan(xf), 0, np.clip(np.nan_to_num(t), *rng)).astype(np.int64)
    fixed = np.where(undefined, rule, want.astype(np.int64)).astype(want.dtype)
    return [fixed]


def is_strings(x):
    """A numpy object array of Python strings (ONNX's string tensors)."""
    return isinstance(x, np.ndarray) and x.dtype == object and all(isinstance(v, str) for v in x.flat)


def has_shape(t):
    """Whether an input's type (a tensor, a sequence of tensors, optionals of them) gives a
    shape (a rank)."""
    while True:
        kind = t.WhichOneof("value")
        if kind == "tensor_type":
            return t.tensor_type.HasField("shape")
        if kind in ("optional_type", "sequence_type"):
            t = getattr(t, kind).elem_type
        else:
            return True


def sanitize(name):
    return "".join(c if (c.isascii() and c.isalnum()) or c in "._-" else "_" for c in name) + ".npy"


def run_case(dlc, cuda, name, model, inputs, outputs, work):
    """Returns (status, detail): status is pass, fail or crash. With `cuda` (the path of
    ptxas) the case is compiled for CUDA, its PTX assembled by ptxas for sm_80, and its
    kernels run simulated on the CPU."""
    d = work / name.replace("/", "__")
    d.mkdir(parents=True, exist_ok=True)
    path = d / "model.onnx"
    onnx.save(model, str(path))
    target = ["--target", "nvptx64-nvidia-cuda"] if cuda else ["--emit", "so"]
    graph_inputs = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    # A sequence input is compiled at the length of the case's (docs/sequences.md), an
    # optional input the case gives empty is compiled absent (`--absent`), and an
    # input (or sequence element) whose type has no shape at the shape of the case's: a
    # user gives both with the same flags.
    flags = []
    types = {i.name: i.type for i in model.graph.input}
    for n, x in zip(graph_inputs, inputs):
        if x is None:  # an empty optional: compiled absent, not given to the run
            flags.append(f"--absent={n}")
            continue
        if isinstance(x, list):
            flags.append(f"--sequence-length={n}={len(x)}")
            elems = [(f"{n}[{i}]", e) for i, e in enumerate(x)]
        else:
            elems = [(n, x)]
        if not has_shape(types[n]):
            flags += [f"--input-shape={en}=" + "x".join(map(str, np.shape(e))) for en, e in elems if np.ndim(e) > 0]
    proc = subprocess.run([dlc, "compile", path, "-o", d / "art", *target, *flags], capture_output=True, text=True)
    if proc.returncode != 0:
        crashed = proc.returncode < 0 or "panicked" in proc.stderr
        return ("crash" if crashed else "fail"), "compile: " + proc.stderr.strip().splitlines()[-1:][0] if proc.stderr.strip() else f"compile exit {proc.returncode}"
    if cuda:
        proc = subprocess.run([cuda, "-arch=sm_80", d / "art" / "model.ptx", "-o", os.devnull], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            return "crash", "ptxas: " + (proc.stderr.strip().splitlines() or [""])[0]
    feeds = []
    for n, x in zip(graph_inputs, inputs):
        if x is None:
            continue
        if isinstance(x, list):  # a sequence: its elements are inputs n[0], n[1], ...
            feeds += [(f"{n}[{i}]", e) for i, e in enumerate(x)]
        else:
            feeds.append((n, x))
    args = []
    for n, x in feeds:
        if isinstance(x, np.generic):
            x = np.asarray(x)
        if is_strings(x):
            x = x.astype(str)  # a string tensor, as numpy's fixed-width unicode (docs/strings.md)
        if not isinstance(x, np.ndarray) or x.dtype == object:
            return "fail", f"input {n} is not a plain tensor"
        f = d / f"in_{len(args)}.npy"
        np.save(f, to_npy(np.array(x, order="C")))  # ascontiguousarray would make 0-d arrays 1-d
        args += ["--input", f"{n}={f}"]
    simulate = ["--simulate"] if cuda else []
    proc = subprocess.run([dlc, "run", d / "art", *simulate, *args, "--output-dir", d / "out"], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        crashed = proc.returncode < 0 or "panicked" in proc.stderr
        return ("crash" if crashed else "fail"), "run: " + (proc.stderr.strip().splitlines() or [""])[-1]
    outputs = defined_cast_reference(model, inputs, outputs)
    manifest = json.loads((d / "art" / "manifest.json").read_text())
    sequences = {q["name"]: q.get("elements", []) for q in manifest.get("sequences", []) if q.get("output")}
    # A sequence whose length only the run knows: element i is row i of its data cut to
    # row i of its shapes, a dim of -1 one it lacks (docs/sequences.md); kept here under the
    # element's name.
    cut = {}
    for q in manifest.get("sequences", []):
        if q.get("output") and q.get("data"):
            data, dims = np.load(d / "out" / sanitize(q["data"])), np.load(d / "out" / sanitize(q["shapes"]))
            if dims.ndim != 2 or len(data) != len(dims) or dims.shape[1] != data.ndim - 1:
                return "fail", f"output {q['name']}: data {list(data.shape)} and shapes {list(dims.shape)} disagree"
            sequences[q["name"]] = [f"{q['name']}[{i}]" for i in range(len(dims))]
            for i, row in enumerate(dims):
                cut[f"{q['name']}[{i}]"] = data[i][tuple(slice(0, int(k)) if k >= 0 else 0 for k in row)]
    checks = []
    for o, want in zip(model.graph.output, outputs):
        if o.name in manifest.get("optional_outputs", []):
            # Its presence is a flag output (docs/sequences.md).
            present = bool(np.load(d / "out" / sanitize(f"{o.name}.present")))
            if present != (want is not None):
                return "fail", f"output {o.name}: present {present}, want {want is not None}"
            if want is None:
                continue
        if isinstance(want, list):
            if o.name not in sequences:
                return "fail", f"output {o.name}: a sequence, which the artifact does not return as one"
            if len(sequences[o.name]) != len(want):
                return "fail", f"output {o.name}: {len(sequences[o.name])} elements, want {len(want)}"
            checks += list(zip(sequences[o.name], want))
        else:
            checks.append((o.name, want))
    for oname, want in checks:
        o = SimpleNamespace(name=oname)
        want = np.asarray(want)
        if is_strings(want):
            got = np.load(d / "out" / sanitize(o.name))
            if got.dtype.kind != "U" or got.shape != want.shape:
                return "fail", f"output {o.name}: got {got.dtype}{list(got.shape)}, want strings{list(want.shape)}"
            if got.tolist() != want.tolist():
                return "fail", f"output {o.name}: strings differ"
            continue
        got = from_npy(cut[o.name] if o.name in cut else np.load(d / "out" / sanitize(o.name)), want.dtype)
        if got.dtype != want.dtype or got.shape != want.shape:
            return "fail", f"output {o.name}: got {got.dtype}{list(got.shape)}, want {want.dtype}{list(want.shape)}"
        if want.dtype.name in ML_INTS:
            got, want = got.astype(np.int64), want.astype(np.int64)
        if want.dtype.kind in "fc" or want.dtype.name == "bfloat16" or ml_float(want.dtype):
            g, w = got.astype(np.float64), want.astype(np.float64)
            nan_ok = np.array_equal(np.isnan(g), np.isnan(w))
            fin = ~np.isnan(w)
            tol = ATOL + RTOL * np.abs(w[fin])
            if want.dtype.name == "bfloat16":
                # One bf16 ulp of the reference: f32's spacing there times 2^16.
                tol = np.maximum(tol, BF16_ULPS * np.spacing(np.abs(w[fin]).astype(np.float32)).astype(np.float64)
                                 * 2.0**16)
            with np.errstate(invalid="ignore"):  # inf - inf: equal infinities pass by the second test
                close = np.all((np.abs(g[fin] - w[fin]) <= tol) | (g[fin] == w[fin]))
            if not (nan_ok and close):
                return "fail", f"output {o.name}: max abs err {np.nanmax(np.abs(g - w)) if g.size else 0:.3g}"
        elif not np.array_equal(got, want):
            return "fail", f"output {o.name}: values differ"
    return "pass", ""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dlc", default=os.environ.get("DLC_BIN", str(ROOT / "target" / "debug" / "dlc")))
    ap.add_argument("--suites", default="node," + ",".join(FILE_SUITES))
    ap.add_argument("--filter", default="")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--update", action="store_true", help="rewrite the manifest with the cases that pass now")
    ap.add_argument("--keep", help="keep per-case files in this directory")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every failure's reason")
    ap.add_argument("--cuda", metavar="PTXAS",
                    help="compile for CUDA, assemble the PTX with this ptxas, run the kernels simulated "
                         "(manifest expected_pass_cuda.txt)")
    a = ap.parse_args()
    manifest = MANIFEST_CUDA if a.cuda else MANIFEST
    suites = a.suites.split(",")
    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="dlc-suite-"))
    cases = []
    for s in suites:
        gen = node_cases() if s == "node" else file_cases(s)
        cases += [c for c in gen if a.filter in c[0]]
    results = {}
    with cf.ThreadPoolExecutor(a.jobs) as ex:
        futs = {ex.submit(run_case, a.dlc, a.cuda, *c, work): c[0] for c in cases}
        for f in cf.as_completed(futs):
            try:
                results[futs[f]] = f.result()
            except Exception as e:  # a harness problem with one case must not hide the others
                results[futs[f]] = ("fail", f"harness: {e}")
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)

    expected = set()
    if manifest.exists():
        expected = {l.strip() for l in manifest.read_text().splitlines() if l.strip() and not l.startswith("#")}
    selected = set(results)
    passing = {n for n, (s, _) in results.items() if s == "pass"}
    crashes = sorted(n for n, (s, _) in results.items() if s == "crash")
    newly_pass = sorted(passing - expected)
    newly_fail = sorted((expected & selected) - passing)
    if a.verbose:
        for n in sorted(results):
            if results[n][0] != "pass":
                print(f"{results[n][0].upper():5} {n}: {results[n][1]}")
    for s in suites:
        names = [n for n in results if n.startswith(s + "/")]
        p = sum(1 for n in names if n in passing)
        print(f"{s}: {p} passed, {len(names) - p} failed (of {len(names)} cases)")
    if a.update:
        keep = {n for n in expected if n not in selected}
        how = "compiled for CUDA, simulated (tests/onnx_suite/run_suite.py --cuda PTXAS --update)" if a.cuda \
            else "(tests/onnx_suite/run_suite.py --update)"
        manifest.write_text(f"# ONNX backend test cases dlc passes {how}\n"
                            + "".join(f"{n}\n" for n in sorted(keep | passing)))
        print(f"updated {manifest.relative_to(ROOT)}")
        newly_pass = newly_fail = []
    for n in newly_pass:
        print(f"NEWLY PASSING (add to the manifest): {n}")
    for n in newly_fail:
        print(f"NEWLY FAILING: {n}: {results[n][1]}")
    for n in crashes:
        print(f"CRASH: {n}: {results[n][1]}")
    ok = not newly_pass and not newly_fail and not crashes
    verdict = "the manifest agrees" if ok else "the manifest DISAGREES"
    print(f"total: {len(passing)} passed, {len(results) - len(passing)} failed ({verdict})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
