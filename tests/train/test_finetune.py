"""Fine-tuning: LoRA, freezing, layer-wise decay, initial weights (HF, pretraining run), export."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from attnjax import data as data_lib
from attnjax.layers import Encoder, EncoderConfig
from attnjax.models import encoder_config, get_preset
from attnjax.pretrained import BertEncoder, load_hf_encoder, save_hf_encoder
from attnjax.train import finetune, train_and_evaluate
from attnjax.train.loop import create_setup, initialise_from_pretrained
from attnjax.train.parallel import build_strategy


def _leaves(tree, prefix):
  return {k: v for k, v in finetune._flatten(tree).items() if k.startswith(prefix)}  # pylint: disable=protected-access


def _bert_checkpoint(path, max_length=80):
  """A tiny random BERT on digits' 18-token vocabulary, written as a HF directory."""
  enc = EncoderConfig(vocab_size=18, max_length=max_length, hidden_size=32, num_layers=2,
                      num_heads=4, mlp_dim=64, pre_layer_norm=False, type_vocab_size=2,
                      embedding_layer_norm=True, layer_norm_epsilon=1e-12, exact_gelu=True)
  params = BertEncoder(enc).init(jax.random.PRNGKey(5), jnp.ones((1, 4), jnp.int32))["params"]
  save_hf_encoder(params, enc, path)
  return str(path)


def _hf_config(smoke_config, hf_dir, lora=0):
  config = smoke_config
  config.model.update(finetune.model_fields_from_hf(hf_dir))
  config.model.pooling = "mean"
  config.init.hf_path = hf_dir
  config.finetune = {"layer_decay": 1.0, "freeze_embeddings": False, "freeze_layers": 0,
                     "lora": {"rank": lora, "alpha": 8.0, "targets": "query,key,value,out",
                              "train_head": True}}
  return config


def _init(config):
  info = data_lib.get_dataset_info(config.data)
  setup = create_setup(config, info)
  strategy = build_strategy(config.parallel, global_batch_size=config.train.batch_size)
  abstract = jax.eval_shape(setup.init_state, jax.random.PRNGKey(0))
  state = strategy.init_state(setup.init_state, abstract, jax.random.PRNGKey(0))
  return setup, strategy, state


@pytest.mark.parametrize("lora", [0, 4])
def test_encoder_initialised_from_a_hugging_face_checkpoint(smoke_config, tmp_path, lora):
  hf_dir = _bert_checkpoint(tmp_path / "hf")
  config = _hf_config(smoke_config, hf_dir, lora)
  _, strategy, state = _init(config)
  state = initialise_from_pretrained(config, state, strategy, is_main=False)
  _, loaded = load_hf_encoder(hf_dir)
  params = state.params["model"] if lora else state.params
  got, want = _leaves(params["encoder"], ""), _leaves(loaded["encoder"], "")
  assert set(got) == set(want)
  for path, value in want.items():
    if path.endswith("position_embeddings"):
      value = value[:64]  # the checkpoint has 80 positions, digits needs 64
    np.testing.assert_array_equal(np.asarray(got[path]), value)


def test_model_fields_from_a_modernbert_checkpoint_rebuild_its_encoder(tmp_path):
  # The fields config.model takes from a checkpoint carry ModernBERT's options, so the
  # encoder built from them has the checkpoint's parameter tree (shapes only: no compile).
  preset = {**get_preset("modernbert_base"), "num_layers": 3, "hidden_size": 16,
            "num_heads": 2, "mlp_dim": 8, "local_window": 4}
  enc = EncoderConfig(vocab_size=18, max_length=64, **preset)
  ids = jnp.ones((1, 4), jnp.int32)
  shapes = jax.eval_shape(lambda: BertEncoder(enc).init(jax.random.PRNGKey(0), ids))["params"]
  params = jax.tree_util.tree_map(lambda s: np.ones(s.shape, np.float32), shapes)
  save_hf_encoder(params, enc, tmp_path / "mb", model_type="modernbert")
  fields = finetune.model_fields_from_hf(str(tmp_path / "mb"))
  assert (fields["global_every"], fields["local_window"], fields["gated_mlp"]) == (3, 4, True)
  built = encoder_config(ml_collections.ConfigDict(fields), vocab_size=18, max_length=64)
  got = jax.eval_shape(lambda: Encoder(built).init(jax.random.PRNGKey(0), ids))["params"]
  assert jax.tree_util.tree_map(lambda s: s.shape, got) == jax.tree_util.tree_map(
      lambda s: s.shape, shapes["encoder"])


def test_mismatched_architecture_names_the_leaf(smoke_config, tmp_path):
  hf_dir = _bert_checkpoint(tmp_path / "hf")
  config = _hf_config(smoke_config, hf_dir)
  config.model.mlp_dim = 48
  _, strategy, state = _init(config)
  with pytest.raises(ValueError, match=r"config.model does not match Hugging Face checkpoint "
                     r".*: encoder/layer_0/mlp/wi/bias has shape \[64\] there but \[48\]"):
    initialise_from_pretrained(config, state, strategy, is_main=False)


