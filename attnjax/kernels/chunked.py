"""Chunked exact attention: blockwise online softmax in O(sequence) memory.

Same numbers as the dense path (``dot_product.py``) for every option, computed block by
block (Rabe & Staats 2021; Dao et al. 2022, FlashAttention-2's loop order):

* forward: for each query block, a loop over the key/value blocks that can be live
  keeps the running max ``m``, normaliser ``l`` and unnormalised output; only
  ``out``, ``m`` and ``log l`` (O(T)) are saved;
* backward (``jax.custom_vjp``): for each key/value block, a loop over the live query
  blocks recomputes the probabilities from ``m`` and ``log l`` and accumulates ``dk``, ``dv`` and
  ``dq`` (a carried ``[.., T, D]`` buffer), plus gradients of the bias, ALiBi slopes and
  T5 table. No ``[T, S]`` residual exists;
* masks, position biases and dropout are built per block from positions
  (``_common.block_logits``), never as ``[T, S]`` arrays (except a user ``mask``/``bias``,
  which is only sliced);
* blocks that causal, window, length and segment-id masks make entirely empty are not
  visited: the loops run over a computed ``[lo, hi)`` range, so a window of width ``w``
  costs ``O(T * (w + block))``, not ``O(T * S)``, and packed sequences cost the sum of
  their squares; with a sparsity pattern (``patterns.py``) or a ``mask_fn``
  (``masks.py``) they run over the block layout (``block_states``: computed at trace
  time when static, else at run time), visiting non-empty blocks only and evaluating
  the pattern / ``mask_fn`` on partial ones only;
* with a traced ``q_offset`` (cached decoding) the bounds and layouts are dynamic;
* inside ``shard_map`` loop carries take the inputs' varying manual axes;
* any ``T`` and ``S``: inputs are padded to block multiples and padded keys masked.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

import numpy as np

from attnjax.kernels import _common
from attnjax.kernels import masks

# Defaults from experiments/benchmarks/attention_bench.py on a 2-core CPU.
DEFAULT_BLOCK_Q = 512
DEFAULT_BLOCK_KV = 512


def _round_up(x: int, m: int) -> int:
  return -(-x // m) * m


def default_blocks(p: _common.Problem, block_q: int | None, block_kv: int | None, *,
                   fn: str = "chunked_attention") -> tuple[int, int]:
  """Validated block sizes; defaults shrink to the (8-rounded) sequence length."""
  for name, b in (("block_q", block_q), ("block_kv", block_kv)):
    if b is not None and (not isinstance(b, int) or isinstance(b, bool) or b <= 0):
      raise ValueError(f"{fn}: {name} must be a positive int, got {b!r}")
  bq = block_q or min(DEFAULT_BLOCK_Q, _round_up(p.q_len, 8))
  bk = block_kv or min(DEFAULT_BLOCK_KV, _round_up(p.kv_len, 8))
  return bq, bk


def run_chunked(p: _common.Problem, choice: Any) -> tuple[jax.Array, jax.Array]:
  """Dispatch entry: ``(out [B, K, G, T, Dv], lse [B, K, G, T])`` in the compute dtype."""
  return chunked_core(p, choice.block_q, choice.block_kv)


def _pad_axis(x: jax.Array | None, axis: int, size: int, value: Any = 0,
              broadcast: bool = False) -> jax.Array | None:
  """Pads ``axis`` to ``size``; with ``broadcast``, a size-1 axis stays (it broadcasts)."""
  if x is None or x.shape[axis] == size or (broadcast and x.shape[axis] == 1):
    return x
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, size - x.shape[axis])
  return jnp.pad(x, widths, constant_values=value)


pad_axis = _pad_axis  # shared with other blocked kernels (sigmoid attention)


def chunked_core(p: _common.Problem, block_q: int, block_kv: int) -> tuple[jax.Array, jax.Array]:
  """Pads to block multiples, runs the custom-VJP kernel, and crops.

  Returns:
    ``(out [B, K, G, T, Dv], lse [B, K, G, T])`` in the compute dtype.
  """
  t, s = p.q_len, p.kv_len
  tp, sp = _round_up(t, block_q), _round_up(s, block_kv)
  pp = p.replace(
      query=_pad_axis(p.query, 3, tp), key=_pad_axis(p.key, 2, sp),
      value=_pad_axis(p.value, 2, sp),
      bias=_pad_axis(_pad_axis(p.bias, 3, tp, broadcast=True), 4, sp, broadcast=True),
      mask=_pad_axis(_pad_axis(p.mask, 3, tp, False, True), 4, sp, False, True),
      q_segment_ids=_pad_axis(p.q_segment_ids, 1, tp, -1),
      kv_segment_ids=_pad_axis(p.kv_segment_ids, 1, sp, -2))
  if pp.scale != 1.0 and pp.query.dtype == pp.compute_dtype:
    # Scaling q once (O(T*D)) instead of every [tq, tk] block saves a pass over the logits;
    # autodiff carries the scale into dq. Low-precision inputs keep the per-block scale so
    # that q is not rounded twice.
    pp = pp.replace(query=pp.query * jnp.asarray(pp.scale, pp.query.dtype), scale=1.0)
  kv_limit = s if sp != s else None
  out, lse = _flash(_uniform_vma(pp), block_q, block_kv, kv_limit)
  return out[..., :t, :], lse[..., :t]


# ------------------------------------------------------------- shard_map (manual axes)


def _vma(x: Any) -> frozenset:
  """The manual mesh axes ``x`` varies over inside ``shard_map`` (empty outside)."""
  aval = jax.typeof(x)
  mat = getattr(aval, "mat", None)  # jax >= 0.10: ManualAxisType(varying=..., ...)
  if mat is not None:
    return frozenset(mat.varying)
  return frozenset(getattr(aval, "vma", None) or ())  # earlier jax


def _vary(x: Any, axes: frozenset) -> Any:
  """``x`` (a pytree) marked as varying over ``axes``, as loop carries must be.

  Inside ``shard_map`` a loop's initial carry (zeros) is invariant while the carry its
  body returns varies over the inputs' axes; JAX refuses the mismatch. Outside it
  ``axes`` is empty and this is the identity.
  """
  def one(leaf):
    missing = tuple(sorted(axes - _vma(leaf)))
    return lax.pcast(leaf, missing, to="varying") if missing else leaf
  return jax.tree.map(one, x)


def _uniform_vma(p: _common.Problem) -> _common.Problem:
  """Every array of ``p`` varying over the union of their manual axes.

  Done outside the custom VJP so that the kernel sees one set of axes and JAX itself
  transposes the casts (summing the cotangent of, say, replicated ALiBi slopes).
  """
  axes = frozenset().union(*(_vma(x) for x in jax.tree.leaves(p)))
  return _vary(p, axes) if axes else p


# ------------------------------------------------------------------------- block ranges


def _reach(p: _common.Problem) -> tuple[int | None, int | None]:
  """How far left/right of its diagonal a query may look (None = unbounded)."""
  left = right = None
  if p.causal:
    right = 0
  if p.window is not None:
    left = p.window[0]
    right = p.window[1] if right is None else min(right, p.window[1])
  return left, right


def _segment_hull(rows: jax.Array, cols: jax.Array, start: jax.Array, size: int
                  ) -> tuple[jax.Array, jax.Array]:
  """Columns ``[lo, hi)`` that can share a segment with rows ``[start, start + size)``.

  ``rows`` ``[B, R]`` and ``cols`` ``[B, C]`` are segment ids. A column is kept when its id
  lies within the block's ``[min, max]`` id for the same batch row; outside the hull of
  kept columns no id matches any row of the block, so those blocks are entirely masked.
  Exact for packed (sorted) ids, conservative (never wrong) for any ids; O(B * C).
  """
  blk = lax.dynamic_slice_in_dim(rows, start, size, axis=1)
  lo_id, hi_id = jnp.min(blk, axis=1), jnp.max(blk, axis=1)
  hit = jnp.any((cols >= lo_id[:, None]) & (cols <= hi_id[:, None]), axis=0)
  n = cols.shape[1]
  first = jnp.argmax(hit)
  last = n - jnp.argmax(hit[::-1])
  any_hit = jnp.any(hit)
  return jnp.where(any_hit, first, 0), jnp.where(any_hit, last, 0)


def _kv_range(p: _common.Problem, i: jax.Array, bq: int, bk: int,
              nk: int) -> tuple[jax.Array, jax.Array]:
  """Key/value blocks ``[lo, hi)`` that query block ``i`` may attend to."""
  left, right = _reach(p)
  q_first = i * bq
  q_last = jnp.minimum(q_first + bq, p.q_len) - 1
  lo_key = jnp.int32(0) if left is None else jnp.maximum(q_first + p.diagonal - left, 0)
  hi_key = jnp.int32(p.kv_len) if right is None else jnp.minimum(
      q_last + p.diagonal + right + 1, p.kv_len)
  if p.kv_lengths is not None:
    hi_key = jnp.minimum(hi_key, jnp.max(p.kv_lengths))
  if p.q_lengths is not None:
    hi_key = jnp.where(q_first >= jnp.max(p.q_lengths), 0, hi_key)
  if p.q_segment_ids is not None:
    seg_lo, seg_hi = _segment_hull(p.q_segment_ids, p.kv_segment_ids, q_first, bq)
    lo_key, hi_key = jnp.maximum(lo_key, seg_lo), jnp.minimum(hi_key, seg_hi)
  lo = lo_key // bk
  hi = jnp.clip(-(-hi_key // bk), lo, nk)
  return lo.astype(jnp.int32), hi.astype(jnp.int32)


def _q_range(p: _common.Problem, j: jax.Array, bq: int, bk: int,
             nq: int) -> tuple[jax.Array, jax.Array]:
  """Query blocks ``[lo, hi)`` that may attend to key/value block ``j``."""
  left, right = _reach(p)
  k_first = j * bk
  k_last = jnp.minimum(k_first + bk, p.kv_len) - 1
  # q attends k iff q + offset - left <= k <= q + offset + right.
  lo_q = jnp.int32(0) if right is None else jnp.maximum(k_first - p.diagonal - right, 0)
  hi_q = jnp.int32(p.q_len) if left is None else jnp.minimum(k_last - p.diagonal + left + 1,
                                                            p.q_len)
  if p.q_lengths is not None:
    hi_q = jnp.minimum(hi_q, jnp.max(p.q_lengths))
  if p.kv_lengths is not None:
    hi_q = jnp.where(k_first >= jnp.max(p.kv_lengths), 0, hi_q)
  if p.q_segment_ids is not None:
    seg_lo, seg_hi = _segment_hull(p.kv_segment_ids, p.q_segment_ids, k_first, bk)
    lo_q, hi_q = jnp.maximum(lo_q, seg_lo), jnp.minimum(hi_q, seg_hi)
  lo = lo_q // bq
  hi = jnp.clip(-(-hi_q // bq), lo, nq)
  return lo.astype(jnp.int32), hi.astype(jnp.int32)


def uses_layout(p: _common.Problem) -> bool:
  """Whether the loops run over a block layout (a pattern or a ``mask_fn``) or a range."""
  return p.pattern is not None or p.mask_fn is not None


def _structure(p: _common.Problem, q0: Any, tq: int, tk: int, mask_consts: Any) -> jax.Array:
  """Causal, window, pattern and ``mask_fn`` over rows ``[q0, q0 + tq)`` x keys ``[0, tk)``.

  The masks that decide the block layout (lengths, segment ids and a user ``mask`` are
  applied inside the visited blocks); bool, broadcastable to ``[B, K, G, tq, tk]``.
  """
  qi = (q0 + jnp.arange(tq, dtype=jnp.int32)).reshape(1, 1, 1, tq, 1)
  ki = jnp.arange(tk, dtype=jnp.int32).reshape(1, 1, 1, 1, tk)
  rel = ki - qi - p.diagonal
  m = (qi < p.q_len) & (ki < p.kv_len)
  if p.causal:
    m = m & (rel <= 0)
  if p.window is not None:
    m = m & (rel >= -p.window[0]) & (rel <= p.window[1])
  if p.pattern is not None:
    m = m & p.pattern.allows(qi, ki, offset=p.diagonal, q_len=p.q_len, kv_len=p.kv_len, xp=jnp)
  if p.mask_fn is not None:
    m = m & masks.apply(p.mask_fn, mask_consts, *_common.flex_indices(p, q0, tq, 0, tk))
  return m


def block_states(p: _common.Problem, bq: int, bk: int) -> tuple[Any, bool]:
  """Per-block state ``[nq, nk]`` (``masks.EMPTY / PARTIAL / FULL``) of the layout masks.

  FULL: every real entry is kept by the pattern and ``mask_fn`` (they are not evaluated
  there); EMPTY: none is (never visited). Computed at trace time in NumPy-compatible
  eager ``jnp`` when everything it depends on is static (a static offset and a
  ``mask_fn`` closing over concrete values only), else at run time, one query block at
  a time (``O(block_q * kv_seq)`` memory, no logits).

  Returns:
    ``(states, static)``: a NumPy array when ``static``, else a traced int32 array.
  """
  nq, nk = -(-p.q_len // bq), -(-p.kv_len // bk)
  static = p.q_offset is None and (p.mask_fn is None or p.mask_fn.static)

  def row(q0, consts):
    m = _structure(p, q0, bq, nk * bk, consts)
    m = m.reshape(m.shape[:-1] + (nk, bk))
    qi = (q0 + jnp.arange(bq, dtype=jnp.int32)).reshape(1, 1, 1, bq, 1, 1)
    ki = jnp.arange(nk * bk, dtype=jnp.int32).reshape(1, 1, 1, 1, nk, bk)
    valid = (qi < p.q_len) & (ki < p.kv_len)
    axes = (0, 1, 2, 3, 5)
    live = jnp.any(m, axis=axes)  # m is already False outside valid
    full = jnp.all(m | ~valid, axis=axes)
    return jnp.where(live, jnp.where(full, masks.FULL, masks.PARTIAL), masks.EMPTY
                     ).astype(jnp.int32)

  if static:
    consts = p.mask_fn.static_consts if p.mask_fn is not None else None
    with jax.ensure_compile_time_eval():
      return np.stack([np.asarray(row(i * bq, consts)) for i in range(nq)]), True
  return lax.map(lambda i: row(i * bq, p.mask_consts), jnp.arange(nq, dtype=jnp.int32)), False


def _lists(states: Any, xp: Any) -> tuple[Any, Any, Any]:
  """Per row: block indices with FULL first then PARTIAL, their counts ``(idx, nfull, n)``."""
  if xp is np:
    idx = np.argsort(-states, axis=1, kind="stable").astype(np.int32)
  else:
    idx = jnp.argsort(-states, axis=1, stable=True).astype(jnp.int32)
  return (idx, xp.sum(states == masks.FULL, axis=1).astype(np.int32),
          xp.sum(states != masks.EMPTY, axis=1).astype(np.int32))


def _loop_live(p: _common.Problem, bq: int, bk: int, i: jax.Array, body: Any, init: Any, *,
               transpose: bool, layout: Any = None) -> Any:
  """Runs ``body(j, carry, skip_flex)`` over the blocks live for block ``i``.

  Forward (``transpose=False``): ``i`` is a query block, ``j`` runs over key blocks;
  backward: the other way round. Without a pattern or ``mask_fn`` the live blocks are
  one contiguous range (causal / window / lengths / segment hulls), with dynamic bounds
  when ``q_offset`` is traced. With one, ``layout`` (``_lists`` of ``block_states``)
  lists the non-empty blocks, full ones first, visited with ``skip_flex=True``.
  """
  nq, nk = -(-p.q_len // bq), -(-p.kv_len // bk)
  if layout is None:
    lo, hi = (_q_range(p, i, bq, bk, nq) if transpose else _kv_range(p, i, bq, bk, nk))
    return lax.fori_loop(lo, hi, lambda j, c: body(j, c, False), init)
  idx, nfull, count = (jnp.asarray(x) for x in layout)
  row, nf, n = idx[i], nfull[i], count[i]
  carry = lax.fori_loop(0, nf, lambda m, c: body(row[m], c, True), init)
  return lax.fori_loop(nf, n, lambda m, c: body(row[m], c, False), carry)


def _layouts(p: _common.Problem, bq: int, bk: int) -> tuple[Any, Any]:
  """``(forward lists, backward lists)``, or ``(None, None)`` for the range loops."""
  if not uses_layout(p):
    return None, None
  states, static = block_states(p, bq, bk)
  xp = np if static else jnp
  return _lists(states, xp), _lists(states.T, xp)


def live_block_count(p: _common.Problem, block_q: int, block_kv: int) -> int:
  """Number of (query block, key block) pairs the forward pass visits (for benchmarks)."""
  nq, nk = -(-p.q_len // block_q), -(-p.kv_len // block_kv)
  if uses_layout(p):
    states, _ = block_states(p, block_q, block_kv)
    return int(np.sum(np.asarray(states) != masks.EMPTY))
  lo, hi = jax.vmap(lambda i: _kv_range(p, i, block_q, block_kv, nk))(jnp.arange(nq))
  return int(jnp.sum(hi - lo))


# ------------------------------------------------------------------------------ forward


def _forward(p: _common.Problem, bq: int, bk: int, kv_limit: int | None
             ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Returns ``(out [B, K, G, T, Dv], row max m, log of the row sum of exp(s - m))``.

  The backward pass needs the two statistics apart: recomputing ``exp(s - lse)`` from a
  float32 ``lse = m + log l`` carries its rounding, ``|lse| * 2**-24``, into every
  probability, which grows with the logits' size; ``exp((s - m) - log l)`` does not.
  """
  b, kh, g, tp, _ = p.query.shape
  sp, dv = p.key.shape[2], p.value.shape[-1]
  nq, nk = tp // bq, sp // bk
  cdt = p.compute_dtype
  layout, _ = _layouts(p, bq, bk)

  def q_block(i):
    q0 = i * bq
    q_blk = lax.dynamic_slice_in_dim(p.query, q0, bq, axis=3)

    # Row state over (G, tq) as one axis: 4-D blocks keep XLA:CPU from copying each
    # [tq, tk] block between layouts of the unit G axis.
    rows = g * bq

    def body(j, carry, skip):
      m, l, acc = carry
      k0 = j * bk
      k_blk = lax.dynamic_slice_in_dim(p.key, k0, bk, axis=2)
      v_blk = lax.dynamic_slice_in_dim(p.value, k0, bk, axis=2)
      s, _ = _common.block_logits(p, q_blk, k_blk, q0, k0, kv_limit, skip_flex=skip)
      s = s.reshape(b, kh, rows, bk)
      m_new = jnp.maximum(m, jnp.max(s, axis=-1))
      # A row with nothing live so far keeps m = -inf; shifting by 0 keeps exp() exact 0.
      m_safe = jnp.where(m_new == -jnp.inf, 0.0, m_new)
      alpha = jnp.exp(m - m_safe)
      e = jnp.exp(s - m_safe[..., None])
      l = alpha * l + jnp.sum(e, axis=-1)
      if p.dropout_rate > 0.0:
        keep = _common.dropout_keep(p, q0, bq, k0, bk)
        keep = jnp.broadcast_to(keep, (b, kh, g, bq, bk)).reshape(b, kh, rows, bk)
        e = jnp.where(keep, e / (1.0 - p.dropout_rate), 0.0)
      pv = jnp.einsum("bkxs,bksd->bkxd", e.astype(v_blk.dtype), v_blk,
                      precision=p.precision, preferred_element_type=cdt)
      return m_new, l, alpha[..., None] * acc + pv

    init = _vary((jnp.full((b, kh, rows), -jnp.inf, cdt), jnp.zeros((b, kh, rows), cdt),
                  jnp.zeros((b, kh, rows, dv), cdt)), _vma(p.query))
    m, l, acc = _loop_live(p, bq, bk, i, body, init, transpose=False, layout=layout)
    empty = l == 0.0
    safe_l = jnp.where(empty, 1.0, l)
    m = jnp.where(empty, -jnp.inf, m)  # a row with no live key: lse = -inf (see _lse)
    out = (acc / safe_l[..., None]).reshape(b, kh, g, bq, dv)
    return out, m.reshape(b, kh, g, bq), jnp.log(safe_l).reshape(b, kh, g, bq)

  outs, ms, logls = lax.map(q_block, jnp.arange(nq))
  out = jnp.moveaxis(outs, 0, 3).reshape(b, kh, g, tp, dv)
  m = jnp.moveaxis(ms, 0, 3).reshape(b, kh, g, tp)
  return out, m, jnp.moveaxis(logls, 0, 3).reshape(b, kh, g, tp)


