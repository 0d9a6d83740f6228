"""The training loop end to end: outputs, resume, checkpoint round trip, workdir safety."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from attnjax import data as data_lib
from attnjax.train.tasks import classification_metrics
from attnjax.train import (Checkpointer, create_model_and_state, classification_eval_step, evaluate,
                           read_metrics, train_and_evaluate)


def test_three_step_smoke_run_writes_the_workdir_layout(smoke_config, tmp_path):
  workdir = str(tmp_path / "run")
  final = train_and_evaluate(smoke_config, workdir)
  assert final["step"] == 3 and final["num_examples"] == 360
  assert 0.0 <= final["accuracy"] <= 1.0 and np.isfinite(final["loss"])
  records = read_metrics(workdir)
  train_steps = [r["step"] for r in records if r["split"] == "train"]
  assert train_steps == [1, 2, 3]
  for key in ("loss", "accuracy", "learning_rate", "grad_norm", "param_norm", "update_norm",
              "examples_per_sec"):
    assert key in records[0], key
  (ev,) = [r for r in records if r["split"] == "eval"]
  assert ev["accuracy"] == pytest.approx(final["accuracy"])
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["train"]["num_steps"] == 3
  assert os.listdir(os.path.join(workdir, "checkpoints")) == ["3"]
  assert any(n.startswith("events.out.tfevents") for n in
             os.listdir(os.path.join(workdir, "tensorboard")))
  with open(os.path.join(workdir, "plots", "curves.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_finished_run_is_not_retrained(smoke_config, tmp_path):
  workdir = str(tmp_path / "run")
  first = train_and_evaluate(smoke_config, workdir)
  before = read_metrics(workdir)
  again = train_and_evaluate(smoke_config, workdir)
  assert read_metrics(workdir) == before
  assert again == first


def _params(workdir, config):
  info = data_lib.get_dataset_info(config.data)
  _, init_state, _ = create_model_and_state(config, info)
  abstract = jax.eval_shape(init_state, jax.random.PRNGKey(config.seed))
  ckpt = Checkpointer(workdir)
  state, _, _ = ckpt.restore(abstract)
  ckpt.close()
  return state


def test_resume_after_interruption_equals_uninterrupted_run(smoke_config, tmp_path):
  config = smoke_config
  config.train.num_steps = 6
  config.train.checkpoint_every = 3
  config.train.eval_every = 3
  config.model.dropout_rate = 0.1  # the resumed run must draw the same dropout masks
  straight, interrupted = str(tmp_path / "a"), str(tmp_path / "b")
  final_a = train_and_evaluate(config, straight)
  train_and_evaluate(config, interrupted)
  # Make "b" look killed right after its step-3 checkpoint: later checkpoints and log lines
  # are lost (a real SIGKILL is exercised in tests/test_launch.py).
  shutil.rmtree(os.path.join(interrupted, "checkpoints", "6"))
  final_b = train_and_evaluate(config, interrupted)
  assert final_b == final_a
  a, b = _params(straight, config), _params(interrupted, config)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert [r["step"] for r in read_metrics(interrupted)] == [
      r["step"] for r in read_metrics(straight)]


def test_checkpoint_round_trip_evaluates_identically(smoke_config, tmp_path):
  config = smoke_config
  info = data_lib.get_dataset_info(config.data)
  _, init_state, _ = create_model_and_state(config, info)
  rng = jax.random.PRNGKey(3)
  state = jax.jit(init_state)(rng)
  batches = list(data_lib.make_eval_iterator(config.data, split="test", global_batch_size=128))
  eval_fn = jax.jit(classification_eval_step)
  before = evaluate(eval_fn, state, batches, finalize=classification_metrics)
  train_iter = data_lib.make_train_iterator(config.data, global_batch_size=16, seed=0)
  next(train_iter)
  ckpt = Checkpointer(str(tmp_path), async_save=True)
  ckpt.save(7, state, train_iter.get_state())
  expected_next = next(train_iter)
  ckpt.close()
  restored, data_state, step = Checkpointer(str(tmp_path)).restore(
      jax.eval_shape(init_state, rng))
  assert step == 7
  assert evaluate(eval_fn, restored, batches, finalize=classification_metrics) == before
  fresh_iter = data_lib.make_train_iterator(config.data, global_batch_size=16, seed=0)
  fresh_iter.set_state(data_state)
  got = next(fresh_iter)
  for key in expected_next:
    np.testing.assert_array_equal(got[key], expected_next[key])


def test_incompatible_workdir_is_refused_and_left_intact(smoke_config, tmp_path):
  workdir = str(tmp_path / "run")
  train_and_evaluate(smoke_config, workdir)
  before = sorted(os.listdir(workdir))
  with open(os.path.join(workdir, "config.json")) as f:
    saved = f.read()
  smoke_config.model.hidden_size = 48
  with pytest.raises(ValueError, match=r"model.hidden_size: 32 -> 48[\s\S]*new --workdir"):
    train_and_evaluate(smoke_config, workdir)
  assert sorted(os.listdir(workdir)) == before
  with open(os.path.join(workdir, "config.json")) as f:
    assert f.read() == saved


def test_workdir_that_is_a_file_is_refused(smoke_config, tmp_path):
  path = tmp_path / "file"
  path.write_text("x")
  with pytest.raises(ValueError, match="is not a directory"):
    train_and_evaluate(smoke_config, str(path))


def test_bad_config_values_fail_before_the_workdir_exists(smoke_config, tmp_path):
  workdir = tmp_path / "never"
  smoke_config.model.attention.kernel = "no_such_kernel"
  with pytest.raises(ValueError, match="unknown kernel 'no_such_kernel'; known kernels: .*dot_product"):
    train_and_evaluate(smoke_config, str(workdir))
  assert not workdir.exists()


def test_attention_images_go_to_tensorboard(smoke_config, tmp_path):
  def event_bytes(workdir):
    tb = os.path.join(workdir, "tensorboard")
    return sum(os.path.getsize(os.path.join(tb, n)) for n in os.listdir(tb))

  train_and_evaluate(smoke_config, str(tmp_path / "plain"))
  smoke_config.train.attention_images = True
  train_and_evaluate(smoke_config, str(tmp_path / "images"))
  # One PNG-encoded figure (tens of KB) against a few hundred bytes of scalars.
  assert event_bytes(str(tmp_path / "images")) > event_bytes(str(tmp_path / "plain")) + 5000
