"""ModernBERT checkpoints (Warner et al. 2024) as attnjax's Encoder with the ModernBERT options.

ModernBERT is a pre-LN encoder without biases (by default): token embeddings then a
LayerNorm, no LayerNorm before the first block's attention, RoPE in every layer, GeGLU
feed-forward, a final LayerNorm, and a schedule of attention layers: ``layer_types`` (by
default every third layer, from the first, ``full_attention``; the others
``sliding_attention`` where query ``i`` sees keys with ``|i - j| <= local_attention // 2``),
each kind with its own RoPE base (``rope_parameters``). In attnjax:
``EncoderConfig(global_every, local_window, rotary_base, local_rotary_base, gated_mlp,
use_bias=False, skip_first_attention_norm=True, ...)``.

Tensor names (under ``model.`` in ModernBertForMaskedLM): ``embeddings.tok_embeddings``,
``embeddings.norm``, ``layers.{i}.attn_norm`` (not in layer 0), ``layers.{i}.attn.Wqkv``
(queries, keys and values stacked along the output features; attnjax splits it into its
three projections), ``layers.{i}.attn.Wo``, ``layers.{i}.mlp_norm``, ``layers.{i}.mlp.Wi``
(the activated half, then the gate: attnjax's gated ``wi``), ``layers.{i}.mlp.Wo``,
``final_norm``; the masked-LM head ``head.dense``, ``head.norm`` and ``decoder`` (weight
tied to the token embeddings, bias ``decoder_bias``).
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import numpy as np

from attnjax.layers import EncoderConfig
from attnjax.pretrained import formats, hf_config
from attnjax.pretrained.formats import Entry, dense, heads_in, heads_out, identity, norm

# ModernBertConfig's defaults (ModernBERT-base): transformers fills a missing key with these.
_DEFAULTS = {
    "vocab_size": 50368, "hidden_size": 768, "intermediate_size": 1152,
    "num_hidden_layers": 22, "num_attention_heads": 12, "hidden_activation": "gelu",
    "max_position_embeddings": 8192, "norm_eps": 1e-5, "norm_bias": False,
    "pad_token_id": 50283, "attention_bias": False, "attention_dropout": 0.0,
    "local_attention": 128, "embedding_dropout": 0.0, "mlp_bias": False, "mlp_dropout": 0.0,
    "decoder_bias": True, "classifier_activation": "gelu", "classifier_bias": False,
    "global_attn_every_n_layers": 3, "global_rope_theta": 160_000.0,
    "local_rope_theta": 10_000.0, "tie_word_embeddings": True,
}
_FULL, _SLIDING = "full_attention", "sliding_attention"
# Names of the three parts of a fused Wqkv, as the entries see them (see _split).
_QKV = ("Wq", "Wk", "Wv")


def _schedule(cfg: Mapping[str, Any], source: str) -> int:
  """``global_every`` of ``layer_types``: global layers at multiples of it (0 = none)."""
  layers = cfg["num_hidden_layers"]
  types = cfg.get("layer_types")
  if types is None:
    every = cfg["global_attn_every_n_layers"]
    types = [_SLIDING if i % every else _FULL for i in range(layers)]
  types = list(types)
  full = [i for i, t in enumerate(types) if t == _FULL]
  every = 0 if not full else (full[1] - full[0] if len(full) > 1 else layers)
  want = [_FULL if every and i % every == 0 else _SLIDING for i in range(layers)]
  if types != want:
    hf_config.refuse_field(source, "layer_types", types,
                           f"attnjax schedules {_FULL!r} at layers 0, N, 2N, ... and "
                           f"{_SLIDING!r} elsewhere, for {layers} layers")
  return every


def _rope_bases(cfg: Mapping[str, Any], source: str) -> tuple[float, float]:
  """(global, local) RoPE bases from ``rope_parameters`` or the older ``*_rope_theta``."""
  if cfg.get("rope_scaling"):
    hf_config.refuse_field(source, "rope_scaling", cfg["rope_scaling"],
                           "attnjax's RoPE has no scaling")
  rope = cfg.get("rope_parameters") or {}
  bases = []
  for kind, old in ((_FULL, "global_rope_theta"), (_SLIDING, "local_rope_theta")):
    params = rope.get(kind) or {}
    if params.get("rope_type", "default") != "default":
      hf_config.refuse_field(source, "rope_parameters", rope,
                             "attnjax's RoPE is rope_type 'default'")
    bases.append(float(params.get("rope_theta", cfg[old])))
  return bases[0], bases[1]


def config_from_hf(hf: Mapping[str, Any], *, source: str = "config.json",
                   **overrides: Any) -> EncoderConfig:
  """ModernBERT's ``config.json`` as an EncoderConfig."""
  cfg = {**_DEFAULTS, **{k: v for k, v in hf.items() if v is not None}}
  for field in ("attention_bias", "mlp_bias"):
    if cfg[field] != cfg["norm_bias"]:
      hf_config.refuse_field(source, field, cfg[field],
                             f"attnjax has one use_bias for projections and norms; "
                             f"norm_bias={cfg['norm_bias']}")
  heads = cfg["num_attention_heads"]
  if heads <= 0 or cfg["hidden_size"] % heads:
    hf_config.refuse_field(source, "num_attention_heads", heads,
                           f"must divide hidden_size={cfg['hidden_size']}")
  activation, exact_gelu = hf_config.activation(source, "hidden_activation",
                                                cfg["hidden_activation"])
  global_base, local_base = _rope_bases(cfg, source)
  values = dict(
      vocab_size=cfg["vocab_size"], max_length=cfg["max_position_embeddings"],
      hidden_size=cfg["hidden_size"], num_layers=cfg["num_hidden_layers"], num_heads=heads,
      mlp_dim=cfg["intermediate_size"], dropout_rate=float(cfg["mlp_dropout"]),
      attention_dropout_rate=float(cfg["attention_dropout"]), pre_layer_norm=True,
      position="rotary", add_cls_token=False, type_vocab_size=0, embedding_layer_norm=True,
      layer_norm_epsilon=float(cfg["norm_eps"]), activation=activation,
      exact_gelu=exact_gelu, use_bias=bool(cfg["norm_bias"]), rotary_base=global_base,
      local_rotary_base=local_base, global_every=_schedule(cfg, source),
      local_window=int(cfg["local_attention"]), gated_mlp=True,
      skip_first_attention_norm=True, pad_id=cfg["pad_token_id"])
  return formats.make_config(values, overrides, source)


