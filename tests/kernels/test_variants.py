"""The contract over every registered kernel, and the variants' own formulas.

``CAPS`` lists every registered kernel with what it supports; the generic tests run over
it and ``test_caps_cover_every_registered_kernel`` fails when a kernel is missing.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import kernels
from attnjax.kernels import patterns
from kernel_reference import random_inputs, reference_attention


@dataclasses.dataclass(frozen=True)
class Caps:
  """What a kernel honours (everything else must raise a ValueError naming the option)."""

  full_mask: bool = True  # masks varying over queries; False: key-padding masks only
  causal: bool = True
  bias: bool = True
  dropout: bool = True
  options: tuple[tuple[str, Any], ...] = ()  # small-shape options for the tests
  gqa_params: bool = False  # parameters depend on kv heads (skip the GQA-equals-MHA test)


_EXACT = Caps()
_APPROX = Caps(full_mask=False, bias=False, dropout=False)
CAPS: dict[str, Caps] = {
    "dot_product": _EXACT,
    "chunked": _EXACT,
    "cosine": _EXACT,
    "unscaled_dot_product": _EXACT,
    "general": _EXACT,
    "additive": _EXACT,
    "sliding_window": Caps(options=(("window_size", 3),)),
    "dilated_window": Caps(options=(("window_size", 2), ("dilation", 2))),
    "longformer": Caps(options=(("window_size", 2), ("num_global_tokens", 2))),
    "bigbird": Caps(options=(("block_size", 4), ("num_random_blocks", 1))),
    "sparse_fixed": Caps(options=(("block_size", 4), ("summary_size", 1))),
    "sparse_strided": Caps(options=(("stride", 3),)),
    "linear": dataclasses.replace(_APPROX, options=(("chunk_size", 4),)),
    "performer": dataclasses.replace(_APPROX, options=(("num_features", 32),
                                                       ("chunk_size", 4))),
    "linformer": Caps(full_mask=False, bias=False, causal=False, options=(
        ("projected_length", 5),), gqa_params=True),
    "nystromformer": dataclasses.replace(_APPROX, causal=False,
                                         options=(("num_landmarks", 4),)),
    "reformer": dataclasses.replace(_APPROX, causal=False, options=(
        ("num_buckets", 4), ("chunk_size", 4), ("num_hashes", 2))),
    "sinkhorn": Caps(full_mask=False, bias=False, dropout=False, causal=False,
                     options=(("block_size", 4),)),
    "synthesizer_dense": _EXACT,
    "synthesizer_random": _EXACT,
    "sigmoid": _EXACT,
    "differential": _EXACT,
}

B, T, H, KH, D = 2, 12, 4, 2, 8


def test_caps_cover_every_registered_kernel():
  missing = sorted(set(kernels.list_kernels()) - set(CAPS))
  assert not missing, f"registered kernels missing from CAPS (add them, with tests): {missing}"
  stale = sorted(set(CAPS) - set(kernels.list_kernels()))
  assert not stale, f"CAPS lists kernels that are not registered: {stale}"


def _inputs(seed=0, t=T, s=T, h=H, kh=KH, dtype=np.float32):
  return random_inputs(np.random.default_rng(seed), batch=(B,), t=t, s=s, h=h, kh=kh, d=D,
                       dtype=dtype)


def _call(name, q, k, v, *, params=None, **kw):
  """Calls kernel ``name`` with its test options and (created if needed) parameters."""
  fn = kernels.get_kernel(name)
  opts = dict(CAPS[name].options)
  opts.update(kw)
  if params is None:
    params = kernels.init_params(fn, jax.random.PRNGKey(1), num_heads=q.shape[-2],
                                 num_kv_heads=k.shape[-2], head_dim=q.shape[-1],
                                 q_len=q.shape[-3], kv_len=k.shape[-3], **opts)
  if params:
    opts["params"] = params
  return fn(q, k, v, **opts)


def _padding_mask(s=T):
  m = np.ones((B, 1, 1, s), bool)
  m[0, ..., s - 3:] = False
  m[1, ..., s - 5:] = False
  return m


ALL = sorted(CAPS)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [np.float32, jnp.bfloat16])
def test_shape_dtype_jit(name, dtype):
  q, k, v = (jnp.asarray(x, dtype) for x in _inputs())
  out = _call(name, q, k, v)
  assert out.shape == (B, T, H, D) and out.dtype == dtype
  assert np.all(np.isfinite(np.asarray(out, np.float32)))
  jitted = jax.jit(lambda q, k, v: _call(name, q, k, v))(q, k, v)
  tol = 1e-5 if dtype == np.float32 else 3e-2
  np.testing.assert_allclose(np.asarray(jitted, np.float32), np.asarray(out, np.float32),
                             atol=tol, rtol=tol)


@pytest.mark.parametrize("name", ALL)
def test_finite_gradients_with_padding_mask(name):
  q, k, v = _inputs(1)
  fn = kernels.get_kernel(name)
  opts = dict(CAPS[name].options)
  params = kernels.init_params(fn, jax.random.PRNGKey(1), num_heads=H, num_kv_heads=KH,
                               head_dim=D, q_len=T, kv_len=T, **opts)
  mask = _padding_mask()

  def loss(q, k, v, params):
    return jnp.sum(_call(name, q, k, v, params=params or None, mask=mask) ** 2)

  grads = jax.grad(loss, argnums=(0, 1, 2, 3))(q, k, v, params)
  for g in jax.tree_util.tree_leaves(grads):
    assert np.all(np.isfinite(g)), name
  assert float(jnp.abs(grads[2]).sum()) > 0  # the values matter


@pytest.mark.parametrize("name", ALL)
def test_masked_keys_change_nothing(name):
  q, k, v = _inputs(2)
  mask = _padding_mask()
  out = _call(name, q, k, v, mask=mask)
  dead = ~np.broadcast_to(mask[:, 0, 0, :], (B, T))[..., None, None]
  k2 = np.where(dead, k + 3.0 * np.random.default_rng(9).normal(size=k.shape), k)
  v2 = np.where(dead, v - 5.0, v)
  out2 = _call(name, q, k2.astype(np.float32), v2.astype(np.float32), mask=mask)
  np.testing.assert_allclose(out2, out, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("name", [n for n in ALL if CAPS[n].causal])
def test_causal_leaks_nothing_from_the_future(name):
  q, k, v = _inputs(3)
  out = _call(name, q, k, v, is_causal=True)
  cut = 7
  rng = np.random.default_rng(4)
  k2, v2 = k.copy(), v.copy()
  k2[:, cut:] += rng.normal(size=k2[:, cut:].shape).astype(np.float32)
  v2[:, cut:] += 10.0
  out2 = _call(name, q, k2, v2, is_causal=True)
  np.testing.assert_allclose(out2[:, :cut], out[:, :cut], atol=2e-5, rtol=2e-5)
  assert not np.allclose(out2[:, cut:], out[:, cut:])


def _unsupported(name):
  caps = CAPS[name]
  q = np.zeros((B, T, H, D), np.float32)
  cases = []
  if not caps.bias:
    cases.append(("bias", {"bias": np.zeros((B, H, T, T), np.float32)}))
  if not caps.full_mask:
    cases.append(("mask", {"mask": np.tril(np.ones((T, T), bool))}))
  if not caps.causal:
    cases.append(("is_causal", {"is_causal": True}))
  if not caps.dropout:
    cases.append(("dropout_rate", {"dropout_rate": 0.1, "deterministic": False,
                                   "dropout_rng": jax.random.PRNGKey(0)}))
  del q
  return cases


_REFUSALS = [(n, opt, kw) for n in ALL for opt, kw in _unsupported(n)]


@pytest.mark.parametrize("name,option,kw", _REFUSALS,
                         ids=[f"{n}-{o}" for n, o, _ in _REFUSALS])
def test_unsupported_option_raises_naming_it(name, option, kw):
  q, k, v = _inputs(5)
  with pytest.raises(ValueError, match=option):
    _call(name, q, k, v, **kw)


@pytest.mark.parametrize("name", [n for n in ALL if CAPS[n].dropout])
def test_supported_dropout_is_applied(name):
  q, k, v = _inputs(6)
  kw = dict(dropout_rate=0.5, deterministic=False, dropout_rng=jax.random.PRNGKey(3))
  out = _call(name, q, k, v, **kw)
  assert np.all(np.isfinite(out)) and not np.allclose(out, _call(name, q, k, v))


@pytest.mark.parametrize("name", [n for n in ALL if not CAPS[n].gqa_params])
def test_grouped_query_equals_repeated_heads(name):
  q, k, v = _inputs(7)
  grouped = _call(name, q, k, v)
  rep = lambda x: np.repeat(x, H // KH, axis=-2)
  np.testing.assert_allclose(_call(name, q, rep(k), rep(v)), grouped, atol=2e-5, rtol=2e-5)


def test_unknown_option_and_missing_params_raise():
  q, k, v = _inputs(8)
  with pytest.raises(ValueError, match="window_sizee"):
    kernels.get_kernel("longformer")(q, k, v, window_sizee=3)
  with pytest.raises(ValueError, match="params is required"):
    kernels.get_kernel("additive")(q, k, v)
  with pytest.raises(ValueError, match="scale"):
    kernels.get_kernel("unscaled_dot_product")(q, k, v, scale=0.5)
  with pytest.raises(ValueError, match="kv_seq"):  # longer than the parameters were made for
    params = kernels.init_params(kernels.get_kernel("linformer"), jax.random.PRNGKey(0),
                                 num_heads=H, num_kv_heads=KH, head_dim=D, q_len=6, kv_len=6)
    kernels.get_kernel("linformer")(q, k, v, params=params)


# ----------------------------------------------------------------- float64 formulas


def _f64(*xs):
  return [np.asarray(x, np.float64) for x in xs]


def _softmax_attend(logits, v, mask=None):
  """float64 masked softmax(logits [B,H,T,S]) @ v [B,S,H,Dv] with zero rows."""
  if mask is not None:
    logits = np.where(mask, logits, -np.inf)
  m = np.max(logits, -1, keepdims=True)
  m = np.where(np.isfinite(m), m, 0)
  e = np.exp(logits - m)
  z = e.sum(-1, keepdims=True)
  w = np.where(z > 0, e / np.where(z > 0, z, 1), 0)
  return np.einsum("bhts,bshd->bthd", w, v)


def _rep(x):
  return np.repeat(x, H // KH, axis=-2)


def test_cosine_matches_float64_formula():
  q, k, v = _f64(*_inputs(10))
  k, v = _rep(k), _rep(v)
  qn = q / np.linalg.norm(q, axis=-1, keepdims=True)
  kn = k / np.linalg.norm(k, axis=-1, keepdims=True)
  cos = np.einsum("bthd,bshd->bhts", qn, kn)
  mask = _padding_mask()
  for kw, tau in (({"temperature": 0.2}, 5.0), ({}, 10.0)):
    out = _call("cosine", *_inputs(10), mask=mask, **kw)
    np.testing.assert_allclose(out, _softmax_attend(tau * cos, v, mask), atol=1e-5)
  # Learnable: per-head logit scale, clamped at log(max_logit_scale).
  params = {"logit_scale": jnp.log(jnp.array([2.0, 3.0, 500.0, 1.0]))}
  out = _call("cosine", *_inputs(10), learnable_scale=True, params=params)
  tau = np.array([2.0, 3.0, 100.0, 1.0])[None, :, None, None]
  np.testing.assert_allclose(out, _softmax_attend(tau * cos, v), atol=1e-5)


def test_additive_matches_float64_formula():
  q, k, v = _inputs(11)
  fn = kernels.get_kernel("additive")
  params = kernels.init_params(fn, jax.random.PRNGKey(2), num_heads=H, num_kv_heads=KH,
                               head_dim=D, q_len=T, kv_len=T, attention_dim=6)
  out = fn(q, k, v, attention_dim=6, params=params, is_causal=True)
  q, k, v = _f64(q, _rep(k), _rep(v))
  wq, wk, va = _f64(params["w_query"], params["w_key"], params["v"])
  e = np.einsum("bhtsa,ha->bhts", np.tanh(np.einsum("bthd,hda->bhta", q, wq)[:, :, :, None]
                                          + np.einsum("bshd,hda->bhsa", k, wk)[:, :, None]), va)
  np.testing.assert_allclose(out, _softmax_attend(e, v, np.tril(np.ones((T, T), bool))),
                             atol=1e-5)


def test_general_and_unscaled_match_float64_formula():
  q, k, v = _inputs(12)
  w = np.random.default_rng(0).normal(size=(H, D, D)).astype(np.float32) * 0.3
  out = kernels.get_kernel("general")(q, k, v, params={"w": w}, scale=1.0)
  q64, k64, v64 = _f64(q, _rep(k), _rep(v))
  e = np.einsum("bthd,hde,bshe->bhts", q64, np.float64(w), k64)
  np.testing.assert_allclose(out, _softmax_attend(e, v64), atol=1e-5)
  out = kernels.get_kernel("unscaled_dot_product")(q, k, v)
  np.testing.assert_allclose(out, reference_attention(q, k, v, scale=1.0)[0], atol=1e-5)


def test_sigmoid_matches_float64_formula():
  q, k, v = _inputs(13)
  mask = _padding_mask()
  out = kernels.get_kernel("sigmoid")(q, k, v, mask=mask, is_causal=True)
  q64, k64, v64 = _f64(q, _rep(k), _rep(v))
  s = np.einsum("bthd,bshd->bhts", q64, k64) / np.sqrt(D) - np.log(T)
  allowed = mask & np.tril(np.ones((T, T), bool))
  w = np.where(allowed, 1 / (1 + np.exp(-s)), 0.0)
  np.testing.assert_allclose(out, np.einsum("bhts,bshd->bthd", w, v64), atol=1e-5)


def test_differential_matches_float64_formula():
  q, k, v = _inputs(14)
  fn = kernels.get_kernel("differential")
  params = kernels.init_params(fn, jax.random.PRNGKey(3), num_heads=H, num_kv_heads=KH,
                               head_dim=D, q_len=T, kv_len=T)
  out = fn(q, k, v, params=params, lambda_init=0.5)
  q64, k64, v64 = _f64(q, _rep(k), _rep(v))
  h = D // 2
  a1 = _softmax_attend(np.einsum("bthd,bshd->bhts", q64[..., :h], k64[..., :h]) / np.sqrt(h),
                       v64)
  a2 = _softmax_attend(np.einsum("bthd,bshd->bhts", q64[..., h:], k64[..., h:]) / np.sqrt(h),
                       v64)
  p = {n: np.float64(x) for n, x in params.items()}
  lam = (np.exp((p["lambda_q1"] * p["lambda_k1"]).sum(-1))
         - np.exp((p["lambda_q2"] * p["lambda_k2"]).sum(-1)) + 0.5)
  o = a1 - lam[:, None] * a2
  o = o / np.sqrt((o**2).mean(-1, keepdims=True) + 1e-5) * 0.5
  np.testing.assert_allclose(out, o, atol=2e-5)


def test_synthesizers_match_float64_formula():
  q, k, v = _inputs(15)
  r = np.random.default_rng(1).normal(size=(H, T, T)).astype(np.float32)
  out = kernels.get_kernel("synthesizer_random")(q, k, v, params={"logits": r})
  np.testing.assert_allclose(out, _softmax_attend(np.float64(r)[None], _f64(_rep(v))[0]),
                             atol=1e-5)
  fn = kernels.get_kernel("synthesizer_dense")
  params = kernels.init_params(fn, jax.random.PRNGKey(4), num_heads=H, num_kv_heads=KH,
                               head_dim=D, q_len=T, kv_len=T + 4)  # made for longer: sliced
  out = fn(q, k, v, params=params)
  p = {n: np.float64(x) for n, x in params.items()}
  hid = np.maximum(np.einsum("bthd,hde->bthe", np.float64(q), p["w1"]) + p["b1"], 0)
  e = np.einsum("bthe,hes->bhts", hid, p["w2"][..., :T]) + p["b2"][:, None, :T]
  np.testing.assert_allclose(out, _softmax_attend(e, _f64(_rep(v))[0]), atol=1e-5)


# ------------------------------------------------------------------ sparse patterns


def _numpy_pattern(name, t, s):
  """Each pattern written again in plain NumPy, independently of patterns.py."""
  qi, ki = np.arange(t)[:, None], np.arange(s)[None, :]
  rel = ki - qi
  if name == "sliding_window":
    return np.abs(rel) <= 3
  if name == "dilated_window":
    return (np.abs(rel) <= 4) & (rel % 2 == 0)
  if name == "longformer":
    return (np.abs(rel) <= 2) | (qi < 2) | (ki < 2)
  if name == "sparse_fixed":
    return (qi // 4 == ki // 4) | (ki % 4 == 3)
  if name == "sparse_strided":
    return (np.abs(rel) < 3) | (rel % 3 == 0)
  if name == "bigbird":
    qb, kb = qi // 4, ki // 4
    rand = patterns.BigBird(4, 3, 1, 1, 0).random_blocks(t, s)
    # Each non-global query block has exactly one random block outside its window/globals.
    nqb = rand.shape[0]
    assert rand[1:].sum(1).tolist() == [1] * (nqb - 1) and not rand[0].any()
    return (np.abs(qb - kb) <= 1) | (qb < 1) | (kb < 1) | rand[qb, kb]
  raise KeyError(name)


SPARSE = ["sliding_window", "dilated_window", "longformer", "bigbird", "sparse_fixed",
          "sparse_strided"]


@pytest.mark.parametrize("name", SPARSE)
@pytest.mark.parametrize("causal", [False, True])
def test_sparse_pattern_matches_reference_and_dense_with_mask(name, causal):
  t = 22
  q, k, v = _inputs(16, t=t, s=t)
  pattern_mask = _numpy_pattern(name, t, t)
  ref = reference_attention(q, k, v, mask=pattern_mask, is_causal=causal)[0]
  dense = kernels.dot_product_attention(q, k, v, mask=pattern_mask, is_causal=causal)
  for impl in ({"implementation": "xla"},
               {"implementation": "chunked", "block_q": 4, "block_kv": 8}):
    out = _call(name, q, k, v, is_causal=causal, **impl)
    np.testing.assert_allclose(out, ref, atol=2e-5)
    np.testing.assert_allclose(out, dense, atol=2e-5)


@pytest.mark.parametrize("name", SPARSE)
def test_sparse_pattern_gradients_match_dense_with_mask(name):
  t = 22
  q, k, v = _inputs(17, t=t, s=t)
  m = _numpy_pattern(name, t, t)
  f = lambda q, k, v: jnp.sum(jnp.sin(_call(name, q, k, v, implementation="chunked",
                                            block_q=8, block_kv=4)))
  g = lambda q, k, v: jnp.sum(jnp.sin(kernels.dot_product_attention(q, k, v, mask=m)))
  for a, b in zip(jax.grad(f, (0, 1, 2))(q, k, v), jax.grad(g, (0, 1, 2))(q, k, v)):
    np.testing.assert_allclose(a, b, atol=3e-5)


def test_window_patterns_skip_blocks():
  from attnjax.kernels import _common, chunked  # pylint: disable=import-outside-toplevel
  t = 4096
  x = jnp.zeros((1, t, 1, 8))
  for pattern, most in ((patterns.DilatedWindow(64, 64, 1), 3 * 8),
                        (patterns.Longformer(64, 64, 1), 3 * 8 + 2 * 8),
                        (patterns.BigBird(512, 3, 1, 1, 0), 3 * 8 + 2 * 8 + 8)):
    p = _common.prepare(x, x, x, fn="t", sparsity_pattern=pattern)
    live = chunked.live_block_count(p, 512, 512)
    assert live <= most < 64, (pattern, live)


# ----------------------------------------------------------------- approximations


def test_performer_error_falls_with_num_features():
  q, k, v = _inputs(18, t=32, s=32, h=2, kh=2)
  q, k = 0.5 * q, 0.5 * k
  ref = reference_attention(q, k, v)[0]
  errs = [np.mean([np.abs(kernels.get_kernel("performer")(
      q, k, v, num_features=m, feature_seed=s) - ref).mean() for s in range(4)])
          for m in (8, 32, 128, 512)]
  assert all(a > b for a, b in zip(errs, errs[1:])), errs
  assert errs[-1] < 0.3 * errs[0], errs


def test_performer_redraw_uses_feature_rng():
  q, k, v = _inputs(19)
  f = kernels.get_kernel("performer")
  a = f(q, k, v, redraw_features=True, feature_rng=jax.random.PRNGKey(1))
  b = f(q, k, v, redraw_features=True, feature_rng=jax.random.PRNGKey(2))
  assert not np.allclose(a, b)
  np.testing.assert_allclose(f(q, k, v, redraw_features=True), f(q, k, v))
  with pytest.raises(ValueError, match="feature_rng"):
    f(q, k, v, feature_rng=jax.random.PRNGKey(1))


def test_nystromformer_approaches_exact_as_landmarks_approach_seq():
  q, k, v = _inputs(20, t=64, s=64, h=2, kh=2)
  q, k = 0.5 * q, 0.5 * k
  ref = reference_attention(q, k, v)[0]
  errs = [float(np.abs(kernels.get_kernel("nystromformer")(
      q, k, v, num_landmarks=m, pinv_iterations=10) - ref).mean()) for m in (4, 16, 32, 64)]
  assert all(a > b for a, b in zip(errs, errs[1:])), errs
  assert errs[-1] < 1e-3, errs


def test_linear_attention_matches_its_formula_causal_and_not():
  q, k, v = _inputs(21)
  phi = lambda x: np.where(x > 0, x + 1, np.exp(x))
  q64, k64, v64 = _f64(q / np.sqrt(D), _rep(k), _rep(v))
  a = np.einsum("bthm,bshm->bhts", phi(q64), phi(k64))
  for causal in (False, True):
    w = np.tril(a) if causal else a
    ref = np.einsum("bhts,bshd->bthd", w / w.sum(-1, keepdims=True), v64)
    np.testing.assert_allclose(_call("linear", q, k, v, is_causal=causal), ref, atol=1e-5)


# -------------------------------------------------------------------------- FLOPs


def _xla_flops(f, *args) -> float:
  analysis = jax.jit(f).lower(*args).compile().cost_analysis()
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  return float(analysis["flops"])


def _declared_flops(name, q, k, **opts):
  return q.shape[0] * kernels.variants.attention_flops(
      kernels.get_kernel(name), q_len=q.shape[1], kv_len=k.shape[1], num_heads=q.shape[2],
      num_kv_heads=k.shape[2], head_dim=q.shape[3], batch_size=q.shape[0], **opts)


def _flops_inputs(t=128, d=32):
  q, k, v = random_inputs(np.random.default_rng(30), batch=(2,), t=t, s=t, h=4, kh=2, d=d,
                          dtype=np.float32)
  return jnp.asarray(q), jnp.asarray(k), jnp.asarray(v)


# At these shapes every loop of these kernels runs once (XLA's cost analysis counts a loop
# body once), so XLA sees all their work. sliding_window runs dense at this size.
_FLOPS_CASES = {
    "dot_product": {},
    "linear": {},
    "performer": {"num_features": 64},
    "linformer": {"projected_length": 64},
    "nystromformer": {"num_landmarks": 16},
    "reformer": {"num_buckets": 8, "chunk_size": 32, "num_hashes": 2},
    "sinkhorn": {"block_size": 32},
    "synthesizer_dense": {},
    "synthesizer_random": {},
    "sigmoid": {},
    "differential": {},
    "sliding_window": {"window_size": 16},
}


@pytest.mark.parametrize("name", sorted(_FLOPS_CASES))
def test_declared_flops_match_xla_cost_analysis(name):
  q, k, v = _flops_inputs()
  opts = dict(CAPS[name].options, **_FLOPS_CASES[name])
  params = kernels.init_params(kernels.get_kernel(name), jax.random.PRNGKey(1), num_heads=4,
                               num_kv_heads=2, head_dim=32, q_len=128, kv_len=128, **opts)
  # Parameters are arguments: drawing them inside the jitted function would add to its cost.
  xla = _xla_flops(lambda q, k, v, p: _call(name, q, k, v, params=p, **opts), q, k, v, params)
  ours = _declared_flops(name, q, k, **opts)
  # Ours counts matmuls only; XLA adds feature maps, softmax, sorting and the like.
  assert 0.85 <= ours / xla <= 1.02, (ours, xla, ours / xla)


def test_sub_quadratic_flops_are_far_below_dense_at_length():
  t, h, d = 16384, 2, 16
  dense = kernels.variants.dense_attention_flops(t, t, h, d)
  for name in ("linear", "performer", "linformer", "nystromformer", "reformer", "sinkhorn"):
    ours = kernels.variants.attention_flops(kernels.get_kernel(name), q_len=t, kv_len=t,
                                            num_heads=h, head_dim=d)
    assert ours < 0.05 * dense, (name, ours / dense)


def test_causal_linear_flops_count_every_chunk():
  q, k, v = _flops_inputs()
  n = 4  # chunks of 32
  # Whether this XLA counts a scan body once or once per iteration.
  x = jnp.ones((32, 32))
  per_iteration = _xla_flops(
      lambda x: jax.lax.scan(lambda c, _: (c @ x, None), x, None, length=n)[0], x) / _xla_flops(
          lambda x: x @ x, x)
  counted = n if round(per_iteration) == n else 1
  xla = _xla_flops(lambda q, k, v: _call("linear", q, k, v, is_causal=True, chunk_size=32),
                   q, k, v)
  ours = _declared_flops("linear", q, k, is_causal=True, chunk_size=32)
  assert 0.85 <= ours * counted / n / xla <= 1.02, (ours, xla, counted)
  # The in-chunk products make the causal form dearer than the non-causal one.
  assert ours > _declared_flops("linear", q, k, chunk_size=32)


@pytest.mark.parametrize("name", SPARSE)
def test_sparse_flops_follow_the_implementation(name):
  t, b = 256, 32
  q, k, _ = _flops_inputs(t=t)
  opts = dict(CAPS[name].options)
  dense = _declared_flops(name, q, k, implementation="xla", **opts)
  assert dense == q.shape[0] * kernels.variants.dense_attention_flops(t, t, 4, 32)
  # Blockwise: every [b, b] block with at least one live (query, key) pair, counted here
  # from the dense pattern.
  live = _numpy_pattern(name, t, t).reshape(t // b, b, t // b, b).any(axis=(1, 3)).sum()
  chunked = _declared_flops(name, q, k, implementation="chunked", block_q=b, block_kv=b,
                            **opts)
  assert chunked == q.shape[0] * live * kernels.variants.dense_attention_flops(b, b, 4, 32)
  if name not in ("sparse_fixed", "sparse_strided"):  # their columns reach every block
    assert chunked < dense
  causal = _declared_flops(name, q, k, implementation="chunked", block_q=b, block_kv=b,
                           is_causal=True, **opts)
  assert causal < chunked
