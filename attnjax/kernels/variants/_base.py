"""Shared plumbing of the attention variants: learnable parameters, option refusal, layout.

Learnable parameters (the design)
---------------------------------
A kernel with learnable parameters stays a pure function: it takes them as the keyword
argument ``params`` (a mapping name -> array) and declares them through an attribute
``kernel.params_spec(*, num_heads, num_kv_heads, head_dim, q_len, kv_len, **options)``
returning ``{name: ParamSpec(shape, init)}`` (empty when the options need none, e.g.
cosine attention with a fixed temperature). Whoever owns the state creates them:

* ``attnjax.layers.MultiHeadAttention`` calls ``self.param`` for each (in a child scope
  ``kernel_params``, so they are easy to find, count and exclude) and passes ``params=``;
* plain JAX users call :func:`init_params` once and keep the result in their own pytree.

Lengths: parameters that depend on a sequence length (Linformer's projections, the
Synthesizer's matrices) are created for the length seen at initialisation; shorter
sequences use the leading rows, longer ones raise.

FLOPs (for MFU)
---------------
A kernel whose cost is not that of dense attention declares it through an attribute
``kernel.attention_flops(*, q_len, kv_len, num_heads, num_kv_heads, head_dim, batch_size,
**options) -> float`` (attached with :func:`declare_flops`): the matmul FLOPs (2 per
multiply-add) of one forward call on one sequence, counting what the kernel executes
(padding, all hashing rounds, the blocks a blockwise loop visits). Callers go through
:func:`attention_flops`, which fills in the kernel's own keyword defaults (so a declaration
never repeats a default) and gives :func:`dense_attention_flops` for kernels that declare
nothing: the exact-softmax family, whose cost is quadratic.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import sys
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from attnjax.kernels import _common

Initializer = Callable[[jax.Array, tuple[int, ...], Any], jax.Array]


@dataclasses.dataclass(frozen=True)
class ParamSpec:
  """Shape and initialiser of one learnable kernel parameter (float32).

  Attributes:
    shape: the parameter's shape.
    init: ``init(rng, shape, dtype) -> array`` (a ``jax.nn.initializers`` function).
    doc: what it is, for READMEs and error messages.
  """

  shape: tuple[int, ...]
  init: Initializer
  doc: str = ""


def declare_params(spec_fn: Callable[..., dict[str, ParamSpec]]) -> Callable[[Callable], Callable]:
  """Decorator attaching ``spec_fn`` as ``kernel.params_spec`` (see the module docstring)."""

  def attach(kernel: Callable) -> Callable:
    kernel.params_spec = spec_fn
    return kernel

  return attach


def params_spec(kernel: Callable, *, num_heads: int, num_kv_heads: int, head_dim: int,
                q_len: int, kv_len: int, **options: Any) -> dict[str, ParamSpec]:
  """The parameters ``kernel`` needs for these shapes and options (``{}`` for most kernels)."""
  spec = getattr(kernel, "params_spec", None)
  if spec is None:
    return {}
  return spec(num_heads=num_heads, num_kv_heads=num_kv_heads, head_dim=head_dim, q_len=q_len,
              kv_len=kv_len, **options)


def init_params(kernel: Callable, rng: jax.Array, *, num_heads: int, num_kv_heads: int,
                head_dim: int, q_len: int, kv_len: int, **options: Any) -> dict[str, jax.Array]:
  """Initialises ``kernel``'s parameters (for use without Flax); ``{}`` when it has none."""
  spec = params_spec(kernel, num_heads=num_heads, num_kv_heads=num_kv_heads, head_dim=head_dim,
                     q_len=q_len, kv_len=kv_len, **options)
  keys = jax.random.split(rng, max(1, len(spec)))
  return {name: s.init(k, s.shape, jnp.float32) for k, (name, s) in zip(keys, sorted(spec.items()))}


