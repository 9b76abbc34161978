"""AIMMergingCallback stopped and started again: a task interrupted in the same process and
started over, save()/load() with bad paths, files and settings, and resumes from checkpoints
that do not fit (another step, a finished task, a checkpoint the stop left half-saved); each
goes on correctly or is refused before anything changes, naming what is wrong."""

from __future__ import annotations

import json
import shutil

import pytest
from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback

from aimmerging import AIMMergingCallback, ConfigError, TrainingError
from test_callback_tasks import TASKS, arguments, tiny, tokenized, train_rows

pytestmark = pytest.mark.timeout(600)
SETTINGS = dict(method="fixed_interval", s_init=2, memory_size=5)


class StopAt(TrainerCallback):
    """Raises KeyboardInterrupt at the end of step ``step`` (Ctrl-C in a notebook)."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt


def test_a_task_interrupted_in_the_process_starts_over_under_its_name(tmp_path):
    model, tokenizer, encoder = tiny()
    first, second = (tokenized(encoder, t) for t in TASKS)
    cb = AIMMergingCallback(**SETTINGS)
    cb.start_task("one")
    train_rows(model, tokenizer, first, cb, tmp_path / "one").train()
    cb.finish_task(first)
    cb.start_task("two")
    stopped = train_rows(model, tokenizer, second, cb, tmp_path / "two")
    stopped.add_callback(StopAt(3))
    with pytest.raises(KeyboardInterrupt):
        stopped.train()
    cb.save(tmp_path / "tasks.json")                       # allowed after the interruption
    cb.start_task("two")                                   # the same task, from its start
    train_rows(model, tokenizer, second, cb, tmp_path / "two").train()
    assert cb.task == {"index": 1, "name": "two"}
    assert [(s["stage"], s["step"]) for s in cb.traces.signals] == \
        [(1, k) for k in range(1, 5)] + [(2, k) for k in range(1, 5)]
    assert [(m["stage"], m["step"]) for m in cb.traces.merges] == [(2, 2), (2, 4)]
    # the file saved after the interruption goes on with the same task, as stage 2 again
    later = AIMMergingCallback(**SETTINGS)
    later.load(tmp_path / "tasks.json")
    later.start_task("two")
    train_rows(model, tokenizer, second, later, tmp_path / "later").train()
    assert [m["stage"] for m in later.traces.merges] == [2, 2]


def test_save_and_load_refuse_what_does_not_fit(tmp_path):
    cb = AIMMergingCallback(**SETTINGS)
    cb.finish_task(TASKS[0].train, name="one")
    with pytest.raises(ConfigError, match="is not a plain file"):
        cb.save(tmp_path)
    target = tmp_path / "real.json"
    target.write_text("{}")
    (tmp_path / "link.json").symlink_to(target)
    assert cb.save(tmp_path / "link.json") == target and (tmp_path / "link.json").is_symlink()
    with pytest.raises(TrainingError, match=r"other settings: method=.*memory_size.*5.* there"):
        AIMMergingCallback(**{**SETTINGS, "memory_size": 16}).load(target)
    with pytest.raises(TrainingError, match="other settings: seed=42 there, 5 here"):
        AIMMergingCallback(**SETTINGS, seed=5).load(target)
    broken = json.loads(target.read_text())
    broken["traces"] = [1, 2]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    fresh = AIMMergingCallback(**SETTINGS)
    with pytest.raises(TrainingError, match="broken.json: the state does not fit"):
        fresh.load(tmp_path / "broken.json")
    assert fresh.memory.tasks == [] and fresh.task["index"] == -1      # nothing loaded
    fresh.load(target)
    assert fresh.memory.tasks == ["one"]
    with pytest.raises(ConfigError, match="memory= was given: a callback that loads starts "
                                          "without it"):
        AIMMergingCallback(**SETTINGS, memory=TASKS[0].train[:3]).load(target)


def test_resumes_that_do_not_fit_are_refused_before_restoring(tmp_path):
    model, tokenizer, encoder = tiny()
    first, second = (tokenized(encoder, t) for t in TASKS)
    cb = AIMMergingCallback(**SETTINGS)
    for name, rows in (("one", first), ("two", second)):
        cb.start_task(name)
        train_rows(model, tokenizer, rows, cb, tmp_path / name, save_strategy="steps",
                   save_steps=2).train()
        cb.finish_task(rows)
    cb.save(tmp_path / "tasks.json")
    # resume_from() names one checkpoint, resume_from_checkpoint another
    mixed = AIMMergingCallback(**SETTINGS)
    mixed.start_task("two")
    mixed.resume_from(tmp_path / "two" / "checkpoint-2")
    with pytest.raises(ConfigError, match="state in .*checkpoint-2 is of step 2, and the Trainer "
                                          "resumes at step 4"):
        train_rows(model, tokenizer, second, mixed, tmp_path / "two", max_steps=6).train(
            resume_from_checkpoint=str(tmp_path / "two" / "checkpoint-4"))
    assert mixed.traces.signals == []
    # a finished task's checkpoint, resumed without start_task after load()
    loaded = AIMMergingCallback(**SETTINGS)
    loaded.load(tmp_path / "tasks.json")
    with pytest.raises(ConfigError, match="belongs to task 'two', which this callback has "
                                          "finished"):
        train_rows(model, tokenizer, second, loaded, tmp_path / "two").train(
            resume_from_checkpoint=str(tmp_path / "two" / "checkpoint-2"))
    assert loaded.memory.tasks == ["one", "two"]
    # a checkpoint that a stop left without the callback's state names the one before it
    shutil.rmtree(tmp_path / "two" / "checkpoint-4" / "aimmerging")
    fresh = AIMMergingCallback(**SETTINGS)
    fresh.start_task("two")
    with pytest.raises(TrainingError, match="the newest checkpoint of .* with the callback's "
                                            "state is checkpoint-2"):
        train_rows(model, tokenizer, second, fresh, tmp_path / "two").train(
            resume_from_checkpoint=True)
    with pytest.raises(TrainingError, match="a Trainer checkpoint's callback state|the callback's "
                                            "state in a Trainer checkpoint"):
        AIMMergingCallback(**SETTINGS).load(tmp_path / "two" / "checkpoint-2" / "aimmerging" /
                                            "state.json")


def test_two_callbacks_on_one_trainer_are_refused(tmp_path):
    model, tokenizer, encoder = tiny()
    trainer = Trainer(model=model, args=arguments(tmp_path), train_dataset=tokenized(encoder, TASKS[0]),
                      data_collator=DataCollatorForSeq2Seq(tokenizer),
                      callbacks=[AIMMergingCallback(**SETTINGS), AIMMergingCallback(**SETTINGS)])
    with pytest.raises(ConfigError, match="two AIMMergingCallbacks are registered"):
        trainer.train()


def test_a_dataset_with_a_tokenizing_transform_is_rows_as_memory_too():
    import datasets

    _, tokenizer, encoder = tiny()
    rows = tokenized(encoder, TASKS[0])
    data = datasets.Dataset.from_list([{"n": i} for i in range(len(rows))])
    data.set_transform(lambda batch: {k: [rows[i][k] for i in batch["n"]] for k in rows[0]})
    cb = AIMMergingCallback(memory=data)
    assert cb.memory.kind == "tokenized" and len(cb.memory) == len(rows)
    with pytest.raises(ConfigError, match="IterableDataset, which has no length"):
        AIMMergingCallback(memory=datasets.Dataset.from_list(rows).to_iterable_dataset())
    # a causal LM scores no label at the first position: no token predicts it
    only_first = [{**r, "labels": [r["input_ids"][0]] + [-100] * (len(r["labels"]) - 1)}
                  for r in rows]
    with pytest.raises(ConfigError, match="gives a replay memory example no labelled token"):
        AIMMergingCallback(collate=DataCollatorForSeq2Seq(tokenizer)).finish_task(only_first,
                                                                                 name="t")
