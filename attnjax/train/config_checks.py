"""``check_config(config)``: every scalar config value checked for type and range, at once.

Run first in the validation phase of ``train_and_evaluate`` (nothing is written before).
A value of the wrong type or out of range is a one-line ValueError naming the key, the
value and what is expected, never a TypeError from deep inside JAX or optax later, or a
silently different computation (a negative clip norm flipping every gradient).

Keys a config does not have (configs that predate them) are not checked; the model's
own fields (sizes, kernel options) are checked by the model and kernel builders.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable

import jax
import ml_collections

_MISSING = object()


def _get(config: Any, key: str) -> Any:
  node = config
  for part in key.split("."):
    try:
      if part not in node:
        return _MISSING
      node = node[part]
    except TypeError:  # a section replaced by a scalar
      return _MISSING
  return node


def _is_int(v: Any) -> bool:
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
  return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _int(low: int | None = None, high: int | None = None) -> Callable[[Any], str | None]:
  def check(v):
    if not _is_int(v):
      return "an integer"
    if low is not None and v < low:
      return f"an integer >= {low}"
    if high is not None and v >= high:
      return f"an integer < {high}"
    return None
  return check


def _real(low: float | None = None, high: float | None = None, *, low_open: bool = False,
          high_open: bool = True) -> Callable[[Any], str | None]:
  lo = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
  hi = "" if high is None else f"{high:g}" + (")" if high_open else "]")
  want = "a finite number" + (f" in {lo}, {hi}" if lo and hi else
                              f" {'>' if low_open else '>='} {low:g}" if lo else "")

  def check(v):
    if not _is_real(v) or not math.isfinite(float(v)):
      return want
    v = float(v)
    if low is not None and (v < low or (low_open and v == low)):
      return want
    if high is not None and (v > high or (high_open and v == high)):
      return want
    return None
  return check


def _choice(*options: str) -> Callable[[Any], str | None]:
  def check(v):
    return None if isinstance(v, str) and v in options else f"one of {list(options)}"
  return check


def _bool(v: Any) -> str | None:
  return None if isinstance(v, bool) else "True or False"


def _str(v: Any) -> str | None:
  return None if isinstance(v, str) else "a string"


#: Every checked key and what it must be.
CHECKS: dict[str, Callable[[Any], str | None]] = {
    "seed": _int(0, 2 ** 32),
    "train.num_steps": _int(1),
    "train.batch_size": _int(1),
    "train.eval_batch_size": _int(1),
    "train.log_every": _int(1),
    "train.eval_every": _int(1),
    "train.checkpoint_every": _int(1),
    "train.keep_checkpoints": _int(1),
    "train.microbatches": _int(1),
    "train.label_smoothing": _real(0.0, 1.0),
    "train.nan_policy": _choice("stop", "skip", "off"),
    "train.best_mode": _choice("max", "min"),
    "train.keep_best_by": _str,
    "train.async_checkpoints": _bool,
    "train.attention_images": _bool,
    "train.peak_flops_per_device": _real(0.0),
    "optimizer.name": _str,
    "optimizer.schedule": _str,
    "optimizer.learning_rate": _real(0.0),
    "optimizer.warmup_steps": _int(0),
    "optimizer.end_lr_factor": _real(0.0),
    "optimizer.weight_decay": _real(0.0),
    "optimizer.b1": _real(0.0, 1.0),
    "optimizer.b2": _real(0.0, 1.0),
    "optimizer.eps": _real(0.0, low_open=True),
    "optimizer.grad_clip_norm": _real(0.0),
    "model.dropout_rate": _real(0.0, 1.0),
    "model.attention_dropout_rate": _real(0.0, 1.0),
    "model.head_dropout_rate": _real(0.0, 1.0),
    "self_pretrain.num_steps": _int(0),
    "self_pretrain.learning_rate": _real(0.0),
    "data.eval_split": _str,
}


def _show(value: Any) -> str:
  """A one-line repr (a ConfigDict's own repr is multi-line YAML)."""
  if isinstance(value, ml_collections.ConfigDict):
    value = value.to_dict()
  text = repr(value).replace("\n", "\\n")
  return text if len(text) <= 80 else text[:77] + "..."


def check_config(config: ml_collections.ConfigDict) -> None:
  """Checks every key of :data:`CHECKS` the config has, and the keys' relations.

  Raises:
    ValueError: the first bad value, naming ``config.<key>``, the value and what is
      expected.
  """
  for key, check in CHECKS.items():
    value = _get(config, key)
    if value is _MISSING:
      continue
    want = check(value)
    if want is not None:
      raise ValueError(f"config.{key}={_show(value)}: expected {want}")
  t = config.train
  if t.batch_size % t.microbatches:
    raise ValueError(f"config.train.batch_size={t.batch_size} is not divisible by "
                     f"config.train.microbatches={t.microbatches}")
  steps = _get(config, "self_pretrain.num_steps")
  if steps is not _MISSING and steps > 0:
    rate = _get(config, "self_pretrain.mask_rate")
    if rate is not _MISSING and not (_is_real(rate) and 0.0 < float(rate) < 1.0):
      raise ValueError(f"config.self_pretrain.mask_rate={rate!r}: expected a number in (0, 1)")
  for key in ("batch_size", "eval_batch_size"):
    if t[key] % jax.process_count():
      raise ValueError(f"config.train.{key}={t[key]} is not divisible by "
                       f"{jax.process_count()} processes")
