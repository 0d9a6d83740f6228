"""LRA Retrieval data: the user's AAN TSV files -> two-tower byte records and batches."""

from __future__ import annotations

import os

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from attnjax import data as data_lib
from attnjax.data import aan

LONG = "é" * 2500  # 5,000 UTF-8 bytes: truncated to 4,000 (and to 1,000)
TRAIN = [("1", "P1", "P2", "hello world", LONG), ("0.0", "P3", "P4", "abc", ""),
         ("1.0", "P5", "P6", "x\"y'z", "tab-free, \"quoted\" text"), ("0", "P7", "P8", "q", "r")]
EVAL = [("1", "E1", "E2", "eval a", "eval b")]
TEST = [("0", "T1", "T2", "test a", "test b"), ("1", "T3", "T4", "c", "d"),
        ("0", "T5", "T6", "e", "f")]


def write_aan(directory, train=TRAIN, validation=EVAL, test=TEST) -> str:
  """Writes the three LRA AAN TSV files (label, id1, id2, text1, text2; no header)."""
  os.makedirs(directory, exist_ok=True)
  for split, rows in (("train", train), ("validation", validation), ("test", test)):
    with open(os.path.join(directory, aan.AAN_FILES[split]), "wb") as f:
      f.write(b"".join(("\t".join(r) + "\n").encode() for r in rows))
  return str(directory)


@pytest.fixture(scope="module")
def aan_config(tmp_path_factory) -> ml_collections.ConfigDict:
  root = tmp_path_factory.mktemp("aan")
  return ml_collections.ConfigDict({"name": "aan_bytes_4k", "data_dir": str(root / "tfds"),
                                    "aan_dir": write_aan(root / "tsv")})


def _ids(text: str, length: int) -> np.ndarray:
  return np.frombuffer(text.encode(), np.uint8)[:length].astype(np.int32) + 1


def test_records_are_byte_ids_truncated_and_padded_per_document(aan_config):
  spec = data_lib.get_dataset_spec("aan_bytes_4k")
  assert spec.info.towers == 2 and spec.info.input_shape == (2, 4000)
  train = spec.source(aan_config, "train")
  assert len(train) == 4
  assert [int(train[i]["label"]) for i in range(4)] == [1, 0, 1, 0]
  first = train[0]
  assert first["tokens"].shape == (2, 4000) and first["tokens"].dtype == np.int32
  assert (first["id1"], first["id2"]) == (b"P1", b"P2")
  np.testing.assert_array_equal(first["tokens"][0, :11], _ids("hello world", 11))
  assert first["tokens"][0, 0] == ord("h") + 1 and not first["tokens"][0, 11:].any()
  np.testing.assert_array_equal(first["tokens"][1], _ids(LONG, 4000))  # truncated, no pad
  assert first["tokens"][1].min() >= 1
  assert not train[1]["tokens"][1].any()  # an empty document is all padding
  quoted = train[2]["tokens"][0]
  np.testing.assert_array_equal(quoted[:5], _ids("x\"y'z", 5))  # no CSV quoting
  assert [len(spec.source(aan_config, s)) for s in ("validation", "test")] == [1, 3]
  # The 1k task reads the same prepared records, cut to their first 1,000 bytes.
  short = data_lib.get_dataset_spec("aan_bytes_1k").source(aan_config, "train")[0]
  np.testing.assert_array_equal(short["tokens"], first["tokens"][:, :1000])


def test_batches_are_batch_by_two_towers(aan_config):
  cfg = aan_config.copy_and_resolve_references()
  cfg.name = "aan_bytes_1k"
  train = next(data_lib.make_train_iterator(cfg, global_batch_size=4, seed=0,
                                            process_index=1, process_count=2))
  assert train["inputs"].shape == (2, 2, 1000) and train["label"].shape == (2,)
  evals = list(data_lib.make_eval_iterator(cfg, global_batch_size=2))  # test: 3 examples
  assert [b["inputs"].shape for b in evals] == [(2, 2, 1000)] * 2
  assert [b["weight"].tolist() for b in evals] == [[1, 1], [1, 0]]
  assert [b["label"].tolist() for b in evals][0] == [0, 1]
  np.testing.assert_array_equal(evals[0]["inputs"][0, 0, :6], _ids("test a", 6))


