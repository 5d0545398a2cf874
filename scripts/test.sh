#!/usr/bin/env bash
# Sets up (idempotent) and runs the whole test suite: formatting, clippy, Rust unit and
# snapshot tests, and the end-to-end tests against ONNX Runtime. This is what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# One build on a fresh clone: incremental caches would only take disk (8 GB of it here;
# a CI run once failed with a full disk while building the fuzz targets).
export CARGO_INCREMENTAL=0
# Each stage's heading carries the clock time, so a CI log shows where the time went.
stage() { echo "== $(date +%T) $*"; }
echo "== disk: $(df -h --output=avail . | tail -n1 | tr -d ' ') free"

stage "cargo fmt --check"
cargo fmt --all -- --check
stage "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
stage "cargo build"
cargo build --workspace --quiet
stage "cargo test"
cargo test --workspace --quiet 2>&1 | tee target/cargo-test.log
stage "ONNX backend test suites (manifest: tests/onnx_suite/expected_pass.txt)"
DLC_BIN="$PWD/target/debug/dlc" .venv/bin/python tests/onnx_suite/run_suite.py
stage "the same suites compiled for CUDA, kernels simulated (manifest: tests/onnx_suite/expected_pass_cuda.txt)"
PTXAS=$(ls .venv/lib/python3*/site-packages/nvidia/*/bin/ptxas | head -n 1)
DLC_BIN="$PWD/target/debug/dlc" .venv/bin/python tests/onnx_suite/run_suite.py --cuda "$PTXAS"
stage "end-to-end tests (dlc vs ONNX Runtime)"
# One pytest worker per core (pytest-xdist): each test runs dlc and ONNX Runtime as
# single-threaded work, so one process left a core idle (38 of CI's 80 minutes on a
# 2-core Zen 1 machine; 21 with two workers). Work stealing keeps both busy to the end
# (plain `load` left one idle for the last 4 minutes). The slowest tests are listed.
DLC_BIN="$PWD/target/debug/dlc" .venv/bin/python -m pytest -q -n "$(nproc)" --dist worksteal --durations=15 tests/e2e
# The fuzz stage (an instrumented build, then the runs) goes beside the Python package's
# build and tests and the PyTorch stage: its long single-crate compiles leave a core
# idle. Its output is printed when it ends; a crash fails the run there.
stage "fuzz targets, 30 s each (scripts/fuzz.sh: onnx_import, dsl, npy, manifest), in the background"
# Its own process group (setsid), so a failure below stops all of it.
setsid bash scripts/fuzz.sh 30 >target/fuzz-stage.log 2>&1 &
FUZZ_PID=$!
trap 'kill -- -$FUZZ_PID 2>/dev/null || true' EXIT
stage "Python package: pip install . into a fresh venv, then its tests (tests/python)"
rm -rf target/py-venv
python3 -m venv target/py-venv
# pip builds the package from source as a user's `pip install .` does, but in cargo's dev
# profile (maturin's --profile dev), so that it reuses the workspace build above instead
# of compiling the compiler a second time in release (8 to 10 minutes on 2 cores); the
# code is the same, the hot crates are optimised in dev too (Cargo.toml), and the dev
# profile's overflow checks are the stricter test.
target/py-venv/bin/pip install --quiet --config-settings=build-args="--profile dev" . \
  $(grep -E '^(onnx|onnxruntime|numpy|pytest)==' tests/requirements.txt)
ls target/wheels/dlc-*-cp39-abi3-manylinux_2_36_x86_64.whl  # the wheel pip built: abi3, manylinux
DLC_BIN="$PWD/target/debug/dlc" target/py-venv/bin/python -m pytest -q tests/python
stage "Python package with PyTorch: dlc.compile(torch.nn.Module), the tutorial"
bash scripts/python-torch-check.sh
stage "fuzz targets: waiting for the background stage"
if ! wait "$FUZZ_PID"; then
  cat target/fuzz-stage.log
  echo "fuzz stage failed" >&2
  exit 1
fi
trap - EXIT
cat target/fuzz-stage.log
# The fuzz build (about 1 GB, instrumented) is not used again; on CI free it.
if [ -n "${CI:-}" ]; then rm -rf fuzz/target; fi
echo "== disk: $(df -h --output=avail . | tail -n1 | tr -d ' ') free"
stage "all passed"
