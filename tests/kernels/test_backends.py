"""Backend constraints and the fused kernels' numerics, without a GPU or TPU.

Constraints: for every constraint of cuDNN and of the Pallas kernels, a call violating it
is refused naming it, and the automatic choice for that platform never picks the backend.
Numerics: the Pallas GPU (Triton) and TPU (splash) kernels run in interpret mode on CPU
against the XLA path, forward and backward.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import kernels
from attnjax.kernels import _common
from attnjax.kernels import backends
from attnjax.kernels import dispatch
from attnjax.kernels import patterns

AMPERE, HOPPER = (8, 0), (9, 0)


def _qkv(dtype=jnp.bfloat16, b=1, t=256, s=None, h=4, kv_heads=None, d=64, dv=None):
  s = t if s is None else s
  kh = kv_heads or h
  return (jax.ShapeDtypeStruct((b, t, h, d), dtype), jax.ShapeDtypeStruct((b, s, kh, d), dtype),
          jax.ShapeDtypeStruct((b, s, kh, dv or d), dtype))


def _random_qkv(dtype, **kw):
  shapes = _qkv(dtype, **kw)
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  return tuple(jax.random.normal(key, x.shape, x.dtype) for key, x in zip(keys, shapes))


def _explain(q, k, v, **kw):
  """``explain_implementation`` on abstract inputs (traced, nothing runs or compiles)."""
  out = []
  jax.eval_shape(lambda q, k, v: out.append(kernels.explain_implementation(q, k, v, **kw)),
                 q, k, v)
  return out[0]


def _seg(t=256):
  return jnp.asarray(np.repeat(np.arange(4), t // 4)[None], jnp.int32)


@dataclasses.dataclass(frozen=True)
class StrictlyPast:
  """A pattern without the diagonal: a query sees only earlier keys (row 0 sees none)."""

  def allows(self, qi, ki, *, offset, q_len, kv_len, xp):
    del q_len, kv_len, xp
    return ki - qi - offset < 0


@pytest.fixture(autouse=True)
def cudnn_installed(monkeypatch, request):
  """The constraint tests judge cuDNN's rules as if jax's CUDA plugin were installed."""
  if "no_cudnn" not in request.keywords:
    monkeypatch.setattr(backends, "cudnn_available", lambda: True)


def _rng():
  return jax.random.PRNGKey(3)


# (id, backend, target platform, compute capability, qkv kwargs, call kwargs, words in the refusal)
CONSTRAINTS = [
    ("cudnn-cpu", "cudnn", "cpu", None, {}, {}, "needs an NVIDIA GPU"),
    ("cudnn-f32", "cudnn", "gpu", HOPPER, dict(dtype=jnp.float32), {}, "float16 or bfloat16"),
    ("cudnn-d256-ampere", "cudnn", "gpu", AMPERE, dict(d=256), {}, "head_dim <= 128 on sm_80"),
    ("cudnn-d256-unknown", "cudnn", "gpu", None, dict(d=256), {}, "head_dim <= 128"),
    ("cudnn-d512-hopper", "cudnn", "gpu", HOPPER, dict(d=512), {}, "head_dim <= 256 on sm_90"),
    ("cudnn-d12", "cudnn", "gpu", HOPPER, dict(d=12), {}, "a multiple of 8"),
    ("cudnn-vdim", "cudnn", "gpu", HOPPER, dict(dv=32), {}, "v_dim == head_dim"),
    ("cudnn-right-window", "cudnn", "gpu", HOPPER, {}, dict(local_window_size=16),
     "only left windows"),
    ("cudnn-window-cross", "cudnn", "gpu", HOPPER, dict(s=128), dict(local_window_size=(8, 0)),
     "q_seq == kv_seq"),
    ("cudnn-odd-bias", "cudnn", "gpu", HOPPER, dict(t=255),
     dict(bias=jnp.zeros((255, 255), jnp.bfloat16)), "even q_seq and kv_seq"),
    ("cudnn-odd-mask", "cudnn", "gpu", HOPPER, dict(t=128, s=127),
     dict(mask=jnp.ones((128, 127), bool)), "even q_seq and kv_seq"),
    ("cudnn-dropout", "cudnn", "gpu", HOPPER, {},
     dict(dropout_rate=0.1, dropout_rng=_rng(), deterministic=False), "dropout_rate"),
    ("cudnn-softcap", "cudnn", "gpu", HOPPER, {}, dict(logits_soft_cap=20.0), "logits_soft_cap"),
    ("cudnn-alibi", "cudnn", "gpu", HOPPER, {}, dict(alibi_slopes=jnp.ones(4)), "alibi_slopes"),
    ("cudnn-segments", "cudnn", "gpu", HOPPER, {}, dict(q_segment_ids=_seg()), "segment_ids"),
    ("cudnn-pattern", "cudnn", "gpu", HOPPER, {},
     dict(sparsity_pattern=patterns.DilatedWindow(8, 8, 2)), "sparsity_pattern"),
    ("cudnn-bottom-right", "cudnn", "gpu", HOPPER, dict(t=128, s=256),
     dict(is_causal=True, alignment="bottom_right"), "alignment='top_left'"),
    ("cudnn-residual", "cudnn", "gpu", HOPPER, {}, dict(return_residual=True), "return_residual"),
    ("cudnn-precision", "cudnn", "gpu", HOPPER, {}, dict(precision=jax.lax.Precision.HIGHEST),
     "precision"),
    ("pallas-cpu", "pallas", "cpu", None, {}, {}, "needs a GPU or TPU"),
    ("pallas-gpu-mask", "pallas", "gpu", HOPPER, {}, dict(mask=jnp.ones((256, 256), bool)),
     "bias or mask"),
    ("pallas-gpu-window", "pallas", "gpu", HOPPER, {}, dict(local_window_size=(8, 0)),
     "local_window_size"),
    ("pallas-gpu-lengths", "pallas", "gpu", HOPPER, {},
     dict(key_value_seq_lengths=jnp.array([100])), "key_value_seq_lengths"),
    ("pallas-gpu-softcap", "pallas", "gpu", HOPPER, {}, dict(logits_soft_cap=20.0),
     "logits_soft_cap"),
    ("pallas-gpu-d48", "pallas", "gpu", HOPPER, dict(d=48), {}, "power of two"),
    ("pallas-gpu-cross", "pallas", "gpu", HOPPER, dict(s=128), {}, "q_seq == kv_seq"),
    ("pallas-gpu-blocks", "pallas", "gpu", HOPPER, dict(t=200), {}, "multiple of its block"),
    ("pallas-gpu-kv-segments", "pallas", "gpu", HOPPER, {},
     dict(q_segment_ids=_seg(), kv_segment_ids=_seg()), "q_segment_ids only"),
    ("pallas-tpu-bias", "pallas", "tpu", None, {}, dict(bias=jnp.zeros((256, 256))),
     "bias or mask"),
    ("pallas-tpu-lengths", "pallas", "tpu", None, {}, dict(query_seq_lengths=jnp.array([10])),
     "query_seq_lengths"),
    ("pallas-tpu-dropout", "pallas", "tpu", None, {},
     dict(dropout_rate=0.1, dropout_rng=_rng(), deterministic=False), "dropout_rate"),
    ("pallas-tpu-t5", "pallas", "tpu", None, {},
     dict(relative_bias_table=jnp.zeros((32, 4))), "relative_bias_table"),
    ("pallas-tpu-residual", "pallas", "tpu", None, {}, dict(return_residual=True),
     "return_residual"),
    ("pallas-tpu-len", "pallas", "tpu", None, dict(t=200), {}, "multiple of 128"),
    ("pallas-tpu-bottom-right", "pallas", "tpu", None, dict(t=128, s=256),
     dict(is_causal=True, alignment="bottom_right"), "no query row may be fully masked"),
    ("pallas-tpu-pattern-diag", "pallas", "tpu", None, {},
     dict(sparsity_pattern=StrictlyPast()),
     "keeps the diagonal"),
    ("pallas-tpu-f64", "pallas", "tpu", None, dict(dtype=jnp.float32), dict(dtype=jnp.float64),
     "float64"),
]


@pytest.mark.parametrize("case", CONSTRAINTS, ids=[c[0] for c in CONSTRAINTS])
def test_backend_refuses_naming_the_constraint_and_automatic_never_picks_it(case):
  _, backend, platform, cc, shape_kw, call_kw, words = case
  if call_kw.get("dtype") == jnp.float64 and not jax.config.jax_enable_x64:
    pytest.skip("needs jax_enable_x64")
  q, k, v = _qkv(**shape_kw)
  with dispatch.target(platform, compute_capability=cc):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
      _explain(q, k, v, implementation=backend, **call_kw)
    auto = _explain(q, k, v, **call_kw)
  assert auto.name != backend, (auto, words)
  assert auto.reason


def test_every_cudnn_and_pallas_refusal_is_in_the_constraint_table():
  """Each distinct refusal sentence of the fused backends has a case above."""
  seen = {c[6] for c in CONSTRAINTS}
  for needed in ("only left windows", "even q_seq and kv_seq", "head_dim <= 256 on sm_90",
                 "head_dim <= 128 on sm_80", "segment_ids", "multiple of 128"):
    assert needed in seen


@pytest.mark.parametrize("platform,cc,shape_kw,call_kw,want", [
    ("gpu", HOPPER, {}, dict(is_causal=True), "cudnn"),
    ("gpu", HOPPER, dict(d=256), {}, "cudnn"),                    # Hopper allows 256
    ("gpu", AMPERE, dict(d=256), {}, "pallas"),                   # Ampere: not cuDNN
    ("gpu", HOPPER, {}, dict(local_window_size=(64, 0)), "cudnn"),  # left window
    ("gpu", HOPPER, {}, dict(local_window_size=(64, 64), is_causal=True), "cudnn"),
    ("gpu", HOPPER, {}, dict(q_segment_ids=_seg(), is_causal=True), "pallas"),
    ("gpu", HOPPER, dict(dtype=jnp.float32), dict(q_segment_ids=_seg()), "xla"),
    ("tpu", None, {}, dict(is_causal=True, local_window_size=(32, 0), logits_soft_cap=30.0),
     "pallas"),
    ("tpu", None, dict(kv_heads=2), dict(q_segment_ids=_seg()), "pallas"),
])
def test_automatic_choice_per_platform(platform, cc, shape_kw, call_kw, want):
  q, k, v = _qkv(**shape_kw)
  with dispatch.target(platform, compute_capability=cc):
    choice = _explain(q, k, v, **call_kw)
  assert choice.name == want, choice
  assert choice.platform == platform and choice.reason
  if want == "pallas" and platform == "tpu":
    assert "TPU" in choice.reason and "splash" in choice.reason


@pytest.mark.no_cudnn
def test_without_the_cuda_plugin_cudnn_is_refused_and_never_chosen():
  q, k, v = _qkv()
  with dispatch.target("gpu", compute_capability=HOPPER):
    if not backends.cudnn_available():
      with pytest.raises(ValueError, match="CUDA plugin"):
        _explain(q, k, v, implementation="cudnn")
      assert _explain(q, k, v).name == "pallas"
    else:
      assert _explain(q, k, v).name == "cudnn"


def test_target_validates_its_arguments():
  with pytest.raises(ValueError, match="platform"):
    with dispatch.target("metal"):
      pass
  with pytest.raises(ValueError, match="compute_capability"):
    with dispatch.target("gpu", compute_capability="hopper"):
      pass
  assert dispatch.current_target().platform == jax.default_backend()


# ------------------------------------------------------------------ interpret-mode numerics


def _loss(impl, q, k, v, kw):
  out = kernels.dot_product_attention(q, k, v, implementation=impl, **kw)
  lse = None
  if isinstance(out, tuple):
    out, lse = out
  out = out.astype(jnp.float32)
  total = jnp.sum(out * jnp.cos(out))
  if lse is not None:
    total = total + jnp.sum(jnp.sin(lse))
  return total, (out, lse)


def _compare(platform, q, k, v, kw, tol):
  grad = jax.value_and_grad(_loss, argnums=(1, 2, 3), has_aux=True)
  with dispatch.target(platform, interpret=True):
    assert kernels.explain_implementation(
        q, k, v, implementation="pallas", **kw).interpret
    (_, (out, lse)), grads = jax.jit(lambda *a: grad("pallas", *a, kw))(q, k, v)
  (_, (want_out, want_lse)), want_grads = grad("xla", q, k, v, kw)
  np.testing.assert_allclose(out, want_out, atol=tol, rtol=tol)
  if lse is not None:
    np.testing.assert_allclose(lse, want_lse, atol=tol, rtol=tol)
  for got, want in zip(grads, want_grads):
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                               atol=tol * max(1.0, float(np.abs(want).max())), rtol=tol)


@pytest.mark.parametrize("dtype,tol,kw", [
    (jnp.float32, 2e-6, dict(is_causal=True, return_residual=True)),
    (jnp.bfloat16, 2e-2, dict(return_residual=True)),
], ids=["f32-causal-segments-gqa-lse", "bf16-segments-gqa-lse"])
def test_pallas_gpu_interpret_matches_xla(dtype, tol, kw):
  q, k, v = _random_qkv(dtype, t=64, h=4, kv_heads=2, d=16)
  seg = jnp.asarray([[0] * 20 + [1] * 30 + [2] * 14], jnp.int32)
  _compare("gpu", q, k, v, dict(kw, q_segment_ids=seg), tol)


@pytest.mark.parametrize("dtype,tol,kw", [
    (jnp.float32, 2e-6, dict(is_causal=True, local_window_size=(40, 3), logits_soft_cap=5.0)),
    (jnp.bfloat16, 2e-2, dict(sparsity_pattern=patterns.Longformer(16, 16, 2))),
], ids=["f32-causal-window-softcap-segments-gqa", "bf16-longformer-segments-gqa"])
def test_pallas_tpu_splash_interpret_matches_xla(dtype, tol, kw):
  q, k, v = _random_qkv(dtype, t=256, h=4, kv_heads=2, d=16)
  seg = jnp.asarray([[0] * 100 + [1] * 100 + [2] * 56], jnp.int32)
  _compare("tpu", q, k, v, dict(kw, q_segment_ids=seg), tol)


def test_splash_mask_is_the_chunked_kernels_predicate():
  from attnjax.kernels import pallas_tpu  # pylint: disable=import-outside-toplevel
  q, k, v = _random_qkv(jnp.float32, t=256, d=16)
  p = _common.prepare(q, k, v, fn="t", is_causal=True, local_window_size=(40, 3),
                      sparsity_pattern=patterns.DilatedWindow(30, 30, 3))
  mask = pallas_tpu.make_mask(p)
  got = mask[0, 100:228, 0:256] if mask.shape[0] == 4 else None
  assert mask.shape == (4, 256, 256)
  want = np.asarray(_common.block_mask(p, 0, 256, 0, 256)).reshape(256, 256)
  np.testing.assert_array_equal(got, want[100:228])
