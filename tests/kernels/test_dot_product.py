"""Tests of the dense exact kernel ("dot_product"), attention_weights and the registry."""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import test_util as jtu

from attnjax import kernels
from attnjax.kernels import dot_product_attention
from kernel_reference import OPTION_CASES, make_case, random_inputs, reference_attention

# Every registered kernel must appear here, with the test module that covers it; a new
# kernel without tests makes test_every_registered_kernel_is_tested fail.
TESTED_KERNELS = {
    "dot_product": "tests/kernels/test_dot_product.py",
    "chunked": "tests/kernels/test_chunked.py",
    **{name: "tests/kernels/test_variants.py" for name in (
        "additive", "bigbird", "cosine", "differential", "dilated_window", "general",
        "linear", "linformer", "longformer", "nystromformer", "performer", "reformer",
        "sigmoid", "sinkhorn", "sliding_window", "sparse_fixed", "sparse_strided",
        "synthesizer_dense", "synthesizer_random", "unscaled_dot_product")},
}

_REF_KEYS = set(inspect.signature(reference_attention).parameters)


def _ref(q, k, v, opts):
  return reference_attention(q, k, v, **{a: b for a, b in opts.items() if a in _REF_KEYS})


@pytest.mark.parametrize("case", sorted(OPTION_CASES))
def test_matches_float64_reference(case):
  q, k, v, opts = make_case(case)
  out, lse = dot_product_attention(q, k, v, implementation="xla", return_residual=True, **opts)
  ref_out, ref_lse, ref_w = _ref(q, k, v, opts)
  assert out.shape == ref_out.shape and out.dtype == jnp.float32
  np.testing.assert_allclose(out, ref_out, atol=2e-5, rtol=2e-5)
  np.testing.assert_allclose(lse, ref_lse, atol=2e-5, rtol=2e-5)
  w_opts = {a: b for a, b in opts.items() if a != "implementation"}
  w = kernels.attention_weights(q, k, **w_opts)
  assert w.dtype == jnp.float32 and w.shape == ref_w.shape
  np.testing.assert_allclose(w, ref_w, atol=2e-6)


@pytest.mark.parametrize("dtype,atol", [(jnp.bfloat16, 3e-2), (jnp.float16, 4e-3)])
def test_half_precision_inputs(dtype, atol):
  q, k, v, opts = make_case("everything")
  qh, kh, vh = (jnp.asarray(x, dtype) for x in (q, k, v))
  out = dot_product_attention(qh, kh, vh, implementation="xla", **opts)
  assert out.dtype == dtype
  # Reference on the rounded inputs: the kernel's own error (f32 softmax) is what is checked.
  ref, _, _ = _ref(*(np.asarray(x, np.float64) for x in (qh, kh, vh)), opts)
  np.testing.assert_allclose(np.asarray(out, np.float64), ref, atol=atol, rtol=atol)


def test_dtype_argument_casts_inputs_and_output():
  q, k, v = random_inputs(np.random.default_rng(1))
  out = dot_product_attention(q, k, v, dtype=jnp.bfloat16)
  assert out.dtype == jnp.bfloat16
  ref = dot_product_attention(*(jnp.asarray(x, jnp.bfloat16) for x in (q, k, v)))
  np.testing.assert_array_equal(out, ref)


# jax.nn.dot_product_attention wants 4-D inputs; these cases have no fully masked rows.
_JAX_NN_CASES = [
    ("plain", {}),
    ("mask", {"mask": "partial"}),
    ("bias", {"bias": True}),
    ("causal", {"is_causal": True}),
    ("window", {"local_window_size": (2, 1)}),
    ("lengths", {"key_value_seq_lengths": np.array([5, 9])}),
    ("gqa_all", {"bias": True, "mask": "partial", "is_causal": True}),
]