def config_to_hf(config: EncoderConfig, *,
                 architecture: str = "ModernBertModel") -> dict[str, Any]:
  """The ``config.json`` of a transformers ModernBertModel equal to ``config``."""
  hf_config.check_exportable(config, "ModernBERT", pre_layer_norm=True,
                             embedding_layer_norm=True, position="rotary",
                             add_cls_token=False, type_vocab_size=0, gated_mlp=True,
                             skip_first_attention_norm=True, relative_buckets=0,
                             positions_from_mask=False)
  act = hf_config.hidden_act(config, "ModernBERT")
  local_base = config.rotary_base if config.local_rotary_base is None else config.local_rotary_base
  return {
      "architectures": [architecture],
      "model_type": "modernbert",
      "vocab_size": config.vocab_size,
      "hidden_size": config.hidden_size,
      "intermediate_size": config.mlp_dim,
      "num_hidden_layers": config.num_layers,
      "num_attention_heads": config.num_heads,
      "hidden_activation": act,
      "max_position_embeddings": config.max_length,
      "norm_eps": config.layer_norm_epsilon,
      "norm_bias": config.use_bias,
      "attention_bias": config.use_bias,
      "mlp_bias": config.use_bias,
      "classifier_bias": config.use_bias,
      "classifier_activation": act,
      "decoder_bias": True,
      "pad_token_id": config.pad_id,
      # EncoderConfig knows no CLS/SEP ids (the tokenizer does); ModernBertConfig's defaults
      # (50281/50282) would point outside a smaller vocabulary.
      "bos_token_id": None, "eos_token_id": None, "cls_token_id": None, "sep_token_id": None,
      "attention_dropout": config.attention_dropout_rate,
      "embedding_dropout": config.dropout_rate,
      "mlp_dropout": config.dropout_rate,
      # A config without a schedule is all global; its local_attention is never read.
      "local_attention": config.local_window or _DEFAULTS["local_attention"],
      "layer_types": [_SLIDING if config.is_local_layer(i) else _FULL
                      for i in range(config.num_layers)],
      "rope_parameters": {
          _FULL: {"rope_type": "default", "rope_theta": config.rotary_base},
          _SLIDING: {"rope_type": "default", "rope_theta": local_base},
      },
      "tie_word_embeddings": True,
      "initializer_range": 0.02,
      "torch_dtype": "float32",
  }


