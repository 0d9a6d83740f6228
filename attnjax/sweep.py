r"""Sweeps run from the repo: a grid of config overrides -> one run per point -> a table.

A config module may define ``get_sweep(arg=None)`` returning a list of override
dicts; each key is a dotted config field, each value what to set it to::

  from attnjax import sweep

  def get_sweep(arg=None):
    return sweep.product(sweep.axis("model.attention.kernel", ["dot_product", "chunked"]),
                         sweep.axis("seed", [0, 1]))

``python launch.py --config <file>:<arg> --sweep --workdir <sweep_dir>`` then runs
every point in ``<sweep_dir>/<point name>`` (name derived from the overrides,
e.g. ``kernel=chunked,seed=1``), in this process one after another or in
``--sweep_parallel=N`` ``launch.py`` subprocesses, and writes
``results.csv``, ``results.md`` and ``results.png`` into ``<sweep_dir>``.

Resuming is the train loop's own: a point whose latest checkpoint reached
``train.num_steps`` is skipped without loading anything; any other point is
launched, and ``train_and_evaluate`` continues it from its checkpoint. So the
same command after a kill finishes only the missing points. A failing point
is recorded (status ``failed`` and its error in the table) and the others go on.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import inspect
import itertools
import math
import os
import re
import shlex
import subprocess
import sys
import time
import traceback
from typing import Any, Callable, Iterable, Mapping, Sequence

import ml_collections

Overrides = dict[str, Any]

#: Files a finished sweep writes into its directory.
RESULTS_CSV = "results.csv"
RESULTS_MD = "results.md"
RESULTS_PNG = "results.png"
#: Where a point's error is kept (in its workdir) so a later table still shows it.
ERROR_FILE = "sweep_error.txt"
#: Log of a point run as a subprocess (--sweep_parallel).
LOG_FILE = "launch.log"


# --------------------------------------------------------------------------- grid helpers


def axis(key: str, values: Iterable[Any]) -> list[Overrides]:
  """One swept field: ``axis("seed", [0, 1])`` -> ``[{"seed": 0}, {"seed": 1}]``."""
  return [{key: v} for v in values]


def product(*sweeps: Sequence[Mapping[str, Any]]) -> list[Overrides]:
  """Every combination of one point from each sweep, merged (later sweeps vary fastest).

  Raises:
    ValueError: two sweeps set the same key (the merge would hide one of them).
  """
  out = []
  for combo in itertools.product(*sweeps):
    merged: Overrides = {}
    for part in combo:
      clash = set(merged) & set(part)
      if clash:
        raise ValueError(f"product: key(s) {sorted(clash)} set by more than one sweep")
      merged.update(part)
    out.append(merged)
  return out


def zip_(*sweeps: Sequence[Mapping[str, Any]]) -> list[Overrides]:
  """Point i merges the i-th point of every sweep; the sweeps must be equally long.

  Example:
    >>> zip_(axis("model.hidden_size", [64, 128]), axis("model.mlp_dim", [128, 256]))
    [{'model.hidden_size': 64, 'model.mlp_dim': 128}, {'model.hidden_size': 128, 'model.mlp_dim': 256}]
  """
  lengths = {len(s) for s in sweeps}
  if len(lengths) > 1:
    raise ValueError(f"zip_: sweeps have different lengths {sorted(lengths)}")
  return [product(*([p] for p in parts))[0] for parts in zip(*sweeps)]


# --------------------------------------------------------------------------- points


@dataclasses.dataclass(frozen=True)
class Point:
  """One run of a sweep.

  Attributes:
    name: sub-directory name, derived from the overrides.
    overrides: dotted config field -> value.
    workdir: ``<sweep_dir>/<name>``.
  """
  name: str
  overrides: Overrides
  workdir: str


def _format_value(value: Any) -> str:
  # The form a --config.<key>=<value> flag parses back to the same value.
  if isinstance(value, bool):
    return "true" if value else "false"
  return str(value)


def point_name(overrides: Mapping[str, Any]) -> str:
  """A readable, filesystem-safe name: ``kernel=chunked,seed=1``; ``base`` if empty.

  Keys are shortened to their last component unless two keys share it.
  """
  if not overrides:
    return "base"
  leaves = [k.rsplit(".", 1)[-1] for k in overrides]
  parts = []
  for key, leaf in zip(overrides, leaves):
    label = leaf if leaves.count(leaf) == 1 else key
    parts.append(f"{label}={_format_value(overrides[key])}")
  return re.sub(r"[^A-Za-z0-9._=,+-]", "_", ",".join(parts))


def make_points(sweep: Sequence[Mapping[str, Any]], sweep_dir: str) -> list[Point]:
  """Names every override dict; refuses an empty sweep and duplicate names."""
  if not sweep:
    raise ValueError("the sweep has no points")
  points = [Point(point_name(o), dict(o), os.path.join(sweep_dir, point_name(o)))
            for o in sweep]
  names = [p.name for p in points]
  dup = sorted({n for n in names if names.count(n) > 1})
  if dup:
    raise ValueError(f"sweep points with the same overrides (or name): {dup}")
  return points


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """A copy of ``config`` with the dotted fields set; an unknown field is a ValueError."""
  config = ml_collections.ConfigDict(config.to_dict())  # deep copy; keeps field types
  config.lock()
  for key, value in overrides.items():
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
      if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
        raise ValueError(f"sweep override {key!r}: config has no section {part!r}")
      node = node[part]
    if leaf not in node:
      raise ValueError(f"sweep override {key!r}: config has no field {leaf!r}; "
                       f"known: {sorted(node.keys())}")
    try:
      node[leaf] = value
    except TypeError as e:
      raise ValueError(f"sweep override {key}={value!r}: {e}") from None
  return config


def override_flags(overrides: Mapping[str, Any]) -> list[str]:
  """``--config.<key>=<value>`` flags that set ``overrides`` on the command line."""
  return [f"--config.{k}={_format_value(v)}" for k, v in overrides.items()]


def launch_argv(config_spec: str, point: Point, extra_flags: Sequence[str] = (), *,
                launcher: Sequence[str] = ("python", "launch.py")) -> list[str]:
  """The command that runs one point: the config, user flags, the point's overrides, workdir."""
  return [*launcher, "--config", config_spec, *extra_flags, *override_flags(point.overrides),
          "--workdir", point.workdir]


