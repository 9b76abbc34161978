#!/bin/bash
# The README's cpu_small comparison: each method one after another into runs/cpu_small/<method>,
# resuming unfinished runs and skipping finished ones (safe to re-run after an interruption).
# Needs the environment's `aimmerging` on PATH (`. .venv/bin/activate`).
# One torch thread per run, so that two lanes can share a 2-core machine:
#   scripts/cpu_small_runs.sh aimmerging aimmerging_reference fixed_interval &
#   scripts/cpu_small_runs.sh replay seq_lora single_task recurrent_kif &
# Then (reuses the finished runs): aimmerging compare configs/cpu_small.yaml \
#         --methods seq_lora,replay,aimmerging,aimmerging_reference,fixed_interval,recurrent_kif \
#         --set method.history_precision=model method.history_batch_size=null \
#         method.history_draw=step --output runs/cpu_small
cd "$(dirname "$0")/.."
command -v aimmerging > /dev/null || { echo "aimmerging not on PATH: run '. .venv/bin/activate' first" >&2; exit 2; }
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p runs/cpu_small
for m in "$@"; do
  [ -f "runs/cpu_small/$m/metrics.json" ] && continue
  echo "$(date -Is) start $m" >> runs/cpu_small/driver.log
  hist=true; [ "$m" = single_task ] && hist=false   # as `aimmerging compare` runs them
  # the README's runs predate these settings: their history loss ran in float32 on a new memory
  # batch of the training batch size (8) every step
  aimmerging run configs/cpu_small.yaml --set method.name="$m" --set method.log_history_loss=$hist \
    --set method.history_precision=model method.history_batch_size=null method.history_draw=step \
    --output "runs/cpu_small/$m" --resume --quiet > "runs/cpu_small/$m.out" 2>&1
  echo "$(date -Is) end $m rc=$?" >> runs/cpu_small/driver.log
done
