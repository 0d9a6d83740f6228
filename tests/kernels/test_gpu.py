"""GPU backends (cuDNN, Pallas) against the XLA path; skipped where there is no GPU."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import kernels

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs a GPU"),
]


def _qkv(dtype=jnp.bfloat16, b=2, t=512, h=8, d=128):
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  return [jax.random.normal(k, (b, t, h, d), dtype) for k in keys]


@pytest.mark.parametrize("implementation", ["cudnn", "pallas"])
@pytest.mark.parametrize("is_causal", [False, True])
def test_gpu_backend_matches_xla(implementation, is_causal):
  q, k, v = _qkv()
  want = kernels.dot_product_attention(q, k, v, is_causal=is_causal, implementation="xla")
  got = kernels.dot_product_attention(q, k, v, is_causal=is_causal,
                                      implementation=implementation)
  np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                             atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("implementation", ["cudnn", "pallas"])
def test_gpu_backend_gradients_match_xla(implementation):
  q, k, v = _qkv(t=256)

  def loss(impl, q, k, v):
    return jnp.sum(kernels.dot_product_attention(q, k, v, implementation=impl)
                   .astype(jnp.float32) ** 2)

  want = jax.grad(loss, argnums=(1, 2, 3))("xla", q, k, v)
  got = jax.grad(loss, argnums=(1, 2, 3))(implementation, q, k, v)
  for g, w in zip(got, want):
    np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(w, np.float32),
                               atol=5e-2, rtol=5e-2)


def test_automatic_choice_on_gpu_says_why():
  q, k, v = _qkv()
  choice = kernels.explain_implementation(q, k, v)
  assert choice.name in ("cudnn", "pallas", "xla", "chunked") and choice.reason
