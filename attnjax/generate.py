"""Text generation from decoders: greedy, sampling and beam search on a static-size cache.

::

  out = generate(model, params, [[5, 7, 9], [5, 2]], max_new_tokens=20, eos_id=1)
  out.tokens   # int32 [batch, max_new_tokens]: the new tokens, EOS included, pad_id after
  out.scores   # float32 [batch]
  out.lengths  # int32 [batch]: new tokens up to and including EOS

Works with every model of the decoder protocol (:mod:`attnjax.models.registry`):
decoder-only models (``decode``, ``init_cache``: :class:`~attnjax.models.CausalLM`) take
prompts; encoder-decoders (also ``encode``: :class:`~attnjax.models.EncoderDecoder`) take
source sequences and start the decoder from ``decoder_start_id``.

The whole search is one ``jax.jit``-compiled program per (model, shapes, options): the
prompt is prefilled into the cache in one call, then a ``lax.while_loop`` adds one token
per step until every row has ended (EOS) or ``max_new_tokens`` are generated. Prompts of
different lengths share a batch: they are left-padded, the padding is masked as keys, and
every row's positions start at 0 at its first real token.

CLI::

  python -m attnjax.generate --checkpoint <workdir | Hugging Face dir> --prompt "def "
  python -m attnjax.generate --checkpoint runs/code_lm --input_file prompts.txt \\
      --method beam --num_beams 4 --max_new_tokens 64
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import sys
from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

METHODS = ("greedy", "sample", "beam")


class Generation(NamedTuple):
  """What :func:`generate` returns (numpy arrays).

  Attributes:
    tokens: int32 ``[batch, max_new_tokens]`` new token ids (the prompt is not
      repeated), EOS included; positions after a row's end hold ``pad_id``.
    scores: float32 ``[batch]``. greedy / sample: the sum of the model's log-probabilities
      (temperature 1, no top-k/top-p filtering) of the new tokens up to and including EOS.
      beam: the best hypothesis's beam score, that sum divided by ``lengths **
      length_penalty`` (as transformers' ``sequences_scores``).
    lengths: int32 ``[batch]``: new tokens up to and including EOS (``max_new_tokens``
      for a row that never produced EOS).
  """

  tokens: np.ndarray
  scores: np.ndarray
  lengths: np.ndarray


def _is_decoder(model: Any) -> bool:
  return callable(getattr(model, "decode", None)) and callable(getattr(model, "init_cache", None))


def _rows(inputs: Any, lengths: Any, name: str) -> list[list[int]]:
  """Token rows from a list of lists, or a right-padded ``[batch, len]`` array + lengths."""
  if isinstance(inputs, (list, tuple)) and all(isinstance(r, (list, tuple, np.ndarray))
                                               for r in inputs):
    if lengths is not None:
      raise ValueError(f"lengths is for a padded {name} array, not a list of lists")
    rows = [[int(t) for t in r] for r in inputs]
  else:
    array = np.asarray(inputs)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
      raise ValueError(f"{name} must be a list of token-id lists or an int [batch, len] "
                       f"array, got {array.dtype} shape {array.shape}")
    if lengths is None:
      lengths = np.full(array.shape[0], array.shape[1])
    lengths = np.asarray(lengths)
    if lengths.shape != (array.shape[0],) or lengths.min(initial=0) < 0 or \
        lengths.max(initial=0) > array.shape[1]:
      raise ValueError(f"lengths must be [batch] = [{array.shape[0]}] ints in [0, "
                       f"{array.shape[1]}], got {lengths.tolist()}")
    rows = [array[i, :int(n)].tolist() for i, n in enumerate(lengths)]
  if not rows:
    raise ValueError(f"{name}: empty batch")
  for i, r in enumerate(rows):
    if not r:
      raise ValueError(f"{name} row {i} is empty: give at least one token (e.g. BOS)")
  return rows


def _decoder_config(model: nn.Module):
  return getattr(model, "decoder_config", None) or model.config


def generate(model: nn.Module, params: Any, inputs: Any, *, max_new_tokens: int,
             method: str = "greedy", num_beams: int = 4, length_penalty: float = 1.0,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
             eos_id: int | None = None, rng: jax.Array | None = None,
             lengths: Any = None, cache_length: int | None = None) -> Generation:
  """Generates up to ``max_new_tokens`` tokens per row.

  Args:
    model: a decoder-only model (``decode``, ``init_cache``) or an encoder-decoder
      (also ``encode``).
    params: the model's ``'params'`` (``{'params': ...}`` is accepted too).
    inputs: prompt ids (decoder-only) or source ids (encoder-decoder): a list of token-id
      lists of any lengths, or an int ``[batch, len]`` array, right-padded when
      ``lengths`` is given.
    max_new_tokens: tokens to generate at most (> 0).
    method: ``'greedy'`` (argmax), ``'sample'`` (from the filtered distribution) or
      ``'beam'`` (beam search).
    num_beams: beams of ``'beam'`` (>= 1).
    length_penalty: beam scores are ``sum log p / length ** length_penalty``; > 0 favours
      longer hypotheses.
    temperature: ``'sample'`` divides the logits by it (> 0).
    top_k: ``'sample'`` keeps the ``top_k`` most likely tokens (0 = all).
    top_p: ``'sample'`` keeps the smallest set of most likely tokens whose probability
      reaches ``top_p`` (nucleus sampling), in ``(0, 1]``.
    eos_id: a row ends when it produces this id (None: only ``max_new_tokens`` ends).
    rng: PRNG key of ``'sample'``; default ``PRNGKey(0)``.
    lengths: int ``[batch]`` real lengths of a right-padded ``inputs`` array.
    cache_length: slots of the decoder's cache (static; fix it to reuse one compiled
      program across prompt lengths); default the longest prompt + ``max_new_tokens``
      (decoder-only) or ``max_new_tokens`` (encoder-decoder).

  Returns:
    :class:`Generation` ``(tokens, scores, lengths)``.

  Raises:
    ValueError: one line naming the bad argument: a model that cannot generate (a
      classifier), a prompt that does not fit the cache or the model's positions,
      ``max_new_tokens <= 0``, ``num_beams < 1``, ``top_p`` outside ``(0, 1]``, ...; a
      kernel that cannot decode is refused by name when the program is traced.
  """
  if not _is_decoder(model):
    raise ValueError(f"{type(model).__name__} cannot generate: generation needs a decoder "
                     "(a causal_lm or encoder_decoder model, with decode and init_cache)")
  if method not in METHODS:
    raise ValueError(f"method={method!r}; expected one of {METHODS}")
  if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens <= 0:
    raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
  if not isinstance(num_beams, (int, np.integer)) or num_beams < 1:
    raise ValueError(f"num_beams must be an int >= 1, got {num_beams!r}")
  if not 0.0 < top_p <= 1.0:
    raise ValueError(f"top_p must be in (0, 1], got {top_p}")
  if not temperature > 0.0:
    raise ValueError(f"temperature must be > 0, got {temperature}")
  if not isinstance(top_k, (int, np.integer)) or top_k < 0:
    raise ValueError(f"top_k must be an int >= 0, got {top_k!r}")
  if "params" in params and len(params) == 1:
    params = params["params"]
  dec = _decoder_config(model)
  if eos_id is not None and not 0 <= eos_id < dec.vocab_size:
    raise ValueError(f"eos_id={eos_id} is not a token id of the vocabulary "
                     f"[0, {dec.vocab_size})")
  encoder_decoder = callable(getattr(model, "encode", None))
  rows = _rows(inputs, lengths, "source ids" if encoder_decoder else "prompt")
  longest = max(len(r) for r in rows)
  batch = len(rows)
  pad = dec.pad_id
  needed = max_new_tokens if encoder_decoder else longest + max_new_tokens
  if cache_length is None:
    cache_length = needed
  what = "max_new_tokens" if encoder_decoder else (
      f"the longest prompt ({longest} tokens) + max_new_tokens")
  if needed > cache_length:
    raise ValueError(f"{what} = {needed} tokens do not fit the cache of cache_length="
                     f"{cache_length}")
  if dec.position == "learned" and needed > dec.max_length:
    raise ValueError(f"{what} = {needed} tokens exceed the model's max_length="
                     f"{dec.max_length} (learned positions)")
  if dec.position == "learned" and cache_length > dec.max_length:
    raise ValueError(f"cache_length={cache_length} exceeds the model's max_length="
                     f"{dec.max_length} (learned positions)")
  k = num_beams if method == "beam" else 1
  options = dict(method=method, num_beams=k, length_penalty=float(length_penalty),
                 temperature=float(temperature), top_k=int(min(top_k, dec.vocab_size)),
                 top_p=float(top_p), eos_id=eos_id, pad_id=pad,
                 max_new_tokens=int(max_new_tokens), cache_length=int(cache_length))
  if rng is None:
    rng = jax.random.PRNGKey(0)
  if encoder_decoder:
    source = np.full((batch, longest), model.config.pad_id, np.int32)
    mask = np.zeros((batch, longest), bool)
    for i, r in enumerate(rows):
      source[i, :len(r)], mask[i, :len(r)] = r, True
    run = _compiled(model, encoder_decoder=True, **options)
  else:
    # Left padding: every row's last prompt token is the last column, so the prefill's
    # last logits predict each row's first new token.
    source = np.full((batch, longest), pad, np.int32)
    mask = np.zeros((batch, longest), bool)
    for i, r in enumerate(rows):
      source[i, longest - len(r):], mask[i, longest - len(r):] = r, True
    run = _compiled(model, encoder_decoder=False, **options)
  tokens, scores, out_lengths = run(params, jnp.asarray(source), jnp.asarray(mask), rng)
  return Generation(np.asarray(tokens), np.asarray(scores), np.asarray(out_lengths))


@functools.lru_cache(maxsize=32)
def _compiled(model: nn.Module, **options):
  """One jitted generation program per model and static options (shapes: jit's cache)."""
  return jax.jit(functools.partial(_run, model, options))


def _run(model: nn.Module, o: dict, params: Any, source: jax.Array, mask: jax.Array,
         rng: jax.Array):
  """Prefill, then search. ``source``/``mask`` ``[batch, len]`` (left-padded prompts or
  right-padded sources); returns ``(tokens, scores, lengths)``."""
  batch = source.shape[0]
  k = o["num_beams"]
  cls = type(model)

  def apply(cache, *args, **kwargs):
    logits, variables = model.apply({"params": params, "cache": cache}, *args,
                                    method=cls.decode, mutable=["cache"], **kwargs)
    return logits, variables["cache"]

  if o["encoder_decoder"]:
    encoded, encoded_mask = model.apply({"params": params}, source, attention_mask=mask,
                                        method=cls.encode)
    # Each source row is encoded once and shared by its beams (rows b*k .. b*k+k-1).
    encoded = jnp.repeat(encoded, k, axis=0)
    encoded_mask = jnp.repeat(encoded_mask, k, axis=0)
    rows = batch * k
    start = jnp.full((rows, 1), model.decoder_start_id, jnp.int32)
    logits, cache = apply(model.init_cache(rows, o["cache_length"]), start, encoded,
                          encoded_mask, positions=jnp.zeros((rows, 1), jnp.int32))
    logits, positions = logits[:, -1], jnp.ones((rows,), jnp.int32)

    def step(cache, tokens, positions):
      logits, cache = apply(cache, tokens[:, None], encoded, encoded_mask,
                            positions=positions[:, None])
      return logits[:, -1], cache
  else:
    # Each row's first real token is at position 0 (left padding).
    prompt_positions = jnp.maximum(jnp.cumsum(mask, axis=1, dtype=jnp.int32) - 1, 0)
    logits, cache = apply(model.init_cache(batch, o["cache_length"]), source,
                          positions=prompt_positions, mask=mask)
    logits, positions = logits[:, -1], prompt_positions[:, -1] + 1
    if k > 1:
      # One prefill per prompt; its beams start from copies of its cache.
      copies = jnp.repeat(jnp.arange(batch), k)
      cache, logits, positions = _take_rows(cache, copies), logits[copies], positions[copies]

    def step(cache, tokens, positions):
      logits, cache = apply(cache, tokens[:, None], positions=positions[:, None])
      return logits[:, -1], cache

  if o["method"] == "beam":
    return _beam_search(step, logits, cache, positions, o)
  return _sample(step, logits, cache, positions, rng, o)


def _take_rows(cache: Any, rows: jax.Array) -> Any:
  """The cache of the given batch rows (beam reordering); shared scalars are kept."""
  def take(path, x):
    # Scanned stacks (nn.scan under 'layers') keep a leading layer axis.
    axis = 1 if any(getattr(p, "key", None) == "layers" for p in path) else 0
    return x if x.ndim <= axis else jnp.take(x, rows, axis=axis)
  return jax.tree_util.tree_map_with_path(take, cache)


def _sample(step, logits, cache, positions, rng, o):
  """Greedy or sampled decoding: one token per row per step, until EOS or the limit."""
  rows, n = logits.shape[0], o["max_new_tokens"]
  eos, pad = o["eos_id"], o["pad_id"]

  def body(s):
    i, logits, cache, positions, tokens, done, score, length = s
    if o["method"] == "greedy":
      tok = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    else:
      filtered = _filter_logits(logits, o["temperature"], o["top_k"], o["top_p"])
      tok = jax.random.categorical(jax.random.fold_in(rng, i), filtered).astype(jnp.int32)
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits.astype(jnp.float32)),
                               tok[:, None], axis=-1)[:, 0]
    live = ~done
    tok = jnp.where(live, tok, pad)
    tokens = tokens.at[:, i].set(tok)
    score = score + jnp.where(live, logp, 0.0)
    length = length + live.astype(jnp.int32)
    if eos is not None:
      done = done | (tok == eos)
    go = (i + 1 < n) & ~jnp.all(done)
    logits, cache = lax.cond(go, lambda: step(cache, tok, positions),
                             lambda: (logits, cache))
    return i + 1, logits, cache, positions + 1, tokens, done, score, length

  init = (jnp.int32(0), logits.astype(jnp.float32), cache, positions,
          jnp.full((rows, n), pad, jnp.int32), jnp.zeros((rows,), bool),
          jnp.zeros((rows,), jnp.float32), jnp.zeros((rows,), jnp.int32))
  _, _, _, _, tokens, _, score, length = lax.while_loop(
      lambda s: (s[0] < n) & ~jnp.all(s[5]), body, init)
  return tokens, score, length


