"""Position encodings that live inside (or next to) the attention kernels.

* ALiBi (Press et al., 2022): a per-head linear penalty on the query-key distance,
  ``bias[h, q, k] = -slope[h] * |k - q - offset|``. :func:`alibi_slopes` gives the
  standard geometric slopes.
* T5 relative position bias (Raffel et al., 2020): the distance ``k - q - offset`` is
  bucketed (:func:`relative_position_bucket`) and a learnable ``[num_buckets, heads]``
  table is looked up.
* Rotary embeddings (Su et al., 2021): :func:`apply_rotary` rotates query and key
  feature pairs by a position-dependent angle before the kernel is called.

The kernels compute ALiBi and T5 biases per block from positions, so no ``[T, S]``
bias array is ever materialised by the chunked kernel. ``offset`` is the diagonal
offset of the kernel's ``alignment`` (0 for 'top_left', ``S - T`` for 'bottom_right').
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def alibi_slopes(num_heads: int) -> np.ndarray:
  """Standard ALiBi slopes, one per head.

  For a power of two ``n`` the slopes are ``2**(-8 i / n)`` for ``i = 1..n``; other head
  counts interleave the slopes of the next power of two, as in the reference code.

  Args:
    num_heads: number of query heads.

  Returns:
    float32 NumPy array of shape ``[num_heads]``.
  """
  if num_heads <= 0:
    raise ValueError(f"num_heads must be positive, got {num_heads}")

  def power_of_2(n: int) -> list[float]:
    start = 2.0 ** (-(2.0 ** -(math.log2(n) - 3)))
    return [start * start**i for i in range(n)]

  if math.log2(num_heads).is_integer():
    slopes = power_of_2(num_heads)
  else:
    closest = 2 ** math.floor(math.log2(num_heads))
    slopes = power_of_2(closest) + power_of_2(2 * closest)[0::2][: num_heads - closest]
  return np.asarray(slopes, dtype=np.float32)


def relative_position_bucket(
    relative_position: jax.Array,
    *,
    num_buckets: int = 32,
    max_distance: int = 128,
    bidirectional: bool = True,
) -> jax.Array:
  """T5's bucketing of relative positions (``key_pos - query_pos``).

  Half of the buckets (per direction when ``bidirectional``) hold exact small distances;
  the rest grow logarithmically up to ``max_distance``, beyond which all distances
  share the last bucket.

  Args:
    relative_position: integer array of any shape, ``key_pos - query_pos``.
    num_buckets: total number of buckets (the table's first dimension).
    max_distance: distance from which every position shares the last bucket.
    bidirectional: if False, keys after the query all go to bucket 0 (decoder style).

  Returns:
    int32 array of the same shape with values in ``[0, num_buckets)``.
  """
  n = -jnp.asarray(relative_position, jnp.int32)
  ret = jnp.zeros_like(n)
  if bidirectional:
    num_buckets //= 2
    ret = ret + (n < 0).astype(jnp.int32) * num_buckets
    n = jnp.abs(n)
  else:
    n = jnp.maximum(n, 0)
  max_exact = num_buckets // 2
  is_small = n < max_exact
  # The max() keeps log() away from 0 for the small distances that where() discards.
  n_f = jnp.maximum(n, max_exact).astype(jnp.float32)
  large = max_exact + (
      jnp.log(n_f / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
  ).astype(jnp.int32)
  large = jnp.minimum(large, num_buckets - 1)
  return ret + jnp.where(is_small, n, large)


def apply_rotary(
    x: jax.Array,
    positions: jax.Array | None = None,
    *,
    base: float = 10000.0,
    rotary_dim: int | None = None,
    interleaved: bool = False,
) -> jax.Array:
  """Rotary position embedding (RoPE) applied to queries or keys.

  Args:
    x: ``[batch..., seq, heads, head_dim]``.
    positions: integer or float positions broadcastable to ``[batch..., seq]``;
      defaults to ``arange(seq)``.
    base: wavelength base of the rotation frequencies.
    rotary_dim: number of leading features rotated (even, <= head_dim); the rest pass
      through unchanged (partial rotary, as in GPT-NeoX). Defaults to head_dim.
    interleaved: rotate adjacent pairs ``(x0, x1), (x2, x3)...`` (GPT-J / original
      RoFormer) instead of the two halves ``(x_i, x_{i + d/2})`` (GPT-NeoX / LLaMA).

  Returns:
    Array of the same shape and dtype as ``x``; angles and products in float32.
  """
  if x.ndim < 3:
    raise ValueError(f"apply_rotary: x must be [batch..., seq, heads, head_dim], got shape {x.shape}")
  head_dim = x.shape[-1]
  rotary_dim = head_dim if rotary_dim is None else rotary_dim
  if rotary_dim % 2 or not 0 < rotary_dim <= head_dim:
    raise ValueError(
        f"apply_rotary: rotary_dim must be even and in (0, head_dim={head_dim}], got {rotary_dim}")
  seq = x.shape[-3]
  if positions is None:
    positions = jnp.arange(seq)
  positions = jnp.asarray(positions)
  try:
    jnp.broadcast_shapes(positions.shape, x.shape[:-2])
  except ValueError:
    raise ValueError(
        f"apply_rotary: positions of shape {positions.shape} do not broadcast to "
        f"[batch..., seq] = {x.shape[:-2]}") from None
  half = rotary_dim // 2
  inv_freq = 1.0 / (base ** (np.arange(half, dtype=np.float32) * 2.0 / rotary_dim))
  # [batch..., seq, 1, half]: one angle per position and frequency, shared by heads.
  angles = positions.astype(jnp.float32)[..., None, None] * inv_freq
  sin, cos = jnp.sin(angles), jnp.cos(angles)
  rot, rest = x[..., :rotary_dim].astype(jnp.float32), x[..., rotary_dim:]
  if interleaved:
    x1, x2 = rot[..., 0::2], rot[..., 1::2]
  else:
    x1, x2 = rot[..., :half], rot[..., half:]
  y1 = x1 * cos - x2 * sin
  y2 = x2 * cos + x1 * sin
  if interleaved:
    y = jnp.stack([y1, y2], axis=-1).reshape(rot.shape)
  else:
    y = jnp.concatenate([y1, y2], axis=-1)
  return jnp.concatenate([y.astype(x.dtype), rest], axis=-1) if rest.shape[-1] else y.astype(x.dtype)
