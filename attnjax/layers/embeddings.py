"""Token, position and token-type embeddings."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from attnjax.layers.config import EncoderConfig


def sinusoidal_positions(length: int, dim: int, *, max_timescale: float = 1e4) -> np.ndarray:
  """The fixed sine/cosine position table of Vaswani et al. (2017).

  Args:
    length: number of positions.
    dim: embedding width (even or odd).
    max_timescale: the longest wavelength.

  Returns:
    float32 ``[length, dim]``: ``sin`` in the first half of the features, ``cos`` in the
    second.
  """
  half = dim // 2
  inv_freq = np.exp(-np.log(max_timescale) * np.arange(half) / max(half, 1))
  angles = np.arange(length)[:, None] * inv_freq[None, :]
  table = np.zeros((length, dim), np.float32)
  table[:, :half] = np.sin(angles)
  table[:, half:2 * half] = np.cos(angles)
  return table


class Embeddings(nn.Module):
  """Sums token, position and (optionally) token-type embeddings, then LayerNorm/dropout.

  Parameter names follow BERT's layout (``word_embeddings``, ``position_embeddings``,
  ``token_type_embeddings``, ``layer_norm``) so checkpoints convert one-to-one.
  """

  config: EncoderConfig

  @nn.compact
  def __call__(
      self,
      input_ids: jax.Array,
      token_type_ids: jax.Array | None = None,
      *,
      positions: jax.Array | None = None,
      word_embeddings: jax.Array | None = None,
      deterministic: bool = True,
  ) -> jax.Array:
    """Embeds ``input_ids`` [batch, seq] into ``[batch, seq, hidden]``.

    ``positions`` (int ``[batch, seq]``, default ``arange(seq)``) index the absolute
    position table: packed rows restart them per segment, cached decoding continues them
    from the cache index, left-padded prompts start each row's first real token at 0.

    ``word_embeddings`` (``[vocab, hidden]``) is a token table owned elsewhere (an
    encoder-decoder's embeddings shared by both stacks); this module then creates no
    ``word_embeddings`` parameter of its own.
    """
    cfg = self.config
    seq = input_ids.shape[-1]
    if positions is None and seq > cfg.max_length:
      raise ValueError(f"input_ids has length {seq} > max_length={cfg.max_length} "
                       f"(shape {input_ids.shape})")
    init = nn.initializers.normal(stddev=0.02)
    if word_embeddings is None:
      x = nn.Embed(cfg.vocab_size, cfg.hidden_size, embedding_init=init,
                   name="word_embeddings")(input_ids)
    else:
      if word_embeddings.shape != (cfg.vocab_size, cfg.hidden_size):
        raise ValueError(f"word_embeddings has shape {word_embeddings.shape}; expected "
                         f"[vocab_size, hidden_size] = {(cfg.vocab_size, cfg.hidden_size)}")
      x = jnp.take(word_embeddings, input_ids, axis=0)
    if cfg.position == "learned":
      table = self.param("position_embeddings", init, (cfg.max_length, cfg.hidden_size))
      x = x + (table[None, :seq] if positions is None else jnp.take(table, positions, axis=0))
    elif cfg.position == "sinusoidal":
      table = jnp.asarray(sinusoidal_positions(cfg.max_length if positions is not None else seq,
                                               cfg.hidden_size))
      x = x + (table[None] if positions is None else jnp.take(table, positions, axis=0))
    if cfg.type_vocab_size:
      if token_type_ids is None:
        token_type_ids = jnp.zeros_like(input_ids)
      x = x + nn.Embed(cfg.type_vocab_size, cfg.hidden_size, embedding_init=init,
                       name="token_type_embeddings")(token_type_ids)
    elif token_type_ids is not None:
      raise ValueError("token_type_ids given but EncoderConfig.type_vocab_size is 0")
    if cfg.embedding_layer_norm:
      x = nn.LayerNorm(epsilon=cfg.layer_norm_epsilon, use_bias=cfg.use_bias,
                       name="layer_norm")(x)
    x = nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)
    return x.astype(cfg.dtype)
