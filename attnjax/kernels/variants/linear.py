"""Kernelised (linear) attention: linear transformer and Performer FAVOR+.

Both replace ``softmax(q k^T)`` by ``phi(q) phi(k)^T`` for a positive feature map ``phi``,
so that ``out_i = phi(q_i)^T (sum_j phi(k_j) v_j^T) / phi(q_i)^T (sum_j phi(k_j))`` costs
``O(T * m * d)`` time and ``O((T + m) * d)`` memory instead of ``O(T * S)``. The causal
form uses prefix sums of ``phi(k_j) v_j^T``, computed chunk by chunk (a scan over chunks
carrying the ``[m, d]`` state, exact within a chunk), so no ``[T, m, d]`` tensor exists.

Supported: key-padding masks (``[batch, 1|heads, 1, kv_seq]``; masked keys get
``phi = 0``), ``is_causal`` (``q_seq == kv_seq``), GQA. Refused with a ``ValueError``:
``bias``, masks that vary over queries, dropout (no probabilities exist), ``module``.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from attnjax.kernels import _common
from attnjax.kernels.registry import register_kernel
from attnjax.kernels.variants import _base

_SUPPORTS = _base.Supports(causal=True)
# Causal kernelised attention is a recurrence and could decode; not implemented here.
_NO_DECODE = ("its causal prefix-sum form assumes q_seq == kv_seq from position 0 (no "
              "recurrent decoding form is implemented)")


def feature_attention(phi_q: jax.Array, phi_k: jax.Array, value: jax.Array, *, causal: bool,
                      chunk_size: int = 64, precision: Any = None) -> jax.Array:
  """``phi(q) [phi(k)^T v] / phi(q) [phi(k)^T 1]``, non-causal or causal.

  Args:
    phi_q: ``[B, K, G, T, M]`` non-negative query features.
    phi_k: ``[B, K, G|1, S, M]`` non-negative key features (0 for masked keys).
    value: ``[B, K, S, Dv]``.
    causal: query ``i`` sums over keys ``j <= i`` (needs ``T == S``).
    chunk_size: chunk length of the causal prefix-sum scan.
    precision: matmul precision.

  Returns:
    ``[B, K, G, T, Dv]``; rows whose normaliser is 0 (every key masked) are 0.
  """
  phi_k = jnp.broadcast_to(phi_k, phi_k.shape[:2] + (phi_q.shape[2],) + phi_k.shape[3:])
  if not causal:
    kv = jnp.einsum("bkgsm,bksd->bkgmd", phi_k, value, precision=precision)
    z = jnp.sum(phi_k, axis=-2)  # [B, K, G|1, M]
    num = jnp.einsum("bkgtm,bkgmd->bkgtd", phi_q, kv, precision=precision)
    den = jnp.einsum("bkgtm,bkgm->bkgt", phi_q, z, precision=precision)
    return _base.safe_divide(num, den[..., None])
  b, kh, g, t, m = phi_q.shape
  gk = phi_k.shape[2]
  dv = value.shape[-1]
  c = min(chunk_size, t)
  n = -(-t // c)
  pad = n * c - t

  def chunks(x, axis):
    x = jnp.pad(x, [(0, 0)] * axis + [(0, pad)] + [(0, 0)] * (x.ndim - axis - 1))
    x = x.reshape(x.shape[:axis] + (n, c) + x.shape[axis + 1:])
    return jnp.moveaxis(x, axis, 0)

  qc, kc, vc = chunks(phi_q, 3), chunks(phi_k, 3), chunks(value, 2)
  tril = jnp.tril(jnp.ones((c, c), bool))

  def step(carry, xs):
    state, z = carry  # [B, K, G|1, M, Dv], [B, K, G|1, M]
    q, k, v = xs
    # Within the chunk exact masked products; across chunks the carried prefix sums.
    a = jnp.where(tril, jnp.einsum("bkgtm,bkgsm->bkgts", q, k, precision=precision), 0.0)
    num = (jnp.einsum("bkgtm,bkgmd->bkgtd", q, state, precision=precision)
           + jnp.einsum("bkgts,bksd->bkgtd", a, v, precision=precision))
    den = jnp.einsum("bkgtm,bkgm->bkgt", q, z, precision=precision) + jnp.sum(a, axis=-1)
    state = state + jnp.einsum("bkgsm,bksd->bkgmd", k, v, precision=precision)
    z = z + jnp.sum(k, axis=-2)
    return (state, z), _base.safe_divide(num, den[..., None])

  init = (jnp.zeros((b, kh, gk, m, dv), phi_q.dtype), jnp.zeros((b, kh, gk, m), phi_q.dtype))
  _, out = lax.scan(step, init, (qc, kc, vc))  # [n, B, K, G, c, Dv]
  out = jnp.moveaxis(out, 0, 3).reshape(b, kh, g, n * c, dv)
  return out[..., :t, :]


def feature_attention_flops(*, q_len: int, kv_len: int, num_heads: int, num_features: int,
                            v_dim: int, causal: bool, chunk_size: int) -> float:
  """Matmul FLOPs of :func:`feature_attention` on one sequence (``num_heads`` query heads).

  Non-causal: ``phi(k)^T v``, ``phi(q) [..]`` and the normaliser ``phi(q) z``. Causal: per
  chunk of ``c`` (the last one padded) the in-chunk ``phi(q) phi(k)^T`` and its product with
  ``v``, the products with the carried state and normaliser, and the state update; the
  in-chunk ``[c, c]`` products make it cost more than the non-causal form.
  """
  m, dv = num_features, v_dim
  if not causal:
    return 2.0 * num_heads * (kv_len * m * dv + q_len * m * dv + q_len * m)
  c = min(chunk_size, q_len)
  n = -(-q_len // c)
  per_chunk = c * c * m + c * c * dv + 2 * c * m * dv + c * m
  return 2.0 * num_heads * n * per_chunk


def _mask_features(p: _common.Problem, phi_k: jax.Array) -> jax.Array:
  """Zeroes the features of masked keys; ``phi_k [B, K, S, M] -> [B, K, G|1, S, M]``."""
  phi_k = phi_k[:, :, None]
  km = _base.key_mask(p)
  return phi_k if km is None else jnp.where(km[..., None], phi_k, 0.0)


def _linear_flops(*, q_len: int, kv_len: int, num_heads: int, head_dim: int, is_causal: bool,
                  chunk_size: int, **_: Any) -> float:
  # The elu+1 feature map is elementwise: the features are head_dim wide.
  return feature_attention_flops(q_len=q_len, kv_len=kv_len, num_heads=num_heads,
                                 num_features=head_dim, v_dim=head_dim, causal=is_causal,
                                 chunk_size=chunk_size)


@register_kernel("linear")
@_base.without_decode
@_base.without_attention_dropout
@_base.declare_flops(_linear_flops)
def linear_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    scale: float | None = None,
    is_causal: bool = False,
    chunk_size: int = 64,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
    deterministic: bool = True,
    broadcast_dropout: bool = True,
    dtype: Any = None,
    precision: Any = None,
    module: Any = None,
    q_offset: Any = None,
) -> jax.Array:
  """Linear attention with ``phi(x) = elu(x) + 1`` (Katharopoulos et al. 2020).

  ``out_i = phi(q_i)^T sum_j phi(k_j) v_j^T / phi(q_i)^T sum_j phi(k_j)``: NOT an
  approximation of softmax attention but a different, kernel-based similarity
  ``phi(q)^T phi(k)``; ``O(T d^2)`` time, ``O(T d)`` memory; causal via chunked prefix sums.
  ``scale`` (default ``1/sqrt(head_dim)``) multiplies ``q`` before the feature map.

  Args:
    query: ``[batch..., q_seq, heads, head_dim]``.
    key: ``[batch..., kv_seq, kv_heads, head_dim]``; GQA/MQA when kv_heads < heads.
    value: ``[batch..., kv_seq, kv_heads, v_dim]``.
    bias: refused (ValueError).
    mask: key-padding mask broadcastable to ``[batch..., heads|1, 1, kv_seq]``; others
      are refused.
    scale: see above.
    is_causal: query ``i`` sees keys ``<= i`` (``q_seq == kv_seq``).
    chunk_size: chunk of the causal scan (cost ``O(T (c + d) d)``).
    dropout_rate, dropout_rng, deterministic, broadcast_dropout: dropout is refused unless
      ``deterministic`` or ``dropout_rate == 0``.
    dtype, precision: as in ``dot_product_attention`` (features in float32).
    module: refused.

  Returns:
    ``[batch..., q_seq, heads, v_dim]``.
  """
  fn = "linear_attention"
  p = _base.prepare_approximate(fn, query, key, value, bias, mask, supports=_SUPPORTS,
                                scale=scale, is_causal=is_causal, dropout_rate=dropout_rate,
                                dropout_rng=dropout_rng, deterministic=deterministic,
                                dtype=dtype, precision=precision, module=module,
                                q_offset=q_offset, no_decode_why=_NO_DECODE)
  q = _base.compute(p, p.query) * p.scale
  phi_q = jax.nn.elu(q) + 1.0
  phi_k = _mask_features(p, jax.nn.elu(_base.compute(p, p.key)) + 1.0)
  out = feature_attention(phi_q, phi_k, _base.compute(p, p.value), causal=p.causal,
                          chunk_size=chunk_size, precision=precision)
  return _common.to_output(p, out)


# ------------------------------------------------------------------------ Performer


def orthogonal_features(rng: jax.Array, num_features: int, dim: int,
                        orthogonal: bool = True) -> jax.Array:
  """Random projection ``W [num_features, dim]`` with rows ~ N(0, I) (in norm).

  Orthogonal random features (Choromanski et al. 2021, sec. 4.2): blocks of ``dim``
  exactly orthogonal directions (QR of a Gaussian matrix) rescaled by the norms of
  independent Gaussian vectors, so each row is marginally N(0, I) but rows within a
  block are orthogonal (lower estimator variance).
  """
  if not orthogonal:
    return jax.random.normal(rng, (num_features, dim), jnp.float32)
  n_blocks = -(-num_features // dim)
  keys = jax.random.split(rng, n_blocks + 1)
  blocks = []
  for i in range(n_blocks):
    q, _ = jnp.linalg.qr(jax.random.normal(keys[i], (dim, dim), jnp.float32))
    blocks.append(q.T)
  w = jnp.concatenate(blocks, axis=0)[:num_features]
  norms = jnp.linalg.norm(jax.random.normal(keys[-1], (num_features, dim), jnp.float32),
                          axis=-1)
  return w * norms[:, None]


def favor_features(x: jax.Array, w: jax.Array, *, is_query: bool,
                   valid: jax.Array | None = None, precision: Any = None) -> jax.Array:
  """Positive random features ``exp(w^T x - |x|^2 / 2 - c) / sqrt(m)`` (FAVOR+).

  ``c`` is a stabiliser with no gradient: the row max for queries (a per-query constant
  cancels between numerator and denominator), the max over all valid keys of a head for
  keys (a per-head constant cancels likewise).

  Args:
    x: ``[..., N, D]`` already multiplied by ``sqrt(scale)``.
    w: ``[M, D]``.
    is_query: which stabiliser to use.
    valid: for keys, bool broadcastable to ``[..., N]``: keys included in the max.
    precision: matmul precision.

  Returns:
    ``[..., N, M]``.
  """
  proj = jnp.einsum("...nd,md->...nm", x, w, precision=precision)
  sq = 0.5 * jnp.sum(x * x, axis=-1, keepdims=True)
  if is_query:
    c = jnp.max(proj, axis=-1, keepdims=True)
  else:
    live = proj if valid is None else jnp.where(valid[..., None], proj, -jnp.inf)
    c = jnp.max(live, axis=(-2, -1), keepdims=True)
    c = jnp.where(jnp.isfinite(c), c, 0.0)
  c = lax.stop_gradient(c)
  return jnp.exp(proj - sq - c) / math.sqrt(w.shape[0])


def _performer_flops(*, q_len: int, kv_len: int, num_heads: int, num_kv_heads: int,
                     head_dim: int, is_causal: bool, num_features: int, chunk_size: int,
                     **_: Any) -> float:
  # Projections w^T x: queries per query head, keys once per kv head. Drawing the features
  # (QRs of [head_dim, head_dim] blocks) does not grow with the sequence and is left out.
  projections = 2.0 * num_features * head_dim * (q_len * num_heads + kv_len * num_kv_heads)
  return projections + feature_attention_flops(
      q_len=q_len, kv_len=kv_len, num_heads=num_heads, num_features=num_features,
      v_dim=head_dim, causal=is_causal, chunk_size=chunk_size)


@register_kernel("performer")
@_base.without_decode
@_base.without_attention_dropout
@_base.declare_flops(_performer_flops)
def performer_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    scale: float | None = None,
    is_causal: bool = False,
    num_features: int = 256,
    orthogonal: bool = True,
    feature_seed: int = 0,
    redraw_features: bool = False,
    feature_rng: jax.Array | None = None,
    chunk_size: int = 64,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
    deterministic: bool = True,
    broadcast_dropout: bool = True,
    dtype: Any = None,
    precision: Any = None,
    module: Any = None,
    q_offset: Any = None,
) -> jax.Array:
  """Performer FAVOR+: unbiased random-feature estimate of softmax attention.

  Choromanski et al. 2021: ``exp(q . k * scale) = E_w[phi(q)^T phi(k)]`` with positive
  random features ``phi(x) = exp(w^T x - |x|^2/2) / sqrt(m)``, ``w ~ N(0, I)``
  (orthogonal blocks). The output is a ratio of two unbiased estimates, so it is biased
  but consistent: its error against exact softmax attention falls like
  ``1 / sqrt(num_features)`` (tested). ``O(T m d)`` time, ``O((T + m) d)`` memory;
  causal via chunked prefix sums.

  Args:
    query, key, value, bias, mask, is_causal, dropout_*, dtype, precision, module: as in
      :func:`linear_attention` (bias, query-varying masks, dropout and module refused).
    scale: logit scale to approximate (default ``1/sqrt(head_dim)``).
    num_features: ``m``, the number of random features.
    orthogonal: orthogonal random features (else i.i.d. Gaussian).
    feature_seed: seed of the fixed features (one draw per configuration).
    redraw_features: draw features from ``feature_rng`` when it is given (the attention
      layer passes a fresh key each training step, as the paper's redrawing); without
      ``feature_rng`` (evaluation) the fixed ``feature_seed`` draw is used.
    feature_rng: PRNG key for the features.
    chunk_size: chunk of the causal scan.

  Returns:
    ``[batch..., q_seq, heads, v_dim]``.
  """
  fn = "performer_attention"
  if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
    raise ValueError(f"{fn}: num_features must be a positive int, got {num_features!r}")
  if feature_rng is not None and not redraw_features:
    raise _base.refuse(fn, "feature_rng", "it is only used with redraw_features=True")
  p = _base.prepare_approximate(fn, query, key, value, bias, mask, supports=_SUPPORTS,
                                scale=scale, is_causal=is_causal, dropout_rate=dropout_rate,
                                dropout_rng=dropout_rng, deterministic=deterministic,
                                dtype=dtype, precision=precision, module=module,
                                q_offset=q_offset, no_decode_why=_NO_DECODE)
  d = p.query.shape[-1]
  rng = feature_rng if (redraw_features and feature_rng is not None) else jax.random.PRNGKey(
      int(feature_seed))
  w = orthogonal_features(rng, num_features, d, orthogonal).astype(p.compute_dtype)
  if not p.scale > 0:
    raise _base.refuse(fn, "scale", f"FAVOR+ estimates exp(scale q.k) with features of "
                       f"sqrt(scale) q and sqrt(scale) k, so scale must be > 0, got {p.scale}")
  root = math.sqrt(p.scale)
  km = _base.key_mask(p)
  phi_q = favor_features(_base.compute(p, p.query) * root, w, is_query=True,
                         precision=precision)
  k = _base.compute(p, p.key)[:, :, None] * root  # [B, K, 1, S, D]
  phi_k = favor_features(k, w, is_query=False, valid=km, precision=precision)
  if km is not None:
    phi_k = jnp.where(km[..., None], phi_k, 0.0)
  out = feature_attention(phi_q, phi_k, _base.compute(p, p.value), causal=p.causal,
                          chunk_size=chunk_size, precision=precision)
  return _common.to_output(p, out)


def _performer_wants_rng(*, redraw_features: bool = False, **_: Any) -> bool:
  return bool(redraw_features)


# The attention layer passes ``feature_rng`` (a fresh key per training step) when this says so.
performer_attention.wants_rng = _performer_wants_rng
