"""Two-tower SequenceClassifier (LRA Retrieval): one shared encoder, [u, v, u*v, u-v], MLP."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from attnjax.layers import Encoder
from attnjax.models import build_classifier

D, MLP, CLASSES, LENGTH = 16, 32, 2, 12


def _model(pooling: str = "cls"):
  config = ml_collections.ConfigDict(dict(
      preset="", num_layers=1, hidden_size=D, num_heads=2, mlp_dim=MLP, dropout_rate=0.0,
      attention_dropout_rate=0.0, pre_layer_norm=True, position="learned",
      add_cls_token=True, pooling=pooling, head_dropout_rate=0.0,
      dtype="float32", attention=ml_collections.ConfigDict(dict(kernel="dot_product"))))
  return build_classifier(config, vocab_size=20, max_length=LENGTH, num_classes=CLASSES,
                          towers=2)


def _inputs() -> jnp.ndarray:
  rng = np.random.default_rng(0)
  ids = rng.integers(1, 20, size=(3, 2, LENGTH)).astype(np.int32)
  ids[0, 0, 5:] = 0   # each document padded on its own
  ids[0, 1, 9:] = 0
  ids[1, 1, 2:] = 0
  return jnp.asarray(ids)


@pytest.fixture(scope="module")
def init():
  """``init(pooling) -> (model, ids, params)``; one initialisation serves both poolings
  (neither has parameters of its own)."""
  model, ids = _model("cls"), _inputs()
  params = jax.jit(model.init)(jax.random.PRNGKey(0), ids)["params"]
  return lambda pooling="cls": (model.clone(pooling=pooling), ids, params)


def _count(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(tree)))


def test_one_shared_encoder_plus_the_head():
  model, ids = _model(), _inputs()
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), ids)["params"]
  assert sorted(params) == ["encoder", "head", "tower_mlp1", "tower_mlp2"]
  encoder = _count(jax.eval_shape(Encoder(model.encoder).init, jax.random.PRNGKey(0),
                                  ids[:, 0]))
  head = (4 * D * MLP + MLP) + (MLP * (MLP // 2) + MLP // 2) + (MLP // 2 * CLASSES + CLASSES)
  assert _count(params) == encoder + head


def test_logits_are_the_mlp_of_u_v_product_and_difference(init):
  model, ids, params = init("cls")

  @jax.jit
  def tower(x):  # the shared encoder on one document per row, CLS-pooled
    hidden, _ = Encoder(model.encoder).apply({"params": params["encoder"]}, x)
    return hidden[:, 0]

  @jax.jit
  def head(features):
    x = jax.nn.relu(features @ params["tower_mlp1"]["kernel"] + params["tower_mlp1"]["bias"])
    x = jax.nn.relu(x @ params["tower_mlp2"]["kernel"] + params["tower_mlp2"]["bias"])
    return x @ params["head"]["kernel"] + params["head"]["bias"]

  apply = jax.jit(model.apply)
  u, v = tower(ids[:, 0]), tower(ids[:, 1])
  logits = apply({"params": params}, ids)
  np.testing.assert_allclose(logits, head(jnp.concatenate([u, v, u * v, u - v], -1)),
                             rtol=1e-5, atol=1e-5)
  # Swapped towers: u and v trade places, u*v is unchanged and u-v changes sign.
  swapped = apply({"params": params}, ids[:, ::-1])
  np.testing.assert_allclose(swapped, head(jnp.concatenate([v, u, u * v, v - u], -1)),
                             rtol=1e-5, atol=1e-5)
  assert not np.allclose(swapped, logits, atol=1e-4)  # the order matters through u-v


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_each_towers_padding_is_masked(init, pooling):
  model, ids, params = init(pooling)
  apply = jax.jit(lambda x, mask: model.apply({"params": params}, x, attention_mask=mask))
  mask = ids != 0
  logits = apply(ids, mask)
  # What sits under the padding mask, in either tower, changes nothing.
  garbage = jnp.where(mask, ids, 7)
  np.testing.assert_allclose(apply(garbage, mask), logits, rtol=1e-5, atol=1e-6)
  # Unmasked, the same ids are read as tokens: the mask is what hides them.
  assert not np.allclose(apply(garbage, garbage != 0), logits, atol=1e-4)


def test_two_tower_inputs_must_be_batch_by_two():
  model = _model()
  with pytest.raises(ValueError, match=r"input_ids must be \[batch, 2, seq\].*\(3, 12\)"):
    model.init(jax.random.PRNGKey(0), jnp.ones((3, LENGTH), jnp.int32))
  with pytest.raises(ValueError, match="towers=3"):
    build_classifier(ml_collections.ConfigDict(dict(pooling="mean")), vocab_size=20,
                     max_length=LENGTH, num_classes=2, towers=3)
