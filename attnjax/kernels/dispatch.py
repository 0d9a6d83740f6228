"""Backend choice for the exact attention family: explicit, or automatic with a reason.

Implementations (each backend's constraints live next to its code and are listed by
:func:`unsupported`):

* ``'xla'``: dense; materialises ``[B, H, T, S]`` logits. Every option, any platform.
* ``'chunked'``: blockwise online softmax with a recomputing custom VJP; O(seq) memory,
  skips fully masked blocks. Every option, any platform.
* ``'cudnn'``: ``jax.nn.dot_product_attention(implementation='cudnn')`` on NVIDIA GPUs
  (``backends.cudnn_unsupported``: fp16/bf16, head_dim <= 128 (<= 256 from Hopper on) and
  a multiple of 8, left-only windows (a right window only with causal), even lengths with
  a bias or mask, ...).
* ``'pallas'``: on GPU the Triton flash attention of ``jax.experimental.pallas.ops.gpu``
  (``pallas_gpu.unsupported``: causal and segment ids, no bias/mask/window); on TPU
  the splash attention of ``jax.experimental.pallas.ops.tpu`` (``pallas_tpu.unsupported``:
  causal, windows, sparsity patterns, segment ids, soft cap, GQA).
* ``'ring'``: under a mesh (``jax.set_mesh``) with a ``sequence`` axis, ring attention over
  it (``ring.py``: sequence / context parallelism; each shard on one of the above).

:func:`choose_implementation` never drops an option silently: an explicit choice that
cannot honour the call raises ``ValueError`` naming the constraint, and the automatic
choice only picks a backend whose constraint list is empty.

The platform is the default backend's, or the one set by :func:`target` (to lower for
``cuda``/``tpu`` with ``jax.export`` on a CPU host, or to run Pallas kernels in interpret
mode on CPU).
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp

from attnjax.kernels import _common

IMPLEMENTATION_NAMES = ("xla", "chunked", "cudnn", "pallas", "ring")
PLATFORMS = ("cpu", "gpu", "tpu")

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
    platform: the platform the choice was made for (``'gpu'`` selects the Triton and
      ``'tpu'`` the splash Pallas kernel).
    interpret: run Pallas kernels in interpret mode (numerics on CPU).
    residual: the caller wants the log-sum-exp (Pallas GPU then uses its slower
      residual-returning variant).
  """

  name: str
  reason: str
  block_q: int | None = None
  block_kv: int | None = None
  platform: str = "cpu"
  interpret: bool = False
  residual: bool = False


@dataclasses.dataclass(frozen=True)
class Target:
  """What the implementations are chosen for.

  Attributes:
    platform: ``'cpu'``, ``'gpu'`` or ``'tpu'``.
    compute_capability: NVIDIA GPU generation, e.g. ``(9, 0)`` for Hopper; ``None``
      (unknown: the most restrictive limits apply).
    interpret: Pallas kernels run in interpret mode (on CPU, for numerics).
  """

  platform: str
  compute_capability: tuple[int, int] | None = None
  interpret: bool = False


_TARGETS: list[Target] = []


@contextlib.contextmanager
def target(platform: str, *, compute_capability: tuple[int, int] | str | None = None,
           interpret: bool = False) -> Iterator[Target]:
  """Chooses implementations for ``platform`` instead of the default backend.

  For lowering on a host without the device (``jax.export.export(..., platforms=['cuda'])``
  inside ``with target('gpu'):``) and for running Pallas kernels numerically on CPU
  (``with target('gpu', interpret=True):``). Affects calls traced inside the block.

  Args:
    platform: ``'cpu'``, ``'gpu'`` (or ``'cuda'``) or ``'tpu'``.
    compute_capability: GPU generation as ``(major, minor)`` or ``'9.0'``.
    interpret: Pallas kernels in interpret mode.
  """
  platform = "gpu" if platform in ("cuda", "rocm") else platform
  if platform not in PLATFORMS:
    raise ValueError(f"target: platform must be one of {PLATFORMS} (or 'cuda'), got "
                     f"{platform!r}")
  t = Target(platform, _parse_capability(compute_capability), bool(interpret))
  _TARGETS.append(t)
  try:
    yield t
  finally:
    _TARGETS.pop()


def _parse_capability(cc: Any) -> tuple[int, int] | None:
  if cc is None:
    return None
  try:
    if isinstance(cc, str):
      major, _, minor = cc.partition(".")
      return int(major), int(minor or 0)
    major, minor = cc
    return int(major), int(minor)
  except (TypeError, ValueError):
    raise ValueError(f"target: compute_capability must be like (9, 0) or '9.0', got "
                     f"{cc!r}") from None


