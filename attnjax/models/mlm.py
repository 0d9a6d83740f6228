"""Masked-language modelling: BERT's MLM head on the encoder, BERT masking, the loss.

Parameter names follow Hugging Face's ``cls.predictions.*`` one-to-one
(``attnjax.pretrained`` converts them):

  mlm_head/transform/{kernel [D, D], bias}      <- cls.predictions.transform.dense
  mlm_head/layer_norm/{scale, bias}             <- cls.predictions.transform.LayerNorm
  mlm_head/output_bias [vocab]                  <- cls.predictions.bias
  (output projection = encoder/embeddings/word_embeddings/embedding, tied)
"""

from __future__ import annotations

from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from attnjax.layers import Encoder, EncoderConfig, activation_fn
from attnjax.models.registry import batch_arrays, groups_by_stack


class MlmHead(nn.Module):
  """``LayerNorm(act(Dense(h))) @ E^T + b``: BERT's prediction head with tied output weights.

  Attributes:
    config: the encoder's configuration (activation, LayerNorm epsilon, vocabulary).
  """

  config: EncoderConfig

  @nn.compact
  def __call__(self, hidden: jax.Array, embedding: jax.Array) -> jax.Array:
    """Maps hidden states ``[..., D]`` to float32 vocabulary logits ``[..., vocab]``.

    Args:
      hidden: ``[..., D]`` encoder outputs.
      embedding: the word embedding table ``[vocab, D]`` (tied output projection).
    """
    cfg = self.config
    act = activation_fn(cfg.activation, exact_gelu=cfg.exact_gelu)
    # Bias-free models (config.use_bias=False, ModernBERT) have a bias-free head too; the
    # output bias stays (ModernBERT's decoder has one).
    h = act(nn.Dense(cfg.hidden_size, dtype=cfg.dtype, use_bias=cfg.use_bias,
                     name="transform")(hidden))
    h = nn.LayerNorm(epsilon=cfg.layer_norm_epsilon, dtype=cfg.dtype, use_bias=cfg.use_bias,
                     name="layer_norm")(h)
    bias = self.param("output_bias", nn.initializers.zeros, (embedding.shape[0],))
    logits = jnp.einsum("...d,vd->...v", h, embedding.astype(h.dtype))
    # Logits in float32 whatever the compute dtype: the softmax over ~30k classes needs it.
    return logits.astype(jnp.float32) + bias


class MaskedLanguageModel(nn.Module):
  """Encoder + MLM head with the output projection tied to the word embeddings.

  Attributes:
    config: the encoder's configuration.
  """

  config: EncoderConfig

  def param_groups(self, params):
    """What each parameter is (``attnjax.models.ParamGroup``): the encoder's embeddings,
    blocks and norms, and the head (everything outside ``encoder``)."""
    return groups_by_stack(params, stacks={"encoder": 0}, num_layers=self.config.num_layers)

  @nn.compact
  def __call__(
      self,
      input_ids: jax.Array | Mapping[str, jax.Array],
      *,
      attention_mask: jax.Array | None = None,
      token_type_ids: jax.Array | None = None,
      deterministic: bool = True,
  ) -> jax.Array:
    """Returns float32 logits ``[batch, seq, vocab]`` for ``input_ids`` ``[batch, seq]``.

    ``input_ids`` may be the batch dict (``inputs``, optionally ``token_type_ids``, and
    ``segment_ids`` / ``positions`` of packed rows: attention stays within each sequence
    and positions restart).

    Inputs with more leading axes (``[batch, towers, seq]``) are encoded row by row and
    give logits of the same leading shape.

    With ``config.add_cls_token`` the prepended CLS vector is dropped, so the logits line up
    with ``input_ids``.
    """
    arrays = batch_arrays(input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids)
    input_ids, attention_mask = arrays["inputs"], arrays.get("attention_mask")
    token_type_ids = arrays.get("token_type_ids")
    lead = input_ids.shape[:-1]
    flat = lambda x: None if x is None else x.reshape(-1, x.shape[-1])  # noqa: E731
    input_ids, attention_mask = flat(input_ids), flat(attention_mask)
    token_type_ids = flat(token_type_ids)
    encoder = Encoder(self.config, name="encoder")
    hidden, _ = encoder(input_ids, attention_mask=attention_mask,
                        token_type_ids=token_type_ids, positions=flat(arrays.get("positions")),
                        segment_ids=flat(arrays.get("segment_ids")),
                        deterministic=deterministic)
    hidden = hidden[:, hidden.shape[1] - input_ids.shape[1]:]
    # Tying: read the table the encoder owns instead of creating a second [vocab, D] matrix.
    table = encoder.variables["params"]["embeddings"]["word_embeddings"]["embedding"]
    logits = MlmHead(self.config, name="mlm_head")(hidden, table)
    return logits.reshape(*lead, *logits.shape[1:])