def test_missing_directory_or_file_is_a_one_line_error(tmp_path, monkeypatch):
  monkeypatch.delenv(aan.AAN_DIR_ENV, raising=False)
  cfg = ml_collections.ConfigDict({"name": "aan_bytes_4k", "data_dir": str(tmp_path / "tfds"),
                                   "aan_dir": ""})
  with pytest.raises(ValueError, match=r"config.data.aan_dir is empty and \$ATTNJAX_AAN_DIR"
                     r" is not set.*lra_release/lra_release/tsv_data/") as e:
    data_lib.make_eval_iterator(cfg, global_batch_size=2)
  assert "\n" not in str(e.value)
  write_aan(tmp_path / "tsv")
  os.remove(tmp_path / "tsv" / "new_aan_pairs.test.tsv")
  cfg.aan_dir = str(tmp_path / "tsv")
  with pytest.raises(ValueError, match="new_aan_pairs.test.tsv not found; expected the LRA "
                     "AAN files") as e:
    data_lib.make_train_iterator(cfg, global_batch_size=2, seed=0)
  assert str(tmp_path / "tsv") in str(e.value) and "\n" not in str(e.value)
  # $ATTNJAX_AAN_DIR is read when the config names no directory, and named in the error.
  monkeypatch.setenv(aan.AAN_DIR_ENV, str(tmp_path / "tsv"))
  cfg.aan_dir = ""
  with pytest.raises(ValueError, match=r"\$ATTNJAX_AAN_DIR="):
    aan.resolve_aan_dir(cfg)
  assert not (tmp_path / "tfds").exists()  # nothing prepared


def test_malformed_lines_name_the_file_and_line(tmp_path):
  path = tmp_path / "bad.tsv"
  path.write_bytes(b"1\ta\tb\tx\ty\n\n1\ta\tb\tonly four\n")
  with pytest.raises(ValueError, match=r"bad.tsv, line 3: 4 tab-separated fields; expected 5"):
    list(aan.read_aan_tsv(str(path)))
  path.write_bytes(b"2\ta\tb\tx\ty\r\n")
  with pytest.raises(ValueError, match=r"line 1: label '2' is not 0 or 1"):
    list(aan.read_aan_tsv(str(path)))
  path.write_bytes(b"0\ta\tb\tx\ty\r\n")
  assert list(aan.read_aan_tsv(str(path))) == [(0, b"a", b"b", b"x", b"y")]


def test_changed_files_get_another_prepared_dataset(tmp_path):
  cfg = ml_collections.ConfigDict({"aan_dir": write_aan(tmp_path)})
  before = aan.aan_builder_config(cfg).name
  write_aan(tmp_path, test=TEST[:1])
  assert aan.aan_builder_config(cfg).name != before


def test_batches_from_mocked_tfds(tmp_path):
  cfg = ml_collections.ConfigDict({"name": "aan_bytes_4k", "data_dir": str(tmp_path / "tfds"),
                                   "aan_dir": write_aan(tmp_path / "tsv")})
  with tfds.testing.mock_data(num_examples=6):
    train = next(data_lib.make_train_iterator(cfg, global_batch_size=4, seed=0))
    evals = list(data_lib.make_eval_iterator(cfg, global_batch_size=4))
  assert train["inputs"].shape == (4, 2, 4000) and train["inputs"].dtype == np.int32
  assert 0 <= train["inputs"].min() and train["inputs"].max() < 257
  assert set(train["label"].tolist()) <= {0, 1}
  assert [b["inputs"].shape for b in evals] == [(4, 2, 4000)] * 2
  assert sum(float(b["weight"].sum()) for b in evals) == 6
