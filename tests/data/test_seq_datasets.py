"""Causal-LM and seq2seq datasets: code_lm, code_summarization, addition, translation; packing.

The standard-library datasets are prepared once per module from a small stand-in tree of
Python files (the real ones take about a minute), with a small BPE.
"""

from __future__ import annotations

import json

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from attnjax import data as data_lib
from attnjax.data import arithmetic, stdlib_code, stdlib_docstrings

_MODULE = '''"""Module {i} docstring, long enough to keep."""
import os


def add_{i}(a, b):
  """Return the sum of a and b for module {i}.

  More text that is not the summary.
  """
  total = a + b  # ünïcode comment {i}
  return total


class Thing{i}:
  """A thing that holds {i} values."""

  @property
  def size(self):
    """The number of values held here."""
    return {i}
'''


@pytest.fixture(scope="module")
def code_dir(tmp_path_factory) -> str:
  """A data_dir in which the stdlib datasets read a tree of 12 small modules."""
  root = tmp_path_factory.mktemp("stdlib")
  for i in range(12):
    pkg = root / f"pkg{i % 3}"
    pkg.mkdir(exist_ok=True)
    (pkg / f"mod{i}.py").write_text(_MODULE.format(i=i), encoding="utf-8")
  (root / "pkg0" / "tests").mkdir()
  (root / "pkg0" / "tests" / "test_x.py").write_text("def test(): pass\n")
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(stdlib_docstrings, "stdlib_root", lambda: root)
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    for config in ("files", "functions"):
      data_lib.prepare_builder(stdlib_code.StdlibCode, data_dir, config=config)
    data_lib.prepare_builder(stdlib_docstrings.StdlibDocstrings, data_dir, config="corpus")
  return data_dir


def _records(builder, split) -> list[dict]:
  """A prepared split's records with text as str (data sources give bytes)."""
  return [{k: v.decode("utf-8") if isinstance(v, bytes) else v for k, v in r.items()}
          for r in builder.as_data_source(split)]


def _resolved(**kw) -> ml_collections.ConfigDict:
  return data_lib.resolve_data_config(ml_collections.ConfigDict(kw))


def _check_features(batch, info, extra=("weight",)):
  dummy = info.dummy_batch(len(batch["inputs"]))
  assert {k: (v.shape, v.dtype) for k, v in batch.items() if k not in extra} == \
      {k: (v.shape, v.dtype) for k, v in dummy.items()}


def test_code_lm_rows_are_packed_next_token_data_with_exact_byte_counts(code_dir):
  cfg = _resolved(name="code_lm", data_dir=code_dir, tokenizer="bpe:300", max_length=32)
  info = data_lib.get_dataset_info(cfg)
  assert (info.pad_id, info.bos_id, info.eos_id, info.vocab_size) == (0, 1, 2, 300)
  assert set(info.features) == {"inputs", "targets", "segment_ids", "positions", "num_bytes"}
  tok = data_lib.dataset_tokenizer(cfg)
  path = data_lib.dataset_tokenizer_file(cfg)
  assert path.name == "code_lm-bpe300.json" and path.is_file()
  files = stdlib_code.StdlibCode(data_dir=code_dir, config="files")
  paths = {s: [r["path"] for r in _records(files, s)] for s in ("train", "validation", "test")}
  assert sorted(sum(paths.values(), [])) == sorted(f"pkg{i % 3}/mod{i}.py" for i in range(12))
  assert all(paths.values())  # split by file, every split non-empty
  batches = list(data_lib.make_eval_iterator(cfg, split="train", global_batch_size=4))
  _check_features(batches[0], info)
  rows = {k: np.concatenate([b[k][b["weight"] > 0] for b in batches]) for k in batches[0]}
  seg, inputs, targets, pos = rows["segment_ids"], rows["inputs"], rows["targets"], rows["positions"]
  real = seg > 0
  assert ((targets != info.pad_id) == real).all() and (inputs[~real] == info.pad_id).all()
  # Within a segment the next input is this position's target; positions count from 0.
  same = real[:, 1:] & (seg[:, 1:] == seg[:, :-1])
  assert (inputs[:, 1:][same] == targets[:, :-1][same]).all()
  assert (pos[:, 1:][same] == pos[:, :-1][same] + 1).all()
  assert (pos[real & np.concatenate([np.ones_like(seg[:, :1], bool), ~same], 1)] == 0).all()
  texts = [r["text"] for r in _records(files, "train")]
  # Every token after BOS is predicted once: targets and bytes add up over the split.
  assert int(real.sum()) == sum(len(tok.encode(t).ids) + 1 for t in texts)
  assert int(rows["num_bytes"].sum()) == sum(len(t.encode("utf-8")) for t in texts)
  assert tok.decode(tok.encode(texts[0]).ids) == texts[0]


