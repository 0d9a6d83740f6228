"""Low-rank and synthetic attention: Linformer, Nystromformer, Synthesizer (dense, random)."""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from attnjax.kernels import _common
from attnjax.kernels.dot_product import dot_product_attention
from attnjax.kernels.registry import register_kernel
from attnjax.kernels.variants import _base
from attnjax.kernels.variants import scoring

# ------------------------------------------------------------------------- Linformer


def _linformer_spec(*, num_kv_heads: int, kv_len: int, projected_length: int = 64,
                    **_: Any) -> dict[str, _base.ParamSpec]:
  _base.check_int("linformer_attention", "projected_length", projected_length, 1)
  init = _base.normal(kv_len**-0.5)
  return {
      "proj_key": _base.ParamSpec((num_kv_heads, kv_len, projected_length), init,
                                  "E: kv_seq -> projected_length, per kv head"),
      "proj_value": _base.ParamSpec((num_kv_heads, kv_len, projected_length), init,
                                    "F: kv_seq -> projected_length, per kv head"),
  }


def _linformer_flops(*, q_len: int, kv_len: int, num_heads: int, num_kv_heads: int,
                     head_dim: int, projected_length: int, **_: Any) -> float:
  # E^T k and F^T v once per kv head, then exact attention of the queries over k keys.
  projections = 2.0 * 2 * kv_len * projected_length * head_dim * num_kv_heads
  return projections + _base.dense_attention_flops(q_len, projected_length, num_heads,
                                                   head_dim)


@register_kernel("linformer")
@_base.without_decode
@_base.declare_params(_linformer_spec)
@_base.declare_flops(_linformer_flops)
def linformer_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    scale: float | None = None,
    is_causal: bool = False,
    projected_length: int = 64,
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
  """Linformer: softmax attention over learned length projections (Wang et al. 2020).

  ``out = softmax(scale * q (E^T k)^T) (F^T v)`` with learned ``E, F [kv_seq, k]`` per kv
  head: exact softmax over ``k = projected_length`` mixed keys, a low-rank approximation
  of full attention. ``O(T k d)`` time and memory. Masked (padding) keys are zeroed before
  the projection, so they cannot influence the output. Not causal (the projection mixes
  future positions): ``is_causal`` is refused, as are ``bias`` and query-varying masks.
  Dropout acts on the ``[T, k]`` probabilities.

  Args:
    query: ``[batch..., q_seq, heads, head_dim]``.
    key: ``[batch..., kv_seq, kv_heads, head_dim]`` (GQA/MQA when kv_heads < heads).
    value: ``[batch..., kv_seq, kv_heads, v_dim]``.
    bias, is_causal, module: refused.
    mask: key-padding mask ``[batch..., 1|heads, 1, kv_seq]`` (one per kv head group).
    scale, dropout_*, broadcast_dropout, dtype, precision: as in ``dot_product_attention``.
    projected_length: ``k``.
    params: ``{'proj_key', 'proj_value'}: [kv_heads, >= kv_seq, k]``.

  Returns:
    ``[batch..., q_seq, heads, v_dim]``.
  """
  fn = "linformer_attention"
  p = _base.prepare_approximate(fn, query, key, value, bias, mask,
                                supports=_base.Supports(dropout=True), scale=scale,
                                is_causal=is_causal, dropout_rate=0.0, dropout_rng=None,
                                deterministic=True, dtype=dtype, precision=precision,
                                module=module,
                                q_offset=q_offset, no_decode_why=(
                                    'its learned projections mix every position of the sequence'))
  spec = _linformer_spec(num_kv_heads=p.kv_heads, kv_len=p.kv_len,
                         projected_length=projected_length)
  prm = _base.check_params(fn, params, spec)
  e = _base.length_slice(fn, prm["proj_key"], 1, p.kv_len, "kv_seq")
  f = _base.length_slice(fn, prm["proj_value"], 1, p.kv_len, "kv_seq")
  k, v = _base.compute(p, p.key), _base.compute(p, p.value)  # [B, K, S, D]
  km = _base.key_mask(p)
  if km is not None:
    if km.shape[2] != 1:
      raise _base.refuse(fn, "mask", "the mask must be the same for the query heads that "
                         "share a kv head (keys are projected once per kv head)")
    k = jnp.where(km[:, :, 0, :, None], k, 0.0)
    v = jnp.where(km[:, :, 0, :, None], v, 0.0)
  kp = jnp.einsum("bksd,ksn->bnkd", k, e, precision=precision)  # [B, k, K, D]
  vp = jnp.einsum("bksd,ksn->bnkd", v, f, precision=precision)
  b, kh, g, t, d = p.query.shape
  q = p.query.transpose(0, 3, 1, 2, 4).reshape(b, t, kh * g, d)
  out = dot_product_attention(
      _base.compute(p, q), kp, vp, scale=p.scale, dropout_rate=dropout_rate,
      dropout_rng=dropout_rng, deterministic=deterministic,
      broadcast_dropout=broadcast_dropout, precision=precision)
  return out.reshape(p.batch_shape + out.shape[1:]).astype(p.out_dtype)


