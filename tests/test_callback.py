"""AIMMergingCallback in a stock transformers Trainer (tiny-llama, two demo tasks).

The callback merges where the controller decides, the Trainer's next step starts from the
fused weights, the Trainer's optimizer and schedule are untouched by the rehearsal, and a
resumed Trainer (``resume_from_checkpoint``) goes on with the controller's state.
"""

from __future__ import annotations

import copy
import csv

import pytest
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from aimmerging import AIMMergingCallback, ConfigError, MergeController, ReplayMemory, TrainingError
from aimmerging.batching import Encoder
from aimmerging.data.demo import demo_stream
from aimmerging.fusion import snapshot
from aimmerging.models import add_lora, load_backbone
from aimmerging.traces import MERGE_FIELDS

pytestmark = pytest.mark.timeout(600)

TASKS = demo_stream(n_train=16, n_test=4)[:2]      # batch 4: 4 steps an epoch


def tiny(dropout: float = 0.05):
    torch.manual_seed(0)
    backbone = load_backbone("tiny-llama")
    model = add_lora(backbone, dropout=dropout)
    return model, backbone.tokenizer, Encoder(backbone.tokenizer, False, 64, 4)


def arguments(out, **extra) -> TrainingArguments:
    base = dict(output_dir=str(out), per_device_train_batch_size=4, num_train_epochs=2,
                learning_rate=3e-3, lr_scheduler_type="linear", warmup_steps=1, save_strategy="no",
                report_to="none", use_cpu=True, remove_unused_columns=False, disable_tqdm=True,
                logging_steps=1, seed=7)
    base.update(extra)
    return TrainingArguments(**base)


def train_tasks(out, callback, probes=(), tasks=TASKS, model=None, **extra):
    """Train ``tasks`` one Trainer each (output folder ``out/<task>``), ``probes`` before and
    after the callback; returns the model, its tokenizer and encoder."""
    model, tokenizer, encoder = model or tiny()
    before, after = probes or ([], [])
    for task in tasks:
        callback.start_task(task.info.name)
        trainer = Trainer(model=model, args=arguments(out / task.info.name, **extra),
                          train_dataset=task.train,
                          data_collator=encoder.train_batch, processing_class=tokenizer,
                          callbacks=[*before, callback, *after])
        trainer.train()
        callback.finish_task(task.train)
    return model, tokenizer, encoder


