"""Parallel strategies around the one pure train step: 'jit', 'pmap' and 'mesh'.

* ``jit``: one device. The state and batch live on ``jax.devices()[0]``.
* ``pmap``: data parallel over every local device with ``jax.pmap``; the state is
  replicated (a leading device axis), each device gets ``B / n`` examples and gradients are
  averaged with ``lax.pmean`` inside the step. (``jax.pmap`` is in maintenance mode since
  JAX 0.8; it is offered because many codebases still use it.)
* ``mesh``: ``jax.jit`` with ``NamedSharding`` over a ``Mesh`` with axes
  ``('data', 'fsdp', 'sequence', 'tensor')``. The batch is split over ``data x fsdp``;
  parameters are sharded by :data:`PARAM_RULES`: matrices over ``fsdp`` (ZeRO-3 style) and
  attention heads and MLP hidden units over ``tensor`` (Megatron-style tensor parallelism).
  XLA inserts the collectives. With ``sequence > 1`` the step is traced under the mesh
  (``jax.sharding.use_abstract_mesh``) and exact attention runs as ring attention over the ``sequence`` axis
  (``attnjax.kernels.ring``: queries, keys and values split along the sequence). This is
  the primary path, on one host or many.

Every strategy saves and restores the same checkpoint layout (unreplicated, global
arrays), so a run can resume under another strategy or device count.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

STRATEGIES = ("jit", "pmap", "mesh")
MESH_AXES = ("data", "fsdp", "sequence", "tensor")
BATCH_AXES = ("data", "fsdp")

# (regex on the '/'-joined parameter path, spec per dimension). The first match wins;
# unmatched leaves are replicated. Optimizer-state leaves end with the same path as their
# parameter, so they follow the same rule. Query/key/value kernels are [D, heads, head_dim],
# the output kernel [heads, head_dim, D], MLP kernels [D, F] and [F, D], embeddings [V, D].
PARAM_RULES: tuple[tuple[str, tuple[Any, ...]], ...] = (
    (r"attention/(query|key|value)/kernel$", ("fsdp", "tensor", None)),
    (r"attention/(query|key|value)/bias$", ("tensor", None)),
    (r"attention/out/kernel$", ("tensor", None, "fsdp")),
    (r"mlp/wi/kernel$", ("fsdp", "tensor")),
    (r"mlp/wi/bias$", ("tensor",)),
    (r"mlp/wo/kernel$", ("tensor", "fsdp")),
    (r"(word|token_type)_embeddings/embedding$", (None, "fsdp")),
    (r"position_embeddings$", (None, "fsdp")),
)


def _path_str(path) -> str:
  parts = []
  for k in path:
    name = getattr(k, "key", None) or getattr(k, "name", None)
    parts.append(str(name if name is not None else getattr(k, "idx", k)))
  return "/".join(parts)


def partition_spec(path: str, shape: tuple[int, ...], mesh: Mesh) -> P:
  """The PartitionSpec of a parameter (or optimizer-state leaf) at ``path``.

  A dimension that the mesh axis does not divide is left unsharded (and logged), so a
  small model never fails to place; size-1 axes are dropped.
  """
  for pattern, spec in PARAM_RULES:
    if re.search(pattern, path) and len(shape) == len(spec) + 1:
      spec = (None,) + spec  # stacked by scan_layers: the layer axis is not sharded
    if re.search(pattern, path) and len(spec) == len(shape):
      out = []
      for dim, axis in zip(shape, spec):
        size = mesh.shape[axis] if axis else 1
        if axis is None or size == 1:
          out.append(None)
        elif dim % size:
          logging.info("not sharding %s dim %d over %s=%d (not divisible)", path, dim, axis, size)
          out.append(None)
        else:
          out.append(axis)
      return P(*out)
  return P()


@dataclasses.dataclass
class Strategy:
  """How arrays are placed and how the step is compiled.

  Attributes:
    name: 'jit', 'pmap' or 'mesh'.
    mesh: the device mesh ('mesh'; for 'jit' a 1-device mesh; for 'pmap' the local devices
      on one axis).
    num_devices: devices that share a batch.
  """

  name: str
  mesh: Mesh
  num_devices: int

  # --- placement ---------------------------------------------------------------------
  def state_shardings(self, abstract_state: Any) -> Any:
    """NamedShardings for every leaf of the (unreplicated) state."""
    if self.name != "mesh":
      replicated = NamedSharding(self.mesh, P())
      return jax.tree_util.tree_map(lambda _: replicated, abstract_state)
    return jax.tree_util.tree_map_with_path(
        lambda path, x: NamedSharding(self.mesh, partition_spec(_path_str(path), x.shape,
                                                                self.mesh)),
        abstract_state)

  def batch_sharding(self) -> NamedSharding:
    if self.name == "mesh":
      return NamedSharding(self.mesh, P(BATCH_AXES))
    if self.name == "pmap":
      return NamedSharding(self.mesh, P("devices"))
    return NamedSharding(self.mesh, P())

  def to_device_state(self, state: Any) -> Any:
    """From the checkpoint layout (global arrays) to what the step takes."""
    if self.name != "pmap":
      return state
    n = self.num_devices
    sharding = NamedSharding(self.mesh, P("devices"))
    return jax.tree_util.tree_map(
        lambda x: jax.device_put(jnp.broadcast_to(x, (n,) + x.shape), sharding), state)

  def to_checkpoint_state(self, state: Any) -> Any:
    """From what the step returns to the checkpoint layout (replica 0 for pmap)."""
    if self.name != "pmap":
      return state
    return jax.tree_util.tree_map(lambda x: x[0], state)

  def put_batch(self, local_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """Places this process's rows of the global batch."""
    if self.name == "pmap":
      n = self.num_devices
      def split(x):
        if x.shape[0] % n:
          raise ValueError(f"per-process batch of {x.shape[0]} is not divisible by "
                           f"{n} local devices (strategy 'pmap')")
        return x.reshape((n, x.shape[0] // n) + x.shape[1:])
      return jax.device_put({k: split(v) for k, v in local_batch.items()},
                            self.batch_sharding())
    sharding = self.batch_sharding()
    return {k: jax.make_array_from_process_local_data(sharding, v)
            for k, v in local_batch.items()}

  # --- compilation -------------------------------------------------------------------
  def compile_train_step(self, step_fn: Callable, abstract_state: Any) -> Callable:
    """``step_fn(state, batch, axis_name) -> (state, metrics)`` compiled for the strategy."""
    if self.name == "pmap":
      fn = lambda state, batch: step_fn(state, batch, "devices")  # noqa: E731
      pmapped = jax.pmap(fn, axis_name="devices", donate_argnums=0)
      return lambda state, batch: _first_replica_metrics(pmapped(state, batch))
    shardings = self.state_shardings(abstract_state)
    replicated = NamedSharding(self.mesh, P())
    return jax.jit(self._under_mesh(lambda s, b: step_fn(s, b, None)),
                   in_shardings=(shardings, self.batch_sharding()),
                   out_shardings=(shardings, replicated), donate_argnums=0)

  def compile_eval_step(self, eval_fn: Callable, abstract_state: Any) -> Callable:
    """``eval_fn(state, batch) -> sums`` compiled for the strategy (sums are global)."""
    if self.name == "pmap":
      pmapped = jax.pmap(lambda s, b: jax.lax.psum(eval_fn(s, b), "devices"),
                         axis_name="devices")
      return lambda state, batch: jax.tree_util.tree_map(lambda x: x[0], pmapped(state, batch))
    return jax.jit(self._under_mesh(eval_fn), in_shardings=(self.state_shardings(abstract_state),
                                          self.batch_sharding()),
                   out_shardings=NamedSharding(self.mesh, P()))

  def _under_mesh(self, fn: Callable) -> Callable:
    """``fn`` traced under the mesh when it has a ``sequence`` axis (ring attention reads it)."""
    if self.name != "mesh" or self.mesh.shape.get("sequence", 1) == 1:
      return fn

    def traced_under_mesh(*args):
      # jax.set_mesh is refused inside jit; the abstract mesh is what shard_map reads.
      with jax.sharding.use_abstract_mesh(self.mesh.abstract_mesh):
        return fn(*args)
    return traced_under_mesh

  def init_state(self, init_fn: Callable, abstract_state: Any, rng: jax.Array) -> Any:
    """Initialises the state directly in its final placement (no host copy)."""
    state = jax.jit(init_fn, out_shardings=self.state_shardings(abstract_state))(rng)
    return self.to_device_state(state)

  def abstract_with_shardings(self, abstract_state: Any) -> Any:
    """ShapeDtypeStructs carrying target shardings, for Orbax to restore into."""
    return jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        abstract_state, self.state_shardings(abstract_state))


def _first_replica_metrics(out):
  state, metrics = out
  return state, jax.tree_util.tree_map(lambda x: x[0], metrics)


def build_strategy(parallel: ml_collections.ConfigDict, *, global_batch_size: int,
                   devices: Any = None) -> Strategy:
  """Builds the strategy named by ``config.parallel.strategy`` and checks the batch.

  Keys: ``strategy`` ('jit' | 'pmap' | 'mesh'); ``mesh.data``, ``mesh.fsdp``,
  ``mesh.sequence``, ``mesh.tensor`` (one may be -1: all remaining devices).

  ``devices`` (for 'mesh'): the devices to lay out, e.g. a TPU topology's to compile for
  it on another host; default ``jax.devices()``.

  Raises:
    ValueError: unknown strategy, a mesh that does not match the device count, or a global
      batch that the devices do not divide.
  """
  name = parallel.strategy
  if name not in STRATEGIES:
    raise ValueError(f"config.parallel.strategy={name!r}; expected one of {STRATEGIES}")
  if name == "jit":
    mesh = Mesh(np.array(jax.devices()[:1]), ("devices",))
    return Strategy(name, mesh, 1)
  if name == "pmap":
    local = jax.local_devices()
    total = jax.device_count()
    if global_batch_size % total:
      raise ValueError(f"config.train.batch_size={global_batch_size} is not divisible by "
                       f"{total} devices (strategy 'pmap')")
    return Strategy(name, Mesh(np.array(local), ("devices",)), total)
  devices = jax.devices() if devices is None else list(devices)
  sizes = mesh_shape(parallel.mesh, len(devices))
  # Auto axes: XLA's partitioner propagates shardings from the parameters and the batch
  # (JAX 0.10's make_mesh defaults to Explicit axes, which type-check every gather).
  mesh = jax.make_mesh(sizes, MESH_AXES, devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))
  batch_shards = sizes[0] * sizes[1]
  if global_batch_size % batch_shards:
    raise ValueError(f"config.train.batch_size={global_batch_size} is not divisible by "
                     f"data x fsdp = {sizes[0]} x {sizes[1]} = {batch_shards} (strategy 'mesh')")
  return Strategy(name, mesh, len(devices))


def mesh_shape(mesh_config: ml_collections.ConfigDict, num_devices: int
               ) -> tuple[int, int, int, int]:
  """Resolves ``(data, fsdp, sequence, tensor)`` sizes; one may be -1 (the rest)."""
  sizes = [int(mesh_config.get(a, 1)) for a in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"config.parallel.mesh: at most one axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
  if any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f"config.parallel.mesh sizes must be positive or -1, got "
                     f"{dict(zip(MESH_AXES, sizes))}")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(f"config.parallel.mesh {dict(zip(MESH_AXES, sizes))} does not divide "
                       f"{num_devices} devices")
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ValueError(f"config.parallel.mesh {dict(zip(MESH_AXES, sizes))} uses "
                     f"{math.prod(sizes)} devices but {num_devices} are present")
  return tuple(sizes)  # type: ignore[return-value]