def _lse(m: jax.Array, log_l: jax.Array) -> jax.Array:
  """``max + log(sum exp(s - max))``; ``-inf`` for rows with no live key (``m = -inf``)."""
  return jnp.where(m == -jnp.inf, -jnp.inf, m + log_l)


# ----------------------------------------------------------------------------- backward


def _reduce_to(x: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Sums ``x`` over the axes where ``shape`` has 1 (the broadcast axes of a bias)."""
  axes = tuple(a for a, (n, m) in enumerate(zip(shape, x.shape)) if n == 1 and m != 1)
  return jnp.sum(x, axis=axes, keepdims=True) if axes else x


def _add_block(acc: jax.Array, blk: jax.Array, q0: Any, k0: Any) -> jax.Array:
  starts = (0, 0, 0, q0 if acc.shape[3] > 1 else 0, k0 if acc.shape[4] > 1 else 0)
  cur = lax.dynamic_slice(acc, starts, blk.shape)
  return lax.dynamic_update_slice(acc, cur + blk.astype(acc.dtype), starts)


def _backward(p: _common.Problem, bq: int, bk: int, kv_limit: int | None, out: jax.Array,
              m: jax.Array, log_l: jax.Array, dout: jax.Array, dlse: jax.Array
              ) -> _common.Problem:
  b, kh, g, tp, d = p.query.shape
  sp, dv = p.key.shape[2], p.value.shape[-1]
  nq, nk = tp // bq, sp // bk
  cdt = p.compute_dtype
  axes = _vma(p.query)
  dout = dout.astype(cdt)
  # d lse / d s = probs, so the lse cotangent folds into the row term of dS.
  delta = jnp.sum(dout * out, axis=-1) - dlse.astype(cdt)
  keep_scale = 1.0 / (1.0 - p.dropout_rate)

  dbias0 = None if p.bias is None else jnp.zeros(
      tuple(n if n == 1 else (tp if a == 3 else sp if a == 4 else n)
            for a, n in enumerate(p.bias.shape)), cdt)
  dslopes0 = None if p.alibi_slopes is None else jnp.zeros_like(p.alibi_slopes)
  dtable0 = None if p.relative_table is None else jnp.zeros_like(p.relative_table)
  # score_fn's closed-over arrays: the float ones are differentiated, the rest are fixed.
  consts = p.score_consts or ()
  is_float = [jnp.issubdtype(c.dtype, jnp.inexact) for c in consts]
  dscore0 = tuple(jnp.zeros(c.shape, cdt) for c, f in zip(consts, is_float) if f)

  def with_floats(floats):
    it = iter(floats)
    return tuple(next(it) if f else c for c, f in zip(consts, is_float))

  _, layout = _layouts(p, bq, bk)

  def kv_block(carry, j):
    dq, dbias, dslopes, dtable, dscore = carry
    k0 = j * bk
    k_blk = lax.dynamic_slice_in_dim(p.key, k0, bk, axis=2)
    v_blk = lax.dynamic_slice_in_dim(p.value, k0, bk, axis=2)

    def body(i, c, skip):
      dk_j, dv_j, dq, dbias, dslopes, dtable, dscore = c
      q0 = i * bq
      q_blk = lax.dynamic_slice_in_dim(p.query, q0, bq, axis=3)
      do_blk = lax.dynamic_slice_in_dim(dout, q0, bq, axis=3)
      m_blk = lax.dynamic_slice_in_dim(m, q0, bq, axis=3)
      log_l_blk = lax.dynamic_slice_in_dim(log_l, q0, bq, axis=3)
      delta_blk = lax.dynamic_slice_in_dim(delta, q0, bq, axis=3)
      # Keys-first layout ([B, K, tk, G, tq], "_t" suffix): all five matmuls below read
      # their operands in place (see _common.block_logits).
      s_t, th_t, raw_t = _common.block_logits(p, q_blk, k_blk, q0, k0, kv_limit,
                                              keys_first=True, skip_flex=skip, with_raw=True)
      pr_t = jnp.exp((s_t - m_blk[:, :, None]) - log_l_blk[:, :, None])
      dp_t = jnp.einsum("bksd,bkgtd->bksgt", v_blk, do_blk, precision=p.precision,
                        preferred_element_type=cdt)
      if p.dropout_rate > 0.0:
        keep_t = _common.keys_first_layout(_common.dropout_keep(p, q0, bq, k0, bk))
        pd_t = jnp.where(keep_t, pr_t * keep_scale, 0.0)
        dp_t = jnp.where(keep_t, dp_t * keep_scale, 0.0)
      else:
        pd_t = pr_t
      dv_j = dv_j + jnp.einsum("bksgt,bkgtd->bksd", pd_t, do_blk, precision=p.precision,
                               preferred_element_type=cdt)
      ds_t = pr_t * (dp_t - delta_blk[:, :, None])  # d loss / d (final logits)
      if dbias is not None or dtable is not None:
        ds = ds_t.transpose(0, 1, 3, 4, 2)  # [B, K, G, tq, tk]
      if dbias is not None:
        dbias = _add_block(dbias, _reduce_to(ds, p.bias.shape), q0, k0)
      if dslopes is not None or dtable is not None:
        rel = _common.relative_positions(p, q0, bq, k0, bk)
        if dslopes is not None:
          da = -jnp.einsum("bksgt,ts->bkg", ds_t, jnp.abs(rel).astype(cdt))
          dslopes = dslopes + _reduce_to(da, dslopes.shape)
        if dtable is not None:
          nb = dtable.shape[0]
          buckets = _common.relative_buckets(p, rel).reshape(-1)
          per_pos = jnp.sum(ds, axis=0).reshape(kh * g, -1).T  # [tq*tk, K*G]
          dtable = dtable + jnp.zeros((nb, kh * g), cdt).at[buckets].add(per_pos).reshape(
              nb, kh, g)
      if p.score_fn is not None:
        # Back through score_fn (recomputed on the raw logits), to them and to its arrays.
        _, vjp = jax.vjp(lambda r, fl: _common.apply_score(
            p, r, q0, k0, keys_first=True, consts=with_floats(fl)), raw_t,
                         tuple(c for c, f in zip(consts, is_float) if f))
        ds_t, dfl = vjp(ds_t)
        dscore = tuple(a + b.astype(cdt) for a, b in zip(dscore, dfl))
      if th_t is not None:
        ds_t = ds_t * (1.0 - th_t * th_t)
      if p.scale != 1.0:
        ds_t = ds_t * p.scale
      dk_j = dk_j + jnp.einsum("bksgt,bkgtd->bksd", ds_t, q_blk, precision=p.precision,
                               preferred_element_type=cdt)
      dq_t = jnp.einsum("bksd,bksgt->bkdgt", k_blk, ds_t, precision=p.precision,
                        preferred_element_type=cdt)
      dq = lax.dynamic_update_slice_in_dim(
          dq, lax.dynamic_slice_in_dim(dq, q0, bq, axis=3) + dq_t.transpose(0, 1, 3, 4, 2),
          q0, axis=3)
      return dk_j, dv_j, dq, dbias, dslopes, dtable, dscore

    init = (*_vary((jnp.zeros((b, kh, bk, d), cdt), jnp.zeros((b, kh, bk, dv), cdt)), axes),
            dq, dbias, dslopes, dtable, dscore)
    dk_j, dv_j, dq, dbias, dslopes, dtable, dscore = _loop_live(
        p, bq, bk, j, body, init, transpose=True, layout=layout)
    return (dq, dbias, dslopes, dtable, dscore), (dk_j, dv_j)

  init = _vary((jnp.zeros((b, kh, g, tp, d), cdt), dbias0, dslopes0, dtable0, dscore0), axes)
  (dq, dbias, dslopes, dtable, dscore), (dks, dvs) = lax.scan(kv_block, init, jnp.arange(nk))
  dk = jnp.moveaxis(dks, 0, 2).reshape(b, kh, sp, d)
  dv_ = jnp.moveaxis(dvs, 0, 2).reshape(b, kh, sp, dv)
  zeros = jax.tree.map(lambda _: None, p)
  return zeros.replace(
      query=dq.astype(p.query.dtype), key=dk.astype(p.key.dtype),
      value=dv_.astype(p.value.dtype),
      bias=None if dbias is None else dbias.astype(p.bias.dtype),
      alibi_slopes=dslopes, relative_table=dtable, score_consts=_score_cotangents(
          p.score_consts, is_float, dscore))


def _score_cotangents(consts: tuple | None, is_float: list[bool], dfloats: tuple
                      ) -> tuple | None:
  """Cotangents of ``score_fn``'s arrays: the accumulated ones, ``None`` for int arrays."""
  if consts is None:
    return None
  it = iter(dfloats)
  return tuple(next(it).astype(c.dtype) if f else None for c, f in zip(consts, is_float))


# --------------------------------------------------------------------------- custom_vjp


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _flash(p: _common.Problem, bq: int, bk: int, kv_limit: int | None
           ) -> tuple[jax.Array, jax.Array]:
  out, m, log_l = _forward(p, bq, bk, kv_limit)
  return out, _lse(m, log_l)


def _flash_fwd(p, bq, bk, kv_limit):
  out, m, log_l = _forward(p, bq, bk, kv_limit)
  # Rows with no live key have m = -inf; the backward pass needs m only where rows are
  # live, so 0 is saved there, keeping -inf out of the residuals (jax.debug_infs checks
  # them under eager autodiff).
  return (out, _lse(m, log_l)), (p, out, jnp.where(m == -jnp.inf, 0.0, m), log_l)


def _flash_bwd(bq, bk, kv_limit, res, cts):
  p, out, m, log_l = res
  dout, dlse = cts
  return (_backward(p, bq, bk, kv_limit, out, m, log_l, dout, dlse),)


_flash.defvjp(_flash_fwd, _flash_bwd)
