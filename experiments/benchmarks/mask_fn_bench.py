"""Benchmark of mask_fn (FlexAttention-style masks) against the built-in paths it replaces.

Not a test. Ratios from one run, each against a baseline measured in the same process
(compile excluded, ``block_until_ready``, median of repeats), batch 1, one head,
head_dim 64, float32:

* ``window``: a causal sliding window of ``--window`` keys through
  ``mask_fn=sliding_window_mask(w)`` vs the built-in ``local_window_size=(w, 0)``, both
  chunked, at T = ``--t`` (issue 13's target: within 1.1x).
* ``document``: ``--docs`` packed documents of ``T / docs`` tokens through
  ``mask_fn=document_mask(segment_ids)`` (segment ids traced: the block layout is
  computed at run time) vs dense masked attention (``jax.nn.dot_product_attention``
  with the equivalent boolean mask), forward+backward (target: >= 20x at 16 x 1024).

  .venv/bin/python experiments/benchmarks/mask_fn_bench.py                 # T=16384
  .venv/bin/python experiments/benchmarks/mask_fn_bench.py --t 4096 --docs 4  # reduced
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from attnjax import kernels  # noqa: E402


def _time(fn, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))  # compile
  ts = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    ts.append(time.perf_counter() - t0)
  return sorted(ts)[len(ts) // 2]


def _fwd_bwd(attn):
  return jax.jit(jax.grad(lambda q, k, v, *a: jnp.sum(attn(q, k, v, *a)), argnums=(0, 1, 2)))


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--t", type=int, default=16384, help="sequence length")
  ap.add_argument("--window", type=int, default=512, help="sliding-window keys (left)")
  ap.add_argument("--docs", type=int, default=16, help="packed documents per row")
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--skip_dense", action="store_true", help="document suite without dense")
  ap.add_argument("--out", default=os.path.join(HERE, "mask_fn_results.json"))
  args = ap.parse_args()
  t, d = args.t, 64
  q, k, v = (jax.random.normal(key, (1, t, 1, d), jnp.float32)
             for key in jax.random.split(jax.random.key(0), 3))
  results = {"t": t, "window": args.window, "docs": args.docs, "head_dim": d,
             "batch": 1, "heads": 1, "dtype": "float32", "backend": jax.default_backend()}

  # Sliding window: mask_fn vs local_window_size, both chunked (default blocks).
  w = args.window
  builtin = lambda q, k, v: kernels.chunked_attention(  # noqa: E731
      q, k, v, is_causal=True, local_window_size=(w, 0))
  flex = lambda q, k, v: kernels.chunked_attention(  # noqa: E731
      q, k, v, mask_fn=kernels.sliding_window_mask(w))
  for mode, wrap in (("fwd", jax.jit), ("fwd+bwd", _fwd_bwd)):
    tb = _time(wrap(builtin), q, k, v, repeats=args.repeats)
    tf = _time(wrap(flex), q, k, v, repeats=args.repeats)
    results[f"window_{mode}"] = {"builtin_s": tb, "mask_fn_s": tf, "mask_fn_over_builtin": tf / tb}
    print(f"window {w} T={t} {mode}: builtin {tb * 1e3:.1f} ms, mask_fn {tf * 1e3:.1f} ms, "
          f"ratio {tf / tb:.3f} (target <= 1.1)", flush=True)

  # Documents: mask_fn with traced segment ids vs dense masked attention, fwd+bwd.
  seg = jnp.repeat(jnp.arange(args.docs, dtype=jnp.int32), t // args.docs)[None]
  flex_doc = lambda q, k, v, seg: kernels.chunked_attention(  # noqa: E731
      q, k, v, mask_fn=kernels.document_mask(seg))
  tf = _time(_fwd_bwd(flex_doc), q, k, v, seg, repeats=args.repeats)
  entry = {"mask_fn_s": tf}
  if not args.skip_dense:
    dense = lambda q, k, v, seg: jax.nn.dot_product_attention(  # noqa: E731
        q, k, v, mask=(seg[:, :, None] == seg[:, None, :])[:, None], implementation="xla")
    td = _time(_fwd_bwd(dense), q, k, v, seg, repeats=args.repeats)
    entry.update(dense_s=td, speedup=td / tf)
    print(f"document {args.docs}x{t // args.docs} fwd+bwd: dense {td * 1e3:.1f} ms, mask_fn "
          f"{tf * 1e3:.1f} ms, speed-up {td / tf:.1f}x (target >= 20)", flush=True)
  else:
    print(f"document {args.docs}x{t // args.docs} fwd+bwd: mask_fn {tf * 1e3:.1f} ms", flush=True)
  results["document_fwd+bwd"] = entry
  with open(args.out, "w") as f:
    json.dump(results, f, indent=1)
  print(json.dumps(results))


if __name__ == "__main__":
  main()
