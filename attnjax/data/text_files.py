"""TFDS array_record builders for the user's text files: labelled CSV/TSV/JSONL, plain corpora.

* :class:`TextFiles`: one example per row of CSV (``.csv``), TSV (``.tsv``) or JSON lines
  (``.jsonl``/``.json``) files, one file per split: ``text`` (and ``text_b`` for sentence
  pairs) and ``label`` (int64 class id, or float32 for regression).
* :class:`TextCorpus`: one document per line of ``.txt`` files, per JSON line or per CSV row
  (one text column), split into train/test by a seeded hash of the document index.

Raw text is stored; tokenization happens in the pipeline (``attnjax.data.text``), so one
prepared dataset serves every tokenizer. Rows are checked before anything is written:
:func:`read_labelled_rows` raises a ValueError naming the file, the row and the column for a
missing column, an empty text, or a label outside ``[0, num_classes)`` / not a number.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import inspect
import json
import math
import os
import pathlib
from typing import Any, Iterator, Mapping, Sequence

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".txt": "txt"}


def file_format(path: str) -> str:
  """``csv``, ``tsv``, ``jsonl`` or ``txt`` from the file name.

  Raises:
    ValueError: an unknown extension (the message lists the known ones).
  """
  ext = pathlib.Path(path).suffix.lower()
  if ext not in FORMATS:
    raise ValueError(f"{path}: unknown text file type {ext!r}; expected one of "
                     f"{sorted(FORMATS)}")
  return FORMATS[ext]


# A long document is valid input (the tokenizer truncates it); csv's default limit of
# 131,072 characters per field would refuse it.
_CSV_FIELD_LIMIT = 1 << 30


def _check_readable(path: str) -> None:
  if os.path.isdir(path):
    raise ValueError(f"text file {path!r} is a directory, not a file")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"text file {path!r} not found")
  if not os.access(path, os.R_OK):
    raise ValueError(f"text file {path!r} is not readable (permission denied)")


def _bad_utf8(path: str) -> str:
  """``"line L, column C"`` of the first byte of ``path`` that is not UTF-8."""
  with open(path, "rb") as f:
    for number, raw in enumerate(f, start=1):
      try:
        raw.decode("utf-8")
      except UnicodeDecodeError as e:
        return f"line {number}, column {len(raw[:e.start].decode('utf-8')) + 1} (byte " \
               f"{raw[e.start]:#04x})"
  return "an unknown position"


def iter_rows(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
  """Yields ``(row number, record)``; row numbers are 1-based lines of the file (the CSV
  header is line 1, so the first data row is line 2).

  Raises:
    FileNotFoundError: the file does not exist.
    ValueError: a directory or unreadable file, bytes that are not UTF-8, a malformed CSV
      row or JSON line, each naming the file and line.
  """
  _check_readable(path)
  fmt = file_format(path)
  try:
    with open(path, newline="", encoding="utf-8") as f:
      if fmt in ("csv", "tsv"):
        csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
        reader = csv.DictReader(f, delimiter="," if fmt == "csv" else "\t")
        try:
          for record in reader:
            yield reader.line_num, record
        except csv.Error as e:
          raise ValueError(f"{path}, line {reader.line_num}: malformed {fmt.upper()} ({e})"
                           ) from None
      elif fmt == "jsonl":
        for i, line in enumerate(f, start=1):
          if not line.strip():
            continue
          try:
            record = json.loads(line)
          except ValueError as e:
            raise ValueError(f"{path}, line {i}: not valid JSON ({e})") from None
          if not isinstance(record, dict):
            raise ValueError(f"{path}, line {i}: expected a JSON object, got "
                             f"{type(record).__name__}")
          yield i, record
      else:
        for i, line in enumerate(f, start=1):
          if line.strip():
            yield i, {"text": line.rstrip("\n")}
  except UnicodeDecodeError:
    raise ValueError(f"{path}, {_bad_utf8(path)}: not UTF-8 text (save the file as UTF-8)"
                     ) from None


def columns_of(path: str) -> list[str] | None:
  """The header of a CSV/TSV file (None for other formats)."""
  fmt = file_format(path)
  if fmt not in ("csv", "tsv"):
    return None
  _check_readable(path)
  try:
    with open(path, newline="", encoding="utf-8") as f:
      csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
      return next(csv.reader(f, delimiter="," if fmt == "csv" else "\t"), [])
  except UnicodeDecodeError:
    raise ValueError(f"{path}, {_bad_utf8(path)}: not UTF-8 text (save the file as UTF-8)"
                     ) from None
  except csv.Error as e:
    raise ValueError(f"{path}, line 1: malformed {fmt.upper()} header ({e})") from None


def _parse_label(raw: Any, *, where: str, label_type: str, num_classes: int,
                 label_names: Sequence[str]) -> int | float:
  if isinstance(raw, bool):  # JSON true/false: float(True) would read it as 1
    raise ValueError(f"{where}: label {str(raw).lower()} is a boolean; expected "
                     + ("a number" if label_type == "float" else
                        f"an integer class id in [0, {num_classes})"))
  if label_type == "float":
    try:
      value = float(raw)
    except (TypeError, ValueError):
      raise ValueError(f"{where}: label {raw!r} is not a number") from None
    if not math.isfinite(value):
      raise ValueError(f"{where}: label {raw!r} is not finite")
    return value
  if label_names:
    if str(raw) not in label_names:
      raise ValueError(f"{where}: label {raw!r} is not one of the label names "
                       f"{list(label_names)}")
    return list(label_names).index(str(raw))
  try:
    value = float(raw)
    if value != int(value):
      raise ValueError
    label = int(value)
  except (TypeError, ValueError, OverflowError):
    raise ValueError(f"{where}: label {raw!r} is not an integer class id in "
                     f"[0, {num_classes}) (set label_names to map strings)") from None
  if not 0 <= label < num_classes:
    raise ValueError(f"{where}: label {label} is outside [0, num_classes={num_classes})")
  return label


def read_labelled_rows(path: str, *, text_columns: Sequence[str], label_column: str | None,
                       label_type: str = "class", num_classes: int = 2,
                       label_names: Sequence[str] = ()) -> list[dict[str, Any]]:
  """Reads and checks every row: ``{'text', 'text_b', 'label'}`` per row.

  Args:
    path: a CSV, TSV or JSONL file.
    text_columns: one column (single texts) or two (sentence pairs; source and target of
      parallel text).
    label_column: the label column; None for unlabelled (parallel) text, whose rows have
      no ``label``.
    label_type: ``class`` (int ids, or names in ``label_names``) or ``float``.
    num_classes: classes, for ``class`` labels.
    label_names: optional names; a row's label is the index of its name.

  Raises:
    ValueError: a missing column (naming the file and the columns it has), an empty text or
      a bad label (naming the file, row and column).
  """
  header = columns_of(path)
  wanted = list(text_columns) + ([label_column] if label_column is not None else [])
  if header is not None:
    for column in wanted:
      if column not in header:
        kind = "label" if column == label_column else "text"
        raise ValueError(f"{path}: {kind} column {column!r} is missing; the file has columns "
                         f"{header}")
  rows = []
  for line, record in iter_rows(path):
    for column in wanted:
      if column not in record or record[column] is None:
        kind = "label" if column == label_column else "text"
        raise ValueError(f"{path}, row {line}: {kind} column {column!r} is missing (the row "
                         f"has {sorted(record)})")
    texts = []
    for column in text_columns:
      text = record[column]
      if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{path}, row {line}, column {column!r}: empty text")
      texts.append(text)
    row = {"text": texts[0], "text_b": texts[1] if len(texts) > 1 else ""}
    if label_column is not None:
      row["label"] = _parse_label(record[label_column], where=f"{path}, row {line}, column "
                                  f"{label_column!r}", label_type=label_type,
                                  num_classes=num_classes, label_names=label_names)
    rows.append(row)
  if not rows:
    raise ValueError(f"{path}: no rows")
  return rows


def read_corpus(paths: Sequence[str], *, text_column: str = "text") -> list[str]:
  """Every non-empty document of plain-text (one per line), JSONL or CSV/TSV files."""
  docs = []
  for path in paths:
    header = columns_of(path)
    if header is not None and text_column not in header:
      raise ValueError(f"{path}: text column {text_column!r} is missing; the file has "
                       f"columns {header}")
    for line, record in iter_rows(path):
      text = record.get(text_column) if file_format(path) != "txt" else record["text"]
      if text is None:
        raise ValueError(f"{path}, row {line}: text column {text_column!r} is missing")
      if str(text).strip():
        docs.append(str(text))
  if not docs:
    raise ValueError(f"{list(paths)}: no non-empty documents")
  return docs


def files_fingerprint(paths: Sequence[str], *extra: Any) -> str:
  """A short hash of file paths, sizes, modification times and ``extra`` settings.

  Changing a file or a column gives another dataset version directory (no stale data).
  """
  h = hashlib.sha1()
  for p in paths:
    st = os.stat(p)
    h.update(f"{os.path.abspath(p)}|{st.st_size}|{st.st_mtime_ns}".encode())
  h.update(repr(extra).encode())
  return h.hexdigest()[:10]


def _code_path(cls) -> epath.Path:
  # tfds 4.9 on Python >= 3.9 reaches a missing importlib_resources API from the inherited
  # code_path (see attnjax/data/digits.py); TFDS's own fallback is this file.
  return epath.Path(inspect.getfile(cls))


@dataclasses.dataclass(eq=False)
class TextFilesConfig(tfds.core.BuilderConfig):
  """One user dataset: files per split, columns and label kind."""
  files: Mapping[str, str] = dataclasses.field(default_factory=dict)
  text_columns: tuple[str, ...] = ("text",)
  label_column: str | None = "label"  # None: parallel text (source, target), no label
  label_type: str = "class"
  num_classes: int = 2
  label_names: tuple[str, ...] = ()


class TextFiles(tfds.core.GeneratorBasedBuilder):
  """The user's labelled CSV/TSV/JSONL files (one per split), checked row by row."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path | None:
    return _code_path(cls)

  def _info(self) -> tfds.core.DatasetInfo:
    cfg: TextFilesConfig = self.builder_config
    features: dict[str, Any] = {"text": tfds.features.Text(), "text_b": tfds.features.Text()}
    if cfg.label_column is not None:
      features["label"] = tfds.features.Scalar(
          np.float32 if cfg.label_type == "float" else np.int64)
    return tfds.core.DatasetInfo(
        builder=self, description="User text files: " + json.dumps(dict(cfg.files)),
        disable_shuffling=True,  # records in file order: row i of a split is index i
        features=tfds.features.FeaturesDict(features))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(path)
            for split, path in self.builder_config.files.items()}

  def _generate_examples(self, path: str):
    cfg: TextFilesConfig = self.builder_config
    rows = read_labelled_rows(path, text_columns=cfg.text_columns,
                              label_column=cfg.label_column, label_type=cfg.label_type,
                              num_classes=cfg.num_classes, label_names=cfg.label_names)
    for i, row in enumerate(rows):
      yield i, row


