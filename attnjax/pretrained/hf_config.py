"""Hugging Face ``config.json`` <-> EncoderConfig, refusing what cannot be represented.

:func:`encoder_config_from_hf` and :func:`hf_config_from_encoder` dispatch on ``model_type``
to the architecture's :class:`~attnjax.pretrained.formats.EncoderFormat`; BERT's conversion
is here, the others' in their own modules (``roberta``, ``distilbert``, ``modernbert``).
"""

from __future__ import annotations

from typing import Any, Mapping

from attnjax.layers import EncoderConfig
from attnjax.pretrained import formats

#: The model_types attnjax loads and writes (each an EncoderFormat in formats.ENCODER_FORMATS).
SUPPORTED_MODEL_TYPES = ("bert", "distilbert", "modernbert", "roberta")

# hidden_act -> (EncoderConfig.activation, exact_gelu). transformers' gelu_new,
# gelu_pytorch_tanh and gelu_fast are all the tanh approximation 0.5x(1+tanh(c(x+0.044715x^3))).
_ACTIVATIONS = {
    "gelu": ("gelu", True),
    "gelu_new": ("gelu", False),
    "gelu_pytorch_tanh": ("gelu", False),
    "gelu_fast": ("gelu", False),
    "relu": ("relu", False),
    "silu": ("silu", False),
    "swish": ("silu", False),
}

# BertConfig's defaults: transformers fills a missing key with these, so we must too.
_BERT_DEFAULTS = {
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
}

# EncoderConfig fields of every BERT-like export (BERT, RoBERTa, DistilBERT): post-LN blocks
# with biases, learned positions, a LayerNorm after the embeddings, one attention everywhere.
BERT_LIKE_FIXED = dict(pre_layer_norm=False, embedding_layer_norm=True, position="learned",
                       add_cls_token=False, use_bias=True, gated_mlp=False, local_window=0,
                       skip_first_attention_norm=False, relative_buckets=0,
                       positions_from_mask=False)

# Kernel options that only choose how attention is computed, not what it computes; any other
# option (windows, causal masks, ALiBi, soft caps, ...) makes a model BERT cannot express.
_NUMERICS_ONLY_OPTIONS = frozenset({"implementation", "block_q", "block_kv", "precision"})


def encoder_config_from_hf(hf: Mapping[str, Any], *, source: str = "config.json",
                           **overrides: Any) -> EncoderConfig:
  """Builds the EncoderConfig of a checkpoint from its ``config.json`` contents.

  Args:
    hf: the parsed ``config.json``; its ``model_type`` (one of
      :data:`SUPPORTED_MODEL_TYPES`) picks the conversion.
    source: file name used in error messages.
    **overrides: EncoderConfig fields to set afterwards (``kernel``, ``kernel_options``,
      ``dtype``, dropout rates, ...); architecture fields cannot be overridden.

  Returns:
    The architecture's EncoderConfig (BERT: post-LN, learned positions, token types and
    an embedding LayerNorm).

  Raises:
    ValueError: naming the field of ``config.json`` that attnjax cannot represent (an
      unknown ``model_type`` lists the known ones).
  """
  fmt = formats.get_format(hf.get("model_type"), source)
  return fmt.config_from_hf(hf, source=source, **overrides)


def hf_config_from_encoder(config: EncoderConfig, *, architecture: str | None = None,
                           model_type: str = "bert") -> dict[str, Any]:
  """The ``config.json`` of the transformers model of ``model_type`` equal to ``config``.

  Args:
    config: the encoder's configuration.
    architecture: the ``architectures`` entry; default the architecture's bare encoder
      (``BertModel``, ``RobertaModel``, ...).
    model_type: one of :data:`SUPPORTED_MODEL_TYPES`.

  Raises:
    ValueError: naming the EncoderConfig field the architecture cannot express.
  """
  fmt = formats.get_format(model_type, "hf_config_from_encoder(model_type=...)")
  return fmt.config_to_hf(config, architecture=architecture or fmt.architectures[0])


def refuse_field(source: str, field: str, value: Any, why: str):
  """Raises the one-line ValueError for a ``config.json`` field attnjax cannot represent."""
  raise ValueError(f"{source}: {field}={value!r} cannot be represented: {why}")


def refuse_untied_head(hf: Mapping[str, Any], source: str) -> None:
  """attnjax's masked-LM head projects with the word embedding table: refuse untied ones."""
  if not hf.get("tie_word_embeddings", True):
    refuse_field(source, "tie_word_embeddings", False,
                 "attnjax's masked-LM head is tied to the word embeddings")


def check_exportable(config: EncoderConfig, name: str, **expected: Any) -> None:
  """Refuses an EncoderConfig ``name`` cannot express: fields that must have given values,
  grouped-query attention and kernel options that change what attention computes."""
  for field, value in expected.items():
    if getattr(config, field) != value:
      raise ValueError(f"EncoderConfig.{field}={getattr(config, field)!r} cannot be exported "
                       f"as {name}: it needs {field}={value!r}")
  if config.num_kv_heads not in (None, config.num_heads):
    raise ValueError(f"EncoderConfig.num_kv_heads={config.num_kv_heads!r} cannot be exported "
                     f"as {name}: it has no grouped-query attention")
  semantic = sorted(set(config.kernel_options) - _NUMERICS_ONLY_OPTIONS)
  if semantic:
    raise ValueError(f"EncoderConfig.kernel_options {semantic} change what attention "
                     f"computes; {name}'s attention cannot express them")


