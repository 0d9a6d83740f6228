"""Bad input, as a careless or hostile user gives it: one clear line, and nothing lost.

Tables of (what is done, the message fragment expected); every refused launch on an existing
run leaves each of its files byte-identical (hashed before and after). One finished 4-step
run (checkpoints at steps 2 and 4) is shared by the module and copied per test; only the
Ctrl-C / concurrent-launch case and launch.py's own one-line output need subprocesses.
"""

import hashlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import ml_collections
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from attnjax import data as data_lib
from attnjax import plot as plot_cli
from attnjax.inspect import cli as inspect_cli
from attnjax.data import text_files
from attnjax.train import read_metrics, train_and_evaluate
from attnjax.train import workdir as workdir_lib
from attnjax.train.config_checks import CHECKS, check_config
from configs import default as default_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(data_dir: str) -> ml_collections.ConfigDict:
  config = default_config.get_config("smoke")
  config.data.data_dir = data_dir
  config.train.num_steps = 4
  config.train.checkpoint_every = 2
  config.train.eval_every = 4
  config.train.log_every = 2
  config.train.keep_best_by = ""
  return config


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_dir):
  """A finished run (steps 1..4, checkpoints 2 and 4) and its final metrics."""
  workdir = str(tmp_path_factory.mktemp("finished") / "run")
  final = train_and_evaluate(_config(data_dir), workdir)
  return workdir, final


@pytest.fixture
def run(finished, tmp_path):
  """A private copy of the finished run."""
  copy = str(tmp_path / "run")
  shutil.copytree(finished[0], copy)
  return copy


def _hashes(directory: str) -> dict[str, str]:
  out = {}
  for root, _, files in os.walk(directory):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
  return out


def _write(path: str, text: str) -> None:
  with open(path, "w") as f:
    f.write(text)


# --- Refused relaunches of a finished run: the message, and every file unchanged. -------

def _set(key, value):
  def change(config, workdir):
    section, _, name = key.rpartition(".")
    (config[section] if section else config)[name] = value
  return change


def _file(name, text):
  return lambda config, workdir: _write(os.path.join(workdir, name), text)


def _hold_lock(config, workdir):
  lock = workdir_lib.WorkdirLock(workdir)
  lock.acquire()
  return lock


REFUSED_RELAUNCHES = [
    ("task", _set("task.name", "regression"), r"task.name: 'classification' -> 'regression'"),
    ("class_count", _set("data.num_classes", 5), r"data.num_classes: '<absent>' -> 5"),
    ("model", _set("model.hidden_size", 48), r"model.hidden_size: 32 -> 48"),
    ("longer_cosine_run", _set("train.num_steps", 6),
     r"cannot change on resume[\s\S]*train.num_steps: 4 -> 6[\s\S]*--config.init.workdir="),
    ("batch_size", _set("train.batch_size", 8), r"train.batch_size: 64 -> 8"),
    ("seed", _set("seed", 1), r"seed: 0 -> 1"),
    ("garbled_config_json", _file("config.json", '{"model": '),
     r"config.json, line 1, column 11: not valid JSON"),
    ("empty_config_json", _file("config.json", ""), r"config.json is empty"),
    ("config_json_not_an_object", _file("config.json", "[1, 2]"),
     r"config.json: expected a JSON object"),
    ("bad_metrics_line", _file("metrics.jsonl", '{"step": 1, "split": "train"}\nnot json\n'
                                                '{"step": 2, "split": "train"}\n'),
     r"metrics.jsonl, line 2, column 1: not valid JSON"),
    ("busy", _hold_lock, rf"is in use by pid {os.getpid()} on host"),
]


@pytest.mark.parametrize("change,fragment", [c[1:] for c in REFUSED_RELAUNCHES],
                         ids=[c[0] for c in REFUSED_RELAUNCHES])
def test_refused_relaunch_names_the_culprit_and_changes_no_file(run, data_dir, change,
                                                                fragment):
  config = _config(data_dir)
  held = change(config, run)
  before = _hashes(run)
  with pytest.raises(ValueError, match=fragment):
    train_and_evaluate(config, run)
  assert _hashes(run) == before
  if held is not None:
    held.release()


# --- Refused fresh launches: nothing is created. ----------------------------------------

