"""Benchmark of the exact attention kernels against jax.nn.dot_product_attention (xla).

Not a test. Each configuration runs in its own subprocess so that its peak resident
memory (``resource.getrusage(...).ru_maxrss``) is its own; a per-process address-space
limit turns "the dense path cannot" into a recorded failure instead of swapping.

Measures, per (implementation, T, heads, mask), forward and forward+backward wall time
(compile excluded, ``block_until_ready``, median of repeats) and peak process memory;
ratios against ``jax.nn`` and GFLOP/s against a dense float32 matmul measured in the same
run. Writes ``results.json``, ``attention_bench.png`` and the table in ``README.md``.

  .venv/bin/python experiments/benchmarks/attention_bench.py            # full sweep
  .venv/bin/python experiments/benchmarks/attention_bench.py --quick    # T <= 4096
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
IMPLS = ("jax_nn", "dense", "chunked")
HEADLINE_SUITES = ("t4096_h8",)  # the speed targets: run --trials times
MEM_LIMIT_BYTES = 12 * 2**30  # of the 24 GiB machine (shared); a config above it fails cleanly


# --------------------------------------------------------------------------- child side


def _child(cfg: dict) -> dict:
  """Runs one configuration in this (fresh) process and returns its measurements."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  sys.path.insert(0, ROOT)
  from attnjax import kernels  # pylint: disable=g-import-not-at-top

  if cfg["impl"] == "matmul":
    n = cfg["n"]
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    ts = _time(lambda: f(a), cfg["repeats"])
    return {"seconds": ts, "gflops": 2 * n**3 / ts / 1e9}

  b, t, h, d = cfg["batch"], cfg["t"], cfg["heads"], cfg["head_dim"]
  dtype = jnp.dtype(cfg["dtype"])
  keys = jax.random.split(jax.random.key(0), 3)
  q, k, v = (jax.random.normal(kk, (b, t, h, d), dtype) for kk in keys)
  opts = {}
  if cfg["mask"] == "causal":
    opts["is_causal"] = True
  elif cfg["mask"].startswith("window"):
    opts["local_window_size"] = (int(cfg["mask"][6:]), 0)
  elif cfg["mask"].startswith("packed"):
    # T / L sequences of L tokens packed into one row: segment ids (jax.nn: the same mask).
    seg = jnp.repeat(jnp.arange(t // int(cfg["mask"][6:])), int(cfg["mask"][6:]))[None]
    if cfg["impl"] == "jax_nn":
      opts["mask"] = (seg[:, :, None] == seg[:, None, :])[:, None]
    else:
      opts["q_segment_ids"] = seg
  if cfg["impl"] == "jax_nn":
    attn = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, implementation="xla", **opts)
  elif cfg["impl"] == "dense":
    attn = lambda q, k, v: kernels.dot_product_attention(q, k, v, implementation="xla", **opts)
  else:
    blocks = {"block_q": cfg["block"], "block_kv": cfg["block"]} if cfg.get("block") else {}
    attn = lambda q, k, v: kernels.chunked_attention(q, k, v, **blocks, **opts)
  if cfg["mode"] == "fwd":
    f = jax.jit(attn)
  else:
    f = jax.jit(jax.grad(lambda q, k, v: jnp.sum(attn(q, k, v).astype(jnp.float32)),
                         argnums=(0, 1, 2)))
  t0 = time.perf_counter()
  f = f.lower(q, k, v).compile()
  compile_s = time.perf_counter() - t0
  secs = _time(lambda: f(q, k, v), cfg["repeats"])
  # Exact-attention FLOPs (QK^T and PV: 4 b h T S d); the backward pass does 2.5x that.
  # Causal/window count only the unmasked half/band, as is customary.
  flops = 4 * b * h * t * t * d
  if cfg["mask"] == "causal":
    flops /= 2
  elif cfg["mask"].startswith("window"):
    w = int(cfg["mask"][6:]) + 1
    flops = 4 * b * h * d * sum(min(i + 1, w) for i in range(t))
  elif cfg["mask"].startswith("packed"):
    flops = 4 * b * h * d * t * int(cfg["mask"][6:])  # the diagonal blocks only
  if cfg["mode"] == "fwd+bwd":
    flops *= 3.5
  np.asarray(jax.tree.leaves(f(q, k, v))[0][:1])  # one more run to settle memory
  return {"seconds": secs, "compile_seconds": compile_s, "gflops": flops / secs / 1e9}


def _time(fn, repeats: int) -> float:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  jax.block_until_ready(fn())  # warm-up
  ts = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    ts.append(time.perf_counter() - t0)
  return float(np.median(ts))


# -------------------------------------------------------------------------- parent side


def run_config(cfg: dict, timeout: float) -> dict:
  """Runs ``cfg`` in a subprocess; returns cfg plus measurements or an error."""
  cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(cfg)]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)  # no fake devices here: all cores for one device
  try:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
  except subprocess.TimeoutExpired:
    return {**cfg, "error": f"timeout after {timeout:.0f} s"}
  lines = [l for l in r.stdout.splitlines() if l.startswith("RESULT ")]
  if r.returncode != 0 or not lines:
    tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["?"]
    err = "out of memory" if ("RESOURCE_EXHAUSTED" in r.stderr or "MemoryError" in r.stderr
                              or "bad_alloc" in r.stderr or r.returncode in (-9, 137)) else tail[0]
    return {**cfg, "error": err[:200]}
  return {**cfg, **json.loads(lines[-1][len("RESULT "):])}


