"""Sequence (context) parallelism: ring attention on 8 fake CPU devices equals one device."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import kernels
from attnjax.kernels import dispatch
from attnjax.kernels import ring

AUTO = jax.sharding.AxisType.Auto


def _inputs(b=2, t=32, h=2, kh=1, d=8):
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  q = jax.random.normal(keys[0], (b, t, h, d))
  k = jax.random.normal(keys[1], (b, t, kh, d))
  v = jax.random.normal(keys[2], (b, t, kh, d))
  lengths = jnp.array([[20], [t]])
  mask = (jnp.arange(t)[None, :] < lengths)[:, None, None, :]  # key padding, as the encoder
  return q, k, v, mask


def _loss(q, k, v, mask, causal, implementation=None):
  out = kernels.dot_product_attention(q, k, v, mask=mask, is_causal=causal,
                                      implementation=implementation)
  return jnp.sum(out * jnp.cos(out))


@pytest.mark.parametrize("causal,shard_kernel", [(False, "xla"), (True, "xla"),
                                                 (True, "chunked")])
def test_ring_attention_equals_one_device_forward_and_backward(causal, shard_kernel,
                                                               monkeypatch):
  assert jax.device_count() == 8
  if shard_kernel == "chunked":  # every shard pair on the chunked kernel inside shard_map
    monkeypatch.setattr(dispatch, "CPU_CHUNKED_MIN_LOGIT_BYTES", 0)
    jax.clear_caches()  # the ring program traced with dense shards is cached otherwise
  q, k, v, mask = _inputs()
  grad = jax.value_and_grad(_loss, argnums=(0, 1, 2))
  want_loss, want_grads = grad(q, k, v, mask, causal, "xla")
  mesh = jax.make_mesh((2, 4), ("data", "sequence"), axis_types=(AUTO, AUTO))
  with jax.set_mesh(mesh):
    choice = kernels.explain_implementation(q, k, v, mask=mask, is_causal=causal)
    fn = jax.jit(lambda *a: grad(*a, causal))
    loss, grads = fn(q, k, v, mask)
    text = fn.lower(q, k, v, mask).as_text()
  assert choice.name == "ring" and "sequence" in choice.reason
  assert "collective_permute" in text  # keys and values travel around the ring
  assert ("stablehlo.while" in text) == (shard_kernel == "chunked")
  np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
  for g, w in zip(grads, want_grads):
    np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-5)


def test_merge_of_empty_partials_is_zero_without_nan():
  out = jnp.zeros((2, 3))
  lse = jnp.full((2,), -jnp.inf)
  merged = jax.value_and_grad(lambda o: jnp.sum(ring.merge(o, lse, o, lse)[0]))(out)
  assert float(merged[0]) == 0.0 and not np.isnan(np.asarray(merged[1])).any()


def test_ring_refuses_what_it_cannot_shard():
  q, k, v, _ = _inputs()
  mesh = jax.make_mesh((2, 4), ("data", "sequence"), axis_types=(AUTO, AUTO))
  with jax.set_mesh(mesh):
    with pytest.raises(ValueError, match="key-padding masks"):
      kernels.explain_implementation(q, k, v, mask=jnp.ones((32, 32), bool),
                                     implementation="ring")
    with pytest.raises(ValueError, match="divisible"):
      kernels.explain_implementation(q[:, :30], k[:, :30], v[:, :30], implementation="ring")
    # The automatic choice then falls back to a single-device kernel (XLA partitions it).
    assert kernels.explain_implementation(q, k, v, local_window_size=8).name != "ring"
  with pytest.raises(ValueError, match="needs a mesh"):
    kernels.explain_implementation(q, k, v, implementation="ring")


def test_sequence_axis_from_the_config_gives_the_losses_of_one_device():
  """config.parallel.mesh.sequence = 4: the train step runs ring attention, same loss."""
  from configs import default  # pylint: disable=import-outside-toplevel
  from attnjax.data import DatasetInfo  # pylint: disable=import-outside-toplevel
  from attnjax.train import aot  # pylint: disable=import-outside-toplevel
  info = DatasetInfo("digits", vocab_size=17, max_length=63, num_classes=10, num_train=1,
                     num_eval=1)
  rng = np.random.default_rng(0)
  batch = info.dummy_batch(8)
  batch["inputs"] = rng.integers(1, 17, batch["inputs"].shape).astype(np.int32)
  batch["label"] = rng.integers(0, 10, batch["label"].shape).astype(batch["label"].dtype)
  batch["inputs"][0, 40:] = 0  # padding: the key mask travels with the keys
  losses, texts = [], []
  for strategy, data, sequence in (("jit", 1, 1), ("mesh", 2, 4)):
    c = default.get_config("smoke")
    c.model.dropout_rate = 0.0
    c.train.batch_size = 8
    c.parallel.strategy = strategy
    c.parallel.mesh.data, c.parallel.mesh.sequence = data, sequence
    s = aot.abstract_train_step(c, info)
    rng = jax.random.PRNGKey(0)
    state = s.strategy.init_state(s.init_state, jax.eval_shape(s.init_state, rng), rng)
    texts.append(s.step.lower(s.state, s.batch).as_text())
    _, metrics = s.step(state, s.strategy.put_batch(batch))
    losses.append(float(metrics["loss"]))
  assert "collective_permute" in texts[1] and "collective_permute" not in texts[0]
  np.testing.assert_allclose(losses[1], losses[0], rtol=2e-5)
