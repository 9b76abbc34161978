"""IncLoRA, O-LoRA, MoELoRA and single-round merging on tiny-llama and the demo stream: what is
specific to each, their stage folders loaded with stock PEFT (docs/methods.md's snippet),
export, and compare + plot on a shrunken smoke config."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from runhelp import SMALL, SMOKE, needs_data
from safetensors.torch import load_file

from aimmerging.config import build_config
from aimmerging.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
BASE = {
    "seed": 3,
    "data": {"dir": None, "tasks": ["demo_sentiment", "demo_topic", "demo_color"], "n_train": 16,
             "n_test": 8, "max_input_tokens": 48, "max_target_tokens": 4},
    "model": {"name": "tiny-llama"},
    "method": {"memory_size": 4},
    "train": {"epochs": 2, "batch_size": 4, "lr": 5e-3},
    "eval": {"batch_size": 8, "max_new_tokens": 2},
}
STAGES = ["stage01_demo_sentiment", "stage02_demo_topic", "stage03_demo_color"]


#: one torch thread, the same in every run (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(name, **method):
    raw = copy.deepcopy(BASE)
    raw["method"].update({"name": name, **method})
    return build_config(raw)


def _train(tmp_path, name, **method):
    """Run a method in-process; returns (run folder, the trainer, whose net is the final model)."""
    from aimmerging.loop import ContinualTrainer
    from aimmerging.runner import load_tasks

    cfg = _cfg(name, **method)
    out = tmp_path / name
    trainer = ContinualTrainer(cfg, out, load_tasks(cfg), progress=False)
    trainer.run()
    return out, trainer


def _adapter(run, stage, name=None):
    folder = run / "adapters" / stage / (name or "")
    return load_file(str(folder / "adapter_model.safetensors"))


def _ids():
    from aimmerging.models import load_backbone

    return load_backbone("tiny-llama").tokenizer("Review: fine. Sentiment:", return_tensors="pt")["input_ids"]


def _logits(model, ids):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def _doc_snippet(index: int = 0, **scope) -> dict:
    """docs/methods.md's tested block ``index``, executed in ``scope``: its names."""
    text = (ROOT / "docs" / "methods.md").read_text()
    block = re.findall(r"<!-- tested: [^>]*-->\n```python\n(.*?)```", text, re.S)[index]
    exec(compile(block, "docs/methods.md", "exec"), scope)
    return scope


def _card_model(run, stage):
    """The model that the stage folder's README.md (its model card) loads, run from the run
    folder as the card says."""
    import os

    card = (run / "adapters" / stage / "README.md").read_text()
    block = re.findall(r"```python\n(.*?)```", card, re.S)[0]
    here = os.getcwd()
    os.chdir(run)
    try:
        scope: dict = {}
        exec(compile(block, "README.md", "exec"), scope)
    finally:
        os.chdir(here)
    return card, scope["model"]


def test_each_stage_folders_model_card_says_what_it_is_and_loads_it(tmp_path):
    run, trainer = _train(tmp_path, "single_task")
    card, model = _card_model(run, STAGES[2])
    assert "trained on `demo_color`." in card and "More Information Needed" not in card
    assert torch.equal(_logits(model, _ids()), _logits(trainer.net, _ids()))
    run, _ = _train(tmp_path, "seq_lora")
    card, _ = _card_model(run, STAGES[1])
    assert "trained on `demo_sentiment`, then `demo_topic`." in card


# --- IncLoRA -----------------------------------------------------------------------------
def test_inc_lora_keeps_earlier_adapters_and_loads_with_stock_peft(tmp_path):
    from aimmerging.models import resolve_model_path

    run, trainer = _train(tmp_path, "inc_lora")
    manifest = json.loads((run / "adapters" / STAGES[2] / "adapters.json").read_text())
    assert manifest["combine"] == "sum"
    assert [(a["name"], a["task"]) for a in manifest["adapters"]] == [
        ("task01", "demo_sentiment"), ("task02", "demo_topic"), ("task03", "demo_color")]
    assert sorted(p.name for p in (run / "adapters" / STAGES[1]).iterdir() if p.is_dir()) == \
        ["task01", "task02"]
    # an earlier task's adapter does not change once its task is over
    for k in range(3):
        mine = _adapter(run, STAGES[k], f"task0{k + 1}")
        assert any(("lora_B" in n) and t.abs().sum() > 0 for n, t in mine.items())   # it trained
        for later in STAGES[k + 1:]:
            again = _adapter(run, later, f"task0{k + 1}")
            assert mine.keys() == again.keys()
            assert all(torch.equal(mine[n], again[n]) for n in mine)
    # the docs' stock-PEFT loader gives the model the run evaluated after the last stage
    model = _doc_snippet()["load_stage"](resolve_model_path("tiny-llama"), run / "adapters" / STAGES[2])
    ids = _ids()
    assert torch.equal(_logits(model, ids), _logits(trainer.net, ids))
    assert model.active_adapters == ["task01", "task02", "task03"]
    card, carded = _card_model(run, STAGES[2])           # the stage folder's README.md
    assert "One PEFT adapter per task (task01, task02, task03)" in card
    assert torch.equal(_logits(carded, ids), _logits(trainer.net, ids))
    # and the docs' Encoder from config.yaml gives the run's own predictions
    rows = [json.loads(line) for line in
            (run / "predictions" / f"{STAGES[2]}__demo_topic.jsonl").read_text().splitlines()]
    got = _doc_snippet(1, run=str(run), base_model=resolve_model_path("tiny-llama"), model=model,
                       prompts=[r["input"] for r in rows])
    assert got["answers"] == [r["prediction"] for r in rows]