def test_lora_starts_at_the_base_model_and_trains_only_adapters_and_head(smoke_config, tmp_path):
  config = _hf_config(smoke_config, _bert_checkpoint(tmp_path / "hf"), lora=4)
  setup, _, state = _init(config)
  model = setup.task.model
  x = jnp.asarray(np.random.default_rng(0).integers(1, 18, (3, 64)), jnp.int32)
  base = model.apply({"params": state.params["model"]}, x)
  np.testing.assert_array_equal(state.apply_fn({"params": state.params}, x), base)
  # Non-zero B: the wrapped apply equals the base model applied to the merged weights.
  lora = jax.tree_util.tree_map(lambda a: a + 0.1, state.params["lora"])
  params = {"model": state.params["model"], "lora": lora}
  merged = finetune.merge_lora(params, setup.finetuning.lora_scale)
  np.testing.assert_allclose(state.apply_fn({"params": params}, x),
                             model.apply({"params": merged}, x), rtol=1e-6, atol=1e-6)
  assert not np.allclose(model.apply({"params": merged}, x), base)
  q = merged["encoder"]["layer_1"]["attention"]["query"]["kernel"]
  a = lora["encoder"]["layer_1"]["attention"]["query"]
  np.testing.assert_allclose(
      q, params["model"]["encoder"]["layer_1"]["attention"]["query"]["kernel"]
      + 2.0 * (a["a"] @ a["b"]).reshape(q.shape), rtol=1e-6)  # alpha / rank = 8 / 4

  mask = finetune.trainable_mask(state.params, setup.finetuning, setup.task.model.param_groups)
  counts = finetune.parameter_counts(state.params, mask)
  adapters = 2 * 4 * 4 * (32 + 32)  # layers x targets x rank x (in + out)
  head = 32 * 10 + 10
  assert counts["trainable"] == adapters + head
  assert counts["total"] == sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(
      state.params))
  # Adam moments exist for the trainable leaves only.
  moments = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(state.opt_state)
                if x.ndim > 0)
  assert moments == 2 * counts["trainable"]


def test_frozen_leaves_stay_put_and_layer_decay_scales(smoke_config, tmp_path):
  config = smoke_config
  config.finetune = {"layer_decay": 0.5, "freeze_embeddings": True, "freeze_layers": 0,
                     "lora": {"rank": 0}}
  config.model.dropout_rate = 0.0
  workdir = str(tmp_path / "run")
  train_and_evaluate(config, workdir)
  setup, _, state = _init(config)
  trained = finetune.read_workdir_params(workdir)
  init = jax.tree_util.tree_map(np.asarray, state.params)
  for path, value in _leaves(init["encoder"]["embeddings"], "").items():
    np.testing.assert_array_equal(_leaves(trained["encoder"]["embeddings"], "")[path], value)
  assert not np.array_equal(trained["head"]["kernel"], init["head"]["kernel"])
  scales = finetune.layer_scales(init, setup.finetuning, setup.task.model.param_groups)
  assert scales["encoder"]["embeddings"]["position_embeddings"] == 0.25  # 0.5 ** (L + 1)
  assert scales["encoder"]["layer_0"]["mlp"]["wi"]["kernel"] == 0.5      # 0.5 ** L
  assert scales["head"]["kernel"] == 1.0
  with open(os.path.join(workdir, "parameters.json")) as f:
    counts = json.load(f)
  assert 0 < counts["trainable"] < counts["total"]


def test_lora_run_exports_merged_weights(smoke_config, tmp_path):
  config = _hf_config(smoke_config, _bert_checkpoint(tmp_path / "hf"), lora=4)
  config.optimizer.learning_rate = 0.05  # adapters move visibly in 3 steps
  workdir = str(tmp_path / "run")
  train_and_evaluate(config, workdir)
  params = finetune.read_workdir_params(workdir)
  assert set(params) == {"model", "lora"}
  out = finetune.export_hf(workdir, str(tmp_path / "export"))
  _, exported = load_hf_encoder(out)
  merged = finetune.merge_lora(params, 2.0)
  q = "layer_0/attention/query/kernel"
  np.testing.assert_allclose(_leaves(exported["encoder"], q)[q],
                             _leaves(merged["encoder"], q)[q], rtol=1e-6, atol=1e-7)
  assert not np.allclose(_leaves(exported["encoder"], q)[q],
                         _leaves(params["model"]["encoder"], q)[q])


def test_finetune_config_starts_from_a_pretraining_workdir(data_dir, tmp_path, capsys):
  from configs import finetune as finetune_config  # pylint: disable=import-outside-toplevel
  from configs import pretrain_mlm  # pylint: disable=import-outside-toplevel
  pre = pretrain_mlm.get_config("smoke")
  pre.data.data_dir = data_dir
  pre_dir = str(tmp_path / "mlm")
  train_and_evaluate(pre, pre_dir)
  assert os.path.isfile(os.path.join(pre_dir, "tokenizer.json"))
  config = finetune_config.get_config(f"init=workdir:{pre_dir},smoke")
  config.data.data_dir = data_dir
  ft_dir = str(tmp_path / "ft")
  final = train_and_evaluate(config, ft_dir)
  assert "initialised the encoder from attnjax run" in capsys.readouterr().out
  assert final["num_examples"] > 0 and "f1_macro" in final
  before = finetune.read_workdir_params(pre_dir)["encoder"]["embeddings"]
  after = finetune.read_workdir_params(ft_dir)["encoder"]["embeddings"]
  word = before["word_embeddings"]["embedding"]
  assert after["word_embeddings"]["embedding"].shape == word.shape
  np.testing.assert_allclose(after["word_embeddings"]["embedding"], word, atol=1e-2)
