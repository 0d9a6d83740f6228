"""Catalog-backed LRA tasks (byte-level IMDb, grey CIFAR-10) through tfds.testing.mock_data."""

from __future__ import annotations

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from attnjax import data as data_lib
from attnjax.data import catalog


@pytest.mark.parametrize("name,length,classes", [
    ("imdb_bytes_1k", 1000, 2), ("imdb_bytes_4k", 4000, 2), ("cifar10_gray", 1024, 10)])
def test_batches_from_mocked_catalog_data(name, length, classes):
  cfg = ml_collections.ConfigDict({"name": name, "data_dir": ""})
  with tfds.testing.mock_data(num_examples=6):
    train = next(data_lib.make_train_iterator(cfg, global_batch_size=4, seed=0))
    evals = list(data_lib.make_eval_iterator(cfg, global_batch_size=4))
  assert train["inputs"].shape == (4, length) and train["inputs"].dtype == np.int32
  assert 0 <= train["inputs"].min() and train["inputs"].max() < 257
  assert set(train["label"].tolist()) <= set(range(classes))
  assert sum(float(b["weight"].sum()) for b in evals) == 6


def test_byte_tokens_truncate_like_lra():
  tokens = catalog.bytes_to_tokens("héllo".encode() * 1000, 1000)
  assert tokens.shape == (1000,) and tokens[0] == ord("h") + 1 and tokens.min() >= 1
  assert catalog.bytes_to_tokens("ab", 10).tolist() == [98, 99]


def test_gray_pixels_use_rgb_to_grayscale_weights():
  image = np.zeros((32, 32, 3), np.uint8)
  image[0, 0] = (255, 255, 255)
  image[0, 1] = (255, 0, 0)
  tokens = catalog.rgb_to_gray_tokens(image)
  assert tokens.shape == (1024,)
  assert tokens[0] == 255 + 1 and tokens[1] == round(0.2989 * 255) + 1 and tokens[2] == 1


def test_unprepared_dataset_is_a_clear_error(tmp_path):
  cfg = ml_collections.ConfigDict({"name": "cifar10_gray", "data_dir": str(tmp_path)})
  with pytest.raises(FileNotFoundError, match="tfds build cifar10 --file_format=array_record"):
    data_lib.make_eval_iterator(cfg, global_batch_size=4)
