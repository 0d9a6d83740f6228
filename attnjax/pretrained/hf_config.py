"""Hugging Face BERT ``config.json`` <-> EncoderConfig, refusing what cannot be represented."""

from __future__ import annotations

from typing import Any, Mapping

from attnjax.layers import EncoderConfig

SUPPORTED_MODEL_TYPES = ("bert",)

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

# Kernel options that only choose how attention is computed, not what it computes; any other
# option (windows, causal masks, ALiBi, soft caps, ...) makes a model BERT cannot express.
_NUMERICS_ONLY_OPTIONS = frozenset({"implementation", "block_q", "block_kv", "precision"})


def encoder_config_from_hf(hf: Mapping[str, Any], *, source: str = "config.json",
                           **overrides: Any) -> EncoderConfig:
  """Builds the EncoderConfig of a BERT checkpoint from its ``config.json`` contents.

  Args:
    hf: the parsed ``config.json``.
    source: file name used in error messages.
    **overrides: EncoderConfig fields to set afterwards (``kernel``, ``kernel_options``,
      ``dtype``, dropout rates, ...); architecture fields cannot be overridden.

  Returns:
    A post-LN EncoderConfig with learned positions, token types and embedding LayerNorm.

  Raises:
    ValueError: naming the field of ``config.json`` that attnjax cannot represent.
  """
  model_type = hf.get("model_type")
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise ValueError(f"{source}: model_type={model_type!r} is not supported; attnjax loads "
                     f"the BERT family {SUPPORTED_MODEL_TYPES} (RoBERTa offsets its positions, "
                     "others differ in layout)")
  cfg = {**_BERT_DEFAULTS, **{k: v for k, v in hf.items() if v is not None}}

  def refuse(field: str, why: str):
    raise ValueError(f"{source}: {field}={cfg.get(field)!r} cannot be represented: {why}")

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
  )
  architecture = set(values) - {"dropout_rate", "attention_dropout_rate", "pad_id"}
  fixed = architecture & set(overrides)
  if fixed:
    raise ValueError(f"cannot override architecture fields {sorted(fixed)} of a checkpoint")
  values.update(overrides)
  try:
    return EncoderConfig(**values)
  except ValueError as e:
    raise ValueError(f"{source}: {e}") from e


def hf_config_from_encoder(config: EncoderConfig, *,
                           architecture: str = "BertModel") -> dict[str, Any]:
  """The ``config.json`` of a transformers BertModel equal to ``config``.

  Raises:
    ValueError: naming the EncoderConfig field BERT cannot express.
  """
  def refuse(field: str, why: str):
    raise ValueError(f"EncoderConfig.{field}={getattr(config, field)!r} cannot be exported "
                     f"as BERT: {why}")

  if config.pre_layer_norm:
    refuse("pre_layer_norm", "BERT blocks are post-LN")
  if not config.embedding_layer_norm:
    refuse("embedding_layer_norm", "BERT normalises the summed embeddings")
  if config.position != "learned":
    refuse("position", "BERT has learned absolute positions")
  if config.add_cls_token:
    refuse("add_cls_token", "BERT has no CLS vector outside the vocabulary")
  if config.num_kv_heads not in (None, config.num_heads):
    refuse("num_kv_heads", "BERT has no grouped-query attention")
  if config.type_vocab_size < 1:
    refuse("type_vocab_size", "BERT needs at least one token type")
  if config.relative_buckets:
    refuse("relative_buckets", "BERT has no relative position bias")
  semantic = sorted(set(config.kernel_options) - _NUMERICS_ONLY_OPTIONS)
  if semantic:
    raise ValueError(f"EncoderConfig.kernel_options {semantic} change what attention "
                     "computes; BERT's full softmax attention cannot express them")
  reverse = {("gelu", True): "gelu", ("gelu", False): "gelu_new", ("relu", False): "relu",
             ("relu", True): "relu", ("silu", False): "silu", ("silu", True): "silu"}
  act = reverse.get((config.activation, config.exact_gelu))
  if act is None:
    refuse("activation", "transformers has no hidden_act for it; use gelu, relu or silu")
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

