"""Attention probabilities of every layer and head, from any attnjax model, unchanged.

Two routes, chosen per attention layer:

* **Sown** (the exact softmax kernels of ``attnjax.layers.attention.EXACT_SOFTMAX_KERNELS``):
  ``MultiHeadAttention`` sows ``kernels.attention_weights(q, k, ...)`` into the
  'intermediates' collection when it is mutable, so ``model.apply(...,
  mutable=['intermediates'])`` returns them.
* **Implied** (any other kernel, e.g. linear attention or Performer): a flax method
  interceptor records each attention layer's queries, keys, mask and bias during the same
  forward pass; afterwards the kernel is called again with the *identity* as values. A kernel
  whose output is ``A @ V`` for some matrix ``A`` that does not depend on ``V`` (every
  kernel of the form "weights from q and k, then a weighted sum of values": softmax, linear,
  Performer with fixed features, local windows) then returns ``A @ I = A``. This costs
  a ``[batch, kv_len, heads, kv_len]`` output, so it is limited to short inputs
  (``implied_max_length``), and it is checked: ``A @ V`` must reproduce the kernel's output
  on random values, otherwise the kernel is not linear in V and the call raises.

Models built with ``scan_layers=True`` keep their blocks inside ``nn.scan``, where neither
sown values nor intercepted arrays can leave the loop; they are inspected through an
unscanned clone of the same model (``scan_layers=False``, the stacked parameters split
per layer), which computes the same function.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from attnjax import kernels
from attnjax.layers.attention import MultiHeadAttention
from attnjax.layers.config import EncoderConfig

#: Longest key sequence for which the implied matrix of a non-softmax kernel is formed.
DEFAULT_IMPLIED_MAX_LENGTH = 1024


@dataclasses.dataclass
class AttentionMaps:
  """Attention probabilities of one forward pass.

  Attributes:
    weights: one float32 array ``[batch, heads, q_len, kv_len]`` per attention layer, in
      call order (layer 0 first).
    layer_names: the flax path of each attention layer, e.g. ``encoder/layer_0/attention``.
    sources: per layer, ``'sown'`` (exact probabilities sown by the layer) or ``'implied'``
      (formed by applying the kernel to identity values, see the module docstring).
    kernels: per layer, the kernel name.
    pooling: additive-attention pooling weights ``[batch, seq]`` if the model has that
      pooling, else None.
    outputs: what ``model.apply`` returned (logits, hidden states, ...).
  """

  weights: list[np.ndarray]
  layer_names: list[str]
  sources: list[str]
  kernels: list[str]
  pooling: np.ndarray | None = None
  outputs: Any = None

  @property
  def num_layers(self) -> int:
    return len(self.weights)

  def stacked(self) -> np.ndarray:
    """All layers as one array ``[layers, batch, heads, q_len, kv_len]``.

    Raises:
      ValueError: the layers' maps have different shapes (e.g. cross-attention).
    """
    shapes = {w.shape for w in self.weights}
    if len(shapes) != 1:
      raise ValueError(f"attention maps of different shapes cannot be stacked: {sorted(shapes)}")
    return np.stack(self.weights)


@dataclasses.dataclass
class _Call:
  """What the interceptor saw of one MultiHeadAttention call."""

  path: tuple[str, ...]
  kernel: str
  options: dict[str, Any]
  mask: Any
  bias: Any
  query: Any = None
  key: Any = None


def extract_attention(
    model: nn.Module,
    variables: Mapping[str, Any],
    *args: Any,
    implied_max_length: int = DEFAULT_IMPLIED_MAX_LENGTH,
    method: Callable[..., Any] | str | None = None,
    jit: bool = True,
    **kwargs: Any,
) -> AttentionMaps:
  """Runs ``model.apply(variables, *args, **kwargs)`` and returns every attention map.

  The model is not modified: exact kernels sow their probabilities, other kernels are
  probed afterwards from the recorded queries and keys (module docstring).

  Args:
    model: any flax module whose attention layers are ``attnjax.layers.MultiHeadAttention``.
    variables: ``{'params': ...}`` (and any other collections the model needs).
    *args: positional inputs of the model, e.g. ``input_ids`` ``[batch, seq]``.
    implied_max_length: longest ``kv_len`` for which a non-softmax kernel's implied matrix
      is formed.
    method: forwarded to ``model.apply``.
    jit: compile the forward pass (keyword arguments that are not arrays, such as
      ``deterministic=True``, are static); False runs it op by op.
    **kwargs: keyword inputs, e.g. ``attention_mask=...``, ``deterministic=True``.

  Returns:
    :class:`AttentionMaps` with float32 numpy arrays.

  Raises:
    ValueError: the model has no MultiHeadAttention layer; a non-softmax kernel with
      ``kv_len > implied_max_length``; or a kernel that is not linear in the values (no
      attention matrix exists for it).
  """
  model, variables = unscanned(model, variables)
  calls: list[_Call] = []
  stack: list[_Call] = []

  def interceptor(next_fun, call_args, call_kwargs, context):
    module = context.module
    if context.method_name != "__call__":
      return next_fun(*call_args, **call_kwargs)
    if isinstance(module, MultiHeadAttention):
      call = _Call(path=tuple(module.scope.path), kernel=module.kernel,
                   options=dict(module.kernel_options or {}), mask=call_kwargs.get("mask"),
                   bias=call_kwargs.get("bias"))
      calls.append(call)
      stack.append(call)
      try:
        return next_fun(*call_args, **call_kwargs)
      finally:
        stack.pop()
    out = next_fun(*call_args, **call_kwargs)
    if stack and tuple(module.scope.path[:-1]) == stack[-1].path:
      # The projections are children named 'query' and 'key' of the attention layer.
      if module.name == "query":
        stack[-1].query = out
      elif module.name == "key":
        stack[-1].key = out
    return out

  # Arrays go through jit; flags such as deterministic=True stay Python values (static).
  array_kwargs = {k: v for k, v in kwargs.items() if _is_array(v)}
  static_kwargs = {k: v for k, v in kwargs.items() if not _is_array(v)}
  if method is not None:
    static_kwargs["method"] = method

  def forward(variables, args, array_kwargs):
    calls.clear()
    with nn.intercept_methods(interceptor):
      outputs, state = model.apply(variables, *args, mutable=["intermediates"],
                                   **array_kwargs, **static_kwargs)
    # Recorded arrays leave the trace as outputs; the static facts stay in `calls`.
    return outputs, state, [(c.query, c.key, c.mask, c.bias) for c in calls]

  if jit:
    # One compiled forward pass: several times faster than op-by-op for a one-off call.
    forward = jax.jit(forward)
  outputs, state, recorded = forward(dict(variables), args, array_kwargs)
  for call, (query, key, mask, bias) in zip(calls, recorded):
    call.query, call.key, call.mask, call.bias = query, key, mask, bias
  if not calls:
    raise ValueError(f"{type(model).__name__} has no attnjax MultiHeadAttention layer; "
                     "nothing to extract")
  intermediates = state.get("intermediates", {})
  seen: dict[tuple[str, ...], int] = {}
  weights, sources = [], []
  for call in calls:
    index = seen.get(call.path, 0)
    seen[call.path] = index + 1
    sown = _lookup(intermediates, call.path + ("attention_weights",))
    if sown is not None and index < len(sown):
      weights.append(np.asarray(sown[index], np.float32))
      sources.append("sown")
      continue
    if call.query is None or call.key is None:
      raise ValueError(f"{'/'.join(call.path)}: could not record the queries and keys of "
                       f"kernel {call.kernel!r}")
    weights.append(implied_attention_matrix(
        kernels.get_kernel(call.kernel), call.query, call.key, bias=call.bias, mask=call.mask,
        options=call.options, max_length=implied_max_length, kernel_name=call.kernel))
    sources.append("implied")
  pooling = _find(intermediates, "pooling_weights")
  return AttentionMaps(weights=weights, layer_names=["/".join(c.path) for c in calls],
                       sources=sources, kernels=[c.kernel for c in calls],
                       pooling=None if pooling is None else np.asarray(pooling[0], np.float32),
                       outputs=outputs)


def implied_attention_matrix(
    kernel_fn: Callable[..., jax.Array],
    query: jax.Array,
    key: jax.Array,
    *,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    options: Mapping[str, Any] | None = None,
    max_length: int = DEFAULT_IMPLIED_MAX_LENGTH,
    kernel_name: str = "kernel",
    check_seed: int = 0,
) -> np.ndarray:
  """The matrix ``A`` with ``kernel_fn(q, k, V) = A @ V``, found by taking ``V = I``.

  Args:
    kernel_fn: an attention kernel following the kernel contract.
    query: ``[batch..., q_len, heads, head_dim]``.
    key: ``[batch..., kv_len, kv_heads, head_dim]``.
    bias: as for the kernel.
    mask: as for the kernel.
    options: keyword options of the kernel (the layer's ``kernel_options``).
    max_length: refuse ``kv_len`` above this (the probe costs ``kv_len`` value columns).
    kernel_name: for error messages.
    check_seed: seed of the random values used to check linearity.

  Returns:
    float32 ``[batch..., heads, q_len, kv_len]``.

  Raises:
    ValueError: ``kv_len > max_length``, or ``kernel_fn`` is not linear in the values (its
      output on random values differs from ``A @ V``), so it has no attention matrix.
  """
  options = dict(options or {})
  kv_len, kv_heads = key.shape[-3], key.shape[-2]
  heads = query.shape[-2]
  if kv_len > max_length:
    raise ValueError(
        f"kernel {kernel_name!r} has no explicit attention matrix; the implied one is formed "
        f"only for inputs of at most {max_length} keys (this one has {kv_len}). Use a "
        "shorter input or raise implied_max_length.")
  query = jnp.asarray(query, jnp.float32)
  key = jnp.asarray(key, jnp.float32)
  batch = key.shape[:-3]
  eye = jnp.broadcast_to(jnp.eye(kv_len, dtype=jnp.float32)[:, None, :],
                         batch + (kv_len, kv_heads, kv_len))
  out = kernel_fn(query, key, eye, bias=bias, mask=mask, **options)  # [..., q, heads, kv]
  matrix = jnp.swapaxes(out, -2, -3).astype(jnp.float32)  # [..., heads, q, kv]

  # A @ V must reproduce the kernel on other values; otherwise "A" is not an attention matrix.
  value = jax.random.normal(jax.random.PRNGKey(check_seed), batch + (kv_len, kv_heads, 4))
  expected = kernel_fn(query, key, value, bias=bias, mask=mask, **options).astype(jnp.float32)
  grouped = jnp.repeat(value, heads // kv_heads, axis=-2)  # query head h reads kv head h // g
  got = jnp.einsum("...hqk,...khd->...qhd", matrix, grouped)
  err = float(jnp.max(jnp.abs(got - expected)))
  scale = float(jnp.max(jnp.abs(expected))) + 1e-6
  if not err <= 1e-3 * scale + 1e-5:
    raise ValueError(
        f"kernel {kernel_name!r} is not linear in the values (A @ V differs from its output "
        f"by {err:.3g}, relative {err / scale:.3g}), so it has no attention matrix to show")
  return np.asarray(matrix)


def unscanned(model: nn.Module, variables: Mapping[str, Any]
              ) -> tuple[nn.Module, Mapping[str, Any]]:
  """The same model without ``nn.scan`` over its blocks (identity if it has none).

  Finds the module's ``EncoderConfig`` field; with ``scan_layers=True`` returns a clone with
  ``scan_layers=False`` and the parameters stacked under ``layers/block`` split into
  ``layer_0 ... layer_{n-1}``, which is how the unscanned Encoder names them.
  """
  for field in dataclasses.fields(model):
    value = getattr(model, field.name, None)
    if isinstance(value, EncoderConfig) and value.scan_layers:
      clone = model.clone(**{field.name: dataclasses.replace(value, scan_layers=False)})
      unstacked = {name: _unstack_layers(tree, value.num_layers) if name == "params" else tree
                   for name, tree in variables.items()}
      return clone, unstacked
  return model, variables


def _unstack_layers(tree: Any, num_layers: int) -> Any:
  if not isinstance(tree, Mapping):
    return tree
  out = {}
  for name, sub in tree.items():
    if name == "layers" and isinstance(sub, Mapping) and set(sub) == {"block"}:
      for i in range(num_layers):
        out[f"layer_{i}"] = jax.tree_util.tree_map(lambda x, i=i: x[i], sub["block"])
    else:
      out[name] = _unstack_layers(sub, num_layers)
  return out


def _is_array(x: Any) -> bool:
  return isinstance(x, (jax.Array, np.ndarray)) or hasattr(x, "__jax_array__")


def _lookup(tree: Any, path: tuple[str, ...]) -> Any:
  for name in path:
    if not isinstance(tree, Mapping) or name not in tree:
      return None
    tree = tree[name]
  return tree


def _find(tree: Any, name: str) -> Any:
  """First value stored under ``name`` anywhere in a nested mapping."""
  if not isinstance(tree, Mapping):
    return None
  if name in tree:
    return tree[name]
  for sub in tree.values():
    found = _find(sub, name)
    if found is not None:
      return found
  return None
