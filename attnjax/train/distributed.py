"""Multi-process start-up: ``jax.distributed.initialize`` from the config or the cluster.

Must run before anything touches a JAX backend (``launch.py`` calls it first).
"""

from __future__ import annotations

import os

import jax
import ml_collections

_CLUSTER_HINTS = (
    ("SLURM_NTASKS", lambda v: int(v) > 1),
    ("OMPI_COMM_WORLD_SIZE", lambda v: int(v) > 1),
    ("TPU_WORKER_HOSTNAMES", lambda v: "," in v),
    ("MEGASCALE_NUM_SLICES", lambda v: int(v) > 1),
)


def _on_a_cluster() -> bool:
  for var, is_multi in _CLUSTER_HINTS:
    value = os.environ.get(var)
    if value:
      try:
        if is_multi(value):
          return True
      except ValueError:
        continue
  return False


def maybe_initialize(parallel: ml_collections.ConfigDict) -> bool:
  """Starts JAX's multi-process runtime when the config or the environment asks for it.

  ``config.parallel.distributed``: ``'auto'`` (initialise when a coordinator address is
  configured or a multi-process SLURM / Open MPI / TPU-pod environment is detected),
  ``'on'`` (always; JAX reads the cluster environment) or ``'off'``. With
  ``coordinator_address``, ``num_processes`` and ``process_id`` set, those are used (e.g.
  ``127.0.0.1:12345``, 2, 0 for a local test). On CPU, cross-process collectives use gloo.

  Returns:
    Whether ``jax.distributed.initialize`` was called.
  """
  mode = parallel.get("distributed", "auto")
  if mode not in ("auto", "on", "off"):
    raise ValueError(f"config.parallel.distributed={mode!r}; expected 'auto', 'on' or 'off'")
  address = parallel.get("coordinator_address", "")
  if mode == "off" or (mode == "auto" and not address and not _on_a_cluster()):
    return False
  kwargs = {}
  if address:
    num, pid = int(parallel.get("num_processes", 0)), int(parallel.get("process_id", -1))
    if num < 1 or not 0 <= pid < num:
      raise ValueError(
          f"config.parallel.coordinator_address={address!r} needs num_processes >= 1 and "
          f"0 <= process_id < num_processes (got num_processes={num}, process_id={pid})")
    kwargs = dict(coordinator_address=address, num_processes=num, process_id=pid)
  if os.environ.get("JAX_PLATFORMS", "").startswith("cpu"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**kwargs)
  return True