def test_export_merges_every_adapter_of_a_stage(tmp_path):
    from transformers import AutoModelForCausalLM

    from aimmerging.export import export_run
    from aimmerging.models import load_backbone
    from aimmerging.multi_adapter import load_adapters

    run, _ = _train(tmp_path, "inc_lora")
    out, used = export_run(run, tmp_path / "export", stage=2)
    assert used.name == STAGES[1]
    ids = _ids()
    merged = _logits(AutoModelForCausalLM.from_pretrained(out), ids)
    two = load_adapters(load_backbone("tiny-llama").model, run / "adapters" / STAGES[1])
    assert torch.allclose(merged, _logits(two, ids), atol=1e-4)
    assert not torch.allclose(merged, _logits(load_backbone("tiny-llama").model, ids), atol=1e-4)


def test_multi_adapter_methods_refuse_several_processes():
    from aimmerging.methods import build_method

    trainer = SimpleNamespace(cfg=_cfg("inc_lora"), world=2, task_names=["a", "b"])
    with pytest.raises(ConfigError, match="one process"):
        build_method("o_lora", trainer).prepare_model(None)


def test_a_broken_manifest_is_named(tmp_path):
    from aimmerging.multi_adapter import read_manifest

    (tmp_path / "adapters.json").write_text(json.dumps({"combine": "sum", "adapters": [{"name": "task01"}]}))
    with pytest.raises(ConfigError, match=r"adapters\.json: adapters\[0\]\.name: no adapter folder task01"):
        read_manifest(tmp_path)


# --- O-LoRA --------------------------------------------------------------------------------
def test_orthogonality_term_is_zero_for_orthogonal_a_and_positive_otherwise():
    from aimmerging.methods.o_lora import orthogonality_loss

    q, _ = torch.linalg.qr(torch.randn(64, 64))
    rows = q.T                                     # 64 orthonormal rows
    new, old = [rows[:8]], [rows[8:24]]             # task 3's A against tasks 1-2's A (r = 8)
    assert float(orthogonality_loss(new, old)) < 1e-5
    exact = torch.eye(64)
    assert float(orthogonality_loss([exact[:8]], [exact[8:24]])) == 0.0
    assert float(orthogonality_loss([rows[:8]], [rows[4:20]])) > 1.0     # rows 4-7 shared
    assert float(orthogonality_loss([torch.randn(8, 64)], [torch.randn(16, 64)])) > 0
    assert float(orthogonality_loss([], [])) == 0.0


def test_o_lora_pulls_the_new_a_away_from_the_earlier_ones(tmp_path):
    from aimmerging.methods.o_lora import orthogonality_loss

    def overlap(run):
        earlier, new = _adapter(run, STAGES[1], "task01"), _adapter(run, STAGES[1], "task02")
        keys = sorted(k for k in new if "lora_A" in k)
        return float(orthogonality_loss([new[k] for k in keys], [earlier[k] for k in keys]))

    inc, _ = _train(tmp_path, "inc_lora")
    olora, trainer = _train(tmp_path, "o_lora")        # the O-LoRA defaults
    # task 1 has no earlier adapter: at lambda2 = 0 it trains exactly as IncLoRA
    first = _adapter(inc, STAGES[0], "task01")
    assert all(torch.equal(first[k], t) for k, t in _adapter(olora, STAGES[0], "task01").items())
    assert overlap(olora) < 0.5 * overlap(inc)
    assert trainer.method.extra_loss(trainer.net) > 0          # adapter 3 against 1 and 2