def check_params(fn: str, params: Mapping[str, jax.Array] | None,
                 spec: dict[str, ParamSpec]) -> dict[str, jax.Array]:
  """Validates ``params`` against ``spec`` names and ranks (lengths may be shorter)."""
  if not spec:
    if params:
      raise ValueError(f"{fn}: params were given ({sorted(params)}) but this configuration "
                       "has no learnable parameters")
    return {}
  if params is None:
    module = current_flax_module()
    if module is None:
      raise ValueError(f"{fn}: params is required: this kernel has learnable parameters "
                       f"{sorted(spec)}; create them with attnjax.kernels.init_params, use "
                       "attnjax.layers.MultiHeadAttention, or call the kernel inside a flax "
                       "module (e.g. as its attention_fn)")
    params = flax_params(module, spec)
  missing = sorted(set(spec) - set(params))
  extra = sorted(set(params) - set(spec))
  if missing or extra:
    raise ValueError(f"{fn}: params must have exactly {sorted(spec)}; missing {missing}, "
                     f"unexpected {extra}")
  out = {}
  for name, s in spec.items():
    x = jnp.asarray(params[name])
    if x.ndim != len(s.shape):
      raise ValueError(f"{fn}: params[{name!r}] must have shape {s.shape}, got {x.shape}")
    out[name] = x
  return out


FLAX_PARAM_PREFIX = "attention_"


def current_flax_module() -> Any:
  """The flax module whose method is running (e.g. the one calling its ``attention_fn``).

  ``None`` outside flax. Flax is never imported here: if no flax module has been imported,
  none can be running. Reads flax's module stack (``flax.linen.module._context``), which
  has no public accessor; should it move, this returns ``None`` and kernels ask for
  ``params`` as before.
  """
  flax_module = sys.modules.get("flax.linen.module")
  stack = getattr(getattr(flax_module, "_context", None), "module_stack", None)
  return stack[-1] if stack else None


def flax_params(module: Any, spec: dict[str, ParamSpec]) -> dict[str, jax.Array]:
  """Creates (at init) or reads (at apply) ``spec``'s parameters in a flax ``module``.

  They are named ``attention_<name>`` in the module's ``params``; float32, as
  :func:`init_params`. Length-sized parameters created for a longer sequence are read as
  they are (the kernel slices them), which ``module.param``'s shape check would refuse.
  """
  out = {}
  for name, s in sorted(spec.items()):
    full = FLAX_PARAM_PREFIX + name
    if module.has_variable("params", full):
      out[name] = module.get_variable("params", full)
    else:
      out[name] = module.param(full, s.init, s.shape, jnp.float32)
  return out


def length_slice(fn: str, x: jax.Array, axis: int, length: int, what: str) -> jax.Array:
  """Leading ``length`` entries of a length-sized parameter; raises if it is too short."""
  if x.shape[axis] < length:
    raise ValueError(f"{fn}: {what} is {length} but the parameters were created for at most "
                     f"{x.shape[axis]} (shape {x.shape}); initialise with the longest length")
  return jax.lax.slice_in_dim(x, 0, length, axis=axis)


def dense_attention_flops(q_len: int, kv_len: int, num_heads: int, head_dim: int) -> float:
  """Matmul FLOPs of dense attention on one sequence: ``q k^T`` and ``p v`` for every pair."""
  return 2.0 * 2 * q_len * kv_len * num_heads * head_dim


def declare_flops(flops_fn: Callable[..., float]) -> Callable[[Callable], Callable]:
  """Decorator attaching ``flops_fn`` as ``kernel.attention_flops`` (see the module docstring).

  ``flops_fn`` receives every keyword default of the kernel merged with the caller's
  options, so it can require them as keyword arguments without repeating their values.
  """

  def attach(kernel: Callable) -> Callable:
    kernel.attention_flops = flops_fn
    return kernel

  return attach


def keyword_defaults(kernel: Callable) -> dict[str, Any]:
  """The keyword-only arguments of ``kernel`` that have defaults, with those defaults."""
  return {name: prm.default for name, prm in inspect.signature(kernel).parameters.items()
          if prm.kind is inspect.Parameter.KEYWORD_ONLY and prm.default is not prm.empty}