def _checkpoints_file(workdir):
  os.makedirs(workdir)
  _write(os.path.join(workdir, "checkpoints"), "a file")


def _foreign_metrics(workdir):
  os.makedirs(workdir)
  _write(os.path.join(workdir, "metrics.jsonl"), '{"step": 1, "split": "train"}\n')


REFUSED_FRESH = [
    ("negative_clip", _set("optimizer.grad_clip_norm", -1.0), None,
     r"config.optimizer.grad_clip_norm=-1.0: expected a finite number >= 0"),
    ("negative_lr", _set("optimizer.learning_rate", -1e-3), None,
     r"config.optimizer.learning_rate=-0.001: expected a finite number >= 0"),
    ("nan_lr", _set("optimizer.learning_rate", math.nan), None,
     r"config.optimizer.learning_rate=nan: expected a finite number"),
    ("inf_lr", _set("optimizer.learning_rate", math.inf), None,
     r"config.optimizer.learning_rate=inf: expected a finite number"),
    ("label_smoothing_2", _set("train.label_smoothing", 2.0), None,
     r"config.train.label_smoothing=2.0: expected a finite number in \[0, 1\)"),
    ("label_smoothing_1", _set("train.label_smoothing", 1.0), None,
     r"config.train.label_smoothing=1.0: expected"),
    ("zero_steps", _set("train.num_steps", 0), None,
     r"config.train.num_steps=0: expected an integer >= 1"),
    ("nan_policy", _set("train.nan_policy", "ignore"), None,
     r"config.train.nan_policy='ignore': expected one of \['stop', 'skip', 'off'\]"),
    ("init_workdir_without_checkpoint", _set("init.workdir", "/no/such/run"), None,
     r"config.init.workdir='/no/such/run': no checkpoint in /no/such/run/checkpoints"),
    ("checkpoints_is_a_file", None, _checkpoints_file,
     r"checkpoints' is a file; it must be a directory"),
    ("metrics_without_config", None, _foreign_metrics,
     r"holds metrics.jsonl but no config.json"),
]


@pytest.mark.parametrize("change,make,fragment", [c[1:] for c in REFUSED_FRESH],
                         ids=[c[0] for c in REFUSED_FRESH])
def test_refused_fresh_launch_writes_nothing(tmp_path, data_dir, change, make, fragment):
  config = _config(data_dir)
  workdir = str(tmp_path / "run")
  if change is not None:
    change(config, workdir)
  if make is not None:
    make(workdir)
  before = _hashes(str(tmp_path))
  with pytest.raises(ValueError, match=fragment):
    train_and_evaluate(config, workdir)
  assert _hashes(str(tmp_path)) == before
  assert os.path.exists(workdir) == (make is not None)


def test_data_dir_that_is_a_file_is_refused(tmp_path, data_dir):
  config = _config(data_dir)
  config.data.data_dir = str(tmp_path / "file")
  _write(config.data.data_dir, "x")
  with pytest.raises(ValueError, match=r"config.data.data_dir '.*file' exists and is not a "
                     "directory"):
    train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


# --- Data files: file, line and column named. -------------------------------------------

def _rows(path, **kw):
  return text_files.read_labelled_rows(path, text_columns=("text",), label_column="label",
                                       **kw)


def test_data_files_fail_with_file_line_and_column(tmp_path):
  bad_utf8 = tmp_path / "latin1.csv"
  bad_utf8.write_bytes(b"text,label\nfine,0\ncaf\xe9,1\n")
  with pytest.raises(ValueError, match=r"latin1.csv, line 3, column 4 \(byte 0xe9\): not "
                     "UTF-8"):
    _rows(str(bad_utf8))
  folder = tmp_path / "train.csv"
  folder.mkdir()
  with pytest.raises(ValueError, match=r"train.csv' is a directory, not a file"):
    _rows(str(folder))
  boolean = tmp_path / "rows.jsonl"
  boolean.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": true}\n')
  with pytest.raises(ValueError, match=r"rows.jsonl, row 2, column 'label': label true is a "
                     "boolean"):
    _rows(str(boolean))
  with pytest.raises(ValueError, match=r"row 2, column 'label': label true is a boolean"):
    _rows(str(boolean), label_type="float")


