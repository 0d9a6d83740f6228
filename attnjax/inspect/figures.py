"""Attention figures: heads per layer, layer overview, rollout/flow, one token, pixel grids.

Every function returns a matplotlib ``Figure`` (headless Agg backend) whose heatmap panels
are the axes holding an image (``[ax for ax in fig.axes if ax.images]``); colour bars are
separate axes. :func:`save_figure` writes a PNG and closes the figure.
:func:`attention_figure_for_tensorboard` renders straight to an ``[H, W, 3]`` uint8 array.
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

from attnjax.inspect import analysis

# Beyond this many tokens an axis shows every k-th label (about _LABELS_WHEN_LONG of them):
# 8-point labels overlap otherwise.
_MAX_LABELS = 40
_LABELS_WHEN_LONG = 16
_CMAP = "viridis"


def _pyplot():
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def heatmap_panels(fig: Any) -> list[Any]:
  """The axes of ``fig`` that show a heatmap (colour-bar and empty axes excluded)."""
  return [ax for ax in fig.axes if ax.images]


def save_figure(fig: Any, path: str, *, dpi: int = 110) -> str:
  """Writes ``fig`` to ``path`` as PNG (creating the folder), closes it, returns ``path``."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=dpi, format="png", bbox_inches="tight")
  _pyplot().close(fig)
  return path


def _token_ticks(ax: Any, tokens: Sequence[str], *, x: bool = True, y: bool = True,
                 fontsize: float = 8.0) -> None:
  n = len(tokens)
  step = 1 if n <= _MAX_LABELS else math.ceil(n / _LABELS_WHEN_LONG)
  ticks = list(range(0, n, step))
  labels = [tokens[i] for i in ticks]
  if x:
    ax.set_xticks(ticks)
    ax.set_xticklabels(labels, rotation=90, fontsize=fontsize)
  else:
    ax.set_xticks([])
  if y:
    ax.set_yticks(ticks)
    ax.set_yticklabels(labels, fontsize=fontsize)
  else:
    ax.set_yticks([])


def plot_layer_heads(weights: np.ndarray, tokens: Sequence[str], *, layer: int,
                     columns: int = 4, title: str | None = None) -> Any:
  """Every head of one layer as a heatmap (queries down, keys across) with token labels.

  Args:
    weights: ``[heads, q, k]`` for one example.
    tokens: ``k`` labels (also used for the ``q`` axis when ``q == k``).
    layer: layer index (0-based) for the title.
    columns: panels per row.
    title: figure title; default ``layer <layer+1>``.

  Returns:
    A figure with ``heads`` heatmap panels and one shared colour bar (scale 0 to the
    layer's largest weight, so heads are comparable).
  """
  plt = _pyplot()
  w = np.asarray(weights)
  heads = w.shape[0]
  columns = min(columns, heads)
  rows = math.ceil(heads / columns)
  size = max(2.4, min(4.0, 0.28 * len(tokens) + 0.8))
  fig, axes = plt.subplots(rows, columns, figsize=(size * columns + 1.0, size * rows + 0.4),
                           squeeze=False)
  vmax = float(w.max()) or 1.0
  image = None
  for h, ax in enumerate(axes.flat):
    if h >= heads:
      ax.axis("off")
      continue
    image = ax.imshow(w[h], cmap=_CMAP, vmin=0.0, vmax=vmax, interpolation="nearest")
    ax.set_title(f"head {h + 1}", fontsize=9)
    _token_ticks(ax, tokens, x=h // columns == rows - 1 or h + columns >= heads,
                 y=h % columns == 0)
  fig.suptitle(title or f"layer {layer + 1}: attention of each query (row) to each key",
               fontsize=11, y=0.95)
  fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="attention weight")
  return fig


def plot_layers_overview(weights: np.ndarray, tokens: Sequence[str], *,
                         columns: int = 6) -> Any:
  """Head-averaged attention of every layer, side by side, one colour scale.

  Args:
    weights: ``[layers, heads, q, k]`` for one example.
    tokens: ``k`` labels.
    columns: panels per row.

  Returns:
    A figure with ``layers`` heatmap panels and a colour bar.
  """
  plt = _pyplot()
  mean = np.asarray(weights).mean(axis=1)
  layers = mean.shape[0]
  columns = min(columns, layers)
  rows = math.ceil(layers / columns)
  size = max(2.4, min(3.6, 0.25 * len(tokens) + 0.8))
  fig, axes = plt.subplots(rows, columns, figsize=(size * columns + 1.0, size * rows + 0.5),
                           squeeze=False)
  vmax = float(mean.max()) or 1.0
  image = None
  for l, ax in enumerate(axes.flat):
    if l >= layers:
      ax.axis("off")
      continue
    image = ax.imshow(mean[l], cmap=_CMAP, vmin=0.0, vmax=vmax, interpolation="nearest")
    ax.set_title(f"layer {l + 1}", fontsize=9)
    _token_ticks(ax, tokens, y=l % columns == 0)
  fig.suptitle("attention averaged over heads (rows: queries, columns: keys)", fontsize=11)
  fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="attention weight")
  return fig


