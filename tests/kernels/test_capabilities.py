"""Declared capabilities agree with what the kernels do."""

import jax
import jax.numpy as jnp
import pytest

from attnjax import kernels


@pytest.mark.parametrize("name", kernels.list_kernels())
def test_supports_dropout_flag_matches_behaviour(name):
  kernel = kernels.get_kernel(name)
  q = k = v = jnp.ones((1, 8, 2, 4))
  params = kernels.init_params(kernel, jax.random.PRNGKey(0), num_heads=2, num_kv_heads=2,
                               head_dim=4, q_len=8, kv_len=8)
  extra = {"params": params} if params else {}
  call = lambda: kernel(q, k, v, dropout_rate=0.5, dropout_rng=jax.random.PRNGKey(1),  # noqa: E731
                        deterministic=False, **extra)
  if getattr(kernel, "supports_dropout", True):
    assert call().shape == (1, 8, 2, 4)
  else:
    with pytest.raises(ValueError, match="dropout_rate"):
      call()