def test_a_csv_field_longer_than_csvs_default_limit_is_read(tmp_path):
  path = tmp_path / "long.csv"
  path.write_text("text,label\n" + "word " * 40_000 + ",1\n")  # 200,000 characters
  (row,) = _rows(str(path))
  assert len(row["text"]) == 200_000 and row["label"] == 1


def test_num_classes_zero_is_refused(tmp_path):
  path = tmp_path / "train.csv"
  path.write_text("text,label\na,0\nb,1\n")
  data = ml_collections.ConfigDict({"name": "user_text", "files": {"train": str(path)},
                                    "num_classes": 0, "tokenizer": "wordpiece:100"})
  with pytest.raises(ValueError, match=r"config.data.num_classes=0: a classifier needs an "
                     "integer >= 2"):
    data_lib.resolve_data_config(data)


def test_finetune_from_a_missing_workdir_names_it(tmp_path):
  from configs import finetune  # pylint: disable=import-outside-toplevel
  missing = str(tmp_path / "missing")
  with pytest.raises(ValueError, match=rf"init=workdir:{missing}: not an attnjax run"):
    finetune.get_config(f"init=workdir:{missing}")


# --- What must work, and say so. --------------------------------------------------------

def test_corrupt_final_checkpoint_is_moved_aside_and_the_run_finishes(run, finished,
                                                                      data_dir, capsys):
  for root, _, files in os.walk(os.path.join(run, "checkpoints", "4", "state")):
    for name in files:
      _write(os.path.join(root, name), "garbage")
  final = train_and_evaluate(_config(data_dir), run)
  out = capsys.readouterr().out
  aside = os.path.join(run, "checkpoints_unreadable", "4")
  assert "checkpoints/4 is unreadable" in out and f"moved it to {aside}" in out
  assert os.path.isdir(aside)
  assert final == finished[1]  # retrained exactly from step 2
  assert sorted(os.listdir(os.path.join(run, "checkpoints"))) == ["2", "4"]
  assert "already finished at step 4" in _relaunch_output(run, data_dir, capsys)


def _relaunch_output(run, data_dir, capsys):
  train_and_evaluate(_config(data_dir), run)
  return capsys.readouterr().out


def test_cut_off_metrics_line_and_stale_lock_do_not_block_resume(run, data_dir, capsys):
  metrics = os.path.join(run, "metrics.jsonl")
  with open(metrics) as f:
    complete = f.read()
  with open(metrics, "a") as f:
    f.write('{"step": 5, "split": "tr')  # a kill in the middle of a write
  # What a killed launch leaves: its lock file, with no process holding the lock.
  _write(os.path.join(run, workdir_lib.LOCK_FILE),
         json.dumps({"pid": 999999, "host": "gone", "since": "then"}))
  assert plot_cli.main([run]) == 0
  assert "dropped a cut-off last record" in capsys.readouterr().err
  assert len(read_metrics(run, warn=False)) == complete.count("\n")
  train_and_evaluate(_config(data_dir), run)
  captured = capsys.readouterr()
  assert "taking over the lock of a launch that is no longer running (pid 999999" in \
      captured.out
  assert "already finished at step 4" in captured.out
  with open(metrics) as f:
    assert f.read() == complete
  assert not os.path.exists(os.path.join(run, workdir_lib.LOCK_FILE))


def test_inspect_on_a_workdir_without_checkpoints_says_so(run, capsys):
  shutil.rmtree(os.path.join(run, "checkpoints"))
  assert inspect_cli.main(["--checkpoint", run, "--example", "0"]) == 2
  err = capsys.readouterr().err
  assert "has no checkpoints/ yet" in err and "Hugging Face" not in err


@pytest.mark.parametrize("schedule,refused", [("cosine", True), ("constant", False)])
def test_resume_rule_for_num_steps(tmp_path, data_dir, schedule, refused):
  config = _config(data_dir)
  config.optimizer.schedule = schedule
  workdir = str(tmp_path / "run")
  os.makedirs(os.path.join(workdir, "checkpoints", "2"))
  workdir_lib.write_json(os.path.join(workdir, "config.json"),
                         workdir_lib.config_to_dict(config))
  config.train.num_steps = 8
  if refused:
    with pytest.raises(ValueError, match=r"train.num_steps: 4 -> 8"):
      workdir_lib.validate_workdir(workdir, config)
  else:
    workdir_lib.validate_workdir(workdir, config)  # a constant rate extends exactly
  os.rmdir(os.path.join(workdir, "checkpoints", "2"))
  workdir_lib.validate_workdir(workdir, config)  # nothing to resume: any num_steps


