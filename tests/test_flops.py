"""The FLOP count of a LoRA pass (aimmerging.flops) against torch's own operator counter."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from aimmerging.batching import Encoder
from aimmerging.data.formats import Example
from aimmerging.flops import batch_flops, labelled_positions_of, model_shapes
from aimmerging.losses import batch_loss
from aimmerging.models import add_lora, load_backbone


@pytest.fixture(scope="module")
def eager_lora():
    """tiny-llama with eager attention (its products are matmuls torch's counter sees) and LoRA."""
    bb = load_backbone("tiny-llama")
    bb.model.set_attn_implementation("eager")
    return bb, add_lora(bb, dropout=0.0)


def _counted(net, batch, backward: bool) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        if backward:
            batch_loss(net, batch, False).backward()
        else:
            with torch.no_grad():
                batch_loss(net, batch, False)
    return counter.get_total_flops()


def test_shapes_of_a_lora_model(eager_lora):
    bb, net = eager_lora
    shapes = model_shapes(net)
    d, ffn, kv = 64, 128, 32                      # tiny-llama: 4 heads of 16, 2 key-value heads
    assert shapes.frozen == 2 * (2 * d * d + 2 * d * kv + 3 * d * ffn)
    assert shapes.lora == 2 * 2 * 8 * (d + d) // 2 + 2 * 8 * (d + kv)    # q: 8(64+64), v: 8(64+32)
    assert shapes.head == d * len(bb.tokenizer) and shapes.layers == 2 and shapes.attention_width == d
    assert model_shapes(bb.model).lora == shapes.lora                      # through the PEFT wrapper


def test_forward_count_is_torch_s_count_for_one_sequence(eager_lora):
    bb, net = eager_lora
    enc = Encoder(bb.tokenizer, False, 128, 8)
    batch = enc.train_batch([Example("1", "Definition: name the topic. Text: goal!\nAnswer:", "Sports")])
    ours = batch_flops(model_shapes(net), batch["attention_mask"].sum(1).tolist(),
                       labelled_positions_of(batch["labels"]), backward=False)
    assert ours["backward"] == 0 and ours["total"] == _counted(net, batch, backward=False)


def test_backward_count_adds_the_lora_backward_pass(eager_lora):
    """Torch skips the first layer's input gradient and, there, the gradient of the keys (no
    adapter on k_proj, the embedding frozen): a few % of a two-layer model, counted here."""
    bb, net = eager_lora
    enc = Encoder(bb.tokenizer, False, 128, 8)
    batch = enc.train_batch([Example("1", "Definition: name the topic. Text: goal!\nAnswer:", "Sports")])
    ours = batch_flops(model_shapes(net), batch["attention_mask"].sum(1).tolist(),
                       labelled_positions_of(batch["labels"]), backward=True)["total"]
    counted = _counted(net, batch, backward=True)
    net.zero_grad(set_to_none=True)
    assert counted < ours < 1.1 * counted
    full = 3 * _counted(net, batch, backward=False)            # 6 N T: what full fine-tuning costs
    assert ours < 0.8 * full


def test_padding_is_not_counted(eager_lora):
    bb, net = eager_lora
    enc = Encoder(bb.tokenizer, False, 128, 8)
    batch = enc.train_batch([Example("1", "a short one\nAnswer:", "yes"),
                             Example("2", "a much, much longer prompt than the first\nAnswer:", "no")])
    lengths = batch["attention_mask"].sum(1).tolist()
    useful = batch_flops(model_shapes(net), lengths, labelled_positions_of(batch["labels"]), False)
    assert useful["total"] < _counted(net, batch, backward=False)
    assert labelled_positions_of(batch["labels"]) == 5 + 4      # " yes", " no" (bytes) + EOS


def test_smollm2_shapes_and_a_main_step_count():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True)
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    shapes = model_shapes(model)
    assert (shapes.frozen, shapes.head, shapes.layers, shapes.attention_width) == \
        (106_168_320, 28_311_552, 30, 576)
    step = batch_flops(shapes, [126] * 8, 8 * 3, backward=True)
    assert step["total"] == pytest.approx(4 * 106_168_320 * 8 * 126, rel=0.07)   # about 4 N T


def test_encoder_decoder_models_are_refused():
    bb = load_backbone("tiny-t5")
    with pytest.raises(ValueError, match="decoder-only"):
        model_shapes(bb.model)