def load_sweep(config_spec: str) -> list[Overrides]:
  """Calls ``get_sweep`` of the config file in ``config_spec`` (``path.py[:arg]``).

  ``get_sweep`` receives the same ``arg`` as ``get_config`` if it takes one.
  """
  path, _, arg = config_spec.partition(":")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config file {path!r} not found")
  spec = importlib.util.spec_from_file_location("_attnjax_sweep_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  get_sweep = getattr(module, "get_sweep", None)
  if get_sweep is None:
    raise ValueError(f"config {path!r} defines no get_sweep(); --sweep needs one")
  takes_arg = bool(inspect.signature(get_sweep).parameters)
  return list(get_sweep(arg or None) if takes_arg else get_sweep())


# --------------------------------------------------------------------------- running


def finished_step(workdir: str) -> int | None:
  """Latest complete checkpoint step of a run directory, or None (nothing is created)."""
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    return None
  from attnjax.train.checkpoints import Checkpointer  # pylint: disable=import-outside-toplevel
  ckpt = Checkpointer(workdir)
  try:
    return ckpt.latest_step()
  finally:
    ckpt.close()


def is_finished(workdir: str, num_steps: int) -> bool:
  """True when the run's checkpoint reached ``num_steps`` (training would do nothing)."""
  step = finished_step(workdir)
  return step is not None and step >= num_steps


def _record_error(point: Point, error: str | None) -> None:
  path = os.path.join(point.workdir, ERROR_FILE)
  if error is None:
    if os.path.exists(path):
      os.remove(path)
    return
  os.makedirs(point.workdir, exist_ok=True)
  with open(path, "w") as f:
    f.write(error)


#: Returned by :func:`_run_in_process` when the run stopped on SIGTERM (not an error).
PREEMPTED = "preempted"


def _run_in_process(config: ml_collections.ConfigDict, point: Point) -> str | None:
  """Trains one point here; returns None, :data:`PREEMPTED` or the error's one-line description."""
  from attnjax.train import train_and_evaluate  # pylint: disable=import-outside-toplevel
  try:
    result = train_and_evaluate(config, point.workdir)
  except Exception as e:  # pylint: disable=broad-except  (one point must not stop the sweep)
    traceback.print_exc()
    return f"{type(e).__name__}: {e}".splitlines()[0]
  # The loop saves a checkpoint and returns on SIGTERM: the whole sweep must stop
  # then, not go on to the next point.
  return PREEMPTED if result.get("preempted") else None


def _last_error_line(log_path: str) -> str:
  with open(log_path, errors="replace") as f:
    lines = [line.strip() for line in f if line.strip()]
  # launch.py prints "error: ..." for config/input errors; otherwise the traceback's last line.
  for line in reversed(lines):
    if line.startswith("error:"):
      return line[len("error:"):].strip()
  return lines[-1] if lines else "no output"


def _run_subprocesses(jobs: list[tuple[Point, list[str]]], parallel: int,
                      log: Callable[[str], None]) -> dict[str, str | None]:
  """Runs the commands, ``parallel`` at a time; point name -> error or None."""
  errors: dict[str, str | None] = {}
  pending = list(jobs)
  running: list[tuple[Point, subprocess.Popen, Any]] = []
  while pending or running:
    while pending and len(running) < parallel:
      point, argv = pending.pop(0)
      os.makedirs(point.workdir, exist_ok=True)
      out = open(os.path.join(point.workdir, LOG_FILE), "a")
      log(f"[sweep] start {point.name}: {shlex.join(argv)}")
      running.append((point, subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT), out))
    time.sleep(0.2)
    for item in list(running):
      point, proc, out = item
      if proc.poll() is None:
        continue
      out.close()
      running.remove(item)
      errors[point.name] = (None if proc.returncode == 0 else
                            f"exit {proc.returncode}: "
                            f"{_last_error_line(os.path.join(point.workdir, LOG_FILE))}")
      log(f"[sweep] {point.name}: {'done' if errors[point.name] is None else 'FAILED'}")
  return errors


