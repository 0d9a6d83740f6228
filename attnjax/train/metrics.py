"""Exact evaluation metrics computed on host from sums or gathered predictions.

Classification metrics come from a confusion matrix (a sum over batches, so exact under any
parallel strategy); correlation metrics need every prediction and are computed from the
gathered, unpadded predictions in float64. Text metrics (exact match, BLEU through
``sacrebleu``, ROUGE-L through ``rouge-score``) score decoded strings.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int,
                     weights: np.ndarray | None = None) -> np.ndarray:
  """``[num_classes, num_classes]`` float64 counts: row = true class, column = prediction."""
  w = np.ones(len(labels)) if weights is None else np.asarray(weights, np.float64)
  out = np.zeros((num_classes, num_classes), np.float64)
  np.add.at(out, (np.asarray(labels, np.int64), np.asarray(predictions, np.int64)), w)
  return out


def f1_macro(confusion: np.ndarray) -> float:
  """Unweighted mean over classes of ``2 tp / (2 tp + fp + fn)``.

  Classes that occur neither as a label nor as a prediction are left out (as scikit-learn's
  ``f1_score(average='macro')``, which averages over the labels present); a class with a
  zero denominator otherwise scores 0.
  """
  c = np.asarray(confusion, np.float64)
  tp = np.diag(c)
  fp = c.sum(axis=0) - tp
  fn = c.sum(axis=1) - tp
  present = (c.sum(axis=0) + c.sum(axis=1)) > 0
  if not present.any():
    return 0.0
  denom = 2 * tp + fp + fn
  f1 = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1.0), 0.0)
  return float(f1[present].mean())


def matthews_corrcoef(confusion: np.ndarray) -> float:
  """Matthews correlation (Gorodkin's multi-class R_K) of a confusion matrix; 0 if undefined.

  Equals scikit-learn's ``matthews_corrcoef`` and, for two classes, the usual
  ``(tp tn - fp fn) / sqrt(...)``.
  """
  c = np.asarray(confusion, np.float64)
  t = c.sum(axis=1)  # true counts per class
  p = c.sum(axis=0)  # predicted counts per class
  n = c.sum()
  correct = np.trace(c)
  cov_yp = correct * n - t @ p
  cov_yy = n * n - t @ t
  cov_pp = n * n - p @ p
  denom = np.sqrt(cov_yy * cov_pp)
  return float(cov_yp / denom) if denom > 0 else 0.0


def pearson(x: np.ndarray, y: np.ndarray) -> float:
  """Pearson correlation in float64; 0 when either side is constant."""
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  if x.size < 2:
    return 0.0
  xc, yc = x - x.mean(), y - y.mean()
  denom = np.sqrt(np.sum(xc * xc) * np.sum(yc * yc))
  return float(np.sum(xc * yc) / denom) if denom > 0 else 0.0


def average_ranks(x: np.ndarray) -> np.ndarray:
  """Ranks 1..n with ties given their average rank (``scipy.stats.rankdata``)."""
  x = np.asarray(x)
  order = np.argsort(x, kind="mergesort")
  sorted_x = x[order]
  # Boundaries of runs of equal values; each run gets the mean of its ordinal ranks.
  starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
  ends = np.r_[starts[1:], len(x)]
  ranks_sorted = np.repeat((starts + ends + 1) / 2.0, ends - starts)
  ranks = np.empty(len(x), np.float64)
  ranks[order] = ranks_sorted
  return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
  """Spearman rank correlation: Pearson of the average ranks (ties handled as scipy)."""
  return pearson(average_ranks(x), average_ranks(y))


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
  """Share of predictions equal to their reference after stripping surrounding whitespace."""
  if len(predictions) != len(references) or not predictions:
    raise ValueError(f"exact_match needs as many predictions as references (> 0), got "
                     f"{len(predictions)} and {len(references)}")
  return float(np.mean([p.strip() == r.strip() for p, r in zip(predictions, references)]))


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
  """Corpus BLEU (0-100) of sacrebleu with its default 13a tokenisation, one reference each."""
  import sacrebleu  # pylint: disable=import-outside-toplevel
  return float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score)


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float:
  """Mean ROUGE-L F-measure (0-1) of ``rouge-score`` with stemming, one reference each."""
  from rouge_score import rouge_scorer  # pylint: disable=import-outside-toplevel
  scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
  return float(np.mean([scorer.score(r, p)["rougeL"].fmeasure
                        for p, r in zip(predictions, references)]))


def text_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
  """``exact_match``, ``bleu`` and ``rouge_l`` of decoded texts against their references."""
  return {"exact_match": exact_match(predictions, references),
          "bleu": bleu(predictions, references), "rouge_l": rouge_l(predictions, references)}
