"""GPU backends of the exact family: cuDNN (through ``jax.nn``) and Pallas.

Only reached through ``dispatch``, which has already checked the constraints listed in
``dispatch.unsupported``; these functions translate the canonical problem. They need a
GPU and are exercised by the ``@pytest.mark.gpu`` tests.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from attnjax.kernels import _common


def _bthd(p: _common.Problem) -> tuple[jax.Array, jax.Array, jax.Array]:
  b, kh, g, t, d = p.query.shape
  q = p.query.transpose(0, 3, 1, 2, 4).reshape(b, t, kh * g, d)
  k = p.key.transpose(0, 2, 1, 3)
  v = p.value.transpose(0, 2, 1, 3)
  return q, k, v


def _bhts(p: _common.Problem, x: jax.Array | None) -> jax.Array | None:
  """[B|1, K|1, G|1, T|1, S|1] -> [B|1, H|1, T|1, S|1] as jax.nn wants."""
  if x is None:
    return None
  return x.reshape(x.shape[0], x.shape[1] * x.shape[2], x.shape[3], x.shape[4])


def _row_live(p: _common.Problem) -> jax.Array | None:
  """[B, K, G, T] bool: whether a query row has any live key (None: every row has)."""
  if p.mask is None and p.kv_lengths is None and not (p.window is not None or p.causal):
    return None
  m = _common.block_mask(p, 0, p.q_len, 0, p.kv_len)
  m = jnp.broadcast_to(m, (p.batch, p.kv_heads, p.groups, p.q_len, p.kv_len))
  return jnp.any(m, axis=-1)


def run_cudnn(p: _common.Problem, choice: Any) -> tuple[jax.Array, jax.Array]:
  """cuDNN fused attention, with fully masked rows zeroed to honour the kernel contract."""
  q, k, v = _bthd(p)
  mask = _bhts(p, p.mask)
  out, lse = jax.nn.dot_product_attention(
      q, k, v, bias=_bhts(p, p.bias), mask=mask, scale=p.scale, is_causal=p.causal,
      query_seq_lengths=p.q_lengths, key_value_seq_lengths=p.kv_lengths,
      local_window_size=p.window, implementation="cudnn", return_residual=True)
  b, t, h, dv = out.shape
  out = out.reshape(b, t, p.kv_heads, p.groups, dv).transpose(0, 2, 3, 1, 4)
  lse = lse.reshape(b, t, p.kv_heads, p.groups).transpose(0, 2, 3, 1).astype(p.compute_dtype)
  live = _row_live(p)
  if live is not None:
    out = jnp.where(live[..., None], out, 0)
    lse = jnp.where(live, lse, -jnp.inf)
  return out.astype(p.compute_dtype), lse


def run_pallas(p: _common.Problem, choice: Any) -> tuple[jax.Array, jax.Array]:
  """Pallas (Triton/Mosaic GPU) flash attention from ``jax.experimental.pallas.ops``."""
  try:
    from jax.experimental.pallas.ops.gpu import attention as pallas_attention  # pylint: disable=g-import-not-at-top
  except ImportError as e:  # pragma: no cover - depends on the jax build
    raise ValueError(f"implementation='pallas' is unavailable in this jax build: {e}") from e
  q, k, v = _bthd(p)
  if p.groups > 1:
    k = jnp.repeat(k, p.groups, axis=2)
    v = jnp.repeat(v, p.groups, axis=2)
  kwargs = {}
  if choice.block_q is not None:
    kwargs["block_q"] = choice.block_q
  if choice.block_kv is not None:
    kwargs["block_k"] = choice.block_kv
  out = pallas_attention.mha(q, k, v, segment_ids=None, sm_scale=p.scale, causal=p.causal,
                             **kwargs)
  b, t, h, dv = out.shape
  out = out.reshape(b, t, p.kv_heads, p.groups, dv).transpose(0, 2, 3, 1, 4)
  # The Pallas kernel does not return the log-sum-exp; dispatch refuses return_residual.
  lse = jnp.zeros(out.shape[:-1], p.compute_dtype)
  return out.astype(p.compute_dtype), lse
