"""Tests of aimmerging.controller against SPEC.md ("Merge controller" and the
`reference_code` variant). Each hand trace states its numbers in comments."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aimmerging.controller import (
    ControllerConfig,
    ControllerConfigError,
    MergeController,
    MergePlan,
    round_half_up,
)


# --------------------------------------------------------------------- helpers
def make(**kwargs) -> MergeController:
    return MergeController(ControllerConfig(**kwargs))


def feed(ctl: MergeController, losses) -> list[bool]:
    """Observe each loss; return observe()'s answers."""
    return [ctl.observe(x) for x in losses]


def run_to_merge(ctl: MergeController, loss: float = 1.0, limit: int = 10_000) -> int:
    """Observe a constant loss until observe() returns True; return n at the merge."""
    for _ in range(limit):
        if ctl.observe(loss):
            return ctl.steps_since_merge
    raise AssertionError("no merge")


def merges_with_lambdas(ctl: MergeController, lambdas, *, scheduled: bool = False):
    """Run one merge per Lambda with a constant loss 1.0 (threshold 2.0: no crossing,
    so the merge comes at 2S, forced in reference_code) and l1 chosen so that
    Lambda = l1 / S' (paper) or l1 / S (reference_code, scheduled=True)."""
    plans = []
    for lam in lambdas:
        s = ctl.interval
        n = run_to_merge(ctl)
        plans.append(ctl.on_merge(lam * (s if scheduled else n)))
    return plans


# ------------------------------------------------------ rule 1-2: calibration
@pytest.mark.parametrize(
    "s_init, expected_c",
    [(1, 1), (2, 1), (3, 2), (4, 2), (8, 5), (9, 6), (100, 66)],
)
def test_calibration_window_length(s_init, expected_c):
    # c = max(1, floor(2S/3)): S=1 -> max(1, 0) = 1; S=8 -> floor(5.33) = 5; S=100 -> 66
    ctl = make(s_init=s_init, s_min=1)
    assert ctl.calibration_length == expected_c
    for i in range(expected_c - 1):
        ctl.observe(1.0)
        assert ctl.threshold is None
    ctl.observe(1.0)
    assert ctl.threshold == 2.0  # gamma_forget 2.0 * mean(1.0)


def test_threshold_is_gamma_times_mean_of_calibration():
    # S=8 -> c=5; losses 1..5, mean 3.0, gamma 2.0 -> delta 6.0, set at n=5.
    ctl = make(s_init=8)
    assert feed(ctl, [1.0, 2.0, 3.0, 4.0]) == [False] * 4
    assert ctl.threshold is None
    ctl.observe(5.0)
    assert ctl.threshold == pytest.approx(6.0)
    # gamma_forget 1.5: delta = 1.5 * 3.0 = 4.5
    ctl2 = make(s_init=8, gamma_forget=1.5)
    feed(ctl2, [1.0, 2.0, 3.0, 4.0, 5.0])
    assert ctl2.threshold == pytest.approx(4.5)


def test_activation_requires_loss_strictly_above_threshold():
    # S=8: 5 calibration steps at 1.0 -> delta 2.0. Step 6 at 2.0 (== delta): no
    # activation; step 7 at 2.5: F = 1. Losses during calibration never activate.
    ctl = make(s_init=8)
    feed(ctl, [1.0] * 5)
    ctl.observe(2.0)
    assert ctl.activations == 0
    ctl.observe(2.5)
    assert ctl.activations == 1


def test_high_losses_during_calibration_do_not_activate():
    # S=8: steps 1-5 are calibration even at loss 100: F stays 0, no merge.
    ctl = make(s_init=8)
    assert feed(ctl, [100.0] * 5) == [False] * 5
    assert ctl.activations == 0
    assert ctl.threshold == 200.0


# ------------------------------------------------------------ rule 3: timing
def test_early_merge_when_f_max_reached_before_s():
    # S=16 -> c = floor(32/3) = 10; 10 steps at 1.0 -> delta 2.0.
    # Steps 11, 12 at 5.0 -> F=1, 2 (n < S, F < 3: no merge); step 13 -> F=3 -> merge.
    ctl = make(s_init=16)
    assert feed(ctl, [1.0] * 10) == [False] * 10
    assert feed(ctl, [5.0, 5.0]) == [False, False]
    assert ctl.observe(5.0) is True
    assert ctl.merge_due
    plan = ctl.on_merge(26.0)
    # S' = 13, Lambda = 26 / 13 = 2.0; no pair -> P_new = 0.5; P_past = 3/3 = 1
    # alpha_new = 0.5 / 1.5 = 1/3, alpha_past = 2/3; rehearsal = ceil(13/2) = 7
    assert plan.interval_run == 13
    assert plan.lambda_ == pytest.approx(2.0)
    assert plan.learning_signal == plan.lambda_
    assert plan.alpha_new == pytest.approx(1 / 3)
    assert plan.alpha_past == pytest.approx(2 / 3)
    assert plan.rehearsal_steps == 7
    assert plan.activations == 3
    assert plan.threshold == pytest.approx(2.0)
    assert (plan.up, plan.down) == (0, 0)
    assert plan.next_interval == 16  # cold start
    assert plan.rehearsal_uses_main_optimizer is False
    assert not plan.skip_rehearsal
    # state reset (rule 6)
    assert ctl.steps_since_merge == 0 and ctl.activations == 0
    assert ctl.threshold is None and not ctl.merge_due
    assert ctl.history == (2.0,)


