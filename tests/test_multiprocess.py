"""Two processes (torchrun, gloo on CPU) on tiny-llama.

The launch is the documented one, ``torchrun --nproc_per_node 2 -m aimmerging run ...``, through
tests/mp_run.py, which records per rank the merges with a hash of the parameters after each,
the step signals, the example shards and any write into the run folder (see its docstring).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from runhelp import DATA, ROOT, SMOKE, assert_same_results, csv_rows, env, needs_data, sets

TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))

pytestmark = [
    needs_data,
    pytest.mark.skipif(not Path(TORCHRUN).exists(), reason="torchrun not available"),
    pytest.mark.timeout(300),
]

# 16 examples, 2 per rank per step: 4 steps per epoch, 8 per task; S = 1 merges often
MP = [f"data.dir={DATA}", "data.tasks=[dbpedia,amazon]", "data.n_train=16", "data.n_test=4",
      "data.max_input_tokens=48", "data.max_target_tokens=4", "method.s_init=1",
      "method.s_min=1", "method.memory_size=6", "train.batch_size=2", "train.epochs=2",
      "train.checkpoint_every=3", "eval.max_new_tokens=3"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args, debug: Path, timeout=240, **extra_env) -> subprocess.CompletedProcess:
    cmd = [TORCHRUN, "--nproc_per_node", "2", "--master_port", str(_free_port()),
           str(ROOT / "tests" / "mp_run.py"), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env=env(AIMM_MP_DEBUG=debug, **extra_env))


@pytest.fixture(scope="module")
def mp_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("mp")
    run_dir, debug = root / "run", root / "debug"
    proc = _torchrun(["run", SMOKE, *sets(MP), "--output", run_dir, "--quiet"], debug)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((debug / f"rank{r}.json").read_text()) for r in (0, 1)]
    return run_dir, ranks, proc


def test_two_ranks_with_gloo(mp_run):
    _, ranks, proc = mp_run
    for r, rec in enumerate(ranks):
        assert rec["rank"] == r and rec["world"] == 2
        assert rec["distributed_type"] == "DistributedType.MULTI_CPU"
    assert proc.stdout.count("run folder:") == 1         # printed by rank 0 only


def test_same_merge_decisions_and_parameters_on_every_rank(mp_run):
    run_dir, (r0, r1), _ = mp_run
    assert len(r0["merges"]) >= 2
    assert [(m["stage"], m["step"]) for m in r0["merges"]] == \
        [(m["stage"], m["step"]) for m in r1["merges"]]
    for a, b in zip(r0["merges"], r1["merges"]):
        assert a["row"] == b["row"]                  # same plan, alphas, reduced l1
        assert a["hash"] == b["hash"]                # identical parameters after the merge
    assert len({m["hash"] for m in r0["merges"]}) == len(r0["merges"])   # they do change
    assert r0["final_hash"] == r1["final_hash"]
    # the reduced train and history losses (what the controller saw) agree on every step
    assert r0["signals"] == r1["signals"]
    assert all(s["history_loss"] is not None for s in r0["signals"] if s["stage"] == 2)
    # the run folder's trace is rank 0's
    rows = csv_rows(run_dir / "merge_trace.csv")
    assert [(int(r["stage"]) - 1, int(r["step"])) for r in rows] == \
        [(m["stage"], m["step"]) for m in r0["merges"]]


def test_batches_are_sharded(mp_run):
    _, (r0, r1), _ = mp_run
    s0, s1 = r0["shards"], r1["shards"]
    assert len(s0) == len(s1) > 16
    for a, b in zip(s0, s1):
        assert len(a) == len(b) == 2 and not set(a) & set(b)    # each rank its half


def test_only_rank0_writes_the_run_folder(mp_run):
    run_dir, (r0, r1), _ = mp_run
    assert r1["writes"] == []
    assert r0["writes"] == []          # rank 0 is not watched (it writes everything)
    for name in ("config.yaml", "metrics.json", "accuracy_matrix.csv", "merge_trace.csv",
                 "signals.csv", "run.log", "checkpoint/state.json",
                 "adapters/stage02_amazon/adapter_model.safetensors"):
        assert (run_dir / name).is_file(), name
    log = (run_dir / "run.log").read_text().splitlines()
    assert sum("done: OP" in line for line in log) == 1
    state = json.loads((run_dir / "checkpoint" / "state.json").read_text())
    assert state["world"] == 2
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["counters"]["train_steps"] == 16


def test_the_write_watch_can_fail(mp_run, tmp_path):
    """mp_run.py's watch does see writes: rank 1 in a one-process export into the run folder."""
    run_dir, _, _ = mp_run
    target = tmp_path / "copy"
    shutil.copytree(run_dir, target)
    debug = tmp_path / "debug"
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "mp_run.py"), "export", target,
                           "--output", target / "exported"], capture_output=True, text=True,
                          timeout=240, cwd=ROOT, env=env(AIMM_MP_DEBUG=debug, RANK=1))
    assert proc.returncode == 0, proc.stderr[-3000:]
    writes = json.loads((debug / "rank1.json").read_text())["writes"]
    assert any("exported" in w for w in writes)


