"""The run directory: validation, the saved config, and refusing incompatible reuse."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from typing import Any

import ml_collections

from attnjax.run_files import (CONFIG_FILE, METRICS_FILE, read_text, parse_metrics, read_config,
                               read_json)

CHECKPOINTS_DIR = "checkpoints"
BEST_CHECKPOINT_DIR = "best_checkpoint"
PARAMETERS_FILE = "parameters.json"

# Config keys whose change alters parameter shapes, the task or the label set, so a
# checkpoint of the old config cannot continue under the new one.
_SHAPE_DEFINING = ("model", "task.name", "data.name", "data.max_length", "data.num_classes",
                   "data.tokenizer", "data.label_type", "data.label_names")
# Keys a resumed run must keep: the data order and its position (seed, batch size) and the
# learning-rate schedule (num_steps; see resume_changes) are laid out by the first launch.
_RESUME_DEFINING = ("seed", "train.batch_size", "optimizer.schedule")
# Schedules whose learning rate at a step does not depend on num_steps.
_STEP_FREE_SCHEDULES = ("constant",)


def _nearest_existing(path: str) -> str:
  parent = os.path.abspath(path)
  while not os.path.lexists(parent):
    parent = os.path.dirname(parent)
  return parent


def check_directory(path: str, name: str) -> None:
  """Raises ValueError unless ``path`` is, or can be created as, a writable directory.

  Args:
    path: the directory.
    name: how the user named it, for the message (``--workdir``, ``config.data.data_dir``).
  """
  if os.path.lexists(path) and not os.path.isdir(path):
    raise ValueError(f"{name} {path!r} exists and is not a directory")
  existing = _nearest_existing(path)
  if not os.path.isdir(existing):
    raise ValueError(f"{name} {path!r}: {existing!r} is a file, not a directory")
  if not os.access(existing, os.W_OK | os.X_OK):
    what = "is not writable" if existing == os.path.abspath(path) else \
        f"cannot be created: {existing!r} is not writable"
    raise ValueError(f"{name} {path!r} {what}")


def check_workdir(workdir: str) -> None:
  """Raises ValueError if ``workdir`` cannot be a run directory (a file, unwritable, ...).

  Reads only: nothing is created.
  """
  check_directory(workdir, "--workdir")
  for sub in (CHECKPOINTS_DIR, BEST_CHECKPOINT_DIR, "tensorboard", "plots"):
    path = os.path.join(workdir, sub)
    if os.path.lexists(path) and not os.path.isdir(path):
      raise ValueError(f"--workdir {workdir!r}: {path!r} is a file; it must be a directory "
                       "(move the file away)")
    if os.path.isdir(path) and not os.access(path, os.W_OK | os.X_OK):
      raise ValueError(f"--workdir {workdir!r}: {path!r} is not writable")
  for name in (CONFIG_FILE, METRICS_FILE, "parameters.json"):
    path = os.path.join(workdir, name)
    if os.path.isdir(path):
      raise ValueError(f"--workdir {workdir!r}: {path!r} is a directory; it must be a file")


def has_checkpoint(workdir: str) -> bool:
  """Whether ``<workdir>/checkpoints`` holds a step directory (complete or not)."""
  directory = os.path.join(workdir, CHECKPOINTS_DIR)
  return os.path.isdir(directory) and any(
      name.isdigit() and os.path.isdir(os.path.join(directory, name))
      for name in os.listdir(directory))


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flatten(v, f"{prefix}{k}."))
    return out
  return {prefix[:-1]: tree}


def _select(flat: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
  return {k: v for k, v in flat.items() if any(k == s or k.startswith(s + ".") for s in keys)}


def config_to_dict(config: ml_collections.ConfigDict) -> dict:
  """The config as plain JSON-compatible data (as it is written to config.json)."""
  return json.loads(config.to_json_best_effort(sort_keys=True))


def _differences(saved: dict, new: dict, keys: tuple[str, ...]) -> list[str]:
  old_flat, new_flat = _select(_flatten(saved), keys), _select(_flatten(new), keys)
  return [f"{k}: {old_flat.get(k, '<absent>')!r} -> {new_flat.get(k, '<absent>')!r}"
          for k in sorted(set(old_flat) | set(new_flat)) if old_flat.get(k) != new_flat.get(k)]


def incompatible_changes(saved: dict, new: dict) -> list[str]:
  """Lists ``key: old -> new`` for every shape-, task- or label-defining key that differs."""
  return _differences(saved, new, _SHAPE_DEFINING)


def resume_changes(saved: dict, new: dict) -> list[str]:
  """Lists ``key: old -> new`` for the keys a resumed run must keep.

  Resume rules: the seed and the global batch size fix the data order and the position a
  checkpoint resumes at, so they cannot change; ``optimizer.schedule`` and
  ``train.num_steps`` lay out the learning-rate schedule, so the schedule cannot change
  and ``num_steps`` can change only under a schedule that does not depend on it
  (``constant``: a longer run continues at the same rate, exactly as if launched with the
  new value). Everything else (eval cadence, checkpoint cadence, microbatches, ...)
  may change.
  """
  changes = _differences(saved, new, _RESUME_DEFINING)
  schedule = _flatten(new).get("optimizer.schedule")
  if schedule not in _STEP_FREE_SCHEDULES:
    changes += _differences(saved, new, ("train.num_steps",))
  return changes


def validate_workdir(workdir: str, config: ml_collections.ConfigDict,
                     parameter_total: int | None = None) -> None:
  """Every check on ``workdir`` for launching ``config`` there; reads only.

  Args:
    workdir: the run directory (need not exist).
    config: the resolved config.
    parameter_total: the model's parameter count; compared with ``parameters.json`` (a
      changed label set or vocabulary read from data files changes it).

  Raises:
    ValueError: ``workdir`` is a file or unwritable; holds files of a run but no
      ``config.json``; its ``config.json`` is unreadable; or its run differs in model,
      task, labels or tokenizer, or (with a checkpoint) in seed, batch size or schedule.
  """
  check_workdir(workdir)
  if not os.path.isdir(workdir):
    return
  saved = read_config(workdir)
  if saved is None:
    found = [n for n in (METRICS_FILE, CHECKPOINTS_DIR, PARAMETERS_FILE)
             if os.path.lexists(os.path.join(workdir, n))]
    if found:
      raise ValueError(f"--workdir {workdir!r} holds {', '.join(found)} but no {CONFIG_FILE}: "
                       "it is not an attnjax run this launch can resume, and launching would "
                       "overwrite those files; use a new --workdir")
    return
  metrics = os.path.join(workdir, METRICS_FILE)
  if os.path.isfile(metrics):  # a bad line would stop the run after its files changed
    parse_metrics(read_text(metrics), metrics, warn=False)
  new = config_to_dict(config)
  changes = incompatible_changes(saved, new)
  if not changes and parameter_total is not None:
    path = os.path.join(workdir, PARAMETERS_FILE)
    if os.path.isfile(path):
      counts = read_json(path)
      total = counts.get("total") if isinstance(counts, dict) else None
      if isinstance(total, int) and total != parameter_total:
        changes = [f"parameter count: {total} -> {parameter_total} (the data's vocabulary or "
                   "label set changed)"]
  if changes:
    raise ValueError(
        f"--workdir {workdir!r} holds a run with a different model or task, so its "
        "checkpoints cannot continue under this config:\n  " + "\n  ".join(changes) +
        f"\nUse a new --workdir to start fresh (or delete {workdir!r}); to resume this "
        "run, launch it with its saved config.json settings.")
  if has_checkpoint(workdir):
    changes = resume_changes(saved, new)
    if changes:
      raise ValueError(
          f"--workdir {workdir!r} holds a run that resumes from a checkpoint, and these "
          "keys cannot change on resume (README, 'Resume'):\n  " + "\n  ".join(changes) +
          "\nRelaunch with the saved values to resume; to train further with a new "
          "schedule, start a new --workdir with --config.init.workdir=" + workdir +
          " (it starts from this run's encoder).")


def prepare_workdir(workdir: str, config: ml_collections.ConfigDict, *,
                    write: bool = True) -> None:
  """Creates ``workdir`` and writes ``config.json``, refusing an incompatible reuse.

  Args:
    workdir: the run directory.
    config: the resolved config.
    write: False on processes other than 0 (they only check).

  Raises:
    ValueError: see :func:`validate_workdir` (nothing is written then).
  """
  validate_workdir(workdir, config)
  if not write:
    return
  os.makedirs(workdir, exist_ok=True)
  write_json(os.path.join(workdir, CONFIG_FILE), config_to_dict(config))


def write_json(path: str, value: Any) -> None:
  """Writes ``value`` to ``path`` atomically (a crash leaves the old file or the new one)."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(value, f, indent=2, sort_keys=True)
  os.replace(tmp, path)