# --------------------------------------------------------------------- Nystromformer


def _segment_means(n: int, m: int) -> np.ndarray:
  """``[m, n]`` 0/1 matrix of ``m`` contiguous segments of ``range(n)`` (numpy.array_split)."""
  seg = np.zeros((m, n), np.float32)
  for i, idx in enumerate(np.array_split(np.arange(n), m)):
    seg[i, idx] = 1.0
  return seg


def iterative_pinv(a: jax.Array, iterations: int) -> jax.Array:
  """Moore-Penrose pseudo-inverse by Razavi et al.'s iteration (Nystromformer, eq. 13).

  ``Z_{j+1} = Z_j (13 I - A Z_j (15 I - A Z_j (7 I - A Z_j))) / 4`` from
  ``Z_0 = A^T / (||A||_1 ||A||_inf)``; converges to ``A^+`` for these softmax matrices.
  """
  eye = jnp.eye(a.shape[-1], dtype=a.dtype)
  norm1 = jnp.max(jnp.sum(jnp.abs(a), axis=-2), axis=-1)
  norminf = jnp.max(jnp.sum(jnp.abs(a), axis=-1), axis=-1)
  z = jnp.swapaxes(a, -1, -2) / (norm1 * norminf)[..., None, None]
  for _ in range(iterations):
    az = a @ z
    z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
  return z


def _masked_softmax(s: jax.Array, m: jax.Array | None) -> jax.Array:
  if m is not None:
    s = jnp.where(m, s, -jnp.inf)
  mx = jax.lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True))
  mx = jnp.where(jnp.isfinite(mx), mx, 0.0)
  e = jnp.exp(s - mx)
  return _base.safe_divide(e, jnp.sum(e, axis=-1, keepdims=True))


def _nystromformer_flops(*, q_len: int, kv_len: int, num_heads: int, head_dim: int,
                         num_landmarks: int, pinv_iterations: int, **_: Any) -> float:
  t, s, d = q_len, kv_len, head_dim
  m = min(num_landmarks, t, s)
  landmarks = m * t * d + m * s * d  # segment means of q and k
  logits = t * m * d + m * m * d + m * s * d  # kernels 1, 2 and 3
  pinv = pinv_iterations * 4 * m**3  # four [m, m] products per iteration
  products = m * s * d + m * m * d + t * m * d  # kernel3 v, pinv (..), kernel1 (..)
  return 2.0 * num_heads * (landmarks + logits + pinv + products)


