"""Evaluators: what the loop evaluates, on which split, how often (``config.evals``).

As big_vision's ``config.evals``: each entry of ``config.evals`` names an evaluator type
(:data:`EVALUATORS`) with its own split, batch size and period, e.g.::

  config.evals.eval = dict(type="metrics", split="test", batch_size=256, every=100)
  config.evals.decode = dict(type="decode", split="test", batch_size=32, every=500,
                             method="beam", num_beams=4, max_new_tokens=64, num_examples=200)

Records are written to ``metrics.jsonl`` with the evaluator's name as ``split``. The
evaluator named ``eval`` (else the first by name) is the *main* one: its metrics pick the
best checkpoint and are what a run returns. Without ``config.evals`` there is one ``metrics``
evaluator named ``eval`` on ``config.data.eval_split`` with ``config.train.eval_batch_size``
every ``config.train.eval_every`` steps (the behaviour before evaluators existed).

Types:

* ``metrics``: the task's eval step (teacher-forced for sequence tasks) summed exactly over
  the split.
* ``decode``: generation with :func:`attnjax.generate.generate` (greedy, beam or sampling)
  and text metrics against the targets: exact match, BLEU (``sacrebleu``) and ROUGE-L
  (``rouge-score``); tasks that generate only (``causal_lm``, ``seq2seq``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import ml_collections
import numpy as np

from attnjax import data as data_lib
from attnjax.registry import Registry

Metrics = dict[str, float]


@dataclasses.dataclass(frozen=True)
class Evaluator:
  """One configured evaluator.

  Attributes:
    name: its name in ``config.evals`` (the ``split`` of its metrics.jsonl records).
    type: its registered type.
    split: the data split it reads.
    batch_size: global batch size.
    every: evaluates every this many steps (and at the last step).
    run: ``run(state) -> metrics``.
  """

  name: str
  type: str
  split: str
  batch_size: int
  every: int
  run: Callable[[Any], Metrics]


#: type -> ``builder(context, name, split, batch_size, options) -> run(state) -> metrics``.
EVALUATORS: Registry[Callable[..., Callable[[Any], Metrics]]] = Registry("evaluator type")

_COMMON_KEYS = ("type", "split", "batch_size", "every")


@dataclasses.dataclass(frozen=True)
class Context:
  """What evaluators need from the run.

  Attributes:
    task: the task.
    strategy: the parallel strategy (placement, compiled eval step).
    abstract_state: the TrainState's shapes.
    data_config: the resolved data config.
    info: the dataset's info.
    compile_eval: ``compile_eval(strategy, task, abstract_state)`` -> the eval step.
    evaluate: ``evaluate(eval_fn, state, batches, put_batch, finalize, gathers_outputs)``.
    params_for_host: ``params_for_host(state)`` -> the full (LoRA-merged) parameters on
      this host, for evaluators that run outside the compiled step.
  """

  task: Any
  strategy: Any
  abstract_state: Any
  data_config: Any
  info: Any
  compile_eval: Callable
  evaluate: Callable
  params_for_host: Callable


def eval_specs(config: ml_collections.ConfigDict) -> dict[str, dict[str, Any]]:
  """``config.evals`` as ``{name: options}`` (defaults filled in), or the one default.

  Raises:
    ValueError: an evaluator without a type, an unknown type (the message lists the known
      ones), or a batch size or period that is not a positive int.
  """
  evals = config.get("evals")
  defaults = {"split": config.data.get("eval_split"),
              "batch_size": int(config.train.eval_batch_size),
              "every": int(config.train.eval_every)}
  if not evals:
    return {"eval": {"type": "metrics", **defaults}}
  out = {}
  for name, options in evals.items():
    options = dict(options.to_dict() if hasattr(options, "to_dict") else options)
    if "type" not in options:
      raise ValueError(f"config.evals.{name} has no 'type'; known types: "
                       f"{', '.join(EVALUATORS.names())}")
    EVALUATORS.get(options["type"])  # an unknown type lists the known ones
    options = {**defaults, **{k: v for k, v in options.items() if v is not None}}
    for key in ("batch_size", "every"):
      if not isinstance(options[key], int) or isinstance(options[key], bool) or options[key] <= 0:
        raise ValueError(f"config.evals.{name}.{key}={options[key]!r} must be a positive int")
    out[name] = options
  return out


def main_name(specs: Mapping[str, Any]) -> str:
  """The main evaluator's name: ``eval`` if configured, else the first by name."""
  return "eval" if "eval" in specs else sorted(specs)[0]


def build_evaluators(config: ml_collections.ConfigDict, context: Context) -> list[Evaluator]:
  """The configured evaluators, the main one first."""
  specs = eval_specs(config)
  first = main_name(specs)
  out = []
  for name in [first, *sorted(n for n in specs if n != first)]:
    options = dict(specs[name])
    kind, split = options.pop("type"), options.pop("split")
    batch_size, every = options.pop("batch_size"), options.pop("every")
    run = EVALUATORS.get(kind)(context, name=name, split=split, batch_size=batch_size,
                               options=options)
    out.append(Evaluator(name, kind, split, batch_size, every, run))
  return out


