"""Sweeps: grid helpers, point names, a real 3-point sweep that resumes, dry run, parallel."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap

import pytest

from attnjax import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A tiny sweep on digits: two working kernels and one that cannot exist.
_CONFIG_FILE = textwrap.dedent("""
    from attnjax import sweep
    from configs import default

    def get_config(arg=None):
      return default.get_config("smoke")

    def get_sweep(arg=None):
      kernels = ["dot_product", "chunked", "no_such_kernel"]
      return sweep.axis("model.attention.kernel", kernels[:int(arg or 3)])
""")


@pytest.fixture
def config_file(tmp_path):
  path = tmp_path / "tiny_sweep.py"
  path.write_text(_CONFIG_FILE)
  return str(path)


def _base_config(data_dir):
  from configs import default  # pylint: disable=import-outside-toplevel
  config = default.get_config("smoke")
  config.data.data_dir = data_dir
  return config


def test_product_and_zip():
  kernels = sweep.axis("model.attention.kernel", ["a", "b"])
  seeds = sweep.axis("seed", [0, 1, 2])
  grid = sweep.product(kernels, seeds)
  assert len(grid) == 6
  assert grid[0] == {"model.attention.kernel": "a", "seed": 0}
  assert grid[-1] == {"model.attention.kernel": "b", "seed": 2}
  zipped = sweep.zip_(sweep.axis("model.hidden_size", [32, 64]),
                      sweep.axis("model.mlp_dim", [64, 128]))
  assert zipped == [{"model.hidden_size": 32, "model.mlp_dim": 64},
                    {"model.hidden_size": 64, "model.mlp_dim": 128}]
  with pytest.raises(ValueError, match="different lengths"):
    sweep.zip_(kernels, seeds)
  with pytest.raises(ValueError, match="more than one sweep"):
    sweep.product(seeds, seeds)


def test_point_names_and_overrides(tmp_path, data_dir):
  assert sweep.point_name({"model.attention.kernel": "chunked", "seed": 1}) == (
      "kernel=chunked,seed=1")
  assert sweep.point_name({"model.dropout_rate": 0.1, "optimizer.dropout_rate": 0.2}) == (
      "model.dropout_rate=0.1,optimizer.dropout_rate=0.2")
  assert sweep.point_name({}) == "base"
  assert sweep.point_name({"data.name": "a/b c"}) == "name=a_b_c"
  with pytest.raises(ValueError, match="same overrides"):
    sweep.make_points([{"seed": 1}, {"seed": 1}], str(tmp_path))
  config = _base_config(data_dir)
  changed = sweep.apply_overrides(config, {"model.hidden_size": 48})
  assert changed.model.hidden_size == 48 and config.model.hidden_size != 48
  with pytest.raises(ValueError, match="no field 'hiden_size'"):
    sweep.apply_overrides(config, {"model.hiden_size": 48})
  with pytest.raises(ValueError, match="model.hidden_size"):
    sweep.apply_overrides(config, {"model.hidden_size": "wide"})


def _mtime(path):
  return os.stat(path).st_mtime_ns


def test_sweep_runs_resumes_and_reports_failures(tmp_path, config_file, data_dir):
  sweep_dir = str(tmp_path / "sweep")
  lines = []
  failed = sweep.main(_base_config(data_dir), config_spec=config_file, sweep_dir=sweep_dir,
                      log=lines.append)
  assert failed == 1
  names = ["kernel=dot_product", "kernel=chunked", "kernel=no_such_kernel"]
  for name in names[:2]:
    assert os.path.exists(os.path.join(sweep_dir, name, "metrics.jsonl"))
  with open(os.path.join(sweep_dir, "results.csv")) as f:
    rows = {r["point"]: r for r in csv.DictReader(f)}
  assert list(rows) == names
  for name in names[:2]:
    r = rows[name]
    assert r["status"] == "finished" and r["step"] == "3", r
    assert 0.0 <= float(r["final_accuracy"]) <= 1.0
    assert float(r["best_accuracy"]) >= float(r["final_accuracy"])
    assert float(r["steps_per_sec"]) > 0
  # The kernel computes attention; it holds no parameters: same budget for every kernel.
  assert int(rows[names[0]]["params"]) == int(rows[names[1]]["params"]) > 0
  bad = rows[names[2]]
  assert bad["status"] == "failed" and "no_such_kernel" in bad["error"]
  table = open(os.path.join(sweep_dir, "results.md")).read()
  assert "| kernel=chunked | chunked | finished | 3 |" in table
  assert "failed" in table
  with open(os.path.join(sweep_dir, "results.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"

  # "Killed midway": one point's run is gone; the same command redoes only that point.
  kept = os.path.join(sweep_dir, names[1], "metrics.jsonl")
  before = _mtime(kept)
  import shutil  # pylint: disable=import-outside-toplevel
  shutil.rmtree(os.path.join(sweep_dir, names[0]))
  lines.clear()
  sweep.main(_base_config(data_dir), config_spec=config_file, sweep_dir=sweep_dir,
             log=lines.append)
  assert any("kernel=chunked: finished before, skipped" in line for line in lines)
  assert any("(1/2) kernel=dot_product" in line for line in lines), lines
  assert _mtime(kept) == before
  assert os.path.exists(os.path.join(sweep_dir, names[0], "metrics.jsonl"))
  with open(os.path.join(sweep_dir, "results.csv")) as f:
    assert [r["status"] for r in csv.DictReader(f)] == ["finished", "finished", "failed"]


def test_dry_run_prints_one_command_per_point(tmp_path, config_file):
  sweep_dir = str(tmp_path / "dry")
  r = subprocess.run(
      [sys.executable, os.path.join(ROOT, "launch.py"), "--config", f"{config_file}:2",
       "--config.train.num_steps", "7", "--sweep", "--sweep_dry_run", "--workdir", sweep_dir],
      capture_output=True, text=True, cwd=ROOT, timeout=120)
  assert r.returncode == 0, r.stderr
  commands = r.stdout.strip().splitlines()
  assert commands == [
      f"python launch.py --config {config_file}:2 --config.train.num_steps=7 "
      f"--config.model.attention.kernel={k} --workdir {sweep_dir}/kernel={k}"
      for k in ("dot_product", "chunked")]
  assert not os.path.exists(sweep_dir)


@pytest.mark.slow
def test_parallel_sweep_runs_launch_subprocesses(tmp_path, config_file, data_dir):
  sweep_dir = str(tmp_path / "par")
  failed = sweep.main(_base_config(data_dir), config_spec=f"{config_file}:2",
                      sweep_dir=sweep_dir, parallel=2,
                      extra_flags=[f"--config.data.data_dir={data_dir}"], log=print)
  assert failed == 0
  for k in ("dot_product", "chunked"):
    log = open(os.path.join(sweep_dir, f"kernel={k}", sweep.LOG_FILE)).read()
    assert "finished" in log
  with open(os.path.join(sweep_dir, "results.csv")) as f:
    assert [r["status"] for r in csv.DictReader(f)] == ["finished", "finished"]


def test_sweep_flags_need_sweep(tmp_path):
  r = subprocess.run([sys.executable, os.path.join(ROOT, "launch.py"), "--sweep_dry_run",
                      "--workdir", str(tmp_path / "x")],
                     capture_output=True, text=True, cwd=ROOT, timeout=120)
  assert r.returncode != 0 and "need --sweep" in r.stderr
