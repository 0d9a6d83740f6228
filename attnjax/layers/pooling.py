"""Pooling a sequence of hidden states into one vector: CLS, mean, additive attention."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnjax.registry import Registry

POOLINGS: Registry[type[nn.Module]] = Registry("pooling")


@POOLINGS.register("cls")
class ClsPooling(nn.Module):
  """Takes the first position (the CLS token or vector)."""

  @nn.compact
  def __call__(self, hidden: jax.Array, padding_mask: jax.Array) -> jax.Array:
    """``[batch, seq, D]``, ``[batch, seq]`` -> ``[batch, D]``."""
    del padding_mask
    return hidden[:, 0]


@POOLINGS.register("mean")
class MeanPooling(nn.Module):
  """Mean over real (non-padding) positions."""

  @nn.compact
  def __call__(self, hidden: jax.Array, padding_mask: jax.Array) -> jax.Array:
    """``[batch, seq, D]``, ``[batch, seq]`` -> ``[batch, D]``."""
    w = padding_mask.astype(jnp.float32)[..., None]
    total = jnp.sum(hidden.astype(jnp.float32) * w, axis=1)
    return (total / jnp.maximum(jnp.sum(w, axis=1), 1.0)).astype(hidden.dtype)


@POOLINGS.register("attention")
class AdditiveAttentionPooling(nn.Module):
  """Additive attention pooling (the article's section 5.2).

  ``score_t = w2 . tanh(W1 h_t + b1)``, softmax over real positions (padding masked),
  and the pooled vector is ``sum_t a_t h_t``. The weights ``a`` ``[batch, seq]`` are sown
  as ``pooling_weights`` in the 'intermediates' collection when it is mutable.

  Attributes:
    hidden_dim: width of ``W1``; defaults to the input width.
  """

  hidden_dim: int | None = None

  @nn.compact
  def __call__(self, hidden: jax.Array, padding_mask: jax.Array) -> jax.Array:
    """``[batch, seq, D]``, ``[batch, seq]`` -> ``[batch, D]``."""
    h = jnp.tanh(nn.Dense(self.hidden_dim or hidden.shape[-1], name="w1")(hidden))
    scores = nn.Dense(1, use_bias=False, name="w2")(h)[..., 0].astype(jnp.float32)
    scores = jnp.where(padding_mask, scores, -jnp.inf)
    any_real = jnp.any(padding_mask, axis=-1, keepdims=True)
    # A sequence with no real token pools to zeros instead of NaN.
    weights = jax.nn.softmax(jnp.where(any_real, scores, 0.0), axis=-1)
    weights = jnp.where(padding_mask, weights, 0.0)
    self.sow("intermediates", "pooling_weights", weights)
    return jnp.einsum("bs,bsd->bd", weights, hidden.astype(jnp.float32)).astype(hidden.dtype)


def get_pooling(name: str) -> type[nn.Module]:
  """Returns the pooling module class registered as ``name``."""
  return POOLINGS.get(name)
