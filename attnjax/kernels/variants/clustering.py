"""Content-based sparse attention: Reformer LSH attention and Sinkhorn sorting attention.

Both restrict each query to a few chunks of keys chosen from the content (hash buckets,
a learned block sort), with exact softmax inside the chunks. Neither has a causal form
here: the chunk a key lands in depends on every other key, so a future key could move
past keys in or out of a query's chunk (``is_causal`` is refused rather than leaking).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
from jax import lax

from attnjax.kernels import _common
from attnjax.kernels.registry import register_kernel
from attnjax.kernels.variants import _base

_SUPPORTS = _base.Supports()


def _pad_seq(x: jax.Array, axis: int, size: int, value: Any = 0) -> jax.Array:
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, size - x.shape[axis])
  return jnp.pad(x, widths, constant_values=value)


def _chunk_softmax(logits: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Masked softmax over the last axis: ``(probs, lse)``; empty rows give 0 and ``-inf``."""
  s = jnp.where(valid, logits, -jnp.inf)
  m = lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True))
  m = jnp.where(jnp.isfinite(m), m, 0.0)
  e = jnp.exp(s - m)
  z = jnp.sum(e, axis=-1, keepdims=True)
  probs = _base.safe_divide(e, z)
  lse = jnp.where(z > 0, jnp.log(jnp.where(z > 0, z, 1.0)) + m, -jnp.inf)[..., 0]
  return probs, lse


def _same_length(fn: str, p: _common.Problem) -> None:
  if p.q_len != p.kv_len:
    raise ValueError(f"{fn}: cross-attention is not supported: q_seq ({p.q_len}) must equal "
                     f"kv_seq ({p.kv_len}), as queries and keys are sorted into matching chunks")


# ---------------------------------------------------------------------------- Reformer


