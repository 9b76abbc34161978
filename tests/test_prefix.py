"""Shared-prefix loss: the same loss (and gradients) as the plain batch, fewer tokens run."""

import pytest
import torch

from aimmerging.batching import Encoder
from aimmerging.data.formats import Example
from aimmerging.losses import batch_loss
from aimmerging.prefix import can_share_prefix, grouped_loss, prefix_groups, tokens_run

from test_losses import assert_same_loss_and_grads, lora

TOPIC = "Classify the topic of the following text into sports, business or science. Text: "
SENTIMENT = "What is the sentiment of this review, positive or negative? Review: "
MIXED = [Example("topic", TOPIC + "the match ended in a draw\nAnswer:", "sports"),
         Example("sent", SENTIMENT + "great phone, long battery\nAnswer:", "positive"),
         Example("topic", TOPIC + "rates rose again\nAnswer:", "business news"),
         Example("other", "Short one\nAnswer:", "x"),
         Example("topic", TOPIC + "a new planet was found by the telescope team\nAnswer:", "science"),
         Example("sent", SENTIMENT + "broke after a day\nAnswer:", "negative")]


def test_prefix_groups_partition_the_rows_by_shared_prefix():
    a = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    seqs = [a + [20], [5, 5, 5], a + [21, 22], [1, 2, 3, 4, 5, 6, 7, 8, 30, 31], a[:3] + [40] * 9]
    groups = prefix_groups(seqs, limits=[100] * 5, min_len=8)
    assert sorted(r for _, rows in groups for r in rows) == [0, 1, 2, 3, 4]
    assert (8, [0, 2, 3]) in groups          # a shared 8 tokens with row 3; rows 0, 2 share 11
    assert groups[-1] == (0, [1, 4])         # the rows that share nothing, last
    # the limit (first scored position) caps the prefix; under min_len, no group
    assert prefix_groups([a + [1], a + [2]], limits=[5, 100], min_len=8) == [(0, [0, 1])]
    assert prefix_groups([a + [1], a + [2]], limits=[9, 100], min_len=8) == [(9, [0, 1])]
    assert prefix_groups([], [], 8) == []


@pytest.mark.parametrize("rows", [slice(None), slice(0, 3, 2), slice(3, 4)])
def test_grouped_loss_equals_the_plain_loss(rows):
    backbone, net = lora("tiny-llama")
    net.eval()
    enc = Encoder(backbone.tokenizer, is_seq2seq=False, max_input_tokens=256)
    batch = enc.train_batch(MIXED[rows])
    assert can_share_prefix(net)
    with torch.no_grad():
        plain = batch_loss(net, batch, is_seq2seq=False)
        shared = grouped_loss(net, batch)
    torch.testing.assert_close(shared, plain, rtol=1e-5, atol=1e-6)


def test_grouped_loss_runs_each_shared_prefix_once():
    backbone, net = lora("tiny-llama")
    net.eval()
    enc = Encoder(backbone.tokenizer, is_seq2seq=False, max_input_tokens=256)
    batch = enc.train_batch(MIXED)
    tokens, projected = [], []
    embed = net.get_base_model().get_input_embeddings()
    handles = [embed.register_forward_hook(lambda m, a, out: tokens.append(a[0].numel())),
               net.get_base_model().get_output_embeddings().register_forward_hook(
                   lambda m, a, out: projected.append((a[0].shape[1], a[0].is_contiguous())))]
    try:
        with torch.no_grad():
            grouped_loss(net, batch)
    finally:
        for handle in handles:
            handle.remove()
    real = int(batch["attention_mask"].sum())
    assert sum(tokens) == tokens_run(batch)  # what the scaling benchmark counts
    assert len(tokens) == 3                 # the two prefixes, the rows on top of them, the plain row
    assert sum(tokens) < 0.8 * real         # padding included; the plain batch runs more than real
    assert projected[0] == (0, True)        # the prefix pass projects no position onto the vocabulary


def assert_same_loss_and_gradients(backbone, net):
    """grouped_loss and batch_loss agree on MIXED, in value and in every LoRA gradient."""
    enc = Encoder(backbone.tokenizer, is_seq2seq=False, max_input_tokens=256)
    batch = enc.train_batch(MIXED)
    assert_same_loss_and_grads(net, lambda: batch_loss(net, batch, is_seq2seq=False),
                               lambda: grouped_loss(net, batch))


def test_grouped_loss_gradients_match_the_plain_loss():
    backbone, net = lora("tiny-llama")
    net.eval()                              # no dropout: the same function
    assert_same_loss_and_gradients(backbone, net)


def test_grouped_loss_is_nan_without_labels():
    backbone, net = lora("tiny-llama")
    enc = Encoder(backbone.tokenizer, is_seq2seq=False, max_input_tokens=256)
    batch = enc.train_batch(MIXED[:2])
    batch["labels"][:] = -100
    with torch.no_grad():
        assert torch.isnan(grouped_loss(net, batch))


def test_seq2seq_models_cannot_share_a_prefix():
    _, net = lora("tiny-t5")
    assert not can_share_prefix(net)


def test_a_short_prefix_whose_long_rest_widens_the_batch_runs_plain():
    from aimmerging.prefix import _cheapest

    lengths = [60, 60, 120, 120]
    groups = [(50, [0, 1]), (10, [2, 3])]
    assert _cheapest(groups, lengths) == [(50, [0, 1]), (0, [2, 3])]
    assert _cheapest([(50, [0, 1])], [60, 60]) == [(50, [0, 1])]


def test_sliding_window_models_do_not_share_a_prefix():
    from transformers import MistralConfig, MistralForCausalLM

    small = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                 num_attention_heads=2, num_key_value_heads=2)
    assert not can_share_prefix(MistralForCausalLM(MistralConfig(sliding_window=16, **small)))
    assert can_share_prefix(MistralForCausalLM(MistralConfig(sliding_window=None, **small)))


def test_without_a_kv_cache_the_grouped_loss_runs_the_plain_batch():
    backbone, net = lora("tiny-llama")
    net.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    net.enable_input_require_grads()
    net.train()                                # checkpointing in training: no cache comes back
    assert_same_loss_and_gradients(backbone, net)


def test_training_shares_prefixes_only_on_one_process_without_checkpointing(caplog):
    from aimmerging.config import build_config
    from aimmerging.prefix import training_shares_prefix

    def cfg(**model):
        return build_config({"data": {"dir": None, "tasks": ["demo_topic"]},
                             "model": {"name": "tiny-llama", **model},
                             "train": {"share_prefix": True}})

    assert training_shares_prefix(cfg(), world=1)
    assert not caplog.records
    assert not training_shares_prefix(cfg(), world=2)
    assert not training_shares_prefix(cfg(gradient_checkpointing=True), world=1)
    assert sum("train.share_prefix is ignored" in r.getMessage() for r in caplog.records) == 2
    off = build_config({"data": {"dir": None, "tasks": ["demo_topic"]}, "model": {"name": "tiny-llama"}})
    assert not training_shares_prefix(off, world=1)
