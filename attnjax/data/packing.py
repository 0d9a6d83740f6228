"""First-fit sequence packing: several short examples per row, told apart by segment ids.

Padding a corpus of mixed lengths to one ``max_length`` spends most of a batch on padding.
Packing puts several examples into one row: every token carries its example's
``segment_ids`` (1, 2, ... within the row; 0 = padding) and ``positions`` (0, 1, ... from
the start of its example), so attention can stay inside a segment and position embeddings
restart. Per-example values travel per segment: a classification row carries ``label``
``[max_segments]`` and ``label_weight`` ``[max_segments]`` (1 for a real example, 0 for an
empty slot); a per-example count such as a causal LM's ``num_bytes`` is summed.

The packing is *precomputed* from the example lengths (first fit: each example goes into the
first row it fits, in a fixed seeded order), so the packed rows form a random-access source:
the pipeline's global-batch sampler, exact weighted evaluation and resumption from the step
alone work unchanged, and the same data gives the same rows on every machine.

:class:`PackedSource` is the transform (``Sequence`` in, ``Sequence`` of rows out);
``config.data.pack = True`` turns it on for the text datasets (``attnjax.data.text``).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

#: Seed of the order examples are packed in (fixed: it is part of the dataset).
PACK_SEED = 20251202


def first_fit(lengths: Sequence[int], max_length: int, *, max_segments: int = 0,
              names: Sequence[str] | None = None) -> list[list[int]]:
  """Groups examples into rows of at most ``max_length`` tokens, first fit, in the given order.

  Each example goes into the first (oldest) row with room for it, and at most
  ``max_segments`` examples (0 = no limit) share a row. ``O(n log n)``: a segment tree over
  the rows' free space finds the first row that fits.

  Args:
    lengths: tokens of each example, ``1 <= length <= max_length``.
    max_length: tokens per row.
    max_segments: most examples per row, 0 for no limit.
    names: how to name example ``i`` in an error (default ``example i``).

  Returns:
    The rows, each the list of its examples' indices in packing order.

  Raises:
    ValueError: an example longer than the row (or empty), naming it.
  """
  if max_length < 1:
    raise ValueError(f"max_length={max_length} must be positive")
  n = len(lengths)
  size = 1
  while size < max(n, 1):
    size *= 2
  # tree[size + r] = free tokens of row r (-1: not opened yet or full of segments);
  # inner nodes hold the max of their children. Rows open in order, so the first row
  # with room is the leftmost leaf >= length, or a new row.
  tree = [-1] * (2 * size)
  rows: list[list[int]] = []
  for i, length in enumerate(lengths):
    length = int(length)
    if not 1 <= length <= max_length:
      name = names[i] if names is not None else f"example {i}"
      raise ValueError(f"{name} has {length} tokens; packing needs 1..max_length={max_length} "
                       "(truncate or split it first)")
    if tree[1] >= length:
      node = 1
      while node < size:
        node = 2 * node if tree[2 * node] >= length else 2 * node + 1
      row = node - size
    else:
      row = len(rows)
      rows.append([])
      node = size + row
      tree[node] = max_length
    rows[row].append(i)
    free = tree[node] - length
    tree[node] = -1 if (max_segments and len(rows[row]) >= max_segments) or free == 0 else free
    node //= 2
    while node:
      tree[node] = max(tree[2 * node], tree[2 * node + 1])
      node //= 2
  return rows


class PackedSource(Sequence):
  """Rows of first-fit packed examples: the packing transform, as a random-access source.

  Args:
    examples: random-access examples; ``token_keys[0]`` holds each example's token ids.
    max_length: tokens per row.
    token_keys: per-token keys, concatenated along the row (e.g. ``('tokens',)``, or
      ``('tokens', 'targets')`` for a causal LM); all of one example's have one length.
    segment_keys: per-example scalars stacked to ``[max_segments]`` (e.g. ``('label',)``);
      a row with any adds ``<key>_weight`` float32 ``[max_segments]`` for the first one
      (1 for a real example), named ``label_weight`` for ``label``.
    sum_keys: per-example counts summed over the row (e.g. ``('num_bytes',)``).
    max_segments: most examples per row (0 = no limit; needed > 0 with ``segment_keys``).
    name: shown in ``repr`` (Grain compares it when restoring an iterator) and errors.
    shuffle: pack in a seeded order (:data:`PACK_SEED`) instead of the examples' order, so
      neighbouring examples (one file's chunks, one module's functions) spread over rows.

  Each row is ``{key: [n] for token_keys, 'segment_ids': int32 [n], 'positions': int32 [n],
  ...}`` with ``n <= max_length`` (the pipeline pads to the features' length).
  """

  def __init__(self, examples: Sequence[Mapping[str, Any]], *, max_length: int,
               token_keys: Sequence[str] = ("tokens",), segment_keys: Sequence[str] = (),
               sum_keys: Sequence[str] = (), max_segments: int = 0, name: str = "packed",
               shuffle: bool = True):
    if segment_keys and max_segments < 1:
      raise ValueError(f"{name}: packing per-example {list(segment_keys)} needs "
                       f"max_segments >= 1, got {max_segments}")
    self._examples = examples
    self._token_keys, self._segment_keys = tuple(token_keys), tuple(segment_keys)
    self._sum_keys = tuple(sum_keys)
    self._max_segments, self._name = max_segments, name
    order = (np.random.default_rng(PACK_SEED).permutation(len(examples)) if shuffle
             else np.arange(len(examples)))
    lengths = [len(examples[int(i)][self._token_keys[0]]) for i in order]
    rows = first_fit(lengths, max_length, max_segments=max_segments,
                     names=[f"{name}: example {int(i)}" for i in order])
    self._rows = [[int(order[j]) for j in row] for row in rows]

  def __len__(self) -> int:
    return len(self._rows)

  @property
  def rows(self) -> list[list[int]]:
    """The example indices of every row."""
    return self._rows

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:  # type: ignore[override]
    members = [self._examples[i] for i in self._rows[index]]
    out: dict[str, np.ndarray] = {}
    for key in self._token_keys:
      out[key] = np.concatenate([np.asarray(m[key], np.int32) for m in members])
    lengths = [len(m[self._token_keys[0]]) for m in members]
    out["segment_ids"] = np.repeat(np.arange(1, len(members) + 1, dtype=np.int32), lengths)
    out["positions"] = np.concatenate([np.arange(n, dtype=np.int32) for n in lengths])
    for j, key in enumerate(self._segment_keys):
      values = [m[key] for m in members]
      slots = np.zeros(self._max_segments, np.asarray(values[0]).dtype)
      slots[:len(values)] = values
      out[key] = slots
      if j == 0:
        weight = np.zeros(self._max_segments, np.float32)
        weight[:len(values)] = 1.0
        out[f"{key}_weight"] = weight
    for key in self._sum_keys:
      out[key] = np.asarray(sum(int(m[key]) for m in members), np.int32)
    return out

  def __repr__(self) -> str:
    return f"PackedSource({self._name}, rows={len(self._rows)})"
