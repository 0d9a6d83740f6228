"""The digits TFDS builder: preparation without TensorFlow or network, the split, the tokens."""

from __future__ import annotations

import collections
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
from sklearn.datasets import load_digits

from attnjax.data import digits

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def _records(data_dir: str, split: str) -> list[tuple[bytes, int]]:
  source = digits.Digits(data_dir=data_dir).as_data_source(split)
  return [(np.asarray(r["tokens"]).tobytes(), int(r["label"])) for r in source]


def _sklearn_records(indices: np.ndarray) -> collections.Counter:
  d = load_digits()
  tokens = d.data.astype(np.int32) + 1
  return collections.Counter((tokens[i].tobytes(), int(d.target[i])) for i in indices)


# Two processes prepare into one fresh data_dir at the same time, each checking
# that TensorFlow never got imported; they print their preparation time.
_PREPARE_SCRIPT = textwrap.dedent("""
    import json, sys, time
    t = time.perf_counter()
    from attnjax.data import digits, prepare_builder
    b = prepare_builder(digits.Digits, sys.argv[1])
    print(json.dumps({
        "seconds": time.perf_counter() - t,
        "tensorflow_imported": any(m == "tensorflow" or m.startswith("tensorflow.")
                                   for m in sys.modules),
        "splits": {k: v.num_examples for k, v in b.info.splits.items()},
    }))
""")


def test_concurrent_preparation_without_tensorflow_matches_fixture(tmp_path, digits_data_dir):
  data_dir = tmp_path / "fresh"
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), NO_PROXY="*",
             # A download attempt would fail fast instead of hanging.
             HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9")
  procs = [subprocess.Popen([sys.executable, "-c", _PREPARE_SCRIPT, str(data_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
           for _ in range(2)]
  results = []
  for p in procs:
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-3000:]
    results.append(json.loads(out.strip().splitlines()[-1]))
  for r in results:
    assert not r["tensorflow_imported"]
    assert r["splits"] == {"train": 1437, "test": 360}
  assert not list(data_dir.glob("digits/incomplete*")), "a temporary directory was left behind"
  # Same examples, in the same order, as the preparation in this process.
  for split in ("train", "test"):
    assert _records(str(data_dir), split) == _records(digits_data_dir, split)


def test_split_sizes_and_info(digits_data_dir):
  builder = digits.Digits(data_dir=digits_data_dir)
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {"train": 1437, "test": 360}
  assert builder.info.features["label"].num_classes == 10
  assert builder.info.features["tokens"].shape == (64,)
  assert builder.info.features["tokens"].np_dtype == np.int32
  assert str(builder.info.version) == "1.0.0"
  assert builder.info.description
  assert builder.info.file_format.value == "array_record"
  assert list(pathlib.Path(builder.data_dir).glob("*.array_record-*"))


def test_split_is_pinned():
  train, test = digits.split_indices()
  assert len(train) == 1437 and len(test) == 360
  assert not set(train) & set(test)
  assert sorted([*train, *test]) == list(range(1797))
  # Pinned: a change here means the dataset changed and VERSION must be bumped.
  assert test[:8].tolist() == PINNED_TEST_HEAD
  assert int(test.sum()) == PINNED_TEST_SUM


# From the reference preparation (numpy PCG64 stream, seed 20240611).
PINNED_TEST_HEAD = [4, 6, 8, 17, 18, 29, 32, 35]
PINNED_TEST_SUM = 320346


def test_examples_are_exactly_sklearn_rows(digits_data_dir):
  train_idx, test_idx = digits.split_indices()
  assert collections.Counter(_records(digits_data_dir, "train")) == _sklearn_records(train_idx)
  assert collections.Counter(_records(digits_data_dir, "test")) == _sklearn_records(test_idx)


def test_tokens_and_labels_in_range(digits_data_dir):
  for split in ("train", "test"):
    source = digits.Digits(data_dir=digits_data_dir).as_data_source(split)
    tokens = np.stack([r["tokens"] for r in source])
    labels = np.array([r["label"] for r in source])
    assert tokens.dtype == np.int32 and tokens.shape[1] == 64
    assert tokens.min() == 1 and tokens.max() == 17  # pad id 0 never occurs
    assert labels.min() == 0 and labels.max() == 9


def test_class_balance_is_stratified(digits_data_dir):
  all_counts = np.bincount(load_digits().target, minlength=10)
  source = digits.Digits(data_dir=digits_data_dir).as_data_source("test")
  test_counts = np.bincount([r["label"] for r in source], minlength=10)
  # Each class gets its proportional share of the 360 test examples, +-1.
  np.testing.assert_array_less(np.abs(test_counts - all_counts * 360 / 1797), 1.0)
  assert test_counts.sum() == 360


def test_constants_match_vocab():
  assert digits.VOCAB_SIZE == 18 and digits.PAD_ID == 0 and digits.SEQ_LEN == 64
  assert digits.NUM_TRAIN + digits.NUM_TEST == 1797