def child_main(cfg_json: str) -> None:
  cfg = json.loads(cfg_json)
  resource.setrlimit(resource.RLIMIT_AS, (MEM_LIMIT_BYTES, MEM_LIMIT_BYTES))
  out = _child(cfg)
  out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  print("RESULT " + json.dumps(out), flush=True)


def sweep(quick: bool) -> list[dict]:
  """The configurations of the issue (see README.md)."""
  base = dict(batch=1, head_dim=64, dtype="float32", mask="none")
  cfgs = []
  # 1. Sequence-length sweep, 1 head: time and memory, dense vs chunked vs jax.nn.
  ts = [512, 1024, 2048, 4096] if quick else [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536]
  for t in ts:
    for impl in IMPLS:
      for mode in ("fwd", "fwd+bwd"):
        if impl != "chunked" and t > 32768:
          # A [T, T] float32 logit matrix alone is 16 GiB at 65,536; attempt it only in
          # forward mode to record that it cannot run within the limit.
          if mode == "fwd+bwd":
            continue
        cfgs.append(dict(base, suite="seq_sweep_h1", impl=impl, t=t, heads=1, mode=mode))
  # 2. The headline point: T=4096, 8 heads.
  for impl in IMPLS:
    for mode in ("fwd", "fwd+bwd"):
      cfgs.append(dict(base, suite="t4096_h8", impl=impl, t=4096, heads=8, mode=mode))
  if not quick:
    # 3. 8 heads at T=16384: memory.
    for impl in IMPLS:
      cfgs.append(dict(base, suite="t16384_h8", impl=impl, t=16384, heads=8, mode="fwd+bwd"))
    # 4. Sliding window w=512 at T=16384: block skipping vs dense with the same mask.
    for impl in IMPLS:
      for mode in ("fwd", "fwd+bwd"):
        cfgs.append(dict(base, suite="window512_t16384", impl=impl, t=16384, heads=1, mode=mode,
                         mask="window512"))
    # 5. Packed sequences: 16 x 1,024 tokens in one T=16384 row (segment ids).
    for impl in IMPLS:
      for mode in ("fwd", "fwd+bwd"):
        cfgs.append(dict(base, suite="packed1024_t16384", impl=impl, t=16384, heads=1,
                         mode=mode, mask="packed1024"))
  for c in cfgs:
    c["repeats"] = 3 if c["t"] <= 8192 else 1
  return cfgs


