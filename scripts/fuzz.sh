#!/usr/bin/env bash
# Runs dlc's fuzz targets (fuzz/fuzz_targets: onnx_import, dsl, npy, manifest) with
# cargo-fuzz (libFuzzer) on the nightly toolchain, SECONDS each (default 60), one per
# core at a time, seeded from the tests' own files. Built with debug assertions, so an
# integer overflow is a crash like a panic. A crash stops the run: its input is in
# fuzz/artifacts/TARGET/; turn it into a case of tests/malformed/cases.py, fix, rerun.
#
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-60}"
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(onnx_import dsl npy manifest)
if ! cargo +nightly --version >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal >/dev/null 2>&1 || true
fi
if ! cargo +nightly --version >/dev/null 2>&1; then
  # cargo-fuzz needs nightly Rust; CI machines have it, so there its absence fails.
  if [ -n "${CI:-}" ]; then echo "fuzz: no nightly toolchain" >&2; exit 1; fi
  echo "fuzz: skipped: no nightly toolchain (rustup toolchain install nightly)" >&2
  exit 0
fi
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz@0.13.2
# Without a sanitizer the runs are about 8x faster; the targets are safe Rust, and what
# is looked for is a panic, an overflow, an abort or a hang. A stack overflow shows as a
# bare SIGSEGV with no saved input: rerun that target with `cargo +nightly fuzz run -s
# address -a TARGET target/fuzz-corpus/TARGET`, whose report keeps the input (how the
# rust-protobuf group recursion was found).
cargo +nightly fuzz build -s none -a >target/fuzz-build.log 2>&1 || { tail -30 target/fuzz-build.log; exit 1; }

SEEDS=target/fuzz-corpus
mkdir -p "$SEEDS"/{onnx_import,dsl,npy,manifest}
cp -n tests/filetests/onnx/*.onnx examples/models/*.onnx "$SEEDS/onnx_import/" 2>/dev/null || true
cp -n examples/dsl/*.dlc "$SEEDS/dsl/" 2>/dev/null || true
if [ -x .venv/bin/python ]; then
  .venv/bin/python - "$SEEDS/npy" <<'PY'
import sys, numpy as np
d = sys.argv[1]
for dt in ("float32", "float16", "float64", "int8", "int64", "uint8", "bool"):
    np.save(f"{d}/{dt}.npy", np.arange(6).reshape(2, 3).astype(dt))
np.save(f"{d}/scalar.npy", np.float32(1.5))
np.save(f"{d}/fortran.npy", np.asfortranarray(np.ones((2, 3), np.float32)))
PY
fi
DLC=target/debug/dlc
[ -x "$DLC" ] || DLC=target/release/dlc
if [ -x "$DLC" ]; then
  for m in tests/filetests/onnx/symbolic_batch.onnx examples/models/mnist_cnn.onnx; do
    n=$(basename "$m" .onnx)
    [ -f "$SEEDS/manifest/$n.manifest" ] && continue
    "$DLC" compile "$m" -o "target/fuzz-seed-$n" --emit h >/dev/null 2>&1 && cp "target/fuzz-seed-$n/model.manifest" "$SEEDS/manifest/$n.manifest"
  done
fi

# One target per core at a time (each libFuzzer run is one process on one core).
run_target() {
  local t="$1" log="target/fuzz-$1.log"
  if ! cargo +nightly fuzz run -s none -a "$t" "$SEEDS/$t" -- -max_total_time="$SECS" -timeout=10 -rss_limit_mb=4096 \
      -max_len=1048576 -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz: $t found a crash (input in fuzz/artifacts/$t/)" >&2
    return 1
  fi
  echo "== fuzz $t for ${SECS}s: $(grep -E "stat::number_of_executed_units" "$log" | tail -1 | tr -s ' ')"
}
export -f run_target
export SECS SEEDS
printf '%s\n' "${TARGETS[@]}" | xargs -P "${FUZZ_JOBS:-$(nproc)}" -I{} bash -c 'run_target "$1"' _ {} || {
  echo "fuzz: a target failed (its log is above)" >&2
  exit 1
}
