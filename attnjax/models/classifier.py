"""Encoder + pooling + classification head, for one sequence or two towers."""

from __future__ import annotations

from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnjax.layers import Encoder, EncoderConfig, get_pooling
from attnjax.models.registry import batch_arrays, groups_by_stack


class SequenceClassifier(nn.Module):
  """Classifies a token sequence, or a pair of sequences encoded as two towers.

  ``towers == 1``: ``Encoder -> pooling -> dropout -> Dense(num_classes)``.

  ``towers == 2`` (two-tower matching, LRA Retrieval): both sequences go through the SAME
  encoder and pooling (shared weights, no attention between them), each with its own
  padding mask, giving ``u`` and ``v``; then, as LRA's dual-encoder head with NLI
  interaction, ``[u, v, u * v, u - v] -> dropout -> Dense(mlp_dim) -> relu ->
  Dense(mlp_dim // 2) -> relu -> Dense(num_classes)`` with ``mlp_dim`` the encoder's.

  Attributes:
    encoder: the encoder's configuration.
    num_classes: number of output classes (1 for regression).
    pooling: a name registered in ``attnjax.layers.POOLINGS`` (``cls``, ``mean``,
      ``attention``).
    head_dropout_rate: dropout before the head (on the pooled vector, or on the
      combined two-tower features).
    towers: 1 (inputs ``[batch, seq]``) or 2 (inputs ``[batch, 2, seq]``).
  """

  encoder: EncoderConfig
  num_classes: int
  pooling: str = "cls"
  head_dropout_rate: float = 0.0
  towers: int = 1

  def param_groups(self, params):
    """What each parameter is (``attnjax.models.ParamGroup``): the encoder's embeddings,
    blocks and norms, and the head (everything outside ``encoder``)."""
    return groups_by_stack(params, stacks={"encoder": 0}, num_layers=self.encoder.num_layers)

  @nn.compact
  def __call__(
      self,
      input_ids: jax.Array | Mapping[str, jax.Array],
      *,
      attention_mask: jax.Array | None = None,
      token_type_ids: jax.Array | None = None,
      deterministic: bool = True,
  ) -> jax.Array:
    """Returns float32 logits ``[batch, num_classes]``.

    Args:
      input_ids: int ``[batch, seq]``, or ``[batch, 2, seq]`` with two towers; or the
        batch dict (``inputs``, optionally ``token_type_ids``; other entries ignored).
      attention_mask: optional, the shape of ``input_ids``; nonzero for real tokens
        (default ``input_ids != pad_id``, per tower).
      token_type_ids: optional, the shape of ``input_ids``.
      deterministic: no dropout when True.

    Raises:
      ValueError: ``towers`` is not 1 or 2, or ``input_ids`` has the wrong rank for it.
    """
    arrays = batch_arrays(input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids)
    input_ids = arrays["inputs"]
    attention_mask = arrays.get("attention_mask")
    token_type_ids = arrays.get("token_type_ids")
    if self.towers not in (1, 2):
      raise ValueError(f"towers={self.towers}; expected 1 (one sequence) or 2 (two towers)")
    encoder = Encoder(self.encoder, name="encoder")
    pooling = get_pooling(self.pooling)(name="pooling")
    dropout = nn.Dropout(self.head_dropout_rate)
    if self.towers == 1:
      hidden, padding = encoder(input_ids, attention_mask=attention_mask,
                                token_type_ids=token_type_ids, deterministic=deterministic)
      pooled = dropout(pooling(hidden, padding), deterministic=deterministic)
      return nn.Dense(self.num_classes, name="head")(pooled).astype("float32")

    if input_ids.ndim != 3 or input_ids.shape[1] != 2:
      raise ValueError(f"input_ids must be [batch, 2, seq] for a two-tower classifier, got "
                       f"shape {input_ids.shape}")
    batch, _, seq = input_ids.shape
    # Both towers in one encoder call: [batch, 2, seq] -> [batch * 2, seq] (rows u0, v0,
    # u1, v1, ...), so a batch sharded along its first axis stays sharded the same way.
    flat = lambda x: None if x is None else x.reshape(batch * 2, seq)  # noqa: E731
    hidden, padding = encoder(flat(input_ids), attention_mask=flat(attention_mask),
                              token_type_ids=flat(token_type_ids),
                              deterministic=deterministic)
    pooled = pooling(hidden, padding).reshape(batch, 2, -1)
    u, v = pooled[:, 0], pooled[:, 1]
    features = jnp.concatenate([u, v, u * v, u - v], axis=-1)
    features = dropout(features, deterministic=deterministic)
    mlp_dim = self.encoder.mlp_dim
    x = nn.relu(nn.Dense(mlp_dim, name="tower_mlp1")(features))
    x = nn.relu(nn.Dense(mlp_dim // 2, name="tower_mlp2")(x))
    return nn.Dense(self.num_classes, name="head")(x).astype("float32")
