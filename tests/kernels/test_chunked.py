"""Tests of the chunked (O(seq) memory) exact kernel: same numbers as the dense path."""

from __future__ import annotations

import inspect

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import kernels
from attnjax.kernels import _common, chunked, chunked_attention, dot_product_attention
from kernel_reference import OPTION_CASES, make_case, random_inputs, reference_attention

_REF_KEYS = set(inspect.signature(reference_attention).parameters)
_DIFF = ("bias", "alibi_slopes", "relative_bias_table")


def _ref(q, k, v, opts):
  return reference_attention(q, k, v, **{a: b for a, b in opts.items() if a in _REF_KEYS})


@pytest.mark.parametrize("case", sorted(OPTION_CASES))
def test_forward_matches_reference(case):
  q, k, v, opts = make_case(case)
  # Blocks smaller than (and not dividing) the sequences: padding and many blocks.
  out, lse = chunked_attention(q, k, v, block_q=4, block_kv=3, return_residual=True, **opts)
  ref_out, ref_lse, _ = _ref(q, k, v, opts)
  np.testing.assert_allclose(out, ref_out, atol=2e-5, rtol=2e-5)
  np.testing.assert_allclose(lse, ref_lse, atol=2e-5, rtol=2e-5)


# Gradient cases: "everything" combines every option; the others add what it cannot
# (full per-head bias, unidirectional T5, lengths, MQA, T > S, odd batch layouts).
_GRAD_CASES = ["everything", "bias", "t5_unidirectional", "lengths", "mqa",
               "causal_bottom_right_t_gt_s", "two_batch_dims_vdim", "no_batch_dims"]


@pytest.mark.parametrize("case", _GRAD_CASES)
def test_gradients_match_dense(case):
  q, k, v, opts = make_case(case)
  out = chunked_attention(q, k, v, block_q=4, block_kv=3, **opts)

  diff = {n: jnp.asarray(opts[n]) for n in _DIFF if n in opts}
  static = {a: b for a, b in opts.items() if a not in diff}
  cot = np.random.default_rng(1).normal(size=out.shape).astype(np.float32)

  def loss(impl, q, k, v, diff):
    o, l = dot_product_attention(q, k, v, implementation=impl, return_residual=True,
                                 **({"block_q": 4, "block_kv": 3} if impl == "chunked" else {}),
                                 **static, **diff)
    # The lse term checks its cotangent path too (finite rows only).
    return jnp.sum(o * cot) + 0.1 * jnp.sum(jnp.where(jnp.isfinite(l), l, 0.0))

  g_chunk = jax.jit(jax.grad(lambda *a: loss("chunked", *a), argnums=(0, 1, 2, 3)))(q, k, v, diff)
  g_dense = jax.jit(jax.grad(lambda *a: loss("xla", *a), argnums=(0, 1, 2, 3)))(q, k, v, diff)
  for a, b in zip(jax.tree.leaves(g_chunk), jax.tree.leaves(g_dense)):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, atol=5e-5, rtol=5e-5)


def test_half_precision_inputs():
  q, k, v, opts = make_case("everything")
  for dtype, atol in ((jnp.bfloat16, 3e-2), (jnp.float16, 4e-3)):
    qh, kh, vh = (jnp.asarray(x, dtype) for x in (q, k, v))
    out = chunked_attention(qh, kh, vh, block_q=8, block_kv=8, **opts)
    assert out.dtype == dtype
    ref, _, _ = _ref(*(np.asarray(x, np.float64) for x in (qh, kh, vh)), opts)
    np.testing.assert_allclose(np.asarray(out, np.float64), ref, atol=atol, rtol=atol)
    g = jax.grad(lambda q: jnp.sum(chunked_attention(q, kh, vh, block_q=8, block_kv=8, **opts)
                                   .astype(jnp.float32)))(qh)
    assert g.dtype == dtype and np.all(np.isfinite(np.asarray(g, np.float32)))


