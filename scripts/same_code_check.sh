#!/bin/bash
# Do two versions of the package compute the same runs? Runs the smoke stream (tiny-llama,
# seconds a run) with cpu_small.yaml's pinned settings under each version, for METHODS, and
# compares the stage adapters tensor by tensor and the run files byte by byte (signals.csv
# without its lr column, a logged value only).
#   scripts/same_code_check.sh OLD_COMMIT [NEW_COMMIT]     # NEW_COMMIT default: HEAD
# Needs the environment's `aimmerging` on PATH (`. .venv/bin/activate`) and the data folder.
# Exit 0 when every file matches, 1 otherwise.
set -e
cd "$(dirname "$0")/.."
OLD=${1:?usage: scripts/same_code_check.sh OLD_COMMIT [NEW_COMMIT]}; NEW=${2:-HEAD}
METHODS=${METHODS:-aimmerging replay}
WORK=$(mktemp -d); trap 'git worktree remove --force "$WORK/old" > /dev/null 2>&1; git worktree remove --force "$WORK/new" > /dev/null 2>&1; rm -rf "$WORK"' EXIT
SETS="method.log_history_loss=true method.history_precision=model method.history_share_prefix=false
      train.mixed_precision=no train.share_prefix=false model.dtype=float32 method.memory_size=4"
DATA=$(realpath "${AIMMERGING_DATA:-../shared/data}")/data_longsequence   # smoke.yaml's tasks
for side in old new; do
  rev=$OLD; [ $side = new ] && rev=$NEW
  git worktree add --detach "$WORK/$side" "$rev" > /dev/null 2>&1
  for m in $METHODS; do
    (cd "$WORK/$side" && PYTHONPATH="$WORK/$side/src" OMP_NUM_THREADS=1 aimmerging run configs/smoke.yaml \
       --threads 1 --set data.dir="$DATA" method.name="$m" $SETS --output "$WORK/runs/$side/$m" --quiet)
  done
done
python - "$WORK/runs" $METHODS <<'PY'
import csv, filecmp, sys
from pathlib import Path
import torch
from safetensors.torch import load_file
root, methods, same = Path(sys.argv[1]), sys.argv[2:], True
for m in methods:
    old, new = root / "old" / m, root / "new" / m
    stages = sorted(p.relative_to(old) for p in old.glob("adapters/*/*.safetensors"))
    assert stages == sorted(p.relative_to(new) for p in new.glob("adapters/*/*.safetensors")), m
    for s in stages:
        a, b = load_file(old / s), load_file(new / s)
        ok = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        same &= ok; print(f"{m}: {s}: {'identical' if ok else 'DIFFERENT'}")
    for f in ("accuracy_matrix.csv", "merge_trace.csv", "example_scores.csv"):
        ok = filecmp.cmp(old / f, new / f, shallow=False)
        same &= ok; print(f"{m}: {f}: {'identical' if ok else 'DIFFERENT'}")
    rows = [list(csv.DictReader(open(p / "signals.csv"))) for p in (old, new)]
    ok = len(rows[0]) == len(rows[1]) and all({k: v for k, v in x.items() if k != "lr"}
                                              == {k: v for k, v in y.items() if k != "lr"}
                                              for x, y in zip(*rows))
    same &= ok; print(f"{m}: signals.csv (lr aside): {'identical' if ok else 'DIFFERENT'}")
print("the two versions compute the same runs" if same else "the two versions DIFFER")
sys.exit(0 if same else 1)
PY
