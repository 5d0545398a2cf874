#!/usr/bin/env bash
# Exports the real-model corpus's PyTorch architectures and scikit-learn models
# (tests/models/export_models.py) into $DLC_MODEL_CACHE/exported (default
# ~/.cache/dlc/models/exported). PyTorch, torchvision, transformers, scikit-learn and
# skl2onnx come from PyPI, pinned, into their own venv
# ($DLC_TORCH_VENV, default ~/.cache/dlc/torch-venv, about 6 GB: torch's CUDA build is
# what PyPI ships); nothing here is installed into .venv. A model already exported is
# kept, so a warm run does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${DLC_MODEL_CACHE:-$HOME/.cache/dlc/models}"
VENV="${DLC_TORCH_VENV:-$HOME/.cache/dlc/torch-venv}"
PINS=(torch==2.15.0 torchvision==0.29.2 transformers==4.46.3 tokenizers==0.20.3 huggingface_hub==0.36.2
      safetensors==0.8.0 onnx==1.23.2 onnxscript==0.7.2 numpy==2.4.6 scikit-learn==1.9.1 skl2onnx==1.20.0)

names=$(python3 -c "import ast,sys; src=open('tests/models/export_models.py').read(); t=ast.parse(src)
for n in ast.walk(t):
    if isinstance(n, ast.Assign) and getattr(n.targets[0], 'id', '') == 'EXPORTS':
        print(' '.join(k.value for k in n.value.keys))")
todo=0
for n in $names; do [ -f "$CACHE/exported/$n.onnx" ] || todo=1; done
if [ "$todo" = 0 ]; then echo "export-models: all exported in $CACHE/exported"; exit 0; fi

if ! "$VENV/bin/python" -c "import torch, torchvision, transformers, sklearn, skl2onnx" >/dev/null 2>&1; then
  echo "export-models: creating or completing $VENV (torch, torchvision, transformers, scikit-learn, skl2onnx from PyPI)"
  [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${PINS[@]}"
fi
DLC_MODEL_CACHE="$CACHE" "$VENV/bin/python" tests/models/export_models.py
