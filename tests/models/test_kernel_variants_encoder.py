"""Every registered kernel drives the encoder: build, forward and backward, by name."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from attnjax import kernels
from attnjax.models import build_classifier

# Small-shape options per kernel (config.model.attention.<option>); defaults otherwise.
_OPTIONS = {
    "sliding_window": {"window_size": 2},
    "dilated_window": {"window_size": 1, "dilation": 2},
    "longformer": {"window_size": 2},
    "bigbird": {"block_size": 2},
    "sparse_fixed": {"block_size": 4, "summary_size": 1},
    "sparse_strided": {"stride": 3},
    "performer": {"num_features": 16},
    "linformer": {"projected_length": 4},
    "nystromformer": {"num_landmarks": 3},
    "reformer": {"num_buckets": 4, "chunk_size": 4},
    "sinkhorn": {"block_size": 4},
}


def _config(kernel: str) -> ml_collections.ConfigDict:
  attention = {"kernel": kernel, **_OPTIONS.get(kernel, {})}
  return ml_collections.ConfigDict(dict(
      preset="", num_layers=1, hidden_size=16, num_heads=2, mlp_dim=32, dropout_rate=0.0,
      attention_dropout_rate=0.0, pre_layer_norm=True, position="learned", add_cls_token=True,
      pooling="cls", head_dropout_rate=0.0, dtype="float32",
      attention=ml_collections.ConfigDict(attention)))


@pytest.mark.parametrize("kernel", kernels.list_kernels())
def test_classifier_forward_and_backward(kernel):
  model = build_classifier(_config(kernel), vocab_size=10, max_length=8, num_classes=3)
  ids = jnp.array([[1, 2, 3, 4, 5, 0, 0, 0], [3, 4, 5, 6, 7, 8, 9, 1]])
  params = model.init(jax.random.PRNGKey(0), ids)["params"]
  spec = kernels.params_spec(kernels.get_kernel(kernel), num_heads=2, num_kv_heads=2,
                             head_dim=8, q_len=9, kv_len=9, **_OPTIONS.get(kernel, {}))
  kernel_params = jax.tree_util.tree_leaves(
      jax.tree_util.tree_map_with_path(
          lambda path, x: x if "kernel_params" in jax.tree_util.keystr(path) else None,
          params))
  assert len(kernel_params) == len(spec), kernel  # created by the layer, one per declared

  def loss(params):
    logits = model.apply({"params": params}, ids)
    return jnp.sum(jax.nn.log_softmax(logits)[:, 0])

  value, grads = jax.jit(jax.value_and_grad(loss))(params)
  assert np.isfinite(value)
  leaves = jax.tree_util.tree_leaves(grads)
  assert all(np.all(np.isfinite(g)) for g in leaves)
  assert sum(float(jnp.abs(g).sum()) for g in leaves) > 0
  # Padding is respected: changing a padded token changes nothing.
  ids2 = ids.at[0, 6].set(9)
  out1 = model.apply({"params": params}, ids)
  out2 = model.apply({"params": params}, ids2, attention_mask=ids != 0)
  np.testing.assert_allclose(out1[0], out2[0], atol=1e-5)


@pytest.mark.parametrize("kernel", kernels.list_kernels())
def test_attention_maps_can_be_extracted(kernel):
  from attnjax.inspect import extract  # pylint: disable=import-outside-toplevel
  model = build_classifier(_config(kernel), vocab_size=10, max_length=8, num_classes=3)
  ids = jnp.array([[1, 2, 3, 4, 5, 0, 0, 0]])
  params = model.init(jax.random.PRNGKey(0), ids)["params"]
  try:
    maps = extract.extract_attention(model, {"params": params}, ids)
  except ValueError as e:  # a kernel whose output is not A @ V says so, naming itself
    assert kernel in str(e) or "linear in the values" in str(e), e
    return
  (w,) = maps.weights
  assert w.shape == (1, 2, 9, 9) and np.all(np.isfinite(w))
  # Padded keys (positions 6..8 after the CLS vector) get no weight from any query.
  np.testing.assert_allclose(w[..., 6:], 0.0, atol=1e-6)


# An exact sparse kernel, a randomised approximation and one with parameters of its own
# (the encoder-level tests above cover the rest): the whole loop
# (train, eval, checkpoint, resume-as-finished) runs with each.
@pytest.mark.parametrize("kernel", ["sliding_window", "performer", "linformer"])
def test_training_loop_and_checkpoints_run_with_the_kernel(kernel, smoke_config, tmp_path):
  from attnjax.train import train_and_evaluate  # pylint: disable=import-outside-toplevel
  smoke_config.model.attention.kernel = kernel
  with smoke_config.model.attention.unlocked():
    for key, value in _OPTIONS.get(kernel, {}).items():
      smoke_config.model.attention[key] = value
  workdir = str(tmp_path / kernel)
  first = train_and_evaluate(smoke_config, workdir)
  assert np.isfinite(first["loss"])
  assert train_and_evaluate(smoke_config, workdir) == first  # restored from its checkpoint
