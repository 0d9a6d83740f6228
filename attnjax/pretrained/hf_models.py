"""Hugging Face checkpoints of any registered architecture: ``load_hf_model``/``save_hf_model``.

One registry, keyed by ``config.json``'s ``model_type``, says how each architecture's
checkpoint becomes an attnjax model and back::

  model, params = load_hf_model("path/to/gpt2")        # GPT-2, BART, BERT, ...
  logits = model.apply({'params': params}, input_ids)   # [batch, seq, vocab]
  save_hf_model(model, params, "export/")               # transformers loads it again

An architecture registers one :class:`HFArchitecture` (two functions and a predicate)::

  register_hf_architecture("gpt2", HFArchitecture(
      load=load_gpt2,          # (directory, config_json, **overrides) -> (model, params)
      save=save_gpt2,          # (model, params, directory, tokenizer) -> None
      exports=is_gpt2_model))  # model -> bool: "save_hf_model may write this model as me"

``load`` gets the parsed ``config.json`` and reads the weights itself (with
:func:`attnjax.pretrained.read_safetensors`); it returns the model whose ``apply`` gives
logits ``[batch, seq, vocab]`` (an encoder-decoder's takes ``(input_ids,
decoder_input_ids)``), and float32 numpy params (the ``'params'`` collection). ``save``
writes ``config.json`` + ``model.safetensors`` (and the tokenizer files when given one)
into an existing directory. Several architectures may share a model class (BERT and
RoBERTa are both :class:`~attnjax.models.MaskedLanguageModel`): ``exports`` tells them
apart by the model's configuration; when more than one claims a model,
``save_hf_model(..., model_type=...)`` picks.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any, Callable, Mapping

import flax.linen as nn

from attnjax.models.mlm import MaskedLanguageModel
from attnjax.pretrained import checkpoint, hf_config
from attnjax.pretrained.modeling import BertEncoder
from attnjax.registry import Registry

Path = str | os.PathLike

Loader = Callable[..., tuple[nn.Module, dict]]
Saver = Callable[[nn.Module, dict, pathlib.Path, Any], None]


@dataclasses.dataclass(frozen=True)
class HFArchitecture:
  """How one Hugging Face ``model_type`` maps to an attnjax model and back.

  Attributes:
    load: ``load(directory: pathlib.Path, hf_config: dict, **overrides) -> (model,
      params)``. ``overrides`` are config fields that do not change the architecture
      (``kernel``, ``kernel_options``, ``dtype``, dropout rates); raise a one-line
      ValueError naming the ``config.json`` field or tensor that cannot be represented.
    save: ``save(model, params, directory: pathlib.Path, tokenizer) -> None`` writes
      ``config.json`` + ``model.safetensors`` (+ tokenizer files when ``tokenizer`` is not
      None) into ``directory`` (already created); None if export is not supported.
    exports: ``exports(model) -> bool``: whether ``save`` can write this model (checked
      by :func:`save_hf_model` to find the architecture of a model).
  """

  load: Loader
  save: Saver | None = None
  exports: Callable[[nn.Module], bool] | None = None


HF_ARCHITECTURES: Registry[HFArchitecture] = Registry("Hugging Face model_type")


def register_hf_architecture(model_type: str, architecture: HFArchitecture) -> HFArchitecture:
  """Registers ``architecture`` for ``config.json``'s ``model_type``; duplicates are refused."""
  if not isinstance(architecture, HFArchitecture):
    raise ValueError(f"register_hf_architecture({model_type!r}, ...) needs an HFArchitecture, "
                     f"got {type(architecture).__name__}")
  return HF_ARCHITECTURES.register(model_type, architecture)


def _architecture(model_type: Any, source: str) -> HFArchitecture:
  if model_type not in HF_ARCHITECTURES:
    raise ValueError(f"{source}: model_type={model_type!r} is not supported; known: "
                     f"{', '.join(HF_ARCHITECTURES.names())}")
  return HF_ARCHITECTURES.get(model_type)


