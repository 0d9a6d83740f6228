"""BertEncoder: attnjax's Encoder plus BERT's pooler, returning last hidden states.

The parameter tree is ``{'encoder': <Encoder params>, 'pooler': {'kernel', 'bias'}}`` so the
``encoder`` subtree drops unchanged into ``SequenceClassifier`` or ``MaskedLanguageModel``
(both name their encoder ``encoder``).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnjax.layers import Encoder, EncoderConfig, MeanPooling


class BertEncoder(nn.Module):
  """The encoder of a BERT checkpoint: ``__call__`` gives the last hidden states.

  The pooler (``tanh(Dense(hidden[:, 0]))``, BERT's next-sentence head input) is only run by
  :meth:`pooled_output`; ``init`` through ``__call__`` creates no pooler parameters, and
  checkpoints without a pooler load and export without one.

  Attributes:
    config: the encoder's configuration (post-LN, learned positions, token types for BERT).
  """

  config: EncoderConfig

  def setup(self):
    self.encoder = Encoder(self.config)
    self.pooler = nn.Dense(self.config.hidden_size, dtype=self.config.dtype)

  def __call__(
      self,
      input_ids: jax.Array,
      *,
      attention_mask: jax.Array | None = None,
      token_type_ids: jax.Array | None = None,
      deterministic: bool = True,
  ) -> jax.Array:
    """Encodes token ids into the last hidden states.

    Args:
      input_ids: int ``[batch, seq]``.
      attention_mask: ``[batch, seq]``, 1/True for real tokens; by default
        ``input_ids != config.pad_id``.
      token_type_ids: int ``[batch, seq]`` segment ids; zeros by default.
      deterministic: disables dropout when True.

    Returns:
      ``[batch, seq, hidden]`` (``seq + 1`` with ``config.add_cls_token``).
    """
    hidden, _ = self.encoder(input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids, deterministic=deterministic)
    return hidden

  def pooled_output(
      self,
      input_ids: jax.Array,
      *,
      attention_mask: jax.Array | None = None,
      token_type_ids: jax.Array | None = None,
      deterministic: bool = True,
  ) -> jax.Array:
    """BERT's pooled output ``tanh(W h_0 + b)`` ``[batch, hidden]`` (HF ``pooler_output``).

    Call as ``model.apply(variables, ids, method=BertEncoder.pooled_output)``.
    """
    hidden = self(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                  deterministic=deterministic)
    return jnp.tanh(self.pooler(hidden[:, 0]))


def l2_normalize(x: jax.Array, *, eps: float = 1e-12) -> jax.Array:
  """``x / max(||x||_2, eps)`` along the last axis (``torch.nn.functional.normalize``)."""
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
  return x / jnp.maximum(norm, eps)


def sentence_embedding(
    model: BertEncoder,
    params: dict,
    input_ids: jax.Array,
    attention_mask: jax.Array,
    *,
    token_type_ids: jax.Array | None = None,
) -> jax.Array:
  """Sentence embeddings as sentence-transformers computes them for all-MiniLM-L6-v2.

  Last hidden states, mean over real tokens, then L2 normalisation (its modules
  Transformer -> Pooling(mean) -> Normalize).

  Args:
    model: a :class:`BertEncoder` (as returned by ``load_hf_encoder``).
    params: its parameters (the ``'params'`` collection).
    input_ids: int ``[batch, seq]``, padded.
    attention_mask: ``[batch, seq]``, 1 for real tokens, 0 for padding.
    token_type_ids: optional ``[batch, seq]`` segment ids.

  Returns:
    float32 ``[batch, hidden]`` with unit L2 norm per row.
  """
  if input_ids.shape != attention_mask.shape:
    raise ValueError(f"attention_mask shape {attention_mask.shape} differs from input_ids "
                     f"shape {input_ids.shape}")
  hidden = model.apply({"params": params}, input_ids, attention_mask=attention_mask,
                       token_type_ids=token_type_ids, deterministic=True)
  if hidden.shape[1] != input_ids.shape[1]:
    # A CLS vector prepended by the encoder has no entry in attention_mask; drop it.
    hidden = hidden[:, hidden.shape[1] - input_ids.shape[1]:]
  # MeanPooling divides by max(count, 1); sentence-transformers by max(count, 1e-9): the same
  # for every row with a real token.
  pooled = MeanPooling().apply({}, hidden.astype(jnp.float32), attention_mask != 0)
  return l2_normalize(pooled)
