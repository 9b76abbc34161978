"""AIMMergingCallback with the inputs real task loops hand it: padding-free collators, a
user's collate= for text, Datasets with a transform, rows without a labelled token, tokenizers
without a pad token, containers of columns or splits, a memory that the next task's collator
cannot batch, a shared output_dir, a callback registered twice, and arguments of the wrong
kind; each works, or is refused (or warned about) before a step, naming what is wrong."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening, Trainer

from aimmerging import AIMMergingCallback, ConfigError
from aimmerging.batching import Encoder
from aimmerging.callback_inputs import memory_batch
from aimmerging.losses import batch_loss
from test_callback_tasks import TASKS, arguments, tiny, tokenized, train_rows

pytestmark = pytest.mark.timeout(600)


def loop(model, tokenizer, tasks, cb, out, collate, **extra):
    """The task loop of docs/python.md: start_task, train, finish_task, for each task."""
    for name, rows in tasks:
        cb.start_task(name)
        Trainer(model=model, args=arguments(out / name, **extra), train_dataset=rows,
                data_collator=collate, processing_class=tokenizer, callbacks=[cb]).train()
        cb.finish_task(rows)


def test_padding_free_batches_are_padded_row_by_row(tmp_path):
    model, tokenizer, encoder = tiny()
    first, second = (tokenized(encoder, t) for t in TASKS)
    flat = DataCollatorWithFlattening()
    batch = memory_batch(flat, first[:3])                # one packed row, no attention_mask
    padded = memory_batch(DataCollatorForSeq2Seq(tokenizer), first[:3])
    assert batch["input_ids"].shape == padded["input_ids"].shape == (3, padded["input_ids"].shape[1])
    model.eval()
    with torch.no_grad():                                 # the same loss as padded rows
        assert torch.allclose(batch_loss(model, batch, False), batch_loss(model, padded, False))
    cb = AIMMergingCallback(method="fixed_interval", s_init=2, memory_size=5)
    loop(model, tokenizer, [("one", first), ("two", second)], cb, tmp_path, flat)
    assert [m["stage"] for m in cb.traces.merges] == [2, 2]


def test_a_users_collate_gets_text_examples_as_mappings(tmp_path):
    model, tokenizer, _ = tiny()

    def collate(records):               # written for the user's own {"input", "output"} dicts
        enc = tokenizer([r["input"] + " " + r["output"] for r in records], padding=True,
                        return_tensors="pt")
        return {**enc, "labels": enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)}

    tasks = [(t.info.name, [{"input": e.input, "output": e.output} for e in t.train]) for t in TASKS]
    cb = AIMMergingCallback(method="fixed_interval", s_init=2, memory_size=5, collate=collate)
    loop(model, tokenizer, tasks, cb, tmp_path, collate)
    assert [m["stage"] for m in cb.traces.merges] == [2, 2]


def test_a_dataset_with_a_transform_keeps_its_rows_columns(tmp_path):
    import datasets

    model, tokenizer, encoder = tiny()
    tasks = []
    for task in TASKS:
        rows = tokenized(encoder, task)
        data = datasets.Dataset.from_list([{"input": e.input, "output": e.output} for e in task.train])
        lookup = {e.input: r for e, r in zip(task.train, rows)}
        data.set_transform(lambda batch, lookup=lookup: {
            k: [lookup[i][k] for i in batch["input"]] for k in ("input_ids", "attention_mask", "labels")})
        tasks.append((task.info.name, data))
    cb = AIMMergingCallback(method="fixed_interval", s_init=2, memory_size=5)
    loop(model, tokenizer, tasks, cb, tmp_path, DataCollatorForSeq2Seq(tokenizer),
         remove_unused_columns=False)
    assert [m["stage"] for m in cb.traces.merges] == [2, 2]


def test_rows_without_a_labelled_token_are_refused(tmp_path):
    _, _, encoder = tiny()
    rows = tokenized(encoder, TASKS[0])
    rows[3] = {**rows[3], "labels": [-100] * len(rows[3]["labels"])}
    cb = AIMMergingCallback(memory_size=4)
    with pytest.raises(ConfigError, match=r"examples\[3\] of task 'one': every label is -100"):
        cb.finish_task(rows, name="one")
    with pytest.raises(ConfigError, match=r"examples\[3\] of task '\(memory=\)': every label"):
        AIMMergingCallback(memory=rows)
    assert len(cb.memory) == 0


def test_a_tokenizer_without_a_pad_token_pads_with_eos():
    _, tokenizer, _ = tiny()
    bare = copy.deepcopy(tokenizer)
    bare.pad_token = None
    batch = Encoder(bare, False, 64, 4).train_batch(TASKS[0].train[:3])
    same = Encoder(tokenizer, False, 64, 4).train_batch(TASKS[0].train[:3])
    assert torch.equal(batch["labels"], same["labels"])
    assert torch.equal(batch["attention_mask"], same["attention_mask"])
    bare.eos_token = None
    with pytest.raises(ConfigError, match="the tokenizer has no EOS token"):
        Encoder(bare, False, 64, 4)


def test_containers_of_columns_or_splits_are_named():
    import datasets

    _, tokenizer, _ = tiny()
    data = datasets.Dataset.from_list([{"input": "a", "output": "b"}])
    cb = AIMMergingCallback()
    with pytest.raises(ConfigError, match=r"examples is a DatasetDict with keys \['train'\], not "
                                          r"a sequence of examples; give one split, e.g. "
                                          r"examples\['train'\]"):
        cb.finish_task(datasets.DatasetDict({"train": data}), name="t")
    with pytest.raises(ConfigError, match="examples is a DataFrame; give one mapping per row"):
        cb.finish_task(data.to_pandas(), name="t")
    with pytest.raises(ConfigError, match=r"memory is a BatchEncoding with keys \['attention_mask', "
                                          r"'input_ids'\]"):
        AIMMergingCallback(memory=tokenizer(["a text", "another"]))
    with pytest.raises(ConfigError, match="task 't' has no examples to store"):
        cb.finish_task([], name="t")
    for name in (" ", "(memory=)"):
        with pytest.raises(ConfigError, match="name must be a non-empty string"):
            cb.start_task(name)
    assert cb.memory.tasks == []


def test_a_memory_the_next_collator_cannot_batch_is_refused_before_a_step(tmp_path):
    model, tokenizer, encoder = tiny()
    first, second = (tokenized(encoder, t) for t in TASKS)
    cb = AIMMergingCallback(method="fixed_interval", s_init=2, memory_size=5)
    cb.start_task("one")
    train_rows(model, tokenizer, first, cb, tmp_path / "one").train()
    cb.finish_task(first)
    cb.start_task("two")

    def no_labels(rows):              # a collator for another kind of training: no labels
        return tokenizer.pad([{k: r[k] for k in ("input_ids", "attention_mask")} for r in rows],
                             return_tensors="pt")

    unlabelled = Trainer(model=model, args=arguments(tmp_path / "two"), train_dataset=second,
                         data_collator=no_labels, callbacks=[cb])
    with pytest.raises(ConfigError, match="replay memory's first example: the memory batch has "
                                          "no 'labels'"):
        unlabelled.train()
    assert unlabelled.state.global_step == 0 and cb.traces.signals[-1]["task"] == "one"


def test_a_shared_output_dir_and_an_unnamed_resume_are_warned_about(tmp_path):
    model, tokenizer, encoder = tiny()
    first, second = (tokenized(encoder, t) for t in TASKS)
    cb = AIMMergingCallback(method="fixed_interval", s_init=2, memory_size=5)
    cb.start_task("one")
    train_rows(model, tokenizer, first, cb, tmp_path, save_strategy="steps", save_steps=2).train()
    cb.finish_task(first)
    cb.start_task("two")
    with pytest.warns(UserWarning, match=f"{tmp_path} holds checkpoints of task 'one'; task "
                                         f"'two' will save its own there"):
        train_rows(model, tokenizer, second, cb, tmp_path, save_strategy="steps",
                   save_steps=2).train()
    fresh = AIMMergingCallback(method="fixed_interval", s_init=2, memory_size=5)
    with pytest.warns(UserWarning, match="resuming task 'two' from .*checkpoint-4; no "
                                         "start_task\\(\\) named the task"):
        train_rows(model, tokenizer, second, fresh, tmp_path).train(resume_from_checkpoint=True)


def test_a_callback_registered_twice_is_refused(tmp_path):
    model, tokenizer, encoder = tiny()
    cb = AIMMergingCallback(method="fixed_interval", s_init=2)
    trainer = train_rows(model, tokenizer, tokenized(encoder, TASKS[0]), cb, tmp_path)
    trainer.add_callback(cb)
    with pytest.raises(ConfigError, match="registered twice"):
        trainer.train()
    # a train() that stopped on an error does not make the next one look registered twice
    trainer.remove_callback(cb)
    cb.start_task("again")
    trainer.train()
    assert cb.task["name"] == "again" and len(cb.traces.signals) == 4


def test_arguments_of_the_wrong_kind_are_refused_at_once(tmp_path):
    for kwargs, message in [({"output_dir": 3}, "output_dir= takes a folder path, not a int"),
                            ({"tokenizer": "gpt2"}, "tokenizer= takes a tokenizer object"),
                            ({"collate": 5}, "collate= takes a function"),
                            ({"max_target_tokens": 0}, "max_target_tokens must be a whole number >= 1"),
                            ({"learning_rate": 1e-3}, "no learning_rate=: the rehearsal runs at")]:
        with pytest.raises(ConfigError, match=message):
            AIMMergingCallback(**kwargs)
    model, tokenizer, encoder = tiny()
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ConfigError, match="the model has no trainable parameters"):
        train_rows(model, tokenizer, tokenized(encoder, TASKS[0]), AIMMergingCallback(),
                   tmp_path).train()