def test_merge_on_time_with_one_activation():
    # S=8, delta 2.0 after 5 steps. Step 6 at 3.0 -> F=1 (n=6 < 8, F < 3: wait);
    # steps 7 and 8 at 1.0; at n=8 >= S with F=1 -> merge.
    ctl = make(s_init=8)
    feed(ctl, [1.0] * 5)
    assert feed(ctl, [3.0, 1.0]) == [False, False]
    assert ctl.observe(1.0) is True
    plan = ctl.on_merge(16.0)
    # Lambda = 16/8 = 2; P_new = 0.5 (no pair), P_past = 1/3
    # alpha_new = 0.5 / (0.5 + 1/3) = 0.6, alpha_past = 0.4; rehearsal ceil(8/2) = 4
    assert plan.interval_run == 8
    assert plan.alpha_new == pytest.approx(0.6)
    assert plan.alpha_past == pytest.approx(0.4)
    assert plan.rehearsal_steps == 4
    assert plan.activations == 1


def test_merge_on_time_with_two_activations():
    # S=8: steps 6, 7 at 3.0 -> F=2 (< F_max=3, n < 8: no early merge); n=8 -> merge.
    # P_new 0.5, P_past 2/3 -> alpha_new = 0.5 / (7/6) = 3/7, alpha_past = 4/7.
    ctl = make(s_init=8)
    feed(ctl, [1.0] * 5)
    assert feed(ctl, [3.0, 3.0, 1.0]) == [False, False, True]
    plan = ctl.on_merge(8.0)
    assert plan.activations == 2
    assert plan.alpha_new == pytest.approx(3 / 7)
    assert plan.alpha_past == pytest.approx(4 / 7)


def test_merge_deferred_until_first_activation():
    # S=8: no activation at n = 8, 9, 10 (loss 1.0 <= 2.0): deferred.
    # Step 11 at 3.0 -> F=1 and n >= S -> merge; S' = 11.
    ctl = make(s_init=8)
    assert feed(ctl, [1.0] * 10) == [False] * 10
    assert ctl.observe(3.0) is True
    plan = ctl.on_merge(22.0)
    # Lambda divides by S' = 11 (not S = 8): 22 / 11 = 2.0; rehearsal ceil(11/2) = 6
    assert plan.interval_run == 11
    assert plan.lambda_ == pytest.approx(2.0)
    assert plan.rehearsal_steps == 6


def test_deferral_limit_at_2s():
    # S=8, loss never above delta = 2.0: merge exactly at n = 2S = 16.
    ctl = make(s_init=8)
    assert feed(ctl, [1.0] * 15) == [False] * 15
    assert ctl.observe(1.0) is True
    plan = ctl.on_merge(32.0)
    # F=0 -> P_past = 0; P_new = 0.5 -> alpha (1, 0): rehearsal may be skipped.
    assert plan.interval_run == 16
    assert plan.lambda_ == pytest.approx(2.0)
    assert (plan.alpha_new, plan.alpha_past) == (1.0, 0.0)
    assert plan.skip_rehearsal
    assert plan.rehearsal_steps == 8
    assert plan.activations == 0


def test_s_equal_one_merges_at_two_steps():
    # S=1 (s_min=1): c = 1 (step 1 calibrates), n=1 >= S but F=0; 2S = 2 -> merge at n=2.
    # rehearsal = max(1, ceil(2/2)) = 1.
    ctl = make(s_init=1, s_min=1)
    assert feed(ctl, [1.0, 1.0]) == [False, True]
    assert ctl.on_merge(1.0).rehearsal_steps == 1


# --------------------------------------------- on_merge: cold start and S update
def test_cold_start_then_shrink_on_rising_lambda():
    # Constant loss 1.0 -> merges at 2S = 16. Lambda = l1/16 = 1, 2, 3, 4.
    ctl = make(s_init=8)
    p1, p2, p3, p4 = merges_with_lambdas(ctl, [1.0, 2.0, 3.0, 4.0])
    # merge 1: no pair -> P_new 0.5, P_past 0 -> (1, 0); S kept (len(H)=1 <= 3)
    assert (p1.up, p1.down, p1.next_interval) == (0, 0, 8)
    assert (p1.alpha_new, p1.alpha_past) == (1.0, 0.0)
    # merge 2: 1 pair (1->2 up) -> P_new = 1; still cold (len(H)=2)
    assert (p2.up, p2.down, p2.next_interval) == (1, 0, 8)
    # merge 3: 2 pairs both up; len(H)=3 <= L_w: kept
    assert (p3.up, p3.down, p3.next_interval) == (2, 0, 8)
    # merge 4: len(H)=4 > 3; 3 pairs up; S <= 64 -> gamma_down = 1.5:
    # S = max(2, round_half_up(8 / 1.5 = 5.33)) = 5
    assert (p4.up, p4.down, p4.next_interval) == (3, 0, 5)
    assert ctl.interval == 5
    assert ctl.history == (1.0, 2.0, 3.0, 4.0)
    # next interval: S=5 -> c = floor(10/3) = 3, 2S = 10 -> merge at n = 10
    assert ctl.calibration_length == 3
    assert run_to_merge(ctl) == 10
    # Lambda 5 -> window (2->3, 3->4, 4->5) all up -> S = round_half_up(5/1.5=3.33) = 3
    p5 = ctl.on_merge(50.0)
    assert (p5.up, p5.interval_run, p5.next_interval) == (3, 10, 3)
    # rehearsal ceil(10/2) = 5
    assert p5.rehearsal_steps == 5


