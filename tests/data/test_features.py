"""The data seam: declared features, dummy batches, one registry, one record -> many examples."""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np
import pytest

from attnjax import data as data_lib
from attnjax.data import datasets


def test_classification_features_are_derived_and_drive_the_batch(digits_config):
  info = data_lib.get_dataset_info(digits_config)
  assert info.features == {"inputs": data_lib.Feature((64,), np.int32),
                           "label": data_lib.Feature((), np.int32)}
  batch = next(data_lib.make_train_iterator(digits_config, global_batch_size=4, seed=0))
  dummy = info.dummy_batch(4)
  assert {k: (v.shape, v.dtype) for k, v in batch.items()} == \
      {k: (v.shape, v.dtype) for k, v in dummy.items()}
  assert not dummy["inputs"].any()
  two = dataclasses.replace(info, towers=2, label_type="float")
  assert two.features == {"inputs": data_lib.Feature((2, 64), np.int32),
                          "label": data_lib.Feature((), np.float32)}


def test_declared_features_pad_each_key_and_float_labels_stay_float():
  features = {"inputs": data_lib.Feature((5,), np.int32),
              "targets": data_lib.Feature((4,), np.int32),
              "segment_ids": data_lib.Feature((5,), np.int32),
              "label": data_lib.Feature((), np.float32)}
  info = data_lib.DatasetInfo(name="x", vocab_size=9, max_length=5, num_classes=1,
                              num_train=1, num_eval=1, pad_id=7, label_type="float",
                              features=features)
  to_model = data_lib.ToModelInputs(features=info.features, pad_id=info.pad_id,
                                    inputs_key="tokens")
  out = to_model.map({"tokens": [1, 2], "targets": [3], "segment_ids": [1, 1], "label": 0.25})
  assert out["inputs"].tolist() == [1, 2, 7, 7, 7] and out["targets"].tolist() == [3, 7, 7, 7]
  assert out["segment_ids"].tolist() == [1, 1, 0, 0, 0]
  assert out["label"].dtype == np.float32 and float(out["label"]) == 0.25
  with pytest.raises(ValueError, match=r"'targets' has shape \(5,\); .* at most length=4"):
    to_model.map({"tokens": [1], "targets": [1] * 5, "segment_ids": [1], "label": 0.0})
  with pytest.raises(ValueError, match="features \\['label'\\] lack 'inputs'"):
    data_lib.DatasetInfo(name="y", vocab_size=2, max_length=1, num_classes=1, num_train=1,
                         num_eval=1, features={"label": data_lib.Feature((), np.int32)})


def test_one_record_yields_several_examples():
  records = [{"tokens": np.arange(5)}, {"tokens": np.arange(0)}, {"tokens": np.arange(3)}]
  chunks = data_lib.FlatMapSource(
      records, lambda r: [{"tokens": r["tokens"][i:i + 2]} for i in range(0, len(r["tokens"]), 2)],
      "chunks")
  assert len(chunks) == 5 and [c["tokens"].tolist() for c in chunks] == \
      [[0, 1], [2, 3], [4], [0, 1], [2]]


def test_one_registry_holds_every_text_variant():
  assert not hasattr(data_lib, "TEXT_SOURCES")
  cfg = ml_collections.ConfigDict({"name": "stdlib_docstrings", "tokenizer": "minilm",
                                   "max_length": 32})
  resolved = data_lib.resolve_data_config(cfg)
  assert resolved.name == "stdlib_docstrings[minilm,32]" in data_lib.list_datasets()
  assert data_lib.resolve_data_config(resolved).name == resolved.name  # final, not re-resolved
  assert data_lib.get_dataset_info(resolved).max_length == 32
  assert data_lib.resolve_data_config(ml_collections.ConfigDict({"name": "digits"})).name == \
      "digits"
  with pytest.raises(ValueError, match="set config.data.files"):
    data_lib.get_dataset_info(ml_collections.ConfigDict({"name": datasets.FILES_DATASET}))