def hidden_act(config: EncoderConfig, name: str) -> str:
  """transformers' name of the config's activation; a ValueError when it has none."""
  reverse = {("gelu", True): "gelu", ("gelu", False): "gelu_new", ("relu", False): "relu",
             ("relu", True): "relu", ("silu", False): "silu", ("silu", True): "silu"}
  act = reverse.get((config.activation, config.exact_gelu))
  if act is None:
    raise ValueError(f"EncoderConfig.activation={config.activation!r} cannot be exported as "
                     f"{name}: transformers has no hidden_act for it; use gelu, relu or silu")
  return act


def activation(source: str, field: str, value: Any) -> tuple[str, bool]:
  """``(EncoderConfig.activation, exact_gelu)`` of transformers' activation ``value``."""
  if value not in _ACTIVATIONS:
    refuse_field(source, field, value, f"supported: {sorted(_ACTIVATIONS)}")
  return _ACTIVATIONS[value]


def bert_config_from_hf(hf: Mapping[str, Any], *, source: str = "config.json",
                        defaults: Mapping[str, Any] | None = None,
                        fixed: Mapping[str, Any] | None = None,
                        **overrides: Any) -> EncoderConfig:
  """BERT's ``config.json`` as an EncoderConfig; RoBERTa's with its ``defaults`` (of absent
  keys) and ``fixed`` EncoderConfig fields (its position numbering)."""
  cfg = {**_BERT_DEFAULTS, **(defaults or {}), **{k: v for k, v in hf.items() if v is not None}}

  def refuse(field: str, why: str):
    refuse_field(source, field, cfg.get(field), why)

  if cfg["position_embedding_type"] != "absolute":
    refuse("position_embedding_type", "only 'absolute' learned positions are supported")
  if cfg.get("is_decoder"):
    refuse("is_decoder", "attnjax encoders are bidirectional")
  if cfg.get("add_cross_attention"):
    refuse("add_cross_attention", "encoder blocks have no cross-attention")
  if cfg.get("embedding_size", cfg["hidden_size"]) != cfg["hidden_size"]:
    refuse("embedding_size", f"must equal hidden_size={cfg['hidden_size']} (no projection)")
  if cfg["hidden_act"] not in _ACTIVATIONS:
    refuse("hidden_act", f"supported: {sorted(_ACTIVATIONS)}")
  if cfg["num_attention_heads"] <= 0 or cfg["hidden_size"] % cfg["num_attention_heads"]:
    refuse("num_attention_heads", f"must divide hidden_size={cfg['hidden_size']}")
  if cfg["type_vocab_size"] < 1:
    refuse("type_vocab_size", "BERT needs at least one token type")
  activation, exact_gelu = _ACTIVATIONS[cfg["hidden_act"]]
  values = dict(
      vocab_size=cfg["vocab_size"],
      max_length=cfg["max_position_embeddings"],
      hidden_size=cfg["hidden_size"],
      num_layers=cfg["num_hidden_layers"],
      num_heads=cfg["num_attention_heads"],
      mlp_dim=cfg["intermediate_size"],
      dropout_rate=float(cfg["hidden_dropout_prob"]),
      attention_dropout_rate=float(cfg["attention_probs_dropout_prob"]),
      pre_layer_norm=False,
      position="learned",
      add_cls_token=False,
      type_vocab_size=cfg["type_vocab_size"],
      embedding_layer_norm=True,
      layer_norm_epsilon=float(cfg["layer_norm_eps"]),
      activation=activation,
      exact_gelu=exact_gelu,
      pad_id=cfg["pad_token_id"],
      **(fixed or {}),
  )
  return formats.make_config(values, overrides, source)


def bert_config_to_hf(config: EncoderConfig, *, architecture: str = "BertModel",
                      name: str = "BERT",
                      fixed: Mapping[str, Any] = BERT_LIKE_FIXED) -> dict[str, Any]:
  """The ``config.json`` of a transformers BertModel equal to ``config``.

  Args:
    config: the encoder's configuration.
    architecture: the ``architectures`` entry.
    name: the architecture in error messages (RoBERTa reuses this).
    fixed: EncoderConfig fields the architecture fixes.

  Raises:
    ValueError: naming the EncoderConfig field BERT cannot express.
  """
  check_exportable(config, name, **fixed)
  if config.type_vocab_size < 1:
    raise ValueError(f"EncoderConfig.type_vocab_size={config.type_vocab_size} cannot be "
                     f"exported as {name}: it needs at least one token type")
  act = hidden_act(config, name)
  return {
      "architectures": [architecture],
      "model_type": "bert",
      "vocab_size": config.vocab_size,
      "hidden_size": config.hidden_size,
      "num_hidden_layers": config.num_layers,
      "num_attention_heads": config.num_heads,
      "intermediate_size": config.mlp_dim,
      "hidden_act": act,
      "hidden_dropout_prob": config.dropout_rate,
      "attention_probs_dropout_prob": config.attention_dropout_rate,
      "max_position_embeddings": config.max_length,
      "type_vocab_size": config.type_vocab_size,
      "layer_norm_eps": config.layer_norm_epsilon,
      "pad_token_id": config.pad_id,
      "position_embedding_type": "absolute",
      "initializer_range": 0.02,
      "tie_word_embeddings": True,
      # Parameters are exported as float32 whatever the compute dtype.
      "torch_dtype": "float32",
  }

