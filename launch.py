r"""Launches an attnjax experiment: the only file that defines command-line flags.

  python launch.py                                   # configs/default.py, runs/<name>-<time>
  python launch.py --config configs/default.py:smoke --workdir runs/smoke
  python launch.py --config configs/default.py --config.train.num_steps=500 --workdir runs/x

Launching again with the same --workdir resumes from its latest checkpoint; a finished run
trains no further and reports its final metrics.
"""

from __future__ import annotations

import datetime
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_HERE = os.path.dirname(os.path.abspath(__file__))

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(_HERE, "configs", "default.py"),
    "Experiment config file, optionally with an argument: configs/x.py:key=value,...",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory; default runs/<config name>-<UTC timestamp>. "
    "An existing run directory is resumed.")


def default_workdir(config_name: str) -> str:
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
  return os.path.join("runs", f"{config_name}-{stamp}")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not flags.FLAGS["verbosity"].present:
    # Orbax and TFDS log every step of every save at INFO; progress has its own lines.
    logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  workdir = _WORKDIR.value or default_workdir(config.get("name", "run"))
  # Imported after flag parsing so `--help` and flag errors stay fast.
  from attnjax.train import train_and_evaluate  # pylint: disable=import-outside-toplevel
  try:
    train_and_evaluate(config, workdir)
  except (ValueError, FileNotFoundError) as e:
    # Configuration and input errors: the message names what is wrong; no traceback.
    logging.debug("error", exc_info=True)
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
