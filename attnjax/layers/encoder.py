"""The Transformer block and stack, and the encoder built from them (kernel injected by name)."""

from __future__ import annotations

import inspect

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnjax import kernels
from attnjax.layers.attention import MultiHeadAttention
from attnjax.layers.config import EncoderConfig
from attnjax.layers.embeddings import Embeddings
from attnjax.layers.feedforward import FeedForward


class TransformerBlock(nn.Module):
  """The one Transformer block: self-attention, optional cross-attention, feed-forward.

  Every stack (encoder, decoder, the decoder of an encoder-decoder) is a list of these.
  Each sub-layer has a residual and a LayerNorm:

  Pre-LN (``config.pre_layer_norm``): ``x + Drop(Sub(LN(x)))`` for each sub-layer.
  Post-LN (original Transformer, BERT, BART): ``LN(x + Drop(Sub(x)))``.

  Parameter names: ``attention``, ``attention_norm``, (``cross_attention``,
  ``cross_attention_norm``), ``mlp``, ``mlp_norm``.

  The block's place in the stack selects its self-attention from the config's schedule
  (:meth:`EncoderConfig.is_local_layer`: window and RoPE base of local or global layers)
  and, with ``config.skip_first_attention_norm``, drops block 0's ``attention_norm``.

  Attributes:
    config: the stack's hyper-parameters.
    causal: self-attention sees only the current and earlier positions (decoders).
    cross_attention: add an attention sub-layer over ``encoded`` (encoder-decoder).
    layer_index: position of the block in its stack (0 = next to the embeddings).
  """

  config: EncoderConfig
  causal: bool = False
  cross_attention: bool = False
  layer_index: int = 0

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None,
               deterministic: bool = True, encoded: jax.Array | None = None,
               encoded_mask: jax.Array | None = None, positions: jax.Array | None = None,
               segment_ids: jax.Array | None = None, decode: bool = False) -> jax.Array:
    """Maps ``[batch, seq, D]`` to ``[batch, seq, D]``.

    Arguments are positional-or-keyword so that ``nn.remat`` can mark ``deterministic``
    and ``decode`` static and ``nn.scan`` can broadcast them.

    Args:
      x: ``[batch, seq, D]``.
      mask: self-attention mask as in :class:`MultiHeadAttention` (True = attend).
      deterministic: disables dropout when True.
      encoded: ``[batch, src_len, D]`` encoder output (with ``cross_attention``).
      encoded_mask: cross-attention mask broadcastable to ``[batch, heads, seq, src_len]``.
      positions: int ``[batch, seq]`` positions for RoPE.
      segment_ids: int ``[batch, seq]`` packed-sequence ids.
      decode: use the autoregressive cache (see :class:`MultiHeadAttention`).
    """
    cfg = self.config

    def attention(name, causal, rotary, relative_buckets=0,
                  kernel_options=cfg.kernel_options):
      return MultiHeadAttention(
          num_heads=cfg.num_heads, head_dim=cfg.head_dim, num_kv_heads=cfg.num_kv_heads,
          kernel=cfg.kernel, kernel_options=kernel_options,
          dropout_rate=cfg.attention_dropout_rate, dtype=cfg.dtype, rotary=rotary,
          rotary_base=cfg.layer_rotary_base(self.layer_index), is_causal=causal,
          use_bias=cfg.use_bias, relative_buckets=relative_buckets,
          relative_max_distance=cfg.relative_max_distance, name=name)

    def norm(name):
      return nn.LayerNorm(epsilon=cfg.layer_norm_epsilon, dtype=cfg.dtype,
                          use_bias=cfg.use_bias, name=name)

    drop = nn.Dropout(cfg.dropout_rate)

    def sublayer(x, fn, norm_name):
      if norm_name is None:  # pre-LN without a norm (skip_first_attention_norm)
        return x + drop(fn(x), deterministic=deterministic)
      if cfg.pre_layer_norm:
        return x + drop(fn(norm(norm_name)(x)), deterministic=deterministic)
      return norm(norm_name)(x + drop(fn(x), deterministic=deterministic))

    if cfg.is_local_layer(self.layer_index):
      _check_takes_window(cfg.kernel)
    self_attention = attention("attention", self.causal, cfg.position == "rotary",
                               cfg.relative_buckets,
                               cfg.layer_kernel_options(self.layer_index))
    skip_norm = cfg.skip_first_attention_norm and self.layer_index == 0
    x = sublayer(x, lambda h: self_attention(h, mask=mask, positions=positions,
                                             segment_ids=segment_ids,
                                             deterministic=deterministic, decode=decode),
                 None if skip_norm else "attention_norm")
    if self.cross_attention:
      if encoded is None:
        raise ValueError("TransformerBlock(cross_attention=True) needs encoded [batch, "
                         "src_len, D]")
      cross = attention("cross_attention", False, False)
      x = sublayer(x, lambda h: cross(h, encoded, mask=encoded_mask,
                                      deterministic=deterministic), "cross_attention_norm")
    elif encoded is not None:
      raise ValueError("encoded given to a TransformerBlock without cross_attention")
    ffn = FeedForward(cfg.mlp_dim, activation=cfg.activation, exact_gelu=cfg.exact_gelu,
                      dropout_rate=cfg.dropout_rate, dtype=cfg.dtype, use_bias=cfg.use_bias,
                      gated=cfg.gated_mlp, name="mlp")
    return sublayer(x, lambda h: ffn(h, deterministic=deterministic), "mlp_norm")


