"""Head importance by masking one head at a time, on a tiny classifier."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from attnjax.inspect.importance import attention_layer_paths, head_importance, mask_head
from attnjax.layers import EncoderConfig
from attnjax.models import SequenceClassifier

IDS = jax.random.randint(jax.random.PRNGKey(3), (8, 5), 1, 10)
LABELS = jnp.arange(8) % 3


def _model():
  cfg = EncoderConfig(vocab_size=10, max_length=5, hidden_size=12, num_layers=2, num_heads=3,
                      mlp_dim=16, add_cls_token=True, dropout_rate=0.0)
  model = SequenceClassifier(cfg, num_classes=3)
  return model, jax.jit(model.init)(jax.random.PRNGKey(0), IDS)["params"]


def _loss(model):
  def loss_fn(params):
    logits = model.apply({"params": params}, IDS)
    return optax.softmax_cross_entropy_with_integer_labels(logits, LABELS).mean()
  return loss_fn


def test_attention_layers_are_found_in_numeric_order():
  leaf = {"query": 0, "key": 0, "value": 0, "out": 0}
  tree = {"encoder": {f"layer_{i}": {"attention": leaf, "mlp": {}} for i in (10, 2, 9, 0)}}
  assert [p[1] for p in attention_layer_paths(tree)] == ["layer_0", "layer_2", "layer_9",
                                                         "layer_10"]


def test_masking_the_output_slice_removes_exactly_that_heads_contribution():
  model, params = _model()
  path = ("encoder", "layer_1", "attention")
  masked = mask_head(params, path, 2)
  # Independent way to silence head 2: zero its values (then its output o_2 = A @ 0 = 0).
  value = params["encoder"]["layer_1"]["attention"]["value"]
  zero_v = {"kernel": value["kernel"].at[:, 2].set(0.0), "bias": value["bias"].at[2].set(0.0)}
  layer = dict(params["encoder"]["layer_1"])
  layer["attention"] = dict(layer["attention"], value=zero_v)
  silenced = dict(params, encoder=dict(params["encoder"], layer_1=layer))
  apply = jax.jit(lambda p: model.apply({"params": p}, IDS))
  out = apply(masked)
  np.testing.assert_allclose(out, apply(silenced), atol=1e-5)
  assert np.abs(out - apply(params)).max() > 1e-4
  # The original parameters are untouched.
  assert np.abs(params["encoder"]["layer_1"]["attention"]["out"]["kernel"][2]).max() > 0


def test_head_importance_is_the_loss_change_per_masked_head():
  model, params = _model()
  # Head 1 of layer 0 already contributes nothing: its importance must be exactly 0.
  params = mask_head(params, ("encoder", "layer_0", "attention"), 1)
  loss_fn = jax.jit(_loss(model))
  importance, base, names = head_importance(loss_fn, params)
  assert importance.shape == (2, 3)
  assert names == ["encoder/layer_0/attention", "encoder/layer_1/attention"]
  assert base == np.float32(loss_fn(params))
  assert importance[0, 1] == 0.0
  expected = float(loss_fn(mask_head(params, ("encoder", "layer_1", "attention"), 0))) - base
  np.testing.assert_allclose(importance[1, 0], expected, rtol=1e-4, atol=1e-6)
  assert np.abs(importance).max() > 0


def test_stacked_scan_parameters_mask_one_layer_of_the_stack():
  kernel = jnp.ones((2, 3, 4, 12))  # [layers, heads, head_dim, hidden]
  params = {"layers": {"block": {"attention": {
      "query": {}, "key": {}, "value": {}, "out": {"kernel": kernel}}}}}
  masked = mask_head(params, ("layers", "block", "attention"), 2, layer_index=1)
  k = masked["layers"]["block"]["attention"]["out"]["kernel"]
  assert float(k[1, 2].sum()) == 0.0 and float(k.sum()) == 2 * 3 * 4 * 12 - 4 * 12
