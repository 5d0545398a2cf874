#!/usr/bin/env bash
# Compares the code two dlc builds generate: for each model, `dlc compile --emit so,asm`
# with both, then whether model.so is byte-identical and how many lines of the assembly
# differ (labels normalised). For refactors of the lowering that must keep the code.
#
#   bash scripts/ab-compare.sh OLD_DLC NEW_DLC MODEL.onnx...
#
# Models with symbolic inputs need --input-shape and are skipped when the compile fails.
# AB_ARGS adds compile flags to both (AB_ARGS="--quantize int8 --calibrate DIR --cpu znver3").
set -uo pipefail
old=$1 new=$2
shift 2
read -r -a extra <<< "${AB_ARGS:-}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
norm() { sed -E 's/\.LBB[0-9_]+/.LBB/g; s/\.LCPI[0-9_]+/.LCPI/g; s/\.Ltmp[0-9]+/.Ltmp/g; s/\.Lfunc_end[0-9]+/.Lfunc_end/g' "$1"; }
same=0 differ=0
for m in "$@"; do
  n=$(basename "$m" .onnx)
  rm -rf "$work/a" "$work/b"
  if ! "$old" compile "$m" -o "$work/a" --emit so,asm "${extra[@]}" >/dev/null 2>&1; then echo "$n: the old build does not compile it"; continue; fi
  if ! "$new" compile "$m" -o "$work/b" --emit so,asm "${extra[@]}" >/dev/null 2>&1; then echo "$n: THE NEW BUILD FAILS"; differ=$((differ + 1)); continue; fi
  if cmp -s "$work/a/model.so" "$work/b/model.so"; then
    same=$((same + 1))
    echo "$n: identical"
  else
    differ=$((differ + 1))
    echo "$n: differs ($(diff <(norm "$work/a/model.s") <(norm "$work/b/model.s") | grep -c '^[<>]') assembly lines)"
  fi
done
echo "identical: $same, different: $differ"
