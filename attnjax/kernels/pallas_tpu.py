"""Pallas TPU splash attention: ``jax.experimental.pallas.ops.tpu.splash_attention``.

Masks come from the predicates the chunked kernel uses (``_common.block_mask``): causal,
local windows (any alignment), sparsity patterns, evaluated block by block on the host
when the kernel is built (splash keeps only the partial blocks and skips empty ones), and
segment ids passed to the kernel. Also logit soft cap and GQA (splash shares a kv head
between its query heads). What it refuses is listed by :func:`unsupported`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from attnjax.kernels import _common

LANES = 128  # splash's block sizes must be multiples of the TPU lane count
DEFAULT_BLOCKS = (512, 256, 128)  # largest that divides the sequence length wins


def block_sizes(p: _common.Problem, block_q: int | None, block_kv: int | None
                ) -> tuple[int | None, int | None]:
  """``(block_q, block_kv)``: the given ones, else the largest default dividing the length."""
  def pick(n: int, given: int | None) -> int | None:
    if given is not None:
      return given
    return next((b for b in DEFAULT_BLOCKS if n % b == 0), None)
  return pick(p.q_len, block_q), pick(p.kv_len, block_kv)


def unsupported(p: _common.Problem, *, block_q: int | None = None, block_kv: int | None = None,
                return_residual: bool = False) -> list[str]:
  """Constraints of the splash kernel this problem violates (empty: it fits)."""
  why: list[str] = []
  if jnp.dtype(p.out_dtype) == jnp.float64:
    why.append("pallas (TPU) does not support float64 inputs")
  if p.bias is not None or p.mask is not None:
    why.append("pallas (TPU) does not support a bias or mask array (use is_causal, "
               "local_window_size, sparsity_pattern or segment ids)")
  if p.q_lengths is not None or p.kv_lengths is not None:
    why.append("pallas (TPU) does not support query_seq_lengths/key_value_seq_lengths (use "
               "segment ids)")
  if p.dropout_rate > 0:
    why.append(f"pallas (TPU) does not support dropout_rate={p.dropout_rate}")
  if p.alibi_slopes is not None or p.relative_table is not None:
    why.append("pallas (TPU) does not support alibi_slopes / relative_bias_table")
  if p.precision is not None:
    why.append(f"pallas (TPU) does not take precision={p.precision!r}")
  if return_residual:
    why.append("pallas (TPU) cannot differentiate through its log-sum-exp "
               "(return_residual)")
  structured = p.causal or p.window is not None or p.pattern is not None
  # Splash gives a query row whose keys are all masked the mean of v, not zeros: accept
  # only calls where every row keeps its own diagonal key.
  if structured and (p.offset != 0 or p.q_len != p.kv_len):
    why.append("pallas (TPU) needs q_seq == kv_seq and alignment='top_left' with is_causal, "
               "local_window_size or sparsity_pattern (no query row may be fully masked)")
  if p.q_segment_ids is not None and p.kv_segment_ids is not p.q_segment_ids:
    why.append("pallas (TPU) takes segment ids for self-attention only: pass q_segment_ids "
               "without kv_segment_ids (a row without keys would not be zero)")
  if p.pattern is not None and p.q_len == p.kv_len:
    diag = np.arange(p.q_len)
    if not np.all(p.pattern.allows(diag, diag, offset=p.offset, q_len=p.q_len,
                                   kv_len=p.kv_len, xp=np)):
      why.append("pallas (TPU) needs a sparsity_pattern that keeps the diagonal")
  bq, bk = block_sizes(p, block_q, block_kv)
  for name, n, b, given in (("q_seq", p.q_len, bq, block_q), ("kv_seq", p.kv_len, bk, block_kv)):
    if b is None:
      why.append(f"pallas (TPU) needs {name}={n} to be a multiple of {LANES}")
    elif b % LANES or n % b or b > n:
      why.append(f"pallas (TPU) needs {name}={n} to be a multiple of its block size {b}, "
                 f"itself a multiple of {LANES}" + (" (given)" if given else ""))
  return why


def _static_problem(p: _common.Problem) -> _common.Problem:
  """The static mask description of ``p`` (no arrays): what the splash mask is built from."""
  return p.replace(query=None, key=None, value=None, bias=None, mask=None, q_lengths=None,
                   kv_lengths=None, q_segment_ids=None, kv_segment_ids=None,
                   alibi_slopes=None, relative_table=None, dropout_seed=None)


def _mask_class():
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as m  # pylint: disable=g-import-not-at-top

  class PredicateMask(m.Mask):
    """A splash mask evaluating ``_common.block_mask`` on any ``[q_slice, kv_slice]``."""

    def __init__(self, p: _common.Problem):
      self.p = _static_problem(p)
      self.key = (p.q_len, p.kv_len, p.causal, p.offset, p.window, p.pattern)

    @property
    def shape(self) -> tuple[int, int]:
      return (self.p.q_len, self.p.kv_len)

    def __getitem__(self, idx) -> np.ndarray:
      q_slice, kv_slice = idx
      q0, q1, _ = q_slice.indices(self.p.q_len)
      k0, k1, _ = kv_slice.indices(self.p.kv_len)
      with jax.ensure_compile_time_eval():
        blk = _common.block_mask(self.p, q0, q1 - q0, k0, k1 - k0)
      if blk is None:
        return np.ones((q1 - q0, k1 - k0), np.bool_)
      return np.asarray(blk).reshape(q1 - q0, k1 - k0)

    def __eq__(self, other: object) -> bool:
      return isinstance(other, PredicateMask) and self.key == other.key

    def __hash__(self) -> int:
      return hash(self.key)

  return PredicateMask


def make_mask(p: _common.Problem) -> Any:
  """The splash ``MultiHeadMask`` (one per query head) of the problem's static masks."""
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as m  # pylint: disable=g-import-not-at-top
  if p.causal or p.window is not None or p.pattern is not None:
    head = _mask_class()(p)
  else:
    head = m.FullMask((p.q_len, p.kv_len))
  return m.MultiHeadMask([head] * p.num_heads)