# --- MoELoRA -------------------------------------------------------------------------------
def test_moe_lora_router_gates_sum_to_one_and_load_back(tmp_path):
    from aimmerging.methods.moe_lora import load_moe_lora
    from aimmerging.models import load_backbone

    run, trainer = _train(tmp_path, "moe_lora")
    ids = _ids()
    expected = _logits(trainer.net, ids)
    routers = trainer.method.routers
    assert routers and all(r.active == ["task01", "task02", "task03"] for r in routers.values())
    for r in routers.values():
        assert r.gates.shape == ids.shape + (3,)
        assert torch.allclose(r.gates.sum(-1), torch.ones(ids.shape))
    # the router learnt: the gates are no longer uniform
    assert any((r.gates - 1 / 3).abs().max() > 1e-3 for r in routers.values())
    assert not any("router" in k for k in _adapter(run, STAGES[2], "task01"))   # plain PEFT files
    saved = load_file(str(run / "adapters" / STAGES[1] / "router.safetensors"))
    assert set(saved) == set(routers) and all(t.shape[0] == 2 for t in saved.values())
    model = load_moe_lora(load_backbone("tiny-llama").model, run / "adapters" / STAGES[2])
    assert torch.equal(_logits(model, ids), expected)
    assert torch.equal(_logits(_card_model(run, STAGES[2])[1], ids), expected)    # README.md
    # the experts alone (all active, no router) are another model
    plain = _doc_snippet()["load_stage"](load_backbone("tiny-llama").path, run / "adapters" / STAGES[2])
    assert not torch.allclose(_logits(plain, ids), expected)
    # export refuses a router it cannot merge
    from aimmerging.export import export_run

    with pytest.raises(ConfigError, match="router"):
        export_run(run, tmp_path / "export")


def test_moe_lora_freezes_earlier_experts_unless_asked(tmp_path):
    run, _ = _train(tmp_path, "moe_lora")
    first, later = _adapter(run, STAGES[0], "task01"), _adapter(run, STAGES[2], "task01")
    assert all(torch.equal(first[k], later[k]) for k in first)
    run, _ = _train(tmp_path / "all", "moe_lora", moe_train_earlier_experts=True)
    first, later = _adapter(run, STAGES[0], "task01"), _adapter(run, STAGES[2], "task01")
    assert any(not torch.equal(first[k], later[k]) for k in first)


# --- single-round merging --------------------------------------------------------------------
def _peft_pair():
    """A tiny-llama PEFT model whose adapter is theta^k, and a snapshot theta^(k-1)."""
    from aimmerging.fusion import snapshot
    from aimmerging.models import add_lora, load_backbone

    torch.manual_seed(0)
    net = add_lora(load_backbone("tiny-llama"), 8, 32, 0.0)
    with torch.no_grad():
        for n, p in net.named_parameters():
            if "lora_B" in n:
                p.normal_()
    previous = snapshot(net)
    with torch.no_grad():
        for p in net.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))
    return net, previous


def _deltas(net):
    from aimmerging.methods.inc_lora import lora_layers

    return {n: m.get_delta_weight("default").detach().clone() for n, m in lora_layers(net)}


def test_single_merge_at_weights_one_zero_returns_the_earlier_adapter():
    from aimmerging.fusion import copy_into_, snapshot
    from aimmerging.methods.single_merge import merge_into_

    net, previous = _peft_pair()
    trained = snapshot(net)
    copy_into_(net, previous)
    earlier_deltas = _deltas(net)
    copy_into_(net, trained)
    trained_deltas = _deltas(net)
    rng = torch.get_rng_state()
    merge_into_(net, previous, (1.0, 0.0), "linear")
    assert all(torch.equal(p, previous[n]) for n, p in net.named_parameters() if p.requires_grad)
    for combination, weights, target in (("svd", (1.0, 0.0), earlier_deltas),
                                         ("svd", (0.0, 1.0), trained_deltas)):
        copy_into_(net, trained)
        merge_into_(net, previous, weights, combination)
        for n, d in _deltas(net).items():
            assert torch.allclose(d, target[n], atol=1e-4, rtol=1e-4), (combination, n)
    assert list(net.peft_config) == ["default"]                  # the temporary adapters are gone
    assert torch.equal(torch.get_rng_state(), rng)               # the training's random stream is untouched
    with pytest.raises(ValueError, match="tensors"):
        merge_into_(net, {}, (1.0, 0.0))


