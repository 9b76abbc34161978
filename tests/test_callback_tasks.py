"""AIMMergingCallback across tasks: a replay memory grown from tokenized rows (and resumed
from a checkpoint), and the mistakes of a task loop (no start_task, no finish_task, a name
twice, empty fields, a task too short to merge), each refused or warned about by name."""

from __future__ import annotations

import pytest
import torch
from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

from aimmerging import AIMMergingCallback, ConfigError, ReplayMemory
from aimmerging.batching import Encoder
from aimmerging.data.demo import demo_stream
from aimmerging.memory import TokenizedMemory
from aimmerging.models import add_lora, load_backbone

pytestmark = pytest.mark.timeout(600)

TASKS = demo_stream(n_train=16, n_test=4)[:2]      # batch 4: 4 steps an epoch


def tiny():
    torch.manual_seed(0)
    backbone = load_backbone("tiny-llama")
    return add_lora(backbone), backbone.tokenizer, Encoder(backbone.tokenizer, False, 64, 4)


def arguments(out, **extra) -> TrainingArguments:
    base = dict(output_dir=str(out), per_device_train_batch_size=4, max_steps=4,
                learning_rate=3e-3, save_strategy="no", report_to="none", use_cpu=True,
                remove_unused_columns=False, disable_tqdm=True, logging_steps=1, seed=7)
    base.update(extra)
    return TrainingArguments(**base)


def tokenized(encoder, task) -> list[dict]:
    """A user's own tokenized rows: plain lists of token ids, the prompt masked in labels."""
    return [{k: v[0].tolist() for k, v in encoder.train_batch([ex]).items()} for ex in task.train]


def train_rows(model, tokenizer, rows, callback, out, **extra) -> Trainer:
    trainer = Trainer(model=model, args=arguments(out, **extra), train_dataset=rows,
                      data_collator=DataCollatorForSeq2Seq(tokenizer), processing_class=tokenizer,
                      callbacks=[callback])
    return trainer


def test_finish_task_keeps_a_sample_of_tokenized_rows_and_a_checkpoint_brings_it_back(tmp_path):
    model, tokenizer, encoder = tiny()
    first, second = (tokenized(encoder, t) for t in TASKS)
    names = [t.info.name for t in TASKS]
    cb = AIMMergingCallback(method="fixed_interval", s_init=2, memory_size=5, seed=3)
    cb.start_task(names[0])
    train_rows(model, tokenizer, first, cb, tmp_path / "one").train()
    kept = cb.finish_task(first)
    assert isinstance(cb.memory, TokenizedMemory) and cb.memory.tasks == [names[0]]
    # the same seeded draw as a text memory's
    text = ReplayMemory(memory_size=5, seed=3).add_task(names[0], list(TASKS[0].train))
    assert kept == [first[TASKS[0].train.index(ex)] for ex in text]
    with pytest.raises(ConfigError, match="holds tokenized rows"):
        cb.finish_task(TASKS[1].train, name="other")

    cb.start_task(names[1])
    train_rows(model, tokenizer, second, cb, tmp_path / "two", save_strategy="steps",
               save_steps=2).train()
    assert [m["step"] for m in cb.traces.merges] == [2, 4]      # memory batches: the collator

    # a checkpoint of another task than start_task names is refused, before restoring anything
    wrong = AIMMergingCallback(method="fixed_interval", s_init=2, memory_size=5, seed=3)
    wrong.start_task("third")
    with pytest.raises(ConfigError, match=f"start_task\\('third'\\), but the checkpoint .*"
                                          f"checkpoint-2 belongs to task '{names[1]}'"):
        train_rows(model, tokenizer, second, wrong, tmp_path / "two").train(
            resume_from_checkpoint=str(tmp_path / "two" / "checkpoint-2"))
    assert len(wrong.memory) == 0 and wrong.traces.merges == []

    # a fresh callback (no memory given) resumes task 2 from its step-2 checkpoint
    fresh = AIMMergingCallback(method="fixed_interval", s_init=2, memory_size=5, seed=3)
    fresh.start_task(names[1])                       # naming it again is allowed
    again, _, _ = tiny()
    again.load_state_dict(model.state_dict())        # any weights: only the state is compared
    trainer = train_rows(again, tokenizer, second, fresh, tmp_path / "two")
    trainer.train(resume_from_checkpoint=str(tmp_path / "two" / "checkpoint-2"))
    assert isinstance(fresh.memory, TokenizedMemory) and fresh.memory.examples() == kept
    assert fresh.task["name"] == names[1]
    assert [m["step"] for m in fresh.traces.merges] == [2, 4]


