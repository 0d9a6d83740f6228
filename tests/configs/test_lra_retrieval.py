"""configs/lra/retrieval.py: LRA's matching config, and a smoke run on tiny AAN files."""

from __future__ import annotations

import math
import os

import jax
import numpy as np
import pytest

from attnjax import data as data_lib
from attnjax.data import aan
from attnjax.train import create_model_and_state, parameter_count, read_metrics
from attnjax.train import train_and_evaluate
from attnjax.train.parallel import build_strategy
from configs.lra import retrieval

#: 4 blocks of width 128 (198,272 each) + 4,001 x 128 learned positions + 257 x 128 byte
#: embeddings + CLS and final LayerNorm = one encoder (1,338,368), shared by both towers;
#: plus the head over [u, v, u*v, u-v]: 512 x 512 + 512, 512 x 256 + 256, 256 x 2 + 2.
PINNED_RETRIEVAL_BASE = 1_732_866


def test_base_is_lras_matching_config():
  config = retrieval.get_config("kernel=dot_product")
  info = data_lib.get_dataset_spec(config.data.name).info  # shapes only: no files needed
  assert (info.name, info.towers, info.max_length, info.vocab_size) == (
      "aan_bytes_4k", 2, 4000, 257)
  m = config.model
  assert (m.num_layers, m.hidden_size, m.num_heads, m.mlp_dim, m.pooling) == (
      4, 128, 4, 512, "cls")
  assert (config.train.batch_size, config.train.num_steps) == (32, 5000)
  model, init_state, schedule = create_model_and_state(config, info)
  assert model.towers == 2
  params = jax.eval_shape(init_state, jax.random.PRNGKey(0)).params
  assert parameter_count(params) == PINNED_RETRIEVAL_BASE
  assert parameter_count(params["encoder"]) == 1_338_368
  # LRA: 0.05 * min(1, step / 8000) / sqrt(max(step, 8000)), never past warmup in 5,000 steps.
  for step in (1, 2500, 5000):
    assert float(schedule(step)) == pytest.approx(0.05 * step / 8000 / math.sqrt(8000),
                                                  rel=1e-4)
  assert retrieval.get_config("size=small").data.name == "aan_bytes_1k"


def _write_tsv(path, rows: int, rng: np.random.Generator) -> None:
  """``rows`` random LRA-format lines: label, two ids, two byte texts of 0..1,500 bytes."""
  lines = []
  for i in range(rows):
    texts = [bytes(rng.integers(32, 127, size=rng.integers(0, 1500)).astype(np.uint8))
             for _ in range(2)]
    lines.append(b"\t".join([b"%d" % (i % 2), b"a%d" % i, b"b%d" % i, *texts]))
  path.write_bytes(b"\n".join(lines) + b"\n")


def test_smoke_config_trains_on_tiny_aan_files(tmp_path):
  rng = np.random.default_rng(0)
  for split, rows in (("train", 16), ("validation", 3), ("test", 5)):
    _write_tsv(tmp_path / aan.AAN_FILES[split], rows, rng)
  config = retrieval.get_config("kernel=dot_product,size=smoke")
  config.data.aan_dir = str(tmp_path)
  config.data.data_dir = str(tmp_path / "tfds")
  config.train.async_checkpoints = False
  # Dense XLA attention: at 1,001 positions CPU would pick the chunked backend, whose
  # backward pass takes seconds longer to compile; the kernel is not what is tested here.
  config.model.attention.implementation = "xla"
  workdir = str(tmp_path / "run")
  final = train_and_evaluate(config, workdir)
  assert final["step"] == 3 and final["num_examples"] == 5  # 64-row eval batch, 59 padding
  assert np.isfinite(final["loss"]) and 0.0 <= final["accuracy"] <= 1.0
  records = read_metrics(workdir)
  train = [r for r in records if r["split"] == "train"]
  assert [r["step"] for r in train] == [1, 2, 3]
  # Each example is two documents of 1,000 bytes.
  assert train[-1]["tokens_per_sec"] / train[-1]["examples_per_sec"] == pytest.approx(2000)
  assert os.listdir(os.path.join(workdir, "checkpoints")) == ["3"]

  # Under the mesh strategy a [8, 2, 1000] batch is split along its batch axis only:
  # each of the 8 devices holds whole pairs.
  config.parallel.strategy = "mesh"
  strategy = build_strategy(config.parallel, global_batch_size=8)
  batch = next(data_lib.make_train_iterator(config.data, global_batch_size=8, seed=0))
  placed = strategy.put_batch(batch)
  assert strategy.num_devices == 8 and placed["inputs"].shape == (8, 2, 1000)
  assert [s.data.shape for s in placed["inputs"].addressable_shards] == [(1, 2, 1000)] * 8
  np.testing.assert_array_equal(np.asarray(placed["inputs"]), batch["inputs"])


def test_missing_aan_files_fail_before_the_workdir_is_written(tmp_path, monkeypatch):
  monkeypatch.delenv("ATTNJAX_AAN_DIR", raising=False)
  config = retrieval.get_config("size=smoke")
  config.data.aan_dir = str(tmp_path / "nowhere")
  workdir = tmp_path / "run"
  with pytest.raises(ValueError, match=r"config.data.aan_dir=.*new_aan_pairs.train.tsv not found"):
    train_and_evaluate(config, str(workdir))
  assert not workdir.exists()
