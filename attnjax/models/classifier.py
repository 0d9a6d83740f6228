"""Encoder + pooling + classification head."""

from __future__ import annotations

import flax.linen as nn
import jax

from attnjax.layers import Encoder, EncoderConfig, get_pooling


class SequenceClassifier(nn.Module):
  """Classifies a token sequence: ``Encoder -> pooling -> dropout -> Dense(num_classes)``.

  Attributes:
    encoder: the encoder's configuration.
    num_classes: number of output classes (1 for regression).
    pooling: a name registered in ``attnjax.layers.POOLINGS`` (``cls``, ``mean``,
      ``attention``).
    head_dropout_rate: dropout before the output layer.
  """

  encoder: EncoderConfig
  num_classes: int
  pooling: str = "cls"
  head_dropout_rate: float = 0.0

  @nn.compact
  def __call__(
      self,
      input_ids: jax.Array,
      *,
      attention_mask: jax.Array | None = None,
      token_type_ids: jax.Array | None = None,
      deterministic: bool = True,
  ) -> jax.Array:
    """Returns float32 logits ``[batch, num_classes]`` for ``input_ids`` ``[batch, seq]``."""
    hidden, padding = Encoder(self.encoder, name="encoder")(
        input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
        deterministic=deterministic)
    pooled = get_pooling(self.pooling)(name="pooling")(hidden, padding)
    pooled = nn.Dropout(self.head_dropout_rate)(pooled, deterministic=deterministic)
    return nn.Dense(self.num_classes, name="head")(pooled).astype("float32")
