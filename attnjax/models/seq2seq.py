"""Encoder-decoder Transformer (Vaswani et al. 2017) with BART- and T5-style options.

The encoder is attnjax's :class:`~attnjax.layers.Encoder`; the decoder is the causal
:class:`~attnjax.models.decoder.Decoder` with cross-attention in every block: both are
``apply_blocks`` stacks of the one TransformerBlock. The options are the stacks'
EncoderConfig fields plus sharing:

* original Transformer (preset ``transformer_base``): post-LN, sinusoidal positions,
  ReLU, one embedding table shared by source, target and output projection
  (``share_embeddings``, ``tie_embeddings``). Embeddings are not scaled by
  ``sqrt(D)`` (as BART; the initialisation's stddev is 0.02 instead).
* BART (preset ``bart_base``; Hugging Face import/export): post-LN, learned positions,
  LayerNorm after the embeddings (``embedding_layer_norm``), exact GELU, shared
  embeddings, biases.
* T5-style (preset ``t5_small``): pre-LN with a final LayerNorm per stack, no absolute
  positions (``position='none'``), a learned T5 relative-position bias in every
  self-attention layer (``relative_buckets``: bidirectional buckets in the encoder,
  one-sided in the decoder, through the kernels' ``relative_bias_table``), no biases
  (``use_bias=False``), ReLU. Differences from T5 itself: LayerNorm (mean-centred, no
  bias) instead of RMSNorm, one bias table per layer instead of one per stack, and
  attention logits scaled by ``1/sqrt(head_dim)``.

Parameter tree::

  shared/embedding [vocab, D]                     (share_embeddings)
  encoder/embeddings/..., encoder/layer_{i}/..., encoder/final_norm (pre-LN)
  decoder/embeddings/..., decoder/layer_{i}/{attention, attention_norm, cross_attention,
      cross_attention_norm, mlp, mlp_norm}, decoder/final_norm (pre-LN)
  lm_head/kernel [D, vocab]                       (untied only)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from attnjax.layers import Encoder, EncoderConfig
from attnjax.models.builder import encoder_config
from attnjax.models.decoder import Decoder, model_fields, output_logits, zeros_cache
from attnjax.models.registry import MODELS, batch_arrays, groups_by_stack


def shift_right(targets: jax.Array, start_id: int) -> jax.Array:
  """Teacher-forcing decoder inputs: ``[start_id, targets[:, :-1]]``, int ``[batch, len]``."""
  start = jnp.full(targets.shape[:-1] + (1,), start_id, targets.dtype)
  return jnp.concatenate([start, targets[..., :-1]], axis=-1)


class EncoderDecoder(nn.Module):
  """Encoder over the source, causal decoder with cross-attention over the target.

  Attributes:
    config: the encoder stack (its ``pad_id`` marks source padding).
    decoder_config: the decoder stack; same ``vocab_size`` and ``hidden_size``.
    share_embeddings: one token table (``shared``) for source and target.
    tie_embeddings: the output projection is the target token table; False adds a
      separate ``lm_head`` ``[D, vocab]``.
    decoder_start_id: the token that starts every decoder input (``shift_right``).
  """

  config: EncoderConfig
  decoder_config: EncoderConfig
  share_embeddings: bool = True
  tie_embeddings: bool = True
  decoder_start_id: int = 0

  def setup(self):
    enc, dec = self.config, self.decoder_config
    if enc.hidden_size != dec.hidden_size:
      raise ValueError(f"EncoderDecoder: encoder hidden_size={enc.hidden_size} differs from "
                       f"the decoder's {dec.hidden_size}")
    if self.share_embeddings and enc.vocab_size != dec.vocab_size:
      raise ValueError(f"EncoderDecoder: share_embeddings needs one vocabulary; encoder "
                       f"vocab_size={enc.vocab_size}, decoder {dec.vocab_size}")
    if self.share_embeddings:
      self.shared = nn.Embed(dec.vocab_size, dec.hidden_size,
                             embedding_init=nn.initializers.normal(0.02))
    self.encoder = Encoder(enc)
    self.decoder = Decoder(dec, cross_attention=True)
    self.lm_head = (None if self.tie_embeddings else
                    nn.Dense(dec.vocab_size, use_bias=False, dtype=dec.dtype,
                             kernel_init=nn.initializers.normal(0.02)))

  def _table(self) -> jax.Array | None:
    return self.shared.embedding if self.share_embeddings else None

  def _logits(self, hidden: jax.Array) -> jax.Array:
    table = None
    if self.tie_embeddings:
      table = self._table()
      if table is None:
        table = self.decoder.variables["params"]["embeddings"]["word_embeddings"]["embedding"]
    return output_logits(hidden, table, self.lm_head)

  def encode(self, inputs: jax.Array | Mapping[str, jax.Array], *,
             attention_mask: jax.Array | None = None,
             deterministic: bool = True) -> tuple[jax.Array, jax.Array]:
    """Encodes source ids ``[batch, src_len]`` (or the batch dict's ``inputs``).

    Returns:
      ``(encoded [batch, src_len', D], encoded_mask bool [batch, src_len'])``;
      ``src_len' = src_len + 1`` with the encoder's ``add_cls_token``. The mask is
      ``attention_mask != 0`` or, without one, ``inputs != config.pad_id``.
    """
    arrays = batch_arrays(inputs, attention_mask=attention_mask)
    return self.encoder(arrays["inputs"], attention_mask=arrays.get("attention_mask"),
                        word_embeddings=self._table(), deterministic=deterministic)

  def decode(self, tokens: jax.Array, encoded: jax.Array, encoded_mask: jax.Array, *,
             positions: jax.Array | None = None, mask: jax.Array | None = None) -> jax.Array:
    """Cached decoder step: logits ``[batch, n, vocab]`` of ``tokens`` ``[batch, n]``.

    Call as ``model.apply({'params': p, 'cache': c}, tokens, encoded, encoded_mask,
    method=EncoderDecoder.decode, mutable=['cache'])``.

    Args:
      tokens: int ``[batch, n]`` decoder tokens (the first call starts with
        ``decoder_start_id``).
      encoded: ``[batch, src_len, D]`` from :meth:`encode`.
      encoded_mask: bool ``[batch, src_len]``.
      positions: int ``[batch, n]``; default: continuing after the cached tokens.
      mask: bool ``[batch, n]``, False for tokens never to be attended to.
    """
    hidden = self.decoder(tokens, mask=mask, positions=positions, encoded=encoded,
                          encoded_mask=encoded_mask, word_embeddings=self._table(),
                          decode=True)
    return self._logits(hidden)

  def __call__(self, inputs: jax.Array | Mapping[str, jax.Array],
               decoder_inputs: jax.Array | None = None, *,
               attention_mask: jax.Array | None = None,
               decoder_attention_mask: jax.Array | None = None,
               deterministic: bool = True) -> jax.Array:
    """Teacher-forced logits ``[batch, tgt_len, vocab]`` (float32).

    Args:
      inputs: int ``[batch, src_len]`` source ids, or the batch dict (``inputs``,
        ``targets`` ``[batch, tgt_len]``; decoder inputs are ``shift_right(targets)``).
      decoder_inputs: int ``[batch, tgt_len]`` decoder input ids (Hugging Face's
        ``decoder_input_ids``); needed when ``inputs`` is an array.
      attention_mask: source ``[batch, src_len]``, nonzero for real tokens; default
        ``inputs != pad_id``.
      decoder_attention_mask: ``[batch, tgt_len]``, nonzero for real decoder tokens;
        None = every token is real (right padding needs none).
      deterministic: disables dropout when True.
    """
    arrays = batch_arrays(inputs, decoder_inputs=decoder_inputs,
                          attention_mask=attention_mask,
                          decoder_attention_mask=decoder_attention_mask)
    if "decoder_inputs" not in arrays:
      if "targets" not in arrays:
        raise ValueError("EncoderDecoder needs decoder_inputs [batch, tgt_len], or a batch "
                         "dict with 'targets'")
      arrays["decoder_inputs"] = shift_right(arrays["targets"], self.decoder_start_id)
    encoded, encoded_mask = self.encode(arrays["inputs"],
                                        attention_mask=arrays.get("attention_mask"),
                                        deterministic=deterministic)
    hidden = self.decoder(arrays["decoder_inputs"], mask=arrays.get("decoder_attention_mask"),
                          encoded=encoded, encoded_mask=encoded_mask,
                          word_embeddings=self._table(), deterministic=deterministic)
    return self._logits(hidden)

  def init_cache(self, batch_size: int, max_length: int) -> dict:
    """An empty decoder cache for ``batch_size`` rows of up to ``max_length`` tokens.

    Call on the unbound model: ``cache = model.init_cache(8, 64)``.
    """
    ids = jnp.zeros((batch_size, max_length), jnp.int32)
    encoded = jnp.zeros((batch_size, 1, self.config.hidden_size), self.config.dtype)
    encoded_mask = jnp.ones((batch_size, 1), bool)
    return zeros_cache(lambda: self.init(jax.random.PRNGKey(0), ids, encoded, encoded_mask,
                                         method=EncoderDecoder.decode))

  def param_groups(self, params: Mapping[str, Any]) -> Any:
    """What each parameter is; the decoder's blocks count after the encoder's."""
    enc = self.config.num_layers
    return groups_by_stack(params, stacks={"encoder": 0, "decoder": enc},
                           num_layers=enc + self.decoder_config.num_layers,
                           embeddings=("shared",))


#: config.model keys of the encoder-decoder that are not EncoderConfig fields.
SEQ2SEQ_KEYS = ("tie_embeddings", "share_embeddings", "decoder_layers", "decoder_start_id")


@MODELS.register("encoder_decoder")
def build_encoder_decoder(model_config: ml_collections.ConfigDict, *, vocab_size: int,
                          max_length: int, pad_id: int = 0, target_length: int | None = None,
                          decoder_start_id: int | None = None) -> EncoderDecoder:
  """An :class:`EncoderDecoder` from ``config.model``.

  Args:
    model_config: preset and EncoderConfig fields (both stacks), plus
      ``decoder_layers`` (default: ``num_layers``), ``share_embeddings`` and
      ``tie_embeddings`` (default True), ``decoder_start_id``.
    vocab_size: one vocabulary for source and target.
    max_length: longest source.
    pad_id: padding id.
    target_length: longest target (decoder positions); default ``max_length``.
    decoder_start_id: the decoder's start token; default ``config.model.decoder_start_id``,
      else ``pad_id`` (T5's convention).
  """
  stack, own = model_fields(model_config, SEQ2SEQ_KEYS)
  enc = encoder_config(stack, vocab_size=vocab_size, max_length=max_length, pad_id=pad_id)
  dec = dataclasses.replace(enc, num_layers=int(own.get("decoder_layers", enc.num_layers)),
                            max_length=target_length or max_length, add_cls_token=False,
                            type_vocab_size=0)
  if decoder_start_id is None:
    decoder_start_id = own.get("decoder_start_id", pad_id)
  return EncoderDecoder(enc, dec, share_embeddings=bool(own.get("share_embeddings", True)),
                        tie_embeddings=bool(own.get("tie_embeddings", True)),
                        decoder_start_id=int(decoder_start_id))
