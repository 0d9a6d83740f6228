"""Benchmark of cached generation (not a test): ratios measured in one run.

One GPT-2-shaped model (pre-LN, learned positions, tied output; 4 layers, width 256,
4 heads, GPT-2's vocabulary of 50257), randomly initialised by transformers and loaded into
attnjax with ``load_hf_model`` (the same weights on both sides). Batch 8, prompts of 16
tokens, 256 new tokens, greedy, no EOS (every row runs the full 256 steps):

1. attnjax ``generate`` (cached: one prefill, then one token per step against a
   static-size key/value cache, the whole loop in one compiled program);
2. recomputing the prefix at every step, two ways: (a) measured, one compiled program
   whose every step runs the decoder over a static buffer of ``prompt + new`` tokens
   (what a static-shape JAX program without a cache does) and projects the current
   position to the vocabulary; (b) the exact-length estimate, the sum over steps of the
   forward time at each prefix length, from forwards timed at 8 lengths (interpolated);
3. transformers' ``generate`` (PyTorch, its own KV cache) on this CPU with
   ``torch.set_num_threads(2)``.

Compile times are excluded (each program runs once before it is timed); times are the
best of ``--repeats``. Run from the repository root::

  .venv/bin/python experiments/generation/bench_generate.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _best(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return min(times)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--prompt_length", type=int, default=16)
  parser.add_argument("--new_tokens", type=int, default=256)
  parser.add_argument("--layers", type=int, default=4)
  parser.add_argument("--width", type=int, default=256)
  parser.add_argument("--heads", type=int, default=4)
  parser.add_argument("--vocab", type=int, default=50257)
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--torch_threads", type=int, default=2)
  args = parser.parse_args(argv)

  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  from jax import lax  # pylint: disable=import-outside-toplevel

  from attnjax.generate import generate  # pylint: disable=import-outside-toplevel
  from attnjax.pretrained import load_hf_model  # pylint: disable=import-outside-toplevel

  torch.set_num_threads(args.torch_threads)
  torch.manual_seed(0)
  b, p, n = args.batch, args.prompt_length, args.new_tokens
  total = p + n
  config = transformers.GPT2Config(n_layer=args.layers, n_embd=args.width, n_head=args.heads,
                                   vocab_size=args.vocab, n_positions=total,
                                   bos_token_id=0, eos_token_id=0, pad_token_id=0)
  hf = transformers.GPT2LMHeadModel(config).eval()
  with tempfile.TemporaryDirectory() as tmp:
    hf.save_pretrained(tmp)
    model, params = load_hf_model(tmp)
  params = jax.device_put(params)
  prompts = np.random.default_rng(0).integers(1, args.vocab, (b, p)).astype(np.int32)

  # 1. attnjax, cached.
  def cached():
    out = generate(model, params, prompts, max_new_tokens=n)
    return out.tokens
  first = cached()  # compiles
  t_cached = _best(cached, args.repeats)

  # 2a. Recompute the whole (static) buffer every step, in one compiled loop.
  table = params["decoder"]["embeddings"]["word_embeddings"]["embedding"]

  def hidden(ids):
    return model.apply({"params": params}, ids, method=lambda m, x: m.decoder(x))

  @jax.jit
  def recompute(prompt):
    buf = jnp.zeros((b, total), jnp.int32).at[:, :p].set(prompt)

    def body(i, buf):
      h = lax.dynamic_index_in_dim(hidden(buf), p + i - 1, axis=1, keepdims=False)
      tok = jnp.argmax(h @ table.T, axis=-1).astype(jnp.int32)
      return lax.dynamic_update_index_in_dim(buf, tok, p + i, axis=1)
    return lax.fori_loop(0, n, body, buf)[:, p:]

  baseline = np.asarray(recompute(prompts))
  t_recompute = _best(lambda: recompute(prompts).block_until_ready(), 1)

  # 2b. Exact-length recomputation, estimated from forwards at 8 prefix lengths.
  @jax.jit
  def last_logits(ids):
    return hidden(ids)[:, -1] @ table.T
  lengths = np.linspace(p, total - 1, 8).round().astype(int)
  per_length = []
  for length in lengths:
    ids = jnp.zeros((b, int(length)), jnp.int32)
    last_logits(ids).block_until_ready()
    per_length.append(_best(lambda ids=ids: last_logits(ids).block_until_ready(), 3))
  steps = np.arange(p, total)
  t_exact = float(np.sum(np.interp(steps, lengths, per_length)))

  # 3. transformers' generate (its KV cache), greedy, exactly n new tokens.
  def torch_generate():
    with torch.no_grad():
      return hf.generate(torch.tensor(prompts, dtype=torch.long),
                         attention_mask=torch.ones(b, p, dtype=torch.long),
                         max_new_tokens=n, min_new_tokens=n, do_sample=False, num_beams=1,
                         eos_token_id=None, pad_token_id=0)
  hf_tokens = torch_generate()[:, p:].numpy()
  t_torch = _best(torch_generate, args.repeats)

  tokens = b * n
  result = {
      "model": f"GPT-2-shaped, {args.layers} layers, width {args.width}, {args.heads} heads, "
               f"vocab {args.vocab}",
      "batch": b, "prompt_length": p, "new_tokens": n, "devices": str(jax.devices()),
      "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
      "attnjax_cached_s": round(t_cached, 3),
      "recompute_static_buffer_s": round(t_recompute, 3),
      "recompute_exact_length_estimate_s": round(t_exact, 3),
      "transformers_generate_s": round(t_torch, 3),
      "attnjax_cached_tokens_per_s": round(tokens / t_cached, 1),
      "transformers_tokens_per_s": round(tokens / t_torch, 1),
      "speedup_vs_recompute_static": round(t_recompute / t_cached, 2),
      "speedup_vs_recompute_exact_estimate": round(t_exact / t_cached, 2),
      "attnjax_vs_transformers": round(t_torch / t_cached, 2),
      "same_tokens_as_recompute": bool((np.asarray(first) == baseline).all()),
      "same_tokens_as_transformers": bool((np.asarray(first) == hf_tokens).all()),
  }
  print(json.dumps(result, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main())
