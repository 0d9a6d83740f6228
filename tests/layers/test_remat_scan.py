"""Rematerialisation and scan-over-layers change cost, never results."""

import jax
import jax.numpy as jnp
import numpy as np

from attnjax.layers import Encoder, EncoderConfig


def _cfg(**kw):
  return EncoderConfig(vocab_size=20, max_length=8, hidden_size=16, num_layers=3, num_heads=4,
                       mlp_dim=32, dropout_rate=0.0, **kw)


def _loss(enc, params, ids):
  return jnp.sum(enc.apply({"params": params}, ids)[0] ** 2)


def test_remat_gives_the_same_loss_and_gradients():
  ids = jnp.array([[3, 4, 5, 6, 7, 0, 0, 0]])
  plain, remat = Encoder(_cfg()), Encoder(_cfg(remat=True))
  params = plain.init(jax.random.PRNGKey(0), ids)["params"]
  assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(
      remat.init(jax.random.PRNGKey(0), ids)["params"])
  np.testing.assert_allclose(_loss(remat, params, ids), _loss(plain, params, ids), rtol=1e-6)
  for a, b in zip(jax.tree_util.tree_leaves(jax.grad(_loss, 1)(remat, params, ids)),
                  jax.tree_util.tree_leaves(jax.grad(_loss, 1)(plain, params, ids))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_scan_layers_equals_the_loop_over_stacked_parameters():
  ids = jnp.array([[3, 4, 5, 6, 7, 0, 0, 0]])
  plain, scanned = Encoder(_cfg()), Encoder(_cfg(scan_layers=True, remat=True))
  params = plain.init(jax.random.PRNGKey(0), ids)["params"]
  stacked = {k: v for k, v in params.items() if not k.startswith("layer_")}
  stacked["layers"] = {"block": jax.tree_util.tree_map(
      lambda *xs: jnp.stack(xs), *[params[f"layer_{i}"] for i in range(3)])}
  shapes = jax.eval_shape(lambda: scanned.init(jax.random.PRNGKey(0), ids))["params"]
  assert jax.tree_util.tree_structure(shapes) == jax.tree_util.tree_structure(stacked)
  np.testing.assert_allclose(scanned.apply({"params": stacked}, ids)[0],
                             plain.apply({"params": params}, ids)[0], atol=1e-5)
