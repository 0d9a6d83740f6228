"""Optimizer and schedule construction."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from attnjax.train import build_optimizer
from attnjax.train.optimizers import decay_mask


def _opt(**kw):
  c = ml_collections.ConfigDict(dict(name="adamw", learning_rate=1e-3, schedule="cosine",
                                     warmup_steps=10, end_lr_factor=0.0, weight_decay=0.1,
                                     b1=0.9, b2=0.999, eps=1e-8, grad_clip_norm=1.0))
  c.update(kw)
  return c


def test_warmup_then_cosine_to_end_value():
  _, schedule = build_optimizer(_opt(end_lr_factor=0.1), 110)
  assert float(schedule(0)) == 0.0
  np.testing.assert_allclose(float(schedule(10)), 1e-3, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(60)), 1e-3 * (0.1 + 0.9 * 0.5), rtol=1e-5)
  np.testing.assert_allclose(float(schedule(110)), 1e-4, rtol=1e-5)


def test_weight_decay_only_on_matrices():
  params = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)},
            "norm": {"scale": jnp.ones(2)}}
  mask = decay_mask(params)
  assert mask == {"dense": {"kernel": True, "bias": False}, "norm": {"scale": False}}


def test_gradient_clipping_bounds_the_update():
  tx, _ = build_optimizer(_opt(name="sgd", schedule="constant", warmup_steps=0,
                               learning_rate=1.0, weight_decay=0.0, b1=0.0,
                               grad_clip_norm=1.0), 10)
  params = {"w": jnp.zeros(4)}
  updates, _ = tx.update({"w": jnp.full(4, 100.0)}, tx.init(params), params)
  np.testing.assert_allclose(float(jnp.linalg.norm(updates["w"])), 1.0, rtol=1e-5)


def test_unknown_names_and_bad_warmup_are_errors():
  with pytest.raises(ValueError, match="unknown optimizer 'lamb2'"):
    build_optimizer(_opt(name="lamb2"), 10)
  with pytest.raises(ValueError, match="unknown schedule 'step'"):
    build_optimizer(_opt(schedule="step"), 10)
  with pytest.raises(ValueError, match="warmup_steps=20 must be in"):
    build_optimizer(_opt(warmup_steps=20), 10)