def test_memory_rows_lose_the_columns_the_trainer_drops_and_need_labels(tmp_path):
    import datasets
    from transformers import DataCollatorWithPadding

    model, tokenizer, encoder = tiny()
    first, second = (datasets.Dataset.from_list([{**r, "text": "a prompt"} for r in
                                                 tokenized(encoder, t)]) for t in TASKS)
    cb = AIMMergingCallback(method="fixed_interval", s_init=2, memory_size=5)
    for name, rows in (("one", first), ("two", second)):
        cb.start_task(name)
        # remove_unused_columns (the Trainer's default): the 'text' column is dropped from the
        # memory batches as from the Trainer's own; DataCollatorForSeq2Seq fails on it
        train_rows(model, tokenizer, rows, cb, tmp_path / name, remove_unused_columns=True).train()
        cb.finish_task(rows)
    assert [m["stage"] for m in cb.traces.merges] == [2, 2]

    # rows whose collator gives no labels are refused at finish_task, before the next task
    bare = [{k: v for k, v in r.items() if k != "labels"} for r in tokenized(encoder, TASKS[0])]
    cb = AIMMergingCallback(method="fixed_interval", memory_size=5,
                            collate=DataCollatorWithPadding(tokenizer))
    with pytest.raises(ConfigError, match=r"finish_task: examples\[0\]: the memory batch has no "
                                          r"'labels' \(the collator gave \['attention_mask', "
                                          r"'input_ids'\]\)"):
        cb.finish_task(bare, name="one")
    assert len(cb.memory) == 0


def test_text_after_text_and_rows_after_text_are_told_apart(tmp_path):
    cb = AIMMergingCallback(memory_size=2)
    cb.finish_task(TASKS[0].train, name="a")
    _, _, encoder = tiny()
    with pytest.raises(ConfigError, match="holds text examples"):
        cb.finish_task(tokenized(encoder, TASKS[1]), name="b")
    assert cb.memory.tasks == ["a"] and len(cb.memory) == 2       # nothing changed


def test_a_dataset_of_text_columns_is_text():
    import datasets

    text = datasets.Dataset.from_list([{"input": e.input, "output": e.output} for e in TASKS[0].train])
    cb = AIMMergingCallback(memory_size=3)
    kept = cb.finish_task(text, name="a")
    assert not isinstance(cb.memory, TokenizedMemory) and [e.input for e in kept] == \
        [e.input for e in ReplayMemory(memory_size=3, seed=42).add_task("a", list(TASKS[0].train))]
    given = AIMMergingCallback(memory=text)
    assert not isinstance(given.memory, TokenizedMemory) and len(given.memory) == len(text)
    with pytest.raises(ConfigError, match=r"memory: examples\[1\] of task '\(memory=\)' is not a "
                                          r"tokenized row"):
        AIMMergingCallback(memory=[{"input_ids": [1, 2]}, {"text": "x"}])


def test_the_fields_of_finish_tasks_examples_are_checked():
    cb = AIMMergingCallback()
    with pytest.raises(ConfigError, match=r"examples\[1\]: field 'output' is empty"):
        cb.finish_task([{"input": "a", "output": "b"}, {"input": "x", "output": " "}], name="t")
    with pytest.raises(ConfigError, match=r"examples\[0\] needs string 'input' and 'output'.*"
                                          r"it has \['answer', 'prompt'\]"):
        cb.finish_task([{"prompt": "a", "answer": "b"}], name="t")
    with pytest.raises(ConfigError, match=r"examples\[0\] is a str"):
        cb.finish_task(["just text"], name="t")
    assert cb.memory.tasks == []


def test_a_mistyped_method_gets_the_nearest_name():
    with pytest.raises(ConfigError, match="'AIMMerging' is not a merging method \\(did you mean "
                                          "'aimmerging'\\?\\)"):
        AIMMergingCallback(method="AIMMerging")


def test_a_finished_tasks_name_is_refused_before_training():
    cb = AIMMergingCallback()
    cb.finish_task(TASKS[0].train, name="sentiment")
    with pytest.raises(ConfigError, match="task 'sentiment' is finished already"):
        cb.start_task("sentiment")