# --- Random value types at config keys: a clear ValueError, never another exception. ----

_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10 ** 12, 10 ** 12),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                    st.lists(st.integers(), max_size=2),
                    # (a ConfigDict key cannot hold a '.')
                    st.dictionaries(st.text("abc", max_size=2), st.integers(), max_size=1))


_SMOKE = ml_collections.ConfigDict(default_config.get_config("smoke").to_dict(),
                                   type_safe=False)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(sorted(CHECKS)), value=_VALUES)
def test_any_value_at_a_checked_key_passes_or_is_a_value_error(key, value):
  section, _, name = key.rpartition(".")
  node = _SMOKE[section] if section else _SMOKE
  original = node[name]
  del node[name]  # assignments keep a field's type (an int set on a float field -> float)
  node[name] = value
  try:
    check_config(_SMOKE)
  except ValueError as e:
    assert f"config.{key}=" in str(e) or "divisible" in str(e)
    assert "\n" not in str(e)
  finally:
    del node[name]
    node[name] = original


# --- launch.py: one line, no traceback (subprocesses). ----------------------------------

def _launch(*args, **kw):
  return subprocess.run([sys.executable, os.path.join(ROOT, "launch.py"), *args],
                        capture_output=True, text=True, cwd=ROOT, timeout=120, **kw)


CONFIG_MODULES = [
    ("syntax_error", "def get_config(:\n  pass\n", r"bad.py, line 1: SyntaxError"),
    ("raises", "def get_config(arg=None):\n  raise RuntimeError('boom')\n",
     r"--config: RuntimeError: boom \(.*bad.py:2\)"),
    ("returns_dict", "def get_config(arg=None):\n  return {'a': 1}\n",
     r"get_config\(\) of '.*bad.py' returned a dict; expected an ml_collections.ConfigDict"),
]


@pytest.mark.parametrize("source,fragment", [c[1:] for c in CONFIG_MODULES],
                         ids=[c[0] for c in CONFIG_MODULES])
def test_broken_config_module_is_one_line(tmp_path, source, fragment):
  path = tmp_path / "bad.py"
  path.write_text(source)
  r = _launch("--config", str(path), "--workdir", str(tmp_path / "w"))
  assert r.returncode == 2
  assert "Traceback" not in r.stderr
  (line,) = [l for l in r.stderr.splitlines() if l.startswith("error:")]
  assert re.search(fragment, line), r.stderr
  assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_concurrent_launch_is_refused_and_ctrl_c_saves(tmp_path, data_dir):
  workdir = str(tmp_path / "run")
  args = ["--config", "configs/default.py:smoke", f"--config.data.data_dir={data_dir}",
          "--config.train.num_steps=100000", "--config.train.checkpoint_every=100000",
          "--config.train.eval_every=100000", "--config.train.log_every=1",
          "--workdir", workdir]
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  errors = open(tmp_path / "first.err", "w+")  # progress lines: a pipe would fill up
  first = subprocess.Popen([sys.executable, os.path.join(ROOT, "launch.py"), *args],
                           cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=errors,
                           text=True)
  try:
    metrics = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + 240
    while not (os.path.exists(metrics) and os.path.getsize(metrics)):
      assert first.poll() is None and time.time() < deadline, first.communicate()
      time.sleep(0.05)
    second = _launch(*args, env=env)
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert f"is in use by pid {first.pid} on host" in second.stderr
    first.send_signal(signal.SIGINT)
    out, _ = first.communicate(timeout=120)
  finally:
    if first.poll() is None:
      first.kill()
    errors.seek(0)
    err = errors.read()
    errors.close()
  assert first.returncode == 130, err
  assert "Traceback" not in err and "KeyboardInterrupt" not in err
  steps = [int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit()]
  assert len(steps) == 1 and f"SIGINT: saved a checkpoint at step {steps[0]}" in out
  assert max(r["step"] for r in read_metrics(workdir)) == steps[0]
  assert not os.path.exists(os.path.join(workdir, workdir_lib.LOCK_FILE))
