"""Decoder-only causal language model (GPT-style) on the one Transformer block.

``CausalLM`` = token (+ learned or sinusoidal position) embeddings, ``num_layers`` causal
:class:`~attnjax.layers.TransformerBlock` s (``apply_blocks``), the final LayerNorm of a
pre-LN stack, and an output projection tied to the token embeddings or separate.
GPT-2's layout is ``pre_layer_norm=True, position='learned', layer_norm_epsilon=1e-5,
activation='gelu', exact_gelu=False`` with tied embeddings (preset ``gpt2_small``); a
rotary-position model is ``position='rotary'``.

Parameter tree::

  decoder/embeddings/word_embeddings/embedding [vocab, D]
  decoder/embeddings/position_embeddings       [max_length, D]   (learned positions)
  decoder/layer_{i}/{attention, attention_norm, mlp, mlp_norm}
  decoder/final_norm                                             (pre-LN)
  lm_head/kernel [D, vocab]                                      (untied only)

The cache for generation lives in flax's ``cache`` collection (see
:class:`~attnjax.layers.MultiHeadAttention`); :meth:`CausalLM.init_cache` allocates it and
:meth:`CausalLM.decode` prefills or extends it.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from attnjax.layers import EncoderConfig
from attnjax.layers.embeddings import Embeddings
from attnjax.layers.encoder import apply_blocks
from attnjax.models.builder import encoder_config
from attnjax.models.registry import MODELS, batch_arrays, groups_by_stack


class Decoder(nn.Module):
  """Embeddings and a stack of causal TransformerBlocks (with cross-attention, optionally).

  The decoder of :class:`CausalLM` and of :class:`~attnjax.models.EncoderDecoder`.

  Attributes:
    config: the stack's hyper-parameters.
    cross_attention: blocks attend to the encoder's output (encoder-decoder).
  """

  config: EncoderConfig
  cross_attention: bool = False

  @nn.compact
  def __call__(self, input_ids: jax.Array, *, mask: jax.Array | None = None,
               positions: jax.Array | None = None, segment_ids: jax.Array | None = None,
               encoded: jax.Array | None = None, encoded_mask: jax.Array | None = None,
               word_embeddings: jax.Array | None = None, deterministic: bool = True,
               decode: bool = False) -> jax.Array:
    """Maps token ids ``[batch, seq]`` to hidden states ``[batch, seq, D]``.

    Args:
      input_ids: int ``[batch, seq]``.
      mask: bool ``[batch, seq]``, True for real tokens (keys); None = all real. With
        ``decode`` it marks which new tokens are real (left padding of prompts).
      positions: int ``[batch, seq]`` positions (packed rows restart them; left-padded
        prompts start each row at 0); default ``arange(seq)``, or continuing from the
        tokens already cached with ``decode``.
      segment_ids: int ``[batch, seq]`` packed-sequence ids (0 = padding); not with
        ``decode``.
      encoded: ``[batch, src_len, D]`` encoder output (with ``cross_attention``).
      encoded_mask: bool ``[batch, src_len]``, True for real source tokens.
      word_embeddings: ``[vocab, D]`` token table owned by the parent (shared).
      deterministic: disables dropout when True.
      decode: use and update the autoregressive cache.
    """
    cfg = self.config
    if input_ids.ndim != 2:
      raise ValueError(f"input_ids must be [batch, seq], got shape {input_ids.shape}")
    batch, seq = input_ids.shape
    if decode:
      # The next free position, so decode() without explicit positions continues the
      # sequence; created (at 0) when the cache is allocated, advanced by every later call.
      caching = self.has_variable("cache", "position_index")
      index = self.variable("cache", "position_index", lambda: jnp.zeros((), jnp.int32))
      if caching:
        if positions is None:
          positions = jnp.broadcast_to(index.value + jnp.arange(seq, dtype=jnp.int32),
                                       (batch, seq))
        index.value = index.value + seq
    if positions is not None and positions.shape != input_ids.shape:
      raise ValueError(f"positions shape {positions.shape} differs from input_ids shape "
                       f"{input_ids.shape}")
    absolute = cfg.position in ("learned", "sinusoidal")
    x = Embeddings(cfg, name="embeddings")(
        input_ids, positions=positions if absolute else None, word_embeddings=word_embeddings,
        deterministic=deterministic)
    keys = None if mask is None else jnp.asarray(mask, bool)
    if segment_ids is not None:
      # Padding (segment 0) is masked as keys, so an all-padding row stays finite.
      keys = segment_ids > 0 if keys is None else keys & (segment_ids > 0)
    cross = None if encoded_mask is None else jnp.asarray(encoded_mask, bool)[:, None, None, :]
    return apply_blocks(
        cfg, x, None if keys is None else keys[:, None, None, :], causal=True,
        cross_attention=self.cross_attention, encoded=encoded, encoded_mask=cross,
        positions=positions if cfg.position == "rotary" else None, segment_ids=segment_ids,
        deterministic=deterministic, decode=decode)


def output_logits(hidden: jax.Array, table: jax.Array | None,
                  head: nn.Module | None) -> jax.Array:
  """float32 vocabulary logits: ``hidden @ table^T`` (tied) or ``head(hidden)``."""
  if head is None:
    logits = jnp.einsum("...d,vd->...v", hidden, table.astype(hidden.dtype))
  else:
    logits = head(hidden)
  # float32 whatever the compute dtype: the softmax over the vocabulary needs it.
  return logits.astype(jnp.float32)


def zeros_cache(init_fn) -> dict:
  """The ``cache`` collection ``init_fn`` would create, as zeros, without computing params."""
  shapes = jax.eval_shape(init_fn)["cache"]
  return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


class CausalLM(nn.Module):
  """Decoder-only language model: ``logits[t]`` predicts token ``t + 1``.

  Attributes:
    config: the decoder stack (``pre_layer_norm``, ``position`` 'learned' / 'sinusoidal'
      / 'rotary' / 'none', kernel, ...). ``max_length`` bounds learned positions.
    tie_embeddings: the output projection is the token embedding table (GPT-2); False
      adds a separate ``lm_head`` ``[D, vocab]`` without bias.
  """

  config: EncoderConfig
  tie_embeddings: bool = True

  def setup(self):
    self.decoder = Decoder(self.config)
    self.lm_head = (None if self.tie_embeddings else
                    nn.Dense(self.config.vocab_size, use_bias=False, dtype=self.config.dtype,
                             kernel_init=nn.initializers.normal(0.02)))

  def _logits(self, hidden: jax.Array) -> jax.Array:
    table = None
    if self.tie_embeddings:
      table = self.decoder.variables["params"]["embeddings"]["word_embeddings"]["embedding"]
    return output_logits(hidden, table, self.lm_head)

  def __call__(self, inputs: jax.Array | Mapping[str, jax.Array], *,
               attention_mask: jax.Array | None = None, positions: jax.Array | None = None,
               segment_ids: jax.Array | None = None, deterministic: bool = True) -> jax.Array:
    """Teacher-forced logits ``[batch, seq, vocab]`` (float32) for ``[batch, seq]`` ids.

    Args:
      inputs: int ``[batch, seq]`` token ids, or the batch dict (``inputs``, and
        optionally ``segment_ids``, ``positions``; ``targets`` is the loss's).
      attention_mask: ``[batch, seq]``, nonzero for real tokens (Hugging Face's); None
        = every token is real (right padding needs none: no real token sees it).
      positions: int ``[batch, seq]``; default ``arange(seq)`` (packed rows restart them).
      segment_ids: int ``[batch, seq]`` packed-sequence ids, 0 for padding.
      deterministic: disables dropout when True.
    """
    arrays = batch_arrays(inputs, attention_mask=attention_mask, positions=positions,
                          segment_ids=segment_ids)
    hidden = self.decoder(arrays["inputs"], mask=arrays.get("attention_mask"),
                          positions=arrays.get("positions"),
                          segment_ids=arrays.get("segment_ids"), deterministic=deterministic)
    return self._logits(hidden)

  def decode(self, tokens: jax.Array, *, positions: jax.Array | None = None,
             mask: jax.Array | None = None) -> jax.Array:
    """Cached step: writes ``tokens`` ``[batch, n]`` into the cache, returns their logits.

    Call as ``model.apply({'params': p, 'cache': c}, tokens, method=CausalLM.decode,
    mutable=['cache'])`` -> ``(logits [batch, n, vocab], {'cache': new_cache})``; a prompt
    (``n`` > 1) prefills, one token extends.

    Args:
      tokens: int ``[batch, n]``.
      positions: int ``[batch, n]``; default: continuing after the cached tokens.
      mask: bool ``[batch, n]``, False for padding tokens (never attended to later).
    """
    hidden = self.decoder(tokens, mask=mask, positions=positions, decode=True)
    return self._logits(hidden)

  def init_cache(self, batch_size: int, max_length: int) -> dict:
    """An empty cache for ``batch_size`` rows of up to ``max_length`` tokens (zeros).

    Call on the unbound model: ``cache = model.init_cache(8, 128)``.
    """
    ids = jnp.zeros((batch_size, max_length), jnp.int32)
    return zeros_cache(lambda: self.init(jax.random.PRNGKey(0), ids,
                                               method=CausalLM.decode))

  def param_groups(self, params: Mapping[str, Any]) -> Any:
    """What each parameter is (see :class:`~attnjax.models.ParamGroup`)."""
    return groups_by_stack(params, stacks={"decoder": 0}, num_layers=self.config.num_layers)


# ----------------------------------------------------------------------------------------
# Builders: config.model -> model.

#: config.model keys of the decoder models that are not EncoderConfig fields.
LM_KEYS = ("tie_embeddings",)


def model_fields(model_config: ml_collections.ConfigDict,
                 own: tuple[str, ...]) -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
  """Splits ``config.model`` into the stack's fields and the model's own (``own``) keys."""
  rest = ml_collections.ConfigDict({k: v for k, v in model_config.items() if k not in own})
  return rest, {k: model_config[k] for k in own if model_config.get(k) is not None}


@MODELS.register("causal_lm")
def build_causal_lm(model_config: ml_collections.ConfigDict, *, vocab_size: int,
                    max_length: int, pad_id: int = 0) -> CausalLM:
  """A :class:`CausalLM` from ``config.model`` (preset, EncoderConfig fields,
  ``tie_embeddings``, default True); ``max_length`` is the longest sequence."""
  stack, own = model_fields(model_config, LM_KEYS)
  cfg = encoder_config(stack, vocab_size=vocab_size, max_length=max_length, pad_id=pad_id)
  return CausalLM(cfg, tie_embeddings=bool(own.get("tie_embeddings", True)))
