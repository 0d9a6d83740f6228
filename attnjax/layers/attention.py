"""Multi-head attention: projections around an attention kernel chosen by name."""

from __future__ import annotations

import inspect
from typing import Any, Mapping

import flax.linen as nn
import jax

from attnjax import kernels

# Kernels whose probabilities ``kernels.attention_weights`` computes exactly; for these the
# layer can hand its attention map to interpretability tools through the 'intermediates'
# collection (see ``attnjax.inspect``).
EXACT_SOFTMAX_KERNELS = frozenset({"dot_product", "chunked"})


class MultiHeadAttention(nn.Module):
  """Self- or cross-attention with the kernel injected by name.

  Projects inputs to queries ``[batch, q_len, heads, head_dim]`` and keys/values
  ``[batch, kv_len, kv_heads, head_dim]``, calls ``attnjax.kernels.get_kernel(kernel)``,
  and projects the ``[batch, q_len, heads, head_dim]`` result back to ``hidden_size``.

  When the 'intermediates' collection is mutable (``model.apply(..., mutable=
  ['intermediates'])``) and the kernel is an exact softmax kernel, the attention
  probabilities ``[batch, heads, q_len, kv_len]`` are sown as ``attention_weights``.

  Attributes:
    num_heads: query heads.
    head_dim: width of each head.
    num_kv_heads: key/value heads (grouped-query attention); ``None`` means ``num_heads``.
    kernel: registered kernel name.
    kernel_options: keyword options forwarded to the kernel.
    dropout_rate: dropout on attention probabilities, applied by the kernel.
    dtype: computation dtype.
  """

  num_heads: int
  head_dim: int
  num_kv_heads: int | None = None
  kernel: str = "dot_product"
  kernel_options: Mapping[str, Any] | None = None
  dropout_rate: float = 0.0
  dtype: Any = None

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

    use_dropout = not deterministic and self.dropout_rate > 0.0
    out = kernel_fn(
        query,
        key,
        value,
        bias=bias,
        mask=mask,
        dropout_rate=self.dropout_rate,
        dropout_rng=self.make_rng("dropout") if use_dropout else None,
        deterministic=not use_dropout,
        **dict(self.kernel_options or {}),
    )
    if self.kernel in EXACT_SOFTMAX_KERNELS and self.is_mutable_collection("intermediates"):
      accepted = inspect.signature(kernels.attention_weights).parameters
      options = {k: v for k, v in (self.kernel_options or {}).items() if k in accepted}
      self.sow("intermediates", "attention_weights",
               kernels.attention_weights(query, key, bias=bias, mask=mask, **options))
    return nn.DenseGeneral(features, axis=(-2, -1), dtype=self.dtype, name="out")(out)
