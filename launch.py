r"""Launches an attnjax experiment: the only file that defines command-line flags.

  python launch.py                                   # configs/default.py, runs/<name>-<time>
  python launch.py --config configs/default.py:smoke --workdir runs/smoke
  python launch.py --config configs/default.py --config.train.num_steps=500 --workdir runs/x

Launching again with the same --workdir resumes from its latest checkpoint; a finished run
trains no further and reports its final metrics.

Sweeps (the config file's get_sweep(); see attnjax/sweep.py):

  python launch.py --config configs/lra/listops.py:size=smoke --sweep --workdir runs/listops_sweep
  python launch.py --config configs/lra/listops.py:size=smoke --sweep --sweep_parallel=2 ...
  python launch.py --config configs/lra/listops.py --sweep --sweep_dry_run --workdir runs/x

run every point in <workdir>/<point>, skip finished points, and write results.md,
results.csv and results.png into --workdir; --sweep_dry_run prints one command per point.
"""

from __future__ import annotations

import datetime
import os
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_HERE = os.path.dirname(os.path.abspath(__file__))

# Errors in the config file or its overrides, raised while flags are defined or parsed.
_CONFIG_ERRORS = (AttributeError, KeyError, OSError, TypeError, ValueError, flags.Error)


def _config_error(e: BaseException) -> str:
  """A readable line for a config error: no traceback, no escaped quotes."""
  chain = []
  while e is not None:
    text = str(e.args[0]) if e.args else str(e)
    if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
      text = text[1:-1]  # a KeyError's repr-quoted message
    chain.append(text.replace("\\n", "\n").replace("\\'", "'"))
    e = e.__cause__ or e.__context__
  everything = [line.strip() for line in "\n".join(chain).splitlines()]
  if any("No such file or directory" in line for line in everything):
    missing = next((line for line in everything if line.endswith(".py")), "?")
    return f"--config: config file {missing!r} does not exist"
  text = chain[0]
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  if "Traceback (most recent call last)" in text:
    # ml_collections folds the config module's traceback into its message: keep the
    # exception line only (e.g. "ValueError: unknown config argument 'smok' ...").
    lines = [next(line for line in reversed(lines) if re.match(r"^\w+(Error|Exception):", line))]
  if len(lines) == 2 and lines[1].startswith("Did you mean"):
    return f"--config: unknown config key '{lines[0].strip(chr(39))}' (the config is locked). {lines[1]}"
  return "--config: " + " ".join(lines)


def _exit_on_config_error(e: BaseException):
  if __name__ != "__main__":
    raise e
  print(f"error: {_config_error(e)}", file=sys.stderr)
  sys.exit(2)


try:
  _CONFIG = config_flags.DEFINE_config_file(
      "config", os.path.join(_HERE, "configs", "default.py"),
      "Experiment config file, optionally with an argument: configs/x.py:key=value,...",
      lock_config=True)
except _CONFIG_ERRORS as err:  # overrides are checked against the default config here
  _exit_on_config_error(err)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory; default runs/<config name>-<UTC timestamp>. "
    "An existing run directory is resumed.")
_SWEEP = flags.DEFINE_bool(
    "sweep", False, "Run every point of the config's get_sweep() under --workdir and "
    "write a results table (results.md, results.csv, results.png) there.")
_SWEEP_PARALLEL = flags.DEFINE_integer(
    "sweep_parallel", 1, "With --sweep: points run at once as local launch.py processes "
    "(1 = one after another in this process).", lower_bound=1)
_SWEEP_DRY_RUN = flags.DEFINE_bool(
    "sweep_dry_run", False, "With --sweep: print one launch command per point, run nothing.")


def default_workdir(config_name: str) -> str:
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
  return os.path.join("runs", f"{config_name}-{stamp}")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not flags.FLAGS["verbosity"].present:
    # Orbax and TFDS log every step of every save at INFO; progress has its own lines.
    logging.set_verbosity(logging.WARNING)
  try:
    config = _CONFIG.value
    config.keys()  # a config that failed to load raises on first use: make that here
  except _CONFIG_ERRORS as e:  # a config file that failed to load during flag parsing
    _exit_on_config_error(e)
  if (_SWEEP_DRY_RUN.value or _SWEEP_PARALLEL.value > 1) and not _SWEEP.value:
    raise app.UsageError("--sweep_dry_run and --sweep_parallel need --sweep")
  workdir = _WORKDIR.value or default_workdir(
      config.get("name", "run") + ("-sweep" if _SWEEP.value else ""))
  try:
    if _SWEEP.value:
      # Imported after flag parsing so `--help` and flag errors stay fast.
      from attnjax import sweep  # pylint: disable=import-outside-toplevel
      try:
        failed = sweep.main(
            config, config_spec=config_flags.get_config_filename(flags.FLAGS["config"]),
            sweep_dir=workdir, parallel=_SWEEP_PARALLEL.value, dry_run=_SWEEP_DRY_RUN.value,
            extra_flags=sweep.config_flags_from_argv(sys.argv[1:]))
      except sweep.SweepPreempted as e:
        print(f"preempted: {e}", file=sys.stderr)
        sys.exit(143)  # 128 + SIGTERM, what schedulers expect of a preempted job
      if failed:
        print(f"error: {failed} sweep point(s) failed; see {workdir}/results.md",
              file=sys.stderr)
        sys.exit(1)
      return
    from attnjax.train import distributed, loop  # pylint: disable=import-outside-toplevel
    distributed.maybe_initialize(config.parallel)  # before anything touches a device
    result = loop.train_and_evaluate(config, workdir)
  except (ValueError, FileNotFoundError) as e:
    # Configuration and input errors: the message names what is wrong; no traceback.
    logging.debug("error", exc_info=True)
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except FloatingPointError as e:  # the NaN guard: names the step and the last checkpoint
    print(f"error: {e}", file=sys.stderr)
    sys.exit(3)
  if result.get("preempted"):
    sys.exit(loop.PREEMPTED_EXIT_CODE)


def _parse_flags(argv: list[str]) -> list[str]:
  try:
    return flags.FLAGS(argv)
  except _CONFIG_ERRORS as e:
    _exit_on_config_error(e)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
