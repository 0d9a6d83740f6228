"""Shared machinery of the exact attention kernels: validation, canonical layout, masks.

Every kernel (dense, chunked, and the later cosine/additive/sparse/linear ones) goes
through :func:`prepare`, which validates the public arguments once, raising
``ValueError`` that names the argument and the shapes, and returns a :class:`Problem`
in one canonical layout:

  query  [B, K, G, T, D]      B = prod(batch...), K = kv heads, G = query heads per kv head
  key    [B, K, S, D]
  value  [B, K, S, Dv]
  bias   [B|1, K|1, G|1, T|1, S|1]   (float, broadcast dims kept at size 1)
  mask   [B|1, K|1, G|1, T|1, S|1]   (bool, True = attend)

Grouped-query attention is the ``G`` axis: query head ``h`` is ``(h // G, h % G)``, the
layout of ``jax.nn.dot_product_attention``.

Structured masks (causal, local window, sequence lengths, segment ids), the in-kernel
position biases (ALiBi, T5 buckets) and dropout are *lazy*: :func:`block_scores` builds
them for any rectangle of query rows ``[q0, q0 + tq)`` and key columns ``[k0, k0 + tk)``
from positions alone. The dense kernel asks for one rectangle covering everything; the
chunked kernel asks block by block and never holds a ``[T, S]`` array.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from attnjax.kernels import positions

ALIGNMENTS = ("top_left", "bottom_right")
_FLOAT_DTYPES = (jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64)


@dataclasses.dataclass(frozen=True)
class Problem:
  """A validated attention call in canonical layout (see the module docstring).

  Array fields are pytree children (``None`` when unused); the rest is static.
  """

  query: jax.Array
  key: jax.Array
  value: jax.Array
  bias: jax.Array | None
  mask: jax.Array | None
  q_lengths: jax.Array | None  # [B] int32
  kv_lengths: jax.Array | None  # [B] int32
  q_segment_ids: jax.Array | None  # [B, T] int32
  kv_segment_ids: jax.Array | None  # [B, S] int32
  alibi_slopes: jax.Array | None  # [B|1, K, G] float32
  relative_table: jax.Array | None  # [num_buckets, K, G] float32
  dropout_seed: jax.Array | None  # [2] uint32
  q_offset: jax.Array | None  # [] int32: a traced diagonal offset (decoding); see `diagonal`
  # Static description.
  batch_shape: tuple[int, ...] = ()
  num_heads: int = 1
  q_len: int = 1  # T
  kv_len: int = 1  # S
  scale: float = 1.0
  causal: bool = False
  offset: int = 0  # key k lies on the diagonal of query q when k == q + offset (static)
  decoding: bool = False  # q_offset was given (or derived from a flax decode step)
  window: tuple[int, int] | None = None
  pattern: Any = None  # a static sparsity pattern (``patterns.py``), or None
  soft_cap: float | None = None
  relative_max_distance: int = 128
  relative_bidirectional: bool = True
  dropout_rate: float = 0.0
  broadcast_dropout: bool = True
  out_dtype: Any = jnp.float32
  precision: Any = None

  @property
  def compute_dtype(self) -> Any:
    """Dtype of logits and softmax statistics: float32, or float64 for float64 inputs."""
    return jnp.promote_types(self.query.dtype, jnp.float32)

  @property
  def batch(self) -> int:
    return self.query.shape[0]

  @property
  def kv_heads(self) -> int:
    return self.query.shape[1]

  @property
  def groups(self) -> int:
    return self.query.shape[2]

  @property
  def has_structure(self) -> bool:
    """True when some mask or bias depends on positions (so blocks differ)."""
    return (self.causal or self.window is not None or self.pattern is not None
            or self.q_lengths is not None
            or self.kv_lengths is not None or self.q_segment_ids is not None
            or self.alibi_slopes is not None or self.relative_table is not None)

  @property
  def diagonal(self) -> int | jax.Array:
    """The diagonal offset: ``q_offset`` when traced, else the static ``offset``.

    Query row ``i`` lies on key ``i + diagonal`` (its absolute position when decoding).
    """
    return self.offset if self.q_offset is None else self.q_offset

  def replace(self, **kw: Any) -> Problem:
    return dataclasses.replace(self, **kw)


_ARRAY_FIELDS = [
    "query", "key", "value", "bias", "mask", "q_lengths", "kv_lengths", "q_segment_ids",
    "kv_segment_ids", "alibi_slopes", "relative_table", "dropout_seed", "q_offset"
]
jax.tree_util.register_dataclass(
    Problem,
    data_fields=_ARRAY_FIELDS,
    meta_fields=[f.name for f in dataclasses.fields(Problem) if f.name not in _ARRAY_FIELDS],
)


# --------------------------------------------------------------------------- validation


def _err(fn: str, msg: str) -> ValueError:
  return ValueError(f"{fn}: {msg}")


def _as_array(x: Any, name: str, fn: str) -> jax.Array:
  try:
    return jnp.asarray(x)
  except TypeError as e:
    raise _err(fn, f"{name} must be an array, got {type(x).__name__}") from e


def _check_float(x: jax.Array, name: str, fn: str) -> None:
  if not any(x.dtype == d for d in _FLOAT_DTYPES):
    raise _err(fn, f"{name} must be float16, bfloat16, float32 or float64; got dtype {x.dtype} "
               f"(shape {x.shape})")


def _canonical_bnd(x: jax.Array | None, name: str, fn: str, batch_shape: tuple[int, ...],
                   num_heads: int, kv_heads: int, t: int, s: int) -> jax.Array | None:
  """Brings a mask/bias broadcastable to [batch..., H, T, S] to [B|1, K|1, G|1, T|1, S|1]."""
  if x is None:
    return None
  target = batch_shape + (num_heads, t, s)
  if x.ndim > len(target):
    raise _err(fn, f"{name} of shape {x.shape} has more dims than [batch..., heads, q_seq, "
               f"kv_seq] = {target}")
  shape = (1,) * (len(target) - x.ndim) + tuple(x.shape)
  for got, want in zip(shape, target):
    if got not in (1, want):
      raise _err(fn, f"{name} of shape {tuple(x.shape)} is not broadcastable to [batch..., heads, "
                 f"q_seq, kv_seq] = {target}")
  x = x.reshape(shape)
  nb = len(batch_shape)
  bdims = shape[:nb]
  if all(d == 1 for d in bdims):
    x = x.reshape((1,) + shape[nb:])
  else:
    x = jnp.broadcast_to(x, batch_shape + shape[nb:]).reshape((-1,) + shape[nb:])
  h = shape[nb]
  groups = num_heads // kv_heads
  if h == 1:
    return x[:, None]  # [B|1, 1, 1, T|1, S|1]
  return x.reshape(x.shape[0], kv_heads, groups, *x.shape[2:])


def _canonical_per_batch(x: Any, name: str, fn: str, batch_shape: tuple[int, ...]) -> jax.Array | None:
  if x is None:
    return None
  x = _as_array(x, name, fn)
  if not jnp.issubdtype(x.dtype, jnp.integer):
    raise _err(fn, f"{name} must be an integer array, got dtype {x.dtype}")
  try:
    x = jnp.broadcast_to(x, batch_shape)
  except ValueError:
    raise _err(fn, f"{name} of shape {x.shape} is not broadcastable to the batch shape "
               f"{batch_shape}") from None
  return x.reshape(-1).astype(jnp.int32)


def _canonical_segments(x: Any, name: str, fn: str, batch_shape: tuple[int, ...],
                        length: int, what: str) -> jax.Array | None:
  if x is None:
    return None
  x = _as_array(x, name, fn)
  if not jnp.issubdtype(x.dtype, jnp.integer):
    raise _err(fn, f"{name} must be an integer array, got dtype {x.dtype}")
  target = batch_shape + (length,)
  try:
    x = jnp.broadcast_to(x, target)
  except ValueError:
    raise _err(fn, f"{name} of shape {x.shape} is not broadcastable to [batch..., {what}] = "
               f"{target}") from None
  return x.reshape(-1, length).astype(jnp.int32)


def _canonical_window(w: Any, fn: str) -> tuple[int, int] | None:
  if w is None:
    return None
  if isinstance(w, (int, np.integer)):
    w = (int(w), int(w))
  try:
    left, right = (int(v) for v in w)
  except (TypeError, ValueError):
    raise _err(fn, f"local_window_size must be an int or a (left, right) pair, got {w!r}") from None
  if left < 0 or right < 0:
    raise _err(fn, f"local_window_size entries must be >= 0, got {(left, right)}")
  return left, right


def flax_decode_offset(q_len: int, kv_len: int) -> jax.Array | None:
  """The query position of a ``flax.linen.MultiHeadDotProductAttention(decode=True)`` step.

  In its decode steps flax calls ``attention_fn`` with one query and the whole key/value
  cache, after bumping the ``'cache'`` collection's ``cache_index``; it passes ``module``
  only with ``sow_weights=True``. So the calling module is read from flax's module stack
  (the way ``flax.linen.partitioning`` does), without importing flax: ``None`` unless
  flax is loaded and the innermost module is such a module in a decode step.
  """
  flax_module = sys.modules.get("flax.linen.module")
  flax_attention = sys.modules.get("flax.linen.attention")
  if flax_module is None or flax_attention is None or not q_len == 1 < kv_len:
    return None
  stack = getattr(getattr(flax_module, "_context", None), "module_stack", None)
  mod = stack[-1] if stack else None
  mhdpa = getattr(flax_attention, "MultiHeadDotProductAttention", None)
  if mhdpa is None or not isinstance(mod, mhdpa) or not getattr(mod, "decode", False):
    return None
  if not mod.has_variable("cache", "cache_index"):
    return None
  # Bumped before attention_fn runs: the one query sits at the previous index.
  return jnp.asarray(mod.get_variable("cache", "cache_index"), jnp.int32) - q_len


def _canonical_q_offset(q_offset: Any, alignment: str, fn: str, q_len: int, kv_len: int
                        ) -> tuple[int, jax.Array | None, bool]:
  """``(static offset, traced offset or None, decoding)`` of the diagonal."""
  if q_offset is None:
    derived = flax_decode_offset(q_len, kv_len)
    if derived is None:
      return (0 if alignment == "top_left" else kv_len - q_len), None, False
    return 0, derived, True
  if alignment != "top_left":
    raise _err(fn, f"give q_offset or alignment={alignment!r}, not both (q_offset places the "
               "diagonal itself)")
  if isinstance(q_offset, (bool, np.bool_)):
    raise _err(fn, f"q_offset must be an int or an int32 scalar array, got {q_offset!r}")
  if isinstance(q_offset, (int, np.integer)) or (isinstance(q_offset, np.ndarray)
                                                 and q_offset.ndim == 0):
    if not jnp.issubdtype(np.asarray(q_offset).dtype, jnp.integer):
      raise _err(fn, f"q_offset must be an integer, got dtype {np.asarray(q_offset).dtype}")
    return int(q_offset), None, True  # static: block skipping stays exact and static
  x = _as_array(q_offset, "q_offset", fn)
  if x.ndim != 0 or not jnp.issubdtype(x.dtype, jnp.integer):
    raise _err(fn, f"q_offset must be an integer scalar (the absolute position of query row "
               f"0), got shape {x.shape} dtype {x.dtype}")
  return 0, x.astype(jnp.int32), True


def prepare(
    query: Any,
    key: Any,
    value: Any,
    bias: Any = None,
    mask: Any = None,
    *,
    fn: str,
    scale: float | None = None,
    is_causal: bool = False,
    alignment: str = "top_left",
    q_offset: Any = None,
    local_window_size: int | tuple[int, int] | None = None,
    sparsity_pattern: Any = None,
    query_seq_lengths: Any = None,
    key_value_seq_lengths: Any = None,
    q_segment_ids: Any = None,
    kv_segment_ids: Any = None,
    logits_soft_cap: float | None = None,
    alibi_slopes: Any = None,
    relative_bias_table: Any = None,
    relative_max_distance: int = 128,
    relative_bidirectional: bool = True,
    dropout_rate: float = 0.0,
    dropout_rng: Any = None,
    deterministic: bool = True,
    broadcast_dropout: bool = True,
    dtype: Any = None,
    precision: Any = None,
) -> Problem:
  """Validates a kernel call and returns it in canonical layout.

  ``value`` may be ``None`` (for :func:`attention_weights`); a dummy zero-width value is
  used then. ``q_offset`` (the absolute position of query row 0; a Python int stays
  static, an array is traced) replaces the ``alignment`` diagonal; when it is ``None``
  inside a decode step of ``flax.linen.MultiHeadDotProductAttention(decode=True)`` it is
  taken from that module's cache index. All errors are ``ValueError`` naming ``fn``, the argument and the shapes.
  """
  q = _as_array(query, "query", fn)
  k = _as_array(key, "key", fn)
  v = k[..., :0] if value is None else _as_array(value, "value", fn)
  for name, x in (("query", q), ("key", k), ("value", v)):
    if x.ndim < 3:
      raise _err(fn, f"{name} must have shape [batch..., seq, heads, head_dim] (rank >= 3), got "
                 f"shape {x.shape}")
    _check_float(x, name, fn)
  if not q.ndim == k.ndim == v.ndim:
    raise _err(fn, f"query, key and value must have the same rank, got shapes {q.shape}, "
               f"{k.shape}, {v.shape}")
  batch_shape = tuple(q.shape[:-3])
  if tuple(k.shape[:-3]) != batch_shape or tuple(v.shape[:-3]) != batch_shape:
    raise _err(fn, f"query, key and value must have the same batch dims, got shapes {q.shape}, "
               f"{k.shape}, {v.shape}")
  t, h, d = q.shape[-3:]
  s, kh, dk = k.shape[-3:]
  if dk != d:
    raise _err(fn, f"query and key head_dim differ: query {q.shape}, key {k.shape}")
  if tuple(v.shape[-3:-1]) != (s, kh):
    raise _err(fn, f"key and value must agree on kv_seq and heads: key {k.shape}, value {v.shape}")
  if kh == 0 or h % kh:
    raise _err(fn, f"query heads ({h}) must be a multiple of key/value heads ({kh}): query "
               f"{q.shape}, key {k.shape}")
  if t == 0 or s == 0:
    raise _err(fn, f"q_seq and kv_seq must be non-empty: query {q.shape}, key {k.shape}")
  if dtype is not None:
    dtype = jnp.dtype(dtype)
    if not any(dtype == d_ for d_ in _FLOAT_DTYPES):
      raise _err(fn, f"dtype must be a floating dtype, got {dtype}")
    out_dtype = dtype
  else:
    out_dtype = jnp.result_type(q.dtype, k.dtype, v.dtype)
  q, k, v = q.astype(out_dtype), k.astype(out_dtype), v.astype(out_dtype)
  compute = jnp.promote_types(out_dtype, jnp.float32)

  if bias is not None:
    bias = _as_array(bias, "bias", fn)
    if not jnp.issubdtype(bias.dtype, jnp.floating):
      raise _err(fn, f"bias must be a float array, got dtype {bias.dtype} (shape {bias.shape})")
  if mask is not None:
    mask = _as_array(mask, "mask", fn)
    if mask.dtype != jnp.bool_:
      if not (jnp.issubdtype(mask.dtype, jnp.integer) or jnp.issubdtype(mask.dtype, jnp.floating)):
        raise _err(fn, f"mask must be boolean (True = attend), got dtype {mask.dtype} "
                   f"(shape {mask.shape})")
      # flax.linen.make_attention_mask returns float32 0/1 masks; read nonzero as attend,
      # as flax's own kernel does (an additive 0/-inf bias belongs in `bias`, not here).
      mask = mask != 0
  groups = h // kh
  bias_c = _canonical_bnd(bias, "bias", fn, batch_shape, h, kh, t, s)
  if bias_c is not None:
    bias_c = bias_c.astype(compute)
  mask_c = _canonical_bnd(mask, "mask", fn, batch_shape, h, kh, t, s)

  if alignment not in ALIGNMENTS:
    raise _err(fn, f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
  if not isinstance(is_causal, (bool, np.bool_)):
    raise _err(fn, f"is_causal must be a bool, got {is_causal!r}")
  offset, dyn_offset, decoding = _canonical_q_offset(q_offset, alignment, fn, t, s)
  window = _canonical_window(local_window_size, fn)
  if sparsity_pattern is not None and not callable(getattr(sparsity_pattern, "allows", None)):
    raise _err(fn, f"sparsity_pattern must have an allows(qi, ki, ...) method (see "
               f"attnjax.kernels.patterns), got {type(sparsity_pattern).__name__}")
  if sparsity_pattern is not None:
    try:
      hash(sparsity_pattern)
    except TypeError:
      raise _err(fn, "sparsity_pattern must be hashable (a frozen dataclass): it is static "
                 "under jit") from None

  if scale is None:
    scale = 1.0 / math.sqrt(d)
  try:
    scale = float(scale)
  except TypeError:
    raise _err(fn, f"scale must be a Python number (static), got {type(scale).__name__}") from None

  if logits_soft_cap is not None:
    logits_soft_cap = float(logits_soft_cap)
    if not logits_soft_cap > 0:
      raise _err(fn, f"logits_soft_cap must be > 0, got {logits_soft_cap}")

  slopes = None
  if alibi_slopes is not None:
    slopes = _as_array(alibi_slopes, "alibi_slopes", fn)
    target = batch_shape + (h,)
    try:
      slopes = jnp.broadcast_to(slopes, target) if slopes.ndim > 1 else jnp.broadcast_to(slopes, (h,))
    except ValueError:
      raise _err(fn, f"alibi_slopes of shape {slopes.shape} must be [heads] or [batch..., heads] = "
                 f"{target}") from None
    slopes = slopes.reshape(-1, kh, groups).astype(compute)

  table = None
  if relative_bias_table is not None:
    table = _as_array(relative_bias_table, "relative_bias_table", fn)
    if table.ndim != 2 or table.shape[1] not in (1, h):
      raise _err(fn, f"relative_bias_table must be [num_buckets, heads] with heads in (1, {h}), "
                 f"got shape {table.shape}")
    if table.shape[0] < 2 or (relative_bidirectional and table.shape[0] % 2):
      raise _err(fn, f"relative_bias_table needs >= 2 buckets (an even number when bidirectional), "
                 f"got shape {table.shape}")
    table = jnp.broadcast_to(table, (table.shape[0], h)).reshape(-1, kh, groups).astype(compute)

  seed = None
  dropout_rate = float(dropout_rate)
  if not 0.0 <= dropout_rate < 1.0:
    raise _err(fn, f"dropout_rate must be in [0, 1), got {dropout_rate}")
  if deterministic or dropout_rate == 0.0:
    dropout_rate = 0.0
  else:
    if dropout_rng is None:
      raise _err(fn, f"dropout_rate={dropout_rate} with deterministic=False needs a dropout_rng")
    seed = jax.random.bits(dropout_rng, (2,), jnp.uint32)

  # [B, T, K, G, D] -> [B, K, G, T, D]: heads lead so every block matmul is batched over them.
  nb = math.prod(batch_shape)
  qc = q.reshape((nb, t, kh, groups, d)).transpose(0, 2, 3, 1, 4)
  kc = k.reshape((nb, s, kh, d)).transpose(0, 2, 1, 3)
  vc = v.reshape((nb, s, kh, v.shape[-1])).transpose(0, 2, 1, 3)

  q_segs = _canonical_segments(q_segment_ids, "q_segment_ids", fn, batch_shape, t, "q_seq")
  if kv_segment_ids is None and q_segs is not None:
    if s != t:
      raise _err(fn, f"kv_segment_ids is required when q_seq ({t}) != kv_seq ({s})")
    kv_segs = q_segs
  else:
    kv_segs = _canonical_segments(kv_segment_ids, "kv_segment_ids", fn, batch_shape, s, "kv_seq")
    if kv_segs is not None and q_segs is None:
      raise _err(fn, "kv_segment_ids given without q_segment_ids")

  return Problem(
      query=qc, key=kc, value=vc, bias=bias_c, mask=mask_c,
      q_lengths=_canonical_per_batch(query_seq_lengths, "query_seq_lengths", fn, batch_shape),
      kv_lengths=_canonical_per_batch(key_value_seq_lengths, "key_value_seq_lengths", fn,
                                      batch_shape),
      q_segment_ids=q_segs, kv_segment_ids=kv_segs, alibi_slopes=slopes, relative_table=table,
      dropout_seed=seed, q_offset=dyn_offset, decoding=decoding, batch_shape=batch_shape,
      num_heads=h, q_len=t, kv_len=s, scale=scale,
      causal=bool(is_causal), offset=offset, window=window, pattern=sparsity_pattern,
      soft_cap=logits_soft_cap,
      relative_max_distance=int(relative_max_distance),
      relative_bidirectional=bool(relative_bidirectional), dropout_rate=dropout_rate,
      broadcast_dropout=bool(broadcast_dropout), out_dtype=out_dtype, precision=precision)


# ------------------------------------------------------------------------ block builders


def slice_dim(x: jax.Array | None, axis: int, start: Any, size: int) -> jax.Array | None:
  """``x[..., start:start + size, ...]`` along ``axis``; size-1 (broadcast) dims pass through."""
  if x is None or x.shape[axis] == 1:
    return x
  if isinstance(start, int) and start == 0 and size == x.shape[axis]:
    return x
  return lax.dynamic_slice_in_dim(x, start, size, axis=axis)


def _and(a: jax.Array | None, b: jax.Array | None) -> jax.Array | None:
  if a is None:
    return b
  if b is None:
    return a
  return jnp.logical_and(a, b)


def block_mask(p: Problem, q0: Any, tq: int, k0: Any, tk: int,
               kv_limit: int | None = None) -> jax.Array | None:
  """Boolean mask (True = attend) for rows [q0, q0+tq) x cols [k0, k0+tk).

  Broadcastable to ``[B, K, G, tq, tk]``; ``None`` when nothing is masked. ``kv_limit``
  masks columns at or beyond it (the padding added by the chunked kernel).
  """
  qi = (q0 + jnp.arange(tq, dtype=jnp.int32))[:, None]
  ki = (k0 + jnp.arange(tk, dtype=jnp.int32))[None, :]
  m = None
  if kv_limit is not None:
    m = _and(m, ki < kv_limit)
  rel = ki - qi - p.diagonal  # key position relative to the query's diagonal
  if p.causal:
    m = _and(m, rel <= 0)
  if p.window is not None:
    left, right = p.window
    m = _and(m, jnp.logical_and(rel >= -left, rel <= right))
  if p.pattern is not None:
    m = _and(m, p.pattern.allows(qi, ki, offset=p.diagonal, q_len=p.q_len, kv_len=p.kv_len,
                                 xp=jnp))
  m = None if m is None else m[None, None, None]
  if p.q_lengths is not None:
    m = _and(m, (qi < p.q_lengths[:, None, None])[:, None, None])
  if p.kv_lengths is not None:
    m = _and(m, (ki < p.kv_lengths[:, None, None])[:, None, None])
  if p.q_segment_ids is not None:
    qs = slice_dim(p.q_segment_ids, 1, q0, tq)
    ks = slice_dim(p.kv_segment_ids, 1, k0, tk)
    m = _and(m, (qs[:, :, None] == ks[:, None, :])[:, None, None])
  if p.mask is not None:
    m = _and(m, slice_dim(slice_dim(p.mask, 3, q0, tq), 4, k0, tk))
  return m


def block_bias(p: Problem, q0: Any, tq: int, k0: Any, tk: int) -> jax.Array | None:
  """Additive bias (user bias + ALiBi + T5 buckets) for one block, broadcastable to [B,K,G,tq,tk]."""
  b = None
  if p.bias is not None:
    b = slice_dim(slice_dim(p.bias, 3, q0, tq), 4, k0, tk)
  if p.alibi_slopes is not None or p.relative_table is not None:
    rel = relative_positions(p, q0, tq, k0, tk)
    if p.alibi_slopes is not None:
      a = -p.alibi_slopes[..., None, None] * jnp.abs(rel).astype(p.compute_dtype)
      b = a if b is None else b + a
    if p.relative_table is not None:
      r = relative_bias(p, rel)
      b = r if b is None else b + r
  return b


def relative_positions(p: Problem, q0: Any, tq: int, k0: Any, tk: int) -> jax.Array:
  """``key_pos - query_pos - offset`` for one block, int32 ``[tq, tk]``."""
  qi = (q0 + jnp.arange(tq, dtype=jnp.int32))[:, None]
  ki = (k0 + jnp.arange(tk, dtype=jnp.int32))[None, :]
  return ki - qi - p.diagonal


def relative_buckets(p: Problem, rel: jax.Array) -> jax.Array:
  return positions.relative_position_bucket(
      rel, num_buckets=p.relative_table.shape[0], max_distance=p.relative_max_distance,
      bidirectional=p.relative_bidirectional)


def relative_bias(p: Problem, rel: jax.Array) -> jax.Array:
  """T5 bias ``table[bucket(rel)]`` as ``[1, K, G, tq, tk]``."""
  buckets = relative_buckets(p, rel)
  return jnp.moveaxis(p.relative_table[buckets], (-2, -1), (0, 1))[None]


def keys_first_layout(x: jax.Array) -> jax.Array:
  """``[.., tq, tk]`` block (mask, bias, dropout; broadcastable to ``[B, K, G, tq, tk]``)
  -> ``[B|1, K|1, tk, G|1, tq]``, the layout of ``block_logits(.., keys_first=True)``."""
  x = x.reshape((1,) * (5 - x.ndim) + x.shape)
  return x.transpose(0, 1, 4, 2, 3)


def block_logits(p: Problem, q_blk: jax.Array, k_blk: jax.Array, q0: Any, k0: Any,
                 kv_limit: int | None = None, *, keys_first: bool = False
                 ) -> tuple[jax.Array, jax.Array | None]:
  """Masked logits of one block, in the compute dtype, ``-inf`` where masked.

  Args:
    p: the problem.
    q_blk: ``[B, K, G, tq, D]`` query rows starting at ``q0``.
    k_blk: ``[B, K, tk, D]`` keys starting at ``k0``.
    q0, k0: first query row / key column of the block (int or traced int32).
    kv_limit: mask keys at or beyond this column (padding).
    keys_first: return the logits as ``[B, K, tk, G, tq]``. The chunked backward pass
      works in this layout: each of its matmuls then reads its operands in place, where
      the ``[.., tq, tk]`` layout makes XLA:CPU copy ``[tk, tq]`` transposes of the
      probabilities and their gradient every block.

  Returns:
    ``(logits [B, K, G, tq, tk], tanh_or_None)``; the second is ``tanh(raw / cap)`` when a
    soft cap is set (the backward pass needs it).
  """
  tq, tk = q_blk.shape[-2], k_blk.shape[-2]
  if keys_first:
    s = jnp.einsum("bksd,bkgtd->bksgt", k_blk, q_blk, precision=p.precision,
                   preferred_element_type=p.compute_dtype)
  else:
    # (G, tq) as one row axis: with G = 1 XLA:CPU otherwise copies every block once.
    b, kh, g = q_blk.shape[:3]
    s = jnp.einsum("bkxd,bksd->bkxs", q_blk.reshape(b, kh, g * tq, -1), k_blk,
                   precision=p.precision, preferred_element_type=p.compute_dtype
                   ).reshape(b, kh, g, tq, tk)
  if p.scale != 1.0:
    s = s * jnp.asarray(p.scale, s.dtype)
  th = None
  if p.soft_cap is not None:
    # Capping before the bias keeps ALiBi/T5/user biases exact (as FlashAttention does).
    th = jnp.tanh(s / p.soft_cap)
    s = p.soft_cap * th
  orient = keys_first_layout if keys_first else (lambda x: x)
  b = block_bias(p, q0, tq, k0, tk)
  if b is not None:
    s = s + orient(b)
  m = block_mask(p, q0, tq, k0, tk, kv_limit)
  if m is not None:
    s = jnp.where(orient(m), s, -jnp.inf)
  return s, th


# ------------------------------------------------------------------------------ dropout


def _fmix32(x: jax.Array) -> jax.Array:
  """MurmurHash3's 32-bit finaliser: a cheap bijective mixer with full avalanche."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x85EBCA6B)
  x = x ^ (x >> 13)
  x = x * jnp.uint32(0xC2B2AE35)
  return x ^ (x >> 16)