def run_sweep(base_config: ml_collections.ConfigDict, points: Sequence[Point], *,
              parallel: int = 1, config_spec: str | None = None,
              extra_flags: Sequence[str] = (), launcher: Sequence[str] | None = None,
              log: Callable[[str], None] = print) -> dict[str, str]:
  """Runs every unfinished point; returns point name -> status.

  Statuses: ``skipped`` (finished before), ``done``, ``failed``, ``preempted`` (SIGTERM:
  the run checkpointed and the sweep stopped; the same command continues it) and
  ``not run`` (after a preemption).

  Args:
    base_config: the config every point starts from (command-line overrides applied).
    points: from :func:`make_points`.
    parallel: 1 runs the points in this process, one after another; N > 1 runs up to N
      ``launch.py`` subprocesses at once (needs ``config_spec``).
    config_spec: ``path.py[:arg]`` for the subprocess commands.
    extra_flags: the user's ``--config.*`` flags, repeated in every subprocess command.
    launcher: the argv prefix that starts ``launch.py``; default this interpreter and
      the repository's ``launch.py``.
    log: where progress lines go.
  """
  if parallel < 1:
    raise ValueError(f"--sweep_parallel must be at least 1, got {parallel}")
  num_steps = int(base_config.train.num_steps)
  status: dict[str, str] = {}
  todo: list[tuple[Point, ml_collections.ConfigDict]] = []
  for point in points:
    try:
      config = apply_overrides(base_config, point.overrides)
    except ValueError as e:
      status[point.name] = "failed"
      _record_error(point, str(e))
      log(f"[sweep] {point.name}: FAILED ({e})")
      continue
    if is_finished(point.workdir, int(config.train.num_steps)):
      status[point.name] = "skipped"
      log(f"[sweep] {point.name}: finished before, skipped")
      continue
    todo.append((point, config))
  log(f"[sweep] {len(todo)} of {len(points)} points to run "
      f"({'in this process' if parallel == 1 else f'{parallel} at a time'}); "
      f"{num_steps} steps each")
  if parallel == 1:
    errors: dict[str, str | None] = {}
    for i, (point, config) in enumerate(todo):
      log(f"[sweep] ({i + 1}/{len(todo)}) {point.name}")
      errors[point.name] = _run_in_process(config, point)
      if errors[point.name] == PREEMPTED:
        log(f"[sweep] preempted during {point.name}; stopping (the same command resumes)")
        break
  else:
    if config_spec is None:
      raise ValueError("parallel sweeps need config_spec to build launch commands")
    launcher = list(launcher or (sys.executable, os.path.join(_repo_root(), "launch.py")))
    errors = _run_subprocesses(
        [(p, launch_argv(config_spec, p, extra_flags, launcher=launcher)) for p, _ in todo],
        parallel, log)
  for point, _ in todo:
    if point.name not in errors:
      status[point.name] = "not run"
    elif errors[point.name] == PREEMPTED:
      status[point.name] = PREEMPTED
    else:
      _record_error(point, errors[point.name])
      status[point.name] = "done" if errors[point.name] is None else "failed"
  return status


