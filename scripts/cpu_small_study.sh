#!/bin/bash
# The cpu_small study (docs/results.md), each run in runs/cpu_small/<method>/seed<S>/, as
# `aimmerging compare configs/cpu_small.yaml --seeds ...` lays them out and then reuses them.
#   scripts/cpu_small_study.sh [LANES]      # default 2 lanes, one torch thread each, niced
# The runs, in this order, so that the question the study asks (does adaptive merging beat
# replay and fixed-interval merging?) has its three seeds first: aimmerging, replay,
# aimmerging_reference and fixed_interval at seed 42; aimmerging, replay and fixed_interval at
# seeds 43 and 44; IncLoRA, O-LoRA, MoELoRA and single-round merging at seed 42; the other
# main methods at 42, then at 43 and 44; IncLoRA, O-LoRA, MoELoRA and single_merge at 43 and 44.
# STUDY_METHODS="m1 m2" and/or STUDY_SEEDS="42 43" run that grid instead, seed by seed;
# STUDY_PLAN="m1:43 m2:43 m1:44" runs exactly those runs, in that order.
# Safe to start again after any interruption: finished runs are skipped, unfinished ones
# resumed from their last checkpoint. Progress: runs/cpu_small/study.log.
# Every run of a study must use the same code: STUDY_CODE=DIR runs the package of the checkout
# DIR (a worktree of one commit: `git worktree add ../study COMMIT`) instead of this one's,
# and study.log names the commit each run starts on.
# Needs the environment's `aimmerging` on PATH (`. .venv/bin/activate`) and the data folder
# (AIMMERGING_DATA or ../shared/data).
cd "$(dirname "$0")/.."
command -v aimmerging > /dev/null || { echo "aimmerging not on PATH: run '. .venv/bin/activate' first" >&2; exit 2; }
LANES=${1:-2}
CODE=$(realpath "${STUDY_CODE:-.}")
[ -d "$CODE/src/aimmerging" ] || { echo "STUDY_CODE: $CODE has no src/aimmerging" >&2; exit 2; }
export PYTHONPATH="$CODE/src"
REV=$(git -C "$CODE" rev-parse --short HEAD)$(git -C "$CODE" diff --quiet HEAD -- src || echo "+changes")
CORE="aimmerging replay fixed_interval"
OTHER="aimmerging_reference seq_lora recurrent_kif single_task"     # the main seven: CORE + OTHER
EXTRA="inc_lora o_lora moe_lora single_merge"
PLAN=()                                                          # "method seed" pairs, in order
if [ -n "$STUDY_PLAN" ]; then
  for item in $STUDY_PLAN; do PLAN+=("${item%%:*} ${item##*:}"); done
elif [ -n "$STUDY_METHODS$STUDY_SEEDS" ]; then
  for seed in ${STUDY_SEEDS:-42 43 44}; do
    for m in ${STUDY_METHODS:-$CORE $OTHER $EXTRA}; do PLAN+=("$m $seed"); done
  done
else
  for m in aimmerging replay aimmerging_reference fixed_interval; do PLAN+=("$m 42"); done
  for seed in 43 44; do for m in $CORE; do PLAN+=("$m $seed"); done; done
  for m in $EXTRA seq_lora recurrent_kif single_task; do PLAN+=("$m 42"); done
  for seed in 43 44; do for m in $OTHER; do PLAN+=("$m $seed"); done; done
  for seed in 43 44; do for m in $EXTRA; do PLAN+=("$m $seed"); done; done
fi
OUT=runs/cpu_small
mkdir -p "$OUT"
rm -rf "$OUT/.claims"; mkdir -p "$OUT/.claims"      # claims of an interrupted start are stale
export OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
# PyTorch picks its vector kernels (softmax and others) from the CPU: AVX512 ones give other
# last bits than AVX2 ones. Every run of the study uses the AVX2 kernels, which every x86-64
# CPU here has, so that a run computes the same on any of them (ATEN_CPU_CAPABILITY=... to change).
export ATEN_CPU_CAPABILITY=${ATEN_CPU_CAPABILITY:-avx2}

lane() {
  for item in "${PLAN[@]}"; do
    read -r m seed <<< "$item"
    dir="$OUT/$m/seed$seed"
    [ -f "$dir/metrics.json" ] && continue
    mkdir "$OUT/.claims/$m.$seed" 2> /dev/null || continue     # the other lane has it
    hist=true; [ "$m" = single_task ] && hist=false            # as `aimmerging compare` runs them
    echo "$(date -Is) lane $1 start $m seed $seed (code $REV, kernels $ATEN_CPU_CAPABILITY)" >> "$OUT/study.log"
    nice -n 10 aimmerging run configs/cpu_small.yaml --threads 1 --set seed="$seed" \
      method.name="$m" method.log_history_loss=$hist --output "$dir" --resume --quiet \
      > "$OUT/$m.seed$seed.out" 2>&1
    echo "$(date -Is) lane $1 end $m seed $seed rc=$?" >> "$OUT/study.log"
  done
}
for i in $(seq 1 "$LANES"); do lane "$i" & sleep 5; done
wait