def current_target() -> Target:
  """The innermost :func:`target`, else the default backend (with its GPU generation)."""
  if _TARGETS:
    return _TARGETS[-1]
  platform = jax.default_backend()
  if platform not in PLATFORMS:
    platform = "cpu"
  cc = None
  if platform == "gpu":
    cc = _parse_capability(getattr(jax.devices()[0], "compute_capability", None))
  return Target(platform, cc)


def unsupported(p: _common.Problem, name: str, *, return_residual: bool = False,
                block_q: int | None = None, block_kv: int | None = None,
                platform: str | None = None, tgt: Target | None = None) -> list[str]:
  """Constraints of implementation ``name`` that this problem violates (empty: fits).

  Args:
    p: the canonical problem.
    name: one of ``IMPLEMENTATION_NAMES``.
    return_residual: whether the caller wants the log-sum-exp.
    block_q: Pallas query block size (``None``: the kernel's default).
    block_kv: Pallas key/value block size.
    platform: shorthand for ``tgt=Target(platform)``.
    tgt: the target; default :func:`current_target`.
  """
  from attnjax.kernels import backends  # pylint: disable=g-import-not-at-top
  from attnjax.kernels import pallas_gpu  # pylint: disable=g-import-not-at-top
  from attnjax.kernels import pallas_tpu  # pylint: disable=g-import-not-at-top
  from attnjax.kernels import ring  # pylint: disable=g-import-not-at-top

  if tgt is None:
    tgt = Target(platform) if platform is not None else current_target()
  if name in ("xla", "chunked"):
    return []
  # Options only the XLA paths evaluate (the lazy per-block masks of _common).
  why: list[str] = []
  if p.mask_fn is not None or p.score_fn is not None:
    why.append(f"{name} does not support mask_fn / score_fn")
  if p.q_offset is not None and (p.causal or p.window is not None or p.pattern is not None):
    why.append(f"{name} does not support a traced q_offset (decoding) with causal, window or "
               "pattern masks")
  if why:
    return why
  if name == "ring":
    return ring.unsupported(p)
  if name == "cudnn":
    return backends.cudnn_unsupported(p, tgt, return_residual=return_residual)
  if tgt.platform == "tpu":
    return pallas_tpu.unsupported(p, block_q=block_q, block_kv=block_kv,
                                  return_residual=return_residual)
  if tgt.platform == "gpu":
    return pallas_gpu.unsupported(p, block_q=block_q, block_kv=block_kv)
  return [f"implementation='pallas' needs a GPU or TPU (platform is {tgt.platform!r}; "
          f"attnjax.kernels.dispatch.target(..., interpret=True) runs it on CPU)"]


