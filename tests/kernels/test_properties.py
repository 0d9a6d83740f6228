"""Property-based tests: random shapes, dtypes and options at every registered kernel.

Each call must return an output of the contract's shape and dtype, or raise a one-line
``ValueError`` that names the function; any other exception is a bug. Calls are traced
with ``jax.eval_shape`` (every check a kernel makes runs at trace time, and tracing
compiles nothing, so hundreds of shapes stay cheap); masks, lengths and other options
are closed over as concrete arrays, so checks on their values run too. The numbers
themselves are tested against float64 references elsewhere.
"""

from __future__ import annotations

import inspect
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from attnjax import kernels

_SETTINGS = settings(max_examples=8, deadline=None, derandomize=True, database=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

_EXACT = ["dot_product", "chunked"]
_EXACT_WRAPPERS = ["additive", "cosine", "differential", "general", "sigmoid",
                   "synthesizer_dense", "synthesizer_random", "unscaled_dot_product"]
_SPARSE = ["bigbird", "dilated_window", "longformer", "sliding_window", "sparse_fixed",
           "sparse_strided"]
_APPROXIMATE = ["linear", "linformer", "nystromformer", "performer", "reformer", "sinkhorn"]



def _mostly(valid: st.SearchStrategy, invalid: st.SearchStrategy) -> st.SearchStrategy:
  """``valid`` five times in six, else ``invalid`` (so most calls get past validation)."""
  return st.integers(0, 5).flatmap(lambda i: invalid if i == 0 else valid)


_small = _mostly(st.integers(1, 5), st.integers(-1, 0))
# Kernel-specific options, each sometimes out of range.
_OPTIONS: dict[str, dict[str, Any]] = {
    "additive": {"attention_dim": st.one_of(st.none(), _small)},
    "cosine": {"learnable_scale": st.booleans(), "temperature": st.one_of(
        st.none(), st.sampled_from([-1.0, 0.0, 0.5, float("nan")]))},
    "differential": {"lambda_init": st.sampled_from([0.0, 0.8])},
    "sigmoid": {"sigmoid_bias": st.one_of(st.none(), st.sampled_from([-2.0, 0.0]))},
    "bigbird": {"block_size": _small, "num_window_blocks": _small,
                "num_global_blocks": _small, "num_random_blocks": _small},
    "dilated_window": {"window_size": _small, "dilation": _small},
    "longformer": {"window_size": _small, "num_global_tokens": _small},
    "sliding_window": {"window_size": st.one_of(_small, st.tuples(_small, _small))},
    "sparse_fixed": {"block_size": _small, "summary_size": _small},
    "sparse_strided": {"stride": _small},
    "linear": {"chunk_size": _small},
    "linformer": {"projected_length": _small},
    "nystromformer": {"num_landmarks": _small, "pinv_iterations": st.integers(0, 2)},
    "performer": {"num_features": st.integers(0, 6), "chunk_size": _small,
                  "orthogonal": st.booleans()},
    "reformer": {"num_buckets": _small, "num_hashes": st.integers(0, 2), "chunk_size": _small},
    "sinkhorn": {"block_size": _small, "sinkhorn_iterations": st.integers(0, 2)},
}


@st.composite
def _calls(draw, names: list[str], exact_options: bool = False) -> dict[str, Any]:
  """A kernel name, input shapes and dtypes, and options (some of them invalid)."""
  name = draw(st.sampled_from(names))
  batch = tuple(draw(st.lists(st.integers(1, 2), max_size=2)))
  t, s = draw(st.integers(1, 7)), draw(st.integers(1, 7))
  kh = draw(st.sampled_from([1, 2]))
  h = draw(_mostly(st.sampled_from([kh, 2 * kh]), st.integers(1, 3)))
  d = draw(st.integers(1, 6))
  dv = d if draw(st.booleans()) else draw(st.integers(1, 5))
  dtype = draw(st.sampled_from([jnp.float32, jnp.bfloat16, jnp.float16]))
  rng = np.random.default_rng(draw(st.integers(0, 2**16)))
  opts: dict[str, Any] = {}
  mask = draw(_mostly(st.sampled_from(["none", "keys", "full", "float01"]),
                      st.sampled_from(["additive", "wrong_shape"])))
  if mask != "none":
    shape = {"keys": (1, 1, s), "wrong_shape": (1, t + 1, s)}.get(mask, (1, t, s))
    m = rng.random(batch + shape) < 0.7
    opts["mask"] = {"float01": m.astype(np.float32),
                    "additive": np.where(m, 0.0, -1e9).astype(np.float32)}.get(mask, m)
  if draw(st.booleans()):
    opts["bias"] = rng.normal(size=(1, t, s)).astype(np.float32)
  opts["is_causal"] = draw(st.booleans())
  scale = draw(_mostly(st.sampled_from([None, None, 0.5, -1.0]),
                       st.sampled_from([0.0, float("nan")])))
  if scale is not None:
    opts["scale"] = scale
  if draw(st.booleans()):
    opts.update(dropout_rate=draw(_mostly(st.just(0.1), st.just(1.0))), deterministic=False,
                dropout_rng=jax.random.PRNGKey(0))
  if draw(st.booleans()):
    opts["dtype"] = draw(st.sampled_from([jnp.float32, jnp.bfloat16]))
  for key, strategy in _OPTIONS.get(name, {}).items():
    if draw(st.booleans()):
      opts[key] = draw(strategy)
  if exact_options:
    if draw(st.booleans()):
      opts["query_seq_lengths"] = rng.integers(0, t + 1, size=batch) + draw(
          _mostly(st.just(0), st.sampled_from([-t - 1, t + 1])))
    if draw(st.booleans()):
      opts["key_value_seq_lengths"] = rng.integers(0, s + 1, size=batch)
    if draw(st.booleans()):
      opts["local_window_size"] = draw(st.one_of(_small, st.tuples(_small, _small)))
    opts["alignment"] = draw(st.sampled_from(["top_left", "bottom_right"]))
    if draw(st.booleans()):
      opts["q_segment_ids"] = np.sort(rng.integers(0, 2, size=batch + (t,)), axis=-1)
      if s != t or draw(st.booleans()):
        opts["kv_segment_ids"] = np.sort(rng.integers(0, 2, size=batch + (s,)), axis=-1)
    if draw(st.booleans()):
      opts["logits_soft_cap"] = draw(_mostly(st.just(2.0), st.just(0.0)))
    if draw(st.booleans()):
      opts["alibi_slopes"] = kernels.alibi_slopes(h)
    if draw(st.booleans()):
      opts["relative_bias_table"] = rng.normal(size=(draw(st.sampled_from([3, 4])), h))
    if name in ("dot_product", "sliding_window"):
      opts["implementation"] = draw(st.sampled_from([None, "xla", "chunked"]))
    if draw(st.booleans()):
      opts["block_q"], opts["block_kv"] = draw(_small), draw(_small)
    opts["return_residual"] = draw(st.booleans())
  return dict(name=name, batch=batch, t=t, s=s, h=h, kh=kh, d=d, dv=dv, dtype=dtype,
              opts=opts)


def _params(fn: Any, call: dict[str, Any]) -> dict[str, Any] | None:
  """Abstract parameters for the call's shapes (``None`` for kernels without any)."""
  if getattr(fn, "params_spec", None) is None:
    return None
  options = {k: v for k, v in call["opts"].items() if k not in ("mask", "bias", "dropout_rng")}
  return jax.eval_shape(lambda: kernels.init_params(
      fn, jax.random.PRNGKey(0), num_heads=call["h"], num_kv_heads=call["kh"],
      head_dim=call["d"], q_len=call["t"], kv_len=call["s"], **options))


def _check(call: dict[str, Any]) -> None:
  fn = kernels.get_kernel(call["name"])
  batch, t, s, h, kh, d, dv = (call[k] for k in ("batch", "t", "s", "h", "kh", "d", "dv"))
  q = jax.ShapeDtypeStruct(batch + (t, h, d), call["dtype"])
  k = jax.ShapeDtypeStruct(batch + (s, kh, d), call["dtype"])
  v = jax.ShapeDtypeStruct(batch + (s, kh, dv), call["dtype"])
  opts = call["opts"]
  try:
    params = _params(fn, call)
    out = jax.eval_shape(
        lambda q, k, v, p: fn(q, k, v, **opts, **({"params": p} if p else {})), q, k, v,
        params)
  except ValueError as e:
    # JAX appends a note about its filtered frames to errors raised while tracing.
    message = str(e).split("\n--------------------")[0]
    assert "\n" not in message, message
    assert message.split(":")[0].isidentifier(), message  # "<function>: ..."
    return
  if opts.get("return_residual"):
    out, lse = out
    assert lse.shape == batch + (t, h)
  assert out.shape == batch + (t, h, dv), (out.shape, call)
  assert out.dtype == jnp.dtype(opts.get("dtype", call["dtype"])), (out.dtype, call)


def _takes_exact_options(name: str) -> bool:
  """dot_product and chunked, and the kernels that forward their options (``**options``)."""
  fn = kernels.get_kernel(name)
  return "query_seq_lengths" in inspect.signature(fn).parameters or any(
      p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(fn).parameters.values())


@pytest.mark.parametrize("name", kernels.list_kernels())
@_SETTINGS
@given(data=st.data())
def test_kernel_returns_or_refuses_clearly(name, data):
  _check(data.draw(_calls([name], exact_options=_takes_exact_options(name))))


def test_every_registered_kernel_is_drawn():
  drawn = set(_EXACT + _EXACT_WRAPPERS + _SPARSE + _APPROXIMATE)
  assert drawn == set(kernels.list_kernels()), sorted(drawn ^ set(kernels.list_kernels()))