def dropout_keep(p: Problem, q0: Any, tq: int, k0: Any, tk: int) -> jax.Array:
  """Keep-mask of dropout for one block, a pure function of (seed, batch, head, q, k).

  Counter-based (hash of the global indices) rather than ``jax.random.bernoulli`` over the
  whole ``[T, S]`` matrix, so that the chunked kernel regenerates exactly the dense
  kernel's mask block by block, forward and backward, without storing it.

  Returns:
    bool ``[B|1, K|1, G|1, tq, tk]``.
  """
  seed0, seed1 = p.dropout_seed[0], p.dropout_seed[1]
  if p.broadcast_dropout:
    bh = jnp.zeros((1, 1, 1), jnp.uint32)
  else:
    b, kh, g = p.batch, p.kv_heads, p.groups
    bh = (jnp.arange(b, dtype=jnp.uint32)[:, None, None] * jnp.uint32(kh * g)
          + jnp.arange(kh * g, dtype=jnp.uint32).reshape(1, kh, g))
  qi = (q0 + jnp.arange(tq, dtype=jnp.int32)).astype(jnp.uint32)
  ki = (k0 + jnp.arange(tk, dtype=jnp.int32)).astype(jnp.uint32)
  row = _fmix32(_fmix32(bh * jnp.uint32(0x9E3779B9) + seed0)[..., None] ^ qi)  # [.., tq]
  h = _fmix32((row[..., None] + seed1) ^ (ki * jnp.uint32(0xCC9E2D51)))
  keep_prob = 1.0 - p.dropout_rate
  threshold = jnp.uint32(min(int(keep_prob * 2.0**32), 2**32 - 1))
  return h < threshold


# ------------------------------------------------------------------------------ outputs


def to_output(p: Problem, out: jax.Array) -> jax.Array:
  """``[B, K, G, T, Dv]`` -> ``[batch..., T, H, Dv]`` in the output dtype."""
  b, kh, g, t, dv = out.shape
  out = out.transpose(0, 3, 1, 2, 4).reshape(p.batch_shape + (t, kh * g, dv))
  return out.astype(p.out_dtype)


def to_lse(p: Problem, lse: jax.Array) -> jax.Array:
  """``[B, K, G, T]`` -> ``[batch..., T, H]`` (float32; ``-inf`` for fully masked rows)."""
  b, kh, g, t = lse.shape
  return lse.transpose(0, 3, 1, 2).reshape(p.batch_shape + (t, kh * g))


def to_weights(p: Problem, w: jax.Array) -> jax.Array:
  """``[B, K, G, T, S]`` -> ``[batch..., H, T, S]``."""
  b, kh, g, t, s = w.shape
  return w.reshape(p.batch_shape + (kh * g, t, s))