def _git_commit() -> str:
  try:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout.strip()
  except (subprocess.CalledProcessError, FileNotFoundError):
    return "uncommitted"


def _hardware() -> str:
  model = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          model = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
  return f"{model}, {os.cpu_count()} cores, {mem:.0f} GiB RAM"


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--child", help=argparse.SUPPRESS)
  ap.add_argument("--quick", action="store_true", help="only T <= 4096")
  ap.add_argument("--timeout", type=float, default=900.0, help="seconds per configuration")
  ap.add_argument("--out", default=HERE)
  ap.add_argument("--trials", type=int, default=3,
                  help="interleaved runs of the headline suite (t4096_h8); fastest kept")
  args = ap.parse_args()
  if args.child:
    child_main(args.child)
    return

  import jax  # pylint: disable=g-import-not-at-top
  meta = {
      "date": datetime.date.today().isoformat(), "commit": _git_commit(),
      "hardware": _hardware(), "jax": jax.__version__,
      "command": "python experiments/benchmarks/attention_bench.py" + (" --quick" if args.quick else "")
                 + (f" --trials {args.trials}" if args.trials != 3 else ""),
  }
  results = []
  mm = run_config({"impl": "matmul", "n": 2048, "repeats": 5, "suite": "matmul"}, args.timeout)
  results.append(mm)
  print(f"matmul 2048^3 float32: {mm.get('gflops', float('nan')):.1f} GFLOP/s", flush=True)
  cfgs = sweep(args.quick)
  # The headline suite runs args.trials times, interleaved (every config of trial 1, then of
  # trial 2, ...), and each config keeps its fastest trial: on a shared machine a slow
  # spell then hits all implementations' trials alike instead of one of them.
  order = [(i, trial) for trial in range(args.trials) for i, c in enumerate(cfgs)
           if trial == 0 or c["suite"] in HEADLINE_SUITES]
  best: dict[int, dict] = {}
  for i, trial in order:
    r = run_config(cfgs[i], args.timeout)
    desc = (f"{r['suite']:>18} {r['impl']:>7} T={r['t']:>6} h={r['heads']} {r['mode']:>7}"
            + (f" (trial {trial + 1})" if args.trials > 1 and r["suite"] in HEADLINE_SUITES
               else ""))
    if "error" in r:
      print(f"{desc}: FAILED ({r['error']})", flush=True)
    else:
      print(f"{desc}: {r['seconds'] * 1e3:10.1f} ms  {r['gflops']:6.1f} GFLOP/s  "
            f"peak {r['peak_rss_bytes'] / 2**30:6.2f} GiB", flush=True)
    prev = best.get(i)
    if prev is None or ("error" in prev and "error" not in r) or (
        "error" not in r and "error" not in prev and r["seconds"] < prev["seconds"]):
      r["trials"] = (prev or {}).get("trials", 0) + 1
      best[i] = r
    else:
      prev["trials"] += 1
  results.extend(best[i] for i in sorted(best))
  report = {"meta": meta, "matmul_gflops": mm.get("gflops"), "results": results}
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "results.json"), "w") as f:
    json.dump(report, f, indent=1)
  table = markdown_table(report)
  print(table)
  _write_readme_table(os.path.join(args.out, "README.md"), meta, table)
  try:
    plot(report, os.path.join(args.out, "attention_bench.png"))
  except ImportError as e:
    print(f"no plot: {e}")


def _find(results, **kw):
  for r in results:
    if all(r.get(k) == v for k, v in kw.items()):
      return r
  return None


