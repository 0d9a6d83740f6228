"""Pure train and eval steps for classification: ``(state, batch) -> (state, metrics)``."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from attnjax.train.state import TrainState

Batch = dict[str, jax.Array]
NAN_POLICIES = ("stop", "skip", "off")


def classification_loss(logits: jax.Array, labels: jax.Array, *,
                        label_smoothing: float = 0.0) -> jax.Array:
  """Per-example softmax cross-entropy ``[batch]`` (float32) with optional label smoothing."""
  num_classes = logits.shape[-1]
  targets = jax.nn.one_hot(labels, num_classes)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


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


def make_train_step(schedule: optax.Schedule, *, label_smoothing: float = 0.0,
                    microbatches: int = 1, nan_policy: str = "stop"
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

  Metrics: loss, accuracy, learning rate, global norms of gradients, parameters and
  updates, and ``skipped``.
  """
  if nan_policy not in NAN_POLICIES:
    raise ValueError(f"config.train.nan_policy={nan_policy!r}; expected one of {NAN_POLICIES}")
  if microbatches < 1:
    raise ValueError(f"config.train.microbatches={microbatches} must be >= 1")

  def train_step(state: TrainState, batch: Batch, axis_name: str | None = None
                 ) -> tuple[TrainState, dict]:
    rng = jax.random.fold_in(state.rng, state.step)
    if axis_name is not None:
      rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))

    def loss_fn(params, micro, micro_rng):
      logits = state.apply_fn({"params": params}, micro["inputs"], deterministic=False,
                              rngs={"dropout": micro_rng})
      loss = classification_loss(logits, micro["label"], label_smoothing=label_smoothing)
      correct = jnp.mean(jnp.argmax(logits, -1) == micro["label"])
      return loss.mean(), correct

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if microbatches == 1:
      (loss, accuracy), grads = grad_fn(state.params, batch, rng)
    else:
      def accumulate(carry, xs):
        i, micro = xs
        (l, a), g = grad_fn(state.params, micro, jax.random.fold_in(rng, i))
        return jax.tree_util.tree_map(jnp.add, carry, (l, a, g)), None
      zeros = (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32),
               jax.tree_util.tree_map(jnp.zeros_like, state.params))
      (loss, accuracy, grads), _ = jax.lax.scan(
          accumulate, zeros, (jnp.arange(microbatches), _split_microbatches(batch, microbatches)))
      loss, accuracy, grads = jax.tree_util.tree_map(lambda x: x / microbatches,
                                                     (loss, accuracy, grads))
    if axis_name is not None:
      loss, accuracy, grads = jax.lax.pmean((loss, accuracy, grads), axis_name)

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
        "accuracy": accuracy,
        "learning_rate": schedule(state.step),
        "grad_norm": grad_norm,
        "param_norm": param_norm,
        "update_norm": optax.tree.norm(updates),
        "skipped": skipped,
    }
    return new_state, metrics

  return train_step


def eval_step(state: TrainState, batch: Batch) -> dict[str, jax.Array]:
  """Weighted sums over one eval batch: ``loss_sum``, ``correct_sum``, ``weight_sum``.

  ``batch['weight']`` is 1 for real examples and 0 for padding, so summing over batches and
  dividing gives exact means over the split.
  """
  logits = state.apply_fn({"params": state.params}, batch["inputs"], deterministic=True)
  weight = batch["weight"].astype(jnp.float32)
  loss = classification_loss(logits, batch["label"])
  correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
  return {"loss_sum": jnp.sum(loss * weight), "correct_sum": jnp.sum(correct * weight),
          "weight_sum": jnp.sum(weight)}
