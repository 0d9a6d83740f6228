"""Training-curve figures from ``<workdir>/metrics.jsonl``, and comparisons across a sweep."""

from __future__ import annotations

import collections
import json
import os

from attnjax.run_files import read_metrics


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
    if key != "learning_rate" and ax.get_lines():
      ax.legend()
  fig.tight_layout()
  out_dir = out_dir or os.path.join(workdir, "plots")
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, "curves.png")
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def is_workdir(path: str) -> bool:
  """Whether ``path`` is a run directory (it has ``metrics.jsonl``)."""
  return os.path.isfile(os.path.join(path, "metrics.jsonl"))


def sweep_runs(sweep_dir: str) -> list[str]:
  """The run directories directly under ``sweep_dir`` (those with ``metrics.jsonl``), sorted."""
  if not os.path.isdir(sweep_dir):
    return []
  return sorted(os.path.join(sweep_dir, name) for name in os.listdir(sweep_dir)
                if is_workdir(os.path.join(sweep_dir, name)))


def _flat_config(workdir: str) -> dict[str, object]:
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    return {}
  with open(path) as f:
    tree = json.load(f)
  flat: dict[str, object] = {}

  def walk(node, prefix):
    if isinstance(node, dict):
      for key, value in node.items():
        walk(value, f"{prefix}{key}.")
    else:
      flat[prefix[:-1]] = node if not isinstance(node, list) else tuple(node)

  walk(tree, "")
  return flat


# Keys that differ between runs without describing the experiment.
_IGNORED_KEYS = ("data.data_dir", "name")


def run_labels(workdirs: list[str]) -> list[str]:
  """A short label per run: the config keys whose values differ between the runs.

  Falls back to the directory name when the configs are missing or identical.
  """
  configs = [_flat_config(w) for w in workdirs]
  keys = sorted({k for c in configs for k in c})
  varying = [k for k in keys if k not in _IGNORED_KEYS
             and len({repr(c.get(k)) for c in configs}) > 1]
  labels = []
  for workdir, config in zip(workdirs, configs):
    parts = [f"{k.split('.')[-1]}={config.get(k)}" for k in varying[:3]]
    labels.append(", ".join(parts) if parts else os.path.basename(os.path.normpath(workdir)))
  if len(set(labels)) < len(labels):  # more than 3 keys vary: names keep runs apart
    labels = [os.path.basename(os.path.normpath(w)) for w in workdirs]
  return labels


def plot_sweep(sweep_dir: str, *, out_dir: str | None = None) -> list[str]:
  """Comparison figures for a directory whose subdirectories are runs.

  Writes ``sweep_curves.png`` (train loss, eval loss and eval accuracy against step, one
  line per run) and ``sweep_final.png`` (each run's last eval accuracy and loss as bars).

  Args:
    sweep_dir: a directory of workdirs (each with ``metrics.jsonl``).
    out_dir: where to write; default ``<sweep_dir>/plots``.

  Returns:
    The paths written.

  Raises:
    ValueError: no subdirectory of ``sweep_dir`` is a run.
  """
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  runs = sweep_runs(sweep_dir)
  if not runs:
    raise ValueError(f"{sweep_dir}: no subdirectory has a metrics.jsonl, so it is not a sweep")
  labels = run_labels(runs)
  out_dir = out_dir or os.path.join(sweep_dir, "plots")
  os.makedirs(out_dir, exist_ok=True)

  panels = (("train", "loss"), ("eval", "loss"), ("eval", "accuracy"))
  fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.4))
  finals: list[dict[str, float]] = []
  colours = plt.get_cmap("tab10" if len(runs) <= 10 else "tab20")
  for i, (run, label) in enumerate(zip(runs, labels)):
    records = read_metrics(run)
    evals = [r for r in records if r.get("split") == "eval"]
    finals.append(evals[-1] if evals else {})
    for ax, (split, key) in zip(axes, panels):
      points = [(r["step"], r[key]) for r in records if r.get("split") == split and key in r]
      if points:
        steps, values = zip(*points)
        ax.plot(steps, values, color=colours(i % colours.N), label=label,
                marker="o" if split == "eval" else None, markersize=3)
  for ax, (split, key) in zip(axes, panels):
    ax.set_title(f"{split} {key}")
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  axes[-1].legend(fontsize=7, loc="best")
  fig.tight_layout()
  curves = os.path.join(out_dir, "sweep_curves.png")
  fig.savefig(curves, dpi=110)
  plt.close(fig)

  metrics = [k for k in ("accuracy", "loss") if any(k in f for f in finals)]
  written = [curves]
  if metrics:
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(4.0, 0.6 * len(runs) + 2.5) *
                                                       len(metrics), 3.8), squeeze=False)
    for ax, key in zip(axes.flat, metrics):
      values = [f.get(key, float("nan")) for f in finals]
      ax.bar(range(len(runs)), values, color=[colours(i % colours.N) for i in range(len(runs))])
      ax.set_xticks(range(len(runs)))
      ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
      ax.set_title(f"final eval {key}")
      for x, v in enumerate(values):
        if v == v:  # not NaN
          ax.text(x, v, f"{v:.3f}", ha="center", va="bottom", fontsize=7)
      ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    final_path = os.path.join(out_dir, "sweep_final.png")
    fig.savefig(final_path, dpi=110)
    plt.close(fig)
    written.append(final_path)
  return written