def load_hf_model(path: Path, **overrides: Any) -> tuple[nn.Module, dict]:
  """Loads a Hugging Face checkpoint directory of any registered architecture.

  Args:
    path: directory with ``config.json`` and ``model.safetensors`` (or a sharded index).
    **overrides: config fields that do not change the architecture (``kernel``,
      ``kernel_options``, ``dtype``, ``dropout_rate``, ``attention_dropout_rate``).

  Returns:
    ``(model, params)``: the model with its language-model head (GPT-2: a
    :class:`~attnjax.models.CausalLM`; BART/T5: an
    :class:`~attnjax.models.EncoderDecoder`; BERT: a
    :class:`~attnjax.models.MaskedLanguageModel`), and float32 numpy params.
    ``model.apply({'params': params}, input_ids)`` (decoder-only, encoder) or
    ``model.apply({'params': params}, input_ids, decoder_input_ids)`` (encoder-decoder)
    returns logits ``[batch, seq, vocab]``.

  Raises:
    FileNotFoundError: no config.json or weights in ``path``.
    ValueError: an unknown ``model_type`` (listing the known ones), or what the
      architecture cannot represent.
  """
  directory = pathlib.Path(path)
  hf = checkpoint.read_hf_config(directory)
  arch = _architecture(hf.get("model_type"), str(directory / checkpoint.CONFIG_FILE))
  return arch.load(directory, hf, **overrides)


def save_hf_model(model: nn.Module, params: Mapping[str, Any], path: Path, *,
                  tokenizer: Any = None, model_type: str | None = None) -> pathlib.Path:
  """Writes ``model``/``params`` as a Hugging Face checkpoint transformers can load.

  Args:
    model: a model :func:`load_hf_model` returns (or one built with the same options).
    params: its ``'params'`` collection (``{'params': ...}`` is accepted too).
    path: output directory (created; files with the same names are replaced).
    tokenizer: optional ``tokenizers.Tokenizer`` (or a directory holding one) to write.
    model_type: the architecture to write; by default the one registered architecture
      whose ``exports`` accepts ``model``.

  Returns:
    The output directory.

  Raises:
    ValueError: no registered architecture (or several, without ``model_type``) can write
      the model, naming them.
  """
  if "params" in params and len(params) == 1:
    params = params["params"]
  if model_type is None:
    claims = [name for name in HF_ARCHITECTURES.names()
              if (a := HF_ARCHITECTURES.get(name)).save is not None and a.exports is not None
              and a.exports(model)]
    if not claims:
      exportable = [n for n in HF_ARCHITECTURES.names() if HF_ARCHITECTURES.get(n).save]
      raise ValueError(f"save_hf_model: no Hugging Face architecture can write a "
                       f"{type(model).__name__} with this configuration; exportable: "
                       f"{', '.join(exportable)}")
    if len(claims) > 1:
      raise ValueError(f"save_hf_model: {type(model).__name__} fits model_types {claims}; "
                       "pass model_type=")
    model_type = claims[0]
  arch = _architecture(model_type, "save_hf_model(model_type=...)")
  if arch.save is None:
    raise ValueError(f"save_hf_model: model_type={model_type!r} can be loaded but not saved")
  directory = pathlib.Path(path)
  directory.mkdir(parents=True, exist_ok=True)
  arch.save(model, dict(params), directory, tokenizer)
  return directory


# ----------------------------------------------------------------------------------------
# The BERT family (BERT, RoBERTa, DistilBERT, ModernBERT), through load_hf_encoder /
# save_hf_encoder and their EncoderFormats (the masked-LM model).


def _encoder_architecture(model_type: str) -> HFArchitecture:
  def load(directory: pathlib.Path, hf: Mapping[str, Any], **overrides: Any):
    del hf  # load_hf_encoder reads config.json and dispatches on its model_type
    # A checkpoint without its masked-LM head (a bare encoder) is refused by
    # load_hf_encoder unless overrides carry mlm_head_rng (then the head starts fresh).
    return checkpoint.load_hf_encoder(directory, with_mlm_head=True, **overrides)

  def save(model: nn.Module, params: dict, directory: pathlib.Path, tokenizer: Any) -> None:
    checkpoint.save_hf_encoder(params, model.config, directory, tokenizer=tokenizer,
                               model_type=model_type)

  def fits(model: nn.Module, kind: str) -> bool:
    try:
      hf_config.hf_config_from_encoder(model.config, model_type=kind)
    except ValueError:
      return False
    return True

  def exports(model: nn.Module) -> bool:
    # The encoder formats are exclusive: BERT has token types and arange positions, RoBERTa
    # numbers real tokens (positions_from_mask), DistilBERT has no token types, ModernBERT
    # is pre-LN with its options; so each claims exactly the models it can write.
    if not isinstance(model, (MaskedLanguageModel, BertEncoder)):
      return False
    return fits(model, model_type)

  return HFArchitecture(load=load, save=save, exports=exports)


for _model_type in hf_config.SUPPORTED_MODEL_TYPES:
  register_hf_architecture(_model_type, _encoder_architecture(_model_type))
