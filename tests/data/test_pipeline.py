"""The Grain pipeline: batch contract, shuffling, sharding, resumable state, exact eval."""

from __future__ import annotations

import collections
import itertools

import ml_collections
import numpy as np
import pytest

import attnjax.data as data
from attnjax.data import digits


def _rows(batches, *, weighted=False):
  """Multiset of examples (token bytes, label) in ``batches``; weight-0 rows skipped."""
  rows = collections.Counter()
  for b in batches:
    keep = b["weight"] > 0 if weighted else np.ones(len(b["label"]), bool)
    for x, y in zip(b["inputs"][keep], b["label"][keep]):
      rows[(x.tobytes(), int(y))] += 1
  return rows


def _split_rows(config, split):
  source = digits.Digits(data_dir=config.data_dir).as_data_source(split)
  return collections.Counter(
      (np.asarray(r["tokens"], np.int32).tobytes(), int(r["label"])) for r in source)


def _take(it, n):
  return list(itertools.islice(it, n))


def _assert_same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


# --- DatasetInfo and the registry -------------------------------------------------------------

def test_dataset_info_for_digits():
  info = data.get_dataset_info(ml_collections.ConfigDict({"name": "digits"}))
  assert info == data.DatasetInfo(name="digits", vocab_size=18, max_length=64, num_classes=10,
                                  num_train=1437, num_eval=360, pad_id=0)


def test_unknown_dataset_lists_known_ones(digits_config):
  digits_config.name = "nope"
  with pytest.raises(ValueError, match=r"unknown dataset 'nope'.*digits"):
    data.get_dataset_info(digits_config)
  with pytest.raises(ValueError, match=r"unknown dataset 'nope'.*digits"):
    data.make_train_iterator(digits_config, global_batch_size=8, seed=0)
  assert "digits" in data.list_datasets()


def test_registered_task_plugs_in_and_is_padded():
  # A task with variable-length sequences: rows are right-padded with pad_id to max_length.
  records = [{"x": np.arange(1, n + 1), "y": n % 3} for n in range(1, 13)]
  name = "_test_ragged"
  if name not in data.DATASETS:
    data.DATASETS.register(name, data.DatasetSpec(
        info=data.DatasetInfo(name=name, vocab_size=13, max_length=12, num_classes=3,
                              num_train=12, num_eval=12),
        splits=("train", "test"), source=lambda config, split: records,
        inputs_key="x", label_key="y"))
  config = ml_collections.ConfigDict({"name": name})
  (batch,) = list(data.make_eval_iterator(config, global_batch_size=12))
  assert batch["inputs"].shape == (12, 12)
  np.testing.assert_array_equal((batch["inputs"] != 0).sum(1), np.arange(1, 13))
  np.testing.assert_array_equal(batch["label"], np.arange(1, 13) % 3)


def test_data_dir_resolution(monkeypatch, tmp_path):
  config = ml_collections.ConfigDict({"name": "digits", "data_dir": ""})
  monkeypatch.setenv("HOME", str(tmp_path))
  monkeypatch.delenv(data.datasets.DATA_DIR_ENV, raising=False)
  assert data.resolve_data_dir(config) == tmp_path / ".cache/attnjax/tfds"
  monkeypatch.setenv(data.datasets.DATA_DIR_ENV, str(tmp_path / "env"))
  assert data.resolve_data_dir(config) == tmp_path / "env"
  config.data_dir = "~/explicit"
  assert data.resolve_data_dir(config) == tmp_path / "explicit"


# --- training batches ----------------------------------------------------------------------------

def test_train_batch_contract(digits_config):
  batch = next(data.make_train_iterator(digits_config, global_batch_size=32, seed=0))
  assert set(batch) == {"inputs", "label"}
  assert batch["inputs"].shape == (32, 64) and batch["inputs"].dtype == np.int32
  assert batch["label"].shape == (32,) and batch["label"].dtype == np.int32
  assert batch["inputs"].min() >= 1 and batch["inputs"].max() <= 17
  assert batch["label"].min() >= 0 and batch["label"].max() <= 9


def test_train_shuffle_is_seeded(digits_config):
  a = _take(data.make_train_iterator(digits_config, global_batch_size=64, seed=3), 4)
  b = _take(data.make_train_iterator(digits_config, global_batch_size=64, seed=3), 4)
  c = _take(data.make_train_iterator(digits_config, global_batch_size=64, seed=4), 4)
  _assert_same(a, b)
  assert not np.array_equal(a[0]["inputs"], c[0]["inputs"])


def test_train_epochs_cover_split_and_reshuffle(digits_config):
  # 1437 = 3 * 479: three batches are exactly one epoch.
  batches = _take(data.make_train_iterator(digits_config, global_batch_size=479, seed=0), 6)
  all_rows = _split_rows(digits_config, "train")
  assert _rows(batches[:3]) == all_rows
  assert _rows(batches[3:]) == all_rows
  assert not np.array_equal(batches[0]["inputs"], batches[3]["inputs"])