@register_kernel("nystromformer")
@_base.without_decode
@_base.without_attention_dropout
@_base.declare_flops(_nystromformer_flops)
def nystromformer_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    scale: float | None = None,
    is_causal: bool = False,
    num_landmarks: int = 64,
    pinv_iterations: int = 6,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
    deterministic: bool = True,
    broadcast_dropout: bool = True,
    dtype: Any = None,
    precision: Any = None,
    module: Any = None,
    q_offset: Any = None,
) -> jax.Array:
  """Nystromformer: Nystrom approximation of softmax attention (Xiong et al. 2021).

  Landmarks ``q~, k~`` are means of ``num_landmarks`` contiguous segments;
  ``out = softmax(q k~^T) pinv(softmax(q~ k~^T)) softmax(q~ k^T) v`` with the iterative
  pseudo-inverse. ``O(T m d + m^3)`` time, ``O(T m)`` memory. Approaches exact attention
  as ``num_landmarks -> seq`` (tested). The paper's depthwise-convolution skip on ``v`` is
  not included (it would add parameters outside attention). Masked keys are excluded from
  the key landmarks and from ``softmax(q~ k^T)``; when ``q_seq == kv_seq`` (self-attention)
  the key-padding mask also removes padded queries from the query landmarks, so padding
  cannot steer real outputs. Refused: ``bias``, ``is_causal``,
  query-varying masks, dropout, ``module``.

  Args:
    query, key, value, mask, scale, dtype, precision: as in :func:`linformer_attention`.
    num_landmarks: ``m`` (capped at the sequence lengths).
    pinv_iterations: iterations of the pseudo-inverse (paper: 6).

  Returns:
    ``[batch..., q_seq, heads, v_dim]``.
  """
  fn = "nystromformer_attention"
  p = _base.prepare_approximate(fn, query, key, value, bias, mask, supports=_base.Supports(),
                                scale=scale, is_causal=is_causal, dropout_rate=dropout_rate,
                                dropout_rng=dropout_rng, deterministic=deterministic,
                                dtype=dtype, precision=precision, module=module,
                                q_offset=q_offset, no_decode_why=(
                                    'its landmarks are segment means over the whole sequence'))
  if isinstance(num_landmarks, bool) or not isinstance(num_landmarks, int) or num_landmarks < 1:
    raise ValueError(f"{fn}: num_landmarks must be a positive int, got {num_landmarks!r}")
  t, s = p.q_len, p.kv_len
  m = min(num_landmarks, t, s)
  q = _base.compute(p, p.query) * p.scale  # [B, K, G, T, D]
  k = _base.compute(p, p.key)[:, :, None]  # [B, K, 1, S, D]
  v = _base.compute(p, p.value)[:, :, None]
  km = _base.key_mask(p)  # [B|1, K|1, G|1, S]
  seg_q = jnp.asarray(_segment_means(t, m))
  seg_k = jnp.asarray(_segment_means(s, m))
  wq = seg_q
  if km is not None and t == s:
    # Self-attention: padded positions are padded queries too; left in the query
    # landmarks they would steer the outputs of real tokens.
    wq = seg_q * km[..., None, :].astype(seg_q.dtype)
  wq = jnp.broadcast_to(wq, q.shape[:3] + seg_q.shape)
  q_land = jnp.einsum("bkgmt,bkgtd->bkgmd",
                      _base.safe_divide(wq, jnp.sum(wq, axis=-1, keepdims=True)), q,
                      precision=precision)
  w = seg_k if km is None else seg_k * km[..., None, :].astype(seg_k.dtype)
  w = jnp.broadcast_to(w, q.shape[:3] + seg_k.shape)  # [B, K, G, m, S]
  count = jnp.sum(w, axis=-1, keepdims=True)
  k_land = jnp.einsum("bkgms,bkgsd->bkgmd", _base.safe_divide(w, count),
                      jnp.broadcast_to(k, q.shape[:3] + k.shape[3:]), precision=precision)
  kernel1 = _masked_softmax(jnp.einsum("bkgtd,bkgmd->bkgtm", q, k_land, precision=precision),
                            None)
  kernel2 = _masked_softmax(jnp.einsum("bkgmd,bkgnd->bkgmn", q_land, k_land,
                                       precision=precision), None)
  kernel3 = _masked_softmax(jnp.einsum("bkgmd,bkgsd->bkgms", q_land, k, precision=precision),
                            None if km is None else km[..., None, :])
  out = kernel1 @ (iterative_pinv(kernel2, pinv_iterations) @ (kernel3 @ v))
  if km is not None:
    # A query whose keys are all masked gets zeros (the contract), not landmark noise.
    out = jnp.where(jnp.any(km, axis=-1)[..., None, None], out, 0.0)
  return _common.to_output(p, out)