def test_grow_on_falling_lambda():
    # Lambda 4, 3, 2, 1: at merge 4, down = 3 -> S = min(128, round(8 * 2)) = 16.
    ctl = make(s_init=8)
    plans = merges_with_lambdas(ctl, [4.0, 3.0, 2.0, 1.0])
    assert [p.next_interval for p in plans] == [8, 8, 8, 16]
    assert (plans[-1].up, plans[-1].down) == (0, 3)
    # P_new = 0/3 = 0 and F = 0 -> both zero -> 0.5 / 0.5
    assert (plans[-1].alpha_new, plans[-1].alpha_past) == (0.5, 0.5)
    # S=16 -> merge at 2S = 32
    assert run_to_merge(ctl) == 32


def test_cold_start_follows_window_length():
    # window=1: update once len(H) > 1, i.e. from merge 2; 1 pair (1->2 up) -> S=5.
    ctl = make(s_init=8, window=1)
    plans = merges_with_lambdas(ctl, [1.0, 2.0])
    assert [p.next_interval for p in plans] == [8, 5]


@pytest.mark.parametrize(
    "s_init, lambdas, expected",
    [
        # S=100 > 64: gamma_down = 2 -> 50; gamma_up = 1.5 -> min(128, 150) = 128
        (100, [1, 2, 3, 4], 50),
        (100, [4, 3, 2, 1], 128),
        # S=64 is not > 64: gamma_down 1.5 -> round(42.67) = 43; gamma_up 2 -> 128
        (64, [1, 2, 3, 4], 43),
        (64, [4, 3, 2, 1], 128),
        # S=65 > 64: 65/2 = 32.5 rounds half up to 33 (Python round() would give 32);
        # 65 * 1.5 = 97.5 -> 98
        (65, [1, 2, 3, 4], 33),
        (65, [4, 3, 2, 1], 98),
    ],
)
def test_gamma_switch_above_64(s_init, lambdas, expected):
    ctl = make(s_init=s_init)
    plans = merges_with_lambdas(ctl, [float(x) for x in lambdas])
    assert plans[-1].next_interval == expected


@pytest.mark.parametrize(
    "kwargs, lambdas, expected",
    [
        # S=2 rising: round(2/1.5 = 1.33) = 1 -> clamped to S_min = 2
        ({"s_init": 2}, [1, 2, 3, 4], 2),
        # S=3 rising: 3/1.5 = 2.0 -> 2
        ({"s_init": 3}, [1, 2, 3, 4], 2),
        # S_min = 6: 8/1.5 -> 5 -> clamped to 6
        ({"s_init": 8, "s_min": 6}, [1, 2, 3, 4], 6),
        # S=8 falling with S_max = 10: 16 -> 10
        ({"s_init": 8, "s_max": 10}, [4, 3, 2, 1], 10),
    ],
)
def test_interval_clamps(kwargs, lambdas, expected):
    ctl = make(**kwargs)
    plans = merges_with_lambdas(ctl, [float(x) for x in lambdas])
    assert plans[-1].next_interval == expected


def test_ties_count_for_neither():
    # Lambda 1,1,1,1: merge 4 has up = down = 0 -> S kept at 8.
    # P_new = 0/3 = 0, P_past = 0 (F=0) -> both zero -> alphas 0.5 / 0.5.
    ctl = make(s_init=8)
    plans = merges_with_lambdas(ctl, [1.0, 1.0, 1.0, 1.0])
    last = plans[-1]
    assert (last.up, last.down, last.next_interval) == (0, 0, 8)
    assert (last.alpha_new, last.alpha_past) == (0.5, 0.5)
    # merge 2 already: 1 pair, a tie -> P_new 0 -> 0.5 / 0.5
    assert (plans[1].alpha_new, plans[1].alpha_past) == (0.5, 0.5)


def test_balanced_window_keeps_interval():
    # Lambda 1, 2, 2, 1: pairs up (1->2), tie (2->2), down (2->1) -> up=1, down=1 -> keep.
    # P_new = 1/3, P_past = 0 -> alpha (1, 0).
    ctl = make(s_init=8)
    last = merges_with_lambdas(ctl, [1.0, 2.0, 2.0, 1.0])[-1]
    assert (last.up, last.down, last.next_interval) == (1, 1, 8)
    assert (last.alpha_new, last.alpha_past) == (1.0, 0.0)


