"""Cached decoding: ``q_offset`` (traced under jit) gives full recomputation's numbers.

Each decodable kernel prefills a prompt, then extends one token at a time against a
static-size key/value buffer whose unused slots hold garbage and are masked; the rows
must equal one full-sequence call. Kernels that cannot decode are refused by name.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import kernels
from attnjax.kernels import patterns

B, S, P, H, KH, D = 2, 12, 5, 4, 2, 8  # buffer S, prompt P

_RNG = np.random.default_rng(0)
_Q = _RNG.normal(size=(B, S, H, D)).astype(np.float32)
_K = _RNG.normal(size=(B, S, KH, D)).astype(np.float32)
_V = _RNG.normal(size=(B, S, KH, D)).astype(np.float32)
_GARBAGE = 50.0 * _RNG.normal(size=(B, S, KH, D)).astype(np.float32)
_TABLE = _RNG.normal(size=(8, H)).astype(np.float32)

OPTIONS = {"causal": dict(is_causal=True)}
EVERYTHING = dict(is_causal=True, local_window_size=(6, 0), alibi_slopes=kernels.alibi_slopes(H),
                  relative_bias_table=_TABLE, relative_max_distance=10)

# Each decodable kernel's own options (small patterns so that S=12 spans several blocks).
KERNEL_OPTIONS = {
    "dot_product": {},
    "chunked": dict(block_q=4, block_kv=4),
    "sliding_window": dict(window_size=3),
    "dilated_window": dict(window_size=2, dilation=2),
    "longformer": dict(window_size=2, num_global_tokens=2),
    "bigbird": dict(block_size=4, num_window_blocks=3, num_global_blocks=1,
                    num_random_blocks=1),
    "sparse_fixed": dict(block_size=4, summary_size=1, implementation="chunked", block_q=4,
                         block_kv=4),
    "sparse_strided": dict(stride=3),
    "cosine": {},
    "unscaled_dot_product": {},
    "general": {},
    "additive": {},
    "sigmoid": {},
    "differential": {},
    "synthesizer_dense": {},
    "synthesizer_random": {},
}
DECODABLE = sorted(n for n in kernels.list_kernels() if kernels.supports_decode(
    kernels.get_kernel(n)))


def test_every_decodable_kernel_is_tested():
  assert DECODABLE == sorted(KERNEL_OPTIONS)


def _decode_vs_full(name: str, opts: dict) -> tuple[np.ndarray, np.ndarray]:
  fn = kernels.get_kernel(name)
  opts = {**KERNEL_OPTIONS[name], **opts}
  params = kernels.init_params(fn, jax.random.key(1), num_heads=H, num_kv_heads=KH,
                               head_dim=D, q_len=S, kv_len=S, **opts)
  if params:
    opts["params"] = params
  call = functools.partial(fn, **opts)

  @jax.jit
  def run(q, k, v, garbage):
    def cache(n):  # buffer after n tokens: unused slots hold garbage and are masked
      filled = jnp.arange(S) < n
      slot = filled[None, :, None, None]
      return (jnp.where(slot, k, garbage), jnp.where(slot, v, -garbage),
              filled[None, None, None, :])

    kb, vb, m = cache(P)
    prefill = call(q[:, :P], kb, vb, mask=m, q_offset=jnp.int32(0))

    def step(_, i):
      kb, vb, m = cache(i + 1)
      return None, call(lax_slice(q, i), kb, vb, mask=m, q_offset=i)[:, 0]

    _, rows = jax.lax.scan(step, None, jnp.arange(P, S, dtype=jnp.int32))
    decoded = jnp.concatenate([prefill, jnp.moveaxis(rows, 0, 1)], axis=1)
    return decoded, call(q, k, v)

  decoded, full = run(_Q, _K, _V, _GARBAGE)
  return np.asarray(decoded), np.asarray(full)


def lax_slice(q, i):
  return jax.lax.dynamic_slice_in_dim(q, i, 1, axis=1)


# Every option at once for every kernel (a wrong offset in any of them shows), and causal
# alone on the chunked path, whose dynamic loop bounds then do all the masking.
_CASES = [("chunked", "causal")] + [(n, "everything") for n in sorted(KERNEL_OPTIONS)]


@pytest.mark.parametrize("name,case", _CASES, ids=[f"{n}-{c}" for n, c in _CASES])
def test_cached_decoding_equals_full_recomputation(name, case):
  decoded, full = _decode_vs_full(name, OPTIONS.get(case, EVERYTHING))
  np.testing.assert_allclose(decoded, full, atol=1e-5, rtol=1e-5)


def test_traced_offset_gradients_match_dense():
  # A traced offset bounds the chunked loops dynamically (and evaluates the pattern's
  # layout at run time), backward too: gradients equal the dense path's.
  opts = dict(EVERYTHING, sparsity_pattern=patterns.BigBird(4, 3, 1, 1, 0))

  def loss(impl, q, k, v, table, offset):
    extra = dict(block_q=4, block_kv=4) if impl == "chunked" else {}
    o = kernels.dot_product_attention(q[:, 3:8], k, v, implementation=impl, q_offset=offset,
                                      **extra, **{**opts, "relative_bias_table": table})
    return jnp.sum(jnp.sin(o))

  args = (_Q, _K, _V, _TABLE, jnp.int32(3))
  grad = lambda impl: jax.jit(jax.grad(functools.partial(loss, impl),  # noqa: E731
                                       argnums=(0, 1, 2, 3)))(*args)
  for a, b in zip(grad("chunked"), grad("xla")):
    np.testing.assert_allclose(a, b, atol=2e-5)


@pytest.mark.parametrize("name", sorted(set(kernels.list_kernels()) - set(DECODABLE)))
def test_kernels_that_cannot_decode_refuse_by_name(name):
  fn = kernels.get_kernel(name)
  params = kernels.init_params(fn, jax.random.key(1), num_heads=H, num_kv_heads=KH, head_dim=D,
                               q_len=S, kv_len=S)
  extra = {"params": params} if params else {}
  with pytest.raises(ValueError, match=f"{fn.__name__}: cannot decode.*q_offset"):
    fn(_Q[:, :1], _K, _V, q_offset=jnp.int32(3), **extra)


def test_bad_q_offset_raises_naming_it():
  with pytest.raises(ValueError, match="q_offset must be an integer scalar"):
    kernels.dot_product_attention(_Q, _K, _V, q_offset=jnp.zeros((2,), jnp.int32))
  with pytest.raises(ValueError, match="q_offset or alignment"):
    kernels.dot_product_attention(_Q, _K, _V, q_offset=2, alignment="bottom_right")


def test_flax_decode_mode_gives_flax_results():
  # flax's decode=True feeds one query against the whole cache; the kernel places it at
  # the module's cache index, so causal + window masks match flax's full-sequence run.
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  kernel_opts = dict(is_causal=True, local_window_size=(3, 0))
  x = jnp.asarray(_RNG.normal(size=(B, S, 16)), jnp.float32)
  mk = lambda **kw: nn.MultiHeadDotProductAttention(num_heads=4, qkv_features=16, **kw)  # noqa: E731
  qi, ki = np.arange(S)[:, None], np.arange(S)[None, :]
  mask = (ki <= qi) & (ki >= qi - 3)
  ref_model = mk()  # flax's own attention with the equivalent full-sequence mask
  params = ref_model.init(jax.random.key(0), x)["params"]
  want = ref_model.apply({"params": params}, x, mask=jnp.asarray(mask)[None, None])

  ours = mk(decode=True, attention_fn=functools.partial(kernels.dot_product_attention,
                                                        **kernel_opts))
  cache = ours.init(jax.random.key(0), x)["cache"]

  @jax.jit
  def step(cache, x_t):
    out, upd = ours.apply({"params": params, "cache": cache}, x_t, mutable=["cache"])
    return upd["cache"], out

  outs = []
  for i in range(S):
    cache, out = step(cache, x[:, i:i + 1])
    outs.append(out)
  np.testing.assert_allclose(np.concatenate(outs, axis=1), want, atol=1e-5)
