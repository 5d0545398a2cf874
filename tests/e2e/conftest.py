"""Shared fixtures for the end-to-end tests: the dlc binary, generated models, ORT runs."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

ROOT = Path(__file__).resolve().parents[2]
FILETESTS = ROOT / "tests" / "filetests" / "onnx"
RTOL, ATOL = 1e-4, 1e-5

sys.path.insert(0, str(ROOT / "tests" / "models"))
from dlc_model import random_feeds  # noqa: E402


def dlc_bin():
    return os.environ.get("DLC_BIN", str(ROOT / "target" / "debug" / "dlc"))


def dlc(*args, check=True):
    """Runs dlc; returns the CompletedProcess (stdout/stderr as text)."""
    p = subprocess.run([dlc_bin(), *map(str, args)], capture_output=True, text=True)
    if check and p.returncode != 0:
        raise AssertionError(f"dlc {' '.join(map(str, args))} failed ({p.returncode}):\n{p.stderr}")
    return p


def random_inputs(model_path, seed=0):
    """Seeded inputs for a model (see `dlc_model.random_feeds`)."""
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return random_feeds(sess.get_inputs(), np.random.RandomState(seed))


def ort_run(model_path, feeds):
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feeds)))


def dlc_compile_run(model_path, feeds, workdir, extra=()):
    """Compiles with dlc, runs with `dlc run`, returns {output name: array}."""
    art = workdir / "artifact"
    dlc("compile", model_path, "-o", art, *extra)
    return dlc_run(art, model_path, feeds, workdir)


def dlc_run_process(art, feeds, workdir, out=None, extra=()):
    """`dlc run` of artifact `art` (with `extra` arguments) on `feeds`, its outputs into
    `out` (default `workdir / "out"`), its exit status unchecked: the CompletedProcess
    (for runs that must fail)."""
    args = []
    for name, x in feeds.items():
        f = workdir / f"in_{sanitize(name)}"
        if isinstance(x, np.ndarray) and x.dtype == object:
            x = x.astype(str)  # ONNX's string tensors as numpy's fixed-width unicode (docs/strings.md)
        np.save(f, x)
        args += ["--input", f"{name}={f}"]
    return dlc("run", art, *extra, *args, "--output-dir", out or workdir / "out", check=False)


def dlc_run(art, model_path, feeds, workdir, extra=()):
    """`dlc run` of artifact `art` (with `extra` arguments) on `feeds`; returns {output
    name: array} for the outputs of `model_path`."""
    out = workdir / "out"
    p = dlc_run_process(art, feeds, workdir, out, extra)
    if p.returncode != 0:
        raise AssertionError(f"dlc run {art} failed ({p.returncode}):\n{p.stderr}")
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return {o.name: np.load(out / sanitize(o.name)) for o in sess.get_outputs()}


def sanitize(name):
    return "".join(c if (c.isalnum() and c.isascii()) or c in "._-" else "_" for c in name) + ".npy"


def assert_close(got, want, what):
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    tol = ATOL + RTOL * np.abs(want.astype(np.float64))
    bad = err > tol
    assert not bad.any(), (
        f"{what}: {bad.sum()} of {bad.size} elements outside rtol={RTOL} atol={ATOL}; "
        f"max abs err {err.max():.3g} at {np.unravel_index(err.argmax(), err.shape)}"
    )


@pytest.fixture(scope="session")
def generated_models(tmp_path_factory):
    """The reference models (MLP, ResNet-18) generated with seeded weights."""
    out = tmp_path_factory.mktemp("models")
    subprocess.run([sys.executable, str(ROOT / "tests" / "models" / "gen_models.py"), str(out)], check=True,
                   capture_output=True)
    return out
