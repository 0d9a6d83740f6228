"""``train_and_evaluate(config, workdir)``: the one training loop.

Sections: task and model from the config -> shapes via ``jax.eval_shape`` -> workdir
check -> restore or initialise -> train (jit, donated state) with periodic logging,
evaluation and checkpoints -> final evaluation, plots.
"""

from __future__ import annotations

import time
from typing import Iterable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from attnjax import data as data_lib
from attnjax.models import build_classifier
from attnjax.train.checkpoints import Checkpointer
from attnjax.train.optimizers import build_optimizer
from attnjax.train.progress import Progress
from attnjax.train.state import TrainState
from attnjax.train.steps import eval_step, make_train_step
from attnjax.train.workdir import prepare_workdir
from attnjax.train.writers import MetricWriter


def parameter_count(params) -> int:
  """Total number of scalars in a parameter pytree (arrays or ShapeDtypeStructs)."""
  return int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(params)))


def create_model_and_state(config: ml_collections.ConfigDict, info: data_lib.DatasetInfo):
  """Builds the model, optimizer and the function that initialises the TrainState.

  Returns:
    ``(model, init_state, schedule)`` where ``init_state(rng) -> TrainState`` is pure, so
    ``jax.eval_shape(init_state, rng)`` gives every shape before anything is allocated.
  """
  model = build_classifier(config.model, vocab_size=info.vocab_size,
                           max_length=info.max_length, num_classes=info.num_classes,
                           pad_id=info.pad_id)
  tx, schedule = build_optimizer(config.optimizer, config.train.num_steps)

  def init_state(rng: jax.Array) -> TrainState:
    params_rng, state_rng = jax.random.split(rng)
    dummy = jnp.full((1, info.max_length), info.pad_id + 1, jnp.int32)
    params = model.init({"params": params_rng}, dummy)["params"]
    return TrainState.create(apply_fn=model.apply, params=params, tx=tx, rng=state_rng)

  return model, init_state, schedule


def evaluate(eval_fn, state: TrainState, batches: Iterable[dict]) -> dict[str, float]:
  """Exact weighted loss and accuracy over every batch of a split."""
  totals = None
  for batch in batches:
    out = eval_fn(state, batch)
    totals = out if totals is None else jax.tree_util.tree_map(jnp.add, totals, out)
  if totals is None:
    raise ValueError("the evaluation split yielded no batches")
  totals = jax.device_get(totals)
  n = float(totals["weight_sum"])
  return {"loss": float(totals["loss_sum"]) / n, "accuracy": float(totals["correct_sum"]) / n,
          "num_examples": int(n)}


def _check_config(config: ml_collections.ConfigDict) -> None:
  t = config.train
  for key in ("num_steps", "batch_size", "log_every", "eval_every", "checkpoint_every",
              "keep_checkpoints"):
    if int(t[key]) <= 0:
      raise ValueError(f"config.train.{key} must be positive, got {t[key]}")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains and evaluates the model of ``config``, resuming from ``workdir`` if it has a run.

  Launching again on a finished workdir trains no further and returns the final metrics
  of its last checkpoint.

  Args:
    config: the experiment (see ``configs/default.py`` for every key).
    workdir: run directory (config.json, metrics.jsonl, checkpoints/, tensorboard/, plots/).

  Returns:
    The final evaluation metrics: ``{'loss', 'accuracy', 'num_examples', 'step'}``.
  """
  _check_config(config)
  is_main = jax.process_index() == 0
  num_steps = int(config.train.num_steps)

  # --- Task, model and shapes, all before the workdir is touched. ---
  info = data_lib.get_dataset_info(config.data)
  model, init_state, schedule = create_model_and_state(config, info)
  rng = jax.random.PRNGKey(config.seed)
  abstract_state = jax.eval_shape(init_state, rng)
  num_params = parameter_count(abstract_state.params)
  logging.info("model: %s parameters; task %s: vocab %d, length %d, %d classes", f"{num_params:,}",
               info.name, info.vocab_size, info.max_length, info.num_classes)

  prepare_workdir(workdir, config, write=is_main)
  checkpointer = Checkpointer(workdir, keep=config.train.keep_checkpoints)
  writer = MetricWriter(workdir, enabled=is_main)
  eval_fn = jax.jit(eval_step)

  def eval_batches():
    return data_lib.make_eval_iterator(
        config.data, split=config.data.eval_split, global_batch_size=config.train.eval_batch_size,
        process_index=jax.process_index(), process_count=jax.process_count())

  train_iter = data_lib.make_train_iterator(
      config.data, global_batch_size=config.train.batch_size, seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count())

  # --- Restore or initialise. ---
  if checkpointer.latest_step() is not None:
    state, data_state = checkpointer.restore(abstract_state)
    if data_state is not None:
      train_iter.set_state(data_state)
    if is_main:
      print(f"resuming from {checkpointer.directory} at step {int(state.step)}", flush=True)
  else:
    state = jax.jit(init_state)(rng)
  start_step = int(state.step)
  writer.truncate_after(start_step)

  if start_step >= num_steps:
    final = evaluate(eval_fn, state, eval_batches())
    final["step"] = start_step
    _report(f"run in {workdir} is already finished at step {start_step}", final, is_main)
    checkpointer.close()
    writer.close()
    return final

  # --- Train. ---
  train_step = jax.jit(make_train_step(schedule, label_smoothing=config.train.label_smoothing),
                       donate_argnums=0)
  progress = Progress(num_steps, start_step, config.train.batch_size,
                      every=config.train.log_every, enabled=is_main)
  if is_main:
    print(f"training {num_params:,} parameters on {info.name} for steps "
          f"{start_step + 1}..{num_steps}; workdir {workdir}", flush=True)
  window: list[dict] = []
  window_start = time.perf_counter()
  final: dict = {}
  for step in range(start_step + 1, num_steps + 1):
    state, metrics = train_step(state, next(train_iter))
    window.append(metrics)
    shown = None
    if step % config.train.log_every == 0 or step == num_steps:
      shown = _summarise(jax.device_get(window))
      elapsed = time.perf_counter() - window_start
      shown["steps_per_sec"] = len(window) / elapsed
      shown["examples_per_sec"] = len(window) * config.train.batch_size / elapsed
      writer.write(step, "train", shown)
      window, window_start = [], time.perf_counter()
    progress.update(step, shown)
    if step % config.train.eval_every == 0 or step == num_steps:
      final = evaluate(eval_fn, state, eval_batches())
      writer.write(step, "eval", final)
      writer.flush()
    if step % config.train.checkpoint_every == 0 or step == num_steps:
      checkpointer.save(step, state, train_iter.get_state(), force=step == num_steps)
  progress.close()
  checkpointer.close()
  writer.close()
  final["step"] = num_steps
  if is_main:
    from attnjax.inspect.plots import plot_curves  # pylint: disable=import-outside-toplevel
    plot_curves(workdir)
  _report(f"finished {workdir}", final, is_main)
  return final


def _summarise(window: list[dict]) -> dict[str, float]:
  """Means of loss and accuracy over the logging window; the last value of the rest."""
  last = {k: float(v) for k, v in window[-1].items()}
  for key in ("loss", "accuracy"):
    last[key] = float(np.mean([m[key] for m in window]))
  return last


def _report(prefix: str, metrics: dict, is_main: bool) -> None:
  if is_main:
    print(f"{prefix}: eval accuracy {metrics['accuracy']:.4f}, eval loss "
          f"{metrics['loss']:.4f} ({metrics['num_examples']} examples, step "
          f"{metrics['step']})", flush=True)
