r"""GPU benchmark of attnjax's attention paths and training, one JSON and one table.

Measures, in bfloat16 on one GPU (see experiments/gpu/README.md):

* forward and forward+backward TFLOP/s of ``jax.nn.dot_product_attention`` (cuDNN) and of
  attnjax's automatic choice, cuDNN, Pallas (Triton) and chunked paths at B2 N32 T4096
  D128, causal and not;
* a causal sliding window of 1,024 at T=32,768 (B1 N32 D128);
* BERT-base (seq 512, batch 32) training steps/s and MFU (the train loop's own step and
  the task's FLOPs);
* cached decoding tokens/s through ``attnjax.generate.generate`` when it exists.

Attention FLOPs count the two matmuls (``4 B N T S D``, halved for causal, ``S`` the window
for the sliding window); forward+backward counts 3.5x the forward (FlashAttention-2's
convention). A path that refuses a call is listed with its reason, not timed.

  bash experiments/gpu/run.sh                        # on the GPU machine, < 8 minutes
  python experiments/gpu/bench.py --dry_run          # on CPU: lowers every path for cuda
  python experiments/gpu/bench.py --dry_run --tiny   # the same at tiny shapes (the test)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import statistics
import sys
import time
from typing import Any, Callable

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from attnjax import kernels  # noqa: E402
from attnjax.kernels import backends  # noqa: E402
from attnjax.kernels import dispatch  # noqa: E402

ATTENTION_PATHS = ("jax.nn cudnn", "attnjax auto", "attnjax cudnn", "attnjax pallas",
                   "attnjax chunked")


def _time(fn: Callable, args: tuple, repeats: int) -> float:
  """Median seconds of ``fn(*args)`` after one compile-and-warm-up call."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def _attention_fn(path: str, causal: bool, window: int | None) -> Callable:
  kw: dict[str, Any] = dict(is_causal=causal)
  if window is not None:
    kw["local_window_size"] = (window, 0)
  if path == "jax.nn cudnn":
    return lambda q, k, v: jax.nn.dot_product_attention(q, k, v, implementation="cudnn", **kw)
  impl = {"attnjax auto": None, "attnjax cudnn": "cudnn", "attnjax pallas": "pallas",
          "attnjax chunked": "chunked"}[path]
  return lambda q, k, v: kernels.dot_product_attention(q, k, v, implementation=impl, **kw)


def _fwd_bwd(fn: Callable) -> Callable:
  def loss(q, k, v):
    return jnp.sum(fn(q, k, v).astype(jnp.float32))
  return jax.grad(loss, argnums=(0, 1, 2))


def _lower_for_cuda(fn: Callable, args: tuple) -> None:
  jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",))


def attention_rows(shape: tuple[int, int, int, int], causal: bool, window: int | None,
                   dry_run: bool, repeats: int) -> list[dict]:
  """One row per path and pass (fwd, fwd+bwd): TFLOP/s, or why the path was not run."""
  b, n, t, d = shape
  spec = jax.ShapeDtypeStruct((b, t, n, d), jnp.bfloat16)
  if dry_run:
    args = (spec, spec, spec)
  else:
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    args = tuple(jax.random.normal(k_, spec.shape, spec.dtype) for k_ in keys)
  keys_per_query = t / 2 if causal and window is None else (min(window + 1, t) if window else t)
  flops = 4 * b * n * t * keys_per_query * d
  rows = []
  for path in ATTENTION_PATHS:
    fn = _attention_fn(path, causal, window)
    base = dict(bench="attention", path=path, batch=b, heads=n, seq=t, head_dim=d,
                causal=causal, window=window)
    if "cudnn" in path and not backends.cudnn_available():
      rows += [dict(base, passes=p, skipped="jax's CUDA plugin (cuDNN) is not installed")
               for p in ("fwd", "fwd+bwd")]
      continue
    try:
      # On the GPU the default target (with its real generation); dry runs as Hopper.
      ctx = dispatch.target("gpu", compute_capability=(9, 0)) if dry_run else contextlib.nullcontext()
      with ctx:
        choice = None if path == "jax.nn cudnn" else _explain(args, _options(path, causal, window))
        for passes, f, mult in (("fwd", fn, 1.0), ("fwd+bwd", _fwd_bwd(fn), 3.5)):
          row = dict(base, passes=passes, implementation=choice.name if choice else "cudnn")
          if dry_run:
            _lower_for_cuda(f, args)
            row["lowered_for"] = "cuda"
          else:
            sec = _time(jax.jit(f), args, repeats)
            row.update(ms=round(sec * 1e3, 3), tflops=round(mult * flops / sec / 1e12, 1))
          rows.append(row)
    except ValueError as e:  # a path that refuses the call says why
      rows += [dict(base, passes=p, skipped=str(e)[:200]) for p in ("fwd", "fwd+bwd")]
  return rows


