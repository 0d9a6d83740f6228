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
  stacked: bool = False  # inside ``nn.scan``-stacked blocks: a leading layer axis, no index


def _key_name(key: Any) -> str:
  return str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key))))


def _group(parts: list[str], stacks: Mapping[str, int], num_layers: int,
           embeddings: tuple[str, ...]) -> ParamGroup:
  if parts and parts[0] in embeddings:
    return ParamGroup("embeddings", num_layers=num_layers)
  if not parts or parts[0] not in stacks:
    return ParamGroup("head", num_layers=num_layers)
  offset, rest = stacks[parts[0]], parts[1:]
  if rest and (rest[0] in ("embeddings", "cls_token") or rest[0].endswith("_embeddings")):
    return ParamGroup("embeddings", num_layers=num_layers)
  layer, stacked = None, False
  if rest and rest[0].startswith("layer_") and rest[0][6:].isdigit():
    layer, rest = offset + int(rest[0][6:]), rest[1:]
  elif rest and rest[0] == "layers":  # nn.scan: layers/block/<sub-layer>/...
    stacked, rest = True, rest[2:]
  else:
    return ParamGroup("norm" if rest and rest[0].endswith("norm") else "other",
                      num_layers=num_layers)
  sub = rest[0] if rest else ""
  if sub.endswith("norm"):
    return ParamGroup("norm", layer, num_layers, stacked=stacked)
  kind = "attention" if sub.endswith("attention") else "mlp" if sub == "mlp" else "other"
  projection = rest[1] if len(rest) > 2 and kind != "other" else None
  return ParamGroup(kind, layer, num_layers, projection, stacked)


def groups_by_stack(params: Any, *, stacks: Mapping[str, int], num_layers: int,
                    embeddings: tuple[str, ...] = ()) -> Any:
  """ParamGroups of a model built from the shared stacks (``attnjax.layers.apply_blocks``).

  A model knows its own layout and calls this with its stacks: the top-level scope of each
  and the index of its first block (an encoder-decoder counts the encoder's blocks first).
  Inside a stack: ``embeddings`` (and ``*_embeddings``, ``cls_token``) are embeddings,
  ``layer_<i>/<attention|cross_attention|mlp|*norm>/<projection>/...`` a block's
  sub-layers, ``final_norm`` a norm above the blocks; everything outside the stacks is the
  head.

  Args:
    params: the model's parameter pytree (arrays or shapes).
    stacks: top-level scope name -> index of its first block.
    num_layers: blocks in the whole model.
    embeddings: top-level scopes outside the stacks that are embeddings (e.g. a token
      table shared by an encoder and a decoder).

  Returns:
    A pytree like ``params`` with a :class:`ParamGroup` per leaf.
  """
  return jax.tree_util.tree_map_with_path(
      lambda path, _: _group([_key_name(k) for k in path], stacks, num_layers, embeddings),
      params)


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
