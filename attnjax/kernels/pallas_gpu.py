"""Pallas GPU (Triton) flash attention: ``jax.experimental.pallas.ops.gpu.attention.mha``.

What it computes: causal or full softmax attention with packed-sequence segment ids, GQA
(keys and values repeated per query head), the log-sum-exp when asked for. What it
refuses is listed by :func:`unsupported` (``dispatch`` checks it before :func:`run`).

The jax kernel returns the log-sum-exp in base 2 and cannot differentiate through it; with
``return_residual`` this module wraps it in a custom VJP whose backward runs jax's fused
backward kernel on inputs widened by one column, which folds the log-sum-exp cotangent
into the kernel's row term (``delta = rowsum(dout * out) - dlse``): ``q`` and ``k`` get a
zero column, ``v`` a zero column, ``out`` the column ``-dlse`` and ``dout`` a column of
ones, so ``dp`` and the ``[:D]`` parts of ``dq``, ``dk``, ``dv`` are unchanged.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp

from attnjax.kernels import _common
from attnjax.kernels import backends

DEFAULT_BLOCK_Q = 128  # jax's BlockSizes.get_default() forward blocks
DEFAULT_BLOCK_KV = 128
BACKWARD_BLOCK = 32  # jax's default backward blocks (dq and dkv kernels)


def _is_pow2(n: int) -> bool:
  return n > 0 and not n & (n - 1)


def block_sizes(p: _common.Problem, block_q: int | None, block_kv: int | None
                ) -> tuple[int, int, int, int]:
  """``(block_q, block_kv, backward_block_q, backward_block_kv)`` as the kernel uses them."""
  bq = min(block_q or DEFAULT_BLOCK_Q, p.q_len)
  bk = min(block_kv or DEFAULT_BLOCK_KV, p.kv_len)
  return bq, bk, min(BACKWARD_BLOCK, p.q_len), min(BACKWARD_BLOCK, p.kv_len)


def unsupported(p: _common.Problem, *, block_q: int | None = None,
                block_kv: int | None = None) -> list[str]:
  """Constraints of the Pallas GPU kernel this problem violates (empty: it fits)."""
  why: list[str] = []
  d, dv = p.query.shape[-1], p.value.shape[-1]
  if jnp.dtype(p.out_dtype) == jnp.float64:
    why.append("pallas (GPU) does not support float64 inputs")
  if p.bias is not None or p.mask is not None:
    why.append("pallas (GPU) does not support bias or mask")
  if p.window is not None:
    why.append("pallas (GPU) does not support local_window_size")
  if p.q_lengths is not None or p.kv_lengths is not None:
    why.append("pallas (GPU) does not support query_seq_lengths/key_value_seq_lengths")
  if p.dropout_rate > 0:
    why.append(f"pallas (GPU) does not support dropout_rate={p.dropout_rate}")
  if p.soft_cap is not None:
    why.append("pallas (GPU) does not support logits_soft_cap")
  if p.alibi_slopes is not None or p.relative_table is not None:
    why.append("pallas (GPU) does not support alibi_slopes / relative_bias_table")
  if p.pattern is not None:
    why.append("pallas (GPU) does not support sparsity_pattern")
  if p.precision is not None:
    why.append(f"pallas (GPU) does not take precision={p.precision!r}")
  if p.q_segment_ids is not None and p.kv_segment_ids is not p.q_segment_ids:
    why.append("pallas (GPU) takes one segment-id array for queries and keys: pass "
               "q_segment_ids only (self-attention)")
  if not _is_pow2(d) or d < 16 or dv != d:
    why.append(f"pallas (GPU) needs head_dim a power of two >= 16 and v_dim == head_dim; got "
               f"head_dim={d}, v_dim={dv}")
  if p.q_len != p.kv_len:
    why.append(f"pallas (GPU) needs q_seq == kv_seq (its backward splits both into the same "
               f"number of blocks), got {p.q_len} and {p.kv_len}")
  for name, b in (("block_q", block_q), ("block_kv", block_kv)):
    if b is not None and (not isinstance(b, int) or isinstance(b, bool) or b <= 0):
      why.append(f"pallas (GPU) {name} must be a positive int, got {b!r}")
      return why
  bq, bk, bwd_q, bwd_k = block_sizes(p, block_q, block_kv)
  for what, n, blk in (("q_seq", p.q_len, bq), ("kv_seq", p.kv_len, bk),
                       ("q_seq", p.q_len, bwd_q), ("kv_seq", p.kv_len, bwd_k)):
    if n % blk:
      why.append(f"pallas (GPU) needs {what}={n} to be a multiple of its block size {blk}")
  return why


def _kernel_blocks(p: _common.Problem, choice: Any) -> Any:
  from jax.experimental.pallas.ops.gpu import attention  # pylint: disable=g-import-not-at-top
  bq, bk, bwd_q, bwd_k = block_sizes(p, choice.block_q, choice.block_kv)
  return attention.BlockSizes(block_q=bq, block_k=bk, block_q_dkv=bwd_q, block_kv_dkv=bwd_k,
                              block_q_dq=bwd_q, block_kv_dq=bwd_k)


def run(p: _common.Problem, choice: Any) -> tuple[jax.Array, jax.Array]:
  """Runs the kernel: ``(out [B, K, G, T, Dv], lse [B, K, G, T])`` in the compute dtype.

  The log-sum-exp is computed only when ``choice.residual``; otherwise the second output
  is a placeholder that ``dot_product_attention`` never returns.
  """
  try:
    from jax.experimental.pallas.ops.gpu import attention  # pylint: disable=g-import-not-at-top
  except ImportError as e:  # pragma: no cover - depends on the jax build
    raise ValueError(f"implementation='pallas' is unavailable in this jax build: {e}") from e
  q, k, v = backends._bthd(p)  # pylint: disable=protected-access
  if p.groups > 1:
    k = jnp.repeat(k, p.groups, axis=2)
    v = jnp.repeat(v, p.groups, axis=2)
  sizes = _kernel_blocks(p, choice)
  seg = p.q_segment_ids
  if choice.residual:
    out, lse = _mha_with_lse(q, k, v, seg, p.scale, p.causal, sizes, choice.interpret)
    b, h, t = lse.shape
    lse = lse.reshape(b, p.kv_heads, p.groups, t).astype(p.compute_dtype)
  else:
    out = attention.mha(q, k, v, seg, sm_scale=p.scale, causal=p.causal, block_sizes=sizes,
                        interpret=choice.interpret)
    lse = None
  out = backends.from_bthd(p, out)
  if lse is None:
    lse = jnp.zeros(out.shape[:-1], p.compute_dtype)
  return out, lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
def _mha_with_lse(q, k, v, seg, scale, causal, sizes, interpret):
  """``(out [B, T, H, D], lse [B, H, T])``, natural-log lse, differentiable in both."""
  return _mha_with_lse_fwd(q, k, v, seg, scale, causal, sizes, interpret)[0]


def _mha_with_lse_fwd(q, k, v, seg, scale, causal, sizes, interpret):
  from jax.experimental.pallas.ops.gpu import attention  # pylint: disable=g-import-not-at-top
  out, lse2 = attention.mha(q, k, v, seg, sm_scale=scale, causal=causal, block_sizes=sizes,
                            interpret=interpret, return_residuals=True)
  # The kernel works in base 2 (exp2 of logits * log2(e)): lse2 = lse / ln(2).
  return (out, lse2 * math.log(2.0)), (q, k, v, seg, out, lse2)


def _mha_with_lse_bwd(scale, causal, sizes, interpret, res, cts):
  from jax.experimental.pallas.ops.gpu import attention  # pylint: disable=g-import-not-at-top
  q, k, v, seg, out, lse2 = res
  dout, dlse = cts
  zero = lambda x: jnp.zeros(x.shape[:-1] + (1,), x.dtype)  # noqa: E731
  widen = lambda x, col: jnp.concatenate([x, col.astype(x.dtype)], axis=-1)  # noqa: E731
  out1 = widen(out, -jnp.swapaxes(dlse, 1, 2)[..., None])
  dout1 = widen(dout.astype(out.dtype), jnp.ones_like(zero(out)))
  res1 = (widen(q, zero(q)), widen(k, zero(k)), widen(v, zero(v)), seg, out1, lse2)
  # pylint: disable-next=protected-access
  dq, dk, dv, _ = attention._mha_backward(scale, causal, sizes, "triton", None, 2, None,
                                          interpret, False, False, res1, dout1)
  return dq[..., :-1], dk[..., :-1], dv[..., :-1], None


_mha_with_lse.defvjp(_mha_with_lse_fwd, _mha_with_lse_bwd)
