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

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

_HERE = os.path.dirname(os.path.abspath(__file__))

# Loading a config runs the config module: any exception there (a syntax error, a
# get_config that raises, an import that fails) is a config error, reported in one line.
_CONFIG_ERRORS = (Exception,)


def _config_path() -> str:
  """The config file named by --config on the command line (without its ``:arg``)."""
  argv = sys.argv[1:]
  for i, a in enumerate(argv):
    if a == "--config" and i + 1 < len(argv):
      return argv[i + 1].split(":", 1)[0]
    if a.startswith("--config="):
      return a[len("--config="):].split(":", 1)[0]
  return os.path.join(_HERE, "configs", "default.py")


def _where(e: BaseException, text: str) -> str:
  """`` (file:line)`` of the innermost frame of a config module the error passed through."""
  config_dir = os.path.dirname(os.path.abspath(_config_path()))
  frames = []
  tb = e.__traceback__
  while tb is not None:
    frames.append((tb.tb_frame.f_code.co_filename, tb.tb_lineno))
    tb = tb.tb_next
  frames += [(f, int(n)) for f, n in re.findall(r'File "([^"]+)", line (\d+)', text)]
  inside = [(f, n) for f, n in frames if os.path.abspath(f).startswith(config_dir + os.sep)]
  if not inside:
    return ""
  f, n = inside[-1]
  return f" ({os.path.relpath(f) if not os.path.relpath(f).startswith('..') else f}:{n})"


def _config_error(e: BaseException) -> str:
  """A readable line for a config error: no traceback, no escaped quotes."""
  path = _config_path()
  if not os.path.isfile(path):
    return f"--config: config file {path!r} does not exist"
  chain = []
  while e is not None:
    chain.append(e)
    e = e.__cause__ or e.__context__
  for err in chain:
    if isinstance(err, SyntaxError) and err.filename:
      return f"--config: {err.filename}, line {err.lineno}: SyntaxError: {err.msg}"
  texts = []
  for err in chain:
    text = str(err.args[0]) if err.args else str(err)
    if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
      text = text[1:-1]  # a KeyError's repr-quoted message
    texts.append(text.replace("\\n", "\n").replace("\\'", "'"))
  text = texts[0]
  # ml_collections' wrapper of a config that raised while loading; the cause follows.
  text = re.sub(r"^Configuration is not available because of an earlier failure to load:\s*",
                "", text)
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  where = _where(chain[-1], "\n".join(texts))
  if "Traceback (most recent call last)" in text:
    # ml_collections folds the config module's traceback into its message: keep the
    # exception line only (e.g. "ValueError: unknown config argument 'smok' ...").
    lines = [next((line for line in reversed(lines)
                   if re.match(r"^[\w.]+(Error|Exception|Interrupt):", line)), lines[-1])]
  elif not isinstance(chain[-1], (ValueError, KeyError, flags.Error)) and len(chain) == 1:
    lines = [f"{type(chain[-1]).__name__}: " + " ".join(lines)]
  if len(lines) == 2 and lines[1].startswith("Did you mean"):
    return f"--config: unknown config key '{lines[0].strip(chr(39))}' (the config is locked). {lines[1]}"
  return "--config: " + " ".join(lines) + where


def _exit_on_config_error(e: BaseException):
  if __name__ != "__main__":
    raise e
  print(f"error: {_config_error(e)}", file=sys.stderr)
  sys.exit(2)


def _os_error(e: OSError) -> str:
  """One line for an operating-system error: what failed, on which path."""
  names = " -> ".join(repr(n) for n in (e.filename, e.filename2) if n is not None)
  return f"{e.strerror or type(e).__name__}" + (f": {names}" if names else f": {e}")


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
  if not isinstance(config, ml_collections.ConfigDict):
    print(f"error: --config: get_config() of {_config_path()!r} returned a "
          f"{type(config).__name__}; expected an ml_collections.ConfigDict", file=sys.stderr)
    sys.exit(2)
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
  except OSError as e:  # unwritable paths, a full disk, ...: the path and the reason
    logging.debug("error", exc_info=True)
    print(f"error: {_os_error(e)}", file=sys.stderr)
    sys.exit(2)
  except KeyboardInterrupt:  # Ctrl-C outside the train loop (which saves and returns)
    print("interrupted (Ctrl-C) before training started or during clean-up; nothing was "
          "saved since the last checkpoint", file=sys.stderr)
    sys.exit(130)
  except FloatingPointError as e:  # the NaN guard: names the step and the last checkpoint
    print(f"error: {e}", file=sys.stderr)
    sys.exit(3)
  if result.get("preempted"):
    sys.exit(130 if result.get("signal") == "SIGINT" else loop.PREEMPTED_EXIT_CODE)


def _parse_flags(argv: list[str]) -> list[str]:
  try:
    return flags.FLAGS(argv)
  except _CONFIG_ERRORS as e:
    _exit_on_config_error(e)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
