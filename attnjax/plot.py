"""``python -m attnjax.plot <dir>``: training curves of a run, or comparisons across a sweep.

  python -m attnjax.plot runs/digits           # runs/digits/plots/curves.png
  python -m attnjax.plot runs/sweep_kernels    # plots/sweep_curves.png, sweep_final.png
                                               # and each run's curves.png

A directory with ``metrics.jsonl`` is a run; a directory whose subdirectories have one is a
sweep. Parsed with argparse (``launch.py`` owns the absl flags).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from attnjax.inspect import plots


def main(argv: Sequence[str] | None = None) -> int:
  """Writes the figures and prints their paths; returns 0, or 2 on a bad directory."""
  parser = argparse.ArgumentParser(prog="python -m attnjax.plot", description=__doc__.split(
      "\n", 1)[0])
  parser.add_argument("directory", help="a workdir (with metrics.jsonl) or a sweep directory")
  parser.add_argument("--out", default=None, help="output folder (default <directory>/plots)")
  args = parser.parse_args(argv)
  directory = args.directory
  if not os.path.isdir(directory):
    print(f"error: {directory!r} is not a directory", file=sys.stderr)
    return 2
  try:
    if plots.is_workdir(directory):
      written = [plots.plot_curves(directory, out_dir=args.out)]
    elif plots.sweep_runs(directory):
      written = plots.plot_sweep(directory, out_dir=args.out)
      # Each run's own curves too, where the train loop has not drawn them (e.g. a crash).
      written += [plots.plot_curves(run) for run in plots.sweep_runs(directory)]
    else:
      print(f"error: {directory!r} has no metrics.jsonl and no subdirectory with one: it is "
            "neither a run nor a sweep", file=sys.stderr)
      return 2
  except (ValueError, OSError) as e:  # a bad metrics.jsonl line (named), an unwritable --out
    print(f"error: {e}", file=sys.stderr)
    return 2
  for path in written:
    print(path)
  return 0


if __name__ == "__main__":
  sys.exit(main())