@pytest.mark.parametrize("name,opts", _JAX_NN_CASES, ids=[c[0] for c in _JAX_NN_CASES])
def test_matches_jax_nn(name, opts):
  rng = np.random.default_rng(2)
  q, k, v = random_inputs(rng, t=9, s=9, h=4, kh=2, d=8)
  opts = dict(opts)
  if opts.get("mask") == "partial":
    m = rng.random((2, 1, 9, 9)) < 0.6
    m[..., 0] = True  # every row keeps a key, so jax.nn is defined there
    opts["mask"] = m
  if opts.get("bias"):
    opts["bias"] = rng.normal(size=(2, 4, 9, 9)).astype(np.float32)
  ours, lse = dot_product_attention(q, k, v, return_residual=True, **opts)
  theirs, their_lse = jax.nn.dot_product_attention(q, k, v, implementation="xla",
                                                   return_residual=True, **opts)
  np.testing.assert_allclose(ours, theirs, atol=2e-6, rtol=1e-5)
  np.testing.assert_allclose(lse, their_lse, atol=2e-6, rtol=1e-5)

  def loss(fn, q, k, v, bias):
    kw = {**opts, "bias": bias}
    return jnp.sum(jnp.sin(fn(q, k, v, **kw)))

  bias = opts.get("bias")
  argnums = (1, 2, 3, 4) if bias is not None else (1, 2, 3)
  g_ours = jax.grad(loss, argnums)(dot_product_attention, q, k, v, bias)
  g_theirs = jax.grad(loss, argnums)(
      lambda *a, **kw: jax.nn.dot_product_attention(*a, implementation="xla", **kw), q, k, v,
      bias)
  for a, b in zip(g_ours, g_theirs):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)


def test_fully_masked_rows_give_zeros_and_zero_finite_grads():
  rng = np.random.default_rng(3)
  q, k, v = random_inputs(rng, t=6, s=5)
  mask = np.ones((2, 4, 6, 5), bool)
  mask[0, :, 2] = False  # row 2 of batch 0, all heads
  mask[1, 3, 4] = False  # row 4 of batch 1, head 3
  bias = rng.normal(size=(2, 4, 6, 5)).astype(np.float32)

  def loss(q, k, v, bias):
    return jnp.sum(dot_product_attention(q, k, v, bias, mask) ** 2)

  out = dot_product_attention(q, k, v, bias, mask)
  np.testing.assert_array_equal(out[0, 2], 0.0)
  np.testing.assert_array_equal(out[1, 4, 3], 0.0)
  assert np.all(np.abs(np.asarray(out[1, 4, :3])) > 0)
  grads = jax.grad(loss, argnums=(0, 1, 2, 3))(q, k, v, bias)
  for gr in grads:
    assert np.all(np.isfinite(gr))
  dq, dk, dv, db = grads
  np.testing.assert_array_equal(dq[0, 2], 0.0)
  np.testing.assert_array_equal(dq[1, 4, 3], 0.0)
  np.testing.assert_array_equal(db[0, :, 2], 0.0)
  np.testing.assert_array_equal(db[1, 3, 4], 0.0)
  # Elsewhere the result is jax.nn's.
  theirs = jax.nn.dot_product_attention(q, k, v, bias, mask)
  np.testing.assert_allclose(out[0, :2], theirs[0, :2], atol=2e-6)
  # jax.nn gives the mean of v on the dead row; we give zeros on purpose.
  assert not np.allclose(theirs[0, 2], 0.0)
  # A kv head whose every query is dead gets zero dk/dv from those rows only.
  w = kernels.attention_weights(q, k, bias, mask)
  np.testing.assert_array_equal(w[0, :, 2], 0.0)


def test_all_masked_everything_is_zero_and_finite():
  q, k, v = random_inputs(np.random.default_rng(4))
  mask = np.zeros((2, 4, 7, 9), bool)
  out, lse = dot_product_attention(q, k, v, mask=mask, return_residual=True)
  np.testing.assert_array_equal(out, 0.0)
  assert np.all(lse == -np.inf)
  grads = jax.grad(lambda q, k, v: jnp.sum(dot_product_attention(q, k, v, mask=mask)),
                   argnums=(0, 1, 2))(q, k, v)
  for gr in grads:
    np.testing.assert_array_equal(gr, 0.0)


