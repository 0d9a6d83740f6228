"""Backend choice for the exact attention family: explicit, or automatic with a reason.

Implementations:

* ``'xla'``: dense; materialises ``[B, H, T, S]`` logits. Every option.
* ``'chunked'``: blockwise online softmax with a recomputing custom VJP; O(seq) memory,
  skips fully masked blocks. Every option; any backend.
* ``'cudnn'``: ``jax.nn.dot_product_attention(implementation='cudnn')``; GPU only, fp16 /
  bf16, head_dim <= 128 and a multiple of 8, no dropout / soft cap / segment ids /
  bottom-right alignment / in-kernel position biases.
* ``'pallas'``: ``jax.experimental.pallas.ops.gpu.attention.mha``; GPU only, no bias /
  mask / window / lengths / dropout / soft cap / position biases, head_dim a power of two
  >= 16, seq lengths multiples of the block size.

:func:`choose_implementation` never drops an option silently: an explicit choice that
cannot honour the call raises ``ValueError`` naming the constraint, and the automatic
choice only picks a backend that honours everything.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax

from attnjax.kernels import _common

IMPLEMENTATION_NAMES = ("xla", "chunked", "cudnn", "pallas")

# Dense logits (per call, float32 bytes) from which the chunked path is chosen on CPU.
# From experiments/benchmarks/attention_bench.py (2-core CPU, b1 h1 d64): at T=S=1024
# (4 MiB of logits) dense and chunked are within noise; at T=S=2048 (16 MiB) chunked is
# ~1.9x faster forward and beyond that the dense path's memory traffic dominates.
CPU_CHUNKED_MIN_LOGIT_BYTES = 16 * 2**20
# On GPU/TPU without a fused kernel, switch to chunked when dense logits would not fit
# comfortably (the dense path is fast there but memory-bound).
ACCEL_CHUNKED_MIN_LOGIT_BYTES = 2 * 2**30


@dataclasses.dataclass(frozen=True)
class Choice:
  """An implementation and why it was chosen.

  Attributes:
    name: one of ``IMPLEMENTATION_NAMES``.
    reason: a human-readable sentence.
    block_q: query block size (chunked / pallas).
    block_kv: key/value block size (chunked / pallas).
  """

  name: str
  reason: str
  block_q: int | None = None
  block_kv: int | None = None


def _platform() -> str:
  return jax.default_backend()


def unsupported(p: _common.Problem, name: str, *, return_residual: bool = False,
                platform: str | None = None) -> list[str]:
  """Constraints of implementation ``name`` that this problem violates (empty: fits)."""
  platform = platform or _platform()
  why: list[str] = []
  if name in ("xla", "chunked"):
    return why
  if platform != "gpu":
    why.append(f"implementation={name!r} needs a GPU (platform is {platform!r})")
  d, dv = p.query.shape[-1], p.value.shape[-1]
  if p.dropout_rate > 0:
    why.append(f"{name} does not support dropout (dropout_rate={p.dropout_rate})")
  if p.soft_cap is not None:
    why.append(f"{name} does not support logits_soft_cap")
  if p.alibi_slopes is not None or p.relative_table is not None:
    why.append(f"{name} does not support in-kernel ALiBi / T5 relative bias (pass it as bias)")
  if p.q_segment_ids is not None:
    why.append(f"{name} does not support segment ids (pass a mask)")
  if p.pattern is not None:
    why.append(f"{name} does not support sparsity_pattern (pass it as a mask)")
  if p.q_offset is not None and (p.causal or p.window is not None):
    why.append(f"{name} does not support a traced q_offset (decoding) with causal/window "
               "masks")
  elif p.offset != 0 and (p.causal or p.window is not None):
    why.append(f"{name} supports only alignment='top_left' (q_offset 0) for causal/window "
               "masks")
  if name == "cudnn":
    if jax.numpy.dtype(p.out_dtype).name not in ("float16", "bfloat16"):
      why.append(f"cudnn needs float16 or bfloat16 inputs, got {p.out_dtype}")
    if d > 128 or d % 8 or dv != d:
      why.append(f"cudnn needs head_dim <= 128, a multiple of 8, and v_dim == head_dim; got "
                 f"head_dim={d}, v_dim={dv}")
  if name == "pallas":
    if p.bias is not None or p.mask is not None:
      why.append("pallas does not support bias or mask")
    if p.window is not None or p.q_lengths is not None or p.kv_lengths is not None:
      why.append("pallas does not support local_window_size or sequence lengths")
    if d < 16 or d & (d - 1) or dv != d:
      why.append(f"pallas needs head_dim a power of two >= 16 and v_dim == head_dim; got "
                 f"head_dim={d}, v_dim={dv}")
    if p.q_len != p.kv_len and p.causal:
      why.append("pallas causal needs q_seq == kv_seq")
    if return_residual:
      why.append("pallas does not return the log-sum-exp residual")
  return why


def choose_implementation(
    p: _common.Problem,
    implementation: str | None = None,
    *,
    block_q: int | None = None,
    block_kv: int | None = None,
    return_residual: bool = False,
    fn: str = "dot_product_attention",
) -> Choice:
  """Picks the implementation for a validated problem, or raises why it cannot.

  Args:
    p: the canonical problem from ``_common.prepare``.
    implementation: ``None`` (automatic) or one of ``IMPLEMENTATION_NAMES``.
    block_q: chunked query block size (given => chunked when automatic).
    block_kv: chunked key/value block size.
    return_residual: whether the caller wants the log-sum-exp.
    fn: the public function name, for error messages.

  Returns:
    A :class:`Choice` with the name and a reason.

  Raises:
    ValueError: unknown implementation, or an explicit one that cannot honour the call.
  """
  from attnjax.kernels import chunked  # pylint: disable=g-import-not-at-top

  if implementation is not None and implementation not in IMPLEMENTATION_NAMES:
    raise ValueError(f"{fn}: implementation must be None or one of {IMPLEMENTATION_NAMES}, got "
                     f"{implementation!r}")
  blocks_given = block_q is not None or block_kv is not None
  if blocks_given and implementation not in (None, "chunked", "pallas"):
    raise ValueError(f"{fn}: block_q/block_kv apply to implementation='chunked' or 'pallas', "
                     f"not {implementation!r}")
  if implementation is not None:
    why = unsupported(p, implementation, return_residual=return_residual)
    if why:
      raise ValueError(f"{fn}: implementation={implementation!r} cannot honour this call: "
                       + "; ".join(why))
    if implementation == "chunked":
      bq, bk = chunked.default_blocks(p, block_q, block_kv, fn=fn)
      return Choice("chunked", "requested explicitly", bq, bk)
    return Choice(implementation, "requested explicitly", block_q, block_kv)

  if blocks_given:
    bq, bk = chunked.default_blocks(p, block_q, block_kv, fn=fn)
    return Choice("chunked", "block_q/block_kv were given", bq, bk)
  platform = _platform()
  logit_bytes = p.batch * p.num_heads * p.q_len * p.kv_len * 4
  if platform == "gpu" and not unsupported(p, "cudnn", return_residual=return_residual):
    return Choice("cudnn", "GPU with fp16/bf16 inputs and options cuDNN supports")
  threshold = CPU_CHUNKED_MIN_LOGIT_BYTES if platform == "cpu" else ACCEL_CHUNKED_MIN_LOGIT_BYTES
  mib = logit_bytes / 2**20
  if logit_bytes >= threshold:
    bq, bk = chunked.default_blocks(p, None, None, fn=fn)
    return Choice("chunked", f"{platform}: dense logits would take {mib:.0f} MiB >= "
                  f"{threshold / 2**20:.0f} MiB; chunked is O(seq) memory and faster there",
                  bq, bk)
  return Choice("xla", f"{platform}: dense logits take {mib:.1f} MiB < {threshold / 2**20:.0f} "
                "MiB; one dense pass has the least overhead")


# name -> fn(problem, choice) -> (out [B, K, G, T, Dv], lse [B, K, G, T]); filled lazily.
IMPLEMENTATIONS: dict[str, Callable[[_common.Problem, Choice], Any]] = {}


def get_implementation(name: str) -> Callable[[_common.Problem, Choice], Any]:
  """The function running implementation ``name`` on a canonical problem."""
  if not IMPLEMENTATIONS:
    from attnjax.kernels import backends  # pylint: disable=g-import-not-at-top
    from attnjax.kernels import chunked  # pylint: disable=g-import-not-at-top
    IMPLEMENTATIONS["chunked"] = chunked.run_chunked
    IMPLEMENTATIONS["cudnn"] = backends.run_cudnn
    IMPLEMENTATIONS["pallas"] = backends.run_pallas
  return IMPLEMENTATIONS[name]
