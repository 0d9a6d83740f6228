"""Test setup: eight fake CPU devices, set before jax is imported anywhere."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """A TFDS data dir shared by the session; digits is prepared into it on first use."""
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture
def smoke_config(data_dir):
  """The default experiment shrunk to 3 steps (configs/default.py:smoke)."""
  from configs import default as default_config  # pylint: disable=import-outside-toplevel
  config = default_config.get_config("smoke")
  config.data.data_dir = data_dir
  return config