@pytest.mark.parametrize("case", ["everything", "mask", "t5", "alibi"])
def test_gradients_float64_finite_differences(case):
  q, k, v, opts = make_case(case, dtype=np.float64)
  with jax.enable_x64(True):
    diff = {}
    for name in ("bias", "relative_bias_table", "alibi_slopes"):
      if name in opts:
        diff[name] = jnp.asarray(opts[name], jnp.float64)
    static = {a: b for a, b in opts.items() if a not in diff}
    names = list(diff)

    def f(q, k, v, *extra):
      kw = dict(static, **dict(zip(names, extra)))
      return dot_product_attention(q, k, v, implementation="xla", **kw)

    args = (jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), *diff.values())
    assert f(*args).dtype == jnp.float64
    jtu.check_grads(f, args, order=1, modes=("rev",), atol=1e-5, rtol=1e-5)


def test_composes_with_jit_vmap_grad():
  q, k, v, opts = make_case("everything")
  f = lambda q, k, v: dot_product_attention(q, k, v, **opts)
  np.testing.assert_allclose(jax.jit(f)(q, k, v), f(q, k, v), atol=1e-6)
  # vmap over an extra leading axis equals one call with that axis as a batch dim.
  q2, k2, v2 = (np.stack([x, x[::-1]]) for x in (q, k, v))
  plain = {a: b for a, b in opts.items() if a in ("is_causal", "alignment", "local_window_size",
                                                  "logits_soft_cap", "alibi_slopes")}
  g = lambda q, k, v: dot_product_attention(q, k, v, **plain)
  np.testing.assert_allclose(jax.vmap(g)(q2, k2, v2), g(q2, k2, v2), atol=1e-6)
  dq = jax.jit(jax.grad(lambda q: jnp.sum(f(q, k, v))))(q)
  assert dq.shape == q.shape and np.all(np.isfinite(dq))


def _flax_mha(attention_fn=None, dropout_rate=0.0):
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  kw = {} if attention_fn is None else {"attention_fn": attention_fn}
  return nn.MultiHeadDotProductAttention(num_heads=4, qkv_features=16, dropout_rate=dropout_rate,
                                         **kw)


@pytest.mark.parametrize("with_mask", [False, True])
def test_flax_attention_fn_drop_in(with_mask):
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.normal(size=(2, 6, 12)), jnp.float32)
  mask = None
  if with_mask:
    import flax.linen as nn  # pylint: disable=g-import-not-at-top
    mask = nn.make_attention_mask(jnp.array([[1] * 6, [1] * 4 + [0] * 2]) > 0,
                                  jnp.array([[1] * 6, [1] * 4 + [0] * 2]) > 0)
    # flax's masks are float32 0/1; padded queries still see themselves (defined for flax).
    mask = jnp.maximum(mask, jnp.eye(6, dtype=mask.dtype))
  ref_mod = _flax_mha(dropout_rate=0.1)
  ours_mod = _flax_mha(kernels.get_kernel("dot_product"), dropout_rate=0.1)
  params = ref_mod.init(jax.random.key(0), x, mask=mask, deterministic=True)
  ref = ref_mod.apply(params, x, mask=mask, deterministic=True)
  ours = ours_mod.apply(params, x, mask=mask, deterministic=True)
  np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=1e-5)
  # Dropout on: runs, uses the 'dropout' rng, and changes the output.
  dropped = ours_mod.apply(params, x, mask=mask, deterministic=False,
                           rngs={"dropout": jax.random.key(1)})
  assert dropped.shape == ref.shape and not np.allclose(dropped, ours)
  # sow_weights passes module=...; the weights land in 'intermediates' like flax's.
  _, state = ours_mod.apply(params, x, mask=mask, deterministic=True, sow_weights=True,
                            mutable=["intermediates"])
  _, ref_state = ref_mod.apply(params, x, mask=mask, deterministic=True, sow_weights=True,
                               mutable=["intermediates"])
  np.testing.assert_allclose(state["intermediates"]["attention_weights"][0],
                             ref_state["intermediates"]["attention_weights"][0], atol=1e-6)


