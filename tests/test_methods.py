"""Each method driven by the same loop, on tiny-llama and the built-in demo stream."""

import csv
import json

import pytest
import torch

from aimmerging.config import build_config
from aimmerging.runner import run

BASE = {
    "seed": 3,
    "data": {"dir": None, "tasks": ["demo_sentiment", "demo_topic", "demo_color"], "n_train": 16,
             "n_test": 8, "max_input_tokens": 48, "max_target_tokens": 4},
    "model": {"name": "tiny-llama"},
    "method": {"memory_size": 4, "s_init": 2},
    "train": {"epochs": 2, "batch_size": 4, "lr": 5e-3},
    "eval": {"batch_size": 8, "max_new_tokens": 2},
}


#: one torch thread, the same in every run (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _run(tmp_path, name, **method):
    raw = json.loads(json.dumps(BASE))
    raw["method"].update({"name": name, **method})
    out = tmp_path / name
    metrics = run(build_config(raw), out, progress=False)
    return out, metrics


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_seq_lora_has_no_merges_and_full_matrix(tmp_path):
    out, m = _run(tmp_path, "seq_lora")
    assert m["merges"] == 0
    assert _rows(out / "merge_trace.csv") == []
    matrix = m["accuracy_matrix"]
    assert all(matrix[i][j] is not None for j in range(3) for i in range(j + 1))
    assert matrix[2][0] is None and matrix[1][0] is None   # tasks not yet seen are not evaluated


def test_replay_trains_on_memory_too(tmp_path):
    _, seq = _run(tmp_path, "seq_lora")
    _, rep = _run(tmp_path, "replay")
    # 16 examples a task, batch 4: stage 2 adds 4 memory examples (one more step an epoch),
    # stage 3 adds 8 (two more), over 2 epochs
    assert rep["counters"]["train_steps"] == seq["counters"]["train_steps"] + 2 * 1 + 2 * 2


def test_aimmerging_merges_from_task_two_with_rehearsal(tmp_path):
    out, m = _run(tmp_path, "aimmerging")
    merges = _rows(out / "merge_trace.csv")
    assert merges and {r["task"] for r in merges} <= {"demo_topic", "demo_color"}
    for r in merges:
        assert abs(float(r["alpha_new"]) + float(r["alpha_past"]) - 1) < 1e-9
    signals = _rows(out / "signals.csv")
    first = [r for r in signals if r["task"] == "demo_sentiment"]
    later = [r for r in signals if r["task"] != "demo_sentiment"]
    assert all(r["history_loss"] == "" for r in first)       # task 1: no memory, no controller
    assert all(r["history_loss"] != "" for r in later)
    done = sum(int(r["rehearsal_steps"]) for r in merges if r["rehearsal_skipped"] == "0")
    assert m["counters"].get("rehearsal_steps", 0) == done


def test_idle_rehearsals_run_when_not_skipped(tmp_path):
    out, skip = _run(tmp_path, "aimmerging")
    merges = _rows(out / "merge_trace.csv")
    idle = [r for r in merges if float(r["alpha_past"]) == 0]
    assert idle, "this setting must have merges with alpha_past = 0"
    assert all(r["rehearsal_skipped"] == "1" for r in idle)
    assert skip["counters"]["rehearsal_steps_skipped"] == sum(int(r["rehearsal_steps"]) for r in idle)
    out_all, literal = _run(tmp_path / "literal", "aimmerging", skip_idle_rehearsal=False)
    rows = _rows(out_all / "merge_trace.csv")
    assert all(r["rehearsal_skipped"] == "0" for r in rows)
    assert literal["counters"].get("rehearsal_steps_skipped", 0) == 0
    assert literal["counters"]["rehearsal_steps"] == sum(int(r["rehearsal_steps"]) for r in rows)
    # both runs are the same run up to the first idle merge (after it, the rehearsal's dropout
    # draws shift the random stream of the literal run)
    first = merges.index(idle[0])

    def decided(r):
        return {k: v for k, v in r.items() if k != "rehearsal_skipped"}

    assert [decided(r) for r in rows[:first + 1]] == [decided(r) for r in merges[:first + 1]]


