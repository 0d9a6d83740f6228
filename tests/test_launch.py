"""launch.py as a user runs it: errors for bad flags, configs and workdirs."""

import os
import subprocess
import sys


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
  assert "unknown config key 'num_stepz'" in r.stderr and '"num_steps"' in r.stderr
  assert "Traceback" not in r.stderr
  assert not (tmp_path / "w").exists()


def test_missing_config_file_is_an_error_naming_it(tmp_path):
  r = _launch("--config", "configs/nope.py", "--workdir", str(tmp_path / "w"))
  assert r.returncode != 0
  assert "config file 'configs/nope.py' does not exist" in r.stderr
  assert "Traceback" not in r.stderr
  assert not (tmp_path / "w").exists()


def test_unknown_config_argument_is_an_error(tmp_path):
  r = _launch("--config", "configs/default.py:smok", "--workdir", str(tmp_path / "w"))
  assert r.returncode != 0
  assert "unknown config argument 'smok'" in r.stderr
  assert "Traceback" not in r.stderr


def test_workdir_that_is_a_file_is_an_error(tmp_path, data_dir):
  f = tmp_path / "file"
  f.write_text("keep me")
  r = _launch("--config", "configs/default.py:smoke", f"--config.data.data_dir={data_dir}",
              "--workdir", str(f))
  assert r.returncode == 2, r.stderr
  assert "is not a directory" in r.stderr
  assert f.read_text() == "keep me"


def test_kernel_options_are_flags_and_checked_against_the_kernel(tmp_path, data_dir):
  common = ["--config", "configs/default.py:smoke", f"--config.data.data_dir={data_dir}"]
  r = _launch(*common, "--config.model.attention.num_features=64", "--workdir",
              str(tmp_path / "bad"))
  assert r.returncode == 2
  assert "config.model.attention.num_features is not an option of kernel 'dot_product'" in r.stderr
  assert not (tmp_path / "bad").exists()
  r = _launch(*common, "--config.model.attention.kernel=performer",
              "--config.model.attention.num_features=64", "--workdir", str(tmp_path / "ok"))
  assert r.returncode == 0, r.stderr[-2000:]
