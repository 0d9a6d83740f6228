"""mask_fn / score_fn (FlexAttention semantics): reference numbers, gradients, layouts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import kernels
from attnjax.kernels import _common, chunked, masks
from kernel_reference import random_inputs, reference_attention

B, T, H, KH, D = 2, 13, 4, 2, 8  # T is not a multiple of the blocks below
_RNG = np.random.default_rng(0)
_Q, _K, _V = random_inputs(_RNG, batch=(B,), t=T, s=T, h=H, kh=KH, d=D)
_SEG = np.stack([np.repeat([0, 1, 2], [5, 6, 2]), np.repeat([0, 1], [9, 4])])
_PREFIX = np.array([4, 7])
_QI, _KI = np.arange(T)[:, None], np.arange(T)[None, :]

# name -> (mask_fn, the same mask as a dense bool [B, 1, T, S] array)
COMPOSITIONS = {
    "causal_document": (
        kernels.and_masks(kernels.causal_mask, kernels.document_mask(_SEG)),
        (_KI <= _QI) & (_SEG[:, :, None] == _SEG[:, None, :])),
    "window_document": (
        kernels.and_masks(kernels.sliding_window_mask(3, 1), kernels.document_mask(_SEG)),
        (_KI >= _QI - 3) & (_KI <= _QI + 1) & (_SEG[:, :, None] == _SEG[:, None, :])),
    "prefix_lm_or_window": (
        kernels.or_masks(kernels.prefix_lm_mask(_PREFIX), kernels.sliding_window_mask(0, 2)),
        ((_KI <= _QI) | (_KI < _PREFIX[:, None, None])) | ((_KI >= _QI) & (_KI <= _QI + 2))),
}


@pytest.mark.parametrize("name", sorted(COMPOSITIONS))
def test_compositions_match_float64_reference(name):
  mask_fn, dense = COMPOSITIONS[name]
  dense = dense[:, None] if dense.ndim == 3 else dense
  ref_out, _, ref_w = reference_attention(_Q, _K, _V, mask=dense)
  for impl in ({"implementation": "xla"},
               {"implementation": "chunked", "block_q": 4, "block_kv": 3}):
    out = kernels.dot_product_attention(_Q, _K, _V, mask_fn=mask_fn, **impl)
    np.testing.assert_allclose(out, ref_out, atol=2e-6, err_msg=str(impl))
  weights = kernels.attention_weights(_Q, _K, mask_fn=mask_fn)
  np.testing.assert_allclose(weights, ref_w, atol=2e-6)


def test_score_fn_with_captured_table_matches_bias_with_gradients():
  # A relative-position table per head, captured by the score_fn: its gradient, and
  # those of q, k, v, equal dense attention given the same table as an explicit bias.
  table = jnp.asarray(_RNG.normal(size=(H, 2 * T)), jnp.float32)
  mask_fn = kernels.and_masks(kernels.causal_mask, kernels.document_mask(_SEG))
  dense_mask = ((_KI <= _QI) & (_SEG[:, :, None] == _SEG[:, None, :]))[:, None]

  def flex(impl, q, k, v, table):
    score = lambda s, b, h, qi, ki: s + table[h, qi - ki + T]  # noqa: E731
    extra = {"block_q": 4, "block_kv": 4} if impl == "chunked" else {}
    return kernels.dot_product_attention(q, k, v, mask_fn=mask_fn, score_fn=score,
                                         logits_soft_cap=3.0, implementation=impl, **extra)

  def dense(q, k, v, table):
    bias = table[:, _QI - _KI + T]  # [H, T, S]
    return kernels.dot_product_attention(q, k, v, mask=dense_mask, bias=bias,
                                         logits_soft_cap=3.0, implementation="xla")

  bias64 = np.asarray(table)[:, _QI - _KI + T]
  ref = reference_attention(_Q, _K, _V, mask=dense_mask, bias=bias64, logits_soft_cap=3.0)[0]
  np.testing.assert_allclose(flex("chunked", _Q, _K, _V, table), ref, atol=2e-6)
  cot = _RNG.normal(size=ref.shape).astype(np.float32)
  grad = lambda f: jax.jit(jax.grad(  # noqa: E731
      lambda *a: jnp.sum(f(*a) * cot), argnums=(0, 1, 2, 3)))(_Q, _K, _V, table)
  want = grad(dense)
  for impl in ("xla", "chunked"):
    for a, b in zip(grad(lambda *a: flex(impl, *a)), want):
      np.testing.assert_allclose(a, b, atol=2e-5, err_msg=impl)


def _live_blocks(dense: np.ndarray, bq: int, bk: int) -> int:
  """Blocks of a dense [..., T, S] mask with any live entry (brute force)."""
  m = np.broadcast_to(dense, (B, T, T)).any(0)
  nq, nk = -(-T // bq), -(-T // bk)
  m = np.pad(m, ((0, nq * bq - T), (0, nk * bk - T)))
  return int(m.reshape(nq, bq, nk, bk).any(axis=(1, 3)).sum())


@pytest.mark.parametrize("name", sorted(COMPOSITIONS))
def test_blocks_visited_equal_live_blocks(name):
  mask_fn, dense = COMPOSITIONS[name]
  p = _common.prepare(_Q, _K, _V, fn="test", mask_fn=mask_fn)
  assert chunked.live_block_count(p, 4, 3) == _live_blocks(dense, 4, 3)


def test_layout_traced_and_static_agree_and_full_blocks_are_marked():
  # Traced segment ids: the layout is computed at run time, and equals the static one.
  static = kernels.block_layout(kernels.and_masks(kernels.causal_mask,
                                                  kernels.document_mask(_SEG)),
                                q_len=T, kv_len=T, block_q=4, block_kv=4, batch=B)
  traced = jax.jit(lambda seg: kernels.block_layout(
      kernels.and_masks(kernels.causal_mask, kernels.document_mask(seg)), q_len=T, kv_len=T,
      block_q=4, block_kv=4, batch=B))(_SEG)
  np.testing.assert_array_equal(traced, static)
  causal = kernels.block_layout(kernels.causal_mask, q_len=16, kv_len=16, block_q=4,
                                block_kv=4)
  want = np.where(np.arange(4)[:, None] > np.arange(4), masks.FULL,
                  np.where(np.arange(4)[:, None] == np.arange(4), masks.PARTIAL, masks.EMPTY))
  np.testing.assert_array_equal(causal, want)


def test_decoding_query_index_is_shifted_by_q_offset():
  # q_idx is the absolute position: a causal mask_fn decodes like is_causal.
  full = kernels.dot_product_attention(_Q, _K, _V, mask_fn=kernels.causal_mask)
  step = jax.jit(lambda q, i: kernels.chunked_attention(q, _K, _V, mask_fn=kernels.causal_mask,
                                                        q_offset=i, block_q=4, block_kv=4))
  np.testing.assert_allclose(step(_Q[:, 6:9], jnp.int32(6)), full[:, 6:9], atol=2e-6)


@pytest.mark.parametrize("kw,match", [
    ({"mask_fn": lambda b, h, q: q > 0}, "mask_fn must take 4 positional arguments"),
    ({"mask_fn": lambda b, h, q, k: (q - k).astype(jnp.float32)}, "mask_fn must return a boolean"),
    ({"mask_fn": 3}, "mask_fn must be a function"),
    ({"score_fn": lambda s, b, h, q, k: jnp.stack([s, s])}, "score_fn must return one scalar"),
    ({"score_fn": lambda s, b, h, q: s}, "score_fn must take 5 positional arguments"),
])
def test_bad_functions_raise_naming_them(kw, match):
  with pytest.raises(ValueError, match=match):
    kernels.dot_product_attention(_Q, _K, _V, **kw)
