"""The article's scoring functions: cosine, additive (Bahdanau), general (Luong), unscaled.

All four are *exact* softmax attention with a different score ``e(q_i, k_j)``; each
computes its scores (or rewrites q/k so that the dot product is its score) and then runs
``dot_product_attention``, so masks, causal/window masks, lengths, segments, position
biases, dropout, GQA, fully-masked-row zeros and the chunked O(seq) path all carry over.
Options of ``dot_product_attention`` not listed in a signature are forwarded to it.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
from jax import lax

from attnjax.kernels import _common
from attnjax.kernels.dot_product import dot_product_attention
from attnjax.kernels.registry import register_kernel
from attnjax.kernels.variants import _base


def output_dtype(dtype: Any, *xs: Any) -> Any:
  """The kernel's output dtype: ``dtype`` if given, else the inputs' common dtype."""
  return jnp.dtype(dtype) if dtype is not None else jnp.result_type(*xs)


def as_float32(x: Any) -> jax.Array:
  """``x`` promoted to at least float32 (float64 stays)."""
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


# ----------------------------------------------------------------------------- cosine


def _cosine_multiplier(fn: str, scale: float | None, temperature: float | None) -> float:
  if scale is not None and temperature is not None:
    raise ValueError(f"{fn}: give scale or temperature (scale = 1 / temperature), not both")
  if temperature is not None:
    if not temperature > 0:
      raise ValueError(f"{fn}: temperature must be > 0, got {temperature}")
    return 1.0 / float(temperature)
  if scale is None:
    return 10.0  # Swin v2's initial logit scale
  # A traced (learnable) multiplier is kept as it is, as dot_product_attention does.
  value, traced = _common.canonical_scale(scale, 1, fn)
  return value if traced is None else traced


def _cosine_spec(*, num_heads: int, learnable_scale: bool = False, scale: float | None = None,
                 temperature: float | None = None, **_: Any) -> dict[str, _base.ParamSpec]:
  if not learnable_scale:
    return {}
  tau = _cosine_multiplier("cosine_attention", scale, temperature)
  if not isinstance(tau, float) or not tau > 0:
    raise ValueError("cosine_attention: learnable_scale starts from log(scale), so scale must "
                     f"be a positive number, got {tau}")
  init = math.log(tau)
  return {"logit_scale": _base.ParamSpec((num_heads,), _base.constant(init),
                                         "per-head log logit scale (Swin v2), clamped")}


@register_kernel("cosine")
@_base.declare_params(_cosine_spec)
def cosine_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    scale: float | None = None,
    temperature: float | None = None,
    learnable_scale: bool = False,
    max_logit_scale: float = 100.0,
    eps: float = 1e-6,
    is_causal: bool = False,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
    deterministic: bool = True,
    broadcast_dropout: bool = True,
    dtype: Any = None,
    precision: Any = None,
    module: Any = None,
    params: Mapping[str, jax.Array] | None = None,
    **options: Any,
) -> jax.Array:
  """Cosine-similarity attention ``softmax(tau * cos(q_i, k_j) + bias) v`` (exact).

  The article's cosine scoring; with ``learnable_scale`` it is Swin Transformer v2's
  scaled cosine attention (Liu et al. 2022): ``tau = exp(min(logit_scale_h, log(max)))``,
  one learnable ``logit_scale`` per head. Logits are bounded by ``tau``, which is why
  ``logits_soft_cap`` is refused.

  Args:
    query: ``[batch..., q_seq, heads, head_dim]``.
    key: ``[batch..., kv_seq, kv_heads, head_dim]`` (GQA/MQA when kv_heads < heads).
    value: ``[batch..., kv_seq, kv_heads, v_dim]``.
    bias, mask, is_causal, dropout_*, broadcast_dropout, dtype, precision, module: as in
      ``dot_product_attention``.
    scale: fixed logit multiplier ``tau`` (default 10, Swin v2's initial value).
    temperature: alternatively ``1 / tau``.
    learnable_scale: use ``params['logit_scale']`` ``[heads]`` (initialised to
      ``log(tau)``) instead of a fixed ``tau``.
    max_logit_scale: clamp of the learnable ``tau`` (Swin v2: 100).
    eps: floor of the norms (a zero query/key gets cosine 0).
    params: ``{'logit_scale': [heads]}`` when ``learnable_scale``.
    **options: further ``dot_product_attention`` options (window, lengths, ...).

  Returns:
    ``[batch..., q_seq, heads, v_dim]`` in the input dtype (or ``dtype``).
  """
  fn = "cosine_attention"
  opts = _base.exact_options(fn, options, {
      "logits_soft_cap": "cosine logits are already bounded by the logit scale"})
  mult = _cosine_multiplier(fn, scale, temperature)
  spec = _cosine_spec(num_heads=jnp.shape(query)[-2], learnable_scale=learnable_scale,
                      scale=scale, temperature=temperature)
  prm = _base.check_params(fn, params, spec)
  out_dtype = output_dtype(dtype, query, key, value)

  def unit(x):
    x = as_float32(x)
    # Normalise in float32: bf16 norms would put ~1% noise on logits up to tau = 100.
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)

  q, k = unit(query), unit(key)
  if learnable_scale:
    tau = jnp.exp(jnp.minimum(prm["logit_scale"], math.log(max_logit_scale)))
    q = q * tau[:, None]
  else:
    q = q * mult
  out = dot_product_attention(
      q, k, as_float32(value), bias, mask, scale=1.0, is_causal=is_causal,
      dropout_rate=dropout_rate,
      dropout_rng=dropout_rng, deterministic=deterministic,
      broadcast_dropout=broadcast_dropout, precision=precision, module=module, **opts)
  return out.astype(out_dtype)


# --------------------------------------------------------------------------- unscaled


@register_kernel("unscaled_dot_product")
def unscaled_dot_product_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    scale: float | None = None,
    is_causal: bool = False,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
    deterministic: bool = True,
    broadcast_dropout: bool = True,
    dtype: Any = None,
    precision: Any = None,
    module: Any = None,
    **options: Any,
) -> jax.Array:
  """Dot-product attention without the ``1/sqrt(d)``: ``softmax(q k^T + bias) v`` (exact).

  The article's plain dot-product score (Luong et al. 2015's "dot"). Its logits grow
  with ``head_dim`` (variance ``d`` for unit-variance inputs), which is why Vaswani et
  al. scale them; kept for comparison. ``scale`` is refused (it is fixed at 1).
  Arguments and shapes as in ``dot_product_attention``.
  """
  fn = "unscaled_dot_product_attention"
  if scale is not None:
    raise _base.refuse(fn, "scale", "this kernel is the dot product with scale fixed at 1; "
                       "use 'dot_product' for another scale")
  opts = _base.exact_options(fn, options, returns_residual=True)
  return dot_product_attention(
      query, key, value, bias, mask, scale=1.0, is_causal=is_causal, dropout_rate=dropout_rate,
      dropout_rng=dropout_rng, deterministic=deterministic, broadcast_dropout=broadcast_dropout,
      dtype=dtype, precision=precision, module=module, **opts)


# ---------------------------------------------------------------------------- general


def _general_spec(*, num_heads: int, head_dim: int, **_: Any) -> dict[str, _base.ParamSpec]:
  return {"w": _base.ParamSpec((num_heads, head_dim, head_dim), _base.identity_per_head,
                               "Luong's W per head, initialised to the identity")}


@register_kernel("general")
@_base.declare_params(_general_spec)
def general_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    scale: float | None = None,
    is_causal: bool = False,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
    deterministic: bool = True,
    broadcast_dropout: bool = True,
    dtype: Any = None,
    precision: Any = None,
    module: Any = None,
    params: Mapping[str, jax.Array] | None = None,
    **options: Any,
) -> jax.Array:
  """General (multiplicative) attention ``softmax(scale * q_i W_h k_j^T + bias) v`` (exact).

  Luong et al. 2015's "general" score with one learnable ``W_h [head_dim, head_dim]`` per
  query head (``params['w']``, initialised to the identity so that training starts from
  scaled dot-product attention). Luong's score is unscaled; ``scale`` defaults to
  ``1/sqrt(head_dim)`` here to keep logits of the same size as the other kernels
  (pass ``scale=1.0`` for the original). In a Transformer layer ``W_h`` is redundant with
  the query projection (it can be folded into it); it is offered for the comparison.

  Args:
    query, key, value, bias, mask, and the options: as in ``dot_product_attention``.
    params: ``{'w': [heads, head_dim, head_dim]}``.

  Returns:
    ``[batch..., q_seq, heads, v_dim]``.
  """
  fn = "general_attention"
  opts = _base.exact_options(fn, options)
  h, d = jnp.shape(query)[-2:]
  prm = _base.check_params(fn, params, _general_spec(num_heads=h, head_dim=d))
  out_dtype = output_dtype(dtype, query, key, value)
  q = jnp.einsum("...thd,hde->...the", as_float32(query), prm["w"], precision=precision)
  out = dot_product_attention(
      q, as_float32(key), as_float32(value), bias, mask, scale=scale, is_causal=is_causal,
      dropout_rate=dropout_rate, dropout_rng=dropout_rng, deterministic=deterministic,
      broadcast_dropout=broadcast_dropout, precision=precision, module=module, **opts)
  return out.astype(out_dtype)


# --------------------------------------------------------------------------- additive


def _additive_spec(*, num_heads: int, head_dim: int, attention_dim: int | None = None,
                   **_: Any) -> dict[str, _base.ParamSpec]:
  a = head_dim if attention_dim is None else _base.check_int(
      "additive_attention", "attention_dim", attention_dim, 1)
  return {
      "w_query": _base.ParamSpec((num_heads, head_dim, a), _base.normal(head_dim**-0.5),
                                 "W_q per head"),
      "w_key": _base.ParamSpec((num_heads, head_dim, a), _base.normal(head_dim**-0.5),
                               "W_k per head"),
      "v": _base.ParamSpec((num_heads, a), _base.normal(a**-0.5), "v per head"),
  }


def additive_logits(query: jax.Array, key: jax.Array, w_query: jax.Array, w_key: jax.Array,
                    v: jax.Array, *, precision: Any = None,
                    block_elements: int = 2**22) -> jax.Array:
  """Bahdanau scores ``e_ij = v_h . tanh(W_q q_i + W_k k_j)``, ``[N, H, T, S]`` float32.

  Computed one block of query rows at a time under ``jax.checkpoint``, so the
  ``[.., T, S, attention_dim]`` tanh tensor is never whole, forward or backward.

  Args:
    query: ``[N, T, H, D]``.
    key: ``[N, S, K, D]`` (K divides H).
    w_query, w_key: ``[H, D, A]``.
    v: ``[H, A]``.
    precision: matmul precision.
    block_elements: elements of one block's ``[N, H, bq, S, A]`` tanh tensor.
  """
  n, t, h, _ = query.shape
  s, kh = key.shape[1], key.shape[2]
  a = v.shape[-1]
  k = jnp.repeat(key, h // kh, axis=2)
  qp = jnp.einsum("nthd,hda->nhta", query, w_query, precision=precision)
  kp = jnp.einsum("nshd,hda->nhsa", k, w_key, precision=precision)
  bq = max(1, min(t, block_elements // max(1, n * h * s * a)))
  nb = -(-t // bq)
  qp = jnp.pad(qp, ((0, 0), (0, 0), (0, nb * bq - t), (0, 0)))
  qb = jnp.moveaxis(qp.reshape(n, h, nb, bq, a), 2, 0)

  @jax.checkpoint
  def block(q_blk):  # [N, H, bq, A] -> [N, H, bq, S]
    return jnp.einsum("nhtsa,ha->nhts", jnp.tanh(q_blk[:, :, :, None, :] + kp[:, :, None]), v,
                      precision=precision)

  logits = lax.map(block, qb)  # [nb, N, H, bq, S]
  return jnp.moveaxis(logits, 0, 2).reshape(n, h, nb * bq, s)[:, :, :t]


def attend_to_logits(fn: str, logits: jax.Array, value: jax.Array, bias: Any, mask: Any, *,
                     is_causal: bool, dropout_rate: float, dropout_rng: Any,
                     deterministic: bool, broadcast_dropout: bool, precision: Any, module: Any,
                     opts: dict[str, Any], q_shape: tuple[int, ...]) -> jax.Array:
  """Exact softmax attention on given logits ``[batch..., H, T, S]`` (+ ``bias``).

  Runs ``dot_product_attention`` with all-zero (width-1) queries and keys and the logits
  as its bias, so every mask, dropout, GQA and the fully-masked-row rule come
  from the exact kernel unchanged.
  """
  del fn
  batch, t, h = q_shape[:-3], q_shape[-3], q_shape[-2]
  s, kh = value.shape[-3], value.shape[-2]
  zq = jnp.zeros(batch + (t, h, 1), value.dtype)
  zk = jnp.zeros(batch + (s, kh, 1), value.dtype)
  b = logits if bias is None else logits + jnp.asarray(bias, logits.dtype)
  return dot_product_attention(
      zq, zk, value, b, mask, scale=1.0, is_causal=is_causal, dropout_rate=dropout_rate,
      dropout_rng=dropout_rng, deterministic=deterministic, broadcast_dropout=broadcast_dropout,
      precision=precision, module=module, **opts)


def attend_to_logits_flops(q_len: int, kv_len: int, num_heads: int, v_dim: int) -> float:
  """Matmul FLOPs of :func:`attend_to_logits` on one sequence: ``p v`` and the width-1 ``q k^T``."""
  return 2.0 * q_len * kv_len * num_heads * (1 + v_dim)


_LOGIT_REFUSED = {
    "logits_soft_cap": "this kernel's logits are not a scaled dot product",
}


@register_kernel("additive")
@_base.declare_params(_additive_spec)
def additive_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    scale: float | None = None,
    attention_dim: int | None = None,
    is_causal: bool = False,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
    deterministic: bool = True,
    broadcast_dropout: bool = True,
    dtype: Any = None,
    precision: Any = None,
    module: Any = None,
    params: Mapping[str, jax.Array] | None = None,
    **options: Any,
) -> jax.Array:
  """Additive (Bahdanau) attention ``softmax(v_h . tanh(W_q q_i + W_k k_j) + bias) v`` (exact).

  Bahdanau et al. 2015's score with per-head ``W_q, W_k [head_dim, attention_dim]`` and
  ``v [attention_dim]``. Cost: ``O(T * S * attention_dim)`` time and ``O(T * S)`` memory
  for the logits (the tanh tensor is built per query block). ``scale`` has no meaning for
  this score and is refused; ``logits_soft_cap`` likewise.

  Args:
    query, key, value, bias, mask and the options: as in ``dot_product_attention``.
    attention_dim: width ``A`` of the tanh layer (default ``head_dim``).
    params: ``{'w_query': [H, D, A], 'w_key': [H, D, A], 'v': [H, A]}``.

  Returns:
    ``[batch..., q_seq, heads, v_dim]``.
  """
  fn = "additive_attention"
  if scale is not None:
    raise _base.refuse(fn, "scale", "the additive score has no dot product to scale")
  opts = _base.exact_options(fn, options, _LOGIT_REFUSED)
  h, d = jnp.shape(query)[-2:]
  prm = _base.check_params(fn, params, _additive_spec(num_heads=h, head_dim=d,
                                                      attention_dim=attention_dim))
  out_dtype = output_dtype(dtype, query, key, value)
  q, k = as_float32(query), as_float32(key)
  if q.ndim < 3 or k.ndim != q.ndim:
    raise ValueError(f"{fn}: query and key must be [batch..., seq, heads, head_dim] of one "
                     f"rank, got {q.shape} and {k.shape}")
  batch = q.shape[:-3]
  logits = additive_logits(q.reshape((-1,) + q.shape[-3:]), k.reshape((-1,) + k.shape[-3:]),
                           prm["w_query"], prm["w_key"], prm["v"], precision=precision)
  logits = logits.reshape(batch + logits.shape[1:])
  out = attend_to_logits(fn, logits, as_float32(value), bias, mask, is_causal=is_causal,
                         dropout_rate=dropout_rate, dropout_rng=dropout_rng,
                         deterministic=deterministic, broadcast_dropout=broadcast_dropout,
                         precision=precision, module=module, opts=opts, q_shape=q.shape)
  return out.astype(out_dtype)
