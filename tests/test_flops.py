"""The FLOP count of a LoRA pass (aimmerging.flops) against torch's own operator counter."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from datapaths import DATA_ROOT

from aimmerging import bench
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


@pytest.mark.skipif(not (DATA_ROOT / "data_longsequence").is_dir(), reason="benchmark data not present")
@pytest.mark.timeout(240)
def test_the_flop_meter_counts_each_phase_of_a_real_run(tmp_path, monkeypatch):
    """The benchmarks' FLOP meter (benchmarks/_flops.py) on a real run: the phases that ran are
    counted, as the FLOP formula gives them (an Accelerator in this process: after test_clipping)."""
    import torch

    monkeypatch.setenv("AIMMERGING_BENCH_DATA", str(DATA_ROOT))
    common, flops = bench.load_benchmark("_common"), bench.load_benchmark("_flops")
    cfg = common.make_config(["model.name=tiny-llama", "method.name=aimmerging",
                              "data.tasks=[dbpedia,amazon]", "data.n_train=16", "data.n_test=1",
                              "eval.max_new_tokens=1", "train.epochs=1", "train.max_steps_per_task=2",
                              "method.s_init=1", "method.s_min=1", "method.skip_idle_rehearsal=false"])
    passes, seen = [], []

    def instrument(tr):
        common.time_calls(tr.passes, "history_loss", passes)
        inner = tr.loss_on                                     # outside the meter's wrapper

        def loss_on(examples, *a, **k):
            seen.append((list(examples), torch.is_grad_enabled()))
            return inner(examples, *a, **k)

        tr.loss_on = loss_on

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = common.run_trainer(cfg, tmp_path / "run", instrument=instrument)
    finally:
        torch.set_num_threads(threads)
    meter, m, tr = res["flops"], res["metrics"], res["trainer"]
    assert meter.calls["main"] == m["counters"]["train_steps"] == 4
    assert meter.calls["history"] == len(passes) == 2           # the second task's steps
    assert meter.calls["rehearsal"] == m["counters"]["rehearsal_steps"] > 0
    expected = {True: 0.0, False: 0.0}
    for examples, grad in seen:
        enc = tr.encoder.encode(examples)
        expected[grad] += batch_flops(meter.shapes, [len(e.prompt) + len(e.answer) for e in enc],
                                      sum(len(e.answer) for e in enc), backward=grad)["total"]
    assert meter.flop["history"] == pytest.approx(expected[False])
    assert meter.flop["main"] + meter.flop["rehearsal"] == pytest.approx(expected[True])
    before = dict(meter.flop)
    tr.passes.history_loss(("after", 0))                       # after the run: not counted
    assert dict(meter.flop) == before
    fig = flops.figures(meter, m["timing_seconds"], m["counters"], {"float32_flop_per_s": 1e12})
    for phase in ("main", "history", "rehearsal"):
        assert set(fig[phase]) >= {"flop", "seconds", "flop_per_s", "fraction_of_float32_peak"}
        assert fig[phase]["fraction_of_float32_peak"] == pytest.approx(fig[phase]["flop_per_s"] / 1e12)
    assert "GFLOP/s" in flops.describe(fig)