def test_dropout():
  rng = np.random.default_rng(6)
  t = s = 64
  q, k, _ = random_inputs(rng, batch=(2,), t=t, s=s, h=2, kh=2, d=8)
  v = np.broadcast_to(np.eye(s, dtype=np.float32)[None, :, None, :], (2, s, 2, s))
  probs = kernels.attention_weights(q, k)  # [b, h, t, s]
  key = jax.random.key(0)
  same = dot_product_attention(q, k, v, dropout_rate=0.3, dropout_rng=key, deterministic=True)
  np.testing.assert_allclose(same, dot_product_attention(q, k, v), atol=1e-6)
  out = dot_product_attention(q, k, v, dropout_rate=0.3, dropout_rng=key, deterministic=False)
  dropped = np.moveaxis(np.asarray(out), 1, 2)  # identity v: out = dropped probs [b, h, t, s]
  kept = dropped != 0
  np.testing.assert_allclose(dropped[kept], np.asarray(probs)[kept] / 0.7, rtol=1e-5)
  assert abs(kept.mean() - 0.7) < 0.02
  # Reproducible by rng, different for another rng.
  again = dot_product_attention(q, k, v, dropout_rate=0.3, dropout_rng=key, deterministic=False)
  np.testing.assert_array_equal(out, again)
  other = dot_product_attention(q, k, v, dropout_rate=0.3, dropout_rng=jax.random.key(1),
                                deterministic=False)
  assert not np.array_equal(out, other)
  # broadcast_dropout (default): one pattern for every batch element and head.
  assert np.array_equal(kept[0, 0], kept[1, 1])
  indep = dot_product_attention(q, k, v, dropout_rate=0.3, dropout_rng=key, deterministic=False,
                                broadcast_dropout=False)
  kept_i = np.moveaxis(np.asarray(indep), 1, 2) != 0
  assert not np.array_equal(kept_i[0, 0], kept_i[1, 1])
  assert not np.array_equal(kept_i[0, 0], kept_i[0, 1])
  # Gradients flow through the kept probabilities only and are finite.
  g = jax.grad(lambda q: jnp.sum(dot_product_attention(
      q, k, v, dropout_rate=0.3, dropout_rng=key, deterministic=False)))(q)
  assert np.all(np.isfinite(g))


_BAD = [
    ("rank", lambda q, k, v: dict(query=q[0, 0]), "query"),
    ("rank_mismatch", lambda q, k, v: dict(key=k[None]), "same rank"),
    ("batch_mismatch", lambda q, k, v: dict(key=k[:1], value=v[:1]), "batch"),
    ("head_dim", lambda q, k, v: dict(key=k[..., :4]), "head_dim"),
    ("kv_value_seq", lambda q, k, v: dict(value=v[:, :3]), "value"),
    ("heads_divisible", lambda q, k, v: dict(key=np.concatenate([k, k[..., :1, :]], -2),
                                             value=np.concatenate([v, v[..., :1, :]], -2)),
     "multiple"),
    ("mask_shape", lambda q, k, v: dict(mask=np.ones((2, 4, 7, 8), bool)), "mask"),
    ("mask_dtype", lambda q, k, v: dict(mask=np.ones((7, 9), np.complex64)), "mask"),
    ("bias_shape", lambda q, k, v: dict(bias=np.ones((3, 1, 7, 9), np.float32)), "bias"),
    ("bias_heads_kv", lambda q, k, v: dict(bias=np.ones((2, 2, 7, 9), np.float32)), "bias"),
    ("int_inputs", lambda q, k, v: dict(query=q.astype(np.int32)), "dtype"),
    ("dropout_no_rng", lambda q, k, v: dict(dropout_rate=0.1, deterministic=False),
     "dropout_rng"),
    ("dropout_rate", lambda q, k, v: dict(dropout_rate=1.0), "dropout_rate"),
    ("alignment", lambda q, k, v: dict(alignment="center"), "alignment"),
    ("window", lambda q, k, v: dict(local_window_size=(-1, 2)), "local_window_size"),
    ("lengths", lambda q, k, v: dict(query_seq_lengths=np.ones(3, np.int32)),
     "query_seq_lengths"),
    ("segments", lambda q, k, v: dict(q_segment_ids=np.zeros((2, 7), np.int32)),
     "kv_segment_ids"),
    ("soft_cap", lambda q, k, v: dict(logits_soft_cap=0.0), "logits_soft_cap"),
    ("table", lambda q, k, v: dict(relative_bias_table=np.zeros((8, 3))), "relative_bias_table"),
    ("implementation", lambda q, k, v: dict(implementation="flash"), "implementation"),
    ("cudnn_on_cpu", lambda q, k, v: dict(implementation="cudnn"), "GPU"),
    ("pallas_on_cpu", lambda q, k, v: dict(implementation="pallas"), "GPU"),
    ("blocks_for_xla", lambda q, k, v: dict(implementation="xla", block_q=16), "block_q"),
    ("block_size", lambda q, k, v: dict(block_q=0), "block_q"),
]


