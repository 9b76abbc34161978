"""Per-example scores and the task score (percent) of SPEC.md's metrics.

* ``accuracy``: exact match after ``strip().lower()`` of prediction and reference.
* ``rougeL``: ROUGE-L F1 of ``rouge_score`` with the Porter stemmer (its default
  tokenizer lower-cases and keeps only ASCII letters and digits).

Decisions: ``None`` is scored as an empty string; an empty prediction (or one with
no token ``rouge_score`` keeps) scores 0.0 under ROUGE-L, whatever the reference,
and so does any prediction against an empty reference (six task511 outputs are empty);
:func:`score` of an empty list raises ``ValueError`` instead of inventing a number,
since a task score over no example means the evaluation went wrong upstream.
"""

from __future__ import annotations

from typing import Any, Sequence

__all__ = ["METRIC_NAMES", "normalize_metric", "exact_match", "rouge_l", "score_one", "score"]

_METRIC_ALIASES = {
    "accuracy": "accuracy", "acc": "accuracy", "exact_match": "accuracy", "em": "accuracy",
    "exactmatch": "accuracy",
    "rougel": "rougeL", "rouge_l": "rougeL", "rouge-l": "rougeL",
}
METRIC_NAMES = ("accuracy", "rougeL")

_scorer: Any = None


def normalize_metric(metric: str) -> str:
    """``accuracy`` or ``rougeL`` (aliases: ``exact_match``, ``em``, ``rouge-l`` ...)."""
    key = metric.strip().lower() if isinstance(metric, str) else None
    if key not in _METRIC_ALIASES:
        from .errors import did_you_mean

        hint = did_you_mean(metric, ("accuracy", "acc", "exact_match", "em", "rouge_l", "rougeL",
                                     "rouge-l"))
        raise ValueError(f"unknown metric {metric!r}{hint}; known: accuracy (or acc, "
                         f"exact_match, em), rouge_l (or rougeL, rouge-l)")
    return _METRIC_ALIASES[key]


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def exact_match(pred: str, ref: str) -> float:
    """1.0 when prediction and reference agree after stripping and lower-casing, else 0.0."""
    return 1.0 if _text(pred).strip().lower() == _text(ref).strip().lower() else 0.0


def _rouge_scorer() -> Any:
    global _scorer
    if _scorer is None:
        from rouge_score import rouge_scorer

        _scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return _scorer


def rouge_l(pred: str, ref: str) -> float:
    """ROUGE-L F1 in [0, 1] with stemming; 0.0 when prediction or reference is empty."""
    pred_text, ref_text = _text(pred), _text(ref)
    if not pred_text.strip() or not ref_text.strip():
        return 0.0
    try:
        return float(_rouge_scorer().score(ref_text, pred_text)["rougeL"].fmeasure)
    except (ValueError, IndexError, KeyError, TypeError):  # pragma: no cover - defensive
        return 0.0


def score_one(metric: str, pred: str, ref: str) -> float:
    """The per-example score in [0, 1] under ``metric``."""
    name = normalize_metric(metric)
    return exact_match(pred, ref) if name == "accuracy" else rouge_l(pred, ref)


def score(metric: str, predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean per-example score in percent (0-100).

    Raises ``ValueError`` for an unknown metric, lists of different lengths, or
    empty lists.
    """
    name = normalize_metric(metric)
    preds, refs = list(predictions), list(references)
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions but {len(refs)} references")
    if not preds:
        raise ValueError("no predictions to score")
    fn = exact_match if name == "accuracy" else rouge_l
    return 100.0 * sum(fn(p, r) for p, r in zip(preds, refs)) / len(preds)
