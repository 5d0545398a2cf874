#!/usr/bin/env bash
# Sets up (idempotent) and runs the whole test suite: formatting, clippy, Rust unit and
# snapshot tests, and the end-to-end tests against ONNX Runtime. This is what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# One build on a fresh clone: incremental caches would only take disk (8 GB of it here;
# a CI run once failed with a full disk while building the fuzz targets).
export CARGO_INCREMENTAL=0
echo "== disk: $(df -h --output=avail . | tail -n1 | tr -d ' ') free"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo build"
cargo build --workspace --quiet
echo "== cargo test"
cargo test --workspace --quiet 2>&1 | tee target/cargo-test.log
echo "== ONNX backend test suites (manifest: tests/onnx_suite/expected_pass.txt)"
DLC_BIN="$PWD/target/debug/dlc" .venv/bin/python tests/onnx_suite/run_suite.py
echo "== the same suites compiled for CUDA, kernels simulated (manifest: tests/onnx_suite/expected_pass_cuda.txt)"
PTXAS=$(ls .venv/lib/python3*/site-packages/nvidia/*/bin/ptxas | head -n 1)
DLC_BIN="$PWD/target/debug/dlc" .venv/bin/python tests/onnx_suite/run_suite.py --cuda "$PTXAS"
echo "== end-to-end tests (dlc vs ONNX Runtime)"
DLC_BIN="$PWD/target/debug/dlc" .venv/bin/python -m pytest -q tests/e2e
echo "== fuzz targets, 30 s each (scripts/fuzz.sh: onnx_import, dsl, npy, manifest)"
bash scripts/fuzz.sh 30
# The fuzz build (about 2 GB, instrumented) is not used again; on CI free it for the
# PyTorch venv below.
if [ -n "${CI:-}" ]; then rm -rf fuzz/target; fi
echo "== disk: $(df -h --output=avail . | tail -n1 | tr -d ' ') free"
echo "== Python package: pip install . into a fresh venv, then its tests (tests/python)"
rm -rf target/py-venv
python3 -m venv target/py-venv
target/py-venv/bin/pip install --quiet . $(grep -E '^(onnx|onnxruntime|numpy|pytest)==' tests/requirements.txt)
ls target/wheels/dlc-*-cp39-abi3-manylinux_2_36_x86_64.whl  # the wheel pip built: abi3, manylinux
DLC_BIN="$PWD/target/debug/dlc" target/py-venv/bin/python -m pytest -q tests/python
echo "== Python package with PyTorch: dlc.compile(torch.nn.Module), the tutorial"
bash scripts/python-torch-check.sh
