"""Orbax checkpoints of the train state and the data-iterator state."""

from __future__ import annotations

import json
import os
from typing import Any

import orbax.checkpoint as ocp
from absl import logging


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
    one cannot be read (corrupt or partial files), logging what it skipped.

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
        message = f"checkpoint {os.path.join(self.directory, str(s))} is unreadable: " \
                  f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        logging.warning(message)
        print(f"warning: {message}; trying an older one", flush=True)
        failures.append(message)
        continue
      data = restored.get("data") if "data" in items else None
      return restored["state"], (json.dumps(data).encode() if data is not None else None), s
    raise FileNotFoundError("no readable checkpoint:\n  " + "\n  ".join(failures))

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk."""
    self._manager.wait_until_finished()
    if self._best is not None:
      self._best.wait_until_finished()

  def close(self) -> None:
    self.wait()
    self._manager.close()
    if self._best is not None:
      self._best.close()