def test_fixed_interval_merges_every_s_init_steps(tmp_path):
    out, _ = _run(tmp_path, "fixed_interval", s_init=3)
    merges = _rows(out / "merge_trace.csv")
    assert merges
    assert all(r["interval_run"] == "3" and float(r["alpha_past"]) == 0.5 for r in merges)
    steps = [int(r["step"]) for r in merges if r["task"] == "demo_topic"]
    assert steps == list(range(3, 3 * len(steps) + 1, 3))


def test_single_task_evaluates_each_task_alone(tmp_path):
    _, m = _run(tmp_path, "single_task")
    matrix = m["accuracy_matrix"]
    assert all(matrix[i][j] is None for i in range(3) for j in range(3) if i != j)
    assert set(m["single_task_scores"]) == {"demo_sentiment", "demo_topic", "demo_color"}


def test_mtl_is_one_stage_evaluated_on_all(tmp_path):
    out, m = _run(tmp_path, "mtl")
    assert [p.name for p in (out / "adapters").iterdir()] == ["stage01_all_tasks"]
    assert all(m["accuracy_matrix"][i][2] is not None for i in range(3))
    assert m["bwt"] is None and m["op"] is not None


def _adapter_drift(out):
    from safetensors.torch import load_file

    a = load_file(str(out / "adapters" / "stage01_demo_sentiment" / "adapter_model.safetensors"))
    b = load_file(str(out / "adapters" / "stage02_demo_topic" / "adapter_model.safetensors"))
    return sum(float((a[k] - b[k]).abs().sum()) for k in a)


def test_ewc_penalty_pulls_towards_previous_task(tmp_path):
    plain_dir, plain = _run(tmp_path, "seq_lora")
    ewc_dir, ewc = _run(tmp_path, "ewc", ewc_lambda=1e6)
    assert ewc["counters"]["train_steps"] == plain["counters"]["train_steps"]
    # the adapter moves less away from task 1's solution under a strong penalty
    assert _adapter_drift(ewc_dir) < 0.8 * _adapter_drift(plain_dir)


def test_recurrent_kif_fuses_elementwise(tmp_path):
    out, m = _run(tmp_path, "recurrent_kif")
    assert m["merges"] > 0
    assert m["counters"]["rehearsal_steps"] > 0


def test_reference_variant_rehearses_new_interval(tmp_path):
    out, _ = _run(tmp_path, "aimmerging_reference")
    for r in _rows(out / "merge_trace.csv"):
        assert r["rehearsal_steps"] == r["next_interval"]


def test_history_loss_with_shared_prefixes_matches_the_plain_pass(tmp_path, monkeypatch):
    import aimmerging.loop as loop

    calls = []
    inner = loop.grouped_loss
    monkeypatch.setattr(loop, "grouped_loss", lambda *a, **k: calls.append(1) or inner(*a, **k))
    shared, _ = _run(tmp_path / "shared", "aimmerging", history_share_prefix=True)
    assert calls                                   # the demo tasks' instructions are shared
    n = len(calls)
    plain, _ = _run(tmp_path / "plain", "aimmerging", history_share_prefix=False)
    assert len(calls) == n
    _run(tmp_path / "auto", "aimmerging")          # "auto": tiny-llama is too small to gain
    assert len(calls) == n
    a, b = _rows(shared / "signals.csv"), _rows(plain / "signals.csv")
    assert len(a) == len(b) and any(r["history_loss"] for r in a)
    for x, y in zip(a, b):
        if x["history_loss"]:
            assert float(x["history_loss"]) == pytest.approx(float(y["history_loss"]), rel=1e-4)
    assert _rows(shared / "merge_trace.csv") == _rows(plain / "merge_trace.csv")


