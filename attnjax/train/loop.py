"""``train_and_evaluate(config, workdir)``: the one training loop, in phases.

1. Validate (``_validate``, for every phase; nothing is written): config values
   (``config_checks``), data files, task (``attnjax.train.tasks``), fine-tuning options,
   strategy, shapes via ``jax.eval_shape``, and the workdir (``workdir.validate_workdir``:
   a saved run's model, task, labels, tokenizer and resume keys).
2. Lock the workdir (``workdir.WorkdirLock``, process 0), then per phase (the
   self-pretraining run, then the run itself): prepare the workdir (config.json,
   parameters.json, tokenizer) -> restore (any strategy; unreadable checkpoints moved
   aside) or initialise in place -> train with periodic logging, evaluation, checkpoints,
   a NaN guard and SIGTERM/Ctrl-C handling -> finish (final metrics, plots).

Checkpointer, metric writer and progress are closed on every exit by one ExitStack.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import time
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from jax.sharding import NamedSharding, PartitionSpec as P

from attnjax import data as data_lib
# The loop draws with attnjax.inspect; attnjax.inspect's library never imports attnjax.train.
from attnjax.inspect.figures import attention_figure_for_tensorboard
from attnjax.inspect.plots import plot_curves
from attnjax.train import finetune as finetune_lib
from attnjax.train import tasks as tasks_lib
from attnjax.train.checkpoints import Checkpointer
from attnjax.train import evaluators as evaluators_lib
from attnjax.train.flops import peak_flops_per_device
from attnjax.train.config_checks import check_config
from attnjax.train.optimizers import build_optimizer
from attnjax.train.parallel import Strategy, build_strategy
from attnjax.train.progress import Progress
from attnjax.train.state import TrainState
from attnjax.train.steps import make_train_step
from attnjax.train import workdir as workdir_lib
from attnjax.train.writers import MetricWriter

PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM, what schedulers expect of a preempted job


def parameter_count(params) -> int:
  """Total number of scalars in a parameter pytree (arrays or ShapeDtypeStructs)."""
  return int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(params)))


@dataclasses.dataclass(frozen=True)
class Setup:
  """Everything the loop builds from the config before touching any array.

  Attributes:
    task: the task (model, loss, eval step, final metrics).
    finetuning: the fine-tuning options (LoRA, freezing, layer-wise decay).
    init_state: pure ``init_state(rng) -> TrainState``.
    schedule: the learning-rate schedule.
  """

  task: tasks_lib.Task
  finetuning: finetune_lib.FineTuning
  init_state: Callable[[jax.Array], TrainState]
  schedule: Any


def create_setup(config: ml_collections.ConfigDict, info: data_lib.DatasetInfo) -> Setup:
  """Builds the task, the (possibly LoRA-wrapped) model state and the optimizer."""
  task = tasks_lib.build_task(config, info)
  model = task.model
  ft = finetune_lib.finetuning(config)
  tx, schedule = build_optimizer(config.optimizer, config.train.num_steps)
  tx = finetune_lib.wrap_optimizer(tx, ft, model.param_groups)
  apply_fn = finetune_lib.lora_apply(model.apply, ft.lora_scale) if ft.lora else model.apply

  def init_state(rng: jax.Array) -> TrainState:
    params_rng, state_rng = jax.random.split(rng)
    # The task supplies the batch to initialise from (its dataset's features).
    params = model.init({"params": params_rng}, task.init_batch)["params"]
    if ft.lora:
      params = {"model": params,
                "lora": finetune_lib.init_lora(jax.random.fold_in(params_rng, 1), params, ft,
                                               model.param_groups)}
    return TrainState.create(apply_fn=apply_fn, params=params, tx=tx, rng=state_rng)

  return Setup(task, ft, init_state, schedule)


def build_step_fn(config: ml_collections.ConfigDict, setup: Setup, params: Any
                  ) -> tuple[Callable, Any]:
  """The pure train step of ``setup`` (the task's loss, fine-tuning's frozen leaves) and
  its trainable mask (None when everything trains); ``params`` may be shapes."""
  trainable = finetune_lib.trainable_mask(params, setup.finetuning,
                                          setup.task.model.param_groups)
  step_fn = make_train_step(setup.schedule, loss_fn=setup.task.loss_fn,
                            microbatches=config.train.microbatches,
                            nan_policy=config.train.nan_policy, trainable=trainable)
  return step_fn, trainable


def create_model_and_state(config: ml_collections.ConfigDict, info: data_lib.DatasetInfo):
  """Builds the model, optimizer and the function that initialises the TrainState.

  Returns:
    ``(model, init_state, schedule)`` where ``init_state(rng) -> TrainState`` is pure, so
    ``jax.eval_shape(init_state, rng)`` gives every shape before anything is allocated.
  """
  setup = create_setup(config, info)
  return setup.task.model, setup.init_state, setup.schedule


def evaluate(eval_fn, state: TrainState, batches: Iterable[dict],
             put_batch=lambda b: b, *, finalize: Callable,
             gathers_outputs: bool = False) -> dict[str, float]:
  """Exact metrics over every batch of a split.

  Args:
    eval_fn: ``eval_fn(state, batch)`` -> weighted sums (or ``(sums, per-example outputs)``
      with ``gathers_outputs``).
    state: the train state.
    batches: eval batches with a ``weight`` (0 marks padding rows).
    put_batch: places a batch for the strategy.
    finalize: ``finalize(sums, outputs) -> metrics``, the task's (``Task.finalize``).
    gathers_outputs: ``eval_fn`` also returns per-example outputs; padding rows (weight 0)
      are dropped before ``finalize`` sees them.
  """
  totals = None
  gathered = []
  for batch in batches:
    out = eval_fn(state, put_batch(batch))
    if gathers_outputs:
      out, per_example = out
      gathered.append(jax.device_get(per_example))
    totals = out if totals is None else jax.tree_util.tree_map(jnp.add, totals, out)
  if totals is None:
    raise ValueError("the evaluation split yielded no batches")
  totals = jax.device_get(totals)
  outputs = None
  if gathers_outputs:
    outputs = {k: np.concatenate([np.asarray(g[k]) for g in gathered]) for k in gathered[0]}
    real = outputs.pop("weight") > 0
    outputs = {k: v[real] for k, v in outputs.items()}
  return finalize(totals, outputs)


def compile_eval(strategy: Strategy, task: tasks_lib.Task, abstract_state) -> Callable:
  """The task's eval step compiled for the strategy; per-example outputs come back whole.

  Sums are reduced over devices; per-example outputs (``task.gathers_outputs``) are
  gathered in batch order (under ``pmap`` from the device axis, across hosts with
  ``process_allgather``).
  """
  if not task.gathers_outputs:
    return strategy.compile_eval_step(task.eval_fn, abstract_state)
  if strategy.name == "pmap":
    def per_device(s, b):
      sums, outputs = task.eval_fn(s, b)
      return jax.lax.psum(sums, "devices"), outputs
    pmapped = jax.pmap(per_device, axis_name="devices")

    def run(state, batch):
      sums, outputs = pmapped(state, batch)
      outputs = jax.tree_util.tree_map(
          lambda x: np.asarray(x).reshape((-1,) + x.shape[2:]), outputs)
      if jax.process_count() > 1:
        from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
        outputs = jax.tree_util.tree_map(
            lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True)), outputs)
      return jax.tree_util.tree_map(lambda x: x[0], sums), outputs
    return run
  return jax.jit(task.eval_fn, in_shardings=(strategy.state_shardings(abstract_state),
                                             strategy.batch_sharding()),
                 out_shardings=NamedSharding(strategy.mesh, P()))


def initialise_from_pretrained(config: ml_collections.ConfigDict, state, strategy: Strategy,
                               is_main: bool):
  """Replaces the fresh encoder by the one ``config.init`` names (no-op when unset)."""
  initial = finetune_lib.initial_encoder(config)
  if initial is None:
    return state
  encoder, source = initial
  host = strategy.to_checkpoint_state(state)
  params = finetune_lib.overlay_encoder(host.params, encoder, source)
  if is_main:
    print(f"initialised the encoder from {source}", flush=True)
  return strategy.to_device_state(host.replace(params=params))


SELF_PRETRAIN_DIR = "self_pretrain"


def self_pretrain_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The masked-LM run that self-pretraining does before ``config`` (Amos et al. 2023).

  Same data (the train split's inputs, labels unused), model, strategy and seed; the task
  becomes ``masked_lm`` with ``config.self_pretrain``'s mask rate, steps and learning rate
  (0 = the run's own), a warmup of at most a tenth of the steps, and the latest checkpoint
  kept (what the second phase reads).
  """
  sp = config.self_pretrain
  steps = int(sp.num_steps)
  pre = ml_collections.ConfigDict(config.to_dict())
  pre.name = f"{config.get('name', 'run')}_self_pretrain"
  pre.task = ml_collections.ConfigDict({"name": "masked_lm", "mask_rate": float(sp.mask_rate),
                                        "eval_mask_seed": 0})
  pre.init.hf_path = ""
  pre.init.workdir = ""
  if "finetune" in pre:
    del pre["finetune"]
  pre.train.num_steps = steps
  pre.train.log_every = min(int(config.train.log_every), steps)
  pre.train.eval_every = pre.train.checkpoint_every = max(1, steps // 2)
  pre.train.keep_best_by = ""
  pre.optimizer.learning_rate = float(sp.learning_rate or config.optimizer.learning_rate)
  pre.optimizer.warmup_steps = min(int(config.optimizer.warmup_steps), max(1, steps // 10))
  return pre


def _with_init_workdir(config: ml_collections.ConfigDict, path: str
                       ) -> ml_collections.ConfigDict:
  out = ml_collections.ConfigDict(config.to_dict())
  out.init.workdir = path
  return out


@contextlib.contextmanager
def _preemption_flag():
  """Yields a one-element list set to the signal's name when SIGTERM or SIGINT (Ctrl-C)
  arrives (main thread only): the loop then saves at the current step and returns.

  A second Ctrl-C raises KeyboardInterrupt at once (the clean-up still runs).
  """
  flag: list = [None]

  def on_signal(signum, _frame):
    if signum == signal.SIGINT and flag[0] is not None:
      raise KeyboardInterrupt
    flag[0] = signal.Signals(signum).name

  previous = {}
  for signum in (signal.SIGTERM, signal.SIGINT):
    try:
      previous[signum] = signal.signal(signum, on_signal)
    except ValueError:  # not the main thread: no handler, the flag stays unset
      pass
  try:
    yield flag
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)


class _NonFinite(FloatingPointError):
  pass


@dataclasses.dataclass(frozen=True)
class _Plan:
  """One validated run: everything built from the config before the workdir is touched.

  Attributes:
    config: the run's config (for the second self-pretraining phase, with
      ``init.workdir`` naming the first phase's directory).
    workdir: the run directory.
    data_config: ``config.data`` resolved to a registered dataset.
    info: the dataset's info.
    setup: task, fine-tuning options, ``init_state`` and schedule.
    strategy: the parallel strategy.
    rng: the seed's key.
    abstract_state: the TrainState's shapes (``jax.eval_shape``).
    counts: total and trainable parameter counts (``parameters.json``).
    step_fn: the pure train step.
    flops_per_step: training FLOPs of one step (for MFU).
  """

  config: ml_collections.ConfigDict
  workdir: str
  data_config: Any
  info: data_lib.DatasetInfo
  setup: Setup
  strategy: Strategy
  rng: jax.Array
  abstract_state: Any
  counts: dict
  step_fn: Callable
  flops_per_step: float

  @property
  def num_steps(self) -> int:
    return int(self.config.train.num_steps)


def _phases(config: ml_collections.ConfigDict, workdir: str
            ) -> list[tuple[ml_collections.ConfigDict, str]]:
  """``[(config, workdir)]`` of each phase: the masked-LM self-pretraining run first when
  ``config.self_pretrain.num_steps > 0``, then the run itself starting from its encoder
  (as fine-tuning from any pretraining run does)."""
  if tasks_lib.self_pretrain_steps(config) > 0 and config.task.name != "masked_lm":
    init = config.get("init") or {}
    for key in ("hf_path", "workdir"):
      if init.get(key):
        raise ValueError(f"config.self_pretrain.num_steps={config.self_pretrain.num_steps} "
                         f"pretrains from scratch, but config.init.{key}={init.get(key)!r} "
                         "names initial weights; unset one of them")
    pretrain_dir = os.path.join(workdir, SELF_PRETRAIN_DIR)
    return [(self_pretrain_config(config), pretrain_dir),
            (_with_init_workdir(config, pretrain_dir), workdir)]
  return [(config, workdir)]


def _validate(config: ml_collections.ConfigDict, workdir: str) -> _Plan:
  """Checks the config and builds the task, model, strategy and shapes; writes nothing.

  Raises:
    ValueError: a bad config value, dataset or workdir.
  """
  check_config(config)
  workdir_lib.check_directory(str(data_lib.resolve_data_dir(config.data)), "config.data.data_dir")
  # Text datasets defined by config options (tokenizer, files, ...) are registered under a
  # concrete name here, and their files checked (bad rows fail before anything is written).
  data_config = data_lib.resolve_data_config(config.data)
  info = data_lib.get_dataset_info(data_config)
  if info.towers != 1 and config.train.get("attention_images", False):
    raise ValueError(f"config.train.attention_images draws one sequence's attention; dataset "
                     f"{info.name!r} has towers={info.towers}: set it to False")
  setup = create_setup(config, info)
  task = setup.task
  strategy: Strategy = build_strategy(config.parallel, global_batch_size=config.train.batch_size)
  rng = jax.random.PRNGKey(config.seed)
  abstract_state = jax.eval_shape(setup.init_state, rng)
  step_fn, trainable = build_step_fn(config, setup, abstract_state.params)
  counts = finetune_lib.parameter_counts(abstract_state.params, trainable)
  flops_per_step = task.flops_per_example * config.train.batch_size
  evaluators_lib.eval_specs(config)  # a bad config.evals fails before anything is written
  workdir_lib.validate_workdir(workdir, config, counts["total"])
  return _Plan(config, workdir, data_config, info, setup, strategy, rng, abstract_state,
               counts, step_fn, flops_per_step)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains and evaluates the model of ``config``, resuming from ``workdir`` if it has a run.

  Phases: validate (every phase's config, data and shapes; nothing written) -> for each
  phase (the self-pretraining run, then this run): prepare the workdir -> restore or
  initialise -> train -> finish (final metrics, plots). Checkpointer, metric writer and
  progress are closed on every exit.

  Launching again on a finished workdir trains no further and returns the final metrics
  of its last checkpoint. SIGTERM or Ctrl-C (SIGINT) saves a checkpoint at the current
  step and returns ``{'preempted': True, 'step': ..., 'signal': 'SIGTERM' | 'SIGINT'}``;
  a second Ctrl-C stops at once (KeyboardInterrupt, files closed).

  Args:
    config: the experiment (see ``configs/default.py`` for every key).
    workdir: run directory (config.json, metrics.jsonl, checkpoints/, tensorboard/, plots/).

  Returns:
    The final evaluation metrics: ``{'loss', 'accuracy', 'num_examples', 'step'}``.

  Raises:
    ValueError: a bad config or workdir (nothing is written).
    FloatingPointError: a non-finite loss under ``nan_policy='stop'`` (names the step and
      the last good checkpoint).
  """
  check_config(config)  # the user's own keys named, before the phases derive theirs
  is_main = jax.process_index() == 0
  workdir_lib.check_workdir(workdir)
  if is_main:  # a busy workdir is refused at once (other processes of a run never lock)
    workdir_lib.WorkdirLock.check_free(workdir)
  phases = _phases(config, workdir)  # refuses self-pretraining with initial weights
  _check_initial_weights(config)
  plans = [_validate(c, w) for c, w in phases]
  result: dict = {}
  # Taken once, by process 0 (it alone writes the workdir's files); the self-pretraining
  # phase's directory lies inside the workdir.
  with workdir_lib.WorkdirLock(workdir, enabled=is_main):
    for plan in plans:
      result = _run(plan)
      if result.get("preempted"):
        break
  return result


def _check_initial_weights(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError if ``config.init.workdir`` has no checkpoint to start from (read
  when the state is initialised, after the workdir is written)."""
  path = (config.get("init") or {}).get("workdir")
  if path and not workdir_lib.has_checkpoint(path):
    raise ValueError(f"config.init.workdir={path!r}: no checkpoint in "
                     f"{os.path.join(path, workdir_lib.CHECKPOINTS_DIR)} (not a trained attnjax "
                     "run)")


def _prepare(plan: _Plan, is_main: bool) -> None:
  """Creates the workdir and writes config.json, parameters.json and the tokenizer."""
  workdir_lib.prepare_workdir(plan.workdir, plan.config, write=is_main)
  if is_main:
    _write_run_files(plan.workdir, plan.data_config, plan.counts)


def _restore_or_init(plan: _Plan, checkpointer: Checkpointer, train_iter, is_main: bool):
  """The newest readable checkpoint's state (iterator moved to its position), or a fresh
  state (with ``config.init``'s encoder), placed directly by the strategy."""
  strategy, config = plan.strategy, plan.config
  if checkpointer.latest_step() is not None:
    state, data_state, _ = checkpointer.restore(
        strategy.abstract_with_shardings(plan.abstract_state))
    data_lib.restore_train_position(train_iter, data_state, step=int(state.step),
                                    global_batch_size=config.train.batch_size,
                                    process_count=jax.process_count())
    state = strategy.to_device_state(state)
    if is_main:
      print(f"resuming from {checkpointer.directory} at step "
            f"{int(strategy.to_checkpoint_state(state).step)}", flush=True)
    return state
  state = strategy.init_state(plan.setup.init_state, plan.abstract_state, plan.rng)
  return initialise_from_pretrained(config, state, strategy, is_main)


def _run(plan: _Plan) -> dict:
  """One phase: prepare the workdir, restore or initialise, train, finish."""
  config, workdir, strategy, task = plan.config, plan.workdir, plan.strategy, plan.setup.task
  is_main = jax.process_index() == 0
  pcount = jax.process_count()
  _prepare(plan, is_main)
  evaluators = evaluators_lib.build_evaluators(config, evaluators_lib.Context(
      task=task, strategy=strategy, abstract_state=plan.abstract_state,
      data_config=plan.data_config, info=plan.info, compile_eval=compile_eval,
      evaluate=evaluate, params_for_host=lambda state: _host_params(plan, state)))
  run_eval = evaluators[0].run  # the main evaluator: final metrics, best checkpoint

  with contextlib.ExitStack() as cleanup:  # the one clean-up path, whatever the exit
    checkpointer = Checkpointer(workdir, keep=config.train.keep_checkpoints,
                                async_save=config.train.async_checkpoints,
                                keep_best_by=config.train.keep_best_by,
                                best_mode=config.train.best_mode)
    cleanup.callback(checkpointer.close)
    writer = MetricWriter(workdir, enabled=is_main)
    cleanup.callback(writer.close)
    train_iter = data_lib.make_train_iterator(
        plan.data_config, global_batch_size=config.train.batch_size, seed=config.seed,
        process_index=jax.process_index(), process_count=pcount)
    state = _restore_or_init(plan, checkpointer, train_iter, is_main)
    start_step = int(jax.device_get(strategy.to_checkpoint_state(state).step))
    writer.truncate_after(start_step)
    if start_step >= plan.num_steps:
      final = run_eval(state)
      final["step"] = start_step
      _report(f"run in {workdir} is already finished at step {start_step}", final, is_main,
              task.summary)
      return final
    progress = Progress(plan.num_steps, start_step, config.train.batch_size,
                        every=config.train.log_every, enabled=is_main)
    cleanup.callback(progress.close)
    final = _train(plan, state, start_step, train_iter, checkpointer, writer, progress,
                   evaluators, is_main)
    if final.get("preempted"):
      return final
  # Finish, once everything is closed (the async saves on disk, metrics.jsonl complete).
  final["step"] = plan.num_steps
  if is_main:
    plot_curves(workdir)
  _report(f"finished {workdir}", final, is_main, task.summary)
  return final


def _train(plan: _Plan, state, start_step: int, train_iter, checkpointer: Checkpointer,
           writer: MetricWriter, progress: Progress,
           evaluators: list[evaluators_lib.Evaluator], is_main: bool) -> dict:
  """Steps ``start_step + 1 .. num_steps`` with logging, evaluation, checkpoints, the NaN
  guard and preemption; returns the main evaluator's last metrics, or ``{'preempted': True,
  'step'}``."""
  config, workdir, strategy, task = plan.config, plan.workdir, plan.strategy, plan.setup.task
  num_steps = plan.num_steps
  info = plan.info
  train_step = strategy.compile_train_step(plan.step_fn, plan.abstract_state)
  peak, peak_source = peak_flops_per_device(config.model.dtype,
                                            config.train.peak_flops_per_device)
  counts = plan.counts
  num_params = parameter_count(plan.abstract_state.params)
  if is_main:
    trained = ("" if counts["trainable"] == num_params else
               f" ({counts['trainable']:,} trainable, {100 * counts['trainable_fraction']:.2f}%)")
    print(f"training {num_params:,} parameters{trained} on {info.name} for steps "
          f"{start_step + 1}..{num_steps} with strategy '{strategy.name}' on "
          f"{strategy.num_devices} device(s); {plan.flops_per_step / 1e9:.2f} GFLOP/step; "
          f"peak {peak / 1e12:.2f} TFLOP/s/device ({peak_source}); workdir {workdir}",
          flush=True)
  tokens_per_example = task.tokens_per_example
  window: list[tuple[int, dict]] = []
  window_start = time.perf_counter()
  last_saved = checkpointer.latest_step()
  final: dict = {}

  def check_window() -> None:
    """Raises if a step of the window had a non-finite loss (policy 'stop')."""
    if config.train.nan_policy != "stop" or not window:
      return
    losses = jax.device_get([m["loss"] for _, m in window])
    for (s, _), loss in zip(window, losses):
      if not np.isfinite(loss):
        raise _NonFinite(
            f"non-finite loss ({loss}) at step {s}; the last good checkpoint is step "
            f"{last_saved} in {checkpointer.directory} (relaunching resumes from it). "
            "Lower the learning rate, or set config.train.nan_policy='skip' to skip such "
            "updates.")

  with _preemption_flag() as preempted:
    for step in range(start_step + 1, num_steps + 1):
      batch = strategy.put_batch(next(train_iter))
      state, metrics = train_step(state, batch)
      window.append((step, metrics))
      shown = None
      if step % config.train.log_every == 0 or step == num_steps:
        check_window()
        shown = _summarise(jax.device_get([m for _, m in window]), task.train_metrics)
        elapsed = time.perf_counter() - window_start
        steps_per_sec = len(window) / elapsed
        shown.update(
            steps_per_sec=steps_per_sec,
            step_time=1.0 / steps_per_sec,
            examples_per_sec=steps_per_sec * config.train.batch_size,
            tokens_per_sec=steps_per_sec * config.train.batch_size * tokens_per_example,
            mfu=plan.flops_per_step * steps_per_sec / (peak * strategy.num_devices))
        writer.write(step, "train", shown)
        window, window_start = [], time.perf_counter()
      progress.update(step, shown)
      for evaluator in evaluators:
        if step % evaluator.every and step != num_steps:
          continue
        metrics_now = evaluator.run(state)
        writer.write(step, evaluator.name, metrics_now)
        if evaluator is evaluators[0]:
          final = metrics_now
          if config.train.get("attention_images", False):
            _log_attention_image(writer, step, task, plan.setup, state, strategy,
                                 plan.data_config, info)
          checkpointer.save_if_best(step, strategy.to_checkpoint_state(state), final)
        writer.flush()
      stop_now = preempted[0]  # None, or 'SIGTERM' / 'SIGINT'
      if step % config.train.checkpoint_every == 0 or step == num_steps or stop_now:
        check_window()
        checkpointer.save(step, strategy.to_checkpoint_state(state), train_iter.get_state(),
                          force=True)
        last_saved = step
      if stop_now:
        checkpointer.wait()
        if is_main:
          print(f"{stop_now}: saved a checkpoint at step {step} in {checkpointer.directory}; "
                "relaunch the same command to resume", flush=True)
        return {"preempted": True, "step": step, "signal": stop_now}
  return final


def _host_params(plan: _Plan, state) -> Any:
  """The full parameters on this host (LoRA adapters merged), for host-side evaluators."""
  params = jax.device_get(plan.strategy.to_checkpoint_state(state).params)
  if plan.setup.finetuning.lora:
    params = finetune_lib.merge_lora(params, plan.setup.finetuning.lora_scale)
  return params


def _log_attention_image(writer: MetricWriter, step: int, task, setup, state,
                         strategy: Strategy, data_config, info) -> None:
  """Writes one eval example's attention maps (per layer and rollout) to TensorBoard.

  Single-process runs only: the parameters are fetched to this host (a multi-host mesh
  holds shards this process cannot address).
  """
  if not writer.enabled or jax.process_count() > 1:
    return
  params = jax.device_get(strategy.to_checkpoint_state(state).params)
  if setup.finetuning.lora:
    params = finetune_lib.merge_lora(params, setup.finetuning.lora_scale)
  batch = next(iter(data_lib.make_eval_iterator(data_config, split=data_config.get("eval_split"),
                                                global_batch_size=1)))
  grid = (8, 8) if info.name == "digits" else None
  image = attention_figure_for_tensorboard(task.model, params, batch["inputs"],
                                           pad_id=info.pad_id, grid=grid)
  writer.write_image(step, "eval/attention", image)


def _summarise(window: list[dict], task_metrics: tuple[str, ...]) -> dict[str, float]:
  """Means of loss, the task's metrics and skipped over the logging window; the last value
  of the rest."""
  last = {k: float(v) for k, v in window[-1].items()}
  for key in ("loss", *task_metrics, "skipped"):
    last[key] = float(np.mean([m[key] for m in window]))
  return last


def _write_run_files(workdir: str, data_config, counts: dict) -> None:
  """``parameters.json`` (total and trainable counts) and the dataset's tokenizer, if any.

  The tokenizer travels with the run so that fine-tuning from it (``config.init.workdir``)
  and export use the vocabulary the embeddings were trained with.
  """
  workdir_lib.write_json(os.path.join(workdir, workdir_lib.PARAMETERS_FILE), counts)
  tokenizer = data_lib.dataset_tokenizer(data_config)
  if tokenizer is not None:
    tmp = os.path.join(workdir, "tokenizer.json.tmp")
    tokenizer.save(tmp)
    os.replace(tmp, os.path.join(workdir, "tokenizer.json"))


def _report(prefix: str, metrics: dict, is_main: bool,
            keys: tuple[str, ...] = ("accuracy", "loss")) -> None:
  if is_main:
    shown = ", ".join(f"eval {k} {metrics[k]:.4f}" for k in keys if k in metrics)
    print(f"{prefix}: {shown} ({metrics['num_examples']} examples, step "
          f"{metrics['step']})", flush=True)
  logging.info("%s: %s", prefix, metrics)