def _explain(args: tuple, options: dict) -> dispatch.Choice:
  """``explain_implementation`` traced on (possibly abstract) inputs."""
  out = []
  jax.eval_shape(lambda *a: out.append(kernels.explain_implementation(*a, **options)), *args)
  return out[0]


def _options(path: str, causal: bool, window: int | None) -> dict:
  kw: dict[str, Any] = dict(is_causal=causal)
  if window is not None:
    kw["local_window_size"] = (window, 0)
  impl = {"attnjax auto": None, "attnjax cudnn": "cudnn", "attnjax pallas": "pallas",
          "attnjax chunked": "chunked"}[path]
  return dict(kw, implementation=impl)


def bert_base_row(dry_run: bool, tiny: bool, steps: int) -> dict:
  """Training steps/s and MFU of BERT-base at seq 512 with the loop's own train step."""
  from experiments.gpu import tpu_memory  # pylint: disable=import-outside-toplevel
  from attnjax.data import DatasetInfo  # pylint: disable=import-outside-toplevel
  from attnjax.train import aot  # pylint: disable=import-outside-toplevel
  from attnjax.train.flops import peak_flops_per_device  # pylint: disable=import-outside-toplevel
  c = tpu_memory.bert_base_config(1, 1, 1)
  c.parallel.strategy = "jit"
  c.model.scan_layers = False
  c.train.batch_size = 32
  info = tpu_memory.bert_base_info()
  if tiny:
    c.model.preset, c.train.batch_size = "tiny", 4
    info = DatasetInfo("tiny_63", vocab_size=1000, max_length=63, num_classes=2,
                       num_train=1, num_eval=1)
  s = aot.abstract_train_step(c, info)
  flops = s.flops_per_step
  row = dict(bench="bert_base_train", batch=c.train.batch_size, seq=info.max_length + 1,
             params=s.num_params, flops_per_step=flops)
  if dry_run:
    with dispatch.target("gpu", compute_capability=(9, 0)):
      s.step.trace(s.state, s.batch).lower(lowering_platforms=("cuda",))
    return dict(row, lowered_for="cuda")
  rng = jax.random.PRNGKey(0)
  state = s.strategy.init_state(s.init_state, jax.eval_shape(s.init_state, rng), rng)
  gen = np.random.default_rng(0)
  host = info.dummy_batch(c.train.batch_size)
  host["inputs"] = gen.integers(1, info.vocab_size, host["inputs"].shape).astype(np.int32)
  host["label"] = gen.integers(0, 2, host["label"].shape).astype(host["label"].dtype)
  batch = s.strategy.put_batch(host)
  state, metrics = s.step(state, batch)  # compile
  jax.block_until_ready(metrics)
  t0 = time.perf_counter()
  for _ in range(steps):
    state, metrics = s.step(state, batch)
  jax.block_until_ready(metrics)
  sec = (time.perf_counter() - t0) / steps
  peak, source = peak_flops_per_device("bfloat16")
  return dict(row, step_ms=round(sec * 1e3, 2), tflops=round(flops / sec / 1e12, 1),
              mfu=round(flops / sec / peak, 3), peak_source=source)


