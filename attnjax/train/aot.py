"""The train step of a config from abstract shapes: for export and compiles without data.

Builds exactly what ``loop.train_and_evaluate`` trains (``loop.create_setup``,
``loop.build_step_fn``, ``parallel.build_strategy`` and the strategy's compiled step)
from a config and a :class:`~attnjax.data.DatasetInfo`, with every array a
``jax.ShapeDtypeStruct``: ``jax.export.export(step, platforms=['cuda'])(state, batch)``
lowers it for another platform, ``step.trace(state, batch).lower(...)`` compiles it for a
TPU topology, and nothing is allocated, downloaded or prepared.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import ml_collections

from attnjax.data import DatasetInfo
from attnjax.train.loop import build_step_fn, create_setup
from attnjax.train.parallel import Strategy, build_strategy


@dataclasses.dataclass(frozen=True)
class AbstractStep:
  """A compiled-for-the-strategy train step and abstract arguments to trace it with.

  Attributes:
    step: ``step(state, batch) -> (state, metrics)`` as the strategy compiles it (a
      ``jax.jit`` object for 'jit' and 'mesh').
    state: the TrainState as ``ShapeDtypeStruct`` leaves (with shardings under 'mesh').
    batch: the dataset's features (``info.dummy_batch``) as ``ShapeDtypeStruct`` (global
      batch).
    strategy: the strategy (mesh, placement).
    num_params: parameter count.
    init_state: the loop's pure ``init_state(rng) -> TrainState`` (to run the step too:
      ``strategy.init_state(init_state, jax.eval_shape(init_state, rng), rng)``).
    flops_per_step: the task's matmul FLOPs of one step (forward + backward), for MFU.
  """

  step: Callable[..., Any]
  state: Any
  batch: dict[str, jax.ShapeDtypeStruct]
  strategy: Strategy
  num_params: int
  init_state: Callable[[jax.Array], Any]
  flops_per_step: float


def abstract_train_step(config: ml_collections.ConfigDict, info: DatasetInfo, *,
                        devices: Any = None) -> AbstractStep:
  """The train step of ``config`` on data described by ``info``, from shapes alone.

  Args:
    config: an experiment config (``configs/*.py``); ``config.parallel`` picks the strategy.
    info: the dataset description (vocabulary, length, classes), real or made up.
    devices: devices for the 'mesh' strategy (e.g. a TPU topology's); default the local ones.

  Returns:
    An :class:`AbstractStep`.
  """
  setup = create_setup(config, info)
  strategy = build_strategy(config.parallel, global_batch_size=config.train.batch_size,
                            devices=devices)
  abstract_state = jax.eval_shape(setup.init_state, jax.random.PRNGKey(0))
  step_fn, _ = build_step_fn(config, setup, abstract_state.params)
  step = strategy.compile_train_step(step_fn, abstract_state)
  shardings = strategy.state_shardings(abstract_state)
  state = jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_state,
      shardings)
  b = config.train.batch_size
  batch_sharding = strategy.batch_sharding()
  # The dataset's own features (what its pipeline delivers), with the batch axis.
  batch = {k: jax.ShapeDtypeStruct((b, *f.shape), f.dtype, sharding=batch_sharding)
           for k, f in info.features.items()}
  num_params = sum(x.size for x in jax.tree_util.tree_leaves(abstract_state.params))
  return AbstractStep(step, state, batch, strategy, int(num_params), setup.init_state,
                      setup.task.flops_per_example * b)