def run(p: _common.Problem, choice: Any) -> tuple[jax.Array, jax.Array]:
  """Runs splash attention: ``(out [B, K, G, T, Dv], lse placeholder [B, K, G, T])``."""
  try:
    from jax.experimental.pallas.ops.tpu import splash_attention as splash  # pylint: disable=g-import-not-at-top
  except ImportError as e:  # pragma: no cover - depends on the jax build
    raise ValueError(f"implementation='pallas' on TPU is unavailable in this jax build: {e}"
                     ) from e
  b, kh, g, t, d = p.query.shape
  bq, bk = block_sizes(p, choice.block_q, choice.block_kv)
  sizes = splash.BlockSizes(block_q=bq, block_kv=bk, block_kv_compute=bk, block_q_dkv=bq,
                            block_kv_dkv=bk, block_kv_dkv_compute=bk, block_q_dq=bq,
                            block_kv_dq=bk)
  kernel = splash.make_splash_mha(make_mask(p), block_sizes=sizes, head_shards=1,
                                  q_seq_shards=1, attn_logits_soft_cap=p.soft_cap,
                                  interpret=choice.interpret)
  # Splash has no scale argument: scale q (the soft cap then sees scaled logits, as ours).
  q = (p.query * jnp.asarray(p.scale, p.query.dtype)).reshape(b, kh * g, t, d)
  if p.q_segment_ids is None:
    out = jax.vmap(kernel)(q, p.key, p.value)
  else:
    segs = splash.SegmentIds(q=p.q_segment_ids, kv=p.kv_segment_ids)
    out = jax.vmap(lambda q_, k_, v_, s_: kernel(q_, k_, v_, segment_ids=s_))(
        q, p.key, p.value, segs)
  out = out.reshape(b, kh, g, t, -1).astype(p.compute_dtype)
  # dispatch refuses return_residual for splash; this placeholder never reaches a caller.
  return out, jnp.zeros(out.shape[:-1], p.compute_dtype)