def test_code_summarization_maps_source_without_docstring_to_first_sentence(code_dir):
  cfg = _resolved(name="code_summarization", data_dir=code_dir, tokenizer="bpe:300",
                  max_length=48, target_length=12)
  info = data_lib.get_dataset_info(cfg)
  assert info.features == {"inputs": data_lib.Feature((48,), np.int32),
                           "targets": data_lib.Feature((12,), np.int32)}
  builder = stdlib_code.StdlibCode(data_dir=code_dir, config="functions")
  split = {s: _records(builder, s) for s in ("train", "validation", "test")}
  modules = {s: {r["module"] for r in rows} for s, rows in split.items()}
  assert all(modules.values()) and not (modules["train"] & modules["test"])
  record = next(r for r in split["train"] if r["qualname"].startswith("add_"))
  i = record["qualname"].split("_")[1]
  assert record["summary"] == f"Return the sum of a and b for module {i}."
  assert record["source"] == (f"def add_{i}(a, b):\n  total = a + b  # ünïcode comment {i}\n"
                              "  return total")
  assert {r["summary"] for r in split["train"]} >= {f"The number of values held here."}
  batch = next(iter(data_lib.make_eval_iterator(cfg, split="train", global_batch_size=4)))
  _check_features(batch, info)
  tok = data_lib.dataset_tokenizer(cfg)
  ends = (batch["targets"] != info.pad_id).sum(1) - 1
  assert (batch["targets"][np.arange(4), ends] == info.eos_id).all()
  first = split["train"][0]
  assert tok.decode(batch["targets"][0].tolist()) == first["summary"] or ends[0] == 11


def test_addition_is_exact_and_distinct_across_splits(tmp_path):
  cfg = ml_collections.ConfigDict({"name": "addition", "data_dir": str(tmp_path)})
  info = data_lib.get_dataset_info(cfg)
  assert info.vocab_size == 15 and info.eos_id == 2
  tok = data_lib.dataset_tokenizer(cfg)
  batches = list(data_lib.make_eval_iterator(cfg, split="test", global_batch_size=100))
  _check_features(batches[0], info)
  pairs = [(tok.decode(s.tolist()), tok.decode(t.tolist()))
           for b in batches for s, t in zip(b["inputs"], b["targets"])]
  assert len(pairs) == arithmetic.SPLIT_SIZES["test"]
  assert all(eval(s) == int(t) for s, t in pairs)  # pylint: disable=eval-used
  assert max(len(s) for s, _ in pairs) == 2 * arithmetic.MAX_DIGITS + 1
  splits = arithmetic.generate({"train": 3000, "test": 300})
  assert not {r["source"] for r in splits["train"]} & {r["source"] for r in splits["test"]}