def rows(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_merges_at_exactly_the_steps_the_controller_decides(tmp_path):
    cb = AIMMergingCallback(method="aimmerging", s_init=2, memory_size=8)
    train_tasks(tmp_path, cb)
    merges = cb.traces.merges
    assert len(merges) >= 2 and {m["task"] for m in merges} == {TASKS[1].info.name}
    # the same history losses (and l1 changes) into a fresh controller: the same merges
    ctl = MergeController(cb.engine.controller_config)
    ctl.reset()
    signals = [s for s in cb.traces.signals if s["task"] == TASKS[1].info.name]
    assert [s["step"] for s in signals] == list(range(1, 9))
    decided, trace = [], iter(merges)
    for s in signals:
        if ctl.observe(s["history_loss"]):
            row = next(trace)
            plan = ctl.on_merge(row["l1_change"])
            decided.append((s["step"], plan.alpha_new, plan.alpha_past, plan.next_interval))
    assert decided == [(m["step"], m["alpha_new"], m["alpha_past"], m["next_interval"])
                       for m in merges]
    # the files in args.output_dir: the columns of a run folder, the same rows
    out = tmp_path / TASKS[1].info.name
    written = rows(out / "merge_trace.csv")
    assert [int(r["step"]) for r in written] == [m["step"] for m in merges]
    assert tuple(written[0]) == MERGE_FIELDS
    sig = rows(out / "signals.csv")
    assert len(sig) == 16 and all(r["history_loss"] == "" for r in sig[:8])
    assert all(r["history_loss"] and r["train_loss"] for r in sig[8:])


class _Before(TrainerCallback):
    """Runs before the AIMMerging callback: what the Trainer left after its optimizer step."""

    def __init__(self):
        self.seen = {}

    def on_step_end(self, args, state, control, model=None, optimizer=None, lr_scheduler=None,
                    **kwargs):
        self.seen[state.global_step] = {
            "theta": snapshot(model), "optimizer": copy.deepcopy(optimizer.state_dict()),
            "schedule": copy.deepcopy(lr_scheduler.state_dict()),
            "rates": [g["lr"] for g in optimizer.param_groups]}


class _After(TrainerCallback):
    """Runs after it: the weights it left, and the weights the next step's forward starts from."""

    def __init__(self, callback):
        self.callback, self.fused, self.next_forward, self.after = callback, {}, {}, {}
        self.armed, self.hook = None, None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        def pre_forward(module, inputs):
            if self.armed is not None:
                self.next_forward[self.armed] = snapshot(module)
                self.armed = None
        self.hook = model.register_forward_pre_hook(pre_forward)

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step in self.fused:       # the first forward of the step after a merge
            self.armed = state.global_step

    def on_step_end(self, args, state, control, model=None, optimizer=None, lr_scheduler=None,
                    **kwargs):
        merges = self.callback.traces.merges
        self.after[state.global_step] = {
            "optimizer": copy.deepcopy(optimizer.state_dict()),
            "schedule": copy.deepcopy(lr_scheduler.state_dict()),
            "rates": [g["lr"] for g in optimizer.param_groups]}
        if merges and merges[-1]["step"] == state.global_step and merges[-1]["task"] == \
                self.callback.task["name"]:
            self.fused[state.global_step] = snapshot(model)

    def on_train_end(self, args, state, control, **kwargs):
        self.hook.remove()


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _same_optimizer(a: dict, b: dict) -> bool:
    if a["param_groups"] != b["param_groups"] or a["state"].keys() != b["state"].keys():
        return False
    return all(_same(a["state"][i], b["state"][i]) for i in a["state"])


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    """fixed_interval, S = 2: a merge every other step of task 2, each with a rehearsal and
    weights (0.5, 0.5), so that the fused weights differ from the trained ones."""
    import aimmerging.engine as engine

    out = tmp_path_factory.mktemp("probed")
    cb = AIMMergingCallback(method="fixed_interval", s_init=2, memory_size=8)
    before, after = _Before(), _After(cb)
    train_tasks(out, cb, probes=([before], [after]), tasks=TASKS[:1])     # plain training
    before.seen.clear()
    inner, cb.rates = engine.MemoryPasses.rehearse, []

    def rehearse(self, n_steps, key, lr, optimizer, on_gradients=None):
        cb.rates.append((key, lr, optimizer is cb.engine.rehearsal_optimizer))
        return inner(self, n_steps, key, lr, optimizer, on_gradients)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine.MemoryPasses, "rehearse", rehearse)
        train_tasks(out, cb, probes=([before], [after]), tasks=TASKS[1:])
    return cb, before, after


def test_the_next_step_starts_from_the_fused_weights(probed):
    cb, before, after = probed
    merged = [m["step"] for m in cb.traces.merges]
    assert merged == [2, 4, 6, 8] and all(m["rehearsal_skipped"] == 0 for m in cb.traces.merges)
    assert sorted(after.next_forward) == [2, 4, 6]               # the last merge ends the task
    for step in merged[:-1]:
        fused = after.fused[step]
        assert not _same(fused, before.seen[step]["theta"])      # the merge changed the weights
        assert _same(after.next_forward[step], fused)            # ... and step + 1 starts there
    assert _same(after.fused[merged[-1]], cb.engine.anchor)      # the new anchor: the fused weights


def test_the_rehearsal_runs_at_the_rate_of_the_merge_step(probed):
    # SPEC.md fusion step 2: the rate main step j used; at the task's last step (8) the
    # schedule's next rate is 0, the step's own is not
    cb, before, _ = probed
    used = {s["step"]: s["lr"] for s in cb.traces.signals if s["task"] == TASKS[1].info.name}
    assert [(key, lr, own) for key, lr, own in cb.rates] == \
        [((1, step), used[step], True) for step in (2, 4, 6, 8)]
    assert used[8] > 0 and set(before.seen[8]["rates"]) == {0.0}    # the Trainer's next rate


def test_the_trainers_optimizer_and_schedule_are_untouched_by_the_rehearsal(probed):
    cb, before, after = probed
    assert cb.counters["rehearsal_steps"] == 4                   # one step at each merge
    assert cb.engine.rehearsal_optimizer.state                   # the rehearsal's own AdamW moved
    for m in cb.traces.merges:
        b, a = before.seen[m["step"]], after.after[m["step"]]
        assert _same_optimizer(b["optimizer"], a["optimizer"])
        assert b["schedule"] == a["schedule"] and b["rates"] == a["rates"]


