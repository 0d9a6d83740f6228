"""Models: parameter counts pinned per preset, builders from configs, config errors."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from attnjax.layers import Encoder, EncoderConfig
from attnjax.models import PRESETS, build_classifier, get_preset

_BERT_VOCAB, _BERT_POSITIONS = 30522, 512


def _count(module, *args) -> int:
  shapes = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), *args))
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(shapes)))


def _bert_like(preset: str) -> EncoderConfig:
  return EncoderConfig(vocab_size=_BERT_VOCAB, max_length=_BERT_POSITIONS,
                       type_vocab_size=2, embedding_layer_norm=True, pre_layer_norm=False,
                       **get_preset(preset))


def test_bert_base_sized_encoder_has_berts_parameter_count():
  # BERT-base has 109,482,240 parameters, of which its pooler (768*768 + 768) is 590,592.
  ids = jnp.zeros((1, 8), jnp.int32)
  assert _count(Encoder(_bert_like("base")), ids) == 109_482_240 - 590_592


# Pinned: changing any of these changes every checkpoint of that preset.
_PINNED = {
    "tiny": 4_369_408,
    "mini": 11_104_768,
    "small": 28_500_992,
    "medium": 41_110_528,
    "base": 108_891_648,
    "large": 334_092_288,  # + its pooler (1,049,600) = BERT-large's 335,141,888
}


# transformers.ModernBertModel(ModernBertConfig()) (ModernBERT-base's shape, 50,368-token
# vocabulary) counted on the meta device: 149,014,272.
_MODERNBERT_BASE = 149_014_272


def test_every_preset_is_pinned():
  # Architecture presets (gpt2_*, transformer_*, bart_base, t5_small) are pinned as the
  # models they belong to in tests/models/test_decoder.py.
  from tests.models.test_decoder import ARCHITECTURE_PRESETS  # pylint: disable=import-outside-toplevel
  architectures = {preset for _, preset, _, _ in ARCHITECTURE_PRESETS}
  assert sorted(PRESETS.names()) == sorted(set(_PINNED) | architectures | {"modernbert_base"})


def test_modernbert_base_preset_has_modernberts_parameter_count():
  config = EncoderConfig(vocab_size=50_368, max_length=8192, **get_preset("modernbert_base"))
  ids = jnp.zeros((1, 8), jnp.int32)
  assert _count(Encoder(config), ids) == _MODERNBERT_BASE


def test_modernbert_options_come_through_config_model():
  model = build_classifier(
      _model_config(preset="modernbert_base", num_layers=4, hidden_size=None, num_heads=None,
                    mlp_dim=None, position=None, pre_layer_norm=None, add_cls_token=True,
                    local_window=16),
      vocab_size=10, max_length=6, num_classes=3)
  enc = model.encoder
  assert (enc.num_layers, enc.hidden_size, enc.local_window, enc.global_every) == (4, 768, 16, 3)
  assert enc.gated_mlp and not enc.use_bias and enc.position == "rotary"
  assert [enc.is_local_layer(i) for i in range(4)] == [False, True, True, False]
  assert enc.layer_kernel_options(1)["local_window_size"] == (8, 8)
  assert enc.layer_rotary_base(0) == 160_000.0 and enc.layer_rotary_base(1) == 10_000.0


@pytest.mark.parametrize("preset", sorted(_PINNED))
def test_preset_parameter_counts(preset):
  ids = jnp.zeros((1, 8), jnp.int32)
  assert _count(Encoder(_bert_like(preset)), ids) == _PINNED[preset]


def _model_config(**kw):
  c = ml_collections.ConfigDict(dict(
      preset="", num_layers=1, hidden_size=16, num_heads=2, mlp_dim=32, dropout_rate=0.0,
      attention_dropout_rate=0.0, pre_layer_norm=True, position="learned", add_cls_token=True,
      pooling="cls", head_dropout_rate=0.0, dtype="float32",
      attention=ml_collections.ConfigDict(dict(kernel="dot_product"))))
  c.update(kw)
  return c


def test_build_classifier_gives_logits_per_class():
  model = build_classifier(_model_config(), vocab_size=10, max_length=6, num_classes=3)
  ids = jnp.array([[1, 2, 3, 0, 0, 0]])
  logits, _ = model.init_with_output(jax.random.PRNGKey(0), ids)
  assert logits.shape == (1, 3) and logits.dtype == jnp.float32


def test_preset_fields_are_overridden_by_explicit_ones():
  model = build_classifier(_model_config(preset="tiny", num_layers=None, hidden_size=None,
                                         num_heads=None, mlp_dim=64),
                           vocab_size=10, max_length=6, num_classes=3)
  assert (model.encoder.num_layers, model.encoder.hidden_size, model.encoder.mlp_dim) == (2, 128, 64)


def test_build_errors_name_the_key():
  with pytest.raises(ValueError, match="unknown pooling 'max'"):
    build_classifier(_model_config(pooling="max"), vocab_size=10, max_length=6, num_classes=3)
  with pytest.raises(ValueError, match="unknown model preset 'huge'"):
    build_classifier(_model_config(preset="huge"), vocab_size=10, max_length=6, num_classes=3)
  with pytest.raises(ValueError, match="add_cls_token=True"):
    build_classifier(_model_config(add_cls_token=False), vocab_size=10, max_length=6,
                     num_classes=3)
  with pytest.raises(ValueError, match="config.model.dtype='float8'"):
    build_classifier(_model_config(dtype="float8"), vocab_size=10, max_length=6, num_classes=3)