def test_window_slides():
    # Lambda 5,1,2,3: merge 4 pairs (down, up, up) -> up 2 > down 1 -> S = 5.
    # Merge 5 (Lambda 4) sees only (1->2, 2->3, 3->4): up = 3, the 5->1 pair left.
    ctl = make(s_init=8)
    plans = merges_with_lambdas(ctl, [5.0, 1.0, 2.0, 3.0, 4.0])
    assert (plans[3].up, plans[3].down, plans[3].next_interval) == (2, 1, 5)
    assert (plans[4].up, plans[4].down) == (3, 0)
    # P_new = 2/3 at merge 4 (F=0): alpha (1, 0)
    assert plans[3].alpha_new == 1.0


def test_p_new_fraction_combines_with_p_past():
    # Merge 1 at 2S (Lambda 1). Merge 2: S=8, step 6 at 3.0 -> F=1, merge at n=8
    # with l1 = 16 -> Lambda 2 (up): P_new = 1/1 = 1, P_past = 1/3
    # -> alpha_new = 1 / (4/3) = 0.75, alpha_past = 0.25.
    ctl = make(s_init=8)
    merges_with_lambdas(ctl, [1.0])
    feed(ctl, [1.0] * 5)
    assert feed(ctl, [3.0, 1.0, 1.0]) == [False, False, True]
    plan = ctl.on_merge(16.0)
    assert plan.up == 1
    assert plan.alpha_new == pytest.approx(0.75)
    assert plan.alpha_past == pytest.approx(0.25)


@pytest.mark.parametrize("s_run, expected", [(1, 1), (2, 1), (7, 4), (8, 4), (13, 7), (16, 8)])
def test_rehearsal_steps_is_ceil_half(s_run, expected):
    # -FS merges exactly every S steps, so S' = S = s_run; rehearsal = max(1, ceil(S'/2)).
    ctl = make(s_init=s_run, s_min=1, use_forgetting_signal=False)
    assert run_to_merge(ctl) == s_run
    assert ctl.on_merge(1.0).rehearsal_steps == expected


def test_round_half_up():
    assert round_half_up(32.5) == 33
    assert round_half_up(2.5) == 3
    assert round_half_up(5.333) == 5
    assert round_half_up(4.667) == 5
    assert round_half_up(97.5) == 98


# ------------------------------------------------------------------ ablations
def test_ablation_no_learning_signal():
    # -LS, S=8: calibration still over c=5 steps (delta 2.0); no S-time rule and no
    # 2S limit: 94 more steps at 1.0 never merge; step 100 at 3.0 -> F=1 -> merge.
    ctl = make(s_init=8, use_learning_signal=False)
    assert not any(feed(ctl, [1.0] * 99))
    assert ctl.threshold == 2.0
    assert ctl.observe(3.0) is True
    plan = ctl.on_merge(100.0)
    # P_new = 0.5, P_past = 1/3 -> 0.6 / 0.4; rehearsal ceil(100/2) = 50; S stays 8
    assert plan.interval_run == 100
    assert plan.alpha_new == pytest.approx(0.6)
    assert plan.alpha_past == pytest.approx(0.4)
    assert plan.rehearsal_steps == 50
    assert plan.next_interval == 8


def test_ablation_no_learning_signal_merges_at_first_activation_and_keeps_s():
    # First activation at n=6 (< S = 8) already merges; rising Lambdas never change S.
    ctl = make(s_init=8, use_learning_signal=False)
    for k in range(6):
        feed(ctl, [1.0] * 5)
        assert ctl.observe(3.0) is True
        plan = ctl.on_merge(6.0 * (k + 1))  # Lambda = k + 1, rising
        assert plan.interval_run == 6
        assert plan.next_interval == 8
        assert plan.alpha_new == pytest.approx(0.6)
    assert ctl.interval == 8
    assert ctl.history == (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)


def test_ablation_no_forgetting_signal():
    # -FS, S=8, f_max=2: losses above delta at steps 6, 7 would merge early at n=7 in
    # the paper variant; -FS merges exactly at n = 8.
    ctl = make(s_init=8, f_max=2, use_forgetting_signal=False)
    assert feed(ctl, [1.0] * 5 + [5.0, 5.0, 5.0]) == [False] * 7 + [True]
    plan = ctl.on_merge(8.0)
    # P_new 0.5 (no pair), P_past = 0.5 -> 0.5 / 0.5; F is still reported (3)
    assert (plan.alpha_new, plan.alpha_past) == (0.5, 0.5)
    assert plan.activations == 3
    # no deferral either: low losses still merge at n = 8
    assert feed(ctl, [1.0] * 8) == [False] * 7 + [True]
    plan = ctl.on_merge(16.0)  # Lambda 2 > 1 -> P_new 1 -> alpha_new = 1/1.5
    assert plan.alpha_new == pytest.approx(2 / 3)
    assert plan.alpha_past == pytest.approx(1 / 3)
    # the learning signal still drives S: Lambdas 1, 2, 3, 4 -> S = 5 after merge 4
    for lam in (3.0, 4.0):
        assert run_to_merge(ctl) == 8
        plan = ctl.on_merge(8 * lam)
    assert plan.next_interval == 5
    assert run_to_merge(ctl, loss=100.0) == 5