def test_killed_two_process_run_resumes_to_the_same_results(mp_run, tmp_path):
    """Both ranks die after step 4 of task 2 (checkpoint at step 3); ``--resume`` with two
    processes again restores each rank (its own random state) and ends as the uninterrupted run."""
    ref_dir, (r0, _), _ = mp_run
    run_dir, debug = tmp_path / "run", tmp_path / "debug"
    args = ["run", SMOKE, *sets(MP), "--output", run_dir, "--quiet"]
    crashed = _torchrun(args, tmp_path / "debug_crash", AIMM_MP_CRASH="1:4")
    assert crashed.returncode != 0
    state = json.loads((run_dir / "checkpoint" / "state.json").read_text())
    assert state["position"] == {"stage": 1, "step": 3} and state["world"] == 2
    proc = _torchrun(args + ["--resume"], debug)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((debug / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(rec["resumed"] for rec in ranks)
    assert ranks[0]["final_hash"] == ranks[1]["final_hash"] == r0["final_hash"]
    assert_same_results(ref_dir, run_dir)


# the same global batch on one process and on two: 4 examples per step, a memory batch of 4;
# answers of up to 8 tokens, so that the two ranks' halves hold different numbers of tokens
SAME_GLOBAL = [x for x in MP if not x.startswith("data.max_target_tokens")] + ["data.max_target_tokens=8"]
DECISIONS = ("task", "stage", "step", "interval_run", "next_interval", "activations", "alpha_new",
             "alpha_past", "rehearsal_steps", "rehearsal_skipped")


def _one_and_two_processes(tmp_path, extra):
    from runhelp import aimmerging, check_ok

    one, two = tmp_path / "one", tmp_path / "two"
    check_ok(aimmerging("run", SMOKE, *sets(SAME_GLOBAL + extra + ["train.batch_size=4",
                                                                    "method.history_batch_size=4"]),
                        "--output", one, "--quiet", "--threads", "1"))
    proc = _torchrun(["run", SMOKE, *sets(SAME_GLOBAL + extra + ["train.batch_size=2",
                                                                  "method.history_batch_size=2"]),
                      "--output", two, "--quiet"], tmp_path / "debug")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return one, two


def _losses(run_dir):
    return [(float(r["train_loss"]), float(r["history_loss"]) if r["history_loss"] else None)
            for r in csv_rows(run_dir / "signals.csv")]


def test_without_dropout_two_processes_decide_as_one_at_the_same_global_batch(tmp_path):
    """docs/performance.md, "Several processes": with ``model.lora_dropout: 0`` the losses are
    the one-process run's up to float rounding (token-weighted over ranks) and so are the merges."""
    one, two = _one_and_two_processes(tmp_path, ["model.lora_dropout=0"])
    a, b = csv_rows(one / "merge_trace.csv"), csv_rows(two / "merge_trace.csv")
    assert len(a) >= 4
    assert [[r[k] for k in DECISIONS] for r in a] == [[r[k] for k in DECISIONS] for r in b]
    for ra, rb in zip(a, b):
        for k in ("lambda", "threshold", "l1_change"):
            assert float(ra[k]) == pytest.approx(float(rb[k]), rel=1e-4), k
    la, lb = _losses(one), _losses(two)
    assert len(la) == len(lb) == 16
    for (ta, ha), (tb, hb) in zip(la, lb):
        assert ta == pytest.approx(tb, rel=1e-5)
        assert (ha is None and hb is None) or ha == pytest.approx(hb, rel=1e-5)


def test_with_dropout_the_draws_depend_on_the_process_count(tmp_path):
    """What the docs say of LoRA dropout: each rank draws the masks of its own rows, so the
    losses move apart from the one-process run's by more than float rounding."""
    one, two = _one_and_two_processes(tmp_path, ["model.lora_dropout=0.05"])
    la, lb = _losses(one), _losses(two)
    assert la[0][0] == pytest.approx(lb[0][0], rel=1e-5)   # step 1: dropout leaves LoRA B = 0 alone
    assert max(abs(ta - tb) / ta for (ta, _), (tb, _) in zip(la, lb)) > 1e-4
