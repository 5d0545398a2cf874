"""The C example (static library + header) and the Rust example (dlc-runtime) against ORT."""
import shutil
import subprocess

import numpy as np

from conftest import ROOT, assert_close, dlc, ort_run, random_inputs


def _compile_mlp(generated_models, tmp_path):
    model = generated_models / "mlp.onnx"
    art = tmp_path / "art"
    dlc("compile", model, "-o", art, "--name", "mlp")
    feeds = random_inputs(model, seed=3)
    (tmp_path / "input.f32").write_bytes(feeds["input"].tobytes())
    return model, art, feeds


def test_c_example_links_static_library(generated_models, tmp_path):
    model, art, feeds = _compile_mlp(generated_models, tmp_path)
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang-22")
    exe = tmp_path / "run_mlp"
    subprocess.run([cc, "-O2", "-std=c11", "-Wall", "-Werror", "-I", str(art), str(ROOT / "examples/c/run_mlp.c"),
                    str(art / "model.a"), "-lm", "-o", str(exe)], check=True)
    subprocess.run([str(exe), tmp_path / "input.f32", tmp_path / "logits.f32", tmp_path / "probs.f32"], check=True)
    want = ort_run(model, feeds)
    for name in ["logits", "probs"]:
        got = np.fromfile(tmp_path / f"{name}.f32", dtype=np.float32).reshape(want[name].shape)
        assert_close(got, want[name], f"c example {name}")


def test_rust_example_uses_runtime(generated_models, tmp_path):
    model, art, feeds = _compile_mlp(generated_models, tmp_path)
    exe = ROOT / "target" / "debug" / "dlc-run-example"
    subprocess.run([str(exe), art, tmp_path / "out", f"input={tmp_path / 'input.f32'}"], check=True)
    want = ort_run(model, feeds)
    for name in ["logits", "probs"]:
        got = np.fromfile(tmp_path / "out" / f"{name}.f32", dtype=np.float32).reshape(want[name].shape)
        assert_close(got, want[name], f"rust example {name}")
