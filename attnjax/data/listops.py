"""ListOps (Nangia and Bowman 2018) after the Long Range Arena specification, seeded.

An example is a nested expression over the digits 0-9, e.g.::

  [MAX 4 3 [MIN 2 3 ] 1 0 ]          -> label 4

with operators MIN, MAX, MED (median, truncated to an int as LRA's
``int(np.median(...))``) and SM (sum modulo 10). Trees are drawn as in LRA's
``lra_benchmarks/data/listops.py``: a node at depth < ``max_depth`` is an operator
with probability 0.25 (else a digit), an operator takes 2..``max_args``
arguments, and only expressions with ``min_length < length < max_length``
tokens are kept (LRA's strict bounds), all distinct across the splits.

Differences from LRA, on purpose:

* Seeded: one ``random.Random(seed)`` stream, using only ``random()`` (whose
  sequence Python guarantees across versions; ``randint``/``choice`` are not
  guaranteed), so the same seed gives the same dataset everywhere.
* A fixed vocabulary (:data:`VOCAB`), not one built from the data. The text is
  split on whitespace exactly as LRA's files are, so ``[MAX`` is one token and
  lengths mean what LRA's mean; LRA's redundant ``(`` ``)`` tree-binarisation
  parentheses are not written.
* Generation stops early once an expression can no longer fit, which discards
  only trees LRA would also reject, so the kept distribution is unchanged.

The TFDS builder has two configs: ``standard`` (LRA: 500-2,000 tokens,
96,000 / 2,000 / 2,000) and ``small`` (100-300 tokens, 4,000 / 500 / 500, for a
CPU), registered as the tasks ``listops`` and ``listops_small``.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any, Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds

from attnjax.data import datasets

PAD_ID = 0
#: Token strings in id order; id 0 is padding. Fixed: changing it changes every dataset.
VOCAB: tuple[str, ...] = (
    "<pad>", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9",
    "[MIN", "[MAX", "[MED", "[SM", "]")
TOKEN_ID: dict[str, int] = {t: i for i, t in enumerate(VOCAB)}
VOCAB_SIZE = len(VOCAB)
NUM_CLASSES = 10
OPERATORS: tuple[str, ...] = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
#: Probability that a node above the maximum depth is an operator (LRA's VALUE_P).
OPERATOR_P = 0.25


def apply_operator(op: str, args: Sequence[int]) -> int:
  """Value of ``op`` on its digit arguments: MIN, MAX, MED (truncated median), SM (sum mod 10)."""
  if op == "[MIN":
    return min(args)
  if op == "[MAX":
    return max(args)
  if op == "[MED":
    return int(np.median(args))
  if op == "[SM":
    return sum(args) % 10
  raise ValueError(f"unknown ListOps operator {op!r}; known: {OPERATORS}")


class _TooLong(Exception):
  """Raised inside generation once the expression cannot fit any more."""


def _pick(rng: random.Random, n: int) -> int:
  # Uniform in [0, n) from random() alone: random() is the one method whose
  # stream Python promises to keep across versions.
  return min(int(rng.random() * n), n - 1)


def _generate(rng: random.Random, depth: int, max_depth: int, max_args: int,
              out: list[str], budget: int) -> int:
  """Appends one (sub)expression's tokens to ``out`` and returns its value."""
  if len(out) >= budget:
    raise _TooLong
  if depth < max_depth and rng.random() <= OPERATOR_P:
    op = OPERATORS[_pick(rng, len(OPERATORS))]
    num_args = 2 + _pick(rng, max_args - 1)
    out.append(op)
    args = [_generate(rng, depth + 1, max_depth, max_args, out, budget)
            for _ in range(num_args)]
    out.append(END)
    return apply_operator(op, args)
  value = _pick(rng, 10)
  out.append(str(value))
  return value


def sample_expression(rng: random.Random, *, max_depth: int = 10, max_args: int = 10,
                      max_length: int = 2000) -> tuple[list[str], int] | None:
  """Draws one tree; returns ``(tokens, value)`` or None if it reached ``max_length`` tokens.

  Args:
    rng: the stream to draw from (advanced in place).
    max_depth: nodes at this depth are always digits (the root is depth 1).
    max_args: an operator takes 2..max_args arguments.
    max_length: expressions of this many tokens or more are abandoned early.

  Returns:
    The token strings (``[OP`` ... ``]`` and digits) and the expression's value 0..9.
  """
  out: list[str] = []
  try:
    value = _generate(rng, 1, max_depth, max_args, out, max_length)
  except _TooLong:
    return None
  return (out, value) if len(out) < max_length else None