def markdown_table(report: dict) -> str:
  """The README table: times, ratios to jax.nn (same run), GFLOP/s share of matmul, memory."""
  mm = report["matmul_gflops"] or float("nan")
  rows = ["| suite | impl | T | heads | mode | time (ms) | speed-up vs jax.nn | GFLOP/s | "
          "% of matmul | peak RSS (GiB) |", "|---|---|---|---|---|---|---|---|---|---|"]
  for r in report["results"]:
    if r.get("suite") == "matmul":
      continue
    ref = _find(report["results"], suite=r["suite"], impl="jax_nn", t=r["t"], heads=r["heads"],
                mode=r["mode"])
    if "error" in r:
      rows.append(f"| {r['suite']} | {r['impl']} | {r['t']} | {r['heads']} | {r['mode']} | "
                  f"failed: {r['error']} | | | | |")
      continue
    ratio = (f"{ref['seconds'] / r['seconds']:.2f}x" if ref and "error" not in ref else
             "jax.nn failed")
    rows.append(f"| {r['suite']} | {r['impl']} | {r['t']} | {r['heads']} | {r['mode']} | "
                f"{r['seconds'] * 1e3:.1f} | {ratio} | {r['gflops']:.1f} | "
                f"{100 * r['gflops'] / mm:.0f}% | {r['peak_rss_bytes'] / 2**30:.2f} |")
  extra = ""

  def ratio(suite: str, mode: str, base: str) -> float | None:
    a = _find(report["results"], suite=suite, impl=base, mode=mode)
    b = _find(report["results"], suite=suite, impl="chunked", mode=mode)
    if a and b and "error" not in a and "error" not in b:
      return a["seconds"] / b["seconds"]
    return None

  headline = [("t4096_h8", "jax_nn", "T=4096, 8 heads: chunked vs jax.nn"),
              ("window512_t16384", "dense",
               "Sliding window w=512, T=16384: chunked (block skipping) vs dense with the "
               "same mask"),
              ("packed1024_t16384", "dense",
               "16 packed sequences of 1,024 tokens, T=16384: chunked (segment-id block "
               "skipping) vs dense with the same segment ids")]
  for suite, base, text in headline:
    fwd, both = ratio(suite, "fwd", base), ratio(suite, "fwd+bwd", base)
    if fwd and both:
      extra += f"\n\n{text}: forward {fwd:.1f}x, forward+backward {both:.1f}x faster."
  return (f"Dense float32 matmul (2048^3) in the same run: {mm:.1f} GFLOP/s.\n\n"
          + "\n".join(rows) + extra)


def _write_readme_table(path: str, meta: dict, table: str) -> None:
  start, end = "<!-- results:start -->", "<!-- results:end -->"
  block = (f"{start}\nDate {meta['date']}, commit `{meta['commit']}`, {meta['hardware']}, "
           f"jax {meta['jax']}.\nCommand: `{meta['command']}`\n\n{table}\n{end}")
  text = open(path).read() if os.path.exists(path) else f"# Attention benchmarks\n\n{start}\n{end}\n"
  if start in text and end in text:
    text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
  else:
    text += "\n" + block + "\n"
  with open(path, "w") as f:
    f.write(text)


def plot(report: dict, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
  for impl, style in zip(IMPLS, ("o-", "s--", "^-")):
    for ax, key, mode in ((axes[0], "seconds", "fwd"), (axes[1], "seconds", "fwd+bwd"),
                          (axes[2], "peak_rss_bytes", "fwd+bwd")):
      pts = [(r["t"], r[key]) for r in report["results"]
             if r.get("suite") == "seq_sweep_h1" and r["impl"] == impl and r["mode"] == mode
             and "error" not in r]
      if pts:
        x, y = zip(*pts)
        y = [v / 2**30 for v in y] if key == "peak_rss_bytes" else y
        ax.plot(x, y, style, label=impl)
  for ax, title in zip(axes, ("forward time (s)", "forward+backward time (s)",
                              "fwd+bwd peak process memory (GiB)")):
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length T (batch 1, 1 head, head_dim 64, float32)")
    ax.set_title(title)
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
  fig.suptitle(f"{report['meta']['hardware']} - commit {report['meta']['commit']} - "
               f"{report['meta']['date']}")
  fig.tight_layout()
  fig.savefig(path, dpi=100)


if __name__ == "__main__":
  main()
