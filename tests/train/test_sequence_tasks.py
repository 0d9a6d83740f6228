"""Decoder tasks through the one loop: causal LM on code, seq2seq with a decode evaluator,
generation from a workdir, and a sweep over a regression config ranked by its own metric."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import textwrap

import pytest

from attnjax import generate as generate_lib
from attnjax import sweep
from attnjax.data import stdlib_code, stdlib_docstrings
from attnjax import data as data_lib
from attnjax.train import read_metrics, train_and_evaluate
from attnjax.train import tasks as tasks_lib

_MODULE = '''"""Module {i}."""


def scale_{i}(values, factor):
  """Multiplies every value by the factor. Returns a list."""
  return [v * factor for v in values]


def join_{i}(parts):
  """Joins the parts with commas."""
  return ",".join(str(p) for p in parts)
'''


@pytest.fixture(scope="module")
def code_data_dir(tmp_path_factory):
  """A data dir whose stdlib datasets read 9 small modules instead of the real library."""
  root = tmp_path_factory.mktemp("stdlib")
  for i in range(9):
    pkg = root / f"pkg{i % 3}"
    pkg.mkdir(exist_ok=True)
    (pkg / f"mod{i}.py").write_text(_MODULE.format(i=i), encoding="utf-8")
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(stdlib_docstrings, "stdlib_root", lambda: root)
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    data_lib.prepare_builder(stdlib_code.StdlibCode, data_dir, config="files")
  return data_dir


def test_code_lm_trains_reports_bits_per_byte_and_generates(code_data_dir, tmp_path, capsys):
  from configs import code_lm  # pylint: disable=import-outside-toplevel
  config = code_lm.get_config("smoke")
  config.data.data_dir = code_data_dir
  config.data.tokenizer = "bpe:300"
  config.data.eval_split = "validation"
  workdir = str(tmp_path / "lm")
  final = train_and_evaluate(config, workdir)
  assert final["step"] == 3
  # Bits per byte is the summed NLL in bits over the summed UTF-8 bytes of the targets:
  # loss (nats/token) * tokens / (ln 2 * bytes), so tokens/bytes = bpb * ln2 / loss.
  bytes_per_token = final["loss"] / (final["bits_per_byte"] * math.log(2))
  assert 1.0 < bytes_per_token < 8.0, final
  assert final["perplexity"] == pytest.approx(math.exp(final["loss"]), rel=1e-6)
  evals = [r for r in read_metrics(workdir) if r["split"] == "eval"]
  assert evals and "bits_per_byte" in evals[-1]
  assert os.path.exists(os.path.join(workdir, "tokenizer.json"))
  capsys.readouterr()
  assert generate_lib.main(["--checkpoint", workdir, "--prompt", "def ",
                            "--max_new_tokens", "5"]) == 0
  assert capsys.readouterr().out.startswith("def ")


def test_seq2seq_decode_evaluator_scores_generated_text(data_dir, tmp_path):
  from configs import translation  # pylint: disable=import-outside-toplevel
  config = translation.get_config("smoke")  # the offline addition task
  config.data.data_dir = data_dir
  config.evals.decode.num_examples = 6
  config.evals.decode.method = "greedy"  # beams are tested against transformers elsewhere
  workdir = str(tmp_path / "mt")
  final = train_and_evaluate(config, workdir)
  assert {"loss", "accuracy", "perplexity"} <= set(final)
  decoded = [r for r in read_metrics(workdir) if r["split"] == "decode"]
  assert len(decoded) == 1 and decoded[0]["step"] == 3
  record = decoded[0]
  assert record["num_examples"] == 6
  assert 0.0 <= record["exact_match"] <= 1.0 and 0.0 <= record["rouge_l"] <= 1.0
  assert 0.0 <= record["bleu"] <= 100.0
  assert tasks_lib.task_metric(config) == ("loss", "min")


def test_unknown_evaluator_type_and_options_are_refused(data_dir):
  from attnjax.train import evaluators  # pylint: disable=import-outside-toplevel
  from configs import default  # pylint: disable=import-outside-toplevel
  config = default.get_config("smoke")
  config.evals = {"x": {"type": "no_such"}}
  with pytest.raises(ValueError, match="unknown evaluator type 'no_such'"):
    evaluators.eval_specs(config)
  config.evals = {"x": {"type": "metrics", "every": 0}}
  with pytest.raises(ValueError, match="config.evals.x.every=0"):
    evaluators.eval_specs(config)


_REGRESSION_SWEEP = textwrap.dedent("""
    from attnjax import sweep
    from configs import default

    def get_config(arg=None):
      config = default.get_config("smoke")
      config.task.name = "regression"      # digit classes as numbers: one real output
      config.train.keep_best_by = "pearson"
      return config

    def get_sweep(arg=None):
      return sweep.axis("seed", [1])
""")


def test_regression_sweep_ranks_by_its_own_metric(tmp_path, data_dir):
  path = tmp_path / "regression_sweep.py"
  path.write_text(_REGRESSION_SWEEP)
  spec = importlib.util.spec_from_file_location("regression_sweep", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  base = module.get_config()
  base.data.data_dir = data_dir
  sweep_dir = str(tmp_path / "sweep")
  assert sweep.main(base, config_spec=str(path), sweep_dir=sweep_dir, log=lambda _: None) == 0
  with open(os.path.join(sweep_dir, "results.csv")) as f:
    rows = list(csv.DictReader(f))
  assert [r["status"] for r in rows] == ["finished"]
  for r in rows:
    assert -1.0 <= float(r["final_pearson"]) <= float(r["best_pearson"]) <= 1.0
  assert "best = highest eval pearson" in open(os.path.join(sweep_dir, "results.md")).read()
  json.dumps(rows)  # plain values