def test_user_parallel_files_and_catalog_translation(tmp_path):
  train = tmp_path / "train.tsv"
  train.write_text("de\ten\nein Haus\ta house\nzwei Katzen\ttwo cats\n", encoding="utf-8")
  test = tmp_path / "test.jsonl"
  test.write_text(json.dumps({"de": "ein Hund", "en": "a dog"}) + "\n", encoding="utf-8")
  cfg = _resolved(name="my_mt", data_dir=str(tmp_path / "tfds"),
                  files={"train": str(train), "test": str(test)}, source_column="de",
                  target_column="en", tokenizer="chars:abcdefghijklmnopqrstuvwxyzHKZ ",
                  max_length=16, target_length=8)
  info = data_lib.get_dataset_info(cfg)
  batch = next(iter(data_lib.make_eval_iterator(cfg, global_batch_size=2)))
  _check_features(batch, info)
  tok = data_lib.dataset_tokenizer(cfg)
  assert tok.decode(batch["inputs"][0].tolist()) == "ein Hund"
  assert tok.decode(batch["targets"][0].tolist()) == "a dog"
  assert batch["weight"].tolist() == [1, 0]
  with pytest.raises(ValueError, match="target column 'english' is missing|text column "
                     "'english' is missing"):
    _resolved(name="my_mt", files={"train": str(train)}, source_column="de",
              target_column="english")
  for name in ("wmt14_translate/de-en", "ted_hrlr_translate/pt_to_en"):
    cat = _resolved(name=name, data_dir=str(tmp_path / "cat"), tokenizer="bpe:300",
                    max_length=16, target_length=16)
    with tfds.testing.mock_data(num_examples=3):
      batch = next(data_lib.make_train_iterator(cat, global_batch_size=2, seed=0))
      evals = list(data_lib.make_eval_iterator(cat, global_batch_size=2))
    assert batch["inputs"].shape == (2, 16) and batch["targets"].shape == (2, 16)
    assert sum(float(b["weight"].sum()) for b in evals) == 3


def _csv(path, rows):
  path.write_text("text,label\n" + "".join(f"{t},{l}\n" for t, l in rows))
  return str(path)


def test_pack_true_packs_classification_and_masked_lm_rows(tmp_path, code_dir):
  rows = [("good", 1), ("a rather bad film indeed", 0), ("fine", 1), ("awful stuff", 0)] * 3
  train = _csv(tmp_path / "train.csv", rows)
  cfg = _resolved(name="user_text", data_dir=str(tmp_path / "tfds"), tokenizer="minilm",
                  files={"train": train, "test": train}, max_length=16, pack=True,
                  max_segments=4)
  info = data_lib.get_dataset_info(cfg)
  assert data_lib.resolve_data_config(cfg).name == cfg.name  # resolved once for all
  assert info.features["label"] == data_lib.Feature((4,), np.int32)
  batches = list(data_lib.make_eval_iterator(cfg, global_batch_size=2))
  _check_features(batches[0], info)
  weight = np.concatenate([b["label_weight"][b["weight"] > 0] for b in batches])
  labels = np.concatenate([b["label"][b["weight"] > 0] for b in batches])
  assert weight.sum() == len(rows) and sorted(labels[weight > 0].tolist()) == \
      sorted(l for _, l in rows)
  seg = np.concatenate([b["segment_ids"] for b in batches])
  assert (seg.max(1) == (np.concatenate([b["label_weight"] for b in batches]) > 0).sum(1)).all()
  # The masked-LM corpus packs [CLS] doc [SEP] pieces (long documents split first).
  corpus = _resolved(name="stdlib_corpus", data_dir=code_dir, tokenizer="minilm",
                     max_length=12, pack=True)
  batch = next(iter(data_lib.make_eval_iterator(corpus, split="train", global_batch_size=4)))
  assert set(batch) == {"inputs", "segment_ids", "positions", "weight"}
  starts = batch["positions"] == 0
  assert (batch["inputs"][starts & (batch["segment_ids"] > 0)] == 101).all()
  with pytest.raises(ValueError, match="dataset 'digits' has fixed-length examples"):
    _resolved(name="digits", pack=True)
