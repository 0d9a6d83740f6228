"""Structured sparse attention: exact softmax restricted to a fixed pattern.

Each kernel is ``dot_product_attention`` with a ``sparsity_pattern`` from
``attnjax.kernels.patterns``: the same numbers as the dense kernel given the pattern as a
boolean mask, and every option of the exact family (masks, causal, lengths, segments,
position biases, dropout, GQA). The pattern is evaluated lazily per block; the chunked
implementation (chosen automatically for long sequences, or with
``implementation='chunked'``) visits only blocks the pattern leaves live, so window-type
patterns cost ``O(T * (w + block))`` time and ``O(T)`` memory.

Their declared FLOPs (``kernel.attention_flops``) follow the implementation that runs: the
dense one computes every ``(query, key)`` pair, masked or not; the chunked one computes
whole ``block_q x block_kv`` blocks, those with at least one live pair.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import jax

from attnjax.kernels import _common
from attnjax.kernels import chunked
from attnjax.kernels import dispatch
from attnjax.kernels import patterns
from attnjax.kernels.dot_product import dot_product_attention
from attnjax.kernels.registry import register_kernel
from attnjax.kernels.variants import _base

_PATTERN_OWNED = {
    "sparsity_pattern": "this kernel sets the pattern; use dot_product_attention to pass one",
}


def _run(fn: str, pattern: Any, query, key, value, bias, mask, *, scale, is_causal,
         dropout_rate, dropout_rng, deterministic, broadcast_dropout, dtype, precision, module,
         options) -> jax.Array:
  opts = _base.exact_options(fn, options, _PATTERN_OWNED, returns_residual=True)
  return dot_product_attention(
      query, key, value, bias, mask, scale=scale, is_causal=is_causal,
      sparsity_pattern=pattern, dropout_rate=dropout_rate, dropout_rng=dropout_rng,
      deterministic=deterministic, broadcast_dropout=broadcast_dropout, dtype=dtype,
      precision=precision, module=module, **opts)


# Options of dot_product_attention that shape the problem (the rest pick the implementation).
_PREPARE_OPTIONS = frozenset(inspect.signature(_common.prepare).parameters) - {
    "query", "key", "value", "bias", "mask", "fn", "sparsity_pattern"}


def pattern_flops(fn: str, pattern: Any, *, q_len: int, kv_len: int, num_heads: int,
                  num_kv_heads: int, head_dim: int, batch_size: int,
                  options: dict[str, Any]) -> float:
  """Forward matmul FLOPs of ``dot_product_attention`` with ``pattern``, for one sequence.

  The implementation is the one ``dispatch.choose_implementation`` picks for a call of
  ``batch_size`` sequences with these options on this platform: a dense one computes all
  ``q_len * kv_len`` pairs; the chunked one computes every block that has a live pair
  (``chunked.live_block_count``, from the static pattern, causal and window masks), padded
  ones included. With a pattern the chunked loops run over that static block list, so
  masks known only at run time (padding, lengths, segments) skip nothing, here or there.
  """
  found = {}

  def probe(q, k, v):
    p = _common.prepare(q, k, v, fn=fn, sparsity_pattern=pattern,
                        **{n: x for n, x in options.items() if n in _PREPARE_OPTIONS})
    choice = dispatch.choose_implementation(
        p, options.get("implementation"), block_q=options.get("block_q"),
        block_kv=options.get("block_kv"),
        return_residual=bool(options.get("return_residual", False)), fn=fn)
    found["choice"] = choice
    if choice.name == "chunked":
      found["blocks"] = chunked.live_block_count(p, choice.block_q, choice.block_kv)

  dtype = options.get("dtype") or jax.numpy.float32
  jax.eval_shape(probe, jax.ShapeDtypeStruct((batch_size, q_len, num_heads, head_dim), dtype),
                 *[jax.ShapeDtypeStruct((batch_size, kv_len, num_kv_heads, head_dim), dtype)] * 2)
  choice = found["choice"]
  if choice.name != "chunked":
    return _base.dense_attention_flops(q_len, kv_len, num_heads, head_dim)
  return _base.dense_attention_flops(choice.block_q, choice.block_kv, num_heads,
                                     head_dim) * found["blocks"]


def _declare_pattern_flops(fn: str, make_pattern: Callable[..., Any]
                           ) -> Callable[[Callable], Callable]:
  """Declares ``attention_flops`` of a kernel running the pattern ``make_pattern(**options)``."""

  def flops(*, q_len: int, kv_len: int, num_heads: int, num_kv_heads: int, head_dim: int,
            batch_size: int, **options: Any) -> float:
    return pattern_flops(fn, make_pattern(**options), q_len=q_len, kv_len=kv_len,
                         num_heads=num_heads, num_kv_heads=num_kv_heads, head_dim=head_dim,
                         batch_size=batch_size, options=options)

  return _base.declare_flops(flops)


_ARGS_DOC = """
  Args:
    query: ``[batch..., q_seq, heads, head_dim]``.
    key: ``[batch..., kv_seq, kv_heads, head_dim]`` (GQA/MQA when kv_heads < heads).
    value: ``[batch..., kv_seq, kv_heads, v_dim]``.
    bias, mask, scale, is_causal, dropout_*, broadcast_dropout, dtype, precision, module,
      **options: as in ``dot_product_attention`` (e.g. ``implementation='chunked'``).
