"""Builds a model from an ml_collections config and the task's description."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import jax.numpy as jnp
import ml_collections

from attnjax import kernels
from attnjax.layers import POOLINGS, EncoderConfig
from attnjax.models.classifier import SequenceClassifier
from attnjax.models.mlm import MaskedLanguageModel
from attnjax.models.registry import MODELS
from attnjax.models.presets import get_preset

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}

# config.model keys that are not EncoderConfig fields.
_HEAD_KEYS = ("name", "preset", "pooling", "head_dropout_rate", "attention", "dtype")


def _check_kernel_options(kernel: str, options: dict[str, Any]) -> None:
  """A set option the kernel does not take is a ValueError naming it and the kernel's options."""
  params = inspect.signature(kernels.get_kernel(kernel)).parameters
  if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
    return
  unknown = sorted(set(options) - set(params))
  if unknown:
    own = sorted(n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY)
    raise ValueError(
        f"config.model.attention.{unknown[0]} is not an option of kernel {kernel!r}; "
        f"its options are: {', '.join(own)}")


def encoder_config(model_config: ml_collections.ConfigDict, *, vocab_size: int,
                   max_length: int, pad_id: int = 0) -> EncoderConfig:
  """Resolves ``config.model`` (preset, then explicit fields) into an EncoderConfig.

  ``config.model.attention.kernel`` names the kernel; every other key of
  ``config.model.attention`` is passed to the kernel as an option. A field of the preset is
  overridden by an explicit non-None value in ``config.model``.
  """
  fields = {f.name for f in dataclasses.fields(EncoderConfig)}
  values: dict[str, Any] = get_preset(model_config.preset) if model_config.get("preset") else {}
  for key, value in model_config.items():
    if key in _HEAD_KEYS or value is None:
      continue
    if key not in fields:
      raise ValueError(f"config.model.{key} is not an encoder option; known: "
                       f"{sorted(fields - {'vocab_size', 'max_length'})}")
    values[key] = value
  attention = dict(model_config.get("attention") or {})
  if "kernel" in attention:
    values["kernel"] = attention.pop("kernel")
  values["kernel_options"] = {k: v for k, v in attention.items() if v is not None}
  _check_kernel_options(values.get("kernel", "dot_product"), values["kernel_options"])
  dtype = model_config.get("dtype", "float32")
  if dtype not in _DTYPES:
    raise ValueError(f"config.model.dtype={dtype!r}; expected one of {sorted(_DTYPES)}")
  return EncoderConfig(vocab_size=vocab_size, max_length=max_length, pad_id=pad_id,
                       dtype=_DTYPES[dtype], **values)


def build_classifier(model_config: ml_collections.ConfigDict, *, vocab_size: int,
                     max_length: int, num_classes: int, pad_id: int = 0,
                     towers: int = 1) -> SequenceClassifier:
  """Builds the SequenceClassifier described by ``config.model`` for a task.

  ``towers``: 1 for ``[batch, seq]`` inputs, 2 for two-tower ``[batch, 2, seq]`` inputs
  (the task's ``DatasetInfo.towers``); ``max_length`` is the length of one tower.
  """
  if towers not in (1, 2):
    raise ValueError(f"towers={towers}; expected 1 (one sequence) or 2 (two towers)")
  pooling = model_config.get("pooling", "cls")
  if pooling not in POOLINGS:
    POOLINGS.get(pooling)  # raises, listing the known poolings
  enc = encoder_config(model_config, vocab_size=vocab_size, max_length=max_length,
                       pad_id=pad_id)
  if pooling == "cls" and not enc.add_cls_token:
    # Without a CLS vector, position 0 is an ordinary input token: refuse rather than guess.
    raise ValueError("config.model.pooling='cls' needs config.model.add_cls_token=True; "
                     "or use pooling='mean' or 'attention'")
  return SequenceClassifier(encoder=enc, num_classes=num_classes, pooling=pooling,
                            head_dropout_rate=model_config.get("head_dropout_rate", 0.0),
                            towers=towers)


@MODELS.register("classifier")
def _classifier(model_config: ml_collections.ConfigDict, *, vocab_size: int, max_length: int,
                num_classes: int, pad_id: int = 0, towers: int = 1) -> SequenceClassifier:
  """Encoder, pooling and a classification (or, with one class, regression) head."""
  return build_classifier(model_config, vocab_size=vocab_size, max_length=max_length,
                          num_classes=num_classes, pad_id=pad_id, towers=towers)


@MODELS.register("masked_lm")
def _masked_lm(model_config: ml_collections.ConfigDict, *, vocab_size: int, max_length: int,
               pad_id: int = 0) -> MaskedLanguageModel:
  """Encoder and the tied masked-LM head."""
  return MaskedLanguageModel(encoder_config(model_config, vocab_size=vocab_size,
                                            max_length=max_length, pad_id=pad_id))
