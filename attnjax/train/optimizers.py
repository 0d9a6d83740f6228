"""Optimizers and learning-rate schedules from ``config.optimizer``."""

from __future__ import annotations

from typing import Callable

import jax
import ml_collections
import optax

from attnjax.registry import Registry

SCHEDULES: Registry[Callable[..., optax.Schedule]] = Registry("schedule")
OPTIMIZERS: Registry[Callable[..., optax.GradientTransformation]] = Registry("optimizer")


@SCHEDULES.register("cosine")
def _cosine(peak: float, warmup: int, total: int, end_factor: float) -> optax.Schedule:
  return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, max(total, warmup + 1),
                                            end_value=peak * end_factor)


@SCHEDULES.register("linear")
def _linear(peak: float, warmup: int, total: int, end_factor: float) -> optax.Schedule:
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, max(warmup, 1)),
       optax.linear_schedule(peak, peak * end_factor, max(total - warmup, 1))], [warmup])


@SCHEDULES.register("constant")
def _constant(peak: float, warmup: int, total: int, end_factor: float) -> optax.Schedule:
  del total, end_factor
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, max(warmup, 1)), optax.constant_schedule(peak)],
      [warmup])


def decay_mask(params) -> object:
  """Weight decay on matrices only: no decay on biases, LayerNorm scales or offsets."""
  return jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)


@OPTIMIZERS.register("adamw")
def _adamw(lr: optax.Schedule, cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  return optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                     mask=decay_mask)


@OPTIMIZERS.register("sgd")
def _sgd(lr: optax.Schedule, cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  return optax.chain(optax.add_decayed_weights(cfg.weight_decay, mask=decay_mask),
                     optax.sgd(lr, momentum=cfg.b1 or None))


def build_optimizer(cfg: ml_collections.ConfigDict, num_steps: int
                    ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Returns ``(optimizer, schedule)`` for ``config.optimizer``.

  Keys: ``name`` (adamw | sgd), ``learning_rate`` (peak), ``schedule`` (cosine | linear |
  constant), ``warmup_steps``, ``end_lr_factor``, ``weight_decay``, ``b1``, ``b2``, ``eps``,
  ``grad_clip_norm`` (global-norm clipping before the update; 0 disables).
  """
  if cfg.warmup_steps < 0 or cfg.warmup_steps > num_steps:
    raise ValueError(f"config.optimizer.warmup_steps={cfg.warmup_steps} must be in "
                     f"[0, config.train.num_steps={num_steps}]")
  schedule = SCHEDULES.get(cfg.schedule)(cfg.learning_rate, cfg.warmup_steps, num_steps,
                                         cfg.end_lr_factor)
  tx = OPTIMIZERS.get(cfg.name)(schedule, cfg)
  if cfg.grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), tx)
  return tx, schedule