def plot_rollout(maps: Mapping[str, np.ndarray], tokens: Sequence[str]) -> Any:
  """Rollout / flow / any ``[seq, seq]`` token-to-input matrices, one panel each.

  Args:
    maps: ``{title: [seq, seq]}``, e.g. ``{'rollout': ..., 'flow': ...}``.
    tokens: ``seq`` labels.

  Returns:
    A figure with ``len(maps)`` heatmap panels, each with its colour bar.
  """
  plt = _pyplot()
  n = len(maps)
  size = max(3.0, min(4.5, 0.3 * len(tokens) + 1.0))
  fig, axes = plt.subplots(1, n, figsize=((size + 0.9) * n, size + 0.3), squeeze=False)
  for ax, (name, matrix) in zip(axes.flat, maps.items()):
    image = ax.imshow(np.asarray(matrix), cmap=_CMAP, vmin=0.0, interpolation="nearest")
    ax.set_title(name, fontsize=10)
    ax.set_xlabel("input token")
    ax.set_ylabel("last-layer token")
    _token_ticks(ax, tokens)
    fig.colorbar(image, ax=ax, shrink=0.8)
  fig.suptitle("how much of each last-layer token comes from each input token", fontsize=10)
  fig.tight_layout()
  return fig


def plot_token_attention(rows: Mapping[str, np.ndarray], tokens: Sequence[str],
                         token_index: int, *, annotate: bool | None = None) -> Any:
  """The attention of one token, one row per layer (the article's "sat" example).

  Args:
    rows: ``{label: [seq]}`` in display order, e.g. ``{'layer 1': ..., ..., 'rollout': ...}``.
    tokens: ``seq`` labels.
    token_index: position of the chosen token (its column label is bold).
    annotate: write the weights in the cells; default when ``seq <= 16``.

  Returns:
    A figure with one heatmap panel and a colour bar.
  """
  plt = _pyplot()
  labels = list(rows)
  matrix = np.stack([np.asarray(rows[k], np.float64) for k in labels])
  seq = len(tokens)
  annotate = seq <= 16 if annotate is None else annotate
  fig, ax = plt.subplots(figsize=(max(4.0, 0.62 * seq + 2.2), 0.42 * len(labels) + 1.5))
  image = ax.imshow(matrix, cmap=_CMAP, vmin=0.0, vmax=float(matrix.max()) or 1.0,
                    aspect="auto", interpolation="nearest")
  ax.set_xticks(range(seq))
  ax.set_xticklabels(tokens, rotation=45 if seq > 8 else 0, fontsize=9,
                     ha="right" if seq > 8 else "center")
  ax.get_xticklabels()[token_index].set_fontweight("bold")
  ax.set_yticks(range(len(labels)))
  ax.set_yticklabels(labels, fontsize=9)
  if annotate:
    threshold = 0.6 * float(matrix.max())
    for (r, c), value in np.ndenumerate(matrix):
      ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=7,
              color="black" if value > threshold else "white")
  ax.set_title(f"attention from {tokens[token_index]!r} (mean over heads)", fontsize=10)
  fig.colorbar(image, ax=ax, label="weight", fraction=0.04, pad=0.02)
  fig.tight_layout()
  return fig


def plot_grid_maps(image: np.ndarray, maps: Mapping[str, np.ndarray], *,
                   grid: tuple[int, int] = (8, 8)) -> Any:
  """An input image and attention maps over its pixels (digits: 8x8, row-major tokens).

  Args:
    image: ``[rows, cols]`` pixel intensities.
    maps: ``{title: [rows * cols]}`` weights over the pixel tokens.
    grid: ``(rows, cols)``.

  Returns:
    A figure with ``1 + len(maps)`` heatmap panels (the image in grey, the maps in colour,
    each map with its colour bar).
  """
  plt = _pyplot()
  n = 1 + len(maps)
  fig, axes = plt.subplots(1, n, figsize=(2.6 * n + 0.6, 2.8), squeeze=False)
  axes = axes.ravel()
  axes[0].imshow(np.asarray(image).reshape(grid), cmap="gray_r", interpolation="nearest")
  axes[0].set_title("input", fontsize=9)
  for ax, (name, values) in zip(axes[1:], maps.items()):
    im = ax.imshow(np.asarray(values).reshape(grid), cmap=_CMAP, vmin=0.0,
                   interpolation="nearest")
    ax.set_title(name, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
  for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])
  fig.tight_layout()
  return fig


