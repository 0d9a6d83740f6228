"""Ring attention: exact attention with the sequence split over a mesh axis (context parallelism).

Under a mesh with a ``sequence`` axis of size ``n > 1`` (``jax.set_mesh``; the train
loop's 'mesh' strategy with ``config.parallel.mesh.sequence = n``), ``dispatch`` routes
exact attention here. Queries, keys and values are split along the sequence into ``n``
equal shards inside ``jax.shard_map``; each device keeps its query shard and the key/value
shards travel around the ring (``lax.ppermute``), one step per shard (Liu et al. 2023,
"Ring Attention with Blockwise Transformers"). Each step attends the local queries to the
visiting keys with the single-device kernel the dispatcher picks for the shard (dense,
chunked or Pallas), asking for its log-sum-exp, and the partial results are merged exactly:
``lse = logaddexp(lse_a, lse_b)``, ``out = exp(lse_a - lse) out_a + exp(lse_b - lse) out_b``.

Causal attention needs no position offsets: with equal shards, the visiting shard ``j``
is entirely before (``j < i``: no mask), on (``j == i``: the ordinary causal mask) or
after (``j > i``: skipped) query shard ``i``. Gradients flow through ``ppermute`` (its
transpose is the reverse ring) and through the kernels' log-sum-exp.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec as P

from attnjax.kernels import _common

AXIS = "sequence"
BATCH_AXES = ("data", "fsdp")


def _mesh() -> Any:
  mesh = jax.sharding.get_abstract_mesh()
  return None if mesh is None or mesh.empty else mesh


def axis_size() -> int:
  """Size of the context mesh's ``sequence`` axis (1 without a mesh or that axis, or
  inside a ``shard_map`` that already made it manual)."""
  mesh = _mesh()
  if mesh is None or AXIS not in mesh.axis_names or AXIS in getattr(mesh, "manual_axes", ()):
    return 1
  return int(mesh.shape[AXIS])


def unsupported(p: _common.Problem) -> list[str]:
  """Constraints of ring attention this problem violates (empty: it fits)."""
  why: list[str] = []
  n = axis_size()
  if n == 1:
    why.append(f"implementation='ring' needs a mesh (jax.set_mesh) with a {AXIS!r} axis of "
               "size > 1")
  if p.bias is not None:
    why.append("ring does not support bias")
  if p.mask is not None and (p.mask.shape[1:4] != (1, 1, 1)):
    why.append(f"ring supports only key-padding masks [batch, 1, 1, kv_seq], got mask "
               f"{p.mask.shape} in [B, K, G, T, S] layout")
  if p.window is not None or p.pattern is not None:
    why.append("ring does not support local_window_size or sparsity_pattern")
  if p.q_lengths is not None or p.kv_lengths is not None:
    why.append("ring does not support query_seq_lengths/key_value_seq_lengths (pass a "
               "key-padding mask)")
  if p.q_segment_ids is not None:
    why.append("ring does not support segment ids")
  if p.alibi_slopes is not None or p.relative_table is not None:
    why.append("ring does not support alibi_slopes / relative_bias_table")
  if p.dropout_rate > 0:
    why.append(f"ring does not support dropout_rate={p.dropout_rate}")
  if p.causal and (p.q_len != p.kv_len or p.offset != 0):
    why.append("ring causal attention needs q_seq == kv_seq")
  if n > 1 and (p.q_len % n or p.kv_len % n):
    why.append(f"ring needs q_seq={p.q_len} and kv_seq={p.kv_len} divisible by the "
               f"{AXIS!r} axis size {n}")
  return why


def merge(out_a: jax.Array, lse_a: jax.Array, out_b: jax.Array, lse_b: jax.Array
          ) -> tuple[jax.Array, jax.Array]:
  """Softmax over the union of two key sets from each one's output and log-sum-exp.

  Args:
    out_a, out_b: ``[..., T, Dv]`` outputs over disjoint key sets (zeros where empty).
    lse_a, lse_b: ``[..., T]`` their log-sum-exps (``-inf`` where no key is live).

  Returns:
    ``(out, lse)`` over both sets; rows empty in both stay zero / ``-inf`` without NaN
    (also in the gradients: every log and division sees a safe operand).
  """
  m = jnp.maximum(lse_a, lse_b)
  m_safe = lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0.0))
  total = jnp.exp(lse_a - m_safe) + jnp.exp(lse_b - m_safe)
  empty = total == 0.0
  lse = jnp.where(empty, -jnp.inf, m_safe + jnp.log(jnp.where(empty, 1.0, total)))
  lse_safe = jnp.where(empty, 0.0, lse)
  wa = jnp.exp(lse_a - lse_safe)[..., None]
  wb = jnp.exp(lse_b - lse_safe)[..., None]
  return wa * out_a + wb * out_b, lse


def _shard_problem(p: _common.Problem, q, k, v, mask) -> _common.Problem:
  return p.replace(query=q, key=k, value=v, mask=mask, batch_shape=(q.shape[0],),
                   q_len=q.shape[3], kv_len=k.shape[2])


def _attend(p: _common.Problem) -> tuple[jax.Array, jax.Array]:
  """One shard pair on the single-device kernel the dispatcher picks (with its lse)."""
  from attnjax.kernels import dispatch  # pylint: disable=g-import-not-at-top
  choice = dispatch.choose_implementation(p, None, return_residual=True, fn="ring",
                                          allow_ring=False)
  return dispatch.get_implementation(choice.name)(p, choice)


def _varying_like(xs: Any, ref: jax.Array) -> Any:
  """``xs`` marked as varying over the manual axes ``ref`` varies over (for ``lax.cond``)."""
  axes = tuple(sorted(jax.typeof(ref).manual_axis_type.varying))
  if not axes:
    return xs
  return jax.tree.map(lambda x: lax.pcast(x, axes, to="varying"), xs)


def _ring(p: _common.Problem, n: int, q, k, v, mask):
  """The per-device body: local queries against every key/value shard in turn."""
  i = lax.axis_index(AXIS)
  perm = [(j, (j + 1) % n) for j in range(n)]
  cdt = jnp.promote_types(q.dtype, jnp.float32)
  out = jnp.zeros(q.shape[:-1] + (v.shape[-1],), cdt)
  lse = jnp.full(q.shape[:-1], -jnp.inf, cdt)
  for step in range(n):
    if step:
      k, v, mask = lax.ppermute((k, v, mask), AXIS, perm)
    sp = _shard_problem(p, q, k, v, mask)
    if step == 0:  # the own shard: the diagonal block
      o, l = _attend(sp)
    elif p.causal:  # shard j = i - step: entirely before (j < i) or after query shard i
      before = (i - step) % n < i
      skip = lambda: _varying_like(  # noqa: E731
          (jnp.zeros(out.shape, cdt), jnp.full(lse.shape, -jnp.inf, cdt)), q)
      o, l = lax.cond(before, lambda: _attend(sp.replace(causal=False)), skip)
    else:
      o, l = _attend(sp)
    out, lse = merge(out, lse, o.astype(cdt), l.astype(cdt))
  return out, lse


def run(p: _common.Problem, choice: Any) -> tuple[jax.Array, jax.Array]:
  """Dispatch entry: ``(out [B, K, G, T, Dv], lse [B, K, G, T])`` over the context mesh."""
  del choice
  mesh = _mesh()
  n = axis_size()
  batch = tuple(a for a in BATCH_AXES if a in mesh.axis_names and mesh.shape[a] > 1)
  size = 1
  for a in batch:
    size *= mesh.shape[a]
  bspec = batch if batch and p.batch % size == 0 else None
  q_spec = P(bspec, None, None, AXIS, None)
  kv_spec = P(bspec, None, AXIS, None)
  args = [p.query, p.key, p.value]
  specs = [q_spec, kv_spec, kv_spec]
  if p.mask is not None:
    mb = bspec if p.mask.shape[0] == p.batch and p.batch > 1 else None
    ms = AXIS if p.mask.shape[4] > 1 else None
    args.append(p.mask)
    specs.append(P(mb, None, None, None, ms))
  # The static part of the problem travels in the closure; only arrays cross shard_map.
  static = p.replace(query=None, key=None, value=None, mask=None)

  def body(q, k, v, mask=None):
    if mask is not None and mask.shape[4] == 1:
      mask = jnp.broadcast_to(mask, mask.shape[:4] + (k.shape[2],))
    return _ring(static, n, q, k, v, mask)

  fn = jax.shard_map(body, in_specs=tuple(specs),
                     out_specs=(q_spec, P(bspec, None, None, AXIS)))
  return fn(*args)