@pytest.mark.parametrize("name,make,words", _BAD, ids=[b[0] for b in _BAD])
def test_bad_input_raises_value_error_naming_it(name, make, words):
  q, k, v = random_inputs(np.random.default_rng(7))  # q [2,7,4,8], k/v [2,9,2,8]
  args = dict(query=q, key=k, value=v)
  args.update(make(q, k, v))
  with pytest.raises(ValueError, match=words) as e:
    dot_product_attention(**args)
  assert "dot_product_attention" in str(e.value)
  if name in ("mask_shape", "bias_shape", "head_dim", "rank"):
    assert "(" in str(e.value)  # the shapes are in the message


def test_explain_implementation_states_a_reason():
  q, k, v = random_inputs(np.random.default_rng(8))
  small = kernels.explain_implementation(q, k, v)
  assert small.name == "xla" and "MiB" in small.reason
  chosen = kernels.explain_implementation(q, k, v, block_q=16)
  assert chosen.name == "chunked" and "block" in chosen.reason
  big = jax.ShapeDtypeStruct((1, 4096, 8, 64), jnp.float32)
  choice = kernels.explain_implementation(jnp.zeros(big.shape), jnp.zeros(big.shape),
                                          jnp.zeros(big.shape), is_causal=True)
  assert choice.name == "chunked" and "MiB" in choice.reason


def test_registry_unknown_name_lists_known_ones():
  with pytest.raises(ValueError, match="dot_product") as e:
    kernels.get_kernel("no_such_kernel")
  assert "chunked" in str(e.value)
  assert kernels.get_kernel("dot_product") is dot_product_attention
  assert kernels.get_kernel("chunked") is kernels.chunked_attention


def test_every_registered_kernel_is_tested():
  assert set(kernels.list_kernels()) <= set(TESTED_KERNELS), (
      "kernels without tests: add them to TESTED_KERNELS with their test module: "
      f"{sorted(set(kernels.list_kernels()) - set(TESTED_KERNELS))}")


def test_kernels_signature_contract():
  for name in kernels.list_kernels():
    params = inspect.signature(kernels.get_kernel(name)).parameters
    assert list(params)[:5] == ["query", "key", "value", "bias", "mask"], name
    for opt in ("scale", "is_causal", "dropout_rng", "dropout_rate", "deterministic",
                "broadcast_dropout", "dtype", "precision", "module"):
      assert params[opt].kind is inspect.Parameter.KEYWORD_ONLY, (name, opt)


def test_import_without_flax():
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  code = ("import attnjax.kernels, sys; bad = [m for m in ('flax', 'optax', 'orbax', "
          "'tensorflow', 'tensorflow_datasets') if m in sys.modules]; assert not bad, bad")
  subprocess.run([sys.executable, "-c", code], check=True)
