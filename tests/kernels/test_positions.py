"""Position functions: RoPE, ALiBi slopes, T5 relative buckets."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax.kernels import alibi_slopes, apply_rotary, relative_position_bucket


def _rope_reference(x, positions, base=10000.0):
  """float64 NumPy RoPE over halves (GPT-NeoX layout)."""
  x = np.asarray(x, np.float64)
  d = x.shape[-1]
  half = d // 2
  inv = base ** (-np.arange(half) * 2.0 / d)
  ang = np.asarray(positions, np.float64)[:, None, None] * inv  # [seq, 1, half]
  x1, x2 = x[..., :half], x[..., half:]
  return np.concatenate([x1 * np.cos(ang) - x2 * np.sin(ang),
                         x2 * np.cos(ang) + x1 * np.sin(ang)], -1)


def test_rope_matches_reference_and_keeps_norms():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 3, 8))
  y = apply_rotary(x)
  np.testing.assert_allclose(y, _rope_reference(x, np.arange(7)), atol=1e-5)
  np.testing.assert_allclose(jnp.linalg.norm(y, axis=-1), jnp.linalg.norm(x, axis=-1), rtol=1e-5)


def test_rope_scores_depend_only_on_relative_position():
  q = jax.random.normal(jax.random.PRNGKey(1), (1, 1, 1, 16))
  k = jax.random.normal(jax.random.PRNGKey(2), (1, 1, 1, 16))

  def score(m, n):
    return float(jnp.sum(apply_rotary(q, jnp.array([m])) * apply_rotary(k, jnp.array([n]))))

  assert score(3, 1) == pytest.approx(score(10, 8), rel=1e-5)
  assert score(3, 1) != pytest.approx(score(3, 2), rel=1e-3)


def test_rope_interleaved_is_the_halves_layout_permuted():
  x = jax.random.normal(jax.random.PRNGKey(3), (1, 5, 2, 8))
  perm = np.array([0, 2, 4, 6, 1, 3, 5, 7])  # adjacent pairs -> halves
  inter = apply_rotary(x, interleaved=True)
  halves = apply_rotary(x[..., perm])
  np.testing.assert_allclose(inter[..., perm], halves, atol=1e-6)


def test_partial_rope_leaves_the_rest_untouched_and_keeps_dtype():
  x = jax.random.normal(jax.random.PRNGKey(4), (1, 5, 2, 8)).astype(jnp.bfloat16)
  y = apply_rotary(x, rotary_dim=4)
  assert y.dtype == jnp.bfloat16
  np.testing.assert_array_equal(y[..., 4:], x[..., 4:])
  with pytest.raises(ValueError, match="rotary_dim must be even"):
    apply_rotary(x, rotary_dim=3)


@pytest.mark.parametrize("heads", [8, 12])
def test_alibi_slopes_follow_the_paper(heads):
  def geometric(n):
    return [2 ** (-8 * i / n) for i in range(1, n + 1)]
  if heads == 8:
    expected = geometric(8)
  else:  # 12 = 8 from the power of two below, then every other slope of 16
    expected = geometric(8) + geometric(16)[0::2][:4]
  np.testing.assert_allclose(alibi_slopes(heads), expected, rtol=1e-6)


def _t5_bucket(rel, num_buckets=32, max_distance=128, bidirectional=True):
  """Scalar reference of T5's bucketing; rel = key - query."""
  n, ret = -rel, 0
  if bidirectional:
    num_buckets //= 2
    ret += num_buckets if n < 0 else 0
    n = abs(n)
  else:
    n = max(n, 0)
  exact = num_buckets // 2
  if n < exact:
    return ret + n
  v = exact + int(math.log(n / exact) / math.log(max_distance / exact) * (num_buckets - exact))
  return ret + min(v, num_buckets - 1)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_relative_buckets_match_t5(bidirectional):
  rel = np.arange(-300, 301)
  got = np.asarray(relative_position_bucket(jnp.asarray(rel), bidirectional=bidirectional))
  want = [_t5_bucket(int(r), bidirectional=bidirectional) for r in rel]
  np.testing.assert_array_equal(got, want)