def test_history_loss_in_bfloat16_is_close_to_the_model_precision(tmp_path):
    low, _ = _run(tmp_path / "bf16", "aimmerging", history_precision="bfloat16")
    exact, _ = _run(tmp_path / "model", "aimmerging", history_precision="model")
    auto, _ = _run(tmp_path / "auto", "aimmerging")   # "auto": tiny-llama runs as the model does
    first = [next(float(r["history_loss"]) for r in _rows(d / "signals.csv") if r["history_loss"])
             for d in (low, exact, auto)]
    assert first[0] != first[1] and first[0] == pytest.approx(first[1], rel=0.02)
    assert first[2] == first[1]


def test_auto_precision_and_shared_prefixes_together(tmp_path, monkeypatch):
    """What a SmolLM2-sized model gets on a CPU with native bfloat16, on tiny-llama."""
    import aimmerging.monitoring as monitoring

    monkeypatch.setattr(monitoring, "sharing_pays", lambda model: True)
    monkeypatch.setattr(monitoring, "bfloat16_pays", lambda device, shape: True)
    auto, _ = _run(tmp_path / "auto", "aimmerging", history_batch_size=6)
    low, _ = _run(tmp_path / "bf16", "aimmerging", history_precision="bfloat16",
                  history_share_prefix=False, history_batch_size=6)
    pair, _ = _run(tmp_path / "pair", "aimmerging")   # a memory batch of 2: too few rows to gain
    assert "memory batch 2 (one per merge interval, method.history_draw: interval), bfloat16 " \
        "autocast (method.history_precision: auto), plain batch" in (pair / "run.log").read_text()
    first = [next(float(r["history_loss"]) for r in _rows(d / "signals.csv") if r["history_loss"])
             for d in (auto, low)]
    assert first[0] == pytest.approx(first[1], rel=1e-3)    # shared prefixes: rounding only
    assert "bfloat16 autocast (method.history_precision: auto), shared prefixes" in \
        (auto / "run.log").read_text()


def test_training_with_shared_prefixes_follows_the_plain_run_without_dropout(tmp_path, monkeypatch):
    import aimmerging.loop as loop

    calls = []
    inner = loop.grouped_loss
    monkeypatch.setattr(loop, "grouped_loss",
                        lambda *a, **k: calls.append(torch.is_grad_enabled()) or inner(*a, **k))
    runs = {}
    for share in (True, False):
        raw = json.loads(json.dumps(BASE))
        raw["method"].update({"name": "aimmerging", "history_share_prefix": share})
        raw["model"]["lora_dropout"] = 0.0
        raw["train"]["share_prefix"] = share
        runs[share] = tmp_path / str(share)
        run(build_config(raw), runs[share], progress=False)
        if share:
            assert any(calls) and not all(calls)   # main/rehearsal steps and the history loss
            n = len(calls)
    assert len(calls) == n                           # off: the plain batch everywhere
    a, b = _rows(runs[True] / "signals.csv"), _rows(runs[False] / "signals.csv")
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for x, y in zip(a, b):
        assert float(x["train_loss"]) == pytest.approx(float(y["train_loss"]), rel=1e-3, abs=1e-4)