def _repo_root() -> str:
  return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --------------------------------------------------------------------------- results


def _parameter_count(config: ml_collections.ConfigDict) -> int:
  import jax  # pylint: disable=import-outside-toplevel
  from attnjax import data as data_lib  # pylint: disable=import-outside-toplevel
  from attnjax.train.loop import create_model_and_state, parameter_count  # pylint: disable=import-outside-toplevel
  info = data_lib.get_dataset_info(config.data)
  _, init_state, _ = create_model_and_state(config, info)
  abstract = jax.eval_shape(init_state, jax.random.PRNGKey(config.seed))
  return parameter_count(abstract.params)


def _median(values: Sequence[float]) -> float:
  s = sorted(values)
  n = len(s)
  return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def sweep_metric(base_config: ml_collections.ConfigDict) -> tuple[str, str]:
  """``(metric, 'max'|'min')`` that ranks the sweep's points: the task's own
  (``attnjax.train.tasks.TASK_METRICS``: accuracy for classification, Pearson for
  regression, loss for language modelling, ...)."""
  from attnjax.train.tasks import task_metric  # pylint: disable=import-outside-toplevel
  return task_metric(base_config)


def summarize_point(base_config: ml_collections.ConfigDict, point: Point, *,
                    metric: tuple[str, str] | None = None) -> dict[str, Any]:
  """One table row from the point's workdir (metrics.jsonl, checkpoint, error file).

  ``metric``: ``(name, 'max'|'min')`` ranking evaluations (default: the task's); the row
  has ``final_<name>``, ``best_<name>`` (best over the run) and its ``best_step``.

  ``steps_per_sec`` is the median over the logged training windows, leaving out the
  first when there are several (it includes compilation).
  """
  from attnjax.train.writers import read_metrics  # pylint: disable=import-outside-toplevel
  row: dict[str, Any] = {"point": point.name, **{k: v for k, v in point.overrides.items()}}
  error = None
  error_path = os.path.join(point.workdir, ERROR_FILE)
  if os.path.exists(error_path):
    with open(error_path) as f:
      error = f.read().strip()
  try:
    config = apply_overrides(base_config, point.overrides)
    num_steps = int(config.train.num_steps)
    row["params"] = _parameter_count(config)
  except Exception as e:  # pylint: disable=broad-except
    num_steps = int(base_config.train.num_steps)
    row["params"] = ""
    error = error or f"{type(e).__name__}: {e}".splitlines()[0]
  records = []
  if os.path.exists(os.path.join(point.workdir, "metrics.jsonl")):
    records = read_metrics(point.workdir)
  evals = [r for r in records if r["split"] == "eval"]
  train = [r for r in records if r["split"] == "train" and "steps_per_sec" in r]
  step = finished_step(point.workdir)
  row["step"] = step if step is not None else ""
  if error:
    row["status"] = "failed"
  elif step is not None and step >= num_steps:
    row["status"] = "finished"
  else:
    row["status"] = "incomplete"
  name, mode = metric or sweep_metric(base_config)
  evals = [r for r in evals if name in r]
  if evals:
    last = evals[-1]
    sign = 1.0 if mode == "max" else -1.0
    best = max(evals, key=lambda r: (sign * r[name], -r["step"]))
    row.update({f"final_{name}": last[name], "final_loss": last.get("loss", ""),
                f"best_{name}": best[name], "best_step": best["step"],
                "best_loss": min((r["loss"] for r in evals if "loss" in r), default="")})
  if train:
    rates = [r["steps_per_sec"] for r in (train[1:] if len(train) > 1 else train)]
    row["steps_per_sec"] = _median(rates)
  row["error"] = error or ""
  return row


