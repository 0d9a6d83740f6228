"""Exact (softmax) scaled dot-product attention: the dense XLA path and the front door.

:func:`dot_product_attention` is the public entry point of the exact family; it validates
the call (``_common.prepare``), picks an implementation (``dispatch.choose_implementation``)
and runs it. The dense path here materialises the ``[batch, heads, q_seq, kv_seq]``
logits; ``chunked.py`` computes the same numbers in O(seq) memory.

Differences from ``jax.nn.dot_product_attention``, all on purpose:

* a query row whose keys are all masked outputs zeros (and gets zero gradients) instead
  of the mean of the values;
* dropout, logit soft cap, segment ids, bottom-right causal alignment, ALiBi and T5
  relative biases, GQA-shaped masks and a ``module`` hook for flax's ``sow_weights``;
* the log-sum-exp residual is float32 (``-inf`` for fully masked rows) and
  differentiable (``jax.nn`` stops its gradient);
* numeric masks must hold 0/1 (an additive mask belongs in ``bias``); a NaN or infinite
  ``scale`` is refused.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax

from attnjax.kernels import _common
from attnjax.kernels import dispatch
from attnjax.kernels.registry import register_kernel

_common_doc = """
  Args:
    query: ``[batch..., q_seq, heads, head_dim]``.
    key: ``[batch..., kv_seq, kv_heads, head_dim]``; ``heads % kv_heads == 0`` (GQA/MQA).
    value: ``[batch..., kv_seq, kv_heads, v_dim]``.
    bias: additive float bias broadcastable to ``[batch..., heads, q_seq, kv_seq]``;
      differentiable.
    mask: boolean, broadcastable to ``[batch..., heads, q_seq, kv_seq]``; True = attend.
      A numeric mask (flax's float 0/1 masks) must hold only 0 and 1 (refused otherwise
      when its values are known; under ``jit`` it attends where positive).
    scale: logit scale, finite; default ``1 / sqrt(head_dim)``. May be traced (a
      learnable temperature): it then multiplies the queries once.
    is_causal: mask keys after the query's diagonal (see ``alignment``).
    alignment: where the diagonal of causal / window masks (and the zero of ALiBi / T5
      distances) sits when ``q_seq != kv_seq``: ``'top_left'`` (query i <-> key i, as
      ``jax.nn``) or ``'bottom_right'`` (last query <-> last key, as FlashAttention).
    q_offset: the absolute position of query row 0, keys being at positions
      ``0..kv_seq-1`` (query row ``i`` is at ``q_offset + i``): the diagonal of causal,
      window and pattern masks and the zero of ALiBi / T5 distances, replacing
      ``alignment``. For cached decoding: a Python int is static (the chunked path skips
      blocks exactly), an int32 scalar array may be traced (the cache index under
      ``jit``; the chunked path then bounds its loops dynamically and visits a
      pattern's blocks conservatively). Inside a decode step of
      ``flax.linen.MultiHeadDotProductAttention(decode=True)`` it defaults to that
      module's cache position, so flax's cached decoding is exact.
    local_window_size: ``w`` or ``(left, right)``: query i sees keys within
      ``[i - left, i + right]`` of its diagonal.
    sparsity_pattern: a static pattern from ``attnjax.kernels.patterns`` (sliding
      window, dilated, Longformer, BigBird, Sparse Transformer): exact softmax over the
      keys it allows (ANDed with every other mask); the chunked implementation visits only
      blocks the pattern leaves live.
    mask_fn: ``mask_fn(batch, head, q_idx, kv_idx) -> bool`` (FlexAttention's meaning,
      see ``attnjax.kernels.masks``): written for scalars, evaluated on broadcast index
      arrays over a block; True = attend; ANDed with every other mask. The chunked
      implementation never visits blocks it leaves empty and skips it on full blocks.
    score_fn: ``score_fn(score, batch, head, q_idx, kv_idx) -> score``: rewrites each
      scaled (soft-capped) logit before biases are added; arrays it closes over (bias
      tables, slopes) get gradients.
    query_seq_lengths: int ``[batch...]``; query rows at or beyond it output zeros.
    key_value_seq_lengths: int ``[batch...]``; keys at or beyond it are masked.
    q_segment_ids: int ``[batch..., q_seq]``: packed sequences; a query sees only keys of
      the same segment.
    kv_segment_ids: int ``[batch..., kv_seq]``; defaults to ``q_segment_ids`` when
      ``q_seq == kv_seq``.
    logits_soft_cap: ``c`` replaces scaled logits ``x`` by ``c * tanh(x / c)`` (before
      biases are added).
    alibi_slopes: ``[heads]`` or ``[batch..., heads]``: adds ``-slope * |k - q - offset|``.
    relative_bias_table: ``[num_buckets, heads]`` (or ``[num_buckets, 1]``): adds the T5
      bucketed relative position bias ``table[bucket(k - q - offset)]``; differentiable.
    relative_max_distance: T5 bucketing's max distance.
    relative_bidirectional: T5 bucketing: separate buckets for keys after the query.
    dropout_rate: dropout on the attention probabilities.
    dropout_rng: PRNG key; required when ``dropout_rate > 0`` and not ``deterministic``.
    deterministic: if True, no dropout.
    broadcast_dropout: share one dropout pattern across batch and heads (flax's
      convention); otherwise independent per batch element and head.
    dtype: compute/output dtype (inputs are cast to it); default: the inputs' common dtype.
    precision: ``jax.lax.Precision`` for the matmuls.
    module: a flax module; if given, the attention weights ``[batch..., heads, q_seq,
      kv_seq]`` are sown into its ``'intermediates'`` collection (as flax's own kernel
      does when ``sow_weights=True``). Costs O(q_seq * kv_seq) memory.
    implementation: ``None`` (automatic, see ``choose_implementation``), ``'xla'``
      (dense), ``'chunked'`` (O(seq) memory), ``'cudnn'`` or ``'pallas'`` (GPU).
    block_q: query block size of the chunked implementation.
    block_kv: key/value block size of the chunked implementation.
    return_residual: also return the log-sum-exp of the logits ``[batch..., q_seq,
      heads]`` (float32, ``-inf`` for fully masked rows).
"""


def _dense(p: _common.Problem) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Dense exact attention on a canonical problem.

  Returns:
    ``(out [B, K, G, T, Dv], lse [B, K, G, T], probs [B, K, G, T, S])``; probs are before
    dropout.
  """
  s, _ = _common.block_logits(p, p.query, p.key, 0, 0)
  probs, lse = _softmax_with_zeros(s)
  pd = probs
  if p.dropout_rate > 0.0:
    keep = _common.dropout_keep(p, 0, p.q_len, 0, p.kv_len)
    pd = jnp.where(keep, probs / (1.0 - p.dropout_rate), 0.0)
  out = jnp.einsum("bkgts,bksd->bkgtd", pd.astype(p.value.dtype), p.value,
                   precision=p.precision, preferred_element_type=p.compute_dtype)
  return out, lse, probs


def _softmax_with_zeros(s: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Softmax over the last axis where rows of all ``-inf`` give zeros (and zero grads).

  Masked logits are ``-inf``, so ``exp`` gives exact zeros with zero derivative; the only
  NaN sources are the max of an all ``-inf`` row and ``0 / 0`` and ``log(0)``, each
  replaced by a safe value *before* the operation (the double-where trick), so no NaN
  reaches the backward pass either.
  """
  m = jnp.max(s, axis=-1, keepdims=True)
  m = lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0.0))
  e = jnp.exp(s - m)
  l = jnp.sum(e, axis=-1, keepdims=True)
  empty = l == 0.0
  safe_l = jnp.where(empty, 1.0, l)
  probs = e / safe_l
  lse = jnp.where(empty, -jnp.inf, jnp.log(safe_l) + m)[..., 0]
  return probs, lse


@register_kernel("dot_product")
def dot_product_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    scale: float | None = None,
    is_causal: bool = False,
    alignment: str = "top_left",
    q_offset: int | jax.Array | None = None,
    local_window_size: int | tuple[int, int] | None = None,
    sparsity_pattern: Any = None,
    mask_fn: Callable[..., Any] | None = None,
    score_fn: Callable[..., Any] | None = None,
    query_seq_lengths: jax.Array | None = None,
    key_value_seq_lengths: jax.Array | None = None,
    q_segment_ids: jax.Array | None = None,
    kv_segment_ids: jax.Array | None = None,
    logits_soft_cap: float | None = None,
    alibi_slopes: jax.Array | None = None,
    relative_bias_table: jax.Array | None = None,
    relative_max_distance: int = 128,
    relative_bidirectional: bool = True,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
    deterministic: bool = True,
    broadcast_dropout: bool = True,
    dtype: Any = None,
    precision: Any = None,
    module: Any = None,
    implementation: str | None = None,
    block_q: int | None = None,
    block_kv: int | None = None,
    return_residual: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
  """Exact softmax attention ``softmax(scale * q k^T + bias, masked) v``.

  Drop-in for ``jax.nn.dot_product_attention`` (same layout, same numbers wherever both
  define the result) and for the ``attention_fn`` of ``flax.linen.MultiHeadDotProductAttention``.
  Logits and softmax statistics are float32 whatever the input dtype. A query row with
  every key masked outputs zeros and receives zero gradients (``jax.nn`` returns the mean
  of ``value`` there).
  {args}
  Returns:
    ``[batch..., q_seq, heads, v_dim]`` in the input dtype (or ``dtype``); with
    ``return_residual`` a pair ``(output, lse)``.

  Raises:
    ValueError: bad shapes/dtypes (naming the argument and shapes), an option the chosen
      implementation cannot honour, or dropout without an rng.
  """
  p = _common.prepare(
      query, key, value, bias, mask, fn="dot_product_attention", scale=scale,
      is_causal=is_causal, alignment=alignment, q_offset=q_offset,
      local_window_size=local_window_size,
      sparsity_pattern=sparsity_pattern, mask_fn=mask_fn, score_fn=score_fn,
      query_seq_lengths=query_seq_lengths, key_value_seq_lengths=key_value_seq_lengths,
      q_segment_ids=q_segment_ids, kv_segment_ids=kv_segment_ids,
      logits_soft_cap=logits_soft_cap, alibi_slopes=alibi_slopes,
      relative_bias_table=relative_bias_table, relative_max_distance=relative_max_distance,
      relative_bidirectional=relative_bidirectional, dropout_rate=dropout_rate,
      dropout_rng=dropout_rng, deterministic=deterministic,
      broadcast_dropout=broadcast_dropout, dtype=dtype, precision=precision)
  choice = dispatch.choose_implementation(p, implementation, block_q=block_q,
                                          block_kv=block_kv, return_residual=return_residual,
                                          fn="dot_product_attention")
  return run(p, choice, module=module, return_residual=return_residual)


if dot_product_attention.__doc__:  # None under python -OO
  dot_product_attention.__doc__ = dot_product_attention.__doc__.format(args=_common_doc)


def run(p: _common.Problem, choice: dispatch.Choice, *, module: Any,
        return_residual: bool) -> jax.Array | tuple[jax.Array, jax.Array]:
  """Runs a validated problem on the chosen implementation and restores the public layout."""
  out, lse, weights = _run_jit(p, choice, module is not None, bool(return_residual))
  if module is not None:
    # In the module's dtype, as flax's own kernel sows them.
    module.sow("intermediates", "attention_weights", weights.astype(p.out_dtype))
  if return_residual:
    return out, lse
  return out


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _run_jit(p: _common.Problem, choice: dispatch.Choice, want_weights: bool, want_lse: bool
             ) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
  # One compiled program per call signature: eager callers (notebooks, tests) would
  # otherwise dispatch dozens of small ops; under an outer jit this inlines.
  probs = None
  if choice.name == "xla":
    out, lse, probs = _dense(p)
  else:
    out, lse = dispatch.get_implementation(choice.name)(p, choice)
    if want_weights:
      probs = _softmax_with_zeros(_common.block_logits(p, p.query, p.key, 0, 0)[0])[0]
  weights = _common.to_weights(p, probs) if want_weights else None
  # The -inf log-sum-exp of fully masked rows leaves the program only when asked for, so
  # jax.debug_infs does not trip on a call that returns just the output.
  return _common.to_output(p, out), _common.to_lse(p, lse) if want_lse else None, weights


def attention_weights(
    query: jax.Array,
    key: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    scale: float | None = None,
    is_causal: bool = False,
    alignment: str = "top_left",
    q_offset: int | jax.Array | None = None,
    local_window_size: int | tuple[int, int] | None = None,
    sparsity_pattern: Any = None,
    mask_fn: Callable[..., Any] | None = None,
    score_fn: Callable[..., Any] | None = None,
    query_seq_lengths: jax.Array | None = None,
    key_value_seq_lengths: jax.Array | None = None,
    q_segment_ids: jax.Array | None = None,
    kv_segment_ids: jax.Array | None = None,
    logits_soft_cap: float | None = None,
    alibi_slopes: jax.Array | None = None,
    relative_bias_table: jax.Array | None = None,
    relative_max_distance: int = 128,
    relative_bidirectional: bool = True,
    dtype: Any = None,
    precision: Any = None,
) -> jax.Array:
  """Softmax attention probabilities, for interpretability (no dropout).

  Same options and numbers as :func:`dot_product_attention` (without value, dropout and
  implementation choice).

  Returns:
    float32 ``[batch..., heads, q_seq, kv_seq]``; rows of fully masked queries are zeros.
  """
  p = _common.prepare(
      query, key, None, bias, mask, fn="attention_weights", scale=scale, is_causal=is_causal,
      alignment=alignment, q_offset=q_offset, local_window_size=local_window_size,
      sparsity_pattern=sparsity_pattern, mask_fn=mask_fn, score_fn=score_fn,
      query_seq_lengths=query_seq_lengths, key_value_seq_lengths=key_value_seq_lengths,
      q_segment_ids=q_segment_ids, kv_segment_ids=kv_segment_ids,
      logits_soft_cap=logits_soft_cap, alibi_slopes=alibi_slopes,
      relative_bias_table=relative_bias_table, relative_max_distance=relative_max_distance,
      relative_bidirectional=relative_bidirectional, dtype=dtype, precision=precision)
  return _weights_jit(p)


@jax.jit
def _weights_jit(p: _common.Problem) -> jax.Array:
  s, _ = _common.block_logits(p, p.query, p.key, 0, 0)
  return _common.to_weights(p, _softmax_with_zeros(s)[0])


@register_kernel("chunked")
def chunked_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    scale: float | None = None,
    is_causal: bool = False,
    alignment: str = "top_left",
    q_offset: int | jax.Array | None = None,
    local_window_size: int | tuple[int, int] | None = None,
    sparsity_pattern: Any = None,
    mask_fn: Callable[..., Any] | None = None,
    score_fn: Callable[..., Any] | None = None,
    query_seq_lengths: jax.Array | None = None,
    key_value_seq_lengths: jax.Array | None = None,
    q_segment_ids: jax.Array | None = None,
    kv_segment_ids: jax.Array | None = None,
    logits_soft_cap: float | None = None,
    alibi_slopes: jax.Array | None = None,
    relative_bias_table: jax.Array | None = None,
    relative_max_distance: int = 128,
    relative_bidirectional: bool = True,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
    deterministic: bool = True,
    broadcast_dropout: bool = True,
    dtype: Any = None,
    precision: Any = None,
    module: Any = None,
    block_q: int | None = None,
    block_kv: int | None = None,
    return_residual: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
  """Exact attention in O(seq) memory: :func:`dot_product_attention` with ``implementation='chunked'``.

  Blockwise online softmax (``chunked.py``) with a custom VJP that recomputes blocks in
  the backward pass; fully masked blocks (causal, window, lengths) are skipped. Same
  arguments and numbers as :func:`dot_product_attention` (up to float rounding; dropout
  masks are identical). ``block_q``/``block_kv`` default to 512 (or the sequence length
  rounded up to 8, if shorter); any ``q_seq``/``kv_seq`` works (padded internally).
  """
  return dot_product_attention(
      query, key, value, bias, mask, scale=scale, is_causal=is_causal, alignment=alignment,
      q_offset=q_offset,
      local_window_size=local_window_size, sparsity_pattern=sparsity_pattern,
      mask_fn=mask_fn, score_fn=score_fn,
      query_seq_lengths=query_seq_lengths,
      key_value_seq_lengths=key_value_seq_lengths, q_segment_ids=q_segment_ids,
      kv_segment_ids=kv_segment_ids, logits_soft_cap=logits_soft_cap,
      alibi_slopes=alibi_slopes, relative_bias_table=relative_bias_table,
      relative_max_distance=relative_max_distance,
      relative_bidirectional=relative_bidirectional, dropout_rate=dropout_rate,
      dropout_rng=dropout_rng, deterministic=deterministic,
      broadcast_dropout=broadcast_dropout, dtype=dtype, precision=precision, module=module,
      implementation="chunked", block_q=block_q, block_kv=block_kv,
      return_residual=return_residual)


def explain_implementation(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    implementation: str | None = None,
    block_q: int | None = None,
    block_kv: int | None = None,
    return_residual: bool = False,
    **options: Any,
) -> dispatch.Choice:
  """What :func:`dot_product_attention` would run for these arguments, and why.

  Takes the same arguments (options as keywords); runs nothing. Raises the same
  ``ValueError`` the call would raise.

  Returns:
    A ``Choice(name, reason, block_q, block_kv)``.
  """
  options.pop("module", None)
  p = _common.prepare(query, key, value, bias, mask, fn="explain_implementation", **options)
  return dispatch.choose_implementation(p, implementation, block_q=block_q, block_kv=block_kv,
                                        return_residual=return_residual,
                                        fn="explain_implementation")


def block_layout(
    mask_fn: Callable[..., Any] | None = None,
    *,
    q_len: int,
    kv_len: int,
    block_q: int = 512,
    block_kv: int = 512,
    batch: int = 1,
    num_heads: int = 1,
    is_causal: bool = False,
    q_offset: int | None = None,
    local_window_size: int | tuple[int, int] | None = None,
    sparsity_pattern: Any = None,
) -> Any:
  """The block layout the chunked implementation uses for these masks (nothing runs).

  Args:
    mask_fn: a ``mask_fn(batch, head, q_idx, kv_idx)`` (see ``attnjax.kernels.masks``).
    q_len, kv_len: sequence lengths.
    block_q, block_kv: the chunked implementation's block sizes.
    batch, num_heads: the flat batch size and query heads ``mask_fn`` is evaluated over.
    is_causal, q_offset, local_window_size, sparsity_pattern: as in
      :func:`dot_product_attention`.

  Returns:
    int32 NumPy ``[ceil(q_len / block_q), ceil(kv_len / block_kv)]``: ``masks.EMPTY``
    (never visited), ``masks.PARTIAL`` (the masks are evaluated) or ``masks.FULL``
    (visited without evaluating the pattern or ``mask_fn``). Under a transform where
    the layout depends on traced values (a ``mask_fn`` closing over traced segment ids)
    a traced array.
  """
  from attnjax.kernels import chunked  # pylint: disable=g-import-not-at-top
  for name, n in (("q_len", q_len), ("kv_len", kv_len), ("block_q", block_q),
                  ("block_kv", block_kv), ("batch", batch), ("num_heads", num_heads)):
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
      raise ValueError(f"block_layout: {name} must be a positive int, got {n!r}")
  q = jnp.zeros((batch, q_len, num_heads, 1), jnp.float32)  # only shapes matter
  k = jnp.zeros((batch, kv_len, 1, 1), jnp.float32)
  p = _common.prepare(q, k, k, fn="block_layout", mask_fn=mask_fn, is_causal=is_causal,
                      q_offset=q_offset, local_window_size=local_window_size,
                      sparsity_pattern=sparsity_pattern)
  return chunked.block_states(p, block_q, block_kv)[0]