"""


def _sliding_window_pattern(*, window_size: int | tuple[int, int], **_: Any
                            ) -> patterns.DilatedWindow:
  w = (window_size, window_size) if isinstance(window_size, int) else tuple(window_size)
  for v in w:
    _base.check_int("sliding_window_attention", "window_size", v, 0)
  return patterns.DilatedWindow(w[0], w[1], 1)


@register_kernel("sliding_window")
@_declare_pattern_flops("sliding_window_attention", _sliding_window_pattern)
def sliding_window_attention(
    query: jax.Array, key: jax.Array, value: jax.Array, bias: jax.Array | None = None,
    mask: jax.Array | None = None, *, window_size: int | tuple[int, int] = 128,
    scale: float | None = None, is_causal: bool = False, dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None, deterministic: bool = True,
    broadcast_dropout: bool = True, dtype: Any = None, precision: Any = None,
    module: Any = None, **options: Any) -> jax.Array:
  """Sliding-window (local) attention: query ``i`` sees keys ``i - left .. i + right`` (exact).

  Local attention as in Image Transformer / Longformer's window (Parmar et al. 2018,
  Beltagy et al. 2020). ``window_size``: ``w`` (``w`` each side) or ``(left, right)``.
  Same as ``dot_product_attention(local_window_size=...)``.
  {args}
  Returns:
    ``[batch..., q_seq, heads, v_dim]``.
  """
  fn = "sliding_window_attention"
  return _run(fn, _sliding_window_pattern(window_size=window_size), query, key, value, bias,
              mask, scale=scale, is_causal=is_causal, dropout_rate=dropout_rate,
              dropout_rng=dropout_rng, deterministic=deterministic,
              broadcast_dropout=broadcast_dropout, dtype=dtype, precision=precision,
              module=module, options=options)


def _dilated_window_pattern(*, window_size: int, dilation: int, **_: Any
                            ) -> patterns.DilatedWindow:
  _base.check_int("dilated_window_attention", "window_size", window_size, 0)
  _base.check_int("dilated_window_attention", "dilation", dilation, 1)
  return patterns.DilatedWindow(window_size, window_size, dilation)


@register_kernel("dilated_window")
@_declare_pattern_flops("dilated_window_attention", _dilated_window_pattern)
def dilated_window_attention(
    query: jax.Array, key: jax.Array, value: jax.Array, bias: jax.Array | None = None,
    mask: jax.Array | None = None, *, window_size: int = 32, dilation: int = 4,
    scale: float | None = None, is_causal: bool = False, dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None, deterministic: bool = True,
    broadcast_dropout: bool = True, dtype: Any = None, precision: Any = None,
    module: Any = None, **options: Any) -> jax.Array:
  """Dilated sliding window: keys at ``i + m * dilation``, ``|m| <= window_size`` (exact).

  Longformer's dilated window (Beltagy et al. 2020, sec. 3.1): the same number of keys as
  a window of ``window_size`` with ``dilation`` times the reach.
  {args}
  Returns:
    ``[batch..., q_seq, heads, v_dim]``.
  """
  fn = "dilated_window_attention"
  return _run(fn, _dilated_window_pattern(window_size=window_size, dilation=dilation), query,
              key, value, bias, mask, scale=scale, is_causal=is_causal,
              dropout_rate=dropout_rate, dropout_rng=dropout_rng, deterministic=deterministic,
              broadcast_dropout=broadcast_dropout, dtype=dtype, precision=precision,
              module=module, options=options)


def _longformer_pattern(*, window_size: int, num_global_tokens: int, **_: Any
                        ) -> patterns.Longformer:
  _base.check_int("longformer_attention", "window_size", window_size, 0)
  _base.check_int("longformer_attention", "num_global_tokens", num_global_tokens, 0)
  return patterns.Longformer(window_size, window_size, num_global_tokens)


@register_kernel("longformer")
@_declare_pattern_flops("longformer_attention", _longformer_pattern)
def longformer_attention(
    query: jax.Array, key: jax.Array, value: jax.Array, bias: jax.Array | None = None,
    mask: jax.Array | None = None, *, window_size: int = 128, num_global_tokens: int = 1,
    scale: float | None = None, is_causal: bool = False, dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None, deterministic: bool = True,
    broadcast_dropout: bool = True, dtype: Any = None, precision: Any = None,
    module: Any = None, **options: Any) -> jax.Array:
  """Longformer attention: sliding window + global tokens (exact; Beltagy et al. 2020).

  The first ``num_global_tokens`` positions (the CLS token of the encoder) attend to all
  keys and are attended by all queries. One set of projections is used for local and
  global attention (the paper has separate global projections; here the layer's).
  {args}
  Returns:
    ``[batch..., q_seq, heads, v_dim]``.
  """
  fn = "longformer_attention"
  return _run(fn, _longformer_pattern(window_size=window_size,
                                      num_global_tokens=num_global_tokens), query, key,
              value, bias, mask, scale=scale, is_causal=is_causal, dropout_rate=dropout_rate,
              dropout_rng=dropout_rng, deterministic=deterministic,
              broadcast_dropout=broadcast_dropout, dtype=dtype, precision=precision,
              module=module, options=options)


def _bigbird_pattern(*, block_size: int, num_window_blocks: int, num_global_blocks: int,
                     num_random_blocks: int, seed: int, **_: Any) -> patterns.BigBird:
  fn = "bigbird_attention"
  _base.check_int(fn, "block_size", block_size, 1)
  _base.check_int(fn, "num_window_blocks", num_window_blocks, 1)
  _base.check_int(fn, "num_global_blocks", num_global_blocks, 0)
  _base.check_int(fn, "num_random_blocks", num_random_blocks, 0)
  return patterns.BigBird(block_size, num_window_blocks, num_global_blocks, num_random_blocks,
                          int(seed))


@register_kernel("bigbird")
@_declare_pattern_flops("bigbird_attention", _bigbird_pattern)
def bigbird_attention(
    query: jax.Array, key: jax.Array, value: jax.Array, bias: jax.Array | None = None,
    mask: jax.Array | None = None, *, block_size: int = 64, num_window_blocks: int = 3,
    num_global_blocks: int = 1, num_random_blocks: int = 2, seed: int = 0,
    scale: float | None = None, is_causal: bool = False, dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None, deterministic: bool = True,
    broadcast_dropout: bool = True, dtype: Any = None, precision: Any = None,
    module: Any = None, **options: Any) -> jax.Array:
  """BigBird attention: block window + global + random blocks (exact; Zaheer et al. 2020).

  BigBird-ITC: blocks of ``block_size``; each query block sees ``num_window_blocks``
  neighbouring blocks, the first ``num_global_blocks`` blocks (global both ways) and
  ``num_random_blocks`` random blocks drawn once from ``seed`` (static: the same for all
  heads, examples and steps, unlike the paper's per-head draw).
  {args}
  Returns:
    ``[batch..., q_seq, heads, v_dim]``.
  """
  fn = "bigbird_attention"
  pattern = _bigbird_pattern(block_size=block_size, num_window_blocks=num_window_blocks,
                             num_global_blocks=num_global_blocks,
                             num_random_blocks=num_random_blocks, seed=seed)
  return _run(fn, pattern, query, key, value, bias, mask, scale=scale, is_causal=is_causal,
              dropout_rate=dropout_rate, dropout_rng=dropout_rng, deterministic=deterministic,
              broadcast_dropout=broadcast_dropout, dtype=dtype, precision=precision,
              module=module, options=options)


def _sparse_fixed_pattern(*, block_size: int, summary_size: int, **_: Any
                          ) -> patterns.SparseFixed:
  fn = "sparse_fixed_attention"
  _base.check_int(fn, "block_size", block_size, 1)
  _base.check_int(fn, "summary_size", summary_size, 0)
  if summary_size > block_size:
    raise ValueError(f"{fn}: summary_size ({summary_size}) must be <= block_size "
                     f"({block_size})")
  return patterns.SparseFixed(block_size, summary_size)


@register_kernel("sparse_fixed")
@_declare_pattern_flops("sparse_fixed_attention", _sparse_fixed_pattern)
def sparse_fixed_attention(
    query: jax.Array, key: jax.Array, value: jax.Array, bias: jax.Array | None = None,
    mask: jax.Array | None = None, *, block_size: int = 64, summary_size: int = 8,
    scale: float | None = None, is_causal: bool = False, dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None, deterministic: bool = True,
    broadcast_dropout: bool = True, dtype: Any = None, precision: Any = None,
    module: Any = None, **options: Any) -> jax.Array:
  """Sparse Transformer "fixed" pattern (exact; Child et al. 2019).

  A query sees its own block of ``block_size`` keys and the last ``summary_size`` keys of
  every block. Child et al.'s autoregressive form is ``is_causal=True``. Its summary
  columns make it ``O(T * (block + T * c / block))``, so only blocks are skipped that no
  summary column reaches.
  {args}
  Returns:
    ``[batch..., q_seq, heads, v_dim]``.
  """
  fn = "sparse_fixed_attention"
  return _run(fn, _sparse_fixed_pattern(block_size=block_size, summary_size=summary_size),
              query, key, value, bias, mask, scale=scale, is_causal=is_causal,
              dropout_rate=dropout_rate, dropout_rng=dropout_rng, deterministic=deterministic,
              broadcast_dropout=broadcast_dropout, dtype=dtype, precision=precision,
              module=module, options=options)


def _sparse_strided_pattern(*, stride: int, **_: Any) -> patterns.SparseStrided:
  _base.check_int("sparse_strided_attention", "stride", stride, 1)
  return patterns.SparseStrided(stride)


@register_kernel("sparse_strided")
@_declare_pattern_flops("sparse_strided_attention", _sparse_strided_pattern)
def sparse_strided_attention(
    query: jax.Array, key: jax.Array, value: jax.Array, bias: jax.Array | None = None,
    mask: jax.Array | None = None, *, stride: int = 64, scale: float | None = None,
    is_causal: bool = False, dropout_rate: float = 0.0, dropout_rng: jax.Array | None = None,
    deterministic: bool = True, broadcast_dropout: bool = True, dtype: Any = None,
    precision: Any = None, module: Any = None, **options: Any) -> jax.Array:
  """Sparse Transformer "strided" pattern (exact; Child et al. 2019).

  A query sees the keys with ``|k - q| < stride`` and those with ``(k - q) % stride == 0``.
  With ``is_causal=True`` this is the paper's pattern; each query sees
  ``O(stride + T / stride)`` keys (``O(T sqrt(T))`` for ``stride ~ sqrt(T)``).
  {args}
  Returns:
    ``[batch..., q_seq, heads, v_dim]``.
  """
  fn = "sparse_strided_attention"
  return _run(fn, _sparse_strided_pattern(stride=stride), query, key, value, bias, mask,
              scale=scale, is_causal=is_causal, dropout_rate=dropout_rate, dropout_rng=dropout_rng,
              deterministic=deterministic, broadcast_dropout=broadcast_dropout, dtype=dtype,
              precision=precision, module=module, options=options)


for _k in (sliding_window_attention, dilated_window_attention, longformer_attention,
           bigbird_attention, sparse_fixed_attention, sparse_strided_attention):
  if _k.__doc__:
    _k.__doc__ = _k.__doc__.format(args=_ARGS_DOC)
