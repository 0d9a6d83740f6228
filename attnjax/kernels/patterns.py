"""Structured sparsity patterns for the exact kernels: which keys each query may see.

A pattern is a frozen (hashable, static) dataclass with one method,
``allows(qi, ki, *, offset, q_len, kv_len, xp)``, a boolean predicate on broadcast integer
query/key positions. It is evaluated lazily, block by block, like the causal and window
masks (``_common.block_mask``): the dense kernel evaluates it once over ``[T, S]``, the
chunked kernel per block, and :func:`block_layout` evaluates it in NumPy at trace time to
list the blocks that have any live entry, so the chunked kernel never visits an empty
block (a window-type pattern costs ``O(T * (w + block))``, not ``O(T * S)``).

``rel = ki - qi - offset`` is the key's position relative to the query's diagonal and
``qi + offset`` the query's absolute position (see ``alignment`` and ``q_offset`` in
``dot_product_attention``); ``offset`` may be a traced scalar when decoding. Patterns AND
with every other mask.

Pass one as ``sparsity_pattern=`` to ``dot_product_attention`` / ``chunked_attention`` /
``attention_weights``; the registered sparse kernels (``sparse.py``) are thin wrappers.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np


def _rel(qi: Any, ki: Any, offset: int) -> Any:
  return ki - qi - offset


@dataclasses.dataclass(frozen=True)
class DilatedWindow:
  """Keys ``rel`` in ``{-left*d, ..., -d, 0, d, ..., right*d}`` (Beltagy et al. 2020, sec. 3.1).

  Attributes:
    left: neighbours before the query (in units of ``dilation``).
    right: neighbours after the query.
    dilation: gap between attended keys; 1 is a plain sliding window.
  """

  left: int
  right: int
  dilation: int = 1

  def allows(self, qi, ki, *, offset, q_len, kv_len, xp):
    del q_len, kv_len
    rel = _rel(qi, ki, offset)
    d = self.dilation
    ok = (rel >= -self.left * d) & (rel <= self.right * d)
    return ok if d == 1 else ok & (xp.remainder(rel, d) == 0)


@dataclasses.dataclass(frozen=True)
class Longformer:
  """Sliding window plus global tokens (Beltagy et al. 2020).

  The first ``num_global`` positions attend to every key and every query attends to them
  (symmetric global attention; Longformer puts the CLS token there for classification).
  """

  left: int
  right: int
  num_global: int = 1

  def allows(self, qi, ki, *, offset, q_len, kv_len, xp):
    del q_len, kv_len, xp
    rel = _rel(qi, ki, offset)
    # Global queries by absolute position (row + offset), so that decoding agrees.
    return (((rel >= -self.left) & (rel <= self.right)) | (qi + offset < self.num_global)
            | (ki < self.num_global))


@functools.lru_cache(maxsize=64)
def _bigbird_random_blocks(seed: int, nqb: int, nkb: int, num_window: int, num_global: int,
                           num_random: int) -> np.ndarray:
  """Bool ``[nqb, nkb]``: the random key blocks of each query block (seeded, fixed)."""
  rng = np.random.default_rng(seed)
  table = np.zeros((nqb, nkb), bool)
  half = num_window // 2
  for i in range(num_global, nqb):
    taken = {j for j in range(max(0, i - half), min(nkb, i + half + 1))}
    taken |= set(range(min(num_global, nkb)))
    free = np.array([j for j in range(nkb) if j not in taken], np.int64)
    if free.size:
      table[i, rng.choice(free, size=min(num_random, free.size), replace=False)] = True
  return table


@dataclasses.dataclass(frozen=True)
class BigBird:
  """Block window + global blocks + seeded random blocks (Zaheer et al. 2020, BigBird-ITC).

  Positions are grouped in blocks of ``block_size``. Query block ``i`` sees key blocks
  ``|i - j| <= num_window_blocks // 2``, the first ``num_global_blocks`` blocks (which also
  see everything), and ``num_random_blocks`` other blocks drawn once from ``seed`` (the
  same draw for every head, batch element and step: the pattern is static).
  """

  block_size: int = 64
  num_window_blocks: int = 3
  num_global_blocks: int = 1
  num_random_blocks: int = 2
  seed: int = 0

  def random_blocks(self, q_len: int, kv_len: int) -> np.ndarray:
    b = self.block_size
    return _bigbird_random_blocks(self.seed, -(-q_len // b), -(-kv_len // b),
                                  self.num_window_blocks, self.num_global_blocks,
                                  self.num_random_blocks)

  def allows(self, qi, ki, *, offset, q_len, kv_len, xp):
    b = self.block_size
    # Query blocks by absolute position (row + offset), so that decoding agrees.
    qb, kb = (qi + offset) // b, ki // b
    half = self.num_window_blocks // 2
    ok = (xp.abs(kb - qb) <= half) | (qb < self.num_global_blocks) | (
        kb < self.num_global_blocks)
    if self.num_random_blocks:
      # Rows are drawn in order, so a longer table extends a shorter one: sizing it by
      # max(q_len, kv_len) keeps q_len <= kv_len calls unchanged and gives a decoding
      # query (q_len 1 at some offset) the row of its absolute block.
      rand = xp.asarray(self.random_blocks(max(q_len, kv_len), kv_len))
      nqb, nkb = rand.shape
      ok = ok | rand[xp.clip(qb, 0, nqb - 1), xp.clip(kb, 0, nkb - 1)]
    return ok


@dataclasses.dataclass(frozen=True)
class SparseFixed:
  """Sparse Transformer "fixed" pattern (Child et al. 2019, sec. 4.2).

  A query sees the keys of its own block of ``block_size`` positions, and the last
  ``summary`` positions of every block (the "summary" columns that carry information
  across blocks). The paper's autoregressive version is this with ``is_causal=True``.
  """

  block_size: int = 64
  summary: int = 8

  def allows(self, qi, ki, *, offset, q_len, kv_len, xp):
    del q_len, kv_len, xp
    l = self.block_size
    return ((qi + offset) // l == ki // l) | (ki % l >= l - self.summary)


@dataclasses.dataclass(frozen=True)
class SparseStrided:
  """Sparse Transformer "strided" pattern (Child et al. 2019, sec. 4.2).

  A query sees the ``stride`` keys nearest its diagonal (``|rel| < stride``) and every
  ``stride``-th key (``rel % stride == 0``). With ``is_causal=True`` this is the paper's
  pattern (previous ``stride`` positions + every ``stride``-th one back).
  """

  stride: int = 64

  def allows(self, qi, ki, *, offset, q_len, kv_len, xp):
    del q_len, kv_len
    rel = _rel(qi, ki, offset)
    return (xp.abs(rel) < self.stride) | (xp.remainder(rel, self.stride) == 0)


def dense_mask(pattern: Any, q_len: int, kv_len: int, offset: int = 0) -> np.ndarray:
  """The pattern as a NumPy bool ``[q_len, kv_len]`` mask (for tests and plots)."""
  qi = np.arange(q_len)[:, None]
  ki = np.arange(kv_len)[None, :]
  return np.broadcast_to(
      pattern.allows(qi, ki, offset=offset, q_len=q_len, kv_len=kv_len, xp=np),
      (q_len, kv_len)).copy()


def static_allows(pattern: Any, causal: bool, window: tuple[int, int] | None, offset: int,
                  q_len: int, kv_len: int, qi: np.ndarray, ki: np.ndarray) -> np.ndarray:
  """Pattern AND the static causal/window masks, in NumPy (for block layouts)."""
  ok = np.ones(np.broadcast_shapes(qi.shape, ki.shape), bool)
  rel = ki - qi - offset
  if causal:
    ok &= rel <= 0
  if window is not None:
    ok &= (rel >= -window[0]) & (rel <= window[1])
  if pattern is not None:
    ok &= pattern.allows(qi, ki, offset=offset, q_len=q_len, kv_len=kv_len, xp=np)
  return ok


@functools.lru_cache(maxsize=64)
def block_layout(pattern: Any, causal: bool, window: tuple[int, int] | None, offset: int,
                 q_len: int, kv_len: int, block_q: int, block_kv: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Live blocks of a pattern, as index lists for the chunked kernel's loops.

  Computed in NumPy at trace time (the pattern is static), one query block at a time so
  that memory stays ``O(block_q * kv_len)``.

  Returns:
    ``(kv_idx [nq, max_live], kv_count [nq], q_idx [nk, max_live_t], q_count [nk])``:
    row ``i`` of ``kv_idx`` lists the key blocks query block ``i`` must visit (padded with
    0 past ``kv_count[i]``); ``q_idx`` is the transpose, for the backward pass.
  """
  nq, nk = -(-q_len // block_q), -(-kv_len // block_kv)
  live = np.zeros((nq, nk), bool)
  ki = np.arange(nk * block_kv)[None, :]
  for i in range(nq):
    qi = np.arange(i * block_q, (i + 1) * block_q)[:, None]
    ok = static_allows(pattern, causal, window, offset, q_len, kv_len, qi, ki)
    ok = ok & (qi < q_len) & (ki < kv_len)
    live[i] = ok.reshape(block_q, nk, block_kv).any(axis=(0, 2))

  def lists(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    count = m.sum(1).astype(np.int32)
    idx = np.zeros((m.shape[0], max(1, int(count.max(initial=0)))), np.int32)
    for r in range(m.shape[0]):
      js = np.nonzero(m[r])[0]
      idx[r, :js.size] = js
    return idx, count

  kv_idx, kv_count = lists(live)
  q_idx, q_count = lists(live.T)
  return kv_idx, kv_count, q_idx, q_count