def _reformer_flops(*, q_len: int, num_heads: int, head_dim: int, num_buckets: int,
                    num_hashes: int, chunk_size: int, **_: Any) -> float:
  # Per round and query head: the rotations of the (padded) queries and keys, then each
  # chunk against its own and the previous key chunk (only its own when there is one).
  # Which keys share a chunk depends on the content; the number and size of chunks do not.
  c = min(chunk_size, q_len)
  n = -(-q_len // c)
  width = c if n == 1 else 2 * c
  hashing = 2 * n * c * head_dim * (num_buckets // 2)
  attend = n * c * width * 2 * head_dim
  return 2.0 * num_heads * num_hashes * (hashing + attend)


@register_kernel("reformer")
@_base.without_decode
@_base.without_attention_dropout
@_base.declare_flops(_reformer_flops)
def reformer_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    scale: float | None = None,
    is_causal: bool = False,
    num_buckets: int = 32,
    num_hashes: int = 1,
    chunk_size: int = 64,
    hash_seed: int = 0,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
    deterministic: bool = True,
    broadcast_dropout: bool = True,
    dtype: Any = None,
    precision: Any = None,
    module: Any = None,
    q_offset: Any = None,
) -> jax.Array:
  """Reformer LSH attention (Kitaev et al. 2020), with separate queries and keys.

  Queries and keys are hashed with the same random rotations (angular LSH:
  ``argmax([xR, -xR])`` of the unit vector), sorted by (bucket, position), cut into
  chunks of ``chunk_size``; each query chunk attends (exact softmax) to the key chunk at
  the same sorted rank and the one before it. With ``num_hashes > 1`` the rounds are
  combined by their log-sum-exp weights (a key found in several rounds is counted in each;
  the paper corrects for duplicates, this does not). Differences from the paper: no
  shared-QK (the encoder has separate projections, so no self-exclusion), no causal form
  (refused, see the module docstring), and the rotations are fixed by ``hash_seed``.
  ``O(T c)`` time and memory per round. Needs ``q_seq == kv_seq``.

  Args:
    query, key, value, mask, scale, dtype, precision: as in ``linear_attention``
      (key-padding masks only; masked keys sort last and are never attended; as
      ``q_seq == kv_seq``, masked positions' queries also sort last).
    bias, is_causal, dropout_*, module: refused.
    num_buckets: hash buckets (even).
    num_hashes: hashing rounds.
    chunk_size: ``c``.
    hash_seed: seed of the random rotations.

  Returns:
    ``[batch..., q_seq, heads, v_dim]``.
  """
  fn = "reformer_attention"
  p = _base.prepare_approximate(fn, query, key, value, bias, mask, supports=_SUPPORTS,
                                scale=scale, is_causal=is_causal, dropout_rate=dropout_rate,
                                dropout_rng=dropout_rng, deterministic=deterministic,
                                dtype=dtype, precision=precision, module=module,
                                q_offset=q_offset, no_decode_why=(
                                    'its hash buckets sort and chunk the whole sequence together'))
  _same_length(fn, p)
  if num_buckets < 2 or num_buckets % 2:
    raise ValueError(f"{fn}: num_buckets must be an even int >= 2, got {num_buckets}")
  chunk_size = _base.check_int(fn, "chunk_size", chunk_size, 1)
  num_hashes = _base.check_int(fn, "num_hashes", num_hashes, 1)
  b, kh, g, t, d = p.query.shape
  c = min(chunk_size, t)
  n = -(-t // c)
  tp = n * c
  q = _pad_seq(_base.compute(p, p.query), 3, tp)
  k = _pad_seq(jnp.broadcast_to(_base.compute(p, p.key)[:, :, None], (b, kh, g, t, d)), 3, tp)
  v = _base.compute(p, p.value)
  v = _pad_seq(jnp.broadcast_to(v[:, :, None], (b, kh, g, t, v.shape[-1])), 3, tp)
  km = _base.key_mask(p)
  valid = jnp.ones((b, kh, g, t), bool) if km is None else jnp.broadcast_to(km, (b, kh, g, t))
  valid = _pad_seq(valid, 3, tp, False)
  pos = jnp.arange(tp, dtype=jnp.int32)
  rot = jax.random.normal(jax.random.PRNGKey(int(hash_seed)), (num_hashes, d, num_buckets // 2),
                          p.compute_dtype)

  def bucket(x, r):
    x = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-6)
    proj = jnp.einsum("...d,db->...b", lax.stop_gradient(x), r, precision=precision)
    return jnp.argmax(jnp.concatenate([proj, -proj], axis=-1), axis=-1).astype(jnp.int32)

  def gather(x, order):
    return jnp.take_along_axis(x, order[..., None] if x.ndim == order.ndim + 1 else order,
                               axis=3)

  def chunks(x):
    return x.reshape(x.shape[:3] + (n, c) + x.shape[4:])

  def look_back(x):  # [.., n, c, ...] -> [.., n, 2c, ...] (own chunk and the previous one)
    return x if n == 1 else jnp.concatenate([jnp.roll(x, 1, axis=3), x], axis=4)

  outs, lses = [], []
  for r in range(num_hashes):
    # Padded queries (self-attention: masked positions) sort last too, so that they cannot
    # shift the chunk boundaries of real queries.
    qb = jnp.where(valid, bucket(q, rot[r]), num_buckets)
    kb = jnp.where(valid, bucket(k, rot[r]), num_buckets)  # masked keys sort last
    q_order = jnp.argsort(qb * tp + pos, axis=-1)
    k_order = jnp.argsort(kb * tp + pos, axis=-1)
    qs = chunks(gather(q, q_order))
    ks = look_back(chunks(gather(k, k_order)))
    vs = look_back(chunks(gather(v, k_order)))
    ok = look_back(chunks(gather(valid, k_order)))
    logits = jnp.einsum("bkgnid,bkgnjd->bkgnij", qs, ks, precision=precision) * p.scale
    probs, lse = _chunk_softmax(logits, ok[..., None, :])
    o = jnp.einsum("bkgnij,bkgnjd->bkgnid", probs, vs, precision=precision)
    undo = jnp.argsort(q_order, axis=-1)
    outs.append(gather(o.reshape(b, kh, g, tp, -1), undo))
    lses.append(gather(lse.reshape(b, kh, g, tp), undo))
  out = outs[0]
  if num_hashes > 1:
    lse = jnp.stack(lses)  # [R, B, K, G, Tp]
    top = lax.stop_gradient(jnp.max(lse, axis=0))
    top = jnp.where(jnp.isfinite(top), top, 0.0)
    w = jnp.exp(lse - top)
    w = _base.safe_divide(w, jnp.sum(w, axis=0, keepdims=True))
    out = jnp.sum(w[..., None] * jnp.stack(outs), axis=0)
  return _common.to_output(p, out[..., :t, :])


# ---------------------------------------------------------------------------- Sinkhorn


def _sinkhorn_spec(*, num_heads: int, head_dim: int, kv_len: int, block_size: int = 64,
                   **_: Any) -> dict[str, _base.ParamSpec]:
  block_size = _base.check_int("sinkhorn_attention", "block_size", block_size, 1)
  nb = -(-kv_len // block_size)
  return {"sort_net": _base.ParamSpec((num_heads, head_dim, nb), _base.normal(head_dim**-0.5),
                                      "block summary -> sorting logits over blocks")}


def sinkhorn_normalize(log_alpha: jax.Array, iterations: int) -> jax.Array:
  """Approximately doubly-stochastic ``exp(log_alpha)`` by alternating log-normalisation."""
  for _ in range(iterations):
    log_alpha = log_alpha - jax.nn.logsumexp(log_alpha, axis=-1, keepdims=True)
    log_alpha = log_alpha - jax.nn.logsumexp(log_alpha, axis=-2, keepdims=True)
  return jnp.exp(log_alpha)


def _sinkhorn_flops(*, q_len: int, num_heads: int, head_dim: int, block_size: int, **_: Any
                    ) -> float:
  bs = min(block_size, q_len)
  nb = -(-q_len // bs)
  d = head_dim
  sort = nb * d * nb  # block summaries -> sorting logits
  mixing = nb * nb * bs * (2 * d + 2)  # P K, P V and the two mixed-share vectors
  attend = nb * bs * 2 * bs * 2 * d  # each query block over its 2 * bs keys, logits and p v
  return 2.0 * num_heads * (sort + mixing + attend)


@register_kernel("sinkhorn")
@_base.without_decode
@_base.without_attention_dropout
@_base.declare_params(_sinkhorn_spec)
@_base.declare_flops(_sinkhorn_flops)
def sinkhorn_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    scale: float | None = None,
    is_causal: bool = False,
    block_size: int = 64,
    sinkhorn_iterations: int = 8,
    temperature: float = 0.75,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
    deterministic: bool = True,
    broadcast_dropout: bool = True,
    dtype: Any = None,
    precision: Any = None,
    module: Any = None,
    q_offset: Any = None,
    params: Mapping[str, jax.Array] | None = None,
) -> jax.Array:
  """Sparse Sinkhorn attention (Tay et al. 2020): local block + a learned sorted block.

  Keys are cut into blocks of ``block_size``; a sorting network (``params['sort_net']
  [heads, head_dim, num_blocks]``) scores each block's key sum against block slots, and
  Sinkhorn iterations turn the scores (divided by ``temperature``) into a soft
  permutation ``P``. Query block ``i`` attends, with one exact softmax, to the keys of
  its own block and to the ``P``-mixed block ``sum_j P_ij K_j`` (values mixed alike).
  ``O(T b)`` time and memory. Masked keys are zeroed before the summaries and mixing; a
  mixed position is masked when no unmasked key contributes to it and otherwise weighted
  by the share of unmasked keys in it (log added to its logit). Differences from the
  paper: block summaries are key sums (not input-embedding sums); no causal variant
  (refused); no SortCut. Needs ``q_seq == kv_seq``.

  Args:
    query, key, value, mask, scale, dtype, precision: as in ``linear_attention``.
    bias, is_causal, dropout_*, module: refused.
    block_size: ``b``.
    sinkhorn_iterations: normalisation rounds.
    temperature: of the sorting logits.
    params: ``{'sort_net': [heads, head_dim, >= num_blocks]}``.

  Returns:
    ``[batch..., q_seq, heads, v_dim]``.
  """
  fn = "sinkhorn_attention"
  p = _base.prepare_approximate(fn, query, key, value, bias, mask, supports=_SUPPORTS,
                                scale=scale, is_causal=is_causal, dropout_rate=dropout_rate,
                                dropout_rng=dropout_rng, deterministic=deterministic,
                                dtype=dtype, precision=precision, module=module,
                                q_offset=q_offset, no_decode_why=(
                                    'its learned block sorting mixes blocks of the whole sequence'))
  _same_length(fn, p)
  b, kh, g, t, d = p.query.shape
  bs = min(block_size, t)
  nb = -(-t // bs)
  tp = nb * bs
  prm = _base.check_params(fn, params, _sinkhorn_spec(num_heads=kh * g, head_dim=d,
                                                      kv_len=t, block_size=block_size))
  net = _base.length_slice(fn, prm["sort_net"], 2, nb, "the number of key blocks")
  net = net.reshape(kh, g, d, nb)
  km = _base.key_mask(p)
  valid = jnp.ones((b, kh, g, t), bool) if km is None else jnp.broadcast_to(km, (b, kh, g, t))
  valid = _pad_seq(valid, 3, tp, False)
  vf = valid.astype(p.compute_dtype)[..., None]
  q = _pad_seq(_base.compute(p, p.query), 3, tp).reshape(b, kh, g, nb, bs, d)
  k = _pad_seq(jnp.broadcast_to(_base.compute(p, p.key)[:, :, None], (b, kh, g, t, d)), 3, tp)
  v = _base.compute(p, p.value)
  v = _pad_seq(jnp.broadcast_to(v[:, :, None], (b, kh, g, t, v.shape[-1])), 3, tp)
  k = (k * vf).reshape(b, kh, g, nb, bs, d)
  v = (v * vf).reshape(b, kh, g, nb, bs, -1)
  vb = vf[..., 0].reshape(b, kh, g, nb, bs)
  summary = jnp.sum(k, axis=4)  # [B, K, G, nb, D]
  sort_logits = jnp.einsum("bkgnd,kgdm->bkgnm", summary, net, precision=precision)
  perm = sinkhorn_normalize(sort_logits / temperature, sinkhorn_iterations)  # [.., nb, nb]
  k_sorted = jnp.einsum("bkgij,bkgjsd->bkgisd", perm, k, precision=precision)
  v_sorted = jnp.einsum("bkgij,bkgjsd->bkgisd", perm, v, precision=precision)
  share = jnp.einsum("bkgij,bkgjs->bkgis", perm, vb, precision=precision)
  weight = _base.safe_divide(share, jnp.einsum("bkgij,bkgjs->bkgis", perm,
                                               jnp.ones_like(vb)))
  keys = jnp.concatenate([k, k_sorted], axis=4)  # [B, K, G, nb, 2b, D]
  vals = jnp.concatenate([v, v_sorted], axis=4)
  ok = jnp.concatenate([vb > 0, weight > 0], axis=-1)
  logit_bias = jnp.concatenate([jnp.zeros_like(weight),
                                jnp.log(jnp.where(weight > 0, weight, 1.0))], axis=-1)
  logits = jnp.einsum("bkgnid,bkgnjd->bkgnij", q, keys, precision=precision) * p.scale
  probs, _ = _chunk_softmax(logits + logit_bias[..., None, :], ok[..., None, :])
  out = jnp.einsum("bkgnij,bkgnjd->bkgnid", probs, vals, precision=precision)
  out = out.reshape(b, kh, g, tp, -1)[..., :t, :]
  # A query with every key masked gets zeros (the contract), not mixed-block leftovers.
  if km is not None:
    out = jnp.where(jnp.any(valid, axis=-1)[..., None, None], out, 0.0)
  return _common.to_output(p, out)