def test_dropout_identical_to_dense():
  rng = np.random.default_rng(2)
  q, k, v = random_inputs(rng, t=13, s=10)
  kw = dict(dropout_rate=0.25, dropout_rng=jax.random.key(3), deterministic=False,
            broadcast_dropout=False, is_causal=True, alignment="bottom_right")
  dense = dot_product_attention(q, k, v, implementation="xla", **kw)
  chunk = chunked_attention(q, k, v, block_q=4, block_kv=4, **kw)
  np.testing.assert_allclose(chunk, dense, atol=2e-6)
  f = lambda impl, **b: (lambda q, k, v: jnp.sum(jnp.sin(dot_product_attention(
      q, k, v, implementation=impl, **b, **kw))))
  gd = jax.grad(f("xla"), argnums=(0, 1, 2))(q, k, v)
  gc = jax.grad(f("chunked", block_q=4, block_kv=4), argnums=(0, 1, 2))(q, k, v)
  for a, b in zip(gc, gd):
    np.testing.assert_allclose(a, b, atol=2e-5)


def test_fully_masked_rows_zero_output_and_grads():
  rng = np.random.default_rng(4)
  q, k, v = random_inputs(rng, t=10, s=7)
  lengths = np.array([6, 0])  # batch 1: every query row is dead

  def loss(q, k, v):
    return jnp.sum(chunked_attention(q, k, v, key_value_seq_lengths=lengths, block_q=4,
                                     block_kv=4) ** 2)

  out = chunked_attention(q, k, v, key_value_seq_lengths=lengths, block_q=4, block_kv=4)
  np.testing.assert_array_equal(out[1], 0.0)
  dq, dk, dv = jax.grad(loss, argnums=(0, 1, 2))(q, k, v)
  for g in (dq, dk, dv):
    assert np.all(np.isfinite(g))
    np.testing.assert_array_equal(g[1], 0.0)
  np.testing.assert_array_equal(dk[0, 6:], 0.0)  # keys beyond the length get nothing


