"""Parallel strategies on 8 fake CPU devices: same losses, accumulation, cross-strategy restore."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import data as data_lib
from attnjax.train import Checkpointer, create_model_and_state, make_train_step, train_and_evaluate
from attnjax.train import read_metrics
from attnjax.train.loop import create_setup
from attnjax.train.parallel import build_strategy, mesh_shape, partition_spec

STEPS = 5


def _config(smoke_config, strategy="jit", data=-1, fsdp=1, tensor=1):
  c = smoke_config
  c.model.num_layers, c.model.hidden_size, c.model.num_heads, c.model.mlp_dim = 2, 32, 4, 64
  c.model.dropout_rate = 0.0  # pmap draws per-device dropout masks; compare without dropout
  c.train.batch_size = 16
  c.parallel.strategy = strategy
  c.parallel.mesh.data, c.parallel.mesh.fsdp, c.parallel.mesh.tensor = data, fsdp, tensor
  return c


def _losses(config, batches, microbatches=1):
  info = data_lib.get_dataset_info(config.data)
  setup = create_setup(config, info)
  init_state, schedule = setup.init_state, setup.schedule
  strategy = build_strategy(config.parallel, global_batch_size=config.train.batch_size)
  abstract = jax.eval_shape(init_state, jax.random.PRNGKey(0))
  state = strategy.init_state(init_state, abstract, jax.random.PRNGKey(0))
  step = strategy.compile_train_step(
      make_train_step(schedule, loss_fn=setup.task.loss_fn, microbatches=microbatches), abstract)
  losses = []
  for batch in batches:
    state, metrics = step(state, strategy.put_batch(batch))
    losses.append(float(metrics["loss"]))
  return np.array(losses), strategy.to_checkpoint_state(state)


@pytest.fixture
def batches(smoke_config):
  it = data_lib.make_train_iterator(smoke_config.data, global_batch_size=16, seed=0)
  return [next(it) for _ in range(STEPS)]


@pytest.fixture(scope="module")
def one_device(data_dir):
  """``(batches, (losses, state))`` of the jit reference, computed once for the module."""
  from configs import default as default_config  # pylint: disable=import-outside-toplevel
  config = default_config.get_config("smoke")
  config.data.data_dir = data_dir
  it = data_lib.make_train_iterator(config.data, global_batch_size=16, seed=0)
  batches = [next(it) for _ in range(STEPS)]
  return batches, _losses(_config(config), batches)


@pytest.mark.parametrize("strategy,data,fsdp,tensor", [
    ("pmap", -1, 1, 1),
    ("mesh", 8, 1, 1),
    ("mesh", 4, 2, 1),
    ("mesh", 2, 1, 4),
])
def test_strategies_give_the_losses_of_one_device(smoke_config, one_device, strategy, data,
                                                  fsdp, tensor):
  assert jax.device_count() == 8
  batches, (reference, ref_state) = one_device
  losses, state = _losses(_config(smoke_config, strategy, data, fsdp, tensor), batches)
  np.testing.assert_allclose(losses, reference, rtol=2e-5, atol=2e-6)
  # Adam divides by sqrt(v): float32 reduction-order differences in near-zero gradients
  # become parameter differences of a few percent of one update (lr = 1e-3).
  for a, b in zip(jax.tree_util.tree_leaves(state.params),
                  jax.tree_util.tree_leaves(ref_state.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4)


def test_mesh_shards_parameters_as_the_rules_say(smoke_config):
  config = _config(smoke_config, "mesh", 2, 2, 2)
  info = data_lib.get_dataset_info(config.data)
  _, init_state, _ = create_model_and_state(config, info)
  strategy = build_strategy(config.parallel, global_batch_size=16)
  abstract = jax.eval_shape(init_state, jax.random.PRNGKey(0))
  state = strategy.init_state(init_state, abstract, jax.random.PRNGKey(0))
  qkv = state.params["encoder"]["layer_0"]["attention"]["query"]["kernel"]  # [32, 4, 8]
  assert qkv.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor", None)
  assert qkv.addressable_shards[0].data.shape == (16, 2, 8)
  mu = state.opt_state[1][0].mu["encoder"]["layer_0"]["mlp"]["wi"]["kernel"]
  assert mu.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")


def test_undivisible_dimensions_stay_replicated():
  mesh = jax.make_mesh((1, 1, 8), ("data", "fsdp", "tensor"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 3)
  # 4 heads cannot be split 8 ways: left whole rather than failing.
  assert partition_spec("layer_0/attention/query/kernel", (32, 4, 8), mesh) == \
      jax.sharding.PartitionSpec(None, None, None)


def test_four_microbatches_equal_the_whole_batch(smoke_config, batches):
  whole, whole_state = _losses(_config(smoke_config.copy_and_resolve_references()), batches)
  accumulated, acc_state = _losses(_config(smoke_config), batches, microbatches=4)
  np.testing.assert_allclose(accumulated, whole, rtol=1e-5)
  for a, b in zip(jax.tree_util.tree_leaves(acc_state.params),
                  jax.tree_util.tree_leaves(whole_state.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4)


def test_batch_and_mesh_errors_name_the_numbers(smoke_config):
  c = _config(smoke_config, "mesh", 4, 2, 1)
  with pytest.raises(ValueError, match=r"batch_size=12 is not divisible by data x fsdp = 4 x 2"):
    build_strategy(c.parallel, global_batch_size=12)
  c.parallel.mesh.data = 3
  with pytest.raises(ValueError, match="uses 6 devices but 8 are present"):
    build_strategy(c.parallel, global_batch_size=12)
  with pytest.raises(ValueError, match="at most one axis may be -1"):
    mesh_shape({"data": -1, "fsdp": -1, "tensor": 1}, 8)
  c.parallel.strategy = "dp"
  with pytest.raises(ValueError, match=r"strategy='dp'"):
    build_strategy(c.parallel, global_batch_size=16)


def test_mesh_checkpoint_restores_under_jit_with_the_same_metrics(smoke_config, tmp_path):
  config = _config(smoke_config, "mesh", 4, 2, 1)
  workdir = str(tmp_path / "run")
  saved = train_and_evaluate(config, workdir)
  # Same workdir, one device: the finished run is restored (not retrained) and evaluated.
  config.parallel.strategy = "jit"
  restored = train_and_evaluate(config, workdir)
  assert restored["step"] == saved["step"] == 3
  assert restored["accuracy"] == saved["accuracy"]
  np.testing.assert_allclose(restored["loss"], saved["loss"], rtol=1e-5)


def test_unreadable_latest_checkpoint_falls_back_to_the_previous(smoke_config, tmp_path, capsys):
  config = _config(smoke_config)
  config.train.num_steps, config.train.checkpoint_every = 6, 3
  workdir = str(tmp_path / "run")
  train_and_evaluate(config, workdir)
  # Garble every file of the step-6 state: the restore must report it and use step 3.
  for root, _, files in os.walk(os.path.join(workdir, "checkpoints", "6", "state")):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")
  info = data_lib.get_dataset_info(config.data)
  _, init_state, _ = create_model_and_state(config, info)
  ckpt = Checkpointer(workdir)
  state, _, step = ckpt.restore(jax.eval_shape(init_state, jax.random.PRNGKey(0)))
  ckpt.close()
  assert step == 3 and int(state.step) == 3
  assert "checkpoints/6 is unreadable" in capsys.readouterr().out


def test_nan_policy_stop_names_the_step_and_skip_keeps_training(smoke_config, tmp_path):
  config = _config(smoke_config)
  # Finite (an infinite rate is refused): step 1 has the warmup's rate 0, step 2 sends the
  # parameters to ~1e30, and step 3's loss is NaN.
  config.optimizer.learning_rate = 1e30
  config.optimizer.grad_clip_norm = 0.0
  with pytest.raises(FloatingPointError, match=r"non-finite loss \(nan\) at step 3; the last "
                     r"good checkpoint is step None"):
    train_and_evaluate(config, str(tmp_path / "stop"))
  config.train.nan_policy = "skip"
  final = train_and_evaluate(config, str(tmp_path / "skip"))
  assert np.isfinite(final["loss"])
  train = [r for r in read_metrics(str(tmp_path / "skip")) if r["split"] == "train"]
  # Step 1 (rate 0) is applied; every later update is non-finite and skipped.
  assert [r["skipped"] for r in train] == [0.0, 1.0, 1.0]