@pytest.mark.parametrize("process_count", [2, 4])
def test_process_batches_are_slices_of_the_global_batch(digits_config, process_count):
  # Every step's examples are the same whatever the number of processes, so runs are
  # reproducible across topologies (and multi-host losses equal single-host ones).
  whole = _take(data.make_train_iterator(digits_config, global_batch_size=64, seed=3), 30)
  parts = [_take(data.make_train_iterator(digits_config, global_batch_size=64, seed=3,
                                          process_index=p, process_count=process_count), 30)
           for p in range(process_count)]
  for step in range(30):
    for key in ("inputs", "label"):
      np.testing.assert_array_equal(
          np.concatenate([part[step][key] for part in parts]), whole[step][key])


def test_process_shards_of_one_epoch_are_disjoint_and_cover(digits_config):
  # 1437 train examples, global batches of 479: three steps are exactly one epoch.
  shards = [_rows(_take(data.make_train_iterator(digits_config, global_batch_size=479 * 2,
                                                  seed=0, process_index=p, process_count=2), 1))
            for p in range(2)]
  # Batches of 958 across 2 processes: the first global batch is 958 distinct examples.
  union = shards[0] + shards[1]
  assert sum(union.values()) == 958
  assert not union - _split_rows(digits_config, "train")  # no example twice, none foreign
  assert not shards[0] & shards[1]


def test_train_state_restores_exactly(digits_config):
  # 500-example batches cross epoch boundaries (and a reshuffle) within the m batches.
  it = data.make_train_iterator(digits_config, global_batch_size=500, seed=7)
  _take(it, 3)
  state = it.get_state()
  expected = _take(it, 4)
  resumed = data.make_train_iterator(digits_config, global_batch_size=500, seed=7)
  resumed.set_state(state)
  _assert_same(_take(resumed, 4), expected)


@pytest.mark.parametrize("make", ["train", "eval"])
def test_batch_size_must_divide_by_process_count(digits_config, make):
  with pytest.raises(ValueError, match=r"global_batch_size=10 .*process_count=3"):
    if make == "train":
      data.make_train_iterator(digits_config, global_batch_size=10, seed=0, process_count=3)
    else:
      data.make_eval_iterator(digits_config, split="test", global_batch_size=10, process_count=3)


def test_bad_seed_raises(digits_config):
  with pytest.raises(ValueError, match="seed"):
    data.make_train_iterator(digits_config, global_batch_size=8, seed=-1)


# --- evaluation batches --------------------------------------------------------------------------

@pytest.mark.parametrize("split,global_batch_size,process_count",
                         [("test", 64, 1), ("test", 64, 2), ("test", 96, 3), ("train", 100, 4)])
def test_eval_covers_every_example_once(digits_config, split, global_batch_size, process_count):
  per_process = [list(data.make_eval_iterator(
      digits_config, split=split, global_batch_size=global_batch_size,
      process_index=p, process_count=process_count)) for p in range(process_count)]
  batch_size = global_batch_size // process_count
  split_rows = _split_rows(digits_config, split)
  num_examples = sum(split_rows.values())
  n = data.num_eval_batches(num_examples, global_batch_size=global_batch_size,
                            process_count=process_count)
  for batches in per_process:
    assert len(batches) == n  # lockstep across processes
    for b in batches:
      assert set(b) == {"inputs", "label", "weight"}
      assert b["inputs"].shape == (batch_size, 64) and b["inputs"].dtype == np.int32
      assert b["label"].shape == (batch_size,) and b["label"].dtype == np.int32
      assert b["weight"].shape == (batch_size,) and b["weight"].dtype == np.float32
      assert set(np.unique(b["weight"])) <= {0.0, 1.0}
      # Padding rows are valid inputs (no all-pad rows that could give NaN).
      assert (b["inputs"] != 0).any(axis=1).all()
    weights = np.concatenate([b["weight"] for b in batches])
    assert np.all(np.diff(weights) <= 0), "padding only at the end"
  all_batches = [b for batches in per_process for b in batches]
  assert _rows(all_batches, weighted=True) == split_rows
  assert sum(b["weight"].sum() for b in all_batches) == num_examples


def test_eval_default_split_and_determinism(digits_config):
  a = list(data.make_eval_iterator(digits_config, global_batch_size=128))
  b = list(data.make_eval_iterator(digits_config, split="test", global_batch_size=128))
  _assert_same(a, b)
  assert len(a) == 3 and a[-1]["weight"].sum() == 360 - 256


def test_eval_bad_split_names_available(digits_config):
  with pytest.raises(ValueError, match=r"'validation'.*digits.*train, test"):
    data.make_eval_iterator(digits_config, split="validation", global_batch_size=8)


def test_workers_without_parsed_flags_raise_clearly(digits_config):
  from absl import flags  # pylint: disable=g-import-not-at-top
  if flags.FLAGS.is_parsed():
    pytest.skip("absl flags already parsed in this process")
  digits_config.worker_count = 2
  with pytest.raises(ValueError, match="worker_count=2 needs absl flags parsed"):
    data.make_train_iterator(digits_config, global_batch_size=8, seed=0)
