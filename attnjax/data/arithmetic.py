"""Multi-digit addition as a seq2seq task with an exact answer, seeded: ``"123+45" -> "168"``.

For fast tests of the encoder-decoder, generation and the decoded metrics: the answer is
known exactly, the vocabulary is 15 characters (``chars:0123456789+``: pad, bos, eos, unk,
the digits and ``+``), and a small model learns it in minutes on a CPU.

Each operand has 1..:data:`MAX_DIGITS` digits (the digit count uniform, then the value
uniform among numbers of that many digits), so short and long sums are equally common; every
pair ``(a, b)`` occurs at most once across the splits. One ``random.Random(SEED)`` stream
using only ``random()`` (whose sequence Python keeps across versions), as ListOps does.
"""

from __future__ import annotations

import random
from typing import Any, Iterator

import tensorflow_datasets as tfds

from attnjax.data import datasets

SEED = 20251203
MAX_DIGITS = 4
SPLIT_SIZES = {"train": 20_000, "validation": 500, "test": 500}
ALPHABET = "0123456789+"
#: Longest source ``"dddd+dddd"`` and target ``"ddddd"``, each with its EOS.
SOURCE_LENGTH = 2 * MAX_DIGITS + 1 + 1
TARGET_LENGTH = MAX_DIGITS + 1 + 1


def _operand(rng: random.Random) -> int:
  digits = 1 + min(int(rng.random() * MAX_DIGITS), MAX_DIGITS - 1)
  low = 0 if digits == 1 else 10 ** (digits - 1)
  high = 10 ** digits
  return low + min(int(rng.random() * (high - low)), high - low - 1)


def generate(sizes: dict[str, int] | None = None, seed: int = SEED) -> dict[str, list[dict]]:
  """``{split: [{'source': 'a+b', 'target': 'a+b value'}]}``, pairs distinct across splits."""
  sizes = SPLIT_SIZES if sizes is None else sizes
  rng = random.Random(seed)
  seen: set[tuple[int, int]] = set()
  out: dict[str, list[dict]] = {}
  for split, n in sizes.items():
    rows = []
    while len(rows) < n:
      a, b = _operand(rng), _operand(rng)
      if (a, b) in seen:
        continue
      seen.add((a, b))
      rows.append({"source": f"{a}+{b}", "target": str(a + b)})
    out[split] = rows
  return out


class Addition(datasets.LocalBuilder):
  """Seeded multi-digit addition, ``"a+b" -> "a+b's value"``."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=(f"Addition of two numbers of 1..{MAX_DIGITS} digits as text, "
                     f"{SPLIT_SIZES} examples, seed {SEED}."),
        features=tfds.features.FeaturesDict({"source": tfds.features.Text(),
                                             "target": tfds.features.Text()}),
        disable_shuffling=True)

  def _split_generators(self, dl_manager) -> dict[str, Any]:
    del dl_manager
    return {split: self._generate_examples(rows) for split, rows in generate().items()}

  def _generate_examples(self, rows) -> Iterator[tuple[int, dict[str, str]]]:
    for i, row in enumerate(rows):
      yield i, row
