"""Multi-head attention: projections around an attention kernel chosen by name."""

from __future__ import annotations

import inspect
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

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
  """Self- or cross-attention with the kernel injected by name, optionally causal and cached.

  Projects inputs to queries ``[batch, q_len, heads, head_dim]`` and keys/values
  ``[batch, kv_len, kv_heads, head_dim]``, calls ``attnjax.kernels.get_kernel(kernel)``,
  and projects the ``[batch, q_len, heads, head_dim]`` result back to ``hidden_size``.

  When the 'intermediates' collection is mutable (``model.apply(..., mutable=
  ['intermediates'])``) and the kernel is an exact softmax kernel, the attention
  probabilities ``[batch, heads, q_len, kv_len]`` are sown as ``attention_weights`` (in the
  module's dtype, as flax does).

  A kernel that declares learnable parameters (``kernels.params_spec``) gets them from a
  child ``kernel_params`` (:class:`KernelParams`), created for the sequence lengths seen
  at initialisation, through its ``params`` argument.

  **Autoregressive cache** (self-attention with ``decode=True``), in flax's ``cache``
  collection: ``cached_key``/``cached_value`` ``[batch, max_len, kv_heads, head_dim]``,
  ``cached_valid`` ``[batch, max_len]`` (which slots hold real tokens) and ``cache_index``
  (the next free slot). The first call with ``decode=True`` while the collection is being
  initialised (``init_cache``: an input of ``max_len`` tokens) allocates it; every later
  call writes its ``n`` new keys/values at ``cache_index`` (a prompt: prefill; one token:
  extend) and attends from the new queries, at absolute slots ``cache_index + i``, to
  every filled slot. The kernel receives the slot of the first query as ``q_offset`` (a
  traced value), so causal, windowed and relative-position masks and biases stay exact;
  a kernel that cannot decode (``kernels.supports_decode``) is refused by name.

  Attributes:
    num_heads: query heads.
    head_dim: width of each head.
    num_kv_heads: key/value heads (grouped-query attention); ``None`` means ``num_heads``.
    kernel: registered kernel name.
    kernel_options: keyword options forwarded to the kernel.
    dropout_rate: dropout on attention probabilities, applied by the kernel.
    dtype: computation dtype.
    rotary: rotate queries and keys by their positions (RoPE, ``kernels.apply_rotary``)
      before the kernel, so scores depend on relative positions (self-attention only).
    rotary_base: RoPE wavelength base.
    is_causal: each query attends to keys at its own position and before (decoders).
    use_bias: biases in the query/key/value/output projections.
    relative_buckets: learn T5's relative position bias, a ``relative_bias``
      ``[relative_buckets, num_heads]`` table the kernel reads as ``relative_bias_table``
      (bidirectional buckets unless ``is_causal``); 0 for none (self-attention only).
    relative_max_distance: T5 bucketing's largest distinguished distance.
  """

  num_heads: int
  head_dim: int
  num_kv_heads: int | None = None
  kernel: str = "dot_product"
  kernel_options: Mapping[str, Any] | None = None
  dropout_rate: float = 0.0
  dtype: Any = None
  rotary: bool = False
  rotary_base: float = 10000.0
  is_causal: bool = False
  use_bias: bool = True
  relative_buckets: int = 0
  relative_max_distance: int = 128

  @nn.compact
  def __call__(
      self,
      inputs_q: jax.Array,
      inputs_kv: jax.Array | None = None,
      *,
      mask: jax.Array | None = None,
      bias: jax.Array | None = None,
      positions: jax.Array | None = None,
      segment_ids: jax.Array | None = None,
      kv_segment_ids: jax.Array | None = None,
      deterministic: bool = True,
      decode: bool = False,
  ) -> jax.Array:
    """Attends from ``inputs_q`` [batch, q_len, D] to ``inputs_kv`` (default: itself).

    Args:
      inputs_q: ``[batch, q_len, D]``.
      inputs_kv: ``[batch, kv_len, D]``; ``None`` for self-attention.
      mask: boolean, True = attend, broadcastable to ``[batch, heads, q_len, kv_len]``.
        With ``decode=True`` it marks which of the ``q_len`` new tokens are real keys
        (``[batch, 1, 1, q_len]``-broadcastable, e.g. left padding of a prompt); it is
        stored in the cache and applies to every later step.
      bias: additive logits bias broadcastable to ``[batch, heads, q_len, kv_len]``.
      positions: int ``[batch, q_len]`` positions of the queries (and, in
        self-attention, of the keys) for RoPE; default ``arange(q_len)``, or
        ``cache_index + arange(q_len)`` when decoding.
      segment_ids: int ``[batch, q_len]`` packed-sequence ids of the queries (and keys,
        in self-attention): attention never crosses segments.
      kv_segment_ids: int ``[batch, kv_len]`` ids of the keys in cross-attention.
      deterministic: disables attention dropout when True.
      decode: use and update the autoregressive cache (self-attention only).

    Returns:
      ``[batch, q_len, D]``.

    Raises:
      ValueError: ``decode`` with cross-attention, with segment ids, with a kernel that
        cannot decode, or with more new tokens than the cache has room for.
    """
    kernel_fn = kernels.get_kernel(self.kernel)
    self_attention = inputs_kv is None
    inputs_kv = inputs_q if inputs_kv is None else inputs_kv
    features = inputs_q.shape[-1]
    kv_heads = self.num_kv_heads or self.num_heads

    def project(x, heads, name):
      return nn.DenseGeneral((heads, self.head_dim), dtype=self.dtype, use_bias=self.use_bias,
                             name=name)(x)

    query = project(inputs_q, self.num_heads, "query")
    key = project(inputs_kv, kv_heads, "key")
    value = project(inputs_kv, kv_heads, "value")

    options = dict(self.kernel_options or {})
    call: dict[str, Any] = {}
    if self.is_causal:
      call["is_causal"] = True
    if self.relative_buckets:
      if not self_attention:
        raise ValueError("MultiHeadAttention: relative_buckets (T5 bias) applies to "
                         "self-attention only")
      if "relative_bias_table" in options:
        raise ValueError("MultiHeadAttention: relative_bias_table given in kernel_options "
                         "and learned through relative_buckets; choose one")
      call["relative_bias_table"] = self.param(
          "relative_bias", nn.initializers.normal(0.02),
          (self.relative_buckets, self.num_heads), jnp.float32)
      call["relative_max_distance"] = self.relative_max_distance
      call["relative_bidirectional"] = not self.is_causal
    caching = decode and self.has_variable("cache", "cached_key")
    if decode:
      if not self_attention:
        raise ValueError("MultiHeadAttention: decode=True caches self-attention only; call "
                         "cross-attention without decode")
      if segment_ids is not None:
        raise ValueError("MultiHeadAttention: decode=True does not take segment_ids (a "
                         "cached sequence is one segment; mark padding with mask)")
      if not kernels.supports_decode(kernel_fn):
        raise ValueError(f"kernel {self.kernel!r} cannot decode with a cache (its output "
                         "depends on the whole sequence); choose one of "
                         f"{[k for k in kernels.list_kernels() if kernels.supports_decode(kernels.get_kernel(k))]}")
    if decode:
      batch, new = inputs_q.shape[0], inputs_q.shape[1]
      cached_key = self.variable("cache", "cached_key", jnp.zeros, key.shape, key.dtype)
      cached_value = self.variable("cache", "cached_value", jnp.zeros, value.shape, value.dtype)
      cached_valid = self.variable("cache", "cached_valid", jnp.zeros, key.shape[:2], jnp.bool_)
      cache_index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
    if caching:
      max_len = cached_key.value.shape[1]
      if new > max_len:
        raise ValueError(f"MultiHeadAttention: {new} new tokens do not fit the cache of "
                         f"{max_len} positions")
      index = cache_index.value
      if positions is None:
        positions = jnp.broadcast_to(index + jnp.arange(new, dtype=jnp.int32), (batch, new))
    if self.rotary:
      q_pos = positions
      query = kernels.apply_rotary(query, q_pos, base=self.rotary_base)
      if self_attention:
        key = kernels.apply_rotary(key, q_pos, base=self.rotary_base)
      else:
        raise ValueError("MultiHeadAttention: rotary positions apply to self-attention only")
    if caching:
      valid = jnp.ones((batch, new), jnp.bool_)
      if mask is not None:
        valid = jnp.broadcast_to(jnp.asarray(mask, jnp.bool_), (batch, 1, 1, new))[:, 0, 0]
      key = lax.dynamic_update_slice(cached_key.value, key.astype(cached_key.value.dtype),
                                     (0, index, 0, 0))
      value = lax.dynamic_update_slice(cached_value.value,
                                       value.astype(cached_value.value.dtype), (0, index, 0, 0))
      valid = lax.dynamic_update_slice(cached_valid.value, valid, (0, index))
      cached_key.value, cached_value.value, cached_valid.value = key, value, valid
      cache_index.value = index + new
      # Slots past the last written one hold zeros; they are masked as not valid, and
      # (causal) lie after every query anyway.
      mask = valid[:, None, None, :]
      call["q_offset"] = index
    if segment_ids is not None:
      call["q_segment_ids"] = segment_ids
      call["kv_segment_ids"] = segment_ids if self_attention else kv_segment_ids
    elif kv_segment_ids is not None:
      raise ValueError("MultiHeadAttention: kv_segment_ids needs segment_ids for the queries")

    use_dropout = not deterministic and self.dropout_rate > 0.0
    extra = {}
    # Kernels with learnable parameters (additive, Linformer, ...) declare them; they are
    # created here, in their own scope, and passed in explicitly (the kernel stays pure).
    spec = kernels.params_spec(kernel_fn, num_heads=self.num_heads, num_kv_heads=kv_heads,
                               head_dim=self.head_dim, q_len=query.shape[-3],
                               kv_len=key.shape[-3], **options)
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
        **call,
        **extra,
        **options,
    )
    if self.kernel in EXACT_SOFTMAX_KERNELS and self.is_mutable_collection("intermediates"):
      accepted = inspect.signature(kernels.attention_weights).parameters
      weight_options = {k: v for k, v in {**options, **call}.items() if k in accepted}
      weights = kernels.attention_weights(query, key, bias=bias, mask=mask, **weight_options)
      self.sow("intermediates", "attention_weights",
               weights.astype(self.dtype) if self.dtype is not None else weights)
    return nn.DenseGeneral(features, axis=(-2, -1), dtype=self.dtype, use_bias=self.use_bias,
                           name="out")(out)