LOCK_FILE = ".lock"


class WorkdirBusy(ValueError):
  """Another live launch holds the workdir's lock."""


def _describe_holder(path: str) -> str:
  try:
    with open(path) as f:
      holder = json.load(f)
    return f"pid {holder['pid']} on host {holder['host']} (since {holder['since']})"
  except (OSError, ValueError, KeyError, TypeError):
    return "another process (it has not written its pid yet)"


class WorkdirLock:
  """An exclusive lock on a run directory, held for the whole launch.

  ``<workdir>/.lock`` is locked with ``flock`` (on NFS, Linux maps it to a POSIX lock the
  server arbitrates) and holds the holder's pid, host and start time for the message of a
  refused launch. The kernel drops the lock when its process dies however it dies, so a
  lock left by a crash is free: the next launch takes it over (the stale file's holder is
  reported). Released (and the file removed) on ``release``.

  Args:
    workdir: the run directory (created if missing).
    enabled: False on processes other than 0 (multi-host runs take the lock once).
  """

  def __init__(self, workdir: str, *, enabled: bool = True):
    self.path = os.path.join(workdir, LOCK_FILE)
    self.enabled = enabled
    self._fd: int | None = None

  @staticmethod
  def check_free(workdir: str) -> None:
    """Raises WorkdirBusy if a live launch holds ``workdir``; reads only."""
    path = os.path.join(workdir, LOCK_FILE)
    try:
      fd = os.open(path, os.O_RDONLY)
    except OSError:
      return  # no lock file (or unreadable: acquire reports it)
    try:
      if not _try_flock(fd, shared=True):
        raise WorkdirBusy(f"--workdir {workdir!r} is in use by {_describe_holder(path)}; "
                          "wait for it to finish or stop it (its lock is " f"{path})")
    finally:
      os.close(fd)

  def acquire(self) -> None:
    """Takes the lock.

    Raises:
      WorkdirBusy: a live launch holds it (names its pid and host).
    """
    if not self.enabled:
      return
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    while True:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      # A few tries: another launch's check_free may hold a shared lock for an instant.
      if not any(_try_flock(fd) or time.sleep(0.05) for _ in range(5)):
        os.close(fd)
        raise WorkdirBusy(f"--workdir {os.path.dirname(self.path)!r} is in use by "
                          f"{_describe_holder(self.path)}; wait for it to finish or stop it "
                          f"(its lock is {self.path})")
      # The holder before us may have removed the file between our open and our flock:
      # then we hold a lock on a deleted file, so start again on the current one.
      try:
        same = os.path.samestat(os.fstat(fd), os.stat(self.path))
      except FileNotFoundError:
        same = False
      if same:
        break
      os.close(fd)
    stale = os.read(fd, 4096)
    if stale.strip():
      print(f"note: taking over the lock of a launch that is no longer running "
            f"({_describe_holder(self.path)})", flush=True)
    record = {"pid": os.getpid(), "host": socket.gethostname(),
              "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    self._fd = fd

  def release(self) -> None:
    """Removes the lock file and drops the lock (removal first, so no one locks it after)."""
    if self._fd is None:
      return
    try:
      os.unlink(self.path)
    except OSError:
      pass
    os.close(self._fd)
    self._fd = None

  def __enter__(self) -> "WorkdirLock":
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()


def _try_flock(fd: int, shared: bool = False) -> bool:
  try:
    fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
  except BlockingIOError:
    return False
  return True