def test_the_mistakes_of_a_task_loop_are_warned_about(tmp_path):
    model, tokenizer, encoder = tiny()

    def train(cb, task, out, **extra):
        Trainer(model=model, args=arguments(tmp_path / out, **extra), train_dataset=task.train,
                data_collator=encoder.train_batch, processing_class=tokenizer,
                callbacks=[cb]).train()

    forgot = AIMMergingCallback(s_init=2)
    forgot.start_task("first")
    train(forgot, TASKS[0], "a")                     # ... and no finish_task
    forgot.start_task("second")
    with pytest.warns(UserWarning, match="the replay memory is empty, so task 'second' trains "
                                         "without merging"):
        train(forgot, TASKS[1], "b")
    assert forgot.traces.merges == []

    unnamed = AIMMergingCallback(s_init=2, memory_size=4)
    unnamed.start_task("first")
    train(unnamed, TASKS[0], "c")
    unnamed.finish_task(TASKS[0].train)
    with pytest.warns(UserWarning, match="began without start_task\\(\\), so it trains a new "
                                         "task 'task2'"):
        train(unnamed, TASKS[1], "d")
    assert unnamed.task == {"index": 1, "name": "task2"}

    short = AIMMergingCallback(s_init=8, memory=TASKS[0].train[:4])
    short.start_task("short")
    with pytest.warns(UserWarning, match="task 'short' ended after 2 steps without a merge"):
        train(short, TASKS[1], "e", max_steps=2)


def test_a_sequence_goes_on_in_a_new_process_from_what_save_wrote(tmp_path):
    from aimmerging import TrainingError

    def two_tasks(cb, model, tokenizer, encoder, out, stop_after_first=False):
        first, second = (tokenized(encoder, t) for t in TASKS)
        cb.start_task("one")
        train_rows(model, tokenizer, first, cb, out / "one").train()
        cb.finish_task(first)
        if stop_after_first:
            return cb.save(out / "tasks.json")
        cb.start_task("two")
        train_rows(model, tokenizer, second, cb, out / "two").train()

    settings = dict(method="aimmerging", s_init=2, memory_size=5)
    whole = AIMMergingCallback(**settings)
    model, tokenizer, encoder = tiny()
    two_tasks(whole, model, tokenizer, encoder, tmp_path / "whole")
    model, tokenizer, encoder = tiny()
    saved = two_tasks(AIMMergingCallback(**settings), model, tokenizer, encoder,
                      tmp_path / "cut", stop_after_first=True)
    later = AIMMergingCallback(**settings)                     # "a new process"
    later.load(saved)
    assert later.memory.tasks == ["one"] and later.task == {"index": 0, "name": "one"}
    later.start_task("two")
    train_rows(model, tokenizer, tokenized(encoder, TASKS[1]), later, tmp_path / "cut" / "two").train()
    assert later.traces.merges == whole.traces.merges and later.traces.merges
    assert [s["stage"] for s in later.traces.signals] == [1] * 4 + [2] * 4
    with pytest.raises(ConfigError, match="holds tasks already"):
        later.load(saved)
    with pytest.raises(TrainingError, match="saved with method 'aimmerging', not 'fixed_interval'"):
        AIMMergingCallback(method="fixed_interval").load(saved)

    # resume_from() with a train() that does not resume is refused, not ignored
    cb = AIMMergingCallback(**settings)
    train_rows(model, tokenizer, tokenized(encoder, TASKS[0]), cb, tmp_path / "ck",
               save_strategy="steps", save_steps=2).train()
    fresh = AIMMergingCallback(**settings)
    fresh.resume_from(tmp_path / "ck" / "checkpoint-2")
    with pytest.raises(ConfigError, match="resume_from\\(.*checkpoint-2'\\), but this train\\(\\) "
                                          "starts at step 0"):
        train_rows(model, tokenizer, tokenized(encoder, TASKS[0]), fresh, tmp_path / "new").train()


def test_a_task_whose_merges_all_kept_the_trained_weights_is_warned_about(tmp_path):
    model, tokenizer, encoder = tiny()
    cb = AIMMergingCallback(method="aimmerging", s_init=2, memory=TASKS[0].train[:4])
    cb.start_task("short")
    with pytest.warns(UserWarning, match="every merge of task 'short' \\(1\\) kept the trained "
                                         "weights"):
        Trainer(model=model, args=arguments(tmp_path), train_dataset=TASKS[1].train,
                data_collator=encoder.train_batch, processing_class=tokenizer,
                callbacks=[cb]).train()
    assert [(m["alpha_new"], m["alpha_past"]) for m in cb.traces.merges] == [(1.0, 0.0)]


def test_a_started_task_that_has_not_trained_is_named():
    cb = AIMMergingCallback()
    cb.start_task("t2")
    with pytest.warns(UserWarning, match="task 't2' was started and not trained; the next "
                                         "train\\(\\) trains 't3' instead"):
        cb.start_task("t3")
    with pytest.raises(ConfigError, match="task 't3' was started but not trained yet"):
        cb.finish_task(TASKS[0].train)
    with pytest.raises(ConfigError, match="examples is a int, not a collection of examples"):
        cb.finish_task(42, name="t3")
    assert cb.memory.tasks == []
    cb.finish_task(TASKS[0].train, name="t1")          # a name given: stored as asked
    assert cb.memory.tasks == ["t1"]
