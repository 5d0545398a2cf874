#!/usr/bin/env bash
# Sets up (idempotent), builds dlc, compiles the bundled example model and runs it,
# printing its outputs and how far they are from ONNX Runtime's.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --quiet -p dlc-driver
.venv/bin/python examples/demo.py --dlc target/release/dlc --model examples/models/mnist_cnn.onnx --out out/demo
