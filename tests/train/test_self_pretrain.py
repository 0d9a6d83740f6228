"""Self-pretraining (config.self_pretrain): masked-LM on the task's own inputs, then the task."""

import dataclasses
import json
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import data as data_lib
from attnjax.train import finetune as finetune_lib
from attnjax.train import read_metrics, tasks, train_and_evaluate
from attnjax.train.loop import self_pretrain_config


def test_model_vocab_adds_a_mask_id_only_when_self_pretraining(smoke_config):
  info = data_lib.get_dataset_info(smoke_config.data)  # digits: pixel ids, no [MASK]
  assert tasks.model_vocab(smoke_config, info) == (info.vocab_size, -1)
  with pytest.raises(ValueError, match="needs a dataset with a mask token"):
    smoke_config.task.name = "masked_lm"
    tasks.build_task(smoke_config, info)
  smoke_config.self_pretrain.num_steps = 5
  assert tasks.model_vocab(smoke_config, info) == (info.vocab_size + 1, info.vocab_size)
  mlm = tasks.build_task(smoke_config, info)
  assert mlm.encoder.vocab_size == info.vocab_size + 1
  smoke_config.task.name = "classification"
  assert tasks.build_task(smoke_config, info).encoder.vocab_size == info.vocab_size + 1


def test_self_pretrain_config_is_a_masked_lm_run_of_the_same_model(smoke_config):
  smoke_config.self_pretrain.num_steps = 40
  smoke_config.self_pretrain.learning_rate = 5e-4
  smoke_config.optimizer.warmup_steps = 100
  pre = self_pretrain_config(smoke_config)
  assert pre.task.name == "masked_lm" and pre.task.mask_rate == 0.15
  assert pre.train.num_steps == 40 and pre.optimizer.learning_rate == 5e-4
  assert pre.optimizer.warmup_steps == 4 and pre.train.keep_best_by == ""
  assert pre.model.to_dict() == smoke_config.model.to_dict()
  assert pre.data.to_dict() == smoke_config.data.to_dict()
  assert smoke_config.task.name == "classification"  # the run's own config is untouched


def test_two_phases_then_resume_trains_nothing(smoke_config, tmp_path, capsys):
  smoke_config.self_pretrain.num_steps = 2
  workdir = str(tmp_path / "run")
  final = train_and_evaluate(smoke_config, workdir)
  out = capsys.readouterr().out
  pre_dir = os.path.join(workdir, "self_pretrain")
  assert f"initialised the encoder from attnjax run {os.path.abspath(pre_dir)}" in out

  pre_records = read_metrics(pre_dir)
  pre_eval = [r for r in pre_records if r["split"] == "eval"][-1]
  assert pre_eval["step"] == 2 and "perplexity" in pre_eval  # masked-LM metrics
  assert final["step"] == 3 and 0.0 <= final["accuracy"] <= 1.0
  with open(os.path.join(workdir, "config.json")) as f:
    saved = json.load(f)
  assert saved["init"]["workdir"] == pre_dir and saved["task"]["name"] == "classification"

  # The second phase's encoder has the pretraining's shapes ([MASK] row included).
  pre_encoder = finetune_lib.read_workdir_params(pre_dir)["encoder"]
  run_encoder = finetune_lib.read_workdir_params(workdir)["encoder"]
  table = ("embeddings", "word_embeddings", "embedding")
  pre_table, run_table = pre_encoder, run_encoder
  for key in table:
    pre_table, run_table = pre_table[key], run_table[key]
  vocab = data_lib.get_dataset_info(smoke_config.data).vocab_size
  assert pre_table.shape == run_table.shape == (vocab + 1, smoke_config.model.hidden_size)
  assert not np.array_equal(pre_table, run_table)  # then trained further

  before = (read_metrics(pre_dir), read_metrics(workdir))
  again = train_and_evaluate(smoke_config, workdir)
  assert (read_metrics(pre_dir), read_metrics(workdir)) == before
  assert again["accuracy"] == final["accuracy"]


@pytest.mark.parametrize("key,value,match", [
    ("num_steps", -1, r"self_pretrain.num_steps=-1: expected an integer >= 0"),
    ("mask_rate", 1.5, r"self_pretrain.mask_rate=1.5: expected a number in \(0, 1\)"),
    ("learning_rate", -1.0, "self_pretrain.learning_rate=-1.0: expected a finite number >= 0"),
])
def test_bad_self_pretrain_options_are_refused_before_anything_is_written(
    smoke_config, tmp_path, key, value, match):
  smoke_config.self_pretrain.num_steps = 2
  smoke_config.self_pretrain[key] = value
  workdir = tmp_path / "run"
  with pytest.raises(ValueError, match=match):
    train_and_evaluate(smoke_config, str(workdir))
  assert not workdir.exists()


def test_self_pretraining_with_initial_weights_is_refused(smoke_config, tmp_path):
  smoke_config.self_pretrain.num_steps = 2
  smoke_config.init.workdir = str(tmp_path / "elsewhere")
  with pytest.raises(ValueError, match="pretrains from scratch.*config.init.workdir"):
    train_and_evaluate(smoke_config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_masked_lm_reads_two_tower_examples_as_rows(smoke_config):
  # LRA Retrieval's [batch, 2, L] examples: each document is one masked-LM row.
  info = dataclasses.replace(data_lib.get_dataset_spec("digits").info, towers=2)
  smoke_config.self_pretrain.num_steps = 1
  smoke_config.task.name = "masked_lm"
  task = tasks.build_task(smoke_config, info)
  ids = jax.random.randint(jax.random.PRNGKey(0), (3, 2, info.max_length), 1, info.vocab_size)
  params = task.model.init(jax.random.PRNGKey(1), ids)["params"]
  apply = jax.jit(task.model.apply, static_argnames=("deterministic",))
  logits = apply({"params": params}, ids)
  assert logits.shape == (3, 2, info.max_length, info.vocab_size + 1)
  np.testing.assert_allclose(
      logits.reshape(6, info.max_length, -1),
      apply({"params": params}, ids.reshape(6, info.max_length)), atol=1e-5)
  loss, _ = jax.jit(lambda p, b, k: task.loss_fn(apply, p, b, k))(
      params, {"inputs": ids}, jax.random.PRNGKey(2))
  assert np.isfinite(loss)
  evaluate = jax.jit(lambda p, b: task.eval_fn(types.SimpleNamespace(apply_fn=apply, params=p),
                                               b))
  weight = jnp.array([1.0, 1.0, 0.0])  # the last example pads the batch
  sums = evaluate(params, {"inputs": ids, "weight": weight})
  one = evaluate(params, {"inputs": ids[:2], "weight": weight[:2]})
  assert float(sums["weight_sum"]) == 2.0
  np.testing.assert_allclose(float(sums["token_sum"]), float(one["token_sum"]))
  np.testing.assert_allclose(float(sums["loss_sum"]), float(one["loss_sum"]), rtol=1e-5)