def attention_flops(kernel: Callable, *, q_len: int, kv_len: int, num_heads: int,
                    head_dim: int, num_kv_heads: int | None = None, batch_size: int = 1,
                    **options: Any) -> float:
  """Forward matmul FLOPs of ``kernel`` on one sequence (2 per multiply-add).

  Args:
    kernel: a registered kernel.
    q_len, kv_len: sequence lengths.
    num_heads, head_dim: query heads and their width (``v_dim == head_dim``).
    num_kv_heads: key/value heads (GQA); default ``num_heads``.
    batch_size: the batch the kernel is called with. It changes no kernel's cost per
      sequence, but it decides, with the platform, whether the exact kernels under the
      structured-sparse ones run dense or blockwise (``dispatch.choose_implementation``).
    **options: the kernel's options (as passed to it); its defaults fill the rest.

  Returns:
    The declared FLOPs, or :func:`dense_attention_flops` for a kernel that declares none.
  """
  flops_fn = getattr(kernel, "attention_flops", None)
  if flops_fn is None:
    return dense_attention_flops(q_len, kv_len, num_heads, head_dim)
  merged = {**keyword_defaults(kernel), **options}
  return float(flops_fn(q_len=q_len, kv_len=kv_len, num_heads=num_heads,
                        num_kv_heads=num_kv_heads or num_heads, head_dim=head_dim,
                        batch_size=batch_size, **merged))


def without_attention_dropout(kernel: Callable) -> Callable:
  """Marks a kernel that has no attention probabilities to drop (``supports_dropout``).

  Configs read ``getattr(kernel, "supports_dropout", True)`` to leave attention dropout
  off for such kernels instead of failing at the first training step.
  """
  kernel.supports_dropout = False
  return kernel


def without_decode(kernel: Callable) -> Callable:
  """Marks a kernel that cannot decode with a cache (``supports_decode = False``).

  Such a kernel refuses ``q_offset`` (and a flax decode step) with a ``ValueError``
  naming it; read the flag through ``attnjax.kernels.supports_decode``.
  """
  kernel.supports_decode = False
  return kernel


def supports_decode(kernel: Callable) -> bool:
  """Whether ``kernel`` honours ``q_offset`` (cached decoding with a traced position).

  True for the exact-softmax family (every mask, pattern and position bias follows the
  offset); False for kernels whose output depends on the whole sequence at once.
  """
  return bool(getattr(kernel, "supports_decode", True))


def refuse_decode(fn: str, why: str) -> ValueError:
  """The error of a kernel with ``supports_decode = False`` given ``q_offset``."""
  return ValueError(f"{fn}: cannot decode (supports_decode=False), so q_offset is not "
                    f"supported: {why}")


