"""The malformed-input corpus (tests/malformed/cases.py) through the `dlc` CLI: each case
must end with exit code 1 or 2 and the expected message, never a panic, an abort, a
signal or a hang; plus the CLI behaviours of issue 19 that are not one input file."""
import atexit
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import ROOT, dlc, dlc_bin

sys.path.insert(0, str(ROOT / "tests" / "malformed"))
import cases as corpus  # noqa: E402


# Written once, at collection: the parametrisation needs the names, the tests the files.
_DIR = Path(tempfile.mkdtemp(prefix="dlc-malformed-"))
atexit.register(shutil.rmtree, _DIR, True)
_CASES = {name: (argv, pattern) for name, argv, pattern in corpus.make(_DIR)}


@pytest.fixture(scope="module")
def corpus_dir():
    dlc("compile", _DIR / "relu.onnx", "-o", _DIR / "relu_art")
    return _DIR, _CASES


@pytest.mark.parametrize("name", list(_CASES))
def test_malformed_input_is_a_clean_error(corpus_dir, name):
    d, cases = corpus_dir
    argv, pattern = cases[name]
    argv = [a.replace("{dlc}", dlc_bin()).replace("{d}", str(d)) for a in argv]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    out = p.stdout + p.stderr
    assert p.returncode in (1, 2), f"{name}: exit {p.returncode} (negative: killed by a signal)\n{out[-2000:]}"
    for bad in ("panicked", "RUST_BACKTRACE", "LLVM ERROR", "stack overflow", "fatal runtime error"):
        assert bad not in out, f"{name}: {bad}\n{out[-2000:]}"
    assert re.search(pattern, out), f"{name}: expected /{pattern}/ in\n{out[-3000:]}"
    assert len(out) < 2_000_000, f"{name}: {len(out)} bytes of diagnostics"