def test_ablation_fixed_alphas():
    # +MGM: the early-merge trace of S=16 (merge at n=13) with weights (0.3, 0.7).
    ctl = make(s_init=16, fixed_alphas=(0.3, 0.7))
    assert feed(ctl, [1.0] * 10 + [5.0] * 3)[-1] is True
    plan = ctl.on_merge(26.0)
    assert plan.interval_run == 13
    assert (plan.alpha_new, plan.alpha_past) == (0.3, 0.7)
    assert plan.rehearsal_steps == 7


def test_fixed_alpha_past_zero_skips_rehearsal():
    ctl = make(s_init=8, fixed_alphas=(1.0, 0.0))
    run_to_merge(ctl)
    assert ctl.on_merge(1.0).skip_rehearsal


def test_both_ablations_merge_every_s_init_with_half_weights():
    ctl = make(s_init=8, use_learning_signal=False, use_forgetting_signal=False)
    for lam in (1.0, 2.0, 3.0, 4.0, 5.0):
        assert run_to_merge(ctl, loss=50.0 if lam > 2 else 1.0) == 8
        plan = ctl.on_merge(8 * lam)
        assert (plan.alpha_new, plan.alpha_past, plan.next_interval) == (0.5, 0.5, 8)


# ----------------------------------------------------------- reference_code
def ref(**kwargs) -> MergeController:
    return make(variant="reference_code", **kwargs)


def test_reference_calibration_one_step_longer():
    # S=8: calibration over steps 1 .. floor(16/3)+1 = 6; step 6 at 100 still
    # calibrates: delta = 2 * mean(1,1,1,1,1,100) = 2 * 17.5 = 35. Monitoring from 7.
    ctl = ref(s_init=8)
    assert ctl.calibration_length == 6
    feed(ctl, [1.0] * 5)
    assert ctl.threshold is None
    ctl.observe(100.0)
    assert ctl.activations == 0
    assert ctl.threshold == pytest.approx(35.0)
    ctl.observe(36.0)
    assert ctl.activations == 1


def test_reference_forced_activation_at_2s():
    # S=8, loss never above delta: one activation forced at n=16 -> on-time merge.
    ctl = ref(s_init=8)
    assert feed(ctl, [1.0] * 15) == [False] * 15
    assert ctl.observe(1.0) is True
    plan = ctl.on_merge(16.0)
    # Lambda = l1 / scheduled S = 16 / 8 = 2.0 (the paper variant: 16/16 = 1.0)
    assert plan.interval_run == 16
    assert plan.activations == 1
    assert plan.lambda_ == pytest.approx(2.0)
    # table: F <= 1, S = 8 <= 70 -> (0.6, 0.4); rehearsal = new S = 8, main optimizer
    assert (plan.alpha_new, plan.alpha_past) == (0.6, 0.4)
    assert plan.rehearsal_steps == 8
    assert plan.rehearsal_uses_main_optimizer is True


def test_reference_lambda_uses_scheduled_interval():
    # S=8, c=6: deferral to n=11 (activation at step 11); l1 = 22 -> 22 / 8 = 2.75.
    ctl = ref(s_init=8)
    assert feed(ctl, [1.0] * 10 + [3.0])[-1] is True
    plan = ctl.on_merge(22.0)
    assert plan.interval_run == 11
    assert plan.lambda_ == pytest.approx(2.75)
    assert plan.activations == 1


@pytest.mark.parametrize(
    "s_init, losses, expected_n, expected_alphas",
    [
        # S=16: c = 10 + 1 = 11; steps 12-14 at 5 -> F = 3 at n = 14 < 16: early.
        # F > 1, S <= 70 -> (0.5, 0.5)
        (16, [1.0] * 11 + [5.0] * 3, 14, (0.5, 0.5)),
        # S=100: c = 66 + 1 = 67; steps 68-70 -> F = 3 at n = 70: F > 1, S > 70 -> (0.4, 0.6)
        (100, [1.0] * 67 + [5.0] * 3, 70, (0.4, 0.6)),
        # S=100, no crossing: forced F = 1 at n = 200: F <= 1, S > 70 -> (0.5, 0.5)
        (100, [1.0] * 200, 200, (0.5, 0.5)),
        # S=70 (boundary, <= 70), forced at 140: (0.6, 0.4); S=71: (0.5, 0.5)
        (70, [1.0] * 140, 140, (0.6, 0.4)),
        (71, [1.0] * 142, 142, (0.5, 0.5)),
    ],
)
def test_reference_weight_table(s_init, losses, expected_n, expected_alphas):
    ctl = ref(s_init=s_init)
    out = feed(ctl, losses)
    assert out[-1] is True and not any(out[:-1])
    plan = ctl.on_merge(1.0)
    assert plan.interval_run == expected_n
    assert (plan.alpha_new, plan.alpha_past) == expected_alphas