def _metric_columns(metric: str) -> tuple[str, ...]:
  return ("status", "step", f"final_{metric}", "final_loss", f"best_{metric}", "best_step",
          "best_loss", "params", "steps_per_sec", "error")


def _columns(rows: Sequence[Mapping[str, Any]], metric: str) -> list[str]:
  metric_columns = _metric_columns(metric)
  keys: list[str] = ["point"]
  for row in rows:
    for k in row:
      if k not in keys and k not in metric_columns:
        keys.append(k)
  return keys + list(metric_columns)


def _cell(value: Any) -> str:
  if isinstance(value, float):
    return "" if math.isnan(value) else f"{value:.4f}"
  if isinstance(value, int) and not isinstance(value, bool) and value >= 10_000:
    return f"{value:,}"
  return str(value).replace("|", "\\|")


def write_results(sweep_dir: str, rows: Sequence[Mapping[str, Any]], *,
                  metric: tuple[str, str], title: str = "") -> dict[str, str]:
  """Writes results.csv, results.md and results.png into ``sweep_dir``; returns their paths.

  ``metric``: ``(name, 'max'|'min')`` the rows were ranked by (:func:`summarize_point`).
  """
  os.makedirs(sweep_dir, exist_ok=True)
  name, mode = metric
  columns = _columns(rows, name)
  paths = {k: os.path.join(sweep_dir, f) for k, f in
           (("csv", RESULTS_CSV), ("md", RESULTS_MD), ("png", RESULTS_PNG))}
  with open(paths["csv"], "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
      writer.writerow({k: row.get(k, "") for k in columns})
  lines = [f"# Sweep results{': ' + title if title else ''}", "",
           "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(_cell(row.get(k, "")) for k in columns) + " |" for row in rows]
  better = "highest" if mode == "max" else "lowest"
  lines += ["", f"final = last evaluation; best = {better} eval {name} over the run; "
            "steps_per_sec = median logged training window (first window, which "
            "includes compilation, left out)."]
  with open(paths["md"], "w") as f:
    f.write("\n".join(lines) + "\n")
  _plot(paths["png"], sweep_dir, rows, title, name)
  return paths


def _plot(path: str, sweep_dir: str, rows: Sequence[Mapping[str, Any]], title: str,
          metric: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  from attnjax.train.writers import read_metrics  # pylint: disable=import-outside-toplevel

  fig, (curves, bars) = plt.subplots(1, 2, figsize=(11, 3.8))
  for row in rows:
    workdir = os.path.join(sweep_dir, row["point"])
    if not os.path.exists(os.path.join(workdir, "metrics.jsonl")):
      continue
    evals = [r for r in read_metrics(workdir) if r["split"] == "eval" and metric in r]
    if evals:
      curves.plot([r["step"] for r in evals], [r[metric] for r in evals], marker="o",
                  markersize=3, label=row["point"])
  curves.set_xlabel("step")
  curves.set_ylabel(f"eval {metric}")
  curves.grid(alpha=0.3)
  if curves.lines:
    curves.legend(fontsize=7)
  names = [r["point"] for r in rows]
  final = [r.get(f"final_{metric}", 0.0) or 0.0 for r in rows]
  best = [r.get(f"best_{metric}", 0.0) or 0.0 for r in rows]
  ys = range(len(rows))
  bars.barh(ys, final, color=["tab:red" if r["status"] == "failed" else "tab:blue"
                              for r in rows], label="final")
  bars.scatter(best, ys, color="black", marker="|", s=200, label="best", zorder=3)
  bars.set_yticks(list(ys), names, fontsize=7)
  bars.set_xlabel(f"eval {metric} (red: failed)")
  if metric in ("accuracy", "f1_macro"):
    bars.set_xlim(0, 1)
  bars.legend(fontsize=7, loc="lower right")
  fig.suptitle(title or os.path.basename(os.path.abspath(sweep_dir)))
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


# --------------------------------------------------------------------------- entry point


def config_flags_from_argv(argv: Sequence[str]) -> list[str]:
  """The user's ``--config.<field>`` overrides in ``argv`` (both ``=v`` and ``v`` forms)."""
  out, i = [], 0
  while i < len(argv):
    arg = argv[i]
    if arg.startswith("--config."):
      if "=" in arg or i + 1 >= len(argv):
        out.append(arg)
      else:
        out.append(f"{arg}={argv[i + 1]}")
        i += 1
    i += 1
  return out


def main(base_config: ml_collections.ConfigDict, *, config_spec: str, sweep_dir: str,
         parallel: int = 1, dry_run: bool = False, extra_flags: Sequence[str] = (),
         launcher: Sequence[str] | None = None, log: Callable[[str], None] = print) -> int:
  """What ``launch.py --sweep`` does; returns the number of failed points.

  Raises:
    SweepPreempted: a point stopped on SIGTERM (after writing the table).

  Args:
    base_config: the resolved config (file, arg and command-line overrides).
    config_spec: ``path.py[:arg]`` as given to ``--config``.
    sweep_dir: ``--workdir``; every point gets a sub-directory.
    parallel: ``--sweep_parallel``.
    dry_run: print one launch command per point and run nothing.
    extra_flags: the user's ``--config.*`` flags, repeated in every command.
    launcher: argv prefix of the commands; default ``python launch.py`` for a dry
      run, this interpreter and the repository's launch.py otherwise.
    log: where progress lines go.
  """
  points = make_points(load_sweep(config_spec), sweep_dir)
  if dry_run:
    for point in points:
      print(shlex.join(launch_argv(config_spec, point, extra_flags,
                                   launcher=launcher or ("python", "launch.py"))))
    return 0
  status = run_sweep(base_config, points, parallel=parallel, config_spec=config_spec,
                     extra_flags=extra_flags, launcher=launcher, log=log)
  metric = sweep_metric(base_config)
  rows = [summarize_point(base_config, p, metric=metric) for p in points]
  paths = write_results(sweep_dir, rows, title=config_spec, metric=metric)
  failed = sum(r["status"] == "failed" for r in rows)
  log(f"[sweep] {len(rows) - failed}/{len(rows)} points ok; table {paths['md']}, "
      f"{paths['csv']}, plot {paths['png']}")
  if PREEMPTED in status.values():
    raise SweepPreempted("the sweep stopped on SIGTERM; the same command continues it")
  return failed


class SweepPreempted(Exception):
  """The sweep stopped because a point was preempted (SIGTERM); its table is written."""
