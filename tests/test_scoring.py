"""Exact match, ROUGE-L with stemming, and task scores in percent."""

from __future__ import annotations

import pytest

from aimmerging.scoring import exact_match, normalize_metric, rouge_l, score, score_one


def test_exact_match_strips_and_lowercases() -> None:
    assert exact_match(" Good \n", "good") == 1.0
    assert exact_match("Science or Technology", "science or technology") == 1.0
    assert exact_match("Good.", "Good") == 0.0
    assert exact_match("", "") == 1.0
    assert exact_match(None, "a") == 0.0  # type: ignore[arg-type]


def test_rouge_l_by_hand() -> None:
    # identical -> 1
    assert rouge_l("book PartOf library", "book PartOf library") == pytest.approx(1.0)
    # stemming: "the cats are running" -> the cat are run; "the cat is running" -> the cat is run
    # LCS = (the, cat, run) = 3 of 4 tokens each: P = R = F = 0.75 (0.5 without stemming)
    assert rouge_l("the cats are running", "the cat is running") == pytest.approx(0.75)
    # LCS of "a b c d" and "a c" is 2: P = 2/4, R = 2/2, F = 2PR/(P+R) = 2/3
    assert rouge_l("a b c d", "a c") == pytest.approx(2 / 3)
    assert rouge_l("completely different", "nothing shared") == 0.0


def test_rouge_l_never_crashes_on_empty_or_odd_text() -> None:
    assert rouge_l("", "reference") == 0.0
    assert rouge_l("   ", "reference") == 0.0
    assert rouge_l("prediction", "") == 0.0
    assert rouge_l("!!! ???", "reference") == 0.0  # no token survives the tokenizer
    assert rouge_l(None, "x") == 0.0  # type: ignore[arg-type]
    assert 0.0 <= rouge_l("日本語 text", "text") <= 1.0


def test_score_in_percent() -> None:
    assert score("accuracy", ["P", " n", "N"], ["P", "N", "P"]) == pytest.approx(200 / 3)
    assert score("rougeL", ["a b c d", "x"], ["a c", "x"]) == pytest.approx(100 * (2 / 3 + 1) / 2)
    assert score("exact_match", ["a"], ["A"]) == 100.0
    assert score_one("rouge-l", "a c", "a c") == pytest.approx(1.0)


def test_score_errors() -> None:
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        score("accuracy", ["a", "b"], ["a"])
    with pytest.raises(ValueError, match="unknown metric 'bleu'"):
        score("bleu", ["a"], ["a"])
    with pytest.raises(ValueError, match="no predictions"):
        score("accuracy", [], [])


def test_metric_names() -> None:
    assert normalize_metric("RougeL") == "rougeL"
    assert normalize_metric("accuracy") == "accuracy"


def test_a_mistyped_metric_gets_the_nearest_name():
    with pytest.raises(ValueError, match=r"unknown metric 'acuracy' \(did you mean 'accuracy'\?\)"):
        normalize_metric("acuracy")