def _beam_search(step, logits, cache, positions, o):
  """Beam search with length penalty and EOS; ``logits`` ``[batch * K, vocab]``.

  Every step expands each alive beam by every token and keeps the ``2K`` best
  continuations by summed log-probability. Those ending in EOS among the first ``K``
  become finished hypotheses scored ``sum / length ** length_penalty`` (the ``K`` best
  finished are kept); the ``K`` best others stay alive, and the cache rows follow their
  parents. A row stops when its worst finished hypothesis beats the best score an alive
  beam could still reach (its sum divided by the longest length it could reach when
  ``length_penalty > 0``, else by the next length); at the end, alive beams compete with
  the finished ones at their current length.
  """
  k, n = o["num_beams"], o["max_new_tokens"]
  eos, pad, lp = o["eos_id"], o["pad_id"], o["length_penalty"]
  rows, vocab = logits.shape
  batch = rows // k
  neg = jnp.float32(-jnp.inf)
  top = jnp.arange(2 * k) < k  # candidate ranks allowed to finish

  def gather(x, index):  # x [batch, m, ...], index [batch, j] -> [batch, j, ...]
    return jnp.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1)

  def body(s):
    i, logits, cache, positions, alive_seq, alive_logp, fin_seq, fin_score, fin_len, done = s
    logp = jax.nn.log_softmax(logits.astype(jnp.float32)).reshape(batch, k, vocab)
    cand = (alive_logp[:, :, None] + logp).reshape(batch, k * vocab)
    vals, index = lax.top_k(cand, 2 * k)
    parent, tok = index // vocab, (index % vocab).astype(jnp.int32)
    seqs = gather(alive_seq, parent).at[:, :, i].set(tok)
    length = (i + 1).astype(jnp.float32)
    alive_vals = vals
    if eos is not None:
      is_eos = tok == eos
      new = jnp.where(is_eos & top[None] & ~done[:, None], vals / length ** lp, neg)
      merged_score = jnp.concatenate([fin_score, new], axis=1)
      fin_score, best = lax.top_k(merged_score, k)
      fin_seq = gather(jnp.concatenate([fin_seq, seqs], axis=1), best)
      fin_len = gather(jnp.concatenate(
          [fin_len, jnp.full((batch, 2 * k), i + 1, jnp.int32)], axis=1), best)
      alive_vals = jnp.where(is_eos, neg, vals)
    alive_logp, keep = lax.top_k(alive_vals, k)
    alive_seq = gather(seqs, keep)
    alive_tok = gather(tok, keep)
    source_rows = (jnp.arange(batch)[:, None] * k + gather(parent, keep)).reshape(-1)
    cache = _take_rows(cache, source_rows)
    # Best normalised score an alive beam can still reach (its sum only decreases).
    reach = n if lp > 0 else i + 2
    bound = alive_logp[:, 0] / jnp.float32(reach) ** lp
    done = done | ((fin_score[:, -1] > neg) & (fin_score[:, -1] >= bound))
    go = (i + 1 < n) & ~jnp.all(done)
    logits, cache = lax.cond(go, lambda: step(cache, alive_tok.reshape(-1), positions),
                             lambda: (logits, cache))
    return (i + 1, logits, cache, positions + 1, alive_seq, alive_logp, fin_seq, fin_score,
            fin_len, done)

  first = jnp.where(jnp.arange(k) == 0, 0.0, neg).astype(jnp.float32)
  init = (jnp.int32(0), logits.astype(jnp.float32), cache, positions,
          jnp.full((batch, k, n), pad, jnp.int32), jnp.broadcast_to(first, (batch, k)),
          jnp.full((batch, k, n), pad, jnp.int32), jnp.full((batch, k), neg),
          jnp.zeros((batch, k), jnp.int32), jnp.zeros((batch,), bool))
  steps, _, _, _, alive_seq, alive_logp, fin_seq, fin_score, fin_len, done = lax.while_loop(
      lambda s: (s[0] < n) & ~jnp.all(s[-1]), body, init)
  alive_score = jnp.where(done[:, None], neg,
                          alive_logp / steps.astype(jnp.float32) ** lp)
  score = jnp.concatenate([fin_score, alive_score], axis=1)
  best = jnp.argmax(score, axis=1)[:, None]
  seqs = jnp.concatenate([fin_seq, alive_seq], axis=1)
  lens = jnp.concatenate([fin_len, jnp.full((batch, k), steps, jnp.int32)], axis=1)
  return gather(seqs, best)[:, 0], gather(score, best)[:, 0], gather(lens, best)[:, 0]