def test_closed_stdout_ends_quietly(generated_models):
    """`dlc inspect --ir | head -1`: SIGPIPE ends the process, no panic message."""
    p = subprocess.Popen([dlc_bin(), "inspect", generated_models / "resnet18.onnx", "--ir"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.readline()
    p.stdout.close()
    err = p.stderr.read().decode()
    code = p.wait(timeout=60)
    assert code in (0, -signal.SIGPIPE), code
    assert "panicked" not in err and err == "", err


def test_compile_replaces_an_older_artifact(generated_models, tmp_path):
    """A compile into a folder holding another model's artifact leaves none of its files
    (a stale model.so would be loaded with the new manifest); other files stay."""
    out = tmp_path / "out"
    dlc("compile", generated_models / "mlp.onnx", "-o", out, "--emit", "so,h,ll")
    (out / "notes.txt").write_text("mine")
    dlc("compile", ROOT / "examples" / "models" / "mnist_cnn.onnx", "-o", out, "--emit", "a,h")
    names = sorted(p.name for p in out.iterdir())
    assert names == ["manifest.json", "model.a", "model.h", "model.manifest", "notes.txt", "report.json"], names
    assert "mnist_cnn" in (out / "model.h").read_text()


def test_onnx_schema_table_is_current():
    """frontends/onnx/src/schema.rs is what scripts/gen_onnx_schema.py makes from the
    installed onnx's schemas (the importer's attribute and opset checks follow them)."""
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_onnx_schema.py"), "--check"], capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("how", ["truncated", "bit_flip", "other_model", "trusted_other_model"])
def test_tampered_library_is_a_clean_error(generated_models, tmp_path, how):
    """`dlc run` on an artifact whose model.so was damaged or swapped after compiling:
    refused before any of it runs (the manifest's hash, then the code's signature)."""
    import numpy as np

    art, other = tmp_path / "art", tmp_path / "other"
    dlc("compile", generated_models / "mlp.onnx", "-o", art, "--name", "m")
    dlc("compile", ROOT / "examples" / "models" / "mnist_cnn.onnx", "-o", other, "--name", "m")
    so = (art / "model.so").read_bytes()
    if how == "truncated":
        (art / "model.so").write_bytes(so[: len(so) // 2])
    elif how == "bit_flip":
        flipped = bytearray(so)
        flipped[len(so) // 3] ^= 0x10
        (art / "model.so").write_bytes(bytes(flipped))
    else:
        (art / "model.so").write_bytes((other / "model.so").read_bytes())
    np.save(tmp_path / "x.npy", np.zeros((1, 784), np.float32))
    env = dict(os.environ, DLC_TRUST_LIBRARY="1" if how.startswith("trusted") else "0")
    p = subprocess.run([dlc_bin(), "run", art, "--input", f"input={tmp_path / 'x.npy'}", "-o", tmp_path / "o"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 1, (p.returncode, p.stderr)
    want = "the code does not match model.manifest" if how.startswith("trusted") else "SHA-256 differs"
    assert want in p.stderr and "panicked" not in p.stderr, p.stderr


import manifest_edit  # noqa: E402

_RT_DIR = Path(tempfile.mkdtemp(prefix="dlc-rt-index-"))
atexit.register(shutil.rmtree, _RT_DIR, True)
_RT_CASES = {c[0]: c[1:] for c in corpus.runtime_index_cases(_RT_DIR)}


@pytest.mark.parametrize("name", list(_RT_CASES))
def test_runtime_index_is_checked(name, tmp_path):
    """Indices known only at run time: in range, dlc's answer is ONNX Runtime's; out of
    range, both fail the run (dlc with exit 1 naming the node and the rule), where the
    kernels alone would clamp; an If branch computed speculatively is not checked."""
    import numpy as np
    import onnxruntime as ort

    model, feeds, in_range = _RT_CASES[name]
    art = tmp_path / "art"
    dlc("compile", model, "-o", art)
    args = []
    for k, v in feeds.items():
        np.save(tmp_path / f"{k}.npy", v)
        args += ["--input", f"{k}={tmp_path / f'{k}.npy'}"]
    p = subprocess.run([dlc_bin(), "run", art, "-o", tmp_path / "o", *args], capture_output=True, text=True,
                       timeout=60)
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    if in_range:
        want = sess.run(None, feeds)[0]
        assert p.returncode == 0, p.stderr
        np.testing.assert_array_equal(np.load(tmp_path / "o" / "y.npy"), want)
    else:
        with pytest.raises(Exception):
            sess.run(None, feeds)
        assert p.returncode == 1, (p.returncode, p.stderr)
        assert re.search(r"node '(If_0/then_branch/)?(Gather|GatherElements|ScatterND|ScatterElements|GatherND)_0': an index is out of range",
                         p.stderr), p.stderr
        assert "panicked" not in p.stderr


def _cpu_flags():
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return set(next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []))


@pytest.mark.parametrize("how", list(manifest_edit.EDITS))
def test_edited_manifest_is_a_clean_error(generated_models, tmp_path, how):
    """`dlc run` on an artifact whose model.manifest was edited after compiling: the
    code's signature (or the CPU check) refuses it before a buffer is sized from it."""
    import numpy as np

    # (LLVM's name, /proc/cpuinfo's): features dlc-runtime detects.
    candidates = [("avx512fp16", "avx512_fp16"), ("avx512bf16", "avx512_bf16"), ("avxvnni", "avx_vnni"),
                  ("avx512vnni", "avx512_vnni"), ("avx512f", "avx512f")]
    lacking = [llvm for llvm, flag in candidates if flag not in _cpu_flags()]
    if how == "cpu_features":
        if not lacking:
            pytest.skip("this CPU has every feature the test could claim the code needs")
        manifest_edit.FEATURE[0] = lacking[0]
    art = tmp_path / "art"
    dlc("compile", generated_models / "mlp.onnx", "-o", art)
    manifest_edit.edit(art / "model.manifest", how)
    np.save(tmp_path / "x.npy", np.zeros((1, 784), np.float32))
    p = subprocess.run([dlc_bin(), "run", art, "--input", f"input={tmp_path / 'x.npy'}", "-o", tmp_path / "o"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1, (p.returncode, p.stderr)
    want = manifest_edit.FEATURE[0] if how == "cpu_features" else "the code does not match model.manifest"
    assert want in p.stderr and "panicked" not in p.stderr, p.stderr
