"""Pure train and eval steps for classification: ``(state, batch) -> (state, metrics)``."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from attnjax.train.state import TrainState

Batch = dict[str, jax.Array]


def classification_loss(logits: jax.Array, labels: jax.Array, *,
                        label_smoothing: float = 0.0) -> jax.Array:
  """Per-example softmax cross-entropy ``[batch]`` (float32) with optional label smoothing."""
  num_classes = logits.shape[-1]
  targets = jax.nn.one_hot(labels, num_classes)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def make_train_step(schedule: optax.Schedule, *, label_smoothing: float = 0.0
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
  """Returns the pure train step for ``state.apply_fn`` (a SequenceClassifier).

  The step's dropout key is ``fold_in(state.rng, state.step)``, so a resumed run draws the
  same randomness as an uninterrupted one. Metrics: loss, accuracy, learning rate and the
  global norms of gradients, parameters and updates.
  """

  def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
    dropout_rng = jax.random.fold_in(state.rng, state.step)

    def loss_fn(params):
      logits = state.apply_fn({"params": params}, batch["inputs"], deterministic=False,
                              rngs={"dropout": dropout_rng})
      loss = classification_loss(logits, batch["label"], label_smoothing=label_smoothing)
      return loss.mean(), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new_state = state.apply_gradients(grads=grads)
    updates = jax.tree_util.tree_map(jnp.subtract, new_state.params, state.params)
    metrics = {
        "loss": loss,
        "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
        "learning_rate": schedule(state.step),
        "grad_norm": optax.tree.norm(grads),
        "param_norm": optax.tree.norm(new_state.params),
        "update_norm": optax.tree.norm(updates),
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