def entries(config: EncoderConfig, *, pooler: bool, mlm_head: bool) -> Iterator[Entry]:
  """Every tensor of a ModernBERT encoder (``Wqkv`` as ``Wq``/``Wk``/``Wv``, see ``_split``)."""
  del pooler  # ModernBERT has none
  bias = config.use_bias
  enc = ("encoder",)
  emb = enc + ("embeddings",)
  yield ("embeddings.tok_embeddings.weight", emb + ("word_embeddings", "embedding"),
         identity, identity)
  yield from norm("embeddings.norm", emb + ("layer_norm",), bias=bias)
  for i in range(config.num_layers):
    hf, fx = f"layers.{i}", enc + (f"layer_{i}",)
    if i > 0:
      yield from norm(f"{hf}.attn_norm", fx + ("attention_norm",), bias=bias)
    for proj, name in zip(_QKV, ("query", "key", "value")):
      yield from heads_in(f"{hf}.attn.{proj}", fx + ("attention", name), config, bias=bias)
    yield from heads_out(f"{hf}.attn.Wo", fx + ("attention", "out"), config, bias=bias)
    yield from norm(f"{hf}.mlp_norm", fx + ("mlp_norm",), bias=bias)
    yield from dense(f"{hf}.mlp.Wi", fx + ("mlp", "wi"), bias=bias)
    yield from dense(f"{hf}.mlp.Wo", fx + ("mlp", "wo"), bias=bias)
  yield from norm("final_norm", enc + ("final_norm",), bias=bias)
  if mlm_head:
    yield from formats.mlm_head("head.dense", "head.norm", "decoder.bias", bias=bias)


def _split(tensors: dict[str, np.ndarray], config: EncoderConfig) -> dict[str, np.ndarray]:
  """``Wqkv`` -> ``Wq``, ``Wk``, ``Wv``; a head without ``decoder.bias`` gets zeros."""
  out = dict(tensors)
  for i in range(config.num_layers):
    for kind in ("weight", "bias"):
      fused = out.get(f"layers.{i}.attn.Wqkv.{kind}")
      # A first axis that is not 3 * D is left fused: the unused-tensor check names it.
      if fused is not None and fused.shape[0] == 3 * config.hidden_size:
        del out[f"layers.{i}.attn.Wqkv.{kind}"]
        for proj, part in zip(_QKV, np.split(fused, 3, axis=0)):
          out[f"layers.{i}.attn.{proj}.{kind}"] = part
  if "head.dense.weight" in out and "decoder.bias" not in out:
    out["decoder.bias"] = np.zeros((config.vocab_size,), np.float32)  # decoder_bias=False
  return out


def _fuse(tensors: dict[str, np.ndarray], config: EncoderConfig) -> dict[str, np.ndarray]:
  """Inverse of :func:`_split`: ``Wq``, ``Wk``, ``Wv`` -> ``Wqkv``."""
  out = dict(tensors)
  for i in range(config.num_layers):
    for kind in ("weight", "bias"):
      names = [f"layers.{i}.attn.{proj}.{kind}" for proj in _QKV]
      if names[0] in out:
        out[f"layers.{i}.attn.Wqkv.{kind}"] = np.concatenate([out.pop(n) for n in names])
  return out


def _describe(config: EncoderConfig) -> str:
  return (f"hidden_size={config.hidden_size}, num_attention_heads={config.num_heads}, "
          f"intermediate_size={config.mlp_dim}, vocab_size={config.vocab_size}, "
          f"num_hidden_layers={config.num_layers}, norm_bias={config.use_bias}")


def _check_mlm_head(hf: Mapping[str, Any], config: EncoderConfig, source: str) -> None:
  """attnjax's head: the encoder's activation and use_bias, tied output weights."""
  cfg = {**_DEFAULTS, **{k: v for k, v in hf.items() if v is not None}}
  if hf_config.activation(source, "classifier_activation", cfg["classifier_activation"]) != (
      config.activation, config.exact_gelu):
    hf_config.refuse_field(source, "classifier_activation", cfg["classifier_activation"],
                           f"attnjax's head uses hidden_activation={cfg['hidden_activation']!r}")
  if cfg["classifier_bias"] != config.use_bias:
    hf_config.refuse_field(source, "classifier_bias", cfg["classifier_bias"],
                           f"attnjax's head follows norm_bias={config.use_bias}")
  hf_config.refuse_untied_head(hf, source)


MODERNBERT = formats.register_format(formats.EncoderFormat(
    model_type="modernbert",
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    entries=entries,
    architectures=("ModernBertModel", "ModernBertForMaskedLM"),
    base_prefix="model.",
    head_prefixes=("head.", "decoder."),
    head_marker="head.dense.weight",
    pooler_marker=None,
    encoder_prefixes=("embeddings.", "layers.", "final_norm."),
    describe=_describe,
    split=_split,
    fuse=_fuse,
    check_mlm_head=_check_mlm_head,
))
