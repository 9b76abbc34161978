"""Shared helpers of the end-to-end tests (test_run, test_resume, test_multiprocess, test_cli_errors).

Small tiny-llama runs on the Long Sequence benchmark folder; skipped when it is absent.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from datapaths import DATA_ROOT

ROOT = Path(__file__).resolve().parents[1]
DATA = DATA_ROOT / "data_longsequence"
SMOKE = ROOT / "configs" / "smoke.yaml"

needs_data = pytest.mark.skipif(not (DATA / "train").is_dir(),
                                reason=f"benchmark data not found at {DATA}")

#: a small version of configs/smoke.yaml (a few seconds of training)
SMALL = [f"data.dir={DATA}", "data.n_train=16", "data.n_test=6", "data.max_input_tokens=48",
         "data.max_target_tokens=4", "method.s_init=2", "method.memory_size=4",
         "train.epochs=2", "eval.max_new_tokens=3"]


def sets(items) -> list[str]:
    out = []
    for item in items:
        out += ["--set", item]
    return out


def env(**extra) -> dict:
    e = dict(os.environ)
    e.setdefault("OMP_NUM_THREADS", "1")      # the same thread count in every run
    e.setdefault("TOKENIZERS_PARALLELISM", "false")
    e.update({k: str(v) for k, v in extra.items()})
    return e


def aimmerging(*args, timeout: float = 300, **extra_env) -> subprocess.CompletedProcess:
    """``python -m aimmerging ARGS`` in a subprocess (output captured as text)."""
    return subprocess.run([sys.executable, "-m", "aimmerging", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env(**extra_env),
                          cwd=ROOT)


def popen(*args, **extra_env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "aimmerging", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env(**extra_env), cwd=ROOT)


def check_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def csv_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def matrix(run_dir: Path) -> list:
    return json.loads((Path(run_dir) / "accuracy_matrix.json").read_text())


def adapter_tensors(run_dir: Path) -> dict:
    """{adapter folder: {name: tensor}} of every saved stage adapter (``stage02_amazon``, and
    ``stage02_amazon/task01`` where a stage has several), plus any other safetensors file
    there (``stage02_amazon/router.safetensors``), by its path below adapters/."""
    from safetensors.torch import load_file

    root = Path(run_dir) / "adapters"
    return {str(f.parent.relative_to(root) if f.name == "adapter_model.safetensors"
                else f.relative_to(root)): load_file(str(f))
            for f in sorted(root.rglob("*.safetensors"))}


def assert_same_results(a: Path, b: Path) -> None:
    """Two run folders hold the same results: matrix, traces, predictions and adapters."""
    import torch

    assert matrix(a) == matrix(b)
    for name in ("accuracy_matrix.csv", "merge_trace.csv", "signals.csv"):
        assert csv_rows(a / name) == csv_rows(b / name), name
    preds_a = sorted(p.name for p in (a / "predictions").iterdir())
    assert preds_a == sorted(p.name for p in (b / "predictions").iterdir())
    for name in preds_a:
        assert (a / "predictions" / name).read_text() == (b / "predictions" / name).read_text()
    ta, tb = adapter_tensors(a), adapter_tensors(b)
    assert list(ta) == list(tb)
    for stage in ta:
        assert ta[stage].keys() == tb[stage].keys()
        for k in ta[stage]:
            assert torch.equal(ta[stage][k], tb[stage][k]), (stage, k)
