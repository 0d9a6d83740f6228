"""Mask and score functions (FlexAttention's semantics) for the exact kernels.

Pass ``mask_fn`` / ``score_fn`` to ``dot_product_attention``, ``chunked_attention`` or
``attention_weights`` (and the exact variants, which forward options):

* ``mask_fn(batch, head, q_idx, kv_idx) -> bool``: True where the query may attend the key;
* ``score_fn(score, batch, head, q_idx, kv_idx) -> score``: rewrites a scaled logit
  (after ``logits_soft_cap``, before ``bias``/ALiBi/T5 biases are added).

Both are written for scalars with ``jnp`` operations and evaluated on broadcast index
arrays over a block (``batch`` is the flat batch index, batch dims flattened row-major;
``head`` the query head; ``q_idx`` the query position, ``q_offset + row`` when
``q_offset`` is given; ``kv_idx`` the key position). They may close over arrays (segment
ids, bias tables, per-head slopes); a ``score_fn``'s closed-over arrays receive gradients.
They AND (mask) with every other mask of the kernel.

The chunked implementation computes the block layout (:func:`block_layout`: empty,
partial or full per ``block_q x block_kv`` block) once at trace time when ``mask_fn``
depends only on indices and concrete arrays, and at run time (one pass over the mask,
no logits) when it closes over traced arrays; it never visits empty blocks, forward or
backward, and skips ``mask_fn`` on full blocks.

The helpers below build common masks; combine them with :func:`and_masks` /
:func:`or_masks`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

MaskFn = Callable[[Any, Any, Any, Any], Any]
ScoreFn = Callable[[Any, Any, Any, Any, Any], Any]

EMPTY, PARTIAL, FULL = 0, 1, 2  # block states of a layout


def causal_mask(batch: Any, head: Any, q_idx: Any, kv_idx: Any) -> Any:
  """Keys at or before the query: ``kv_idx <= q_idx``."""
  del batch, head
  return kv_idx <= q_idx


def sliding_window_mask(left: int, right: int = 0) -> MaskFn:
  """Keys within ``[q_idx - left, q_idx + right]`` (``right=0``: causal sliding window)."""
  if left < 0 or right < 0:
    raise ValueError(f"sliding_window_mask: left and right must be >= 0, got {(left, right)}")

  def mask(batch, head, q_idx, kv_idx):
    del batch, head
    return (kv_idx >= q_idx - left) & (kv_idx <= q_idx + right)

  return mask


def prefix_lm_mask(prefix_len: Any) -> MaskFn:
  """Prefix LM: every query sees the first ``prefix_len`` keys; later keys causally.

  Args:
    prefix_len: an int, or int ``[batch]`` (flat batch) for one prefix per example.
  """
  prefix = prefix_len if isinstance(prefix_len, (int, np.integer)) else jnp.asarray(prefix_len)

  def mask(batch, head, q_idx, kv_idx):
    del head
    n = prefix if isinstance(prefix, (int, np.integer)) or prefix.ndim == 0 else prefix[batch]
    return (kv_idx <= q_idx) | (kv_idx < n)

  return mask


def document_mask(segment_ids: Any, kv_segment_ids: Any = None) -> MaskFn:
  """Packed documents: a query sees only keys of its own segment.

  Args:
    segment_ids: int ``[batch..., q_seq]`` segment id of each query (and key, when
      ``kv_segment_ids`` is None).
    kv_segment_ids: int ``[batch..., kv_seq]`` for cross attention.
  """
  q_seg = jnp.asarray(segment_ids)
  if q_seg.ndim < 1 or not jnp.issubdtype(q_seg.dtype, jnp.integer):
    raise ValueError(f"document_mask: segment_ids must be an int array [batch..., seq], got "
                     f"shape {q_seg.shape} dtype {q_seg.dtype}")
  q_seg = q_seg.reshape(-1, q_seg.shape[-1])
  kv_seg = q_seg if kv_segment_ids is None else jnp.asarray(kv_segment_ids)
  kv_seg = kv_seg.reshape(-1, kv_seg.shape[-1])

  def mask(batch, head, q_idx, kv_idx):
    del head
    return q_seg[batch, q_idx] == kv_seg[batch, kv_idx]

  return mask


def _combine(name: str, op: Callable[[Any, Any], Any], mask_fns: tuple) -> MaskFn:
  if not mask_fns:
    raise ValueError(f"{name}: needs at least one mask_fn")

  def mask(batch, head, q_idx, kv_idx):
    out = mask_fns[0](batch, head, q_idx, kv_idx)
    for fn in mask_fns[1:]:
      out = op(out, fn(batch, head, q_idx, kv_idx))
    return out

  return mask


def and_masks(*mask_fns: MaskFn) -> MaskFn:
  """The intersection of masks (a key is kept when every mask keeps it)."""
  return _combine("and_masks", jnp.logical_and, mask_fns)


def or_masks(*mask_fns: MaskFn) -> MaskFn:
  """The union of masks (a key is kept when any mask keeps it)."""
  return _combine("or_masks", jnp.logical_or, mask_fns)


# ------------------------------------------------------------------ conversion


@dataclasses.dataclass(frozen=True, eq=False)
class Converted:
  """A user function traced once on scalars, its closed-over arrays hoisted.

  ``jaxpr`` is static (hashed by identity); the hoisted ``consts`` travel as explicit
  kernel inputs, so the chunked kernel's custom VJP returns their gradients instead of
  dropping them. When they are all concrete, ``static_consts`` keeps them so that the
  block layout is evaluated at trace time.
  """

  jaxpr: Any
  original: Callable
  static: bool  # every closed-over value was concrete: the layout is known at trace time
  static_consts: tuple = ()  # those concrete values, for trace-time evaluation


def convert(fn: Any, name: str, num_args: int, caller: str) -> tuple[Converted, tuple]:
  """Validates ``mask_fn`` (``num_args=4``) or ``score_fn`` (5) and converts it.

  Raises:
    ValueError: one line naming ``name``: not callable, wrong signature, an output that
      is not a boolean scalar (mask) or a float scalar (score), or untraceable.
  """
  import inspect  # pylint: disable=g-import-not-at-top
  want = "(batch, head, q_idx, kv_idx)" if num_args == 4 else (
      "(score, batch, head, q_idx, kv_idx)")
  if not callable(fn):
    raise ValueError(f"{caller}: {name} must be a function {want}, got {type(fn).__name__}")
  try:
    inspect.signature(fn).bind(*range(num_args))
  except TypeError:
    raise ValueError(f"{caller}: {name} must take {num_args} positional arguments {want}; "
                     f"its signature is {inspect.signature(fn)}") from None
  except ValueError:  # builtins without a signature: let tracing decide
    pass
  idx = jnp.int32(0)
  args = (idx,) * 4 if num_args == 4 else (jnp.float32(0),) + (idx,) * 4
  try:
    closed = jax.make_jaxpr(fn)(*args)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"{caller}: {name} could not be traced on scalar indices (write it with "
                     f"jnp operations, no Python control flow on indices): "
                     f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
  outs = closed.out_avals
  if len(outs) != 1 or outs[0].shape != ():
    shapes = [tuple(o.shape) for o in outs]
    raise ValueError(f"{caller}: {name} must return one scalar per {want}, got outputs of "
                     f"shapes {shapes} for scalar inputs (a {name} must not change the shape)")
  if num_args == 4 and outs[0].dtype != jnp.bool_:
    raise ValueError(f"{caller}: {name} must return a boolean (True = attend), got dtype "
                     f"{outs[0].dtype}")
  if num_args == 5 and not jnp.issubdtype(outs[0].dtype, jnp.floating):
    raise ValueError(f"{caller}: {name} must return a float score, got dtype {outs[0].dtype}")
  consts = tuple(closed.consts)
  static = not any(isinstance(c, jax.core.Tracer) for c in consts)
  return (Converted(closed.jaxpr, fn, static, consts if static else ()),
          tuple(jnp.asarray(c) for c in consts))


def apply(conv: Converted, consts: tuple, *args: Any) -> jax.Array:
  """Evaluates a converted function on broadcast arrays (``jnp.vectorize`` of the scalar form)."""
  from jax.extend import core as jex  # pylint: disable=g-import-not-at-top

  def scalar(*a):
    return jex.jaxpr_as_fun(jex.ClosedJaxpr(conv.jaxpr, consts))(*a)[0]

  return jnp.vectorize(scalar)(*args)
