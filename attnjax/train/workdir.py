"""The run directory: validation, the saved config, and refusing incompatible reuse."""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections

CONFIG_FILE = "config.json"

# Config sections whose change alters parameter shapes or the task, so a checkpoint of the
# old config cannot continue under the new one.
_SHAPE_DEFINING = ("model", "data.name", "data.max_length")


def check_workdir(workdir: str) -> None:
  """Raises ValueError if ``workdir`` cannot be a run directory (e.g. it is a file)."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f"--workdir {workdir!r} exists and is not a directory")
  parent = os.path.dirname(os.path.abspath(workdir))
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise ValueError(f"--workdir {workdir!r}: {parent!r} is a file, not a directory")


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flatten(v, f"{prefix}{k}."))
    return out
  return {prefix[:-1]: tree}


def _select(flat: dict[str, Any]) -> dict[str, Any]:
  return {k: v for k, v in flat.items()
          if any(k == s or k.startswith(s + ".") for s in _SHAPE_DEFINING)}


def config_to_dict(config: ml_collections.ConfigDict) -> dict:
  """The config as plain JSON-compatible data (as it is written to config.json)."""
  return json.loads(config.to_json_best_effort(sort_keys=True))


def incompatible_changes(saved: dict, new: dict) -> list[str]:
  """Lists ``key: old -> new`` for every shape-defining key that differs."""
  old_flat, new_flat = _select(_flatten(saved)), _select(_flatten(new))
  return [f"{k}: {old_flat.get(k, '<absent>')!r} -> {new_flat.get(k, '<absent>')!r}"
          for k in sorted(set(old_flat) | set(new_flat)) if old_flat.get(k) != new_flat.get(k)]


def prepare_workdir(workdir: str, config: ml_collections.ConfigDict, *,
                    write: bool = True) -> None:
  """Creates ``workdir`` and writes ``config.json``, refusing an incompatible reuse.

  Args:
    workdir: the run directory.
    config: the resolved config.
    write: False on processes other than 0 (they only check).

  Raises:
    ValueError: ``workdir`` is a file, or holds a run whose model or task differs.
  """
  check_workdir(workdir)
  path = os.path.join(workdir, CONFIG_FILE)
  new = config_to_dict(config)
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    changes = incompatible_changes(saved, new)
    if changes:
      raise ValueError(
          f"--workdir {workdir!r} holds a run with a different model or task, so its "
          "checkpoints cannot continue under this config:\n  " + "\n  ".join(changes) +
          f"\nUse a new --workdir to start fresh (or delete {workdir!r}); to resume this "
          "run, launch it with its saved config.json settings.")
  if not write:
    return
  os.makedirs(workdir, exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(new, f, indent=2, sort_keys=True)
  os.replace(tmp, path)
