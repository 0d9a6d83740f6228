"""Real processes: two-process jax.distributed training, SIGTERM and SIGKILL resumption."""

import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from attnjax import data as data_lib
from attnjax.train import Checkpointer, create_model_and_state, read_metrics
from configs import default as default_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL = ["--config.model.num_layers=1", "--config.model.hidden_size=32",
         "--config.model.num_heads=4", "--config.model.mlp_dim=64"]


def _env(devices: int) -> dict:
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["JAX_PLATFORMS"] = "cpu"
  return env


def _cmd(*args):
  return [sys.executable, os.path.join(ROOT, "launch.py"), *args]


def _train_losses(workdir):
  return np.array([r["loss"] for r in read_metrics(workdir) if r["split"] == "train"])


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_devices(tmp_path, data_dir):
  common = ["--config", "configs/default.py:smoke", f"--config.data.data_dir={data_dir}",
            "--config.train.num_steps=5", "--config.train.log_every=1",
            "--config.train.eval_every=5", "--config.train.checkpoint_every=5",
            "--config.train.batch_size=16", "--config.model.dropout_rate=0.0",
            "--config.parallel.strategy=mesh", *SMALL]
  single = str(tmp_path / "single")
  r = subprocess.run(_cmd(*common, "--workdir", single), cwd=ROOT, env=_env(4),
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-2000:]

  multi = str(tmp_path / "multi")
  port = _free_port()
  procs = [subprocess.Popen(
      _cmd(*common, "--workdir", multi, f"--config.parallel.coordinator_address=127.0.0.1:{port}",
           "--config.parallel.num_processes=2", f"--config.parallel.process_id={i}"),
      cwd=ROOT, env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-2000:]
  assert "on 4 device(s)" in outs[0][0]
  np.testing.assert_allclose(_train_losses(multi), _train_losses(single), rtol=1e-5)
  assert len(_train_losses(multi)) == 5
  # Every process took part in the checkpoint; only process 0 wrote the logs.
  assert os.path.isdir(os.path.join(multi, "checkpoints", "5"))


def _wait_for(predicate, proc, seconds=240):
  deadline = time.time() + seconds
  while time.time() < deadline and proc.poll() is None:
    if predicate():
      return True
    time.sleep(0.05)
  return False


def _restore_params(workdir, data_dir):
  config = default_config.get_config()
  config.data.data_dir = data_dir
  config.model.num_layers, config.model.hidden_size = 1, 32
  config.model.num_heads, config.model.mlp_dim = 4, 64
  info = data_lib.get_dataset_info(config.data)
  _, init_state, _ = create_model_and_state(config, info)
  ckpt = Checkpointer(workdir)
  state, _, step = ckpt.restore(jax.eval_shape(init_state, jax.random.PRNGKey(0)))
  ckpt.close()
  return state, step


@pytest.mark.slow
def test_sigkill_then_relaunch_ends_with_identical_parameters(tmp_path, data_dir):
  args = ["--config", "configs/default.py", f"--config.data.data_dir={data_dir}",
          "--config.train.num_steps=160", "--config.train.checkpoint_every=40",
          "--config.train.eval_every=160", "--config.train.log_every=20",
          "--config.optimizer.warmup_steps=20", *SMALL]
  straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
  r = subprocess.run(_cmd(*args, "--workdir", straight), cwd=ROOT, env=_env(1),
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-2000:]

  proc = subprocess.Popen(_cmd(*args, "--workdir", killed), cwd=ROOT, env=_env(1),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  ckpt = os.path.join(killed, "checkpoints")
  started = _wait_for(lambda: os.path.isdir(ckpt) and any(d.isdigit() for d in os.listdir(ckpt)),
                      proc)
  assert started and proc.poll() is None, "the run finished before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  r = subprocess.run(_cmd(*args, "--workdir", killed), cwd=ROOT, env=_env(1),
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-2000:]
  assert "resuming from" in r.stdout

  a, step_a = _restore_params(straight, data_dir)
  b, step_b = _restore_params(killed, data_dir)
  assert step_a == step_b == 160
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  final = [rec for rec in read_metrics(killed) if rec["split"] == "eval"][-1]
  assert final == [rec for rec in read_metrics(straight) if rec["split"] == "eval"][-1]


@pytest.mark.slow
def test_sigterm_saves_at_the_step_it_arrived_and_exits_143(tmp_path, data_dir):
  workdir = str(tmp_path / "run")
  args = ["--config", "configs/default.py", f"--config.data.data_dir={data_dir}",
          "--config.train.num_steps=100000", "--config.train.checkpoint_every=100000",
          "--config.train.eval_every=100000", "--config.train.log_every=1", *SMALL,
          "--workdir", workdir]
  proc = subprocess.Popen(_cmd(*args), cwd=ROOT, env=_env(1), stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True)
  # Wait until training is under way (the first train record is written at step 1).
  metrics = os.path.join(workdir, "metrics.jsonl")
  assert _wait_for(lambda: os.path.exists(metrics) and os.path.getsize(metrics) > 0, proc)
  time.sleep(1.0)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 143, out
  steps = [int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit()]
  assert len(steps) == 1 and 1 <= steps[0] < 100000
  assert f"SIGTERM: saved a checkpoint at step {steps[0]}" in out
  assert max(r["step"] for r in read_metrics(workdir)) == steps[0]