def choose_implementation(
    p: _common.Problem,
    implementation: str | None = None,
    *,
    block_q: int | None = None,
    block_kv: int | None = None,
    return_residual: bool = False,
    fn: str = "dot_product_attention",
    allow_ring: bool = True,
) -> Choice:
  """Picks the implementation for a validated problem, or raises why it cannot.

  Automatic order: ring attention under a mesh with a ``sequence`` axis; on GPU cuDNN, then Pallas (fp16/bf16 only: its float32 matmuls run in
  TF32); on TPU Pallas splash attention; then the dense or chunked XLA path by the size of
  the dense logits. A fused backend is picked only when :func:`unsupported` lists nothing
  for it, so the automatic choice never routes a call that the backend would refuse.

  Args:
    p: the canonical problem from ``_common.prepare``.
    implementation: ``None`` (automatic) or one of ``IMPLEMENTATION_NAMES``.
    block_q: chunked / Pallas query block size (given => chunked when automatic).
    block_kv: chunked / Pallas key/value block size.
    return_residual: whether the caller wants the log-sum-exp.
    fn: the public function name, for error messages.
    allow_ring: consider ring attention (False for the shards inside it).

  Returns:
    A :class:`Choice` with the name and a reason.

  Raises:
    ValueError: unknown implementation, or an explicit one that cannot honour the call.
  """
  from attnjax.kernels import chunked  # pylint: disable=g-import-not-at-top
  from attnjax.kernels import ring  # pylint: disable=g-import-not-at-top

  if implementation is not None and implementation not in IMPLEMENTATION_NAMES:
    raise ValueError(f"{fn}: implementation must be None or one of {IMPLEMENTATION_NAMES}, got "
                     f"{implementation!r}")
  blocks_given = block_q is not None or block_kv is not None
  if blocks_given and implementation not in (None, "chunked", "pallas"):
    raise ValueError(f"{fn}: block_q/block_kv apply to implementation='chunked' or 'pallas', "
                     f"not {implementation!r}")
  tgt = current_target()
  extra = dict(platform=tgt.platform, interpret=tgt.interpret, residual=return_residual)
  if implementation is not None:
    why = unsupported(p, implementation, return_residual=return_residual, block_q=block_q,
                      block_kv=block_kv, tgt=tgt)
    if why:
      raise ValueError(f"{fn}: implementation={implementation!r} cannot honour this call: "
                       + "; ".join(why))
    if implementation == "chunked":
      bq, bk = chunked.default_blocks(p, block_q, block_kv, fn=fn)
      return Choice("chunked", "requested explicitly", bq, bk, **extra)
    return Choice(implementation, "requested explicitly", block_q, block_kv, **extra)

  if blocks_given:
    bq, bk = chunked.default_blocks(p, block_q, block_kv, fn=fn)
    return Choice("chunked", "block_q/block_kv were given", bq, bk, **extra)
  platform = tgt.platform
  if allow_ring and ring.axis_size() > 1:
    ring_why = unsupported(p, "ring", tgt=tgt)
    if not ring_why:
      return Choice("ring", f"mesh axis {ring.AXIS!r} of size {ring.axis_size()}: ring "
                    "attention over the sequence shards", **extra)
  low_precision = jnp.dtype(p.out_dtype).name in ("float16", "bfloat16")
  if platform == "gpu":
    cudnn_why = unsupported(p, "cudnn", return_residual=return_residual, tgt=tgt)
    if not cudnn_why:
      return Choice("cudnn", "GPU with fp16/bf16 inputs and options cuDNN supports", **extra)
    if low_precision and not unsupported(p, "pallas", return_residual=return_residual,
                                         tgt=tgt):
      return Choice("pallas", f"GPU: cuDNN cannot ({cudnn_why[0]}); the Pallas Triton flash "
                    "kernel supports this call", **extra)
  if platform == "tpu" and not unsupported(p, "pallas", return_residual=return_residual,
                                           tgt=tgt):
    return Choice("pallas", "TPU: Pallas splash attention (fused, O(seq) memory, skips "
                  "masked blocks) supports this call", **extra)
  logit_bytes = p.batch * p.num_heads * p.q_len * p.kv_len * 4
  threshold = CPU_CHUNKED_MIN_LOGIT_BYTES if platform == "cpu" else ACCEL_CHUNKED_MIN_LOGIT_BYTES
  mib = logit_bytes / 2**20
  if logit_bytes >= threshold:
    bq, bk = chunked.default_blocks(p, None, None, fn=fn)
    return Choice("chunked", f"{platform}: dense logits would take {mib:.0f} MiB >= "
                  f"{threshold / 2**20:.0f} MiB; chunked is O(seq) memory and faster there",
                  bq, bk, **extra)
  return Choice("xla", f"{platform}: dense logits take {mib:.1f} MiB < {threshold / 2**20:.0f} "
                "MiB; one dense pass has the least overhead", **extra)


# name -> fn(problem, choice) -> (out [B, K, G, T, Dv], lse [B, K, G, T]); filled lazily.
IMPLEMENTATIONS: dict[str, Callable[[_common.Problem, Choice], Any]] = {}


def get_implementation(name: str) -> Callable[[_common.Problem, Choice], Any]:
  """The function running implementation ``name`` on a canonical problem."""
  if not IMPLEMENTATIONS:
    from attnjax.kernels import backends  # pylint: disable=g-import-not-at-top
    from attnjax.kernels import chunked  # pylint: disable=g-import-not-at-top
    from attnjax.kernels import dot_product  # pylint: disable=g-import-not-at-top
    from attnjax.kernels import ring  # pylint: disable=g-import-not-at-top
    IMPLEMENTATIONS["xla"] = lambda p, choice: dot_product._dense(p)[:2]  # pylint: disable=protected-access
    IMPLEMENTATIONS["ring"] = ring.run
    IMPLEMENTATIONS["chunked"] = chunked.run_chunked
    IMPLEMENTATIONS["cudnn"] = backends.run_cudnn
    IMPLEMENTATIONS["pallas"] = backends.run_pallas
  return IMPLEMENTATIONS[name]