def bert_masking(
    rng: jax.Array,
    input_ids: jax.Array,
    *,
    vocab_size: int,
    mask_id: int,
    special_ids: Sequence[int],
    rate: float = 0.15,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """BERT's masking (Devlin et al. 2019): select ``rate`` of the tokens, then 80/10/10.

  Every token whose id is not in ``special_ids`` (padding, CLS, SEP, ...) is selected
  independently with probability ``rate``. A selected token is replaced by ``mask_id`` with
  probability 0.8, by a random non-special token with probability 0.1, and kept with
  probability 0.1; the model must predict the original id at every selected position.

  Args:
    rng: a PRNG key.
    input_ids: int ``[..., seq]``.
    vocab_size: size of the vocabulary; random replacements are drawn from
      ``[0, vocab_size)`` minus ``special_ids``.
    mask_id: id of the mask token.
    special_ids: ids never selected nor drawn as replacements (must include padding).
    rate: selection probability, in ``(0, 1)``.

  Returns:
    ``(masked_inputs, targets, weights)``, all shaped like ``input_ids``: the corrupted
    ids (int32), the original id at selected positions and 0 elsewhere (int32), and float32
    weights, 1 at selected positions and 0 elsewhere.
  """
  if not 0.0 < rate < 1.0:
    raise ValueError(f"rate must be in (0, 1), got {rate}")
  special = np.unique(np.asarray(list(special_ids), np.int64))
  if mask_id not in special:
    # The mask token itself is never a target nor a random replacement.
    special = np.union1d(special, [mask_id])
  if special.size and (special.min() < 0 or special.max() >= vocab_size):
    raise ValueError(f"special_ids/mask_id {special.tolist()} must lie in [0, {vocab_size})")
  # Static table of allowed replacement ids: sampling an index into it avoids a per-token
  # categorical over the whole vocabulary.
  allowed = np.setdiff1d(np.arange(vocab_size), special).astype(np.int32)
  if allowed.size == 0:
    raise ValueError("every vocabulary id is special; nothing to draw replacements from")

  ids = input_ids.astype(jnp.int32)
  select_rng, action_rng, token_rng = jax.random.split(rng, 3)
  candidate = ~jnp.isin(ids, jnp.asarray(special, jnp.int32))
  selected = candidate & jax.random.bernoulli(select_rng, rate, ids.shape)
  action = jax.random.uniform(action_rng, ids.shape)
  random_tokens = jnp.asarray(allowed)[
      jax.random.randint(token_rng, ids.shape, 0, allowed.size)]
  corrupted = jnp.where(action < 0.8, jnp.int32(mask_id),
                        jnp.where(action < 0.9, random_tokens, ids))
  masked_inputs = jnp.where(selected, corrupted, ids)
  targets = jnp.where(selected, ids, 0)
  return masked_inputs, targets, selected.astype(jnp.float32)


def masked_lm_loss(logits: jax.Array, targets: jax.Array, weights: jax.Array) -> jax.Array:
  """Mean cross-entropy over the selected positions.

  Args:
    logits: ``[..., seq, vocab]``.
    targets: int ``[..., seq]`` original ids (as from :func:`bert_masking`).
    weights: ``[..., seq]``, 1 at selected positions.

  Returns:
    scalar float32; 0 when nothing is selected.
  """
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(logp, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
  w = weights.astype(jnp.float32)
  return jnp.sum(nll * w) / jnp.maximum(jnp.sum(w), 1.0)