def check_int(fn: str, name: str, value: Any, minimum: int) -> int:
  """``value`` if it is an int (not a bool) ``>= minimum``; else a ValueError naming it."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f"{fn}: {name} must be an int >= {minimum}, got {value!r}")
  return int(value)


def refuse(fn: str, option: str, why: str) -> ValueError:
  """The error for an option a kernel cannot honour; the message starts with its name."""
  return ValueError(f"{fn}: option {option} is not supported: {why}")


def normal(stddev: float) -> Initializer:
  return jax.nn.initializers.normal(stddev)


def constant(value: float) -> Initializer:
  return jax.nn.initializers.constant(value)


def identity_per_head(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32
                      ) -> jax.Array:
  """``[heads, d, d]`` identity matrices (a Luong ``W`` that starts as the dot product)."""
  del key
  return jnp.broadcast_to(jnp.eye(shape[-1], dtype=dtype), shape)


# ----------------------------------------------------------------- approximate kernels


@dataclasses.dataclass(frozen=True)
class Supports:
  """Which contract options an approximate kernel honours (the rest raise)."""

  bias: bool = False
  full_mask: bool = False  # any [.., T, S] mask; else key-padding masks only
  causal: bool = False
  dropout: bool = False


def prepare_approximate(fn: str, query: Any, key: Any, value: Any, bias: Any, mask: Any, *,
                        supports: Supports, scale: float | None, is_causal: bool,
                        dropout_rate: float, dropout_rng: Any, deterministic: bool, dtype: Any,
                        precision: Any, module: Any, q_offset: Any = None,
                        no_decode_why: str = "its output depends on the whole sequence"
                        ) -> _common.Problem:
  """Validates a call to a kernel that has no ``[T, S]`` softmax, refusing what it cannot do.

  These kernels cannot decode (``without_decode``): ``q_offset``, or a flax decode step,
  raises ``refuse_decode(fn, no_decode_why)``.

  Returns:
    The canonical problem (``_common.prepare``); its ``mask``, when kept, is a key-padding
    mask ``[B|1, K|1, G|1, 1, S]`` unless ``supports.full_mask``.
  """
  if module is not None:
    raise refuse(fn, "module", "this kernel has no attention-probability matrix to sow")
  if q_offset is not None:
    raise refuse_decode(fn, no_decode_why)
  p = _common.prepare(query, key, value, bias, mask, fn=fn, scale=scale, is_causal=is_causal,
                      dropout_rate=dropout_rate, dropout_rng=dropout_rng,
                      deterministic=deterministic, dtype=dtype, precision=precision)
  if p.decoding:
    raise refuse_decode(fn, no_decode_why)
  if p.bias is not None and not supports.bias:
    raise refuse(fn, "bias", "there are no per-(query, key) logits to add it to")
  if p.dropout_rate > 0 and not supports.dropout:
    raise refuse(fn, "dropout_rate", f"dropout_rate={p.dropout_rate} with deterministic=False: "
                 "there are no attention probabilities to drop (set the attention dropout "
                 "rate to 0)")
  if p.causal and not supports.causal:
    raise refuse(fn, "is_causal", "this approximation has no causal form here")
  if p.causal and p.q_len != p.kv_len:
    raise refuse(fn, "is_causal", f"causal needs q_seq == kv_seq, got {p.q_len} and "
                 f"{p.kv_len}")
  if p.mask is not None and not supports.full_mask and p.mask.shape[3] != 1:
    raise refuse(fn, "mask", f"only key-padding masks broadcast over queries (shape [batch, "
                 f"1|heads, 1, kv_seq]) are supported; got one that varies over queries "
                 f"(canonical shape {p.mask.shape})")
  return p


def key_mask(p: _common.Problem) -> jax.Array | None:
  """The key-padding mask as ``[B|1, K|1, G|1, S]`` bool, or None."""
  return None if p.mask is None else p.mask[:, :, :, 0, :]


def compute(p: _common.Problem, x: jax.Array) -> jax.Array:
  return x.astype(p.compute_dtype)


def default_scale(p: _common.Problem) -> float:
  return p.scale if p.scale is not None else 1.0 / math.sqrt(p.query.shape[-1])


def safe_divide(num: jax.Array, den: jax.Array) -> jax.Array:
  """``num / den`` with 0 where ``den == 0`` (fully masked rows), NaN-free gradients."""
  ok = den != 0
  return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


# -------------------------------------------------------------- wrappers of exact kernels


def exact_options(fn: str, options: Mapping[str, Any],
                  refused: Mapping[str, str] | None = None, *,
                  returns_residual: bool = False) -> dict[str, Any]:
  """Checks options forwarded to ``dot_product_attention``: known names, none refused.

  ``return_residual`` is refused unless the kernel returns ``dot_product_attention``'s
  result as it is (``returns_residual``): the others transform the output.
  """
  defaults = {} if returns_residual else {
      "return_residual": "this kernel returns only its output (no log-sum-exp)"}
  refused = {**defaults, **(refused or {})}
  # Imported here: dot_product imports nothing from variants, but keep _base importable alone.
  from attnjax.kernels import dot_product  # pylint: disable=g-import-not-at-top
  dot_product_attention = dot_product.dot_product_attention
  known = set(inspect.signature(dot_product_attention).parameters) - {
      "query", "key", "value", "bias", "mask"}
  for name in options:
    if name in refused:
      raise refuse(fn, name, refused[name])
    if name not in known:
      raise ValueError(f"{fn}: unknown option {name!r}; this kernel forwards the options of "
                       f"dot_product_attention: {sorted(known - set(refused))}")
  return dict(options)
