"""Text datasets: the user's CSV/TSV/JSONL files, catalog GLUE/IMDb (mocked), packing, stdlib."""

from __future__ import annotations

import json

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from attnjax import data as data_lib
from attnjax.data import stdlib_docstrings, text


def _cfg(tmp_path, **kw) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict({"name": "user_text", "data_dir": str(tmp_path / "tfds"),
                                 "tokenizer": "minilm", "max_length": 12, "eval_split": "test",
                                 "text_column": "text", "text_pair_column": "",
                                 "label_column": "label", "label_type": "class",
                                 "num_classes": 2, "label_names": ""})
  c.update(kw)
  return c


def _write_csv(path, rows, header=("text", "label"), sep=","):
  path.write_text("\n".join([sep.join(header)] + [sep.join(map(str, r)) for r in rows]) + "\n")
  return str(path)


def test_csv_and_jsonl_files_tokenize_with_minilm(tmp_path):
  train = _write_csv(tmp_path / "train.csv", [("a good film", "pos"), ("bad", "neg")] * 3)
  test = tmp_path / "test.jsonl"
  test.write_text("".join(json.dumps({"text": t, "label": l}) + "\n"
                          for t, l in [("quite good indeed", "pos"), ("awful", "neg")]))
  cfg = _cfg(tmp_path, files={"train": train, "test": str(test)}, label_names="neg,pos")
  resolved = data_lib.resolve_data_config(cfg)
  info = data_lib.get_dataset_info(resolved)
  assert info.vocab_size == 30522 and info.num_classes == 2 and info.max_length == 12
  batches = list(data_lib.make_eval_iterator(resolved, global_batch_size=4))
  (batch,) = batches
  assert batch["label"][:2].tolist() == [1, 0] and batch["weight"].tolist() == [1, 1, 0, 0]
  tok = data_lib.dataset_tokenizer(resolved)
  expected = tok.encode("quite good indeed").ids
  assert batch["inputs"][0, :len(expected)].tolist() == expected
  assert expected[0] == 101 and expected[-1] == 102 and batch["inputs"][0, len(expected)] == 0


def test_sentence_pairs_and_float_labels(tmp_path):
  rows = [("a man plays", "a person plays", 4.5), ("cats", "the stock market", 0.25)]
  train = _write_csv(tmp_path / "pairs.tsv", rows, header=("s1", "s2", "score"), sep="\t")
  cfg = _cfg(tmp_path, files={"train": train, "test": train}, text_column="s1",
             text_pair_column="s2", label_column="score", label_type="float", max_length=6)
  resolved = data_lib.resolve_data_config(cfg)
  info = data_lib.get_dataset_info(resolved)
  assert info.pair and info.num_classes == 1
  batch = next(iter(data_lib.make_eval_iterator(resolved, global_batch_size=2)))
  assert batch["label"].dtype == np.float32 and batch["label"].tolist() == [4.5, 0.25]
  assert info.features["label"] == data_lib.Feature((), np.float32)
  row = batch["inputs"][1]  # [CLS] cats [SEP] the stock [SEP]: the longer text is truncated
  assert row[0] == 101 and row[-1] == 102 and (row == 102).sum() == 2


@pytest.mark.parametrize("rows,header,kw,message", [
    ([("fine", 1)], ("text", "target"), {}, r"train.csv: label column 'label' is missing; "
     r"the file has columns \['text', 'target'\]"),
    ([("fine", 1), ("bad", 2)], ("text", "label"), {}, r"train.csv, row 3, column 'label': "
     r"label 2 is outside \[0, num_classes=2\)"),
    ([("fine", 1), ("  ", 0)], ("text", "label"), {}, r"train.csv, row 3, column 'text': "
     r"empty text"),
    ([("fine", "maybe")], ("text", "label"), {"label_names": "neg,pos"},
     r"row 2, column 'label': label 'maybe' is not one of the label names"),
])
def test_bad_files_name_file_row_and_column(tmp_path, rows, header, kw, message):
  train = _write_csv(tmp_path / "train.csv", rows, header=header)
  with pytest.raises(ValueError, match=message):
    data_lib.resolve_data_config(_cfg(tmp_path, files={"train": train}, **kw))
  assert not (tmp_path / "tfds").exists()  # checked before anything is prepared


def test_bad_labels_leave_no_workdir(tmp_path):
  from configs import finetune  # pylint: disable=import-outside-toplevel
  from attnjax.train import train_and_evaluate  # pylint: disable=import-outside-toplevel
  train = _write_csv(tmp_path / "train.csv", [("fine", 0), ("bad", 7)])
  config = finetune.get_config(f"init=scratch,task=csv,train={train},smoke")
  config.data.data_dir = str(tmp_path / "tfds")
  workdir = tmp_path / "run"
  with pytest.raises(ValueError, match="label 7 is outside"):
    train_and_evaluate(config, str(workdir))
  assert not workdir.exists()


