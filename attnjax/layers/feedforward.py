"""The position-wise feed-forward block of the Transformer."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def activation_fn(name: str, *, exact_gelu: bool = False):
  """Returns the activation ``jax.nn.<name>``; an unknown name is a ValueError."""
  if name == "gelu":
    return functools.partial(jax.nn.gelu, approximate=not exact_gelu)
  fn = getattr(jax.nn, name, None)
  if fn is None or not callable(fn):
    raise ValueError(f"unknown activation {name!r}; use a function name from jax.nn "
                     "such as 'gelu', 'relu' or 'silu'")
  return fn


class FeedForward(nn.Module):
  """``Dense(mlp_dim) -> activation -> dropout -> Dense(D)`` applied to every position.

  Gated (``gated=True``, GeGLU / SwiGLU of Shazeer 2020): ``wi`` projects to ``2 * mlp_dim``
  features whose first half ``a`` is activated and whose second half ``g`` gates it,
  ``Dense(D)(dropout(act(a) * g))``; the layout of ModernBERT's ``Wi``.

  Attributes:
    mlp_dim: hidden width.
    activation: name of a ``jax.nn`` activation.
    exact_gelu: erf GELU instead of the tanh approximation.
    dropout_rate: dropout after the activation.
    dtype: computation dtype.
    use_bias: biases in both projections.
    gated: a gated linear unit (see above).
  """

  mlp_dim: int
  activation: str = "gelu"
  exact_gelu: bool = False
  dropout_rate: float = 0.0
  dtype: Any = None
  use_bias: bool = True
  gated: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool = True) -> jax.Array:
    """Maps ``[..., D]`` to ``[..., D]``."""
    act = activation_fn(self.activation, exact_gelu=self.exact_gelu)
    width = 2 * self.mlp_dim if self.gated else self.mlp_dim
    h = nn.Dense(width, dtype=self.dtype, use_bias=self.use_bias, name="wi")(x)
    if self.gated:
      h, gate = jnp.split(h, 2, axis=-1)
      h = act(h) * gate
    else:
      h = act(h)
    h = nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
    return nn.Dense(x.shape[-1], dtype=self.dtype, use_bias=self.use_bias, name="wo")(h)
