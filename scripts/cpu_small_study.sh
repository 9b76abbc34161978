#!/bin/bash
# The cpu_small study (docs/results.md): every method of STUDY_METHODS at every seed of
# STUDY_SEEDS, each run in runs/cpu_small/<method>/seed<S>/, as `aimmerging compare
# configs/cpu_small.yaml --seeds ...` lays them out and then reuses them.
#   scripts/cpu_small_study.sh [LANES]      # default 2 lanes, one torch thread each, niced
# Safe to start again after any interruption: finished runs are skipped, unfinished ones
# resumed from their last checkpoint. Progress: runs/cpu_small/study.log.
# Needs the environment's `aimmerging` on PATH (`. .venv/bin/activate`) and the data folder
# (AIMMERGING_DATA or ../shared/data).
cd "$(dirname "$0")/.."
command -v aimmerging > /dev/null || { echo "aimmerging not on PATH: run '. .venv/bin/activate' first" >&2; exit 2; }
LANES=${1:-2}
SEEDS=${STUDY_SEEDS:-42 43 44}
METHODS=${STUDY_METHODS:-aimmerging replay aimmerging_reference fixed_interval seq_lora recurrent_kif single_task}
OUT=runs/cpu_small
mkdir -p "$OUT"
rm -rf "$OUT/.claims"; mkdir -p "$OUT/.claims"      # claims of an interrupted start are stale
export OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false

lane() {
  for seed in $SEEDS; do
    for m in $METHODS; do
      dir="$OUT/$m/seed$seed"
      [ -f "$dir/metrics.json" ] && continue
      mkdir "$OUT/.claims/$m.$seed" 2> /dev/null || continue     # the other lane has it
      hist=true; [ "$m" = single_task ] && hist=false            # as `aimmerging compare` runs them
      echo "$(date -Is) lane $1 start $m seed $seed" >> "$OUT/study.log"
      nice -n 10 aimmerging run configs/cpu_small.yaml --threads 1 --set seed="$seed" \
        method.name="$m" method.log_history_loss=$hist --output "$dir" --resume --quiet \
        > "$OUT/$m.seed$seed.out" 2>&1
      echo "$(date -Is) lane $1 end $m seed $seed rc=$?" >> "$OUT/study.log"
    done
  done
}
for i in $(seq 1 "$LANES"); do lane "$i" & sleep 5; done
wait
