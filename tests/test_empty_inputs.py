"""Empty and whitespace-only inputs: a one-token prompt in training and generation, any mix of
empty and non-empty prompts in a generation batch, a run that finishes, a note in ``data check``.

Both model kinds: tiny-llama (decoder-only) and tiny-t5 (encoder-decoder), whose byte-level
tokenizer adds no special token, so that an empty input gives no token at all.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from aimmerging.batching import Encoder
from aimmerging.data.formats import Example
from aimmerging.models import build_byte_tokenizer, load_backbone

MODELS = ["tiny-llama", "tiny-t5"]


@pytest.fixture(scope="module", params=MODELS)
def varied(request):
    """A tiny model with larger random weights, so that its predictions depend on the prompt."""
    bb = load_backbone(request.param)
    torch.manual_seed(3)
    with torch.no_grad():
        for p in bb.model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.3)
    return bb, Encoder(bb.tokenizer, bb.is_seq2seq, max_input_tokens=128)


def test_a_prompt_with_no_token_becomes_the_bos_token_and_others_are_unchanged():
    tok = build_byte_tokenizer()
    for seq2seq in (False, True):
        enc = Encoder(tok, is_seq2seq=seq2seq)
        assert enc.prefix == enc.suffix == []              # this tokenizer adds no special token
        assert enc.blank_prompt == [tok.bos_token_id]
        blank, text = enc.encode_prompts(["", "ab"])
        assert blank == [tok.bos_token_id]
        assert text == tok("ab", add_special_tokens=False)["input_ids"]
        assert enc.encode_prompts([" "]) == [tok(" ", add_special_tokens=False)["input_ids"]]
        batch = enc.train_batch([Example("e1", "", "yes"), Example("e2", "", "no")])
        assert batch["input_ids"].shape[1] >= 1 and batch["attention_mask"].sum(1).min() >= 1


def test_a_tokenizer_that_adds_special_tokens_keeps_them_for_an_empty_input():
    class WithEos:                                      # a T5-like tokenizer: EOS after every text
        pad_token_id, eos_token_id, bos_token_id = 0, 1, None

        def __call__(self, texts, add_special_tokens=True):
            one = isinstance(texts, str)
            ids = [[ord(c) for c in t] + ([1] if add_special_tokens else []) for t in
                   ([texts] if one else texts)]
            return {"input_ids": ids[0] if one else ids}

    enc = Encoder(WithEos(), is_seq2seq=True)
    assert enc.suffix == [1] and enc.blank_prompt == [1]
    assert enc.encode_prompts(["", "a"]) == [[1], [97, 1]]


@pytest.mark.parametrize("batch_size", [1, 2, 3, 8])
def test_generation_survives_any_mix_and_leaves_the_other_predictions_as_they_were(varied, batch_size):
    from aimmerging.evaluation import generate

    bb, enc = varied
    texts = ["Definition: name the topic of the text. Text: " + s + "\nAnswer:" for s in
             ("goal!", "rates rose again", "a comet", "a new phone is out")]
    mixed = ["", texts[0], "", texts[1], texts[2], "", texts[3]]
    alone = generate(bb.model, enc, texts, batch_size=batch_size, max_new_tokens=5)
    got = generate(bb.model, enc, mixed, batch_size=batch_size, max_new_tokens=5)
    blank = generate(bb.model, enc, [""], batch_size=1, max_new_tokens=5)
    assert [got[i] for i in (1, 3, 4, 6)] == alone        # the same as without the empty inputs
    assert [got[i] for i in (0, 2, 5)] == blank * 3
    assert len(set(alone)) > 1                             # predictions depend on the prompt
    assert generate(bb.model, enc, ["", ""], batch_size=batch_size, max_new_tokens=5) == blank * 2


def _write_tasks(root: Path) -> Path:
    """Two custom tasks: every test input of the first is empty, a few train inputs are too."""
    for split in ("train", "test"):
        (root / split).mkdir(parents=True)
    for name, blank_test in (("blanks", True), ("mixed", False)):
        train = [{"id": f"{name}_tr{i}", "input": "" if i % 3 == 0 else f"item {i}\nAnswer:",
                  "output": "yes" if i % 2 else "no"} for i in range(8)]
        test = [{"id": f"{name}_te{i}", "input": "" if blank_test or i % 2 else "  " if i == 2
                 else f"item {i}\nAnswer:", "output": "yes"} for i in range(4)]
        (root / "train" / f"{name}.json").write_text(json.dumps(train))
        (root / "test" / f"{name}.json").write_text(json.dumps(test))
    return root


@pytest.mark.timeout(240)
@pytest.mark.parametrize("model", MODELS)
def test_a_task_stream_with_empty_inputs_runs_to_the_end(model, tmp_path):
    from aimmerging.config import build_config
    from aimmerging.runner import run

    data = _write_tasks(tmp_path / "data")
    cfg = build_config({"seed": 1, "data": {"dir": str(data), "tasks": ["blanks", "mixed"],
                                            "max_input_tokens": 32, "max_target_tokens": 4},
                        "model": {"name": model},
                        "method": {"name": "aimmerging", "memory_size": 4, "s_init": 2},
                        "train": {"epochs": 1, "batch_size": 4},
                        "eval": {"batch_size": 3, "max_new_tokens": 3}}, "test config")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run(cfg, tmp_path / "run", progress=False)
    finally:
        torch.set_num_threads(threads)
    matrix = json.loads((tmp_path / "run" / "accuracy_matrix.json").read_text())
    assert matrix
    preds = [json.loads(line) for line in
             (tmp_path / "run" / "predictions").glob("*blanks.jsonl").__next__().read_text().splitlines()]
    assert [p["input"] for p in preds] == [""] * 4 and len({p["prediction"] for p in preds}) == 1


def test_data_check_notes_empty_inputs_without_counting_a_problem(tmp_path, capsys):
    import argparse

    from aimmerging.cli_data import add_data_parser

    data = _write_tasks(tmp_path / "data")
    parser = argparse.ArgumentParser()
    add_data_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", "check", str(data)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "2 tasks, 0 problem(s)" in out
    notes = [line for line in out.splitlines() if line.startswith("note: ")]
    assert len(notes) == 4
    assert any(str(data / "test" / "blanks.json") in n and "4 record(s)" in n
               and "'blanks_te0'" in n for n in notes)
    assert any(str(data / "test" / "mixed.json") in n and "3 record(s)" in n   # "  " counts
               and "'mixed_te1'" in n for n in notes)