def generate_examples(seed: int, count: int, *, min_length: int, max_length: int,
                      max_depth: int = 10, max_args: int = 10
                      ) -> Iterator[tuple[list[str], int]]:
  """Yields ``count`` distinct expressions with ``min_length < len < max_length``, in order.

  Deterministic in all arguments. Splits are consecutive slices of one stream,
  so they never share an expression.
  """
  if not 0 < min_length + 1 < max_length:
    raise ValueError(f"empty length range: need min_length + 1 < max_length, got "
                     f"min_length={min_length}, max_length={max_length}")
  rng = random.Random(seed)
  seen: set[tuple[str, ...]] = set()
  while len(seen) < count:
    drawn = sample_expression(rng, max_depth=max_depth, max_args=max_args,
                              max_length=max_length)
    if drawn is None or len(drawn[0]) <= min_length:
      continue
    key = tuple(drawn[0])
    if key in seen:
      continue
    seen.add(key)
    yield drawn


def encode(tokens: Sequence[str]) -> np.ndarray:
  """Token strings -> int32 ids in the fixed :data:`VOCAB`."""
  return np.asarray([TOKEN_ID[t] for t in tokens], dtype=np.int32)


def decode(ids: Sequence[int] | np.ndarray) -> str:
  """Ids -> the LRA text form (padding dropped), e.g. ``"[MAX 4 3 ]"``."""
  return " ".join(VOCAB[int(i)] for i in ids if int(i) != PAD_ID)


@dataclasses.dataclass
class ListOpsConfig(tfds.core.BuilderConfig):
  """Generation options of one ListOps variant.

  Attributes:
    min_length: kept expressions have more than this many tokens.
    max_length: kept expressions have fewer than this many tokens; also the
      model's sequence length.
    num_train, num_validation, num_test: examples per split.
    max_depth: maximum tree depth (root = 1).
    max_args: maximum arguments per operator.
    seed: seed of the single generation stream.
  """
  min_length: int = 500
  max_length: int = 2000
  num_train: int = 96_000
  num_validation: int = 2_000
  num_test: int = 2_000
  max_depth: int = 10
  max_args: int = 10
  seed: int = 0


STANDARD = ListOpsConfig(
    name="standard", description="LRA ListOps: 500-2,000 tokens, 96k/2k/2k.")
SMALL = ListOpsConfig(
    name="small", description="Reduced for a CPU: 100-300 tokens, 4k/500/500.",
    min_length=100, max_length=300, num_train=4_000, num_validation=500, num_test=500)


class ListOps(datasets.LocalBuilder):
  """Seeded ListOps after the LRA specification (see the module docstring)."""

  # TFDS would derive "list_ops" from the class name; the task is called listops.
  name = "listops"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [STANDARD, SMALL]

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            "ListOps expressions (MIN, MAX, MED, SM over digits 0-9, nested up to depth "
            "10, 2-10 arguments) as token ids of a fixed vocabulary "
            f"{list(VOCAB)}; label = the expression's value. Generated from one seeded "
            "stream after the Long Range Arena generator."),
        features=tfds.features.FeaturesDict({
            "tokens": tfds.features.Tensor(shape=(None,), dtype=np.int32),
            "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
        }),
        supervised_keys=("tokens", "label"),
        homepage="https://github.com/google-research/long-range-arena",
        citation=(
            "@inproceedings{tay2021lra, title={Long Range Arena: A Benchmark for Efficient "
            "Transformers}, author={Tay, Yi and Dehghani, Mostafa and Abnar, Samira and "
            "others}, booktitle={ICLR}, year={2021}}"),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
    del dl_manager  # Generated: nothing to download.
    c: ListOpsConfig = self.builder_config
    sizes = {"train": c.num_train, "validation": c.num_validation, "test": c.num_test}
    examples = list(generate_examples(
        c.seed, sum(sizes.values()), min_length=c.min_length, max_length=c.max_length,
        max_depth=c.max_depth, max_args=c.max_args))
    out, start = {}, 0
    for split, n in sizes.items():
      out[split] = self._generate_examples(examples[start:start + n])
      start += n
    return out

  def _generate_examples(self, examples: list[tuple[list[str], int]]
                         ) -> Iterator[tuple[int, dict[str, Any]]]:
    for i, (tokens, value) in enumerate(examples):
      yield i, {"tokens": encode(tokens), "label": value}


for _task, _config in (("listops", STANDARD), ("listops_small", SMALL)):
  datasets.register_builder_task(
      datasets.DatasetInfo(name=_task, vocab_size=VOCAB_SIZE, max_length=_config.max_length,
                           num_classes=NUM_CLASSES, num_train=_config.num_train,
                           num_eval=_config.num_test, pad_id=PAD_ID),
      ListOps, config=_config.name, splits=("train", "validation", "test"))
