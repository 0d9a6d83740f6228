"""Multi-head attention: projections around an attention kernel chosen by name."""

from __future__ import annotations

import inspect
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnjax import kernels

# Kernels whose probabilities ``kernels.attention_weights`` computes exactly; for these the
# layer can hand its attention map to interpretability tools through the 'intermediates'
# collection (see ``attnjax.inspect``).
EXACT_SOFTMAX_KERNELS = frozenset({"dot_product", "chunked"})


class KernelParams(nn.Module):
  """Creates the learnable parameters a kernel declares (``kernel.params_spec``).

  Attributes:
    spec: name -> ``kernels.ParamSpec(shape, init)``.
  """

  spec: Mapping[str, Any]

  @nn.compact
  def __call__(self) -> dict[str, jax.Array]:
    out = {}
    for name, s in sorted(self.spec.items()):
      if self.has_variable("params", name):
        # Length-sized parameters (Linformer, Synthesizer) were created for the longest
        # sequence; a shorter one at apply time uses their leading rows (the kernel
        # slices), which self.param's shape check would refuse.
        out[name] = self.get_variable("params", name)
      else:
        out[name] = self.param(name, s.init, s.shape, jnp.float32)
    return out


class MultiHeadAttention(nn.Module):
  """Self- or cross-attention with the kernel injected by name.

  Projects inputs to queries ``[batch, q_len, heads, head_dim]`` and keys/values
  ``[batch, kv_len, kv_heads, head_dim]``, calls ``attnjax.kernels.get_kernel(kernel)``,
  and projects the ``[batch, q_len, heads, head_dim]`` result back to ``hidden_size``.

  When the 'intermediates' collection is mutable (``model.apply(..., mutable=
  ['intermediates'])``) and the kernel is an exact softmax kernel, the attention
  probabilities ``[batch, heads, q_len, kv_len]`` are sown as ``attention_weights``.

  A kernel that declares learnable parameters (``kernels.params_spec``) gets them from a
  child ``kernel_params`` (:class:`KernelParams`), created for the sequence lengths seen
  at initialisation, through its ``params`` argument.

  Attributes:
    num_heads: query heads.
    head_dim: width of each head.
    num_kv_heads: key/value heads (grouped-query attention); ``None`` means ``num_heads``.
    kernel: registered kernel name.
    kernel_options: keyword options forwarded to the kernel.
    dropout_rate: dropout on attention probabilities, applied by the kernel.
    dtype: computation dtype.
    rotary: rotate queries and keys by their positions (RoPE, ``kernels.apply_rotary``)
      before the kernel, so scores depend on relative positions.
  """

  num_heads: int
  head_dim: int
  num_kv_heads: int | None = None
  kernel: str = "dot_product"
  kernel_options: Mapping[str, Any] | None = None
  dropout_rate: float = 0.0
  dtype: Any = None
  rotary: bool = False

  @nn.compact
  def __call__(
      self,
      inputs_q: jax.Array,
      inputs_kv: jax.Array | None = None,
      *,
      mask: jax.Array | None = None,
      bias: jax.Array | None = None,
      deterministic: bool = True,
  ) -> jax.Array:
    """Attends from ``inputs_q`` [batch, q_len, D] to ``inputs_kv`` (default: itself).

    Args:
      inputs_q: ``[batch, q_len, D]``.
      inputs_kv: ``[batch, kv_len, D]``; ``None`` for self-attention.
      mask: boolean, True = attend, broadcastable to ``[batch, heads, q_len, kv_len]``.
      bias: additive logits bias broadcastable to ``[batch, heads, q_len, kv_len]``.
      deterministic: disables attention dropout when True.

    Returns:
      ``[batch, q_len, D]``.
    """
    kernel_fn = kernels.get_kernel(self.kernel)
    inputs_kv = inputs_q if inputs_kv is None else inputs_kv
    features = inputs_q.shape[-1]
    kv_heads = self.num_kv_heads or self.num_heads

    def project(x, heads, name):
      return nn.DenseGeneral((heads, self.head_dim), dtype=self.dtype, name=name)(x)

    query = project(inputs_q, self.num_heads, "query")
    key = project(inputs_kv, kv_heads, "key")
    value = project(inputs_kv, kv_heads, "value")
    if self.rotary:
      query, key = kernels.apply_rotary(query), kernels.apply_rotary(key)

    use_dropout = not deterministic and self.dropout_rate > 0.0
    options = dict(self.kernel_options or {})
    extra = {}
    # Kernels with learnable parameters (additive, Linformer, ...) declare them; they are
    # created here, in their own scope, and passed in explicitly (the kernel stays pure).
    spec = kernels.params_spec(kernel_fn, num_heads=self.num_heads, num_kv_heads=kv_heads,
                               head_dim=self.head_dim, q_len=inputs_q.shape[-2],
                               kv_len=inputs_kv.shape[-2], **options)
    if spec:
      extra["params"] = KernelParams(spec, name="kernel_params")()
    wants_rng = getattr(kernel_fn, "wants_rng", None)
    if wants_rng is not None and wants_rng(**options) and not deterministic:
      extra["feature_rng"] = self.make_rng("dropout")  # e.g. Performer's feature redraw
    out = kernel_fn(
        query,
        key,
        value,
        bias=bias,
        mask=mask,
        dropout_rate=self.dropout_rate,
        dropout_rng=self.make_rng("dropout") if use_dropout else None,
        deterministic=not use_dropout,
        **extra,
        **options,
    )
    if self.kernel in EXACT_SOFTMAX_KERNELS and self.is_mutable_collection("intermediates"):
      accepted = inspect.signature(kernels.attention_weights).parameters
      options = {k: v for k, v in (self.kernel_options or {}).items() if k in accepted}
      self.sow("intermediates", "attention_weights",
               kernels.attention_weights(query, key, bias=bias, mask=mask, **options))
    return nn.DenseGeneral(features, axis=(-2, -1), dtype=self.dtype, name="out")(out)
