"""Analyses of attention maps: rollout, flow, entropy and mean attention distance.

Numpy only (scipy for max-flow when installed). Rollout and flow follow Abnar and Zuidema,
"Quantifying Attention Flow in Transformers" (ACL 2020): heads are averaged, the residual
connection is modelled as ``0.5 * A + 0.5 * I`` (rows renormalised), and

* rollout multiplies these matrices from the first layer to the last, so row ``i`` is how
  much the last layer's token ``i`` is made of each input token, following every path;
* flow treats the layers as a graph whose edge ``(l+1, i) -> (l, j)`` has capacity
  ``A'_l[i, j]`` and takes, for each output token ``i`` and input token ``j``, the maximum
  flow from ``(L, i)`` to ``(0, j)``; each row is then normalised to sum to one (their
  code does the same). Flow is bounded by the narrowest layer on a path, where rollout
  multiplies, so it spreads attention more evenly.
"""

from __future__ import annotations

import numpy as np


def with_residual(weights: np.ndarray, *, head_axis: int | None = -3) -> np.ndarray:
  """Head-averaged attention with the residual path: ``0.5 * mean_h(A) + 0.5 * I``, rows sum to 1.

  Args:
    weights: ``[..., heads, q, k]`` (or ``[..., q, k]`` with ``head_axis=None``), ``q == k``.
    head_axis: axis of heads to average; None if already averaged.

  Returns:
    ``[..., q, k]``.
  """
  a = np.asarray(weights, np.float64)
  if head_axis is not None:
    a = a.mean(axis=head_axis)
  if a.shape[-1] != a.shape[-2]:
    raise ValueError(f"rollout and flow need self-attention maps (q == k), got {a.shape}")
  a = 0.5 * a + 0.5 * np.eye(a.shape[-1])
  return a / a.sum(axis=-1, keepdims=True)


def attention_rollout(weights: np.ndarray, *, residual: bool = True,
                      head_axis: int | None = -3) -> np.ndarray:
  """Attention rollout: the product of per-layer (residual-augmented) attention matrices.

  Args:
    weights: ``[layers, ..., heads, seq, seq]`` (e.g. ``AttentionMaps.stacked()``, with a
      batch axis after layers), or ``[layers, ..., seq, seq]`` with ``head_axis=None``.
    residual: add the identity for the residual path (Abnar and Zuidema); without it the
      rollout is the plain product of head-averaged maps.
    head_axis: axis of heads (negative, counted from the end); None if already averaged.

  Returns:
    ``[..., seq, seq]``: row ``i`` gives the share of each input token in the last layer's
    token ``i``; rows sum to one where the maps' rows do.
  """
  w = np.asarray(weights, np.float64)
  if residual:
    layers = with_residual(w, head_axis=head_axis)
  else:
    layers = w.mean(axis=head_axis) if head_axis is not None else w
  rollout = layers[0]
  for a in layers[1:]:
    rollout = a @ rollout  # later layers read the mixture the earlier layers made
  return rollout


def attention_flow(weights: np.ndarray, *, residual: bool = True,
                   head_axis: int | None = -3, use_scipy: bool | None = None) -> np.ndarray:
  """Attention flow (max-flow through the layered attention graph) for one example.

  Args:
    weights: ``[layers, heads, seq, seq]``, or ``[layers, seq, seq]`` with
      ``head_axis=None``.
    residual: add the identity for the residual path first (as rollout does).
    head_axis: axis of heads; None if already averaged.
    use_scipy: use ``scipy.sparse.csgraph.maximum_flow`` (integer capacities: the weights
      scaled by 1e6); default: when scipy is installed. Otherwise a small Edmonds-Karp.

  Returns:
    ``[seq, seq]``: row ``i`` is the flow from the last layer's token ``i`` to each input
    token, normalised to sum to one. Costs ``seq**2`` max-flow problems on a graph of
    ``(layers + 1) * seq`` nodes: seconds for ``seq`` of a few dozen.
  """
  w = np.asarray(weights, np.float64)
  if w.ndim != (3 if head_axis is None else 4):
    raise ValueError("attention_flow takes one example: [layers, heads, seq, seq] "
                     f"(or [layers, seq, seq] with head_axis=None), got {w.shape}")
  if residual:
    layers = with_residual(w, head_axis=head_axis)
  else:
    layers = w.mean(axis=head_axis) if head_axis is not None else w
  num_layers, seq = layers.shape[0], layers.shape[-1]
  n = (num_layers + 1) * seq
  capacity = np.zeros((n, n))
  for l in range(num_layers):
    # Node (l, j) is l * seq + j; token i of layer l+1 draws from token j of layer l.
    capacity[(l + 1) * seq:(l + 2) * seq, l * seq:(l + 1) * seq] = layers[l]
  if use_scipy is None:
    try:
      import scipy.sparse.csgraph  # pylint: disable=import-outside-toplevel,unused-import
      use_scipy = True
    except ImportError:
      use_scipy = False
  solve = _scipy_max_flow(capacity) if use_scipy else (
      lambda s, t: max_flow_value(capacity, s, t))
  top = num_layers * seq
  flow = np.zeros((seq, seq))
  for i in range(seq):
    for j in range(seq):
      flow[i, j] = solve(top + i, j)
  totals = flow.sum(axis=-1, keepdims=True)
  return np.divide(flow, totals, out=np.zeros_like(flow), where=totals > 0)


