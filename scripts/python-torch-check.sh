#!/usr/bin/env bash
# dlc.compile(torch.nn.Module) for real: installs the dlc package into a venv with
# PyTorch (the pinned torch/torchvision venv scripts/export-models.sh makes,
# $DLC_TORCH_VENV, default ~/.cache/dlc/torch-venv, created here when missing) and runs
# tests/python/test_torch.py and the tutorial of docs/python.md
# (examples/python/tutorial.py) there. The wheel `pip install .` left in target/wheels is
# reused when there is one.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${DLC_TORCH_VENV:-$HOME/.cache/dlc/torch-venv}"
PINS=(torch==2.15.0 torchvision==0.29.2 onnx==1.23.2 onnxscript==0.7.2 numpy==2.4.6 pytest==9.2.0
      onnxruntime==1.32.0)
start=$(date +%s)
if ! "$VENV/bin/python" -c "import torch, torchvision, onnx" >/dev/null 2>&1; then
  echo "python-torch-check: creating $VENV (torch, torchvision from PyPI)"
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --disable-pip-version-check "${PINS[@]}"
wheel=$(ls -t target/wheels/dlc-*.whl 2>/dev/null | head -n1 || true)
if [ -n "$wheel" ]; then
  "$VENV/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps "$wheel"
else
  "$VENV/bin/pip" install -q --disable-pip-version-check .
fi
echo "python-torch-check: venv ready in $(( $(date +%s) - start )) s"
"$VENV/bin/python" -m pytest -q tests/python/test_torch.py
echo "== docs/python.md's tutorial (examples/python/tutorial.py)"
"$VENV/bin/python" examples/python/tutorial.py
