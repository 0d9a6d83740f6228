"""DistilBERT checkpoints (Sanh et al. 2019): a post-LN BERT encoder under other names.

DistilBERT has BERT's blocks and learned positions (or, with ``sinusoidal_pos_embds``, a
fixed sinusoidal table that transformers still stores as ``position_embeddings``), but no
token types and no pooler; its LayerNorms use epsilon 1e-12. Tensor names:
``embeddings.{word_embeddings, position_embeddings, LayerNorm}``,
``transformer.layer.{i}.attention.{q_lin, k_lin, v_lin, out_lin}``, ``sa_layer_norm``,
``ffn.{lin1, lin2}``, ``output_layer_norm``; under ``distilbert.`` in DistilBertForMaskedLM,
whose head is ``vocab_transform``, ``vocab_layer_norm`` and ``vocab_projector`` (its weight
tied to the word embeddings).
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

from attnjax.layers import EncoderConfig
from attnjax.pretrained import formats, hf_config
from attnjax.pretrained.formats import Entry, dense, heads_in, heads_out, identity, norm

# DistilBertConfig's defaults: transformers fills a missing key with these.
_DEFAULTS = {
    "vocab_size": 30522, "max_position_embeddings": 512, "sinusoidal_pos_embds": False,
    "n_layers": 6, "n_heads": 12, "dim": 768, "hidden_dim": 3072, "dropout": 0.1,
    "attention_dropout": 0.1, "activation": "gelu", "pad_token_id": 0,
}
# DistilBERT's LayerNorms are built with eps=1e-12 (not a config field).
_EPS = 1e-12


def config_from_hf(hf: Mapping[str, Any], *, source: str = "config.json",
                   **overrides: Any) -> EncoderConfig:
  """DistilBERT's ``config.json`` as an EncoderConfig (post-LN, no token types)."""
  cfg = {**_DEFAULTS, **{k: v for k, v in hf.items() if v is not None}}
  if cfg["n_heads"] <= 0 or cfg["dim"] % cfg["n_heads"]:
    hf_config.refuse_field(source, "n_heads", cfg["n_heads"], f"must divide dim={cfg['dim']}")
  activation, exact_gelu = hf_config.activation(source, "activation", cfg["activation"])
  values = dict(
      vocab_size=cfg["vocab_size"], max_length=cfg["max_position_embeddings"],
      hidden_size=cfg["dim"], num_layers=cfg["n_layers"], num_heads=cfg["n_heads"],
      mlp_dim=cfg["hidden_dim"], dropout_rate=float(cfg["dropout"]),
      attention_dropout_rate=float(cfg["attention_dropout"]), pre_layer_norm=False,
      position="learned", add_cls_token=False, type_vocab_size=0, embedding_layer_norm=True,
      layer_norm_epsilon=_EPS, activation=activation, exact_gelu=exact_gelu,
      pad_id=cfg["pad_token_id"])
  return formats.make_config(values, overrides, source)


def config_to_hf(config: EncoderConfig, *,
                 architecture: str = "DistilBertModel") -> dict[str, Any]:
  """The ``config.json`` of a transformers DistilBertModel equal to ``config``."""
  hf_config.check_exportable(config, "DistilBERT", **hf_config.BERT_LIKE_FIXED,
                             type_vocab_size=0, layer_norm_epsilon=_EPS)
  return {
      "architectures": [architecture],
      "model_type": "distilbert",
      "vocab_size": config.vocab_size,
      "max_position_embeddings": config.max_length,
      # The exported table is the trained one, whatever it started as.
      "sinusoidal_pos_embds": False,
      "n_layers": config.num_layers,
      "n_heads": config.num_heads,
      "dim": config.hidden_size,
      "hidden_dim": config.mlp_dim,
      "dropout": config.dropout_rate,
      "attention_dropout": config.attention_dropout_rate,
      "activation": hf_config.hidden_act(config, "DistilBERT"),
      "pad_token_id": config.pad_id,
      "initializer_range": 0.02,
      "tie_word_embeddings": True,
      "torch_dtype": "float32",
  }


def entries(config: EncoderConfig, *, pooler: bool, mlm_head: bool) -> Iterator[Entry]:
  """Every tensor of a DistilBERT encoder, as HF names it and where attnjax keeps it."""
  del pooler  # DistilBERT has none (pooler_marker is None)
  enc = ("encoder",)
  emb = enc + ("embeddings",)
  yield ("embeddings.word_embeddings.weight", emb + ("word_embeddings", "embedding"),
         identity, identity)
  yield "embeddings.position_embeddings.weight", emb + ("position_embeddings",), identity, identity
  yield from norm("embeddings.LayerNorm", emb + ("layer_norm",))
  for i in range(config.num_layers):
    hf, fx = f"transformer.layer.{i}", enc + (f"layer_{i}",)
    for proj, name in (("q_lin", "query"), ("k_lin", "key"), ("v_lin", "value")):
      yield from heads_in(f"{hf}.attention.{proj}", fx + ("attention", name), config)
    yield from heads_out(f"{hf}.attention.out_lin", fx + ("attention", "out"), config)
    yield from norm(f"{hf}.sa_layer_norm", fx + ("attention_norm",))
    yield from dense(f"{hf}.ffn.lin1", fx + ("mlp", "wi"))
    yield from dense(f"{hf}.ffn.lin2", fx + ("mlp", "wo"))
    yield from norm(f"{hf}.output_layer_norm", fx + ("mlp_norm",))
  if mlm_head:
    yield from formats.mlm_head("vocab_transform", "vocab_layer_norm", "vocab_projector.bias")


def _describe(config: EncoderConfig) -> str:
  return (f"dim={config.hidden_size}, n_heads={config.num_heads}, hidden_dim={config.mlp_dim}, "
          f"vocab_size={config.vocab_size}, max_position_embeddings={config.max_length}, "
          f"n_layers={config.num_layers}")


def _check_mlm_head(hf: Mapping[str, Any], config: EncoderConfig, source: str) -> None:
  del config
  hf_config.refuse_untied_head(hf, source)


DISTILBERT = formats.register_format(formats.EncoderFormat(
    model_type="distilbert",
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    entries=entries,
    architectures=("DistilBertModel", "DistilBertForMaskedLM"),
    base_prefix="distilbert.",
    head_prefixes=("vocab_",),
    head_marker="vocab_projector.bias",
    pooler_marker=None,
    encoder_prefixes=("embeddings.", "transformer."),
    describe=_describe,
    check_mlm_head=_check_mlm_head,
))
