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