@dataclasses.dataclass(eq=False)
class TextCorpusConfig(tfds.core.BuilderConfig):
  """A plain-text corpus: files, the text column of CSV/JSONL files, the held-out split."""
  files: tuple[str, ...] = ()
  text_column: str = "text"
  test_fraction: float = 0.02
  seed: int = 0


def holdout_split(num: int, fraction: float, seed: int) -> np.ndarray:
  """Boolean ``[num]``: True for the documents of the held-out ``test`` split (seeded)."""
  rng = np.random.default_rng(seed)
  test = np.zeros(num, bool)
  k = max(1, int(round(num * fraction))) if num > 1 and fraction > 0 else 0
  test[rng.permutation(num)[:k]] = True
  return test


class TextCorpus(tfds.core.GeneratorBasedBuilder):
  """Documents of the user's text/JSONL/CSV files; a seeded held-out split ``test``."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path | None:
    return _code_path(cls)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description="A plain-text corpus.", disable_shuffling=True,
        features=tfds.features.FeaturesDict({"text": tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    del dl_manager
    cfg: TextCorpusConfig = self.builder_config
    docs = read_corpus(cfg.files, text_column=cfg.text_column)
    test = holdout_split(len(docs), cfg.test_fraction, cfg.seed)
    return {"train": self._generate_examples(docs, ~test),
            "test": self._generate_examples(docs, test)}

  def _generate_examples(self, docs, keep):
    for i in np.flatnonzero(keep):
      yield int(i), {"text": docs[i]}
