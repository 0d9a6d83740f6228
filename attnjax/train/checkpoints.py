"""Orbax checkpoints of the train state and the data-iterator state."""

from __future__ import annotations

import json
import os
from typing import Any

import orbax.checkpoint as ocp


class Checkpointer:
  """Saves and restores ``(state, data_iterator_state)`` under ``<workdir>/checkpoints``.

  A checkpoint holds the whole TrainState pytree (params, optimizer state, step, rng) and
  the Grain iterator state (JSON), so a resumed run continues with the same batches.

  Args:
    workdir: the run directory.
    keep: how many recent checkpoints to keep.
    async_save: save in a background thread (training continues while writing).
  """

  def __init__(self, workdir: str, *, keep: int = 2, async_save: bool = True):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    """Step of the newest complete checkpoint, or None."""
    return self._manager.latest_step()

  def save(self, step: int, state: Any, data_state: bytes | None = None, *,
           force: bool = False) -> bool:
    """Saves at ``step``; ``data_state`` is the Grain iterator's ``get_state()`` bytes."""
    items = {"state": ocp.args.StandardSave(state)}
    if data_state is not None:
      items["data"] = ocp.args.JsonSave(json.loads(data_state))
    return self._manager.save(step, args=ocp.args.Composite(**items), force=force)

  def restore(self, abstract_state: Any, step: int | None = None
              ) -> tuple[Any, bytes | None]:
    """Restores ``(state, data_state)`` at ``step`` (default: latest) into the given shapes."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    # Checkpoints written without an iterator state (e.g. by tools) have no "data" item.
    if os.path.isdir(os.path.join(self.directory, str(step), "data")):
      items["data"] = ocp.args.JsonRestore()
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    data = restored.get("data") if "data" in items else None
    return restored["state"], (json.dumps(data).encode() if data is not None else None)

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
