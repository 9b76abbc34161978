#!/bin/bash
# Does this machine compute the cpu_small study's runs as the committed ones were computed?
# Starts a committed run again here (default: aimmerging, seed 42), stops it after STEPS
# training steps, and compares its signals.csv row by row (the loss of every step, to 5
# significant digits) with the committed docs/results/cpu_small/<method>/seed<S>/signals.csv.
# It runs twice: with PyTorch's vector kernels pinned to AVX2, as scripts/cpu_small_study.sh
# runs them, and with the kernels PyTorch picks for this CPU.
#   STUDY_CODE=../study scripts/same_machine_check.sh [METHOD] [SEED] [STEPS]   # STEPS default 25
# Needs the environment's `aimmerging` on PATH and the data folder; one core, a few minutes
# a side. Prints, for each side, how many of the STEPS rows are identical.
set -e
cd "$(dirname "$0")/.."
M=${1:-aimmerging}; SEED=${2:-42}; STEPS=${3:-25}
CODE=$(realpath "${STUDY_CODE:-.}")
REF=docs/results/cpu_small/$M/seed$SEED/signals.csv
[ -f "$REF" ] || { echo "no committed run: $REF" >&2; exit 2; }
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
hist=true; [ "$M" = single_task ] && hist=false
for side in avx2 default; do
  cap=(); [ $side = avx2 ] && cap=(ATEN_CPU_CAPABILITY=avx2)
  env "${cap[@]}" PYTHONPATH="$CODE/src" OMP_NUM_THREADS=1 aimmerging run configs/cpu_small.yaml \
    --threads 1 --set seed="$SEED" method.name="$M" method.log_history_loss=$hist \
    --output "$WORK/$side" --quiet > "$WORK/$side.out" 2>&1 &
  pid=$!
  # signals.csv is written at each checkpoint (every 25 steps)
  rows() { if [ -f "$WORK/$side/signals.csv" ]; then wc -l < "$WORK/$side/signals.csv"; else echo 0; fi; }
  until [ "$(rows)" -gt "$STEPS" ]; do
    kill -0 $pid 2> /dev/null || { echo "the $side run stopped: $WORK/$side.out" >&2; cat "$WORK/$side.out" >&2; exit 1; }
    sleep 5
  done
  kill $pid; wait $pid 2> /dev/null || true
  python - "$WORK/$side/signals.csv" "$REF" "$STEPS" "$side" <<'PY'
import csv, sys
mine, ref, steps, side = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
a = list(csv.DictReader(open(mine)))[:steps]
b = list(csv.DictReader(open(ref)))[:steps]
cols = [c for c in b[0] if c != "lr"]          # lr: a logged value only
same = sum(all(x[c] == y[c] for c in cols) for x, y in zip(a, b))
first = next((i + 1 for i, (x, y) in enumerate(zip(a, b)) if any(x[c] != y[c] for c in cols)), None)
kernels = "AVX2 kernels" if side == "avx2" else "this CPU's kernels"
print(f"{kernels}: {same} of {len(a)} steps identical to {ref}"
      + (f" (first difference at step {first})" if first else ""))
PY
done
