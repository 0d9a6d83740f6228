r"""Length histogram and label distribution of the generated ListOps, as markdown.

  python experiments/lra/listops_stats.py > /tmp/listops_stats.md

Regenerates the "ListOps data" section of experiments/lra/README.md from the generator
itself (no preparation needed): every example of ``listops_small`` (4,000 / 500 / 500) and
the first 2,000 of the ``listops`` (LRA, 500-2,000 tokens) stream, i.e. the first 2,000
examples generated for its train split. Also prints the majority-class baseline of each
test split, the number an accuracy has to beat.
"""

from __future__ import annotations

import collections
import sys

import numpy as np

from attnjax.data import listops


def _histogram(lengths: list[int], edges: list[int]) -> list[str]:
  counts, _ = np.histogram(lengths, bins=edges)
  total = len(lengths)
  rows = ["| tokens | examples | share |", "|---|---|---|"]
  for lo, hi, n in zip(edges[:-1], edges[1:], counts):
    rows.append(f"| {lo}-{hi - 1} | {n} | {n / total:.1%} {'#' * round(40 * n / total)} |")
  return rows


def _labels(labels: list[int]) -> list[str]:
  counts = collections.Counter(labels)
  total = len(labels)
  return ["| label | " + " | ".join(str(k) for k in range(10)) + " |",
          "|---|" + "---|" * 10,
          "| share | " + " | ".join(f"{counts[k] / total:.1%}" for k in range(10)) + " |"]


def _section(title: str, config: listops.ListOpsConfig, count: int, edges: list[int]) -> list[str]:
  examples = list(listops.generate_examples(
      config.seed, count, min_length=config.min_length, max_length=config.max_length,
      max_depth=config.max_depth, max_args=config.max_args))
  lengths = [len(t) for t, _ in examples]
  labels = [v for _, v in examples]
  out = [f"### {title}", "",
         f"{count:,} examples; length min {min(lengths)}, median {int(np.median(lengths))}, "
         f"mean {np.mean(lengths):.0f}, max {max(lengths)} tokens.", ""]
  out += _histogram(lengths, edges) + [""] + _labels(labels) + [""]
  n_train = config.num_train
  if count >= n_train + config.num_validation + config.num_test:
    test = labels[n_train + config.num_validation:]
    top, n = collections.Counter(test).most_common(1)[0]
    out += [f"Majority-class baseline on its test split: label {top}, "
            f"{n}/{len(test)} = {n / len(test):.1%}.", ""]
  return out


def main() -> None:
  small = listops.SMALL
  lines = _section("listops_small (100-300 tokens; all 5,000 examples)", small,
                   small.num_train + small.num_validation + small.num_test,
                   list(range(100, 301, 25)))
  lines += _section("listops (LRA: 500-2,000 tokens; first 2,000 of the stream)",
                    listops.STANDARD, 2000, list(range(500, 2001, 150)))
  sys.stdout.write("\n".join(lines))


if __name__ == "__main__":
  main()
