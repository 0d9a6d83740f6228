"""Training-curve figures from ``<workdir>/metrics.jsonl``."""

from __future__ import annotations

import collections
import os

from attnjax.train.writers import read_metrics


def plot_curves(workdir: str, *, out_dir: str | None = None) -> str:
  """Writes ``curves.png`` (loss, accuracy, learning rate; train and eval) and returns its path.

  Args:
    workdir: a run directory with ``metrics.jsonl``.
    out_dir: where to write; default ``<workdir>/plots``.
  """
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  series: dict[tuple[str, str], list[tuple[int, float]]] = collections.defaultdict(list)
  for record in read_metrics(workdir):
    for key in ("loss", "accuracy", "learning_rate"):
      if key in record:
        series[(record["split"], key)].append((record["step"], record[key]))
  panels = ("loss", "accuracy", "learning_rate")
  fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2))
  for ax, key in zip(axes, panels):
    for split in ("train", "eval"):
      points = series.get((split, key))
      if points:
        steps, values = zip(*points)
        ax.plot(steps, values, marker="o" if split == "eval" else None, markersize=3,
                label=split)
    ax.set_title(key.replace("_", " "))
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    if key != "learning_rate":
      ax.legend()
  fig.tight_layout()
  out_dir = out_dir or os.path.join(workdir, "plots")
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, "curves.png")
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
