"""Orbax checkpoints of the train state and the data-iterator state."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging


UNREADABLE_DIR = "checkpoints_unreadable"


def _is_closed_loop_callback(unraisable) -> bool:
  """Whether an unraisable exception is tensorstore finishing a read for an Orbax restore
  that already failed: its callback reaches the restore's asyncio loop after Orbax closed
  it (dozens of "Event loop is closed" tracebacks, no information)."""
  exc = unraisable.exc_value
  if not (isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"):
    return False
  tb = unraisable.exc_traceback
  while tb is not None:
    if tb.tb_frame.f_code.co_name == "call_soon_threadsafe":
      return True
    tb = tb.tb_next
  return False


def _install_unraisable_filter() -> None:
  """Drops those callbacks' errors (once per process); every other one goes through."""
  if getattr(sys.unraisablehook, "_attnjax_filter", False):
    return
  previous = sys.unraisablehook

  def hook(unraisable):
    if not _is_closed_loop_callback(unraisable):
      previous(unraisable)
  hook._attnjax_filter = True  # pylint: disable=protected-access
  sys.unraisablehook = hook


class Checkpointer:
  """Saves and restores ``(state, data_iterator_state)`` under ``<workdir>/checkpoints``.

  A checkpoint holds the whole TrainState pytree (params, optimizer state, step, rng) as
  global arrays, and the Grain iterator state (JSON). Restoring into abstract arrays that
  carry shardings places the state directly, so a checkpoint written under one strategy or
  device count restores under another. Every process takes part in saves (Orbax writes
  each array's shards from the process that holds them).

  Args:
    workdir: the run directory.
    keep: how many recent checkpoints to keep.
    async_save: save in a background thread (training continues while writing).
    keep_best_by: an eval metric; when set, the best checkpoint by it is also kept, in
      ``<workdir>/best_checkpoint``.
    best_mode: 'max' or 'min' for ``keep_best_by``.
  """

  def __init__(self, workdir: str, *, keep: int = 2, async_save: bool = True,
               keep_best_by: str = "", best_mode: str = "max"):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    _install_unraisable_filter()
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(self.directory, options=options)
    self._best = None
    self.keep_best_by = keep_best_by
    if keep_best_by:
      if best_mode not in ("max", "min"):
        raise ValueError(f"config.train.best_mode={best_mode!r}; expected 'max' or 'min'")
      best_options = ocp.CheckpointManagerOptions(
          max_to_keep=1, create=True, enable_async_checkpointing=async_save,
          best_fn=lambda metrics: metrics[keep_best_by], best_mode=best_mode,
          # Its own barrier names: with several processes, both managers saving the same
          # step would otherwise wait on one barrier ("already ongoing").
          multiprocessing_options=ocp.options.MultiprocessingOptions(
              barrier_sync_key_prefix="best"))
      self._best = ocp.CheckpointManager(
          os.path.join(os.path.abspath(workdir), "best_checkpoint"), options=best_options)

  def latest_step(self) -> int | None:
    """Step of the newest complete checkpoint, or None."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  @staticmethod
  def _items(state: Any, data_state: bytes | None) -> ocp.args.Composite:
    items = {"state": ocp.args.StandardSave(state)}
    if data_state is not None:
      items["data"] = ocp.args.JsonSave(json.loads(data_state))
    return ocp.args.Composite(**items)

  def save(self, step: int, state: Any, data_state: bytes | None = None, *,
           force: bool = False) -> bool:
    """Saves at ``step``; ``data_state`` is the Grain iterator's ``get_state()`` bytes."""
    return self._manager.save(step, args=self._items(state, data_state), force=force)

  def save_if_best(self, step: int, state: Any, metrics: dict[str, float]) -> None:
    """Offers the state to the best-checkpoint manager (kept if it is the best so far)."""
    if self._best is not None:
      if self.keep_best_by not in metrics:
        raise ValueError(f"config.train.keep_best_by={self.keep_best_by!r} is not an eval "
                         f"metric; eval metrics are {sorted(metrics)}")
      if step in self._best.all_steps():
        return  # a resumed run re-evaluating a step it had already offered
      self._best.save(step, args=self._items(state, None), metrics=dict(metrics), force=True)

  def restore(self, abstract_state: Any, step: int | None = None
              ) -> tuple[Any, bytes | None, int]:
    """Restores ``(state, data_state, step)`` into the given shapes and shardings.

    Without ``step``, tries the newest checkpoint first and falls back to older ones when
    one cannot be read (corrupt or partial files): each unreadable step is moved aside to
    ``<workdir>/checkpoints_unreadable/<step>`` (kept for inspection, never deleted) and
    named in a warning, so the run retrains from the older step and can save that step
    again.

    Raises:
      FileNotFoundError: no checkpoint, or none readable.
    """
    steps = [step] if step is not None else sorted(self._manager.all_steps(), reverse=True)
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    failures = []
    for s in steps:
      items = {"state": ocp.args.StandardRestore(abstract_state)}
      # Checkpoints written without an iterator state (e.g. by tools) have no "data" item.
      if os.path.isdir(os.path.join(self.directory, str(s), "data")):
        items["data"] = ocp.args.JsonRestore()
      try:
        restored = self._manager.restore(s, args=ocp.args.Composite(**items))
      except Exception as e:  # pylint: disable=broad-except  (Orbax raises many kinds)
        reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        if step is not None:
          raise FileNotFoundError(f"checkpoint {os.path.join(self.directory, str(s))} is "
                                  f"unreadable: {reason}") from None
        moved = self._move_aside(s)
        message = (f"checkpoint {os.path.join(self.directory, str(s))} is unreadable "
                   f"({reason[:200]}); moved it to {moved}")
        logging.warning(message)
        print(f"warning: {message}", flush=True)
        failures.append(message)
        continue
      data = restored.get("data") if "data" in items else None
      if failures:
        print(f"resuming from the older step {s} instead", flush=True)
      return restored["state"], (json.dumps(data).encode() if data is not None else None), s
    raise FileNotFoundError("no readable checkpoint:\n  " + "\n  ".join(failures))

  def _move_aside(self, step: int) -> str:
    """Moves step ``step`` out of the manager's directory (process 0; every process then
    reloads the manager's step list)."""
    aside = os.path.join(os.path.dirname(self.directory), UNREADABLE_DIR)
    target = os.path.join(aside, str(step))
    if jax.process_index() == 0:
      os.makedirs(aside, exist_ok=True)
      n = 1
      while os.path.lexists(target):  # an earlier failure of the same step
        n += 1
        target = os.path.join(aside, f"{step}.{n}")
      os.replace(os.path.join(self.directory, str(step)), target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
      multihost_utils.sync_global_devices(f"attnjax_checkpoint_aside_{step}")
    self._manager.reload()
    return target

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk."""
    self._manager.wait_until_finished()
    if self._best is not None:
      self._best.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves, then closes both managers (whatever the wait raised), so
    no Orbax thread outlives the run."""
    try:
      self.wait()
    finally:
      try:
        self._manager.close()
      finally:
        if self._best is not None:
          self._best.close()
