"""Fused backends of the exact family: cuDNN (through ``jax.nn``) and the Pallas kernels.

Only reached through ``dispatch``, which has already checked the constraints that
:func:`cudnn_unsupported`, ``pallas_gpu.unsupported`` and ``pallas_tpu.unsupported`` list;
the ``run_*`` functions translate the canonical problem. cuDNN needs a GPU (the
``@pytest.mark.gpu`` tests); the Pallas kernels also run in interpret mode on CPU.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from attnjax.kernels import _common

# cuDNN's largest head_dim for fp16/bf16 flash attention: 128 before Hopper (sm_90), 256 from
# it on (jax._src.cudnn.fused_attention_stablehlo.check_is_flash_attention).
CUDNN_MAX_HEAD_DIM = 128
CUDNN_MAX_HEAD_DIM_HOPPER = 256


def cudnn_available() -> bool:
  """Whether this jax install can lower cuDNN attention (jax's CUDA plugin brings cuDNN)."""
  try:
    from jax._src.lib import cuda_versions  # pylint: disable=g-import-not-at-top
  except ImportError:  # pragma: no cover - depends on the jax build
    return False
  return cuda_versions is not None


def cudnn_unsupported(p: _common.Problem, tgt: Any, *, return_residual: bool = False
                      ) -> list[str]:
  """What cuDNN (as ``jax.nn.dot_product_attention(implementation='cudnn')``) refuses.

  Args:
    p: the canonical problem.
    tgt: a ``dispatch.Target`` (platform and GPU generation; an unknown generation gets
      the pre-Hopper limits).
    return_residual: whether the caller wants the log-sum-exp.

  Returns:
    One sentence per violated constraint, naming the argument (empty: cuDNN fits).
  """
  why: list[str] = []
  if tgt.platform != "gpu":
    why.append(f"implementation='cudnn' needs an NVIDIA GPU (platform is {tgt.platform!r})")
  elif not cudnn_available():
    why.append("implementation='cudnn' needs jax's CUDA plugin (pip install 'jax[cuda12]'), "
               "which this install lacks")
  d, dv = p.query.shape[-1], p.value.shape[-1]
  if jnp.dtype(p.out_dtype).name not in ("float16", "bfloat16"):
    why.append(f"cudnn needs float16 or bfloat16 inputs, got {jnp.dtype(p.out_dtype).name}")
  hopper = tgt.compute_capability is not None and tgt.compute_capability >= (9, 0)
  max_d = CUDNN_MAX_HEAD_DIM_HOPPER if hopper else CUDNN_MAX_HEAD_DIM
  gen = (f"sm_{tgt.compute_capability[0]}{tgt.compute_capability[1]}"
         if tgt.compute_capability else "an unknown GPU generation")
  if d > max_d or d % 8:
    why.append(f"cudnn needs head_dim <= {max_d} on {gen} and a multiple of 8, got "
               f"head_dim={d}")
  if dv != d:
    why.append(f"cudnn needs v_dim == head_dim, got head_dim={d}, v_dim={dv}")
  if p.dropout_rate > 0:
    why.append(f"cudnn does not support dropout_rate={p.dropout_rate} (its masks are not "
               "the XLA path's)")
  if p.soft_cap is not None:
    why.append("cudnn does not support logits_soft_cap")
  if p.alibi_slopes is not None or p.relative_table is not None:
    why.append("cudnn does not support in-kernel alibi_slopes / relative_bias_table (pass "
               "them as bias)")
  if p.q_segment_ids is not None:
    why.append("cudnn does not support q_segment_ids/kv_segment_ids (pass a mask)")
  if p.pattern is not None:
    why.append("cudnn does not support sparsity_pattern (pass it as a mask)")
  if p.offset != 0 and (p.causal or p.window is not None):
    why.append("cudnn supports only alignment='top_left' for is_causal/local_window_size when "
               "q_seq != kv_seq")
  if p.window is not None:
    if p.window[1] > 0 and not p.causal:
      why.append(f"cudnn supports only left windows: local_window_size={p.window} has a "
                 "right window, allowed only with is_causal=True")
    if p.q_len != p.kv_len:
      why.append(f"cudnn local_window_size needs q_seq == kv_seq, got {p.q_len} and {p.kv_len}")
  if (p.bias is not None or p.mask is not None) and (p.q_len % 2 or p.kv_len % 2):
    why.append(f"cudnn needs even q_seq and kv_seq with a bias or mask (its backward refuses "
               f"odd lengths), got q_seq={p.q_len}, kv_seq={p.kv_len}")
  if return_residual:
    why.append("cudnn returns the log-sum-exp rounded to the input dtype; return_residual "
               "needs it in float32")
  if p.precision is not None:
    why.append(f"cudnn does not take precision={p.precision!r}")
  return why


def _bthd(p: _common.Problem) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Canonical ``[B, K, G, T, D]`` / ``[B, K, S, D]`` -> ``[B, T, H, D]`` / ``[B, S, K, D]``."""
  b, kh, g, t, d = p.query.shape
  q = p.query.transpose(0, 3, 1, 2, 4).reshape(b, t, kh * g, d)
  k = p.key.transpose(0, 2, 1, 3)
  v = p.value.transpose(0, 2, 1, 3)
  return q, k, v


def from_bthd(p: _common.Problem, out: jax.Array) -> jax.Array:
  """``[B, T, H, Dv]`` -> canonical ``[B, K, G, T, Dv]`` in the compute dtype."""
  b, t, _, dv = out.shape
  return out.reshape(b, t, p.kv_heads, p.groups, dv).transpose(0, 2, 3, 1, 4).astype(
      p.compute_dtype)


def _bhts(p: _common.Problem, x: jax.Array | None) -> jax.Array | None:
  """[B|1, K|1, G|1, T|1, S|1] -> [B|1, H|1, T|1, S|1] as jax.nn wants."""
  if x is None:
    return None
  if x.shape[1] > 1 and x.shape[2] == 1 and p.groups > 1:
    # Per-kv-head masks/biases: query head h = (h // G, h % G) reads kv head h // G.
    x = jnp.broadcast_to(x, (x.shape[0], x.shape[1], p.groups) + x.shape[3:])
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
  del choice
  q, k, v = _bthd(p)
  window = p.window
  if window is not None and p.causal:
    window = (window[0], 0)  # causal already hides keys right of the diagonal
  out = jax.nn.dot_product_attention(
      q, k, v, bias=_bhts(p, p.bias), mask=_bhts(p, p.mask), scale=p.scale,
      is_causal=p.causal, query_seq_lengths=p.q_lengths, key_value_seq_lengths=p.kv_lengths,
      local_window_size=window, implementation="cudnn")
  out = from_bthd(p, out)
  live = _row_live(p)
  if live is not None:
    out = jnp.where(live[..., None], out, 0)
  # dispatch refuses return_residual for cuDNN (jax.nn returns it rounded to bf16/fp16);
  # this placeholder never reaches a caller.
  return out, jnp.zeros(out.shape[:-1], p.compute_dtype)


def run_pallas(p: _common.Problem, choice: Any) -> tuple[jax.Array, jax.Array]:
  """The Pallas kernel of the platform the choice was made for (Triton GPU or TPU splash)."""
  if choice.platform == "tpu":
    from attnjax.kernels import pallas_tpu  # pylint: disable=g-import-not-at-top
    return pallas_tpu.run(p, choice)
  from attnjax.kernels import pallas_gpu  # pylint: disable=g-import-not-at-top
  return pallas_gpu.run(p, choice)
