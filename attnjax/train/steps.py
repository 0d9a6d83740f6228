"""The one pure train step ``(state, batch) -> (state, metrics)``.

The step is task-agnostic: a task (``attnjax.train.tasks``) supplies the per-batch loss
``loss_fn(apply_fn, params, batch, rng) -> (loss, {metric: value})``.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from attnjax.train.state import TrainState

Batch = dict[str, jax.Array]
NAN_POLICIES = ("stop", "skip", "off")
#: ``loss_fn(apply_fn, params, batch, rng) -> (mean loss, {metric: mean})``, train mode.
LossFn = Callable[[Callable, Any, Batch, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]


def _split_microbatches(batch: Batch, k: int) -> Batch:
  """``[B, ...]`` -> ``[k, B/k, ...]`` taking every k-th row, so each microbatch is spread
  over all the devices that hold the batch (rows are sharded in contiguous blocks)."""
  def split(x):
    b = x.shape[0]
    if b % k:
      raise ValueError(f"batch of {b} examples is not divisible by "
                       f"config.train.microbatches={k}")
    return jnp.swapaxes(x.reshape((b // k, k) + x.shape[1:]), 0, 1)
  return jax.tree_util.tree_map(split, batch)


def make_train_step(schedule: optax.Schedule, *, loss_fn: LossFn, microbatches: int = 1,
                    nan_policy: str = "stop", trainable: Any = None
                    ) -> Callable[..., tuple[TrainState, dict]]:
  """Returns the pure train step ``train_step(state, batch, axis_name=None)``.

  * The dropout key is ``fold_in(state.rng, state.step)`` (and the device index under
    ``pmap``, the microbatch index with accumulation), so a resumed run draws the same
    randomness as an uninterrupted one.
  * ``microbatches > 1`` accumulates gradients over that many equal slices of the batch
    (a ``lax.scan``), giving the same update as the whole batch at a fraction of the
    activation memory.
  * ``axis_name`` (under ``pmap``) averages gradients and metrics across devices.
  * ``nan_policy='skip'`` leaves parameters and optimizer state unchanged on a step whose
    loss, gradients or updated parameters are not finite (the step counter still advances, ``skipped`` = 1).

  * ``loss_fn`` is the task's loss (:data:`LossFn`, ``Task.loss_fn``); its metrics join the
    step's metrics. The step itself knows no task.
  * ``trainable``: a pytree of bools shaped like the params; False leaves are frozen
    (``stop_gradient``: zero gradients, and no weight-gradient matmuls are traced for them).
    The optimizer must leave them unchanged too (``attnjax.train.finetune``).

  Metrics: loss, the task's metrics, learning rate, global
  norms of gradients, parameters and updates, and ``skipped``.
  """
  if nan_policy not in NAN_POLICIES:
    raise ValueError(f"config.train.nan_policy={nan_policy!r}; expected one of {NAN_POLICIES}")
  if microbatches < 1:
    raise ValueError(f"config.train.microbatches={microbatches} must be >= 1")
  task_loss = loss_fn

  def train_step(state: TrainState, batch: Batch, axis_name: str | None = None
                 ) -> tuple[TrainState, dict]:
    rng = jax.random.fold_in(state.rng, state.step)
    if axis_name is not None:
      rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))

    def batch_loss(params, micro, micro_rng):
      if trainable is not None:
        params = jax.tree_util.tree_map(
            lambda p, t: p if t else jax.lax.stop_gradient(p), params, trainable)
      return task_loss(state.apply_fn, params, micro, micro_rng)

    grad_fn = jax.value_and_grad(batch_loss, has_aux=True)
    if microbatches == 1:
      (loss, aux), grads = grad_fn(state.params, batch, rng)
    else:
      def accumulate(carry, xs):
        i, micro = xs
        (l, a), g = grad_fn(state.params, micro, jax.random.fold_in(rng, i))
        return jax.tree_util.tree_map(jnp.add, carry, (l, a, g)), None
      micro_batches = _split_microbatches(batch, microbatches)
      first = jax.tree_util.tree_map(lambda x: x[0], micro_batches)
      aux_shape = jax.eval_shape(batch_loss, state.params, first, rng)[1]
      zeros = (jnp.zeros((), jnp.float32),
               jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), aux_shape),
               jax.tree_util.tree_map(jnp.zeros_like, state.params))
      (loss, aux, grads), _ = jax.lax.scan(
          accumulate, zeros, (jnp.arange(microbatches), micro_batches))
      loss, aux, grads = jax.tree_util.tree_map(lambda x: x / microbatches, (loss, aux, grads))
    if axis_name is not None:
      loss, aux, grads = jax.lax.pmean((loss, aux, grads), axis_name)

    new_state = state.apply_gradients(grads=grads)
    grad_norm, param_norm = optax.tree.norm(grads), optax.tree.norm(new_state.params)
    skipped = jnp.zeros((), jnp.float32)
    if nan_policy == "skip":
      finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(param_norm)
      new_state = jax.tree_util.tree_map(lambda new, old: jnp.where(finite, new, old),
                                         new_state, state.replace(step=state.step + 1))
      skipped = 1.0 - finite.astype(jnp.float32)
      param_norm = optax.tree.norm(new_state.params)
    updates = jax.tree_util.tree_map(jnp.subtract, new_state.params, state.params)
    metrics = {
        "loss": loss,
        **aux,
        "learning_rate": schedule(state.step),
        "grad_norm": grad_norm,
        "param_norm": param_norm,
        "update_norm": optax.tree.norm(updates),
        "skipped": skipped,
    }
    return new_state, metrics

  return train_step
