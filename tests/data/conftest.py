"""Digits prepared once per test session into a temporary TFDS data_dir."""

from __future__ import annotations

import ml_collections
import pytest

from attnjax.data import digits
from attnjax.data import prepare_builder


@pytest.fixture(scope="session")
def digits_data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
  """A data_dir holding prepared digits (prepared in this process, once)."""
  data_dir = tmp_path_factory.mktemp("tfds")
  prepare_builder(digits.Digits, data_dir)
  return str(data_dir)


@pytest.fixture()
def digits_config(digits_data_dir: str) -> ml_collections.ConfigDict:
  """A fresh data config naming the prepared digits (tests may mutate it)."""
  return ml_collections.ConfigDict({"name": "digits", "data_dir": digits_data_dir})