def plot_head_summary(stats: Mapping[str, np.ndarray]) -> Any:
  """Per-head statistics (entropy, mean distance, importance) as ``[layers, heads]`` grids.

  Args:
    stats: ``{title: [layers, heads]}``.

  Returns:
    A figure with ``len(stats)`` heatmap panels, each with a colour bar and its values.
  """
  plt = _pyplot()
  n = len(stats)
  first = np.asarray(next(iter(stats.values())))
  layers, heads = first.shape
  fig, axes = plt.subplots(1, n, figsize=(n * (0.26 * heads + 1.6), 0.32 * layers + 1.5),
                           squeeze=False)
  for ax, (name, values) in zip(axes.flat, stats.items()):
    values = np.asarray(values, np.float64)
    image = ax.imshow(values, cmap="magma", aspect="auto", interpolation="nearest")
    ax.set_title(name, fontsize=9)
    ax.set_xticks(range(heads))
    ax.set_xticklabels([str(h + 1) for h in range(heads)], fontsize=7)
    ax.set_yticks(range(layers))
    ax.set_yticklabels([str(l + 1) for l in range(layers)], fontsize=7)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    fig.colorbar(image, ax=ax, fraction=0.05, pad=0.03)
  fig.tight_layout()
  return fig


def figure_to_array(fig: Any, *, dpi: int = 80) -> np.ndarray:
  """Renders ``fig`` to ``[height, width, 3]`` uint8 RGB and closes it."""
  fig.set_dpi(dpi)
  fig.canvas.draw()
  rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
  _pyplot().close(fig)
  return rgb


def attention_figure_for_tensorboard(
    model: Any,
    params: Any,
    inputs: np.ndarray,
    *,
    example: int = 0,
    tokens: Sequence[str] | None = None,
    pad_id: int = 0,
    grid: tuple[int, int] | None = None,
    dpi: int = 72,
    **apply_kwargs: Any,
) -> np.ndarray:
  """One example's head-averaged attention per layer plus its rollout, as an RGB image.

  For ``SummaryWriter.add_image(tag, image, step, dataformats='HWC')`` at evaluation time.
  Padding tokens (``inputs == pad_id``) are dropped; a CLS vector the model prepends
  (more attention positions than inputs) is labelled ``CLS``.

  Args:
    model: the flax model (e.g. ``SequenceClassifier``).
    params: its ``'params'`` collection, unreplicated and on one host
      (``jax.device_get(strategy.to_checkpoint_state(state).params)``).
    inputs: int ``[batch, seq]`` token ids (e.g. an eval batch's ``'inputs'``).
    example: which row of ``inputs``.
    tokens: labels for the ``seq`` inputs; default the ids.
    pad_id: id of padding.
    grid: ``(rows, cols)`` to also draw the rollout of the first token (CLS) over the input
      as an image (digits: ``(8, 8)``); needs ``rows * cols`` real inputs.
    dpi: resolution.
    **apply_kwargs: forwarded to the model (default ``deterministic=True``).

  Returns:
    ``[height, width, 3]`` uint8.
  """
  from attnjax.inspect.extract import extract_attention  # pylint: disable=import-outside-toplevel
  ids = np.asarray(inputs)[example:example + 1]
  apply_kwargs.setdefault("deterministic", True)
  maps = extract_attention(model, {"params": params}, ids, **apply_kwargs)
  w = maps.stacked()[:, 0]  # [layers, heads, seq', seq']
  real = ids[0] != pad_id
  extra = w.shape[-1] - ids.shape[1]
  keep = np.concatenate([np.ones(extra, bool), real])
  w = w[..., keep, :][..., keep]
  labels = list(tokens) if tokens is not None else [str(int(t)) for t in ids[0]]
  labels = ["CLS"] * extra + [t for t, r in zip(labels, real) if r]
  rollout = analysis.attention_rollout(w)
  plt = _pyplot()
  layers = w.shape[0]
  panels = layers + 1 + int(grid is not None)
  fig, axes = plt.subplots(1, panels, figsize=(2.6 * panels, 2.9), squeeze=False)
  axes = axes.ravel()
  mats = [w[l].mean(axis=0) for l in range(layers)] + [rollout]
  names = [f"layer {l + 1}" for l in range(layers)] + ["rollout"]
  for ax, m, name in zip(axes, mats, names):
    ax.imshow(m, cmap=_CMAP, vmin=0.0, interpolation="nearest")
    ax.set_title(name, fontsize=8)
    _token_ticks(ax, labels, fontsize=5)
  if grid is not None:
    cells = grid[0] * grid[1]
    row = rollout[0, extra:extra + cells] if extra else rollout.mean(axis=0)[:cells]
    if row.size == cells:
      axes[-1].imshow(row.reshape(grid), cmap=_CMAP, interpolation="nearest")
    axes[-1].set_title("rollout of token 0 on the grid", fontsize=8)
    axes[-1].set_xticks([])
    axes[-1].set_yticks([])
  fig.tight_layout()
  return figure_to_array(fig, dpi=dpi)