# ----------------------------------------------------------------------- Synthesizer


def _dense_synth_spec(*, num_heads: int, head_dim: int, kv_len: int, **_: Any
                      ) -> dict[str, _base.ParamSpec]:
  return {
      "w1": _base.ParamSpec((num_heads, head_dim, head_dim), _base.normal(head_dim**-0.5),
                            "first layer of F per head"),
      "b1": _base.ParamSpec((num_heads, head_dim), _base.constant(0.0), "its bias"),
      "w2": _base.ParamSpec((num_heads, head_dim, kv_len), _base.normal(head_dim**-0.5),
                            "second layer: head_dim -> kv_seq logits"),
      "b2": _base.ParamSpec((num_heads, kv_len), _base.constant(0.0), "its bias"),
  }


_SYNTH_REFUSED = {"logits_soft_cap": "synthesized logits are not a scaled dot product"}

_SYNTH_ARGS = """
  Args:
    query: ``[batch..., q_seq, heads, head_dim]``.
    key: ``[batch..., kv_seq, kv_heads, head_dim]``; only its shape is used.
    value: ``[batch..., kv_seq, kv_heads, v_dim]`` (GQA/MQA when kv_heads < heads).
    bias, mask, is_causal, dropout_*, broadcast_dropout, dtype, precision, module,
      **options: as in ``dot_product_attention`` (the synthesized logits replace
      ``q k^T``; ``scale`` and ``logits_soft_cap`` are refused).
    params: see above; created for the longest sequence, sliced for shorter ones.
"""


def _dense_synth_flops(*, q_len: int, kv_len: int, num_heads: int, head_dim: int, **_: Any
                       ) -> float:
  # The two layers of F per query, then softmax(logits) v.
  synthesis = 2.0 * q_len * num_heads * head_dim * (head_dim + kv_len)
  return synthesis + scoring.attend_to_logits_flops(q_len, kv_len, num_heads, head_dim)


@register_kernel("synthesizer_dense")
@_base.declare_params(_dense_synth_spec)
@_base.declare_flops(_dense_synth_flops)
def synthesizer_dense_attention(
    query: jax.Array, key: jax.Array, value: jax.Array, bias: jax.Array | None = None,
    mask: jax.Array | None = None, *, scale: float | None = None, is_causal: bool = False,
    dropout_rate: float = 0.0, dropout_rng: jax.Array | None = None,
    deterministic: bool = True, broadcast_dropout: bool = True, dtype: Any = None,
    precision: Any = None, module: Any = None, params: Mapping[str, jax.Array] | None = None,
    **options: Any) -> jax.Array:
  """Dense Synthesizer: logits from each query alone (Tay et al. 2021).

  ``logits_i = W2 relu(W1 q_i + b1) + b2``, a ``kv_seq``-vector per query and head, then
  exact masked softmax and ``v``: no query-key interaction at all (not an approximation
  of dot-product attention, an alternative to it). Parameters depend on the maximal ``kv_seq``
  (``params``: ``w1 [H, D, D]``, ``b1 [H, D]``, ``w2 [H, D, S]``, ``b2 [H, S]``).
  {args}
  Returns:
    ``[batch..., q_seq, heads, v_dim]``.
  """
  fn = "synthesizer_dense_attention"
  if scale is not None:
    raise _base.refuse(fn, "scale", "synthesized logits are not a scaled dot product")
  opts = _base.exact_options(fn, options, _SYNTH_REFUSED)
  q = scoring.as_float32(query)
  h, d = q.shape[-2:]
  s = jnp.shape(key)[-3]
  prm = _base.check_params(fn, params, _dense_synth_spec(num_heads=h, head_dim=d, kv_len=s))
  w2 = _base.length_slice(fn, prm["w2"], 2, s, "kv_seq")
  b2 = _base.length_slice(fn, prm["b2"], 1, s, "kv_seq")
  hid = jax.nn.relu(jnp.einsum("...thd,hde->...the", q, prm["w1"], precision=precision)
                    + prm["b1"])
  logits = jnp.einsum("...the,hes->...hts", hid, w2, precision=precision) + b2[:, None, :]
  out = scoring.attend_to_logits(
      fn, logits, scoring.as_float32(value), bias, mask, is_causal=is_causal,
      dropout_rate=dropout_rate, dropout_rng=dropout_rng, deterministic=deterministic,
      broadcast_dropout=broadcast_dropout, precision=precision, module=module, opts=opts,
      q_shape=q.shape)
  return out.astype(scoring.output_dtype(dtype, query, key, value))


