"""Training FLOPs from the model config, and per-device peaks for MFU."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from attnjax import kernels
from attnjax.kernels.variants import attention_flops
from attnjax.layers import EncoderConfig

# Dense peak FLOP/s per device, by (device_kind prefix, compute dtype); vendor datasheets.
# Matched by prefix of ``jax.devices()[0].device_kind``.
PEAK_FLOPS: dict[tuple[str, str], float] = {
    ("NVIDIA H200", "bfloat16"): 989e12, ("NVIDIA H200", "float32"): 67e12,
    ("NVIDIA H100", "bfloat16"): 989e12, ("NVIDIA H100", "float32"): 67e12,
    ("NVIDIA A100", "bfloat16"): 312e12, ("NVIDIA A100", "float32"): 19.5e12,
    ("TPU v4", "bfloat16"): 275e12,
    ("TPU v5 lite", "bfloat16"): 197e12,
    ("TPU v5p", "bfloat16"): 459e12,
    ("TPU v6 lite", "bfloat16"): 918e12,
}


def forward_flops_per_sequence(cfg: EncoderConfig, num_classes: int, seq_len: int, *,
                               batch_size: int = 1) -> float:
  """Matmul FLOPs (2 per multiply-add) of one forward pass over one sequence.

  Counts the projections, the attention kernel's matmuls, the feed-forward block and the
  classification head; elementwise work (softmax, LayerNorm, activations) is left out, as
  in the usual MFU definition. Attention is what ``cfg.kernel`` with ``cfg.kernel_options``
  declares (``attnjax.kernels.variants.attention_flops``): every query against every key
  for the exact-softmax kernels, less for the sub-quadratic and structured-sparse ones.

  Args:
    cfg: the encoder.
    num_classes: width of the classification head.
    seq_len: tokens per sequence, CLS token excluded.
    batch_size: sequences per kernel call; it only decides whether the exact kernels under
      the structured-sparse ones run dense or blockwise (the cost per sequence differs).
  """
  t = seq_len + int(cfg.add_cls_token)
  d, hd = cfg.hidden_size, cfg.head_dim
  heads, kv = cfg.num_heads, cfg.num_kv_heads or cfg.num_heads
  attention = attention_flops(kernels.get_kernel(cfg.kernel), q_len=t, kv_len=t,
                              num_heads=heads, num_kv_heads=kv, head_dim=hd,
                              batch_size=batch_size, **cfg.kernel_options)
  per_layer = (2 * t * d * (heads + 2 * kv) * hd     # query, key, value projections
               + attention                           # q k^T and p v, or the kernel's own
               + 2 * t * heads * hd * d              # output projection
               + 2 * 2 * t * d * cfg.mlp_dim)        # feed-forward in and out
  return float(cfg.num_layers * per_layer + 2 * d * num_classes)


def train_flops_per_step(cfg: EncoderConfig, num_classes: int, seq_len: int,
                         batch_size: int) -> float:
  """Forward + backward (twice the forward) matmul FLOPs of one step of ``batch_size``."""
  return 3.0 * batch_size * forward_flops_per_sequence(cfg, num_classes, seq_len,
                                                       batch_size=batch_size)


def peak_flops_per_device(dtype: str, override: float = 0.0) -> tuple[float, str]:
  """Peak FLOP/s of one device and where the number comes from.

  ``override`` (config.train.peak_flops_per_device) wins; then the table above; on CPU (or
  an unknown accelerator) a float32 matmul is timed for about half a second.
  """
  if override > 0:
    return float(override), "config"
  kind = jax.devices()[0].device_kind
  for (prefix, dt), peak in PEAK_FLOPS.items():
    if kind.startswith(prefix) and dt == dtype:
      return peak, f"datasheet ({prefix}, {dt})"
  return measure_matmul_flops(), f"measured matmul on {kind}"


def measure_matmul_flops(n: int = 1024, seconds: float = 0.5) -> float:
  """FLOP/s of a jitted ``n x n`` float32 matmul on the default device (median)."""
  a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  times = []
  start = time.perf_counter()
  while time.perf_counter() - start < seconds or len(times) < 3:
    t0 = time.perf_counter()
    f(a).block_until_ready()
    times.append(time.perf_counter() - t0)
  return 2.0 * n**3 / float(np.median(times))