_GLUE_RECORDS = {
    "glue/sst2": [{"sentence": b"a fine film", "label": 1, "idx": 0}],
    "glue/mrpc": [{"sentence1": b"he said so", "sentence2": b"so he said", "label": 1,
                   "idx": 0}],
    "glue/stsb": [{"sentence1": b"a cat", "sentence2": b"a dog", "label": np.float32(1.25),
                   "idx": 0}],
}


def _check_catalog_batches(name, pair, float_label, n):
  cfg = ml_collections.ConfigDict({"name": name, "data_dir": "", "tokenizer": "",
                                   "max_length": 16})
  resolved = data_lib.resolve_data_config(cfg)
  info = data_lib.get_dataset_info(resolved)
  assert info.pair == pair and (info.label_type == "float") == float_label
  split = data_lib.get_dataset_spec(resolved.name).eval_split
  batch = next(data_lib.make_train_iterator(resolved, global_batch_size=4, seed=0))
  evals = list(data_lib.make_eval_iterator(resolved, split=split, global_batch_size=4))
  assert batch["inputs"].shape == (4, 16) and (batch["inputs"][:, 0] == 101).all()
  assert batch["inputs"].max() < info.vocab_size
  if pair:
    assert ((batch["inputs"] == 102).sum(axis=1) == 2).all()
  assert sum(float(b["weight"].sum()) for b in evals) == n
  return batch


def test_imdb_reviews_through_mock_data():
  with tfds.testing.mock_data(num_examples=5):
    _check_catalog_batches("imdb_reviews", False, False, 5)


@pytest.mark.parametrize("name,pair,float_label", [
    ("glue/sst2", False, False), ("glue/mrpc", True, False), ("glue/stsb", True, True)])
def test_glue_through_the_catalog_path(monkeypatch, name, pair, float_label):
  # tfds's glue builder imports TensorFlow, so tfds.testing.mock_data cannot fake it here;
  # the records stand in for tfds.data_source's (same feature names and types).
  from attnjax.data import catalog  # pylint: disable=import-outside-toplevel
  records = _GLUE_RECORDS[name] * 5
  monkeypatch.setattr(catalog, "catalog_source", lambda tfds_name, cfg, split: records)
  batch = _check_catalog_batches(name, pair, float_label, 5)
  if float_label:
    assert batch["label"].dtype == np.float32 and (batch["label"] == 1.25).all()


def test_packing_fills_rows_and_keeps_order():
  rows = text.pack_documents([[10, 11, 12], [13], [14, 15, 16, 17]], max_length=6, cls_id=2,
                             sep_id=3, pad_id=0)
  # A chunk that ends a document needs no second [SEP]: the row's closing one ends it.
  assert rows.tolist() == [[2, 10, 11, 12, 3, 0], [2, 13, 3, 14, 15, 3],
                           [2, 16, 17, 3, 0, 0]]


def test_trained_wordpiece_has_the_special_ids_and_exact_size():
  tok = text.train_wordpiece(["the quick brown fox", "jumps over the lazy dog"] * 10, 60)
  assert tok.get_vocab_size(with_added_tokens=True) == 60
  assert [tok.token_to_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")] == \
      [0, 1, 2, 3, 4]
  assert tok.encode("the fox").ids[0] == 2 and tok.encode("the fox").ids[-1] == 3


def test_stdlib_docstrings_are_deterministic_and_balanced(tmp_path, monkeypatch):
  pkgs = {f"pkg{i}": i + 2 for i in range(10)}
  for pkg, n in pkgs.items():
    (tmp_path / pkg).mkdir()
    body = "".join(f'def f{j}():\n  """{pkg} function number {j} does things."""\n'
                   for j in range(n))
    (tmp_path / pkg / "__init__.py").write_text(f'"""The {pkg} package docstring."""\n' + body)
  (tmp_path / "pkg0" / "tests").mkdir()
  (tmp_path / "pkg0" / "tests" / "t.py").write_text('"""A test module that is skipped."""\n')
  docs = stdlib_docstrings.extract_docstrings(tmp_path)
  assert docs == stdlib_docstrings.extract_docstrings(tmp_path)
  assert not any("skipped" in d["text"] for d in docs)
  monkeypatch.setattr(stdlib_docstrings, "NUM_PACKAGES", 3)
  names, splits = stdlib_docstrings.package_task(docs)
  assert names == ["pkg7", "pkg8", "pkg9"]  # the three with the most docstrings
  counts = np.bincount([r["label"] for r in splits["train"] + splits["test"]])
  assert counts.tolist() == [10, 10, 10]  # balanced to the smallest of the three (9 + 1)
  assert len(splits["test"]) == 3 * 2


def test_demo_dataset_is_registered():
  assert {"stdlib_docstrings", "stdlib_corpus", "glue/sst2", "glue/mrpc", "glue/stsb",
          "imdb_reviews"} <= set(data_lib.list_datasets())
  info = data_lib.get_dataset_info(ml_collections.ConfigDict({"name": "stdlib_docstrings"}))
  assert info.num_classes == stdlib_docstrings.NUM_PACKAGES and info.tokenizer == "minilm"
