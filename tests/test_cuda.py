"""What only a CUDA GPU can check: fp16 gradients through a real GradScaler, bf16 and fp16 runs,
generation, shared prefixes and the bfloat16 probe on the device.

Marked ``cuda`` and skipped without a CUDA device; ``scripts/gpu_check.sh`` runs them
(``pytest -m cuda``). Tiny models and the built-in demo stream: no benchmark data needed.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from runhelp import ROOT, env

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
              pytest.mark.timeout(300)]

DEMO = ["data.dir=null", "data.tasks=[demo_sentiment,demo_topic]", "data.n_train=32",
        "data.n_test=8", "train.epochs=1", "eval.max_new_tokens=3"]


def _grads(tmp_path, precision: str, norm: str = "none") -> dict:
    from safetensors.torch import load_file

    out = tmp_path / f"{precision}_{norm}.safetensors"
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "cuda_grads.py"), precision, str(out), norm],
                          capture_output=True, text=True, timeout=240, cwd=ROOT, env=env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return load_file(str(out))


def _flat(grads: dict) -> torch.Tensor:
    return torch.cat([g.flatten() for k, g in sorted(grads.items()) if not k.startswith("__")])


@pytest.mark.parametrize("norm", ["none", "1e-3"])
def test_fp16_gradients_reach_adamw_unscaled_and_clipped(tmp_path, norm):
    """The issue's fp16 defect: unscaled twice, the gradients ended 2**16 too small."""
    ref, half = _grads(tmp_path, "no", norm), _grads(tmp_path, "fp16", norm)
    assert half["__device_is_cuda__"].item() == 1.0 and half["__scale__"].item() > 1.0
    a, b = _flat(ref), _flat(half)
    assert a.norm() > 0
    assert b.norm() / a.norm() == pytest.approx(1.0, rel=0.02)
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.999
    if norm != "none":
        assert b.norm() == pytest.approx(1e-3, rel=0.02)       # clipping acts on true gradients


def test_bf16_gradients_are_those_of_float32_up_to_bfloat16(tmp_path):
    ref, low = _grads(tmp_path, "no"), _grads(tmp_path, "bf16")
    a, b = _flat(ref), _flat(low)
    assert low["__scale__"].item() == 1.0                      # no loss scale in bf16
    assert b.norm() / a.norm() == pytest.approx(1.0, rel=0.05)
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.99


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_a_mixed_precision_run_on_the_gpu_finishes(tmp_path, precision):
    from runhelp import SMOKE, aimmerging, check_ok, sets

    out = tmp_path / "run"
    check_ok(aimmerging("run", SMOKE, *sets(DEMO + [f"train.mixed_precision={precision}"]),
                        "--output", out, "--quiet"))
    log = (out / "run.log").read_text()
    assert f"mixed precision: {precision} (train.mixed_precision: {precision})" in log
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["counters"]["train_steps"] > 0 and metrics["machine"]["gpu"]
    losses = [float(line.split(",")[3]) for line in (out / "signals.csv").read_text().splitlines()[1:]]
    assert losses and all(x == x and abs(x) < 1e4 for x in losses)


def test_auto_precision_on_the_gpu_is_native_bfloat16_or_fp16():
    from aimmerging.models import resolve_mixed_precision
    from aimmerging.precision import native_bfloat16

    assert resolve_mixed_precision("auto") == ("bf16" if native_bfloat16("cuda") else "fp16")


def test_the_bfloat16_probe_runs_on_the_gpu(tmp_path, monkeypatch):
    """Structure only: two positive rates and a decision (no timing is asserted)."""
    import aimmerging.precision as precision

    monkeypatch.setenv("AIMMERGING_CACHE", str(tmp_path))
    monkeypatch.setattr(precision, "_MEASURED", {})
    record = precision.bfloat16_speedup("cuda", (256, 576, 1536))
    assert record["float32_flop_per_s"] > 0 and record["bfloat16_flop_per_s"] > 0
    assert isinstance(precision.bfloat16_pays("cuda", (256, 576, 1536)), bool)
    assert "cuda" in precision.describe_bfloat16("cuda", (256, 576, 1536))


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-t5"])
def test_batched_generation_on_the_gpu_matches_one_at_a_time(name):
    from aimmerging.batching import Encoder
    from aimmerging.evaluation import generate
    from aimmerging.models import load_backbone

    bb = load_backbone(name)
    model = bb.model.to("cuda")
    enc = Encoder(bb.tokenizer, bb.is_seq2seq, max_input_tokens=64)
    inputs = ["Definition: the topic. Text: goal!\nAnswer:", "",
              "Definition: the topic. Text: a much longer text about rates\nAnswer:"]
    batched = generate(model, enc, inputs, batch_size=3, max_new_tokens=5)
    single = [generate(model, enc, [x], batch_size=1, max_new_tokens=5)[0] for x in inputs]
    assert batched == single


def test_shared_prefix_loss_on_the_gpu_is_the_plain_loss():
    from aimmerging.batching import Encoder
    from aimmerging.data.formats import Example
    from aimmerging.losses import batch_loss
    from aimmerging.models import add_lora, load_backbone
    from aimmerging.prefix import grouped_loss

    bb = load_backbone("tiny-llama")
    net = add_lora(bb, dropout=0.0).to("cuda").eval()
    definition = "Definition: pick the topic of the sentence from the list. "
    examples = [Example(str(i), definition + s + "\nAnswer:", a) for i, (s, a) in
                enumerate([("goal!", "sport"), ("rates rose", "finance"), ("a comet", "science")])]
    batch = {k: v.to("cuda") for k, v in
             Encoder(bb.tokenizer, False, max_input_tokens=128).train_batch(examples).items()}
    with torch.no_grad():
        assert grouped_loss(net, batch).item() == pytest.approx(batch_loss(net, batch, False).item(),
                                                                rel=1e-4)