def decode_row(dry_run: bool, tiny: bool) -> dict:
  """Cached greedy decoding tokens/s of a GPT-2-small-sized CausalLM (guarded import).

  Batch 8 prompts of 128 tokens, 256 new tokens, through ``attnjax.generate.generate``
  (one compiled prefill + while_loop program); random weights (speed does not depend on
  them). Skipped, saying why, where generation is not available.
  """
  try:
    import ml_collections  # pylint: disable=import-outside-toplevel
    from attnjax import generate as generate_lib  # pylint: disable=import-outside-toplevel
    from attnjax.models import MODELS  # pylint: disable=import-outside-toplevel
    generate = generate_lib.generate
  except (ImportError, AttributeError) as e:
    return dict(bench="decode", skipped=f"attnjax.generate.generate is not available ({e})")
  preset, vocab, batch, prompt, new = "base", 32000, 8, 128, 256
  if tiny:
    preset, vocab, batch, prompt, new = "tiny", 100, 2, 8, 4
  row = dict(bench="decode", preset=preset, batch=batch, seq=prompt, new_tokens=new)
  if dry_run:
    return dict(row, skipped="not lowered in --dry_run (generate compiles its own program)")
  model = MODELS.get("causal_lm")(ml_collections.ConfigDict(dict(preset=preset, dtype="bfloat16")),
                                  vocab_size=vocab, max_length=prompt + new, pad_id=0)
  ids = np.random.default_rng(0).integers(1, vocab, (batch, prompt)).astype(np.int32)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.asarray(ids))["params"]
  jax.block_until_ready(generate(model, params, ids, max_new_tokens=new).tokens)  # compile
  t0 = time.perf_counter()
  out = generate(model, params, ids, max_new_tokens=new)
  jax.block_until_ready(out.tokens)
  sec = time.perf_counter() - t0
  return dict(row, ms=round(sec * 1e3, 1), tokens_per_s=round(batch * new / sec, 1))


def table(rows: list[dict]) -> str:
  lines = ["| bench | path | shape | causal/window | pass | implementation | ms | TFLOP/s | "
           "MFU / tokens/s | note |", "|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    shape = (f"B{r.get('batch')} N{r.get('heads')} T{r.get('seq')} D{r.get('head_dim')}"
             if r["bench"] == "attention" else f"B{r.get('batch', '')} T{r.get('seq', '')}")
    mode = (f"{'causal' if r.get('causal') else 'full'}"
            + (f", window {r['window']}" if r.get("window") else ""))
    note = r.get("skipped") or ("lowered for cuda" if r.get("lowered_for") else "")
    lines.append(f"| {r['bench']} | {r.get('path', '')} | {shape} | {mode if r['bench'] == 'attention' else ''} "
                 f"| {r.get('passes', '')} | {r.get('implementation', '')} | "
                 f"{r.get('ms', r.get('step_ms', ''))} | {r.get('tflops', '')} | "
                 f"{r.get('mfu', r.get('tokens_per_s', ''))} | {note} |")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--dry_run", action="store_true", help="lower every path for cuda")
  parser.add_argument("--tiny", action="store_true", help="tiny shapes (for the test)")
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--train_steps", type=int, default=20)
  parser.add_argument("--out", default="experiments/gpu/results.json")
  args = parser.parse_args()
  if not args.dry_run and jax.default_backend() != "gpu":
    raise SystemExit("bench.py: no GPU (jax.default_backend() is "
                     f"{jax.default_backend()!r}); use --dry_run")
  main_shape, long_shape, window = (2, 32, 4096, 128), (1, 32, 32768, 128), 1024
  if args.tiny:
    main_shape, long_shape, window = (1, 2, 256, 64), (1, 2, 512, 64), 128
  rows = []
  for causal in (False, True):
    rows += attention_rows(main_shape, causal, None, args.dry_run, args.repeats)
  rows += attention_rows(long_shape, True, window, args.dry_run, args.repeats)
  rows.append(bert_base_row(args.dry_run, args.tiny, args.train_steps))
  try:
    rows.append(decode_row(args.dry_run, args.tiny))
  except Exception as e:  # pylint: disable=broad-except  # generation is another helper's
    rows.append(dict(bench="decode", skipped=f"failed: {type(e).__name__}: {str(e)[:200]}"))
  device = jax.devices()[0]
  result = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                device=getattr(device, "device_kind", str(device)), jax=jax.__version__,
                dry_run=args.dry_run, rows=rows)
  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=1)
  md = table(rows)
  with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
    f.write(f"{result['date']} on {result['device']} (jax {jax.__version__})\n\n{md}\n")
  print(md)


if __name__ == "__main__":
  main()
