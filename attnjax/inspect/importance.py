"""Head importance: mask one head at a time and measure how much a loss changes.

A head is masked by zeroing its slice of the attention layer's output projection in a copy
of the parameters (``out/kernel[h]``, shape ``[head_dim, hidden]``): the layer's output is
``sum_h o_h W_out[h] + b``, so this removes exactly head ``h``'s contribution and leaves
the model code, the other heads and the output bias untouched (Michel et al., "Are Sixteen
Heads Really Better than One?", 2019, mask heads the same way with a gate on ``o_h``).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

_ATTENTION_KEYS = frozenset({"query", "key", "value", "out"})


def attention_layer_paths(params: Mapping[str, Any]) -> list[tuple[str, ...]]:
  """Paths of the attention layers in a parameter tree, in layer order.

  An attention layer is a sub-dict with ``query``, ``key``, ``value`` and ``out`` entries
  (how ``MultiHeadAttention`` names its projections). Paths are sorted with numbers
  compared as numbers, so ``layer_10`` comes after ``layer_9``.
  """
  found: list[tuple[str, ...]] = []

  def walk(tree: Any, path: tuple[str, ...]) -> None:
    if not isinstance(tree, Mapping):
      return
    if _ATTENTION_KEYS <= set(tree):
      found.append(path)
      return
    for name, sub in tree.items():
      walk(sub, path + (name,))

  walk(params, ())
  return sorted(found, key=lambda p: [_natural(part) for part in p])


def _natural(part: str) -> tuple:
  pieces = part.rsplit("_", 1)
  if len(pieces) == 2 and pieces[1].isdigit():
    return (pieces[0], int(pieces[1]))
  return (part, -1)


def num_heads_of(params: Mapping[str, Any], path: tuple[str, ...]) -> int:
  """Number of query heads of the attention layer at ``path`` (from ``out/kernel``)."""
  kernel = _get(params, path)["out"]["kernel"]
  if kernel.ndim not in (3, 4):
    raise ValueError(f"{'/'.join(path)}/out/kernel has shape {kernel.shape}; expected "
                     "[heads, head_dim, hidden] (or with a leading scanned-layer axis)")
  return kernel.shape[-3]


def mask_head(params: Mapping[str, Any], path: tuple[str, ...], head: int,
              layer_index: int | None = None) -> dict:
  """A copy of ``params`` in which head ``head`` of the attention layer at ``path`` is off.

  Args:
    params: the ``'params'`` collection.
    path: an attention layer from :func:`attention_layer_paths`.
    head: query head index.
    layer_index: for parameters stacked by ``nn.scan`` (``out/kernel`` of shape
      ``[layers, heads, head_dim, hidden]``), which layer of the stack.

  Returns:
    A new parameter tree (other leaves shared, not copied).
  """
  layer = _get(params, path)
  kernel = layer["out"]["kernel"]
  if kernel.ndim == 4:
    if layer_index is None:
      raise ValueError(f"{'/'.join(path)} holds stacked (scanned) layers; pass layer_index")
    new_kernel = jnp.asarray(kernel).at[layer_index, head].set(0.0)
  else:
    new_kernel = jnp.asarray(kernel).at[head].set(0.0)
  new_out = dict(layer["out"], kernel=new_kernel)
  return _set(params, path, dict(layer, out=new_out))


def head_importance(loss_fn: Callable[[Any], jax.Array], params: Mapping[str, Any]
                    ) -> tuple[np.ndarray, float, list[str]]:
  """Change in ``loss_fn`` when each head is masked alone.

  ``loss_fn`` is compiled once (every masked copy has the same structure), then called once
  per head.

  Args:
    loss_fn: ``params -> scalar`` (e.g. the mean eval loss on a few batches, or a distance
      between masked and unmasked outputs).
    params: the ``'params'`` collection.

  Returns:
    ``(importance [layers, heads], base_loss, layer_names)`` with ``importance[l, h] =
    loss(params with head (l, h) masked) - loss(params)``; positive means the head helps.
  """
  paths = attention_layer_paths(params)
  if not paths:
    raise ValueError("no attention layer (a dict with query/key/value/out) in the parameters")
  compiled = jax.jit(loss_fn)
  base = float(compiled(params))
  rows, names = [], []
  for path in paths:
    kernel = _get(params, path)["out"]["kernel"]
    stacked = kernel.shape[0] if kernel.ndim == 4 else None
    for layer_index in range(stacked or 1):
      heads = num_heads_of(params, path)
      rows.append([
          float(compiled(mask_head(params, path, h, layer_index if stacked else None))) - base
          for h in range(heads)])
      names.append("/".join(path) + (f"[{layer_index}]" if stacked else ""))
  return np.asarray(rows), base, names


def _get(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
  for name in path:
    tree = tree[name]
  return tree


def _set(tree: Mapping[str, Any], path: tuple[str, ...], value: Any) -> dict:
  if not path:
    return value
  out = dict(tree)
  out[path[0]] = _set(tree[path[0]], path[1:], value)
  return out
