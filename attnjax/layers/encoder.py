"""The Transformer encoder: one block definition, one stack, the kernel injected by name."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnjax.layers.attention import MultiHeadAttention
from attnjax.layers.config import EncoderConfig
from attnjax.layers.embeddings import Embeddings
from attnjax.layers.feedforward import FeedForward


class EncoderBlock(nn.Module):
  """Self-attention and feed-forward sub-layers, each with a residual and LayerNorm.

  Pre-LN (``config.pre_layer_norm``): ``x + Drop(Attn(LN(x)))``, then ``x + Drop(FF(LN(x)))``.
  Post-LN (original Transformer, BERT): ``LN(x + Drop(Attn(x)))``, then ``LN(x + Drop(FF(x)))``.
  """

  config: EncoderConfig

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None,
               deterministic: bool = True) -> jax.Array:
    """Maps ``[batch, seq, D]`` to ``[batch, seq, D]``; ``mask`` as in MultiHeadAttention.

    ``deterministic`` is positional-or-keyword so that ``nn.remat`` can mark it static.
    """
    cfg = self.config
    attention = MultiHeadAttention(
        num_heads=cfg.num_heads,
        head_dim=cfg.head_dim,
        num_kv_heads=cfg.num_kv_heads,
        kernel=cfg.kernel,
        kernel_options=cfg.kernel_options,
        dropout_rate=cfg.attention_dropout_rate,
        dtype=cfg.dtype,
        rotary=cfg.position == "rotary",
        name="attention")
    ffn = FeedForward(cfg.mlp_dim, activation=cfg.activation, exact_gelu=cfg.exact_gelu,
                      dropout_rate=cfg.dropout_rate, dtype=cfg.dtype, name="mlp")
    norm1 = nn.LayerNorm(epsilon=cfg.layer_norm_epsilon, dtype=cfg.dtype, name="attention_norm")
    norm2 = nn.LayerNorm(epsilon=cfg.layer_norm_epsilon, dtype=cfg.dtype, name="mlp_norm")
    drop = nn.Dropout(cfg.dropout_rate)

    if cfg.pre_layer_norm:
      x = x + drop(attention(norm1(x), mask=mask, deterministic=deterministic),
                   deterministic=deterministic)
      return x + drop(ffn(norm2(x), deterministic=deterministic), deterministic=deterministic)
    x = norm1(x + drop(attention(x, mask=mask, deterministic=deterministic),
                       deterministic=deterministic))
    return norm2(x + drop(ffn(x, deterministic=deterministic), deterministic=deterministic))


class _ScanBlock(nn.Module):
  """An EncoderBlock in the ``(carry, x) -> (carry, y)`` form that ``nn.scan`` needs."""

  config: EncoderConfig
  block_cls: type = EncoderBlock

  @nn.compact
  def __call__(self, x, mask, deterministic):
    return self.block_cls(self.config, name="block")(x, mask, deterministic), None


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
      deterministic: bool = True,
  ) -> tuple[jax.Array, jax.Array]:
    """Encodes token ids.

    Args:
      input_ids: int ``[batch, seq]``.
      attention_mask: ``[batch, seq]``, nonzero/True for real tokens; by default
        ``input_ids != config.pad_id``.
      token_type_ids: int ``[batch, seq]`` segment ids (needs ``type_vocab_size > 0``).
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
    x = Embeddings(cfg, name="embeddings")(input_ids, token_type_ids,
                                           deterministic=deterministic)
    if cfg.add_cls_token:
      cls = self.param("cls_token", nn.initializers.normal(0.02), (1, 1, cfg.hidden_size))
      cls = jnp.broadcast_to(cls.astype(x.dtype), (x.shape[0], 1, cfg.hidden_size))
      x = jnp.concatenate([cls, x], axis=1)
      padding = jnp.concatenate([jnp.ones_like(padding[:, :1]), padding], axis=1)
    # Keys that are padding are masked for every query and every head.
    mask = padding[:, None, None, :]
    block_cls = EncoderBlock
    if cfg.remat:
      # Arguments: (self, x, mask, deterministic); deterministic is a Python bool.
      block_cls = nn.remat(EncoderBlock, static_argnums=(3,))
    if cfg.scan_layers:
      x, _ = nn.scan(_ScanBlock, variable_axes={"params": 0},
                     split_rngs={"params": True, "dropout": True},
                     in_axes=(nn.broadcast, nn.broadcast), length=cfg.num_layers)(
                         cfg, block_cls, name="layers")(x, mask, deterministic)
    else:
      for i in range(cfg.num_layers):
        x = block_cls(cfg, name=f"layer_{i}")(x, mask, deterministic)
    if cfg.pre_layer_norm:
      x = nn.LayerNorm(epsilon=cfg.layer_norm_epsilon, dtype=cfg.dtype, name="final_norm")(x)
    return x, padding
