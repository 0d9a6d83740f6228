"""The kernel contract's edges: bad values refused, jax.nn differences pinned, flax use.

README's "Differences from jax.nn" and its list of kernels usable as flax's
``attention_fn`` are checked here.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import kernels
from kernel_reference import random_inputs, reference_attention

B, T, S, H, KH, D = 2, 5, 6, 2, 1, 4


def _qkv(seed=0, t=T, s=S, dtype=np.float32):
  return random_inputs(np.random.default_rng(seed), batch=(B,), t=t, s=s, h=H, kh=KH, d=D,
                       dtype=dtype)


def _padding(s=S):
  m = np.ones((B, 1, 1, s), bool)
  m[1, ..., s - 2:] = False
  return m


# ------------------------------------------------------------------ values refused


_ADDITIVE = np.where(np.arange(S) < 4, 0.0, -1e9).astype(np.float32)  # [S], 0 = attend

_BAD_VALUES = [
    ("additive_mask", "dot_product", dict(mask=_ADDITIVE), "as bias="),
    ("additive_mask_inf", "chunked", dict(mask=np.where(_ADDITIVE < 0, -np.inf, 0.0)),
     "as bias="),
    ("fractional_mask", "dot_product", dict(mask=np.full((S,), 0.5, np.float32)),
     "only 0 .masked. and 1"),
    ("int_mask_2", "dot_product", dict(mask=np.full((S,), 2, np.int32)), "only 0"),
    ("additive_mask_linear", "linear", dict(mask=_ADDITIVE), "as bias="),
    ("scale_nan", "dot_product", dict(scale=float("nan")), "scale must be finite"),
    ("scale_inf", "chunked", dict(scale=np.inf), "scale must be finite"),
    ("scale_str", "dot_product", dict(scale="0.5"), "scale must be a real number"),
    ("scale_vector", "dot_product", dict(scale=np.ones(2)), "scale must be a real scalar"),
    ("scale_nan_cosine", "cosine", dict(scale=float("nan")), "scale must be finite"),
    ("scale_nan_linear", "linear", dict(scale=float("nan")), "scale must be finite"),
    ("q_lengths_negative", "dot_product", dict(query_seq_lengths=np.array([3, -1])),
     r"query_seq_lengths must lie in \[0, q_seq = 5\]"),
    ("kv_lengths_too_long", "chunked", dict(key_value_seq_lengths=np.array([7, 2])),
     r"key_value_seq_lengths must lie in \[0, kv_seq = 6\], got values in \[2, 7\]"),
    ("cross_reformer", "reformer", dict(num_buckets=2, chunk_size=2), "cross-attention"),
    ("cross_sinkhorn", "sinkhorn", dict(block_size=2), "cross-attention"),
]


@pytest.mark.parametrize("case,name,kw,words", _BAD_VALUES, ids=[c[0] for c in _BAD_VALUES])
def test_bad_values_raise_one_line_value_error(case, name, kw, words):
  del case
  q, k, v = _qkv()
  with pytest.raises(ValueError, match=words) as e:  # raised before any parameter is read
    kernels.get_kernel(name)(q, k, v, **kw)
  assert "\n" not in str(e.value)


def test_numeric_masks_read_as_zero_one_and_traced_additive_masks_mask_everything():
  q, k, v = _qkv(1)
  pad = _padding()
  ref = kernels.dot_product_attention(q, k, v, mask=pad)
  # flax's make_attention_mask gives float32 0/1 masks: eagerly and under jit, 1 = attend.
  np.testing.assert_array_equal(kernels.dot_product_attention(q, k, v, mask=pad * 1.0), ref)
  jitted = jax.jit(lambda q, m: kernels.dot_product_attention(q, k, v, mask=m))
  np.testing.assert_array_equal(jitted(q, pad.astype(np.float32)), ref)
  # Under jit the values are unknown: a 0 / -1e9 additive mask attends where positive, i.e.
  # nowhere, and outputs zeros, rather than attending exactly to the keys it masks.
  additive = np.where(pad, 0.0, -1e9).astype(np.float32)
  np.testing.assert_array_equal(jitted(q, additive), np.zeros_like(ref))


# ------------------------------------------------------------ differences from jax.nn


@pytest.mark.parametrize("implementation", ["xla", "chunked"])
def test_traced_scale_is_a_learnable_temperature_like_jax_nn(implementation):
  q, k, v = _qkv(2, s=T)
  kh = np.repeat(k, H // KH, axis=-2)
  vh = np.repeat(v, H // KH, axis=-2)

  def ours(scale):
    return kernels.dot_product_attention(q, k, v, scale=scale, is_causal=True,
                                         implementation=implementation)

  def theirs(scale):
    return jax.nn.dot_product_attention(q, kh, vh, scale=scale, is_causal=True)

  value_and_grad = lambda f: jax.jit(jax.value_and_grad(  # noqa: E731
      lambda s: jnp.sum(f(s) ** 2)))(0.7)
  for a, b in zip(value_and_grad(ours), value_and_grad(theirs)):
    np.testing.assert_allclose(a, b, rtol=1e-5)
  with pytest.raises(ValueError, match="traced scale must be a float scalar"):
    jax.jit(ours)(jnp.ones(2))


@pytest.mark.parametrize("implementation", ["xla", "chunked"])
def test_lse_residual_is_differentiable(implementation):
  # jax.nn stops the gradient of its residual; here d lse_i / d q_i = scale sum_j p_ij k_j.
  q, k, v = _qkv(3)
  mask = np.random.default_rng(3).random((B, 1, T, S)) < 0.7
  mask[:, :, 0] = False  # a fully masked row: lse -inf, zero gradient

  def total_lse(q):
    _, lse = kernels.dot_product_attention(q, k, v, mask=mask, implementation=implementation,
                                           return_residual=True)
    return jnp.sum(jnp.where(jnp.isfinite(lse), lse, 0.0))

  dq = jax.jit(jax.grad(total_lse))(q)
  _, _, probs = reference_attention(*(np.asarray(x, np.float64) for x in (q, k, v)),
                                    mask=mask)  # [B, H, T, S]
  kr = np.repeat(np.asarray(k, np.float64), H // KH, axis=-2)  # [B, S, H, D]
  want = np.einsum("bhts,bshd->bthd", probs, kr) / np.sqrt(D)
  np.testing.assert_allclose(dq, want, atol=2e-5)
  assert np.all(dq[:, 0] == 0.0)


def test_debug_infs_quiet_on_fully_masked_rows_without_residual():
  q, k, v = _qkv(4)
  mask = np.ones((B, 1, T, S), bool)
  mask[:, :, 0] = False
  # Eagerly, debug_infs checks the outputs of each compiled program: under autodiff those
  # are the forward's output and the residuals the chunked backward pass keeps (the
  # -inf log-sum-exp of fully masked rows leaves only with return_residual).
  with jax.debug_infs(True):
    dq = jax.block_until_ready(jax.grad(lambda q: jnp.sum(kernels.dot_product_attention(
        q, k, v, mask=mask, implementation="chunked")))(q))
  assert np.all(dq[:, 0] == 0) and np.all(np.isfinite(dq))


def test_chunked_backward_error_does_not_grow_with_logit_scale():
  # Logits near 1e3: recomputing probabilities from a float32 lse put ~1e3 * 2^-24 on each
  # of them (dv ~100x the dense path's error); the saved (max, log-sum) pair keeps dv at
  # par. dq and dk carry scale x rounding in both paths (jax.nn's too).
  rng = np.random.default_rng(5)
  q, k, v = random_inputs(rng, batch=(1,), t=8, s=8, h=2, kh=2, d=8)
  cot = rng.normal(size=v.shape).astype(np.float32)

  def grads(impl, dtype):
    blocks = {"block_q": 4, "block_kv": 4} if impl == "chunked" else {}
    f = lambda q, k, v: jnp.sum(kernels.dot_product_attention(  # noqa: E731
        q, k, v, scale=1e3, implementation=impl, **blocks) * jnp.asarray(cot, dtype))
    g = jax.jit(jax.grad(f, argnums=(0, 1, 2)))(*(jnp.asarray(x, dtype) for x in (q, k, v)))
    return [np.asarray(x, np.float64) for x in g]

  with jax.enable_x64(True):
    exact = grads("xla", jnp.float64)
  dense, chunked = grads("xla", jnp.float32), grads("chunked", jnp.float32)
  for name, d, c, e, factor in zip("qkv", dense, chunked, exact, (5, 5, 3)):
    err_dense, err_chunked = np.max(np.abs(d - e)), np.max(np.abs(c - e))
    assert err_chunked <= factor * err_dense, (name, err_chunked, err_dense)


# --------------------------------------------------------------- flax's attention_fn

# Every registered kernel works as flax.linen.MultiHeadDotProductAttention's attention_fn
# (README "Use a kernel in your own project"); these refuse some of flax's inputs, each
# with a ValueError naming it. Keep in sync with the README.
SOW_WEIGHTS_REFUSED = {"differential", "linear", "linformer", "nystromformer", "performer",
                       "reformer", "sigmoid", "sinkhorn"}
QUERY_VARYING_MASK_REFUSED = {"linear", "linformer", "nystromformer", "performer", "reformer",
                              "sinkhorn"}
CROSS_ATTENTION_REFUSED = {"reformer", "sinkhorn"}
LEARNABLE = {"additive", "cosine", "differential", "general", "linformer", "sinkhorn",
             "synthesizer_dense", "synthesizer_random"}

# Small-shape options (test_variants.CAPS has the same; repeated to keep this file apart).
_OPTIONS = {
    "sliding_window": {"window_size": 3},
    "dilated_window": {"window_size": 2, "dilation": 2},
    "longformer": {"window_size": 2, "num_global_tokens": 2},
    "bigbird": {"block_size": 4, "num_random_blocks": 1},
    "sparse_fixed": {"block_size": 4, "summary_size": 1},
    "sparse_strided": {"stride": 3},
    "linear": {"chunk_size": 4},
    "performer": {"num_features": 16, "chunk_size": 4},
    "linformer": {"projected_length": 5},
    "nystromformer": {"num_landmarks": 4},
    "reformer": {"num_buckets": 4, "chunk_size": 4},
    "sinkhorn": {"block_size": 4},
    "cosine": {"learnable_scale": True},
}


def _mha(name, **options):
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  fn = functools.partial(kernels.get_kernel(name), **{**_OPTIONS.get(name, {}), **options})
  return nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=8, attention_fn=fn)


_X = np.random.default_rng(6).normal(size=(B, 8, 6)).astype(np.float32)
_Y = np.random.default_rng(7).normal(size=(B, 12, 6)).astype(np.float32)


def test_learnable_kernels_are_exactly_those_with_parameters():
  declared = {n for n in kernels.list_kernels() if kernels.params_spec(
      kernels.get_kernel(n), num_heads=2, num_kv_heads=2, head_dim=4, q_len=8, kv_len=8,
      **_OPTIONS.get(n, {}))}
  assert declared == LEARNABLE


def _flax_case(case):
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  pad = np.ones((B, 8), bool)
  pad[1, 6:] = False
  return {"plain": ((_X,), {}), "key_mask": ((_X,), {"mask": pad[:, None, None, :]}),
          "flax_mask": ((_X,), {"mask": nn.make_attention_mask(pad, pad)}),
          "cross": ((_X, _Y), {}), "sow_weights": ((_X,), {"sow_weights": True})}[case]


_FLAX_REFUSED = {"plain": set(), "key_mask": set(), "flax_mask": QUERY_VARYING_MASK_REFUSED,
                 "cross": CROSS_ATTENTION_REFUSED, "sow_weights": SOW_WEIGHTS_REFUSED}


@pytest.mark.parametrize("case", sorted(_FLAX_REFUSED))
def test_every_kernel_as_flax_attention_fn(case):
  # Tracing (eval_shape) runs every check a kernel makes; the runs are tested below.
  args, kw = _flax_case(case)
  worked, refused = set(), set()
  for name in kernels.list_kernels():
    init = functools.partial(_mha(name).init, **kw)
    try:
      shapes = jax.eval_shape(init, jax.random.key(0), *args)
    except ValueError as e:
      assert name in str(e).split(":")[0], (name, e)  # the message names the kernel
      refused.add(name)
      continue
    worked.add(name)
    prm = shapes["params"]
    want = {"attention_" + n: s.shape for n, s in kernels.params_spec(
        kernels.get_kernel(name), num_heads=2, num_kv_heads=2, head_dim=4, q_len=8,
        kv_len=args[-1].shape[1], **_OPTIONS.get(name, {})).items()}
    assert {n: prm[n].shape for n in prm if n.startswith("attention_")} == want, name
  assert refused == _FLAX_REFUSED[case]


@pytest.mark.parametrize("name", sorted(LEARNABLE))
def test_learnable_kernel_params_live_in_the_flax_module_and_are_differentiable(name):
  # Traced, which makes every check and builds every gradient (compiling each costs
  # seconds; the next test runs one).
  mod = _mha(name)

  def init_and_grad(rng):
    params = mod.init(rng, _X)
    return jax.grad(lambda p: jnp.sum(mod.apply(p, _X) ** 2))(params)["params"]

  grads = jax.eval_shape(init_and_grad, jax.random.key(0))
  assert any(n.startswith("attention_") for n in grads)


def test_flax_general_starts_as_dot_product_and_linformer_reads_shorter_lengths():
  # Luong's W starts as the identity: the same numbers as dot-product attention.
  general, dot = _mha("general"), _mha("dot_product")
  same = jax.jit(lambda rng: (lambda p: (general.apply(p, _X), dot.apply(p, _X)))(
      general.init(rng, _X)))
  a, b = same(jax.random.key(0))
  np.testing.assert_allclose(a, b, atol=1e-5)
  # Length-sized parameters, created for 8 keys, serve 5 and refuse 12.
  lin = _mha("linformer")
  params = jax.eval_shape(lin.init, jax.random.key(0), _X)
  assert jax.eval_shape(lin.apply, params, _X[:, :5]).shape == (B, 5, 6)
  with pytest.raises(ValueError, match="kv_seq is 12"):
    jax.eval_shape(lin.apply, params, _X, _Y)


def test_flax_sown_weights_in_the_module_dtype():
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  x = jnp.asarray(_X, jnp.bfloat16)
  dtypes = []
  for fn in (nn.dot_product_attention, kernels.dot_product_attention):
    mod = nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=8, dtype=jnp.bfloat16,
                                          attention_fn=fn)
    state = jax.eval_shape(functools.partial(
        mod.init, sow_weights=True, mutable=["params", "intermediates"]), jax.random.key(0), x)
    dtypes.append(state["intermediates"]["attention_weights"][0].dtype)
  assert dtypes[0] == dtypes[1] == jnp.bfloat16


def test_readme_names_exactly_these_kernels():
  import pathlib  # pylint: disable=g-import-not-at-top
  import re  # pylint: disable=g-import-not-at-top
  text = " ".join((pathlib.Path(__file__).parents[2] / "README.md").read_text().split())
  para = text[text.index("**As flax's `attention_fn`.**"):text.index("**Differences from")]
  known = set(kernels.list_kernels())

  def names(pattern):
    return set(re.findall(r"`(\w+)`", re.search(pattern, para).group(1))) & known

  assert f"All {len(known)} kernels work unchanged" in para
  assert names(r"with learnable parameters \((.*?)\) create") == LEARNABLE
  assert names(r"`sow_weights=True` by the \d+ kernels [^(]*\((.*?)\);") == SOW_WEIGHTS_REFUSED
  assert names(r"approximate kernels (.*?) \(pass") == QUERY_VARYING_MASK_REFUSED
  assert names(r"cross-attention \(q_seq != kv_seq\) by (.*?), whose") == (
      CROSS_ATTENTION_REFUSED)
