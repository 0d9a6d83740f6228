"""Tasks through the one loop: metrics pinned to scikit-learn/scipy, regression, masked LM."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as sk_metrics

from attnjax import data as data_lib
from attnjax.train import metrics, read_metrics, train_and_evaluate
from attnjax.train import tasks as tasks_lib
from attnjax.train.loop import compile_eval, create_setup, evaluate
from attnjax.train.parallel import build_strategy


def test_classification_metrics_match_sklearn():
  rng = np.random.default_rng(0)
  for classes in (2, 5):
    y = rng.integers(0, classes, 200)
    p = np.where(rng.random(200) < 0.6, y, rng.integers(0, classes, 200))
    p[p == classes - 1] = 0  # a class never predicted
    cm = metrics.confusion_matrix(y, p, classes)
    assert metrics.f1_macro(cm) == pytest.approx(sk_metrics.f1_score(y, p, average="macro"))
    assert metrics.matthews_corrcoef(cm) == pytest.approx(sk_metrics.matthews_corrcoef(y, p))


def test_correlations_match_scipy_with_ties():
  rng = np.random.default_rng(1)
  x = rng.integers(0, 6, 300).astype(float)  # many ties
  y = x + rng.normal(0, 2, 300)
  assert metrics.pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
  assert metrics.spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)
  np.testing.assert_array_equal(metrics.average_ranks(x), stats.rankdata(x))
  assert metrics.pearson(np.ones(5), np.arange(5)) == 0.0


def test_classification_reports_f1_and_matthews(smoke_config, tmp_path):
  final = train_and_evaluate(smoke_config, str(tmp_path / "run"))
  assert {"accuracy", "f1_macro", "matthews", "loss"} <= set(final)
  (ev,) = [r for r in read_metrics(str(tmp_path / "run")) if r["split"] == "eval"]
  assert ev["f1_macro"] == pytest.approx(final["f1_macro"])


def test_regression_gathers_predictions_exactly_under_every_strategy(smoke_config, tmp_path):
  config = smoke_config
  config.task.name = "regression"   # digits' class ids as numeric targets
  config.train.keep_best_by = "pearson"
  config.model.dropout_rate = 0.0
  final = train_and_evaluate(config, str(tmp_path / "run"))
  assert {"pearson", "spearman", "mse"} <= set(final) and final["num_examples"] == 360
  assert -1.0 <= final["spearman"] <= 1.0 and np.isfinite(final["mse"])

  # The same state evaluated under jit, pmap and mesh: same gathered predictions.
  info = data_lib.get_dataset_info(config.data)
  setup = create_setup(config, info)
  abstract = jax.eval_shape(setup.init_state, jax.random.PRNGKey(0))
  results = []
  for name in ("jit", "pmap", "mesh"):
    config.parallel.strategy = name
    strategy = build_strategy(config.parallel, global_batch_size=64)
    state = strategy.init_state(setup.init_state, abstract, jax.random.PRNGKey(0))
    batches = data_lib.make_eval_iterator(config.data, split="test", global_batch_size=64)
    results.append(evaluate(compile_eval(strategy, setup.task, abstract), state, batches,
                            strategy.put_batch, finalize=setup.task.finalize,
                            gathers_outputs=True))
  for other in results[1:]:
    assert other["num_examples"] == 360
    for key in ("pearson", "spearman", "mse"):
      assert other[key] == pytest.approx(results[0][key], abs=1e-5)


@pytest.fixture
def mlm_config(data_dir):
  from configs import pretrain_mlm  # pylint: disable=import-outside-toplevel
  config = pretrain_mlm.get_config("smoke")
  config.data.data_dir = data_dir
  return config


def test_masked_lm_trains_and_reports_perplexity(mlm_config, tmp_path):
  mlm_config.train.num_steps = 6
  mlm_config.train.log_every = 1
  mlm_config.optimizer.learning_rate = 3e-3
  final = train_and_evaluate(mlm_config, str(tmp_path / "mlm"))
  assert final["perplexity"] == pytest.approx(np.exp(final["loss"]))
  assert 0 <= final["accuracy"] <= 1 and final["num_tokens"] > 0
  train = [r["loss"] for r in read_metrics(str(tmp_path / "mlm")) if r["split"] == "train"]
  assert train[-1] < train[0]  # ln(1000) ~ 6.9 at the start


def test_masked_lm_eval_masking_is_per_example(mlm_config):
  data_config = data_lib.resolve_data_config(mlm_config.data)
  info = data_lib.get_dataset_info(data_config)
  task = tasks_lib.build_task(mlm_config, info)
  setup = create_setup(mlm_config, info)
  state = jax.jit(setup.init_state)(jax.random.PRNGKey(0))
  batch = next(iter(data_lib.make_eval_iterator(data_config, global_batch_size=8)))
  whole = jax.jit(task.eval_fn)(state, batch)
  halves = [jax.jit(task.eval_fn)(state, {k: v[s] for k, v in batch.items()})
            for s in (slice(0, 4), slice(4, 8))]
  for key in whole:
    assert float(whole[key]) == pytest.approx(float(halves[0][key] + halves[1][key]), rel=1e-5)
  assert float(whole["token_sum"]) > 0


def test_unknown_task_and_masked_lm_without_mask_token(smoke_config):
  info = data_lib.get_dataset_info(smoke_config.data)
  smoke_config.task.name = "ranking"
  with pytest.raises(ValueError, match="unknown task 'ranking'; known tasks: causal_lm, classification, masked_lm, regression, seq2seq"):
    tasks_lib.build_task(smoke_config, info)
  smoke_config.task.name = "masked_lm"
  with pytest.raises(ValueError, match="needs a dataset with a mask token"):
    tasks_lib.build_task(smoke_config, info)