@pytest.mark.parametrize(
    "kwargs, lambdas, expected",
    [
        # rise: ratio 6/3 = 2 -> int(8 / 2) = 4
        ({"s_init": 8}, [1, 1, 2, 3, 6], 4),
        # tie: ratio 1 -> int(8 / 1) = 8
        ({"s_init": 8}, [1, 1, 1, 1, 1], 8),
        # tie at S=100: 100 >= 64 -> halved -> 50
        ({"s_init": 100}, [1, 1, 1, 1, 1], 50),
        # rise at S=100: ratio 5/4 = 1.25 -> int(80.0) = 80 >= 64 -> 40
        ({"s_init": 100}, [1, 1, 2, 4, 5], 40),
        # rise clamp: ratio 8 -> int(1.0) = 1 -> S_min 2
        ({"s_init": 8}, [1, 1, 1, 1, 8], 2),
        # fall: ratio 2/1 -> int(8 * (2 + 1)) = 24
        ({"s_init": 8}, [4, 4, 3, 2, 1], 24),
        # fall at S=40: ratio 3/2 = 1.5 -> int(40 * 2.5) = 100
        ({"s_init": 40}, [3, 3, 3, 3, 2], 100),
        # fall at S=64 (not < 64): +0.5 -> int(64 * 2.5) = 160 (s_max 200)
        ({"s_init": 64, "s_max": 200}, [4, 4, 4, 4, 2], 160),
        # fall at S=100: int(100 * 2.5) = 250 -> S_max 128
        ({"s_init": 100}, [4, 4, 4, 4, 2], 128),
        # only the last pair counts: 1, 5, 6, 3 -> fall 6 -> 3, ratio 2 -> 24
        # (the paper's window (up, up, down) would shrink S to 5)
        ({"s_init": 8}, [1, 1, 5, 6, 3], 24),
        # cold start is the literal 3 even with window=1: merge 2 keeps S
        ({"s_init": 8, "window": 1}, [1, 2], 8),
        # zero Lambdas: 0 -> 0 is a tie (ratio 1); 0 -> 1 a rise to S_min; 1 -> 0 S_max
        ({"s_init": 8}, [0, 0, 0, 0, 0], 8),
        ({"s_init": 8}, [0, 0, 0, 0, 1], 2),
        ({"s_init": 8}, [1, 1, 1, 1, 0], 128),
    ],
)
def test_reference_interval_rules(kwargs, lambdas, expected):
    ctl = ref(**kwargs)
    plans = merges_with_lambdas(ctl, [float(x) for x in lambdas], scheduled=True)
    # cold start: the code reads the 3 earlier Lambdas before appending, so S first moves at
    # the 5th merge
    assert all(p.next_interval == kwargs["s_init"] for p in plans[:4])
    assert plans[-1].next_interval == expected
    assert plans[-1].rehearsal_steps == expected
    assert ctl.interval == expected


def test_reference_cold_start_lasts_four_merges():
    # a steep fall at the 4th merge (ratio 4) would give int(8 * 5) = 40; cold start keeps 8
    ctl = ref(s_init=8)
    plans = merges_with_lambdas(ctl, [4.0, 4.0, 4.0, 1.0], scheduled=True)
    assert [p.next_interval for p in plans] == [8, 8, 8, 8]
    plan = merges_with_lambdas(ctl, [0.5], scheduled=True)[0]   # 5th merge: fall 1 -> 0.5
    assert plan.next_interval == 24                               # int(8 * (2 + 1))


@pytest.mark.parametrize("variant, activations", [("paper", 0), ("reference_code", 1)])
def test_activation_at_the_threshold(variant, activations):
    # S=8: paper c = 5, reference c = 6; delta = 2 * 1 = 2; a loss of exactly 2 activates
    # only reference_code (l >= delta), not the paper (l > delta)
    ctl = make(variant=variant, s_init=8)
    feed(ctl, [1.0] * ctl.calibration_length)
    assert ctl.threshold == 2.0
    ctl.observe(2.0)
    assert ctl.activations == activations


def test_reference_up_down_report_last_pair():
    ctl = ref(s_init=8)
    plans = merges_with_lambdas(ctl, [1.0, 5.0, 6.0, 3.0], scheduled=True)
    assert [(p.up, p.down) for p in plans] == [(0, 0), (1, 0), (1, 0), (0, 1)]


@pytest.mark.parametrize("flag", ["use_learning_signal", "use_forgetting_signal"])
def test_reference_rejects_ablations(flag):
    with pytest.raises(ValueError, match=flag):
        ControllerConfig(variant="reference_code", **{flag: False})


def test_reference_with_fixed_alphas():
    ctl = ref(s_init=8, fixed_alphas=(0.2, 0.8))
    run_to_merge(ctl)
    plan = ctl.on_merge(1.0)
    assert (plan.alpha_new, plan.alpha_past) == (0.2, 0.8)


