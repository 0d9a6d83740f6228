"""The training state: parameters, optimizer state, step and the base rng."""

from __future__ import annotations

import jax
from flax.training import train_state


class TrainState(train_state.TrainState):
  """flax's TrainState plus ``rng``, the base key that each step folds its step into.

  ``apply_fn`` and ``tx`` are static; ``step``, ``params``, ``opt_state`` and ``rng`` are
  the arrays that a checkpoint holds.
  """

  rng: jax.Array