@EVALUATORS.register("metrics")
def metrics_evaluator(context: Context, *, name: str, split: str, batch_size: int,
                      options: Mapping[str, Any]) -> Callable[[Any], Metrics]:
  """The task's eval step, summed exactly over every example of ``split``."""
  if options:
    raise ValueError(f"config.evals.{name}: unknown options {sorted(options)} for type "
                     "'metrics'")
  task, strategy = context.task, context.strategy
  eval_fn = context.compile_eval(strategy, task, context.abstract_state)

  def run(state) -> Metrics:
    batches = data_lib.make_eval_iterator(
        context.data_config, split=split, global_batch_size=batch_size,
        process_index=jax.process_index(), process_count=jax.process_count())
    return context.evaluate(eval_fn, state, batches, strategy.put_batch,
                            finalize=task.finalize, gathers_outputs=task.gathers_outputs)
  return run


_DECODE_OPTIONS = ("method", "num_beams", "length_penalty", "temperature", "top_k", "top_p",
                   "max_new_tokens", "num_examples", "prompt_length", "seed")


def _token_text(tokenizer: Any, ids: Any, special: set[int]) -> str:
  """Text of token ids up to the first EOS (special ids dropped)."""
  kept = [int(i) for i in ids if int(i) not in special]
  return tokenizer.decode(kept) if tokenizer is not None else " ".join(map(str, kept))


def _until(ids: Any, eos_id: int, pad_id: int) -> list[int]:
  out = []
  for i in ids:
    i = int(i)
    if i == eos_id:
      break
    if i != pad_id:
      out.append(i)
  return out


@EVALUATORS.register("decode")
def decode_evaluator(context: Context, *, name: str, split: str, batch_size: int,
                     options: Mapping[str, Any]) -> Callable[[Any], Metrics]:
  """Generation (:func:`attnjax.generate.generate`) scored against the split's targets.

  ``seq2seq``: the source (``inputs``) is encoded and the target generated. ``causal_lm``:
  the first ``prompt_length`` tokens of each row are the prompt and the row's next
  ``max_new_tokens`` targets the reference. Metrics: ``exact_match``, ``bleu`` (0-100,
  sacrebleu) and ``rouge_l`` (0-1), on the dataset's tokenizer's text, plus
  ``num_examples``.

  Options: ``method`` (greedy | beam | sample), ``num_beams``, ``length_penalty``,
  ``temperature``, ``top_k``, ``top_p``, ``seed``, ``max_new_tokens`` (default: the target
  length), ``num_examples`` (0 = the whole split), ``prompt_length`` (causal_lm).
  """
  unknown = sorted(set(options) - set(_DECODE_OPTIONS))
  if unknown:
    raise ValueError(f"config.evals.{name}: unknown options {unknown} for type 'decode'; "
                     f"known: {', '.join(_DECODE_OPTIONS)}")
  task, info = context.task, context.info
  if not task.decoder:
    raise ValueError(f"config.evals.{name}: type 'decode' generates text; task {task.name!r} "
                     "does not (use causal_lm or seq2seq)")
  if jax.process_count() > 1:
    raise ValueError(f"config.evals.{name}: type 'decode' runs in one process (got "
                     f"{jax.process_count()})")
  from attnjax.generate import generate  # pylint: disable=import-outside-toplevel
  from attnjax.train import metrics as metrics_lib  # pylint: disable=import-outside-toplevel
  options = dict(options)
  target_length = info.features["targets"].shape[-1]
  prompt_length = int(options.pop("prompt_length", 0))
  if task.name == "causal_lm" and not 0 < prompt_length < info.max_length:
    raise ValueError(f"config.evals.{name}.prompt_length={prompt_length} must be in "
                     f"(0, {info.max_length}) for causal_lm")
  max_new = int(options.pop("max_new_tokens", 0) or
                (target_length if task.name == "seq2seq" else info.max_length - prompt_length))
  num_examples = int(options.pop("num_examples", 0))
  seed = int(options.pop("seed", 0))
  tokenizer = data_lib.dataset_tokenizer(context.data_config)
  eos, pad = info.eos_id, info.pad_id
  special = {i for i in (info.pad_id, info.bos_id, info.eos_id) if i >= 0}

  def run(state) -> Metrics:
    params = context.params_for_host(state)
    batches = data_lib.make_eval_iterator(context.data_config, split=split,
                                          global_batch_size=batch_size)
    predictions, references = [], []
    for batch in batches:
      real = np.asarray(batch["weight"]) > 0
      if task.name == "seq2seq":
        sources = [_until(row, eos, pad) + ([eos] if eos >= 0 else [])
                   for row in np.asarray(batch["inputs"])[real]]
        refs = [_until(row, eos, pad) for row in np.asarray(batch["targets"])[real]]
      else:
        rows = np.asarray(batch["inputs"])[real]
        targets = np.asarray(batch["targets"])[real]
        sources = [_until(row[:prompt_length], -1, pad) for row in rows]
        refs = [_until(row[prompt_length - 1:prompt_length - 1 + max_new], eos, pad)
                for row in targets]
      keep = [i for i, s in enumerate(sources) if s]
      if not keep:
        continue
      out = generate(task.model, params, [sources[i] for i in keep], max_new_tokens=max_new,
                     eos_id=eos if eos >= 0 else None, rng=jax.random.PRNGKey(seed), **options)
      for row, i in zip(out.tokens, keep):
        predictions.append(_token_text(tokenizer, _until(row, eos, pad), special))
        references.append(_token_text(tokenizer, refs[i], special))
      if num_examples and len(predictions) >= num_examples:
        break
    if num_examples:
      predictions, references = predictions[:num_examples], references[:num_examples]
    if not predictions:
      raise ValueError(f"evaluator {name!r}: split {split!r} gave no example to decode")
    return {**metrics_lib.text_metrics(predictions, references),
            "num_examples": len(predictions)}
  return run
