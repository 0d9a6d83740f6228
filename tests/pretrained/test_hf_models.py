"""load_hf_model / save_hf_model: the model_type registry and BERT through it."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax.layers import EncoderConfig
from attnjax.models import MaskedLanguageModel
from attnjax.pretrained import (HF_ARCHITECTURES, HFArchitecture, load_hf_model,
                                register_hf_architecture, save_hf_encoder, save_hf_model)


@pytest.fixture(scope="module")
def bert_mlm(tmp_path_factory):
  """A tiny BERT masked-LM checkpoint written by attnjax: (directory, model, params)."""
  config = EncoderConfig(vocab_size=20, max_length=16, hidden_size=16, num_layers=1,
                         num_heads=2, mlp_dim=24, pre_layer_norm=False, type_vocab_size=2,
                         embedding_layer_norm=True, layer_norm_epsilon=1e-12,
                         exact_gelu=True, dropout_rate=0.0)
  model = MaskedLanguageModel(config)
  params = model.init(jax.random.PRNGKey(0), jnp.ones((1, 4), jnp.int32))["params"]
  path = save_hf_encoder(params, config, tmp_path_factory.mktemp("bert"))
  return path, model, params


def test_bert_loads_as_the_masked_lm_and_saves_back(bert_mlm, tmp_path):
  path, model, params = bert_mlm
  loaded, loaded_params = load_hf_model(path)
  assert isinstance(loaded, MaskedLanguageModel)
  ids = jnp.array([[2, 5, 6, 3]])
  want = model.apply({"params": params}, ids)
  np.testing.assert_allclose(loaded.apply({"params": loaded_params}, ids), want, atol=1e-6)
  out = save_hf_model(loaded, {"params": loaded_params}, tmp_path / "out")
  assert json.loads((out / "config.json").read_text())["model_type"] == "bert"
  again, again_params = load_hf_model(out)
  np.testing.assert_allclose(again.apply({"params": again_params}, ids), want, atol=1e-6)


def test_unknown_model_type_lists_the_known_ones(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "mamba"}))
  with pytest.raises(ValueError, match=r"model_type='mamba' is not supported; known: .*bert"):
    load_hf_model(tmp_path)


def test_registry_refuses_duplicates_and_models_nobody_exports(bert_mlm, tmp_path):
  with pytest.raises(ValueError, match="already registered"):
    register_hf_architecture("bert", HFArchitecture(load=lambda *a, **k: None))
  _, model, params = bert_mlm
  pre_ln = model.clone(config=dataclasses.replace(model.config, pre_layer_norm=True))
  with pytest.raises(ValueError, match="no Hugging Face architecture can write a "
                                       "MaskedLanguageModel"):
    save_hf_model(pre_ln, params, tmp_path)
  assert "bert" in HF_ARCHITECTURES
