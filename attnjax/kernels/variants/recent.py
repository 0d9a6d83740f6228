"""Recent exact variants: sigmoid attention and differential attention."""

from __future__ import annotations

import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
from jax import lax

from attnjax.kernels import _common
from attnjax.kernels import chunked
from attnjax.kernels.dot_product import dot_product_attention
from attnjax.kernels.registry import register_kernel
from attnjax.kernels.variants import _base
from attnjax.kernels.variants import scoring

# --------------------------------------------------------------------------- sigmoid

_SIGMOID_BLOCK_Q = 256


def _sigmoid_core(p: _common.Problem, offset_bias: float) -> jax.Array:
  """``sum_j sigmoid(s_ij + b) v_j`` by query blocks (``jax.checkpoint``ed): ``[B,K,G,T,Dv]``."""
  t = p.q_len
  bq = min(_SIGMOID_BLOCK_Q, t)
  nb = -(-t // bq)
  tp = nb * bq
  # Pad query-indexed fields so every block slice is in range (as the chunked kernel does).
  pp = p.replace(
      query=chunked.pad_axis(p.query, 3, tp),
      bias=chunked.pad_axis(p.bias, 3, tp, broadcast=True),
      mask=chunked.pad_axis(p.mask, 3, tp, False, True),
      q_segment_ids=chunked.pad_axis(p.q_segment_ids, 1, tp, -1))
  value = pp.value

  @jax.checkpoint
  def block(i):
    q0 = i * bq
    q_blk = lax.dynamic_slice_in_dim(pp.query, q0, bq, axis=3)
    s, _ = _common.block_logits(pp, q_blk, pp.key, q0, 0)
    w = jax.nn.sigmoid(s + offset_bias)  # masked logits are -inf: weight 0, gradient 0
    if pp.dropout_rate > 0.0:
      keep = _common.dropout_keep(pp, q0, bq, 0, pp.kv_len)
      w = jnp.where(keep, w / (1.0 - pp.dropout_rate), 0.0)
    return jnp.einsum("bkgts,bksd->bkgtd", w.astype(value.dtype), value,
                      precision=pp.precision, preferred_element_type=pp.compute_dtype)

  outs = lax.map(block, jnp.arange(nb))  # [nb, B, K, G, bq, Dv]
  b, kh, g = p.query.shape[:3]
  out = jnp.moveaxis(outs, 0, 3).reshape(b, kh, g, tp, -1)
  return out[..., :t, :]


def _sigmoid_flops(*, q_len: int, kv_len: int, num_heads: int, head_dim: int, **_: Any
                   ) -> float:
  # Every query block against every key (masks and patterns skip nothing), the last
  # block padded.
  bq = min(_SIGMOID_BLOCK_Q, q_len)
  return _base.dense_attention_flops(-(-q_len // bq) * bq, kv_len, num_heads, head_dim)


@register_kernel("sigmoid")
@_base.declare_flops(_sigmoid_flops)
def sigmoid_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    scale: float | None = None,
    is_causal: bool = False,
    sigmoid_bias: float | None = None,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
    deterministic: bool = True,
    broadcast_dropout: bool = True,
    dtype: Any = None,
    precision: Any = None,
    module: Any = None,
    **options: Any,
) -> jax.Array:
  """Sigmoid attention ``sum_j sigmoid(scale q_i.k_j + bias_ij + b) v_j`` (Ramapuram et al. 2024).

  Each weight is an independent sigmoid (no normalisation across keys), with the
  constant ``b = -log(kv_seq)`` the paper needs for stable training (``sigmoid_bias``
  overrides it). Exact for its own formula; it is not softmax attention. Every mask and
  position option of ``dot_product_attention`` applies (masked keys get weight 0; a
  fully masked row outputs zeros); ``O(T S)`` time, ``O(256 S)`` memory per head
  (query blocks, recomputed in the backward pass). ``module`` is refused.

  Args:
    query, key, value, bias, mask, scale, is_causal, dropout_*, broadcast_dropout, dtype,
      precision: as in ``dot_product_attention``.
    sigmoid_bias: ``b``; default ``-log(kv_seq)``.
    **options: ``alignment``, ``local_window_size``, ``sparsity_pattern``, sequence
      lengths, segment ids, ``logits_soft_cap``, ALiBi and T5 options.

  Returns:
    ``[batch..., q_seq, heads, v_dim]``.
  """
  fn = "sigmoid_attention"
  if module is not None:
    raise _base.refuse(fn, "module", "sigmoid weights are not probabilities; nothing is sown")
  opts = _base.exact_options(fn, options, {
      "implementation": "sigmoid attention has one (XLA, query-blocked) implementation",
      "block_q": "the query block is fixed", "block_kv": "keys are not blocked",
      "return_residual": "there is no log-sum-exp"})
  p = _common.prepare(query, key, value, bias, mask, fn=fn, scale=scale, is_causal=is_causal,
                      dropout_rate=dropout_rate, dropout_rng=dropout_rng,
                      deterministic=deterministic, broadcast_dropout=broadcast_dropout,
                      dtype=dtype, precision=precision, **opts)
  b = -math.log(p.kv_len) if sigmoid_bias is None else float(sigmoid_bias)
  return _common.to_output(p, _sigmoid_core(p, b))


# ---------------------------------------------------------------------- differential


def _diff_spec(*, num_heads: int, head_dim: int, **_: Any) -> dict[str, _base.ParamSpec]:
  half = head_dim // 2
  return {name: _base.ParamSpec((num_heads, half), _base.normal(0.1), "lambda "
                                "re-parameterisation vector")
          for name in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2")}


def _differential_flops(*, q_len: int, kv_len: int, num_heads: int, head_dim: int, **_: Any
                        ) -> float:
  # Two exact maps, each with half-width logits but a full-width p v: 1.5x dense.
  return 2 * 2.0 * q_len * kv_len * num_heads * (head_dim // 2 + head_dim)


@register_kernel("differential")
@_base.declare_params(_diff_spec)
@_base.declare_flops(_differential_flops)
def differential_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    scale: float | None = None,
    is_causal: bool = False,
    lambda_init: float = 0.8,
    eps: float = 1e-5,
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
  """Differential attention (Ye et al. 2024, "Differential Transformer"), exact.

  ``q = [q1, q2]``, ``k = [k1, k2]`` split along ``head_dim``;
  ``out = RMSNorm((softmax(q1 k1^T s) - lambda softmax(q2 k2^T s)) v) * (1 - lambda_init)``
  with ``lambda = exp(lq1.lk1) - exp(lq2.lk2) + lambda_init`` per head and
  ``s = 1/sqrt(head_dim/2)``. The RMSNorm is per head over ``v_dim`` without a learnable
  gain (the output projection can absorb one). The paper's depth-dependent
  ``lambda_init = 0.8 - 0.6 exp(-0.3 (l - 1))`` is an option here (the kernel does not
  know its layer). Both maps are ``dot_product_attention``: every mask, bias (added to
  both) and dropout option applies. ``module`` is refused (two maps, not one).

  Args:
    query: ``[batch..., q_seq, heads, head_dim]`` with even ``head_dim``.
    key: ``[batch..., kv_seq, kv_heads, head_dim]`` (GQA/MQA).
    value: ``[batch..., kv_seq, kv_heads, v_dim]``.
    bias, mask, is_causal, dropout_*, broadcast_dropout, dtype, precision, **options: as
      in ``dot_product_attention``.
    scale: default ``1/sqrt(head_dim / 2)``.
    lambda_init: see above.
    eps: RMSNorm epsilon.
    params: ``lambda_q1, lambda_k1, lambda_q2, lambda_k2``: ``[heads, head_dim // 2]``.

  Returns:
    ``[batch..., q_seq, heads, v_dim]``.
  """
  fn = "differential_attention"
  if module is not None:
    raise _base.refuse(fn, "module", "differential attention has two maps, not one")
  opts = _base.exact_options(fn, options, {"return_residual": "there are two softmaxes"})
  h, d = jnp.shape(query)[-2:]
  if d % 2:
    raise ValueError(f"{fn}: head_dim must be even (split into two halves), got {d}")
  prm = _base.check_params(fn, params, _diff_spec(num_heads=h, head_dim=d))
  out_dtype = scoring.output_dtype(dtype, query, key, value)
  q, k, v = (scoring.as_float32(x) for x in (query, key, value))
  half = d // 2
  scale = 1.0 / math.sqrt(half) if scale is None else scale
  rngs = [None, None] if dropout_rng is None else list(jax.random.split(dropout_rng))
  maps = []
  for i, sl in enumerate((slice(0, half), slice(half, d))):
    maps.append(dot_product_attention(
        q[..., sl], k[..., sl], v, bias, mask, scale=scale, is_causal=is_causal,
        dropout_rate=dropout_rate, dropout_rng=rngs[i], deterministic=deterministic,
        broadcast_dropout=broadcast_dropout, precision=precision, **opts))
  lam = (jnp.exp(jnp.sum(prm["lambda_q1"] * prm["lambda_k1"], -1))
         - jnp.exp(jnp.sum(prm["lambda_q2"] * prm["lambda_k2"], -1)) + lambda_init)  # [H]
  out = maps[0] - lam[:, None] * maps[1]
  out = out * lax.rsqrt(jnp.mean(out * out, axis=-1, keepdims=True) + eps)
  return (out * (1.0 - lambda_init)).astype(out_dtype)