def test_skips_fully_masked_blocks():
  t = 4096
  q = k = v = jax.ShapeDtypeStruct((1, t, 1, 8), jnp.float32)
  zeros = [jnp.zeros(x.shape, x.dtype) for x in (q, k, v)]

  def visits(**opts):
    p = _common.prepare(*zeros, fn="test", **opts)
    return chunked.live_block_count(p, 256, 256)

  assert visits() == 16 * 16
  assert visits(is_causal=True) == 16 * 17 // 2
  # Window (512, 0): each query block needs its own block and two to the left.
  assert visits(local_window_size=(512, 0)) == 16 * 3 - 3
  assert visits(key_value_seq_lengths=jnp.array([1000])) == 16 * 4
  # Four packed sequences of 1,024 tokens: four diagonal 4x4 groups of blocks.
  packed = jnp.repeat(jnp.arange(4), t // 4)[None]
  assert visits(q_segment_ids=packed) == 4 * 4 * 4
  # Boundaries inside blocks: a block row visits the blocks its segments reach.
  # Blocks 0-2 (segment 0) reach key blocks 0-3; block 3 holds both segments (all 16);
  # blocks 4-15 (segment 1) reach key blocks 3-15.
  two = np.repeat([0, 1], [1000, t - 1000])[None]
  assert visits(q_segment_ids=jnp.asarray(two)) == 3 * 4 + 16 + 12 * 13


def test_packed_sequences_skip_blocks_and_match_dense_with_gradients():
  # Batch of two packings with boundaries inside blocks (block 8), plus padding ids.
  rng = np.random.default_rng(3)
  t = 40
  q, k, v = random_inputs(rng, batch=(2,), t=t, s=t, h=2, kh=1, d=4)
  seg = np.stack([np.repeat([0, 1, 2], [13, 20, 7]), np.repeat([0, 1, 2, 3], [5, 5, 25, 5])])
  opts = dict(q_segment_ids=seg, is_causal=True)

  def loss(impl, q, k, v):
    extra = {"block_q": 8, "block_kv": 8} if impl == "chunked" else {}
    out = dot_product_attention(q, k, v, implementation=impl, **opts, **extra)
    return jnp.sum(jnp.sin(out))

  for a, b in zip(jax.grad(lambda *x: loss("chunked", *x), argnums=(0, 1, 2))(q, k, v),
                  jax.grad(lambda *x: loss("xla", *x), argnums=(0, 1, 2))(q, k, v)):
    np.testing.assert_allclose(a, b, atol=2e-6)
  np.testing.assert_allclose(
      chunked_attention(q, k, v, block_q=8, block_kv=8, **opts),
      reference_attention(q, k, v, **opts)[0], atol=2e-6)
  p = _common.prepare(q, k, v, fn="test", **opts)
  assert chunked.live_block_count(p, 8, 8) < 5 * 6 // 2  # fewer than causal alone


def test_memory_is_linear_in_sequence_length():
  # Compiled fwd+bwd scratch memory at T=S=2048 stays far below one [T, S] float32 array.
  t = 2048
  x = jnp.zeros((1, t, 1, 16), jnp.float32)

  def loss(impl):
    return lambda q, k, v: jnp.sum(dot_product_attention(q, k, v, implementation=impl,
                                                         is_causal=True, **(
                                                             {"block_q": 256, "block_kv": 256}
                                                             if impl == "chunked" else {})))

  def temp_bytes(impl):
    f = jax.jit(jax.grad(loss(impl), argnums=(0, 1, 2)))
    return f.lower(x, x, x).compile().memory_analysis().temp_size_in_bytes

  full = t * t * 4
  assert temp_bytes("xla") >= full  # the dense path holds [T, S]
  assert temp_bytes("chunked") < full / 8


def test_composes_with_jit_and_vmap():
  q, k, v, opts = make_case("segments")
  f = lambda q, k, v: chunked_attention(q, k, v, block_q=4, block_kv=4, **opts)
  np.testing.assert_allclose(jax.jit(f)(q, k, v), f(q, k, v), atol=1e-6)
  g = lambda q, k, v, n: chunked_attention(q, k, v, key_value_seq_lengths=n, block_q=4,
                                           block_kv=4)
  lens = np.array([[3, 9], [9, 1]])
  stacked = (np.stack([x, x]) for x in (q, k, v))
  batched = jax.vmap(g)(*stacked, lens)
  for i in range(2):
    np.testing.assert_allclose(batched[i], g(q, k, v, lens[i]), atol=1e-6)


@hypothesis.settings(max_examples=6, deadline=None, derandomize=True,
                     suppress_health_check=list(hypothesis.HealthCheck))
@hypothesis.given(
    t=st.integers(1, 21), s=st.integers(1, 21), kv_heads=st.sampled_from([1, 2]),
    groups=st.sampled_from([1, 2]), block_q=st.sampled_from([1, 4, 8]),
    block_kv=st.sampled_from([2, 5, 16]), causal=st.booleans(),
    alignment=st.sampled_from(["top_left", "bottom_right"]),
    window=st.sampled_from([None, (0, 0), (3, 2), (1, 7)]), seed=st.integers(0, 100))
def test_random_shapes_match_reference(t, s, kv_heads, groups, block_q, block_kv, causal,
                                       alignment, window, seed):
  rng = np.random.default_rng(seed)
  q, k, v = random_inputs(rng, batch=(1,), t=t, s=s, h=kv_heads * groups, kh=kv_heads, d=4)
  opts = dict(is_causal=causal, alignment=alignment, local_window_size=window)
  out = chunked_attention(q, k, v, block_q=block_q, block_kv=block_kv, **opts)
  ref, _, _ = reference_attention(q, k, v, **opts)
  np.testing.assert_allclose(out, ref, atol=3e-5, rtol=3e-5)
  g = jax.grad(lambda q, k, v: jnp.sum(chunked_attention(
      q, k, v, block_q=block_q, block_kv=block_kv, **opts) ** 2), argnums=(0, 1, 2))
  gd = jax.grad(lambda q, k, v: jnp.sum(dot_product_attention(
      q, k, v, implementation="xla", **opts) ** 2), argnums=(0, 1, 2))
  for a, b in zip(g(q, k, v), gd(q, k, v)):
    np.testing.assert_allclose(a, b, atol=5e-5, rtol=5e-5)


def test_flax_attention_fn_drop_in():
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  x = jnp.asarray(np.random.default_rng(5).normal(size=(2, 9, 12)), jnp.float32)
  mask = nn.make_causal_mask(jnp.ones((2, 9)))
  ref = nn.MultiHeadDotProductAttention(num_heads=4, qkv_features=16)
  ours = nn.MultiHeadDotProductAttention(num_heads=4, qkv_features=16,
                                         attention_fn=kernels.get_kernel("chunked"))
  params = ref.init(jax.random.key(0), x, mask=mask)
  np.testing.assert_allclose(ours.apply(params, x, mask=mask), ref.apply(params, x, mask=mask),
                             atol=1e-5)


def test_automatic_choice_runs_chunked_for_long_sequences():
  q = jnp.zeros((1, 2048, 4, 8))
  choice = kernels.explain_implementation(q, q, q)
  assert choice.name == "chunked"
  assert (choice.block_q, choice.block_kv) == (chunked.DEFAULT_BLOCK_Q, chunked.DEFAULT_BLOCK_KV)


def test_inside_shard_map_equals_unsharded_with_gradients():
  # Batch-sharded over the 8 fake devices: the loop carries take the inputs' manual axes;
  # replicated ALiBi slopes and T5 table get their cotangents summed over the shards.
  from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(6)
  q, k, v = random_inputs(rng, batch=(8,), t=11, s=11, h=2, kh=1, d=4)
  seg = np.sort(rng.integers(0, 3, size=(8, 11)), axis=-1)
  lens = rng.integers(4, 12, size=(8,))
  slopes, table = kernels.alibi_slopes(2), rng.normal(size=(6, 2)).astype(np.float32)

  def attend(q, k, v, seg, lens, slopes, table):
    return chunked_attention(q, k, v, q_segment_ids=seg, key_value_seq_lengths=lens,
                             alibi_slopes=slopes, relative_bias_table=table, is_causal=True,
                             block_q=4, block_kv=4)

  mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]), ("data",))
  sharded = jax.shard_map(attend, mesh=mesh, in_specs=(P("data"),) * 5 + (P(), P()),
                          out_specs=P("data"))
  args = (q, k, v, seg, lens, slopes, table)
  np.testing.assert_allclose(jax.jit(sharded)(*args), attend(*args), atol=1e-6)
  loss = lambda f: jax.jit(jax.grad(  # noqa: E731
      lambda q, k, v, s, t: jnp.sum(jnp.sin(f(q, k, v, seg, lens, s, t))), argnums=range(5)))
  for a, b in zip(loss(sharded)(q, k, v, slopes, table), loss(attend)(q, k, v, slopes, table)):
    np.testing.assert_allclose(a, b, atol=2e-6)


@pytest.mark.parametrize("impl", ["xla", "chunked"])
def test_no_implicit_rank_promotion(impl):
  # Codebases that set jax_numpy_rank_promotion='raise' can use every option.
  q, k, v, opts = make_case("everything")
  opts = dict(opts, query_seq_lengths=np.array([12, 5]), dropout_rate=0.2,
              dropout_rng=jax.random.key(0), deterministic=False, broadcast_dropout=False)
  extra = {"block_q": 4, "block_kv": 3} if impl == "chunked" else {}
  with jax.numpy_rank_promotion("raise"):
    grads = jax.grad(lambda q, k, v: jnp.sum(dot_product_attention(
        q, k, v, implementation=impl, **extra, **opts)), argnums=(0, 1, 2))(q, k, v)
  assert all(np.all(np.isfinite(g)) for g in grads)