def test_the_reference_variant_rehearses_with_the_trainers_optimizer(tmp_path):
    """The check above can fail: aimmerging_reference rehearses with the main optimizer, as the
    authors' code does; its moments change at a merge, its learning rates are put back."""
    cb = AIMMergingCallback(method="aimmerging_reference", s_init=2, memory_size=8)
    before, after = _Before(), _After(cb)
    train_tasks(tmp_path, cb, probes=([before], [after]))
    assert cb.traces.merges and cb.counters["rehearsal_steps"] > 0
    for m in cb.traces.merges:
        b, a = before.seen[m["step"]], after.after[m["step"]]
        assert not _same_optimizer(b["optimizer"], a["optimizer"])
        assert b["schedule"] == a["schedule"] and b["rates"] == a["rates"]


class _StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def test_a_resumed_trainer_restores_the_controller_state(tmp_path):
    settings = dict(method="aimmerging", s_init=2, memory_size=8)
    save = dict(save_strategy="steps", save_steps=3)
    ref = AIMMergingCallback(**settings)
    ref_model = train_tasks(tmp_path / "ref", ref, **save)[0]

    # the same two tasks, the second stopped right after its checkpoint at step 6 ...
    cut = AIMMergingCallback(**settings)
    first = train_tasks(tmp_path / "cut", cut, tasks=TASKS[:1], **save)
    cut_model = train_tasks(tmp_path / "cut", cut, probes=([], [_StopAt(6)]), tasks=TASKS[1:],
                            model=first, **save)[0]
    saved = copy.deepcopy(cut.engine.controller.state_dict())
    out = tmp_path / "cut" / TASKS[1].info.name
    assert (out / "checkpoint-6" / "aimmerging" / "state.json").is_file()

    # ... then a fresh model, callback and Trainer resume it (the memory comes back too)
    fresh = AIMMergingCallback(**settings)
    model, tokenizer, encoder = tiny()
    seen = {}

    class _Look(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            seen["controller"] = copy.deepcopy(fresh.engine.controller.state_dict())
            seen["memory"] = len(fresh.memory)

    trainer = Trainer(model=model, args=arguments(out, **save),
                      train_dataset=TASKS[1].train, data_collator=encoder.train_batch,
                      processing_class=tokenizer, callbacks=[fresh, _Look()])
    trainer.train(resume_from_checkpoint=True)
    assert seen["controller"] == saved and saved["steps_since_merge"] + len(saved["history"]) > 0
    assert seen["memory"] == 8 and fresh.task["name"] == TASKS[1].info.name
    # and it goes on as the run that was never stopped
    assert fresh.traces.merges == ref.traces.merges
    assert [s["history_loss"] for s in fresh.traces.signals] == \
        [s["history_loss"] for s in ref.traces.signals]
    assert _same(snapshot(model), snapshot(ref_model))
    assert not _same(snapshot(cut_model), snapshot(ref_model))


def test_a_checkpoint_without_the_callbacks_state_is_refused(tmp_path):
    model, tokenizer, encoder = tiny()
    Trainer(model=model, args=arguments(tmp_path, save_strategy="steps", save_steps=4,
                                        max_steps=4), train_dataset=TASKS[0].train,
            data_collator=encoder.train_batch, processing_class=tokenizer).train()
    cb = AIMMergingCallback(memory=TASKS[0].train[:4], s_init=2)
    trainer = Trainer(model=model, args=arguments(tmp_path, max_steps=6),
                      train_dataset=TASKS[1].train, data_collator=encoder.train_batch,
                      processing_class=tokenizer, callbacks=[cb])
    with pytest.raises(TrainingError, match="checkpoint-4/aimmerging: no AIMMergingCallback state"):
        trainer.train(resume_from_checkpoint=True)


def test_memory_forms_and_settings(tmp_path):
    examples = [{"input": ex.input, "output": ex.output} for ex in TASKS[0].train[:6]]
    cb = AIMMergingCallback(memory=examples, method="fixed_interval", s_init=2)
    assert len(cb.memory) == 6 and cb.memory.tasks == ["(memory=)"]       # kept whole
    model, tokenizer, encoder = tiny()
    rows_ = [{k: v[0].tolist() for k, v in encoder.train_batch([ex]).items()} for ex in TASKS[0].train]
    from transformers import DataCollatorForSeq2Seq

    tokenized = AIMMergingCallback(memory=rows_[:6], method="fixed_interval", s_init=2)
    trainer = Trainer(model=model, args=arguments(tmp_path, max_steps=4), train_dataset=rows_,
                      data_collator=DataCollatorForSeq2Seq(tokenizer), processing_class=tokenizer,
                      callbacks=[tokenized])
    trainer.train()                 # the memory batches go through the Trainer's collator
    assert [m["step"] for m in tokenized.traces.merges] == [2, 4]
    memory = ReplayMemory(memory_size=3, seed=1)
    assert AIMMergingCallback(memory=memory).memory is memory
    with pytest.raises(ConfigError, match="method.s_init"):
        AIMMergingCallback(s_init=0)
    with pytest.raises(ConfigError, match="method.no_such_setting: unknown key"):
        AIMMergingCallback(no_such_setting=1)
    with pytest.raises(ConfigError, match="'replay' is not a merging method"):
        AIMMergingCallback(method="replay")
    with pytest.raises(ConfigError, match="no task trained yet"):
        AIMMergingCallback().finish_task(TASKS[0].train)
    with pytest.raises(ConfigError, match=r"memory\[0\] needs string 'input' and 'output'"):
        AIMMergingCallback(memory=[{"question": "q"}])


def test_with_trls_sft_trainer(tmp_path):
    """trl.SFTTrainer (prompt-completion data): a tokenized memory through its own collator,
    and a text memory through the Encoder."""
    trl = pytest.importorskip("trl")
    import datasets

    model, tokenizer, _ = tiny()

    def sft(task, callback, out):
        data = datasets.Dataset.from_list([{"prompt": e.input, "completion": " " + e.output}
                                           for e in task.train])
        args = trl.SFTConfig(output_dir=str(out), per_device_train_batch_size=4, max_steps=4,
                             learning_rate=3e-3, save_strategy="no", report_to="none",
                             use_cpu=True, disable_tqdm=True, logging_steps=1, max_length=256)
        trainer = trl.SFTTrainer(model=model, args=args, train_dataset=data,
                                 processing_class=tokenizer, callbacks=[callback])
        trainer.train()
        return trainer

    plain = AIMMergingCallback(method="fixed_interval", s_init=2)
    first = sft(TASKS[0], plain, tmp_path / "first")
    assert plain.traces.merges == [] and len(plain.traces.signals) == 4     # empty memory
    rows = AIMMergingCallback(memory=first.train_dataset.select(range(6)), method="fixed_interval",
                              s_init=2)
    sft(TASKS[1], rows, tmp_path / "rows")
    assert [m["step"] for m in rows.traces.merges] == [2, 4]
    assert (tmp_path / "rows" / "merge_trace.csv").is_file()
    text = AIMMergingCallback(memory=TASKS[0].train[:6], method="aimmerging", s_init=2)
    sft(TASKS[1], text, tmp_path / "text")
    assert all(s["history_loss"] > 0 for s in text.traces.signals)
    # the task loop of docs/python.md: finish_task takes the rows the SFTTrainer trained on
    loop = AIMMergingCallback(method="fixed_interval", s_init=2, memory_size=6)
    for task in TASKS[:2]:
        loop.start_task(task.info.name)
        trainer = sft(task, loop, tmp_path / f"loop_{task.info.name}")
        loop.finish_task(trainer.train_dataset)
    assert [(m["stage"], m["step"]) for m in loop.traces.merges] == [(2, 2), (2, 4)]
    assert "labels" in loop.memory.examples()[0]


@pytest.mark.parametrize("method", ["recurrent_kif", "aimmerging_ifm"])
def test_element_wise_fusion_in_a_trainer(tmp_path, method):
    cb = AIMMergingCallback(memory=TASKS[0].train[:6], method=method, s_init=2)
    train_tasks(tmp_path, cb, tasks=TASKS[1:], max_steps=4)
    assert cb.traces.merges and cb.engine.importance is not None
    assert cb.engine.importance.imp["new"]                      # fed by the Trainer's own steps


def test_the_fp16_rehearsal_scales_its_own_loss():
    """Under fp16 the host scales the rehearsal loss, unscales before clipping, and steps
    through its own GradScaler: the update is the one of the unscaled gradient."""
    from aimmerging.callback_host import TrainerHost

    def update(fp16):
        torch.manual_seed(0)
        net = torch.nn.Linear(3, 1)
        host = TrainerHost(net, None, False, True, max_grad_norm=1e9, fp16=fp16)
        if fp16:
            host.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        host.backward(net(torch.ones(2, 3)).sum())
        grad = net.weight.grad.clone()
        host.clip(opt)
        host.step(opt)
        return grad, net.weight.detach().clone()

    (g_plain, w_plain), (g_scaled, w_scaled) = update(False), update(True)
    torch.testing.assert_close(g_scaled, g_plain * 2.0 ** 10)   # scaled by the backward ...
    torch.testing.assert_close(w_scaled, w_plain)               # ... unscaled before the step
