"""launch.py as a user runs it: flag errors, resume after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _launch(*args, env_extra=None, **kw):
  env = dict(os.environ)
  env.update(env_extra or {})
  return subprocess.run([sys.executable, os.path.join(ROOT, "launch.py"), *args],
                        capture_output=True, text=True, cwd=kw.pop("cwd", ROOT), env=env,
                        timeout=kw.pop("timeout", 300), **kw)


def test_misspelled_config_key_is_an_error_naming_it(tmp_path):
  r = _launch("--config", "configs/default.py:smoke", "--config.train.num_stepz=3",
              "--workdir", str(tmp_path / "w"))
  assert r.returncode != 0
  assert "num_stepz" in r.stderr
  assert not (tmp_path / "w").exists()


def test_missing_config_file_is_an_error_naming_it(tmp_path):
  r = _launch("--config", "configs/nope.py", "--workdir", str(tmp_path / "w"))
  assert r.returncode != 0
  assert "configs/nope.py" in r.stderr
  assert not (tmp_path / "w").exists()


def test_unknown_config_argument_is_an_error(tmp_path):
  r = _launch("--config", "configs/default.py:smok", "--workdir", str(tmp_path / "w"))
  assert r.returncode != 0
  assert "unknown config argument 'smok'" in r.stderr


def test_workdir_that_is_a_file_is_an_error(tmp_path, data_dir):
  f = tmp_path / "file"
  f.write_text("keep me")
  r = _launch("--config", "configs/default.py:smoke", f"--config.data.data_dir={data_dir}",
              "--workdir", str(f))
  assert r.returncode == 2, r.stderr
  assert "is not a directory" in r.stderr
  assert f.read_text() == "keep me"


def _final_eval(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  return [r for r in records if r["split"] == "eval"][-1]


@pytest.mark.slow
def test_sigkill_mid_training_then_relaunch_resumes(tmp_path, data_dir):
  args = ["--config", "configs/default.py", f"--config.data.data_dir={data_dir}",
          "--config.train.num_steps=300", "--config.train.checkpoint_every=100",
          "--config.train.eval_every=300", "--config.train.log_every=50",
          "--config.model.num_layers=1", "--config.model.hidden_size=32",
          "--config.model.mlp_dim=64", "--config.optimizer.warmup_steps=20"]
  straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
  r = _launch(*args, "--workdir", straight)
  assert r.returncode == 0, r.stderr

  proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "launch.py"), *args,
                           "--workdir", killed], cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  ckpt = os.path.join(killed, "checkpoints")
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    done = [d for d in os.listdir(ckpt) if d.isdigit()] if os.path.isdir(ckpt) else []
    if done:
      break
    time.sleep(0.05)
  assert proc.poll() is None, "the run finished before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  steps = sorted(int(d) for d in os.listdir(ckpt) if d.isdigit())
  assert steps and steps[-1] < 300

  r = _launch(*args, "--workdir", killed)
  assert r.returncode == 0, r.stderr
  assert f"steps {steps[-1] + 1}..300" in r.stdout
  a, b = _final_eval(straight), _final_eval(killed)
  assert abs(a["accuracy"] - b["accuracy"]) <= 0.005