# ------------------------------------------------------ validation and errors
@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"s_min": 0, "s_init": 8}, "s_min"),
        ({"s_min": 10, "s_max": 5, "s_init": 5}, "s_min"),
        ({"s_init": 1}, "s_init"),
        ({"s_init": 200}, "s_init"),
        ({"s_init": 8.0}, "s_init"),
        ({"window": 0}, "window"),
        ({"f_max": 0}, "f_max"),
        ({"gamma_forget": 0.0}, "gamma_forget"),
        ({"gamma_forget": -1.0}, "gamma_forget"),
        ({"gamma_forget": float("nan")}, "gamma_forget"),
        ({"gamma_forget": float("inf")}, "gamma_forget"),
        ({"fixed_alphas": (0.5,)}, "fixed_alphas"),
        ({"fixed_alphas": (0.5, 0.3, 0.2)}, "fixed_alphas"),
        ({"fixed_alphas": (1.2, 0.0)}, "fixed_alphas"),
        ({"fixed_alphas": (0.5, -0.1)}, "fixed_alphas"),
        ({"fixed_alphas": (float("nan"), 0.5)}, "fixed_alphas"),
        ({"variant": "authors"}, "variant"),
        ({"use_learning_signal": 0}, "use_learning_signal"),
    ],
)
def test_config_validation_names_field(kwargs, field):
    with pytest.raises(ValueError) as info:
        ControllerConfig(**kwargs)
    assert field in str(info.value)
    assert isinstance(info.value, ControllerConfigError)
    assert info.value.field == field


def test_config_defaults_and_round_trip():
    cfg = ControllerConfig()
    assert (cfg.s_init, cfg.window, cfg.s_min, cfg.s_max) == (8, 3, 2, 128)
    assert (cfg.gamma_forget, cfg.f_max, cfg.variant) == (2.0, 3, "paper")
    assert cfg.fixed_alphas is None
    cfg2 = ControllerConfig(fixed_alphas=[0.25, 0.75])
    assert cfg2.fixed_alphas == (0.25, 0.75)
    assert ControllerConfig.from_dict(json.loads(json.dumps(cfg2.to_dict()))) == cfg2
    assert MergeController().config == cfg


def test_on_merge_without_due_merge_raises():
    ctl = make()
    with pytest.raises(RuntimeError):
        ctl.on_merge(1.0)
    ctl.observe(1.0)  # n=1: no merge
    with pytest.raises(RuntimeError):
        ctl.on_merge(1.0)
    run_to_merge(ctl)
    ctl.on_merge(1.0)
    with pytest.raises(RuntimeError):  # already consumed
        ctl.on_merge(1.0)


def test_observe_while_merge_due_raises():
    ctl = make()
    run_to_merge(ctl)
    with pytest.raises(RuntimeError):
        ctl.observe(1.0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "x", None])
def test_bad_history_loss_raises_and_leaves_state(bad):
    ctl = make()
    ctl.observe(1.0)
    with pytest.raises(ValueError):
        ctl.observe(bad)
    assert ctl.steps_since_merge == 1


@pytest.mark.parametrize("bad", [float("nan"), -1.0, float("inf")])
def test_bad_l1_raises_and_merge_stays_due(bad):
    ctl = make()
    run_to_merge(ctl)
    with pytest.raises(ValueError):
        ctl.on_merge(bad)
    assert ctl.merge_due
    assert ctl.history == ()
    ctl.on_merge(0.0)  # zero change is allowed
    assert ctl.history == (0.0,)


def test_reset_restores_initial_state():
    ctl = make(s_init=8)
    merges_with_lambdas(ctl, [1.0, 2.0, 3.0, 4.0])
    feed(ctl, [1.0] * 7)
    assert ctl.interval == 5
    ctl.reset()
    assert ctl.interval == 8 and ctl.history == () and ctl.steps_since_merge == 0
    assert ctl.activations == 0 and ctl.threshold is None and not ctl.merge_due


def test_history_is_a_copy():
    ctl = make()
    merges_with_lambdas(ctl, [1.0])
    h = ctl.history
    assert isinstance(h, tuple)
    with pytest.raises(AttributeError):
        ctl.history = ()  # type: ignore[misc]


def test_plan_is_frozen():
    ctl = make()
    plan = merges_with_lambdas(ctl, [1.0])[0]
    assert isinstance(plan, MergePlan)
    with pytest.raises(AttributeError):
        plan.alpha_new = 0.0  # type: ignore[misc]
    assert plan.to_dict()["lambda_"] == 1.0


def test_state_dict_is_json_and_refuses_other_config():
    ctl = make(s_init=8)
    feed(ctl, [1.0] * 6)
    state = json.loads(json.dumps(ctl.state_dict()))
    other = make(s_init=16)
    with pytest.raises(ValueError):
        other.load_state_dict(state)
    with pytest.raises(ValueError):
        other.load_state_dict({"format": "something else"})
    same = make(s_init=8)
    same.load_state_dict(state)
    assert same.state_dict() == ctl.state_dict()