def _check_takes_window(kernel: str) -> None:
  """A kernel without a ``local_window_size`` option cannot run a local layer: say so."""
  params = inspect.signature(kernels.get_kernel(kernel)).parameters
  if "local_window_size" not in params and not any(
      p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
    raise ValueError(f"EncoderConfig.local_window needs a kernel with a local_window_size "
                     f"option; kernel {kernel!r} has none (use 'dot_product' or 'chunked')")


#: The encoder's block is the one TransformerBlock (bidirectional, no cross-attention).
EncoderBlock = TransformerBlock


class _ScanBlock(nn.Module):
  """A TransformerBlock in the ``(carry, x) -> (carry, y)`` form that ``nn.scan`` needs."""

  config: EncoderConfig
  block_cls: type = TransformerBlock
  causal: bool = False
  cross_attention: bool = False

  @nn.compact
  def __call__(self, x, mask, deterministic, encoded, encoded_mask, positions, segment_ids,
               decode):
    block = self.block_cls(self.config, self.causal, self.cross_attention, name="block")
    return block(x, mask, deterministic, encoded, encoded_mask, positions, segment_ids,
                 decode), None


def apply_blocks(config: EncoderConfig, x: jax.Array, mask: jax.Array | None = None, *,
                 causal: bool = False, cross_attention: bool = False,
                 encoded: jax.Array | None = None, encoded_mask: jax.Array | None = None,
                 positions: jax.Array | None = None, segment_ids: jax.Array | None = None,
                 deterministic: bool = True, decode: bool = False) -> jax.Array:
  """Runs ``config.num_layers`` TransformerBlocks and the final pre-LN LayerNorm.

  Called inside a parent module's compact ``__call__``, so the blocks are the parent's
  children (``layer_0``, ..., or ``layers`` when scanned; ``final_norm``): the encoder and
  the decoders share one stack definition and keep the encoder's parameter names.
  Honours ``config.remat`` and ``config.scan_layers`` (which the config refuses with a
  per-layer schedule: scanned blocks share one definition). Block ``i`` gets
  ``layer_index=i``.

  Args:
    config: the stack's hyper-parameters.
    x: ``[batch, seq, D]`` embedded inputs.
    mask, encoded, encoded_mask, positions, segment_ids, deterministic, decode: as in
      :class:`TransformerBlock`.
    causal: causal self-attention.
    cross_attention: blocks attend to ``encoded``.

  Returns:
    ``[batch, seq, D]``.
  """
  block_cls = TransformerBlock
  if config.remat:
    # Arguments: (self, x, mask, deterministic, encoded, encoded_mask, positions,
    # segment_ids, decode); deterministic and decode are Python bools.
    block_cls = nn.remat(TransformerBlock, static_argnums=(3, 8))
  args = (mask, deterministic, encoded, encoded_mask, positions, segment_ids, decode)
  if config.scan_layers:
    x, _ = nn.scan(_ScanBlock, variable_axes={"params": 0, "cache": 0},
                   split_rngs={"params": True, "dropout": True},
                   in_axes=(nn.broadcast,) * len(args), length=config.num_layers)(
                       config, block_cls, causal, cross_attention, name="layers")(x, *args)
  else:
    for i in range(config.num_layers):
      x = block_cls(config, causal, cross_attention, layer_index=i, name=f"layer_{i}")(x, *args)
  if config.pre_layer_norm:
    x = nn.LayerNorm(epsilon=config.layer_norm_epsilon, dtype=config.dtype,
                     use_bias=config.use_bias, name="final_norm")(x)
  return x


class Encoder(nn.Module):
  """Embeddings, an optional CLS vector, ``num_layers`` EncoderBlocks and a final LayerNorm.

  Returns ``(hidden, padding_mask)``: hidden states ``[batch, seq', D]`` and the boolean
  mask ``[batch, seq']`` of real tokens, where ``seq' = seq + 1`` with a CLS vector.
  """

  config: EncoderConfig

  @nn.compact
  def __call__(
      self,
      input_ids: jax.Array,
      *,
      attention_mask: jax.Array | None = None,
      token_type_ids: jax.Array | None = None,
      positions: jax.Array | None = None,
      segment_ids: jax.Array | None = None,
      word_embeddings: jax.Array | None = None,
      deterministic: bool = True,
  ) -> tuple[jax.Array, jax.Array]:
    """Encodes token ids.

    Args:
      input_ids: int ``[batch, seq]``.
      attention_mask: ``[batch, seq]``, nonzero/True for real tokens; by default
        ``input_ids != config.pad_id``.
      token_type_ids: int ``[batch, seq]`` segment ids (needs ``type_vocab_size > 0``).
      positions: int ``[batch, seq]`` token positions (packed rows restart them per
        sequence); default ``arange(seq)``.
      word_embeddings: ``[vocab, D]`` token table owned by a parent (shared with a
        decoder); the encoder then has no ``word_embeddings`` parameter of its own.
      segment_ids: int ``[batch, seq]`` packed-sequence ids, 0 for padding: attention
        stays within a sequence (without a CLS vector only).
      deterministic: disables dropout when True.

    Returns:
      ``(hidden [batch, seq', D], padding_mask bool [batch, seq'])``.
    """
    cfg = self.config
    if input_ids.ndim != 2:
      raise ValueError(f"input_ids must be [batch, seq], got shape {input_ids.shape}")
    if attention_mask is None:
      padding = input_ids != cfg.pad_id
    else:
      if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask shape {attention_mask.shape} differs from "
                         f"input_ids shape {input_ids.shape}")
      padding = attention_mask.astype(bool)
    if positions is None and cfg.positions_from_mask:
      if input_ids.shape[1] > cfg.max_length:
        raise ValueError(f"input_ids has length {input_ids.shape[1]} > max_length="
                         f"{cfg.max_length} (shape {input_ids.shape})")
      # Real tokens count 0, 1, ... whatever padding precedes them; padding takes the
      # position of the real token before it (it is masked as a key).
      positions = jnp.maximum(jnp.cumsum(padding, axis=1, dtype=jnp.int32) - 1, 0)
    x = Embeddings(cfg, name="embeddings")(input_ids, token_type_ids, positions=positions,
                                           word_embeddings=word_embeddings,
                                           deterministic=deterministic)
    if segment_ids is not None and cfg.add_cls_token:
      raise ValueError("segment_ids (packed sequences) need add_cls_token=False: one CLS "
                       "vector cannot start every packed sequence")
    if cfg.add_cls_token:
      cls = self.param("cls_token", nn.initializers.normal(0.02), (1, 1, cfg.hidden_size))
      cls = jnp.broadcast_to(cls.astype(x.dtype), (x.shape[0], 1, cfg.hidden_size))
      x = jnp.concatenate([cls, x], axis=1)
      padding = jnp.concatenate([jnp.ones_like(padding[:, :1]), padding], axis=1)
    # Keys that are padding are masked for every query and every head.
    mask = padding[:, None, None, :]
    if segment_ids is not None:
      # Packed rows: attention within each sequence; padding (id 0) is its own segment,
      # masked as keys so that padded rows without a real token stay finite.
      padding = padding & (segment_ids > 0)
      mask = padding[:, None, None, :]
    hidden = apply_blocks(cfg, x, mask, positions=positions if cfg.position == "rotary" else None,
                          segment_ids=segment_ids, deterministic=deterministic)
    return hidden, padding