def test_interval_draw_keeps_one_memory_batch_per_merge_interval(tmp_path, monkeypatch):
    import aimmerging.engine as engine

    drawn = []
    inner = engine.MemoryPasses.memory_batch

    def spy(self, kind, key, batch_size):
        examples = inner(self, kind, key, batch_size)
        if kind == "history":
            drawn.append((key, repr(examples)))
        return examples

    monkeypatch.setattr(engine.MemoryPasses, "memory_batch", spy)
    out, m = _run(tmp_path, "aimmerging")           # the defaults: 2 examples, one per interval
    signals = [r for r in _rows(out / "signals.csv") if r["history_loss"]]
    assert len(signals) == len(drawn) and m["merges"] >= 2
    merged = {(r["task"], r["step"]) for r in _rows(out / "merge_trace.csv")}
    intervals, current = [], []
    for row, draw in zip(signals, drawn):
        if current and row["step"] == "1":          # a new task starts a new interval
            intervals.append(current)
            current = []
        current.append(draw)
        if (row["task"], row["step"]) in merged:
            intervals.append(current)
            current = []
    intervals.append(current)
    intervals = [i for i in intervals if i]
    assert len(intervals) >= 3
    for interval in intervals:                       # one batch (key and examples) per interval
        assert len(set(interval)) == 1
    keys = [interval[0][0] for interval in intervals]
    assert len(set(keys)) == len(keys)               # each interval draws its own
    assert "one per merge interval, method.history_draw: interval" in (out / "run.log").read_text()


def test_step_draw_draws_a_new_memory_batch_every_step(tmp_path, monkeypatch):
    import aimmerging.engine as engine

    keys = []
    inner = engine.MemoryPasses.memory_batch

    def spy(self, kind, key, batch_size):
        if kind == "history":
            keys.append(key)
        return inner(self, kind, key, batch_size)

    monkeypatch.setattr(engine.MemoryPasses, "memory_batch", spy)
    _run(tmp_path, "aimmerging", history_draw="step")
    assert len(keys) > 4 and len(set(keys)) == len(keys)


def test_a_baseline_logs_its_history_loss_on_its_tasks_first_memory_batch(tmp_path, monkeypatch):
    """Under the interval draw a method without merges keeps one memory batch for the task: the
    one AIMMerging's first interval of the task uses, so that their history losses compare."""
    import aimmerging.engine as engine

    drawn = {"replay": [], "aimmerging": []}
    inner = engine.MemoryPasses.memory_batch

    def spy(self, kind, key, batch_size):
        examples = inner(self, kind, key, batch_size)
        if kind == "history":
            drawn[self.cfg.method.name].append((key, repr(examples)))
        return examples

    monkeypatch.setattr(engine.MemoryPasses, "memory_batch", spy)
    _run(tmp_path, "replay", log_history_loss=True)
    _run(tmp_path, "aimmerging")
    per_stage = {}
    for key, examples in drawn["replay"]:
        per_stage.setdefault(key[0], set()).add((key, examples))
    assert len(per_stage) == 2 and all(len(v) == 1 for v in per_stage.values())
    for stage, batch in per_stage.items():
        first = next(d for d in drawn["aimmerging"] if d[0][0] == stage)
        assert batch == {first}


def test_rehearsal_runs_at_the_learning_rate_of_the_merge_step(tmp_path, monkeypatch):
    # fixed_interval, S = 2, 8 steps a task: a merge at every task's last step, where the
    # schedule's next rate is 0 (SPEC.md fusion step 2: the rate main step j used)
    import aimmerging.engine as engine

    seen = []
    inner = engine.MemoryPasses.rehearse

    def spy(self, n_steps, key, lr, optimizer, on_gradients=None):
        steps = optimizer.step

        def step(*args, **kwargs):
            seen.append((key, lr, optimizer.param_groups[0]["lr"]))
            return steps(*args, **kwargs)

        optimizer.step = step
        try:
            return inner(self, n_steps, key, lr, optimizer, on_gradients)
        finally:
            del optimizer.step

    monkeypatch.setattr(engine.MemoryPasses, "rehearse", spy)
    out, _ = _run(tmp_path, "fixed_interval")
    rates = {(int(r["stage"]) - 1, int(r["step"])): float(r["lr"]) for r in _rows(out / "signals.csv")}
    assert seen
    for (stage, step), lr, applied in seen:
        assert applied == lr == rates[(stage, step)]
    last = max(step for (stage, step) in rates if stage == 1)
    assert any(key == (1, last) and lr > 0 for key, lr, _ in seen)
