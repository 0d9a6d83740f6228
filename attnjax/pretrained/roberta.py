"""RoBERTa checkpoints (Liu et al. 2019): BERT's layout with offset positions and ``lm_head``.

RoBERTa is a post-LN BERT encoder whose position ids start at ``pad_token_id + 1``
(transformers counts the non-padding tokens: ``cumsum(ids != pad) + pad``) and whose
token-type table usually has one row. attnjax keeps the rows from ``pad_token_id + 1`` on as
its position table, so that position ``i`` of an attnjax encoder is RoBERTa's
``pad_token_id + 1 + i``, and sets ``EncoderConfig.positions_from_mask`` (token ``i``'s
position is the number of real tokens before it): left- or right-padded batches give
RoBERTa's hidden states on every real token. The rows before the offset are read only at
padding positions; an export writes them as zeros.

Tensor names: ``embeddings.*``, ``encoder.layer.*`` and ``pooler.*`` as BERT, under
``roberta.`` in RobertaForMaskedLM, whose head is ``lm_head.{dense, layer_norm, bias}``
(``lm_head.decoder`` is tied to the word embeddings).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from attnjax.layers import EncoderConfig
from attnjax.pretrained import checkpoint, formats, hf_config

#: RobertaConfig's defaults where they differ from BertConfig's.
_ROBERTA_DEFAULTS = {"vocab_size": 50265, "pad_token_id": 1}
# RoBERTa numbers the real tokens only (cumsum of the non-padding ones).
_FIXED = {"positions_from_mask": True}


def _offset(config: EncoderConfig) -> int:
  """Rows of RoBERTa's position table before position 0: ``pad_token_id + 1``."""
  return config.pad_id + 1


def config_from_hf(hf: Mapping[str, Any], *, source: str = "config.json",
                   **overrides: Any) -> EncoderConfig:
  """RoBERTa's ``config.json`` as an EncoderConfig (``max_length`` = table rows - offset)."""
  cfg = {**_ROBERTA_DEFAULTS, **{k: v for k, v in hf.items() if v is not None}}
  offset = cfg["pad_token_id"] + 1
  rows = cfg.get("max_position_embeddings", 512)
  if rows <= offset:
    hf_config.refuse_field(source, "max_position_embeddings", rows,
                           f"RoBERTa's positions start at pad_token_id + 1 = {offset}")
  return hf_config.bert_config_from_hf(
      {**cfg, "max_position_embeddings": rows - offset}, source=source,
      defaults=_ROBERTA_DEFAULTS, fixed=_FIXED, **overrides)


def config_to_hf(config: EncoderConfig, *, architecture: str = "RobertaModel") -> dict[str, Any]:
  """The ``config.json`` of a transformers RobertaModel equal to ``config``."""
  hf = hf_config.bert_config_to_hf(config, architecture=architecture, name="RoBERTa",
                                   fixed={**hf_config.BERT_LIKE_FIXED, **_FIXED})
  hf.update(model_type="roberta", max_position_embeddings=config.max_length + _offset(config),
            bos_token_id=0, eos_token_id=2)
  return hf


def entries(config: EncoderConfig, *, pooler: bool, mlm_head: bool):
  """BERT's tensors with the position table offset and RoBERTa's ``lm_head``."""
  offset = _offset(config)

  def to_flax(table: np.ndarray) -> np.ndarray:
    return table[offset:]

  def to_hf(table: np.ndarray) -> np.ndarray:
    return np.concatenate([np.zeros((offset, table.shape[1]), table.dtype), table])

  return checkpoint.bert_entries(
      config, pooler=pooler, mlm_head=mlm_head, positions=(to_flax, to_hf),
      head=("lm_head.dense", "lm_head.layer_norm", "lm_head.bias"))


def _describe(config: EncoderConfig) -> str:
  return checkpoint.bert_describe(config).replace(
      f"max_position_embeddings={config.max_length}",
      f"max_position_embeddings={config.max_length + _offset(config)}")


def _split(tensors: dict[str, np.ndarray], config: EncoderConfig) -> dict[str, np.ndarray]:
  """The output bias is ``lm_head.bias``, tied to ``lm_head.decoder.bias``: either is saved."""
  del config
  if "lm_head.bias" not in tensors and "lm_head.decoder.bias" in tensors:
    tensors = {**tensors, "lm_head.bias": tensors["lm_head.decoder.bias"]}
  return tensors


def _check_mlm_head(hf: Mapping[str, Any], config: EncoderConfig, source: str) -> None:
  # RobertaLMHead applies the erf GELU whatever hidden_act says; attnjax's head uses the
  # encoder's activation.
  if (config.activation, config.exact_gelu) != ("gelu", True):
    hf_config.refuse_field(source, "hidden_act", hf.get("hidden_act"),
                           "RoBERTa's masked-LM head always applies gelu, attnjax's head the "
                           "encoder's activation; load without with_mlm_head")
  hf_config.refuse_untied_head(hf, source)


def _fuse(tensors: dict[str, np.ndarray], config: EncoderConfig) -> dict[str, np.ndarray]:
  if "lm_head.bias" in tensors and (config.activation, config.exact_gelu) != ("gelu", True):
    raise ValueError(f"EncoderConfig.activation={config.activation!r} (exact_gelu="
                     f"{config.exact_gelu}) cannot be exported as RoBERTa with a masked-LM "
                     "head: RobertaLMHead always applies the erf gelu")
  return tensors


ROBERTA = formats.register_format(formats.EncoderFormat(
    model_type="roberta",
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    entries=entries,
    architectures=("RobertaModel", "RobertaForMaskedLM"),
    base_prefix="roberta.",
    head_prefixes=("lm_head.",),
    head_marker="lm_head.bias",
    pooler_marker="pooler.dense.weight",
    encoder_prefixes=("embeddings.", "encoder."),
    describe=_describe,
    split=_split,
    fuse=_fuse,
    check_mlm_head=_check_mlm_head,
))