def _filter_logits(logits: jax.Array, temperature: float, top_k: int,
                   top_p: float) -> jax.Array:
  """Sampling logits ``[rows, vocab]``: divided by ``temperature``, then top-k and top-p
  filtered (removed tokens get ``-inf``; ties at the threshold are kept)."""
  logits = logits.astype(jnp.float32) / temperature
  if top_k:
    kth = lax.top_k(logits, top_k)[0][..., -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if top_p < 1.0:
    ordered = jnp.sort(logits, axis=-1)[..., ::-1]
    probs = jax.nn.softmax(ordered, axis=-1)
    # Keep a token while the mass before it is below top_p (the first always stays).
    keep = (jnp.cumsum(probs, axis=-1) - probs) < top_p
    threshold = jnp.min(jnp.where(keep, ordered, jnp.inf), axis=-1, keepdims=True)
    logits = jnp.where(logits < threshold, -jnp.inf, logits)
  return logits


# ----------------------------------------------------------------------------------------
# Command line.


class LoadedGenerator(NamedTuple):
  """A model ready to generate text: what :func:`load_generator` returns."""

  model: nn.Module
  params: Any
  tokenizer: Any  # tokenizers.Tokenizer
  bos_id: int | None  # prepended to every prompt (decoder-only) when the data has one
  eos_id: int | None


def _optional_id(value: Any) -> int | None:
  if isinstance(value, (list, tuple)):
    value = value[0] if value else None
  return None if value is None or int(value) < 0 else int(value)


def _read_tokenizer(file: pathlib.Path, what: str):
  from tokenizers import Tokenizer  # pylint: disable=import-outside-toplevel
  if not file.is_file():
    raise FileNotFoundError(f"{file} not found: {what} needs its tokenizer.json to turn "
                            "text into token ids")
  try:
    return Tokenizer.from_file(str(file))
  except Exception as e:  # tokenizers raises a bare Exception on unreadable files
    raise ValueError(f"{file}: not a readable tokenizer.json ({e})") from e


def load_generator(checkpoint: str) -> LoadedGenerator:
  """Loads an attnjax workdir or a Hugging Face model directory for generation.

  A workdir (``config.json`` + ``checkpoints/``) rebuilds its model through its task
  (``config.json``'s resolved config), restores the latest checkpoint's params and reads
  ``<workdir>/tokenizer.json``; BOS/EOS come from the dataset. A Hugging Face directory
  loads through :func:`attnjax.pretrained.load_hf_model` with its ``tokenizer.json``;
  BOS/EOS from its ``config.json`` (BOS is not prepended: GPT-2 prompts start as given).

  Raises:
    FileNotFoundError / ValueError: one line naming the missing or bad file.
  """
  path = pathlib.Path(checkpoint).expanduser()
  if not path.is_dir():
    raise FileNotFoundError(f"--checkpoint {checkpoint!r} is not a directory")
  config_file = path / "config.json"
  if not config_file.is_file():
    raise FileNotFoundError(f"--checkpoint {checkpoint!r} has no config.json: expected an "
                            "attnjax workdir or a Hugging Face model directory")
  if (path / "checkpoints").is_dir():
    import ml_collections  # pylint: disable=import-outside-toplevel
    from attnjax import data as data_lib  # pylint: disable=import-outside-toplevel
    from attnjax.train import tasks  # pylint: disable=import-outside-toplevel
    from attnjax.train.finetune import read_workdir_params  # pylint: disable=import-outside-toplevel
    try:
      config = ml_collections.ConfigDict(json.loads(config_file.read_text()))
    except ValueError as e:
      raise ValueError(f"{config_file}: not valid JSON: {e}") from e
    # The run's own dataset variant (tokenizer, lengths) decides the vocabulary and positions.
    info = data_lib.get_dataset_info(data_lib.resolve_data_config(config.data))
    model = tasks.build_task(config, info).model
    if not _is_decoder(model):
      raise ValueError(f"{path} holds a {type(model).__name__} "
                       f"({tasks.task_config(config).get('name', 'classification')} task), "
                       "which cannot generate: give a causal_lm or seq2seq workdir")
    params = read_workdir_params(str(path))
    return LoadedGenerator(model, params, _read_tokenizer(path / "tokenizer.json", str(path)),
                           _optional_id(info.bos_id), _optional_id(info.eos_id))
  from attnjax.pretrained import load_hf_model  # pylint: disable=import-outside-toplevel
  model, params = load_hf_model(path)
  if not _is_decoder(model):
    raise ValueError(f"{path} holds a {type(model).__name__}, which cannot generate: give a "
                     "decoder (GPT-2) or encoder-decoder (BART) checkpoint")
  hf = json.loads(config_file.read_text())
  return LoadedGenerator(model, params, _read_tokenizer(path / "tokenizer.json", str(path)),
                         None, _optional_id(hf.get("eos_token_id")))


def generate_text(loaded: LoadedGenerator, texts: Sequence[str], **options: Any) -> list[str]:
  """Generates text per input: the prompt and its continuation decoded together
  (decoder-only), or the output (encoder-decoder).

  ``options`` are :func:`generate`'s (``max_new_tokens``, ``method``, ...); ``eos_id``
  defaults to the checkpoint's.
  """
  tok = loaded.tokenizer
  encoder_decoder = callable(getattr(loaded.model, "encode", None))
  rows = []
  for text in texts:
    ids = tok.encode(text, add_special_tokens=False).ids
    if encoder_decoder and loaded.eos_id is not None:
      ids = ids + [loaded.eos_id]  # sources end in EOS, as the data's
    elif not encoder_decoder and loaded.bos_id is not None:
      ids = [loaded.bos_id] + ids
    rows.append(ids)
  options.setdefault("eos_id", loaded.eos_id)
  out = generate(loaded.model, loaded.params, rows, **options)
  texts_out = []
  for row, tokens, length in zip(rows, out.tokens, out.lengths):
    ids = [int(t) for t in tokens[:length] if int(t) != options["eos_id"]]
    if not encoder_decoder:
      ids = [t for t in row if t != loaded.bos_id] + ids
    texts_out.append(tok.decode(ids, skip_special_tokens=True))
  return texts_out


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m attnjax.generate",
      description="Generate text from an attnjax workdir or a Hugging Face model directory.")
  parser.add_argument("--checkpoint", required=True,
                      help="an attnjax workdir (config.json + checkpoints/ + tokenizer.json) "
                           "or a Hugging Face directory (config.json + model.safetensors + "
                           "tokenizer.json)")
  parser.add_argument("--prompt", action="append", default=[],
                      help="a prompt (decoder-only) or source text (encoder-decoder); "
                           "repeatable")
  parser.add_argument("--input_file", help="one prompt per line")
  parser.add_argument("--max_new_tokens", type=int, default=64)
  parser.add_argument("--method", choices=METHODS, default="greedy")
  parser.add_argument("--num_beams", type=int, default=4)
  parser.add_argument("--length_penalty", type=float, default=1.0)
  parser.add_argument("--temperature", type=float, default=1.0)
  parser.add_argument("--top_k", type=int, default=0)
  parser.add_argument("--top_p", type=float, default=1.0)
  parser.add_argument("--seed", type=int, default=0, help="PRNG seed of --method sample")
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  """Prints one generated text per input (a decoder-only model's includes its prompt).

  Returns the exit status: 0, or 2 with a one-line ``error: ...`` on bad input.
  """
  args = build_parser().parse_args(argv)
  try:
    texts = list(args.prompt)
    if args.input_file:
      try:
        texts += [line.rstrip("\n") for line in open(args.input_file, encoding="utf-8")
                  if line.strip()]
      except OSError as e:
        raise FileNotFoundError(f"--input_file {args.input_file!r}: {e.strerror}") from e
    if not texts:
      raise ValueError("give --prompt \"...\" or --input_file")
    loaded = load_generator(args.checkpoint)
    outputs = generate_text(loaded, texts, max_new_tokens=args.max_new_tokens,
                            method=args.method, num_beams=args.num_beams,
                            length_penalty=args.length_penalty,
                            temperature=args.temperature, top_k=args.top_k,
                            top_p=args.top_p, rng=jax.random.PRNGKey(args.seed))
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)  # one line
    return 2
  for out in outputs:
    print(out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
