"""The one model protocol and the one ``MODELS`` registry.

A model is a flax module built from ``config.model`` and the data's description:

* ``MODELS.get(name)(model_config, **fields) -> nn.Module``; ``fields`` are what the task
  knows from the data (``vocab_size``, ``max_length``, ``pad_id``, and e.g. ``num_classes``
  and ``towers`` for a classifier). The task picks the name (``config.model.name``, with a
  default per task), builds the model, and supplies the dummy batch the loop initialises it
  from, the FLOPs per example and the parameter groups.
* ``model.apply(variables, batch, ...)`` takes the **batch dict** of the data pipeline
  (``inputs``, and where the data has them ``targets``, ``segment_ids``, ``positions``);
  for use outside the loop the same call takes arrays in the Hugging Face order, e.g.
  ``model.apply({'params': p}, input_ids)`` (decoder-only, encoder, classifier) or
  ``model.apply({'params': p}, input_ids, decoder_input_ids)`` (encoder-decoder).
* Decoders (``causal_lm``, ``encoder_decoder``) also have ``encode`` (encoder-decoder
  only), ``decode`` and ``init_cache(batch_size, max_length)``, used by
  :mod:`attnjax.generate`.
* Every model has ``param_groups(params) -> pytree of ParamGroup`` (what each parameter is:
  embeddings, a layer's attention or feed-forward, norm, head; and its layer index), which
  LoRA, layer-wise learning-rate decay and freezing read instead of parameter names.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax

from attnjax.registry import Registry

ModelBuilder = Callable[..., nn.Module]
MODELS: Registry[ModelBuilder] = Registry("model")

#: What a parameter belongs to.
GROUP_KINDS = ("embeddings", "attention", "mlp", "norm", "head", "other")


@dataclasses.dataclass(frozen=True)
class ParamGroup:
  """What one parameter is, for fine-tuning rules and sharding.

  Attributes:
    kind: one of :data:`GROUP_KINDS`.
    layer: index of the block it belongs to (0 = closest to the input, counting the
      encoder's blocks before the decoder's), or None outside the blocks.
    num_layers: blocks in the model (so layer-wise decay knows the depth).
    projection: the projection's name inside its sub-layer (``query``, ``key``,
      ``value``, ``out``, ``wi``, ``wo``), or None.
  """

  kind: str
  layer: int | None = None
  num_layers: int = 0
  projection: str | None = None


def batch_arrays(inputs: Mapping[str, Any] | jax.Array, **named: Any) -> dict[str, Any]:
  """Normalises a model call's first argument: a batch dict, or the token ids array.

  Args:
    inputs: the pipeline's batch dict, or an int array of token ids (``inputs``).
    **named: arrays given as keyword arguments (``None`` = not given); a batch dict's own
      entries win over ``None`` keywords, and conflict with given ones.

  Returns:
    ``{'inputs': ..., **the batch's other entries, **named non-None keywords}``.
  """
  if isinstance(inputs, Mapping):
    out = dict(inputs)
    for key, value in named.items():
      if value is not None:
        if key in out:
          raise ValueError(f"{key!r} given both in the batch dict and as an argument")
        out[key] = value
    return out
  return {"inputs": inputs, **{k: v for k, v in named.items() if v is not None}}


def build_model(name: str, model_config: Any, **fields: Any) -> nn.Module:
  """``MODELS.get(name)(model_config, **fields)``; an unknown name lists the known ones."""
  return MODELS.get(name)(model_config, **fields)