def test_state_dict_mid_merge():
    # A checkpoint taken between observe() -> True and on_merge() restores the due merge.
    ctl = make(s_init=8)
    run_to_merge(ctl)
    other = make(s_init=8)
    other.load_state_dict(json.loads(json.dumps(ctl.state_dict())))
    assert other.merge_due
    assert other.on_merge(16.0) == ctl.on_merge(16.0)


def test_module_does_not_import_torch():
    code = (
        "import sys, aimmerging.controller\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert 'numpy' not in sys.modules, 'numpy imported'\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


# ------------------------------------------------------------- properties
@st.composite
def configs(draw):
    variant = draw(st.sampled_from(["paper", "reference_code"]))
    s_min = draw(st.integers(1, 8))
    s_max = draw(st.integers(s_min, 140))
    s_init = draw(st.integers(s_min, min(s_max, 40)))
    kwargs = dict(
        s_init=s_init,
        s_min=s_min,
        s_max=s_max,
        window=draw(st.integers(1, 5)),
        f_max=draw(st.integers(1, 4)),
        gamma_forget=draw(st.floats(0.5, 3.0)),
        variant=variant,
    )
    if variant == "paper":
        kwargs["use_learning_signal"] = draw(st.booleans())
        kwargs["use_forgetting_signal"] = draw(st.booleans())
    if draw(st.booleans()):
        kwargs["fixed_alphas"] = (draw(st.floats(0, 1)), draw(st.floats(0, 1)))
    return ControllerConfig(**kwargs)


losses_st = st.lists(st.floats(0.0, 10.0), min_size=1, max_size=400)
l1s_st = st.lists(st.floats(0.0, 1000.0), min_size=1, max_size=20)


def drive(ctl: MergeController, losses, l1s):
    """Feed losses; at each merge use the next l1 (cyclic). Return the event log."""
    log = []
    k = 0
    for x in losses:
        due = ctl.observe(x)
        if due:
            plan = ctl.on_merge(l1s[k % len(l1s)])
            k += 1
            log.append(("merge", plan))
        else:
            log.append(("step",))
    return log


@settings(max_examples=150, deadline=None)
@given(cfg=configs(), losses=losses_st, l1s=l1s_st)
def test_properties_of_every_decision(cfg, losses, l1s):
    ctl = MergeController(cfg)
    k = 0
    for x in losses:
        s_before = ctl.interval
        c = ctl.calibration_length
        due = ctl.observe(x)
        assert cfg.s_min <= ctl.interval <= cfg.s_max
        n = ctl.steps_since_merge
        assert (ctl.threshold is None) == (n < c)
        if not due:
            continue
        # no merge before the calibration ends
        assert n >= c and ctl.threshold is not None
        if cfg.use_learning_signal and cfg.use_forgetting_signal:
            assert n <= 2 * s_before  # the 2S limit (forced activation in reference_code)
        if not cfg.use_forgetting_signal:
            assert n == s_before
        plan = ctl.on_merge(l1s[k % len(l1s)])
        k += 1
        assert plan.interval_run == n
        assert cfg.s_min <= plan.next_interval <= cfg.s_max
        assert plan.next_interval == ctl.interval
        if not cfg.use_learning_signal:
            assert plan.next_interval == cfg.s_init
        assert plan.rehearsal_steps >= 1
        assert 0.0 <= plan.alpha_new <= 1.0 and 0.0 <= plan.alpha_past <= 1.0
        if cfg.fixed_alphas is None:
            assert math.isclose(plan.alpha_new + plan.alpha_past, 1.0, rel_tol=1e-12)
        else:
            assert (plan.alpha_new, plan.alpha_past) == cfg.fixed_alphas
        if cfg.variant == "paper":
            assert plan.rehearsal_steps == max(1, math.ceil(n / 2))
            assert plan.lambda_ == pytest.approx(l1s[(k - 1) % len(l1s)] / n)
        else:
            assert plan.rehearsal_steps == plan.next_interval
        assert len(ctl.history) == k


@settings(max_examples=100, deadline=None)
@given(
    cfg=configs(),
    losses=losses_st,
    l1s=l1s_st,
    split=st.floats(0.0, 1.0),
)
def test_state_dict_round_trip_gives_identical_future(cfg, losses, l1s, split):
    cut = int(split * len(losses))
    a = MergeController(cfg)
    full = drive(a, losses, l1s)

    b = MergeController(cfg)
    prefix = drive(b, losses[:cut], l1s)
    merges_done = sum(1 for e in prefix if e[0] == "merge")
    state = json.loads(json.dumps(b.state_dict()))
    c = MergeController(cfg)
    c.load_state_dict(state)
    assert c.state_dict() == b.state_dict()
    rotated = l1s[merges_done % len(l1s):] + l1s[: merges_done % len(l1s)]
    suffix = drive(c, losses[cut:], rotated)
    assert prefix + suffix == full
    assert c.state_dict() == a.state_dict()