def test_single_merge_by_importance_weighs_each_element():
    from aimmerging.fusion import snapshot
    from aimmerging.methods.single_merge import merge_by_importance_

    net, previous = _peft_pair()
    trained = snapshot(net)
    names = list(previous)
    one = {n: torch.ones_like(t) for n, t in previous.items()}
    zero = {n: torch.zeros_like(t) for n, t in previous.items()}
    # only the earlier tasks matter: the earlier adapter comes back, exactly
    merge_by_importance_(net, previous, zero, one)
    assert all(torch.equal(p, previous[n]) for n, p in net.named_parameters() if p.requires_grad)
    # only the new task matters: the trained adapter stays
    from aimmerging.fusion import copy_into_

    copy_into_(net, trained)
    merge_by_importance_(net, previous, one, zero)
    assert all(torch.equal(p, trained[n]) for n, p in net.named_parameters() if p.requires_grad)
    # neither (no score): the midpoint; new 3, past 1: three quarters of the way to the new
    copy_into_(net, trained)
    merge_by_importance_(net, previous, {}, {})
    params = dict(net.named_parameters())
    assert all(torch.allclose(params[n], (previous[n] + trained[n]) / 2) for n in names)
    copy_into_(net, trained)
    merge_by_importance_(net, previous, {n: 3 * t for n, t in one.items()}, one)
    assert all(torch.allclose(params[n], previous[n] + 0.75 * (trained[n] - previous[n]))
               for n in names)
    with pytest.raises(ValueError, match="tensors"):
        merge_by_importance_(net, {}, one, one)


def test_single_merge_by_importance_runs(tmp_path):
    from aimmerging.runner import run as run_config

    out = tmp_path / "importance"
    metrics = run_config(_cfg("single_merge", single_merge_combination="importance"), out,
                         progress=False)
    assert metrics["counters"]["single_merges"] == 2 and metrics["op"] is not None
    seq = tmp_path / "seq"
    run_config(_cfg("seq_lora"), seq, progress=False)
    assert all(torch.equal(_adapter(seq, STAGES[0])[k], t) for k, t in _adapter(out, STAGES[0]).items())
    assert any(not torch.equal(_adapter(seq, STAGES[1])[k], t) for k, t in _adapter(out, STAGES[1]).items())


def test_single_merge_runs_with_weights_one_zero_and_with_ties_and_dare(tmp_path):
    from aimmerging.runner import run as run_config

    out = tmp_path / "keep_first"
    metrics = run_config(_cfg("single_merge", single_merge_weights=[1.0, 0.0],
                              single_merge_combination="linear"), out, progress=False)
    assert metrics["counters"]["single_merges"] == 2
    first = _adapter(out, STAGES[0])
    for stage in STAGES[1:]:                         # every merge gives the first task's adapter back
        assert all(torch.equal(first[k], t) for k, t in _adapter(out, stage).items())
    seq = tmp_path / "seq"
    run_config(_cfg("seq_lora"), seq, progress=False)
    for combination in ("ties", "dare_ties_svd"):
        out = tmp_path / combination
        metrics = run_config(_cfg("single_merge", single_merge_combination=combination), out,
                             progress=False)
        assert metrics["counters"]["single_merges"] == 2 and metrics["op"] is not None
        # task 1 is as SeqLoRA trains it; the merge at the end of task 2 changes the adapter
        assert all(torch.equal(_adapter(seq, STAGES[0])[k], t) for k, t in _adapter(out, STAGES[0]).items())
        assert any(not torch.equal(_adapter(seq, STAGES[1])[k], t) for k, t in _adapter(out, STAGES[1]).items())


def test_single_merge_settings_are_validated():
    with pytest.raises(ConfigError, match="single_merge_weights must lie in"):
        _cfg("single_merge", single_merge_weights=[1.5, 0.0])
    with pytest.raises(ConfigError, match="single_merge_combination"):
        _cfg("single_merge", single_merge_combination="cat")
    with pytest.raises(ConfigError, match="olora_lambda1"):
        _cfg("o_lora", olora_lambda1=-1)


# --- compare and plot, unchanged ----------------------------------------------------------------
@needs_data
def test_compare_and_plot_the_four_methods(tmp_path, capsys):
    from aimmerging.cli import main

    methods = ["inc_lora", "o_lora", "moe_lora", "single_merge"]
    out = tmp_path / "cmp"
    assert main(["compare", str(SMOKE), "--methods", ",".join(methods), "--quiet",
                 "--set", *SMALL, "train.epochs=1", "--output", str(out)]) == 0
    table = (out / "comparison.md").read_text()
    for m in methods:
        assert f"| {m} |" in table
    rows = json.loads((out / "comparison.json").read_text())["rows"]
    assert [r["method"] for r in rows] == methods
    assert all(r["OP"] is not None and r["BWT"] is not None for r in rows)
    capsys.readouterr()
    assert main(["plot", str(out / "o_lora"), "--baseline", str(out / "inc_lora"),
                 "--runs", f"{out / 'moe_lora'},{out / 'single_merge'}"]) == 0
    figures = {p.name for p in (out / "o_lora" / "figures").iterdir()}
    assert {"first_task.png", "accuracy_matrix.png", "history_loss_vs_baseline.png"} <= figures