_SCIPY_SCALE = 1e6  # scipy's maximum_flow needs integer capacities


def _scipy_max_flow(capacity: np.ndarray):
  from scipy.sparse import csr_matrix  # pylint: disable=import-outside-toplevel
  from scipy.sparse.csgraph import maximum_flow  # pylint: disable=import-outside-toplevel
  graph = csr_matrix(np.rint(capacity * _SCIPY_SCALE).astype(np.int32))

  def solve(source: int, sink: int) -> float:
    return maximum_flow(graph, source, sink).flow_value / _SCIPY_SCALE

  return solve


def max_flow_value(capacity: np.ndarray, source: int, sink: int) -> float:
  """Maximum flow from ``source`` to ``sink`` (Edmonds-Karp: shortest augmenting paths).

  Args:
    capacity: ``[n, n]`` non-negative edge capacities, ``capacity[u, v]`` for ``u -> v``.
    source: source node.
    sink: sink node.

  Returns:
    The value of a maximum flow (float).
  """
  residual = np.array(capacity, np.float64)
  n = residual.shape[0]
  total = 0.0
  while True:
    parent = np.full(n, -1)
    parent[source] = source
    queue = [source]
    for u in queue:  # BFS; the list grows while it is walked
      if u == sink:
        break
      for v in np.nonzero(residual[u] > 1e-12)[0]:
        if parent[v] < 0:
          parent[v] = u
          queue.append(v)
    if parent[sink] < 0:
      return total
    path, v = [], sink
    while v != source:
      path.append((parent[v], v))
      v = parent[v]
    push = min(residual[u, v] for u, v in path)
    for u, v in path:
      residual[u, v] -= push
      residual[v, u] += push
    total += push


def attention_entropy(weights: np.ndarray) -> np.ndarray:
  """Mean entropy (nats) of the attention rows, per map.

  Rows that sum to zero (queries with every key masked, or padding queries removed by the
  caller) are left out of the mean.

  Args:
    weights: ``[..., q, k]`` probabilities (e.g. ``[layers, batch, heads, q, k]``).

  Returns:
    ``[...]``: ``mean_i -sum_j p_ij log p_ij`` over valid rows; ``log(k_real)`` for uniform
    attention over ``k_real`` keys, 0 for one-hot rows.
  """
  p = np.asarray(weights, np.float64)
  logp = np.log(np.where(p > 0, p, 1.0))
  row_entropy = -(p * logp).sum(axis=-1)
  valid = p.sum(axis=-1) > 0
  count = valid.sum(axis=-1)
  return np.where(count > 0, (row_entropy * valid).sum(axis=-1) / np.maximum(count, 1), 0.0)


def mean_attention_distance(weights: np.ndarray, positions: np.ndarray | None = None
                            ) -> np.ndarray:
  """Attention-weighted mean distance between a query and the keys it attends to, per map.

  ``sum_j p_ij * ||pos_i - pos_j||`` with each row renormalised to sum to one (so a
  sub-matrix, e.g. pixels without the CLS token, can be passed), averaged over valid rows.
  With 2-D positions (pixel coordinates) this is the "mean attention distance" of the
  Vision Transformer paper.

  Args:
    weights: ``[..., q, k]`` with ``q == k``, positions shared by queries and keys.
    positions: ``[k]`` (1-D positions) or ``[k, d]`` coordinates; default ``arange(k)``.

  Returns:
    ``[...]`` mean distances, in units of ``positions``.
  """
  p = np.asarray(weights, np.float64)
  k = p.shape[-1]
  if p.shape[-2] != k:
    raise ValueError(f"mean_attention_distance needs q == k, got {p.shape}")
  pos = np.arange(k, dtype=np.float64) if positions is None else np.asarray(positions, np.float64)
  if pos.ndim == 1:
    pos = pos[:, None]
  if pos.shape[0] != k:
    raise ValueError(f"{pos.shape[0]} positions for {k} tokens")
  distance = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)  # [q, k]
  totals = p.sum(axis=-1)
  valid = totals > 0
  row = (p * distance).sum(axis=-1) / np.where(valid, totals, 1.0)
  count = valid.sum(axis=-1)
  return np.where(count > 0, (row * valid).sum(axis=-1) / np.maximum(count, 1), 0.0)


def top_attended(weights_row: np.ndarray, tokens: list[str], k: int = 3,
                 exclude: set[int] | None = None) -> list[tuple[str, int, float]]:
  """The ``k`` keys with the largest weight in one attention row.

  Args:
    weights_row: ``[seq]``.
    tokens: the ``seq`` token strings.
    k: how many.
    exclude: positions to leave out (e.g. ``[CLS]`` and ``[SEP]``).

  Returns:
    ``[(token, position, weight), ...]``, largest first.
  """
  order = [int(j) for j in np.argsort(-np.asarray(weights_row), kind="stable")
           if not exclude or int(j) not in exclude]
  return [(tokens[j], j, float(weights_row[j])) for j in order[:k]]
