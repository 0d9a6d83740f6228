"""Text datasets: raw text from TFDS, tokenized in the pipeline with a ``tokenizers`` tokenizer.

A *text source* (:class:`TextSource`, registered in ``DATASETS`` through
:func:`register_text_source`) says where raw records come from and which fields are text and
label: the offline standard-library docstrings (``stdlib_docstrings``, the
8-way demo task, and ``stdlib_corpus`` for masked-LM pretraining), the TFDS catalog datasets
``glue/sst2``, ``glue/mrpc``, ``glue/stsb`` and ``imdb_reviews`` when the user has prepared
them, and the user's own files (``config.data.files``; see ``attnjax/data/text_files.py``).

A dataset is a source plus a tokenizer and a ``max_length``. Each source is registered in
``DATASETS`` with its default tokenizer and length; its spec's ``variant`` gives the variant a
config asks for (``config.data.tokenizer``, ``config.data.max_length``, ``config.data.files``,
...), which :func:`attnjax.data.resolve_data_config` registers under a concrete name like
``stdlib_docstrings[minilm,64]`` and returns the data config naming it. Tokenizers:

* ``minilm``: all-MiniLM-L6-v2's (BERT uncased WordPiece, 30,522 tokens), offline;
* a directory with ``tokenizer.json``/``vocab.txt``, or a ``tokenizer.json`` file (e.g. the
  one an attnjax pretraining run saved in its workdir);
* ``wordpiece:<size>``: a WordPiece vocabulary trained on the source's training texts
  (BERT normalisation, lower case; ``[PAD]`` = 0, ``[UNK]``, ``[CLS]``, ``[SEP]``,
  ``[MASK]`` = 1..4), cached under ``<data_dir>/tokenizers/``.

Records become ``{'tokens': [CLS] A [SEP] (B [SEP]), 'label'}``, truncated to ``max_length``
(the pipeline pads). Corpus sources are *packed*: documents are tokenized, joined with
``[SEP]`` and cut into rows of ``[CLS] ... [SEP]`` of ``max_length`` tokens, so almost no
token is spent on padding. Float labels (regression) are float32 ``label`` features.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import os
import pathlib
from typing import Any, Callable, Iterable, Mapping, Sequence

import ml_collections
import numpy as np

from attnjax.data import datasets

MINILM_VOCAB_SIZE = 30522
#: BERT uncased ids of [PAD], [UNK], [CLS], [SEP], [MASK] (MiniLM's vocabulary).
MINILM_SPECIAL = {"pad": 0, "unk": 100, "cls": 101, "sep": 102, "mask": 103}
#: Ids of the special tokens of a WordPiece vocabulary trained here.
TRAINED_SPECIAL = {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
_SPECIAL_TOKENS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]",
                   "mask": "[MASK]"}


@dataclasses.dataclass(frozen=True)
class TextDatasetInfo(datasets.DatasetInfo):
  """DatasetInfo of a tokenized text dataset.

  Attributes (beyond :class:`DatasetInfo`):
    pair: examples are sentence pairs ``[CLS] A [SEP] B [SEP]`` (segment ids follow the
      first ``[SEP]``).
    cls_id, sep_id, mask_id: special token ids (-1 when the tokenizer has none).
    special_ids: ids masking never selects (pad, unk, cls, sep, mask).
    tokenizer: the tokenizer spec (see the module docstring).
  """
  pair: bool = False
  cls_id: int = -1
  sep_id: int = -1
  mask_id: int = -1
  special_ids: tuple[int, ...] = ()
  tokenizer: str = ""


@dataclasses.dataclass(frozen=True)
class TextSource:
  """Where raw text records come from.

  Attributes:
    name: the registered name.
    read: ``read(data_config, split)`` -> random-access raw records.
    text_keys: one key (single texts) or two (sentence pairs); ``()`` for a corpus's
      ``text``.
    label_key: the label's key (``None`` for a corpus).
    label_type: ``class``, ``float`` or ``none``.
    num_classes: classes (1 for regression, 0 for a corpus).
    splits: split names ``read`` accepts.
    train_split, eval_split: defaults.
    tokenizer: default tokenizer spec.
    max_length: default length.
    num_train, num_eval: sizes when known (0 = not known before preparing).
    label_names: class names in label order, when known.
  """
  name: str
  read: Callable[[Any, str], Sequence[Mapping[str, Any]]]
  text_keys: tuple[str, ...] = ("text",)
  label_key: str | None = "label"
  label_type: str = "class"
  num_classes: int = 2
  splits: tuple[str, ...] = ("train", "test")
  train_split: str = "train"
  eval_split: str = "test"
  tokenizer: str = "minilm"
  max_length: int = 128
  num_train: int = 0
  num_eval: int = 0
  label_names: tuple[str, ...] = ()

  @property
  def is_corpus(self) -> bool:
    return self.label_key is None


_TOKENIZERS: dict[tuple, Any] = {}
_PACKED: dict[tuple, np.ndarray] = {}


def _as_text(value: Any) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


# ---------------------------------------------------------------------------------------
# tokenizers


def train_wordpiece(texts: Iterable[str], vocab_size: int):
  """A BERT-style WordPiece tokenizer trained on ``texts`` (specials first, ids 0..4), with
  exactly ``vocab_size`` tokens."""
  # pylint: disable-next=import-outside-toplevel
  from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
  from tokenizers import trainers  # pylint: disable=import-outside-toplevel
  tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
  tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                              strip_accents=None, lowercase=True)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  specials = [_SPECIAL_TOKENS[k] for k in ("pad", "unk", "cls", "sep", "mask")]
  trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials,
                                      show_progress=False)
  tok.train_from_iterator(texts, trainer)
  # A small corpus may give fewer pieces than asked; fill with unused tokens (as BERT's
  # [unusedN]) so the vocabulary has exactly the embedding table's `vocab_size` rows.
  missing = vocab_size - tok.get_vocab_size(with_added_tokens=True)
  if missing > 0:
    tok.add_tokens([f"[unused{i}]" for i in range(missing)])
  tok.post_processor = processors.TemplateProcessing(
      single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
      special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
  tok.decoder = decoders.WordPiece(prefix="##")
  return tok


def _parse_wordpiece(spec: str) -> int | None:
  if spec.startswith("wordpiece:"):
    try:
      return int(spec.split(":", 1)[1])
    except ValueError:
      raise ValueError(f"config.data.tokenizer={spec!r}: expected wordpiece:<vocab size>") \
          from None
  return None


def load_text_tokenizer(spec: str, *, source: TextSource, data_config: Any):
  """The ``tokenizers.Tokenizer`` of ``spec`` without padding or truncation (cached).

  Raises:
    FileNotFoundError / ValueError: a tokenizer path that does not hold one, naming it.
  """
  data_dir = str(datasets.resolve_data_dir(data_config))
  key = (spec, source.name, data_dir if _parse_wordpiece(spec) else "")
  if key in _TOKENIZERS:
    return _TOKENIZERS[key]
  from tokenizers import Tokenizer  # pylint: disable=import-outside-toplevel
  size = _parse_wordpiece(spec)
  if spec == "minilm":
    from attnjax.pretrained import load_tokenizer, minilm_path  # pylint: disable=import-outside-toplevel
    tok = load_tokenizer(minilm_path(), check_vocab_size=False)
  elif size is not None:
    cache = pathlib.Path(data_dir) / "tokenizers" / (
        f"{source.name.replace('/', '_')}-wordpiece{size}.json")
    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(str(cache) + ".lock", "a") as lock:
      fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
      try:
        if not cache.is_file():
          texts = source.read(data_config, source.train_split)
          keys = source.text_keys or ("text",)
          tok = train_wordpiece((_as_text(r[k]) for r in texts for k in keys), size)
          tmp = str(cache) + ".tmp"
          tok.save(tmp)
          os.replace(tmp, cache)
      finally:
        fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
    tok = Tokenizer.from_file(str(cache))
  else:
    path = pathlib.Path(spec).expanduser()
    if path.is_dir():
      from attnjax.pretrained import load_tokenizer  # pylint: disable=import-outside-toplevel
      tok = load_tokenizer(path, check_vocab_size=False)
    elif path.is_file():
      try:
        tok = Tokenizer.from_file(str(path))
      except Exception as e:  # tokenizers raises a bare Exception on bad JSON
        raise ValueError(f"config.data.tokenizer: {path} is not a tokenizers JSON file ({e})") \
            from e
    else:
      raise FileNotFoundError(f"config.data.tokenizer={spec!r}: no such tokenizer directory or "
                              "file (expected 'minilm', 'wordpiece:<size>', a checkpoint "
                              "directory or a tokenizer.json)")
  tok.no_padding()
  tok.no_truncation()
  _TOKENIZERS[key] = tok
  return tok


def _special_ids(tok) -> dict[str, int]:
  ids = {k: tok.token_to_id(t) for k, t in _SPECIAL_TOKENS.items()}
  return {k: (-1 if v is None else int(v)) for k, v in ids.items()}


# ---------------------------------------------------------------------------------------
# specs


def _info(source: TextSource, name: str, tokenizer: str, max_length: int,
          data_config: Any | None) -> TextDatasetInfo:
  """The info of a variant; loads the tokenizer only for specs whose ids are not known."""
  size = _parse_wordpiece(tokenizer)
  if tokenizer == "minilm":
    vocab, special = MINILM_VOCAB_SIZE, dict(MINILM_SPECIAL)
  elif size is not None:
    # The trained vocabulary has at most `size` tokens: an embedding of `size` rows fits it.
    vocab, special = size, dict(TRAINED_SPECIAL)
  else:
    tok = load_text_tokenizer(tokenizer, source=source, data_config=data_config or {})
    vocab, special = tok.get_vocab_size(with_added_tokens=True), _special_ids(tok)
  if special["pad"] < 0:
    raise ValueError(f"tokenizer {tokenizer!r} has no [PAD] token")
  return TextDatasetInfo(
      name=name, vocab_size=vocab, max_length=max_length,
      num_classes=source.num_classes, num_train=source.num_train, num_eval=source.num_eval,
      pad_id=special["pad"], pair=len(source.text_keys) == 2, label_type=source.label_type,
      cls_id=special["cls"], sep_id=special["sep"], mask_id=special["mask"],
      special_ids=tuple(sorted(v for v in special.values() if v >= 0)), tokenizer=tokenizer)


class _Tokenized(Sequence):
  """Raw records -> ``{'tokens', 'label'}``, tokenized when read."""

  def __init__(self, records, tok, source: TextSource, info: TextDatasetInfo):
    from tokenizers import Tokenizer  # pylint: disable=import-outside-toplevel
    # A private copy truncating to max_length (pairs longest-first, [SEP]s kept, as BERT);
    # the cached tokenizer stays untruncated for corpora and other lengths.
    tok = Tokenizer.from_str(tok.to_str())
    tok.enable_truncation(info.max_length)
    self._records, self._tok, self._source, self._info = records, tok, source, info

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
    record = self._records[index]
    texts = [_as_text(record[k]) for k in self._source.text_keys]
    enc = self._tok.encode(*texts) if len(texts) == 2 else self._tok.encode(texts[0])
    ids = np.asarray(enc.ids, np.int32)
    label = record[self._source.label_key]
    return {"tokens": ids,
            "label": float(label) if self._source.label_type == "float" else int(label)}

  def __repr__(self) -> str:
    return f"_Tokenized({self._records!r}, {self._info.name})"


class _Packed(Sequence):
  """Rows of a packed corpus ``[rows, max_length]`` as ``{'tokens', 'label': 0}`` records."""

  def __init__(self, rows: np.ndarray, name: str):
    self._rows, self._name = rows, name

  def __len__(self) -> int:
    return len(self._rows)

  def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
    return {"tokens": self._rows[index], "label": 0}

  def __repr__(self) -> str:
    return f"_Packed({self._name}, rows={len(self._rows)})"


def pack_documents(token_lists: Iterable[Sequence[int]], *, max_length: int, cls_id: int,
                   sep_id: int, pad_id: int) -> np.ndarray:
  """Packs tokenized documents into ``[rows, max_length]`` int32 ``[CLS] ... [SEP]`` rows.

  Documents are joined with ``[SEP]`` into one stream that is cut every ``max_length - 2``
  tokens; a document may continue on the next row. A chunk ending exactly at a document's
  ``[SEP]`` drops it (the row's closing ``[SEP]`` ends the document) and gets one pad.
  """
  if max_length < 3:
    raise ValueError(f"max_length={max_length} leaves no room between [CLS] and [SEP]")
  stream: list[int] = []
  for ids in token_lists:
    if len(ids):
      stream.extend(ids)
      stream.append(sep_id)
  body = max_length - 2
  rows = []
  for start in range(0, len(stream), body):
    chunk = stream[start:start + body]
    if chunk and chunk[-1] == sep_id:
      chunk = chunk[:-1]  # the row's closing [SEP] ends the document already
    if not chunk:
      continue
    row = [cls_id] + chunk + [sep_id]
    rows.append(row + [pad_id] * (max_length - len(row)))
  return np.asarray(rows, np.int32).reshape(-1, max_length)


def _make_spec(source: TextSource, name: str, tokenizer: str, max_length: int,
               data_config: Any | None) -> datasets.DatasetSpec:
  info = _info(source, name, tokenizer, max_length, data_config)

  def read(data_config: Any, split: str) -> Sequence[Mapping[str, Any]]:
    tok = load_text_tokenizer(tokenizer, source=source, data_config=data_config)
    if tok.get_vocab_size(with_added_tokens=True) > info.vocab_size:
      raise ValueError(f"dataset {name!r}: the tokenizer has "
                       f"{tok.get_vocab_size(with_added_tokens=True)} tokens but the "
                       f"registered vocab_size is {info.vocab_size}")
    records = source.read(data_config, split)
    if not source.is_corpus:
      return _Tokenized(records, tok, source, info)
    key = (name, split, str(datasets.resolve_data_dir(data_config)))
    if key not in _PACKED:
      texts = [_as_text(r["text"]) for r in records]
      encodings = tok.encode_batch(texts, add_special_tokens=False)
      _PACKED[key] = pack_documents((e.ids for e in encodings), max_length=max_length,
                                    cls_id=info.cls_id, sep_id=info.sep_id,
                                    pad_id=info.pad_id)
    return _Packed(_PACKED[key], name)

  return datasets.DatasetSpec(
      info=info, splits=source.splits, source=read, inputs_key="tokens", label_key="label",
      train_split=source.train_split, eval_split=source.eval_split,
      # Only the source's default entry has options; a concrete variant is final.
      variant=(lambda data_config: _variant(source, data_config)) if name == source.name
      else None,
      tokenizer=lambda data_config: load_text_tokenizer(tokenizer, source=source,
                                                        data_config=data_config))


def _variant(source: TextSource, data_config: Any) -> datasets.DatasetSpec:
  """The spec of ``source`` with the config's ``tokenizer`` and ``max_length`` (0/"" = the
  source's defaults), under ``<source>[<tokenizer>,<max_length>]`` unless both are defaults."""
  tokenizer = data_config.get("tokenizer") or source.tokenizer
  max_length = int(data_config.get("max_length") or source.max_length)
  if tokenizer == source.tokenizer and max_length == source.max_length:
    name = source.name
  else:
    name = f"{source.name}[{_short(tokenizer)},{max_length}]"
  if name in datasets.DATASETS:
    return datasets.DATASETS.get(name)
  return _make_spec(source, name, tokenizer, max_length, data_config)


def register_text_source(source: TextSource) -> None:
  """Registers ``source`` with its default variant in ``DATASETS`` under ``source.name``."""
  datasets.DATASETS.register(source.name, _make_spec(source, source.name, source.tokenizer,
                                                     source.max_length, None))


def _short(spec: str) -> str:
  if len(spec) <= 16 and "/" not in spec and os.sep not in spec:
    return spec
  return "tok-" + hashlib.sha1(os.path.abspath(spec).encode()).hexdigest()[:8]


def _files_source(data_config: Any) -> TextSource:
  """A source for the user's files named in ``data_config.files`` (checked row by row)."""
  from attnjax.data import text_files  # pylint: disable=import-outside-toplevel
  files = {k: str(v) for k, v in dict(data_config.files).items() if v}
  if "train" not in files:
    raise ValueError(f"config.data.files={files} needs a 'train' file")
  columns = data_config.get("text_column", "text")
  text_columns = tuple(c.strip() for c in columns.split(",")) if isinstance(columns, str) \
      else tuple(columns)
  pair = data_config.get("text_pair_column", "")
  if pair:
    text_columns = text_columns[:1] + (pair,)
  label_names = data_config.get("label_names", "") or ""
  label_names = tuple(n.strip() for n in label_names.split(",")) if isinstance(
      label_names, str) and label_names else tuple(label_names or ())
  label_type = data_config.get("label_type", "class")
  if label_type not in ("class", "float"):
    raise ValueError(f"config.data.label_type={label_type!r}; expected 'class' or 'float'")
  num_classes = 1 if label_type == "float" else int(
      data_config.get("num_classes", 0) or len(label_names) or 2)
  settings = dict(text_columns=text_columns,
                  label_column=data_config.get("label_column", "label"),
                  label_type=label_type, num_classes=num_classes, label_names=label_names)
  fingerprint = text_files.files_fingerprint(sorted(files.values()), sorted(files.items()),
                                             settings)
  counts = {split: len(text_files.read_labelled_rows(path, **settings))
            for split, path in files.items()}  # checks every row now, before any writing
  builder_config = text_files.TextFilesConfig(name=f"{data_config.name}-{fingerprint}",
                                              files=files, **settings)

  def read(cfg: Any, split: str) -> Sequence[Mapping[str, Any]]:
    builder = datasets.prepare_builder(text_files.TextFiles, datasets.resolve_data_dir(cfg),
                                       config=builder_config)
    return builder.as_data_source(split)

  eval_split = data_config.get("eval_split", "test")
  return TextSource(
      name=f"{data_config.name}-{fingerprint}", read=read, text_keys=("text", "text_b")
      if len(text_columns) == 2 else ("text",), label_key="label", label_type=label_type,
      num_classes=num_classes, splits=tuple(files), train_split="train",
      eval_split=eval_split if eval_split in files else "train",
      num_train=counts["train"], num_eval=counts.get(eval_split, 0), label_names=label_names)


def _files_variant(data_config: Any) -> datasets.DatasetSpec:
  """The spec of the user's files in ``config.data.files`` (read and checked row by row)."""
  source = _files_source(data_config)
  tokenizer = data_config.get("tokenizer") or source.tokenizer
  max_length = int(data_config.get("max_length") or source.max_length)
  name = f"{source.name}[{_short(tokenizer)},{max_length}]"
  if name in datasets.DATASETS:
    return datasets.DATASETS.get(name)
  return _make_spec(source, name, tokenizer, max_length, data_config)


def _require_files(data_config: Any) -> None:
  if not datasets._has_files(data_config):  # pylint: disable=protected-access
    raise ValueError(f"dataset {datasets.FILES_DATASET!r} reads the user's files: set "
                     "config.data.files = {'train': ..., 'test': ...}")


def _no_files_source(data_config: Any, split: str) -> Sequence[Mapping[str, Any]]:
  del split
  _require_files(data_config)
  raise ValueError("config.data.files is set: resolve the data config first "
                   "(attnjax.data.resolve_data_config)")


# Any config with `files` resolves through this entry (datasets.resolve_data_config).
datasets.DATASETS.register(datasets.FILES_DATASET, datasets.DatasetSpec(
    info=TextDatasetInfo(name=datasets.FILES_DATASET, vocab_size=MINILM_VOCAB_SIZE,
                         max_length=128, num_classes=2, num_train=0, num_eval=0,
                         tokenizer="minilm"),
    splits=("train", "test"), source=_no_files_source, check=_require_files,
    variant=_files_variant))


# ---------------------------------------------------------------------------------------
# built-in sources


def _stdlib_reader(config_name: str):
  def read(data_config: Any, split: str) -> Sequence[Mapping[str, Any]]:
    from attnjax.data import stdlib_docstrings  # pylint: disable=import-outside-toplevel
    builder = datasets.prepare_builder(stdlib_docstrings.StdlibDocstrings,
                                       datasets.resolve_data_dir(data_config),
                                       config=config_name)
    return builder.as_data_source(split)
  return read


def _catalog_reader(tfds_name: str):
  def read(data_config: Any, split: str) -> Sequence[Mapping[str, Any]]:
    from attnjax.data.catalog import catalog_source  # pylint: disable=import-outside-toplevel
    return catalog_source(tfds_name, data_config, split)
  return read


register_text_source(TextSource(
    name="stdlib_docstrings", read=_stdlib_reader("packages"), num_classes=8,
    tokenizer="minilm", max_length=64))
register_text_source(TextSource(
    name="stdlib_corpus", read=_stdlib_reader("corpus"), text_keys=(), label_key=None,
    label_type="none", num_classes=0, tokenizer="wordpiece:8000", max_length=128))
register_text_source(TextSource(
    name="glue/sst2", read=_catalog_reader("glue/sst2"), text_keys=("sentence",),
    splits=("train", "validation"), eval_split="validation", num_train=67_349, num_eval=872,
    label_names=("negative", "positive")))
register_text_source(TextSource(
    name="glue/mrpc", read=_catalog_reader("glue/mrpc"),
    text_keys=("sentence1", "sentence2"), splits=("train", "validation"),
    eval_split="validation", num_train=3_668, num_eval=408,
    label_names=("not_equivalent", "equivalent")))
register_text_source(TextSource(
    name="glue/stsb", read=_catalog_reader("glue/stsb"),
    text_keys=("sentence1", "sentence2"), label_type="float", num_classes=1,
    splits=("train", "validation"), eval_split="validation", num_train=5_749, num_eval=1_500))
register_text_source(TextSource(
    name="imdb_reviews", read=_catalog_reader("imdb_reviews"), splits=("train", "test"),
    max_length=256, num_train=25_000, num_eval=25_000, label_names=("neg", "pos")))