def _random_synth_spec(*, num_heads: int, q_len: int, kv_len: int, **_: Any
                       ) -> dict[str, _base.ParamSpec]:
  return {"logits": _base.ParamSpec((num_heads, q_len, kv_len), _base.normal(1.0),
                                    "learned [q_seq, kv_seq] logits per head")}


def _random_synth_flops(*, q_len: int, kv_len: int, num_heads: int, head_dim: int, **_: Any
                        ) -> float:
  return scoring.attend_to_logits_flops(q_len, kv_len, num_heads, head_dim)


@register_kernel("synthesizer_random")
@_base.declare_params(_random_synth_spec)
@_base.declare_flops(_random_synth_flops)
def synthesizer_random_attention(
    query: jax.Array, key: jax.Array, value: jax.Array, bias: jax.Array | None = None,
    mask: jax.Array | None = None, *, scale: float | None = None, is_causal: bool = False,
    dropout_rate: float = 0.0, dropout_rng: jax.Array | None = None,
    deterministic: bool = True, broadcast_dropout: bool = True, dtype: Any = None,
    precision: Any = None, module: Any = None, params: Mapping[str, jax.Array] | None = None,
    **options: Any) -> jax.Array:
  """Random Synthesizer: input-independent learned logits ``R_h [q_seq, kv_seq]`` (Tay et al. 2021).

  ``softmax(R_h + bias, masked) v``: neither queries nor keys are used (only shapes), so
  the attention pattern is the same for every input. ``params['logits'] [H, T, S]``,
  initialised N(0, 1) and trained (the paper's "fixed" variant is this without training).
  {args}
  Returns:
    ``[batch..., q_seq, heads, v_dim]``.
  """
  fn = "synthesizer_random_attention"
  if scale is not None:
    raise _base.refuse(fn, "scale", "synthesized logits are not a scaled dot product")
  opts = _base.exact_options(fn, options, _SYNTH_REFUSED)
  qs = jnp.shape(query)
  t, h = qs[-3], qs[-2]
  s = jnp.shape(key)[-3]
  prm = _base.check_params(fn, params, _random_synth_spec(num_heads=h, q_len=t, kv_len=s))
  # R is indexed by absolute query position: a decoding query (q_offset, given or from a
  # flax decode step) reads its own rows.
  q_offset = opts.get("q_offset")
  if q_offset is None:
    q_offset = _common.flax_decode_offset(t, s)
    if q_offset is not None:
      opts["q_offset"] = q_offset
  rows = (_base.length_slice(fn, prm["logits"], 1, t, "q_seq") if q_offset is None else
          jax.lax.dynamic_slice_in_dim(prm["logits"], q_offset, t, axis=1))
  r = _base.length_slice(fn, rows, 2, s, "kv_seq")
  logits = jnp.broadcast_to(r, tuple(qs[:-3]) + r.shape)
  out = scoring.attend_to_logits(
      fn, logits, scoring.as_float32(value), bias, mask, is_causal=is_causal,
      dropout_rate=dropout_rate, dropout_rng=dropout_rng, deterministic=deterministic,
      broadcast_dropout=broadcast_dropout, precision=precision, module=module, opts=opts,
      q_shape=tuple(qs))
  return out.astype(scoring.output_dtype(dtype, query, key, value))


for _k in (synthesizer_dense_attention, synthesizer_random_attention):
  if _k.__doc__:
    _k.__doc__ = _k.__doc__.format(args=_SYNTH_ARGS)
