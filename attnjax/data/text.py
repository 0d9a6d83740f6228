"""Text datasets: raw text from TFDS, tokenized in the pipeline with a ``tokenizers`` tokenizer.

A *text source* (:class:`TextSource`, registered in ``DATASETS`` through
:func:`register_text_source`) says where raw records come from, which fields are text and
label, and what kind of examples they make (``TextSource.kind``):

* labelled text: the offline standard-library docstrings (``stdlib_docstrings``, the 8-way
  demo task; ``stdlib_corpus``, a corpus for masked-LM pretraining), the TFDS catalog
  datasets ``glue/sst2``, ``glue/mrpc``, ``glue/stsb`` and ``imdb_reviews`` when the user has
  prepared them, and the user's own files (``config.data.files``; ``attnjax/data/text_files.py``);
* causal LM: ``code_lm``, the installed standard library's source files
  (``attnjax/data/stdlib_code.py``), as packed next-token rows;
* seq2seq: ``code_summarization`` (function source -> first docstring sentence),
  ``addition`` (``"123+45" -> "168"``, ``attnjax/data/arithmetic.py``), the catalog's
  ``wmt14_translate/de-en`` and ``ted_hrlr_translate/pt_to_en`` when prepared, and the user's
  parallel files (``config.data.files`` with ``source_column`` and ``target_column``).

A dataset is a source plus options (:class:`TextOptions`): ``config.data.tokenizer``,
``max_length``, ``target_length`` (seq2seq), ``pack`` and ``max_segments`` (first-fit
packing, ``attnjax/data/packing.py``). Each source is registered in ``DATASETS`` with its
defaults; its spec's ``variant`` gives the variant a config asks for, which
:func:`attnjax.data.resolve_data_config` registers under a concrete name like
``stdlib_docstrings[minilm,64]`` and returns the data config naming it. Tokenizers:

* ``minilm``: all-MiniLM-L6-v2's (BERT uncased WordPiece, 30,522 tokens), offline;
* a directory with ``tokenizer.json``/``vocab.txt``, or a ``tokenizer.json`` file (e.g. the
  one an attnjax pretraining run saved in its workdir);
* ``wordpiece:<size>``: a WordPiece vocabulary trained on the source's training texts
  (BERT normalisation, lower case; ``[PAD]`` = 0, ``[UNK]``, ``[CLS]``, ``[SEP]``,
  ``[MASK]`` = 1..4), cached under ``<data_dir>/tokenizers/``;
* ``bpe:<size>``: a byte-level BPE trained likewise (``<pad>`` = 0, ``<bos>`` = 1,
  ``<eos>`` = 2; every byte encodes, decoding is exact), cached the same way;
* ``chars:<alphabet>``: one id per character (``<pad>``, ``<bos>``, ``<eos>``, ``<unk>`` =
  0..3 first).

Labelled records become ``{'tokens': [CLS] A [SEP] (B [SEP]), 'label'}``, truncated to
``max_length`` (the pipeline pads); float labels (regression) are float32 ``label`` features.
Corpus sources are *packed*: documents are tokenized, joined with ``[SEP]`` and cut into rows
of ``[CLS] ... [SEP]`` of ``max_length`` tokens, so almost no token is spent on padding; with
``pack=True`` each document is cut into ``[CLS] piece [SEP]`` examples instead, packed
first-fit with ``segment_ids`` and ``positions``. Causal-LM documents become
``<bos> ids <eos>`` cut into next-token chunks (:func:`causal_lm_chunks`), packed first-fit.
Seq2seq records become source and target ids, each ending in ``<eos>``.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import os
import pathlib
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import ml_collections
import numpy as np

from attnjax.data import arithmetic
from attnjax.data import datasets

MINILM_VOCAB_SIZE = 30522
#: BERT uncased ids of [PAD], [UNK], [CLS], [SEP], [MASK] (MiniLM's vocabulary).
MINILM_SPECIAL = {"pad": 0, "unk": 100, "cls": 101, "sep": 102, "mask": 103}
#: Ids of the special tokens of a WordPiece vocabulary trained here.
TRAINED_SPECIAL = {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
_SPECIAL_TOKENS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]",
                   "mask": "[MASK]"}
#: Ids of the special tokens of a byte-level BPE trained here (``bpe:<size>``) and of a
#: character tokenizer (``chars:<alphabet>``, which adds ``<unk>`` = 3).
BPE_SPECIAL = {"pad": 0, "bos": 1, "eos": 2}
_BPE_TOKENS = {"pad": "<pad>", "bos": "<bos>", "eos": "<eos>"}


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
  """Where raw text records come from, and what kind of examples they make.

  Attributes:
    name: the registered name.
    read: ``read(data_config, split)`` -> random-access raw records.
    text_keys: one key (single texts) or two (sentence pairs; for ``seq2seq`` the source
      and the target); ``()`` for a corpus's ``text``.
    label_key: the label's key (``None`` for a corpus).
    label_type: ``class``, ``float`` or ``none``.
    num_classes: classes (1 for regression, 0 for a corpus).
    splits: split names ``read`` accepts.
    train_split, eval_split: defaults.
    tokenizer: default tokenizer spec.
    max_length: default length (of the source, for ``seq2seq``).
    num_train, num_eval: sizes when known (0 = not known before preparing).
    label_names: class names in label order, when known.
    kind: ``labelled`` (classification / regression; or a masked-LM corpus when
      ``label_key`` is None), ``causal_lm`` (documents -> next-token rows, packed) or
      ``seq2seq`` (``text_keys`` = (source, target)).
    target_length: default target length of a ``seq2seq`` source.
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
  kind: str = "labelled"
  target_length: int = 0

  @property
  def is_corpus(self) -> bool:
    return self.kind == "labelled" and self.label_key is None


@dataclasses.dataclass(frozen=True)
class TextOptions:
  """The ``config.data`` options that make a variant of a text source.

  Attributes:
    tokenizer: tokenizer spec (module docstring).
    max_length: tokens per row (of the source, for seq2seq).
    target_length: target tokens (seq2seq only; 0 otherwise).
    pack: first-fit packing of examples into rows (``attnjax.data.packing``); always on
      for ``causal_lm``.
    max_segments: most packed examples per row (labelled data, packed).
  """
  tokenizer: str
  max_length: int
  target_length: int = 0
  pack: bool = False
  max_segments: int = 0

  @classmethod
  def from_config(cls, source: TextSource, data_config: Any) -> TextOptions:
    """The options ``data_config`` sets; 0 / "" fall back to the source's defaults."""
    get = data_config.get
    target_length = int(get("target_length") or source.target_length) \
        if source.kind == "seq2seq" else 0
    pack = bool(get("pack", False)) or source.kind == "causal_lm"
    if pack and source.kind == "seq2seq":
      raise ValueError(f"config.data.pack=True: dataset {source.name!r} is seq2seq; packing "
                       "is for masked-LM, causal-LM and classification data")
    max_segments = int(get("max_segments") or DEFAULT_MAX_SEGMENTS) \
        if pack and source.kind == "labelled" else 0
    return cls(tokenizer=get("tokenizer") or source.tokenizer,
               max_length=int(get("max_length") or source.max_length),
               target_length=target_length, pack=pack, max_segments=max_segments)

  @classmethod
  def defaults(cls, source: TextSource) -> TextOptions:
    return cls.from_config(source, {})

  def suffix(self) -> str:
    """``tokenizer,max_length[,t<target_length>][,packed<max_segments>]``."""
    parts = [_short(self.tokenizer), str(self.max_length)]
    if self.target_length:
      parts.append(f"t{self.target_length}")
    if self.pack and self.max_segments:
      parts.append(f"packed{self.max_segments}")
    elif self.pack:
      parts.append("packed")
    return ",".join(parts)


#: Packed classification rows hold at most this many examples unless
#: ``config.data.max_segments`` says otherwise.
DEFAULT_MAX_SEGMENTS = 8
#: Records a tokenizer is trained on at most (the first ones of the train split).
MAX_TOKENIZER_TEXTS = 200_000

_TOKENIZERS: dict[tuple, Any] = {}
_PACKED: dict[tuple, Any] = {}


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


def train_byte_bpe(texts: Iterable[str], vocab_size: int):
  """A byte-level BPE (GPT-2 style) trained on ``texts``, at most ``vocab_size`` tokens.

  ``<pad>`` = 0, ``<bos>`` = 1, ``<eos>`` = 2 (:data:`BPE_SPECIAL`); every byte is in the
  alphabet, so any text encodes (no unknown token) and decodes back exactly. Encoding adds
  no special tokens: the datasets add BOS/EOS themselves.
  """
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # pylint: disable=import-outside-toplevel
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  specials = [_BPE_TOKENS[k] for k in ("pad", "bos", "eos")]
  if vocab_size < 256 + len(specials):
    raise ValueError(f"bpe vocab_size={vocab_size} is below the 256 bytes + "
                     f"{len(specials)} special tokens")
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  tok.train_from_iterator(texts, trainer)
  return tok


def char_tokenizer(alphabet: str):
  """A character tokenizer: ``<pad>`` 0, ``<bos>`` 1, ``<eos>`` 2, ``<unk>`` 3, then one id
  per character of ``alphabet`` in order; decoding joins the characters."""
  from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers  # pylint: disable=import-outside-toplevel
  chars = list(dict.fromkeys(alphabet))
  if not chars:
    raise ValueError("config.data.tokenizer='chars:': the alphabet is empty")
  specials = [_BPE_TOKENS[k] for k in ("pad", "bos", "eos")] + ["<unk>"]
  vocab = {t: i for i, t in enumerate(specials + chars)}
  tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
  tok.decoder = decoders.Fuse()
  tok.add_special_tokens(specials)  # existing ids; marks them skippable when decoding
  return tok


def _parse_trained(spec: str) -> tuple[str, int] | None:
  """``('wordpiece' | 'bpe', size)`` for a trained-vocabulary spec, else None."""
  for kind in ("wordpiece", "bpe"):
    if spec.startswith(kind + ":"):
      try:
        return kind, int(spec.split(":", 1)[1])
      except ValueError:
        raise ValueError(f"config.data.tokenizer={spec!r}: expected {kind}:<vocab size>") \
            from None
  return None


def _parse_wordpiece(spec: str) -> int | None:
  trained = _parse_trained(spec)
  return trained[1] if trained and trained[0] == "wordpiece" else None


def trained_tokenizer_file(spec: str, *, source: TextSource, data_config: Any) -> pathlib.Path | None:
  """Where a ``wordpiece:N`` / ``bpe:N`` vocabulary of ``source`` is cached
  (``<data_dir>/tokenizers/<source>-<kind><N>.json``); None for other specs."""
  trained = _parse_trained(spec)
  if trained is None:
    return None
  kind, size = trained
  return datasets.resolve_data_dir(data_config) / "tokenizers" / (
      f"{source.name.replace('/', '_')}-{kind}{size}.json")


def _training_texts(source: TextSource, data_config: Any) -> Iterator[str]:
  records = source.read(data_config, source.train_split)
  keys = source.text_keys or ("text",)
  for i in range(min(len(records), MAX_TOKENIZER_TEXTS)):
    for k in keys:
      yield _as_text(records[i][k])


def load_text_tokenizer(spec: str, *, source: TextSource, data_config: Any):
  """The ``tokenizers.Tokenizer`` of ``spec`` without padding or truncation (cached).

  Raises:
    FileNotFoundError / ValueError: a tokenizer path that does not hold one, naming it.
  """
  data_dir = str(datasets.resolve_data_dir(data_config))
  cache = trained_tokenizer_file(spec, source=source, data_config=data_config)
  key = (spec, source.name, data_dir if cache is not None else "")
  if key in _TOKENIZERS:
    return _TOKENIZERS[key]
  from tokenizers import Tokenizer  # pylint: disable=import-outside-toplevel
  if spec == "minilm":
    from attnjax.pretrained import load_tokenizer, minilm_path  # pylint: disable=import-outside-toplevel
    tok = load_tokenizer(minilm_path(), check_vocab_size=False)
  elif spec.startswith("chars:"):
    tok = char_tokenizer(spec.split(":", 1)[1])
  elif cache is not None:
    kind, size = _parse_trained(spec)
    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(str(cache) + ".lock", "a") as lock:
      fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
      try:
        if not cache.is_file():
          train = train_wordpiece if kind == "wordpiece" else train_byte_bpe
          tok = train(_training_texts(source, data_config), size)
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
                              "file (expected 'minilm', 'wordpiece:<size>', 'bpe:<size>', "
                              "'chars:<alphabet>', a checkpoint directory or a tokenizer.json)")
  tok.no_padding()
  tok.no_truncation()
  _TOKENIZERS[key] = tok
  return tok


def _special_ids(tok) -> dict[str, int]:
  ids = {k: tok.token_to_id(t) for k, t in _SPECIAL_TOKENS.items()}
  for k, t in _BPE_TOKENS.items():
    if ids.get(k) is None:
      ids[k] = tok.token_to_id(t)
  return {k: (-1 if v is None else int(v)) for k, v in ids.items()}


def token_byte_lengths(tok) -> np.ndarray:
  """int32 ``[vocab]``: UTF-8 bytes each id stands for (0 for special tokens).

  Exact for byte-level BPE (each character of a token is one byte); for other tokenizers,
  the length of the id decoded alone.
  """
  from tokenizers import pre_tokenizers  # pylint: disable=import-outside-toplevel
  alphabet = set(pre_tokenizers.ByteLevel.alphabet())
  special = {int(i) for i in tok.get_added_tokens_decoder()}
  out = np.zeros(tok.get_vocab_size(with_added_tokens=True), np.int32)
  for token, i in tok.get_vocab(with_added_tokens=True).items():
    if i in special:
      continue
    if set(token) <= alphabet:
      out[i] = len(token)
    else:
      out[i] = len(tok.decode([i]).encode("utf-8"))
  return out


# ---------------------------------------------------------------------------------------
# specs


def _features(source: TextSource, options: TextOptions,
              label_type: str) -> dict[str, datasets.Feature] | None:
  """The features one example of this variant delivers (None: plain classification)."""
  length = (options.max_length,)
  if source.kind == "seq2seq":
    return {"inputs": datasets.Feature(length, np.int32),
            "targets": datasets.Feature((options.target_length,), np.int32)}
  if source.kind == "causal_lm":
    return {"inputs": datasets.Feature(length, np.int32),
            "targets": datasets.Feature(length, np.int32),
            "segment_ids": datasets.Feature(length, np.int32),
            "positions": datasets.Feature(length, np.int32),
            "num_bytes": datasets.Feature((), np.int32)}
  if not options.pack:
    return None
  features = {"inputs": datasets.Feature(length, np.int32),
              "segment_ids": datasets.Feature(length, np.int32),
              "positions": datasets.Feature(length, np.int32)}
  if label_type != "none":
    segments = (options.max_segments,)
    features["label"] = datasets.Feature(
        segments, np.float32 if label_type == "float" else np.int32)
    features["label_weight"] = datasets.Feature(segments, np.float32)
  return features


def _info(source: TextSource, name: str, options: TextOptions,
          data_config: Any | None) -> TextDatasetInfo:
  """The info of a variant; loads the tokenizer only for specs whose ids are not known."""
  tokenizer = options.tokenizer
  trained = _parse_trained(tokenizer)
  if tokenizer == "minilm":
    vocab, special = MINILM_VOCAB_SIZE, dict(MINILM_SPECIAL)
  elif trained is not None:
    # The trained vocabulary has at most `size` tokens: an embedding of `size` rows fits it.
    vocab = trained[1]
    special = dict(TRAINED_SPECIAL) if trained[0] == "wordpiece" else dict(BPE_SPECIAL)
  else:
    tok = load_text_tokenizer(tokenizer, source=source, data_config=data_config or {})
    vocab, special = tok.get_vocab_size(with_added_tokens=True), _special_ids(tok)
  special = {k: special.get(k, -1) for k in ("pad", "unk", "cls", "sep", "mask", "bos", "eos")}
  if special["pad"] < 0:
    raise ValueError(f"tokenizer {tokenizer!r} has no [PAD] or <pad> token")
  if source.kind in ("causal_lm", "seq2seq") and special["eos"] < 0:
    raise ValueError(f"dataset {name!r} ({source.kind}) needs a tokenizer with <eos>; "
                     f"{tokenizer!r} has none (use 'bpe:<size>' or 'chars:<alphabet>')")
  if source.kind == "causal_lm" and special["bos"] < 0:
    raise ValueError(f"dataset {name!r} (causal_lm) needs a tokenizer with <bos>; "
                     f"{tokenizer!r} has none (use 'bpe:<size>')")
  label_type = "none" if source.kind != "labelled" else source.label_type
  return TextDatasetInfo(
      name=name, vocab_size=vocab, max_length=options.max_length,
      num_classes=source.num_classes, num_train=source.num_train, num_eval=source.num_eval,
      pad_id=special["pad"], label_type=label_type, bos_id=special["bos"],
      eos_id=special["eos"], features=_features(source, options, label_type),
      pair=len(source.text_keys) == 2 and source.kind == "labelled",
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


class _Seq2Seq(Sequence):
  """Raw records -> ``{'tokens': source ids + EOS, 'targets': target ids + EOS}``, each cut
  to its length with the EOS kept last (tokenized when read)."""

  def __init__(self, records, tok, source: TextSource, info: TextDatasetInfo):
    self._records, self._tok, self._source, self._info = records, tok, source, info
    self._lengths = (info.features["inputs"].shape[0], info.features["targets"].shape[0])

  def __len__(self) -> int:
    return len(self._records)

  def _ids(self, text: str, length: int) -> np.ndarray:
    ids = self._tok.encode(text, add_special_tokens=False).ids[:length - 1]
    return np.asarray(ids + [self._info.eos_id], np.int32)

  def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
    record = self._records[index]
    src, tgt = (_as_text(record[k]) for k in self._source.text_keys)
    return {"tokens": self._ids(src, self._lengths[0]),
            "targets": self._ids(tgt, self._lengths[1])}

  def __repr__(self) -> str:
    return f"_Seq2Seq({self._records!r}, {self._info.name})"


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


def causal_lm_chunks(ids: Sequence[int], *, max_length: int, bos_id: int, eos_id: int,
                     byte_lengths: np.ndarray) -> list[dict[str, np.ndarray]]:
  """One document -> next-token examples of at most ``max_length`` tokens (a flat map).

  The document is ``<bos> ids <eos>``; chunk k holds inputs ``s[kL : kL + m]`` and their
  next tokens ``s[kL + 1 : kL + 1 + m]`` (L = ``max_length``), so every token after BOS is
  predicted exactly once. ``num_bytes`` counts the UTF-8 bytes of the chunk's targets (EOS
  is 0 bytes), for bits per byte.
  """
  s = np.asarray([bos_id, *ids, eos_id], np.int32)
  out = []
  for start in range(0, len(s) - 1, max_length):
    inputs = s[start:start + max_length]
    targets = s[start + 1:start + 1 + max_length]
    inputs = inputs[:len(targets)]
    out.append({"tokens": inputs, "targets": targets,
                "num_bytes": int(byte_lengths[targets].sum())})
  return out


def labelled_chunks(ids: Sequence[int], *, max_length: int, cls_id: int,
                    sep_id: int) -> list[dict[str, np.ndarray]]:
  """One corpus document -> ``[CLS] piece [SEP]`` examples of at most ``max_length`` tokens
  (a flat map; masked-LM corpora packed with ``config.data.pack``)."""
  body = max_length - 2
  if body < 1:
    raise ValueError(f"max_length={max_length} leaves no room between [CLS] and [SEP]")
  return [{"tokens": np.asarray([cls_id, *ids[i:i + body], sep_id], np.int32)}
          for i in range(0, len(ids), body)]


def _cached(key: tuple, build: Callable[[], Any]) -> Any:
  if key not in _PACKED:
    _PACKED[key] = build()
  return _PACKED[key]


def _make_spec(source: TextSource, name: str, options: TextOptions,
               data_config: Any | None) -> datasets.DatasetSpec:
  info = _info(source, name, options, data_config)
  tokenizer = options.tokenizer

  def read(data_config: Any, split: str) -> Sequence[Mapping[str, Any]]:
    from attnjax.data import packing  # pylint: disable=import-outside-toplevel
    tok = load_text_tokenizer(tokenizer, source=source, data_config=data_config)
    if tok.get_vocab_size(with_added_tokens=True) > info.vocab_size:
      raise ValueError(f"dataset {name!r}: the tokenizer has "
                       f"{tok.get_vocab_size(with_added_tokens=True)} tokens but the "
                       f"registered vocab_size is {info.vocab_size}")
    records = source.read(data_config, split)
    key = (name, split, str(datasets.resolve_data_dir(data_config)))
    if source.kind == "seq2seq":
      return _Seq2Seq(records, tok, source, info)
    if source.kind == "causal_lm" or (source.is_corpus and options.pack):

      def build():
        texts = [_as_text(r["text"]) for r in records]
        docs = [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
        if source.kind == "causal_lm":
          lengths = token_byte_lengths(tok)
          fn = lambda ids: causal_lm_chunks(ids, max_length=info.max_length,  # noqa: E731
                                            bos_id=info.bos_id, eos_id=info.eos_id,
                                            byte_lengths=lengths)
          token_keys, sum_keys = ("tokens", "targets"), ("num_bytes",)
        else:
          fn = lambda ids: labelled_chunks(ids, max_length=info.max_length,  # noqa: E731
                                           cls_id=info.cls_id, sep_id=info.sep_id)
          token_keys, sum_keys = ("tokens",), ()
        chunks = datasets.FlatMapSource(docs, fn, f"{name}/{split}")
        return packing.PackedSource(chunks, max_length=info.max_length,
                                    token_keys=token_keys, sum_keys=sum_keys,
                                    name=f"{name}/{split}")
      return _cached(key, build)
    if source.is_corpus:
      def build_rows():
        texts = [_as_text(r["text"]) for r in records]
        encodings = tok.encode_batch(texts, add_special_tokens=False)
        return _Packed(pack_documents((e.ids for e in encodings), max_length=info.max_length,
                                      cls_id=info.cls_id, sep_id=info.sep_id,
                                      pad_id=info.pad_id), name)
      return _cached(key, build_rows)
    examples = _Tokenized(records, tok, source, info)
    if not options.pack:
      return examples
    return _cached(key, lambda: packing.PackedSource(
        examples, max_length=info.max_length, segment_keys=("label",),
        max_segments=options.max_segments, name=f"{name}/{split}"))

  return datasets.DatasetSpec(
      info=info, splits=source.splits, source=read, inputs_key="tokens", label_key="label",
      train_split=source.train_split, eval_split=source.eval_split,
      variant=lambda data_config: _variant(source, data_config),
      tokenizer=lambda data_config: load_text_tokenizer(tokenizer, source=source,
                                                        data_config=data_config),
      tokenizer_file=lambda data_config: _tokenizer_file(tokenizer, source, data_config))


def _tokenizer_file(spec: str, source: TextSource, data_config: Any) -> pathlib.Path | None:
  """The trained vocabulary's cache (trained now if missing), or the user's JSON file."""
  cache = trained_tokenizer_file(spec, source=source, data_config=data_config)
  if cache is not None:
    load_text_tokenizer(spec, source=source, data_config=data_config)
    return cache
  path = pathlib.Path(spec).expanduser()
  return path if path.is_file() else None


def _variant(source: TextSource, data_config: Any) -> datasets.DatasetSpec:
  """The spec of ``source`` with the config's options (:class:`TextOptions`), under
  ``<source>[<tokenizer>,<max_length>,...]`` unless every option is the default."""
  options = TextOptions.from_config(source, data_config)
  if options == TextOptions.defaults(source):
    name = source.name
  else:
    name = f"{source.name}[{options.suffix()}]"
  if name in datasets.DATASETS:
    return datasets.DATASETS.get(name)
  return _make_spec(source, name, options, data_config)


def register_text_source(source: TextSource) -> None:
  """Registers ``source`` with its default variant in ``DATASETS`` under ``source.name``."""
  datasets.DATASETS.register(source.name, _make_spec(source, source.name,
                                                     TextOptions.defaults(source), None))


def _short(spec: str) -> str:
  if len(spec) <= 16 and "/" not in spec and os.sep not in spec:
    return spec
  return "tok-" + hashlib.sha1(os.path.abspath(spec).encode()).hexdigest()[:8]


def _files_source(data_config: Any) -> TextSource:
  """A source for the user's files named in ``data_config.files`` (checked row by row).

  Labelled text (``text_column``, ``text_pair_column``, ``label_column``, ...) or, when
  ``target_column`` is set, parallel text for seq2seq (translation): ``source_column`` ->
  ``target_column``.
  """
  from attnjax.data import text_files  # pylint: disable=import-outside-toplevel
  files = {k: str(v) for k, v in dict(data_config.files).items() if v}
  if "train" not in files:
    raise ValueError(f"config.data.files={files} needs a 'train' file")
  target = data_config.get("target_column", "") or ""
  label_names: tuple[str, ...] = ()
  if target:
    text_columns = (data_config.get("source_column", "") or "source", target)
    settings = dict(text_columns=text_columns, label_column=None, label_type="none",
                    num_classes=0, label_names=())
  else:
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
    given = data_config.get("num_classes", None)
    if label_type != "float" and given is not None and (
        isinstance(given, bool) or not isinstance(given, int) or given < 2 and
        not (given == 0 and label_names)):
      raise ValueError(f"config.data.num_classes={given!r}: a classifier needs an integer "
                       ">= 2 (for regression set config.data.label_type='float')")
    num_classes = 1 if label_type == "float" else int(given or len(label_names) or 2)
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
  kind = dict(kind="seq2seq", tokenizer="bpe:8000", max_length=128, target_length=128) \
      if target else {}
  return TextSource(
      name=f"{data_config.name}-{fingerprint}", read=read, text_keys=("text", "text_b")
      if len(text_columns) == 2 else ("text",),
      label_key="label" if not target else None, label_type=settings["label_type"],
      num_classes=settings["num_classes"], splits=tuple(files), train_split="train",
      eval_split=eval_split if eval_split in files else "train",
      num_train=counts["train"], num_eval=counts.get(eval_split, 0), label_names=label_names,
      **kind)


def _files_variant(data_config: Any) -> datasets.DatasetSpec:
  """The spec of the user's files in ``config.data.files`` (read and checked row by row)."""
  source = _files_source(data_config)
  options = TextOptions.from_config(source, data_config)
  name = f"{source.name}[{options.suffix()}]"
  if name in datasets.DATASETS:
    return datasets.DATASETS.get(name)
  return _make_spec(source, name, options, data_config)


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


def _builder_reader(module: str, builder: str, config_name: str | None = None):
  """Reads a split of one of this package's builders (prepared on first use)."""
  def read(data_config: Any, split: str) -> Sequence[Mapping[str, Any]]:
    import importlib  # pylint: disable=import-outside-toplevel
    builder_cls = getattr(importlib.import_module(f"attnjax.data.{module}"), builder)
    kwargs = {"config": config_name} if config_name else {}
    prepared = datasets.prepare_builder(builder_cls, datasets.resolve_data_dir(data_config),
                                        **kwargs)
    return prepared.as_data_source(split)
  return read


def _translation_reader(tfds_name: str, module: str):
  """A catalog translation dataset; its TFDS module is imported first because
  ``tensorflow_datasets`` registers the ``translate`` builders only on import."""
  def read(data_config: Any, split: str) -> Sequence[Mapping[str, Any]]:
    import importlib  # pylint: disable=import-outside-toplevel
    importlib.import_module(f"tensorflow_datasets.translate.{module}")
    from attnjax.data.catalog import catalog_source  # pylint: disable=import-outside-toplevel
    return catalog_source(tfds_name, data_config, split)
  return read


_SPLITS3 = ("train", "validation", "test")
register_text_source(TextSource(
    name="code_lm", read=_builder_reader("stdlib_code", "StdlibCode", "files"),
    text_keys=(), label_key=None, label_type="none", num_classes=0, kind="causal_lm",
    splits=_SPLITS3, eval_split="validation", tokenizer="bpe:4096", max_length=256))
register_text_source(TextSource(
    name="code_summarization", read=_builder_reader("stdlib_code", "StdlibCode", "functions"),
    text_keys=("source", "summary"), label_key=None, label_type="none", num_classes=0,
    kind="seq2seq", splits=_SPLITS3, eval_split="validation", tokenizer="bpe:8000",
    max_length=256, target_length=32))
register_text_source(TextSource(
    name="addition", read=_builder_reader("arithmetic", "Addition"),
    text_keys=("source", "target"), label_key=None, label_type="none", num_classes=0,
    kind="seq2seq", splits=_SPLITS3, eval_split="validation",
    tokenizer=f"chars:{arithmetic.ALPHABET}", max_length=arithmetic.SOURCE_LENGTH,
    target_length=arithmetic.TARGET_LENGTH, num_train=arithmetic.SPLIT_SIZES["train"],
    num_eval=arithmetic.SPLIT_SIZES["validation"]))
register_text_source(TextSource(
    name="wmt14_translate/de-en", read=_translation_reader("wmt14_translate/de-en", "wmt14"),
    text_keys=("de", "en"), label_key=None, label_type="none", num_classes=0, kind="seq2seq",
    splits=_SPLITS3, eval_split="validation", tokenizer="bpe:16000", max_length=128,
    target_length=128, num_train=4_508_785, num_eval=3_000))
register_text_source(TextSource(
    name="ted_hrlr_translate/pt_to_en",
    read=_translation_reader("ted_hrlr_translate/pt_to_en", "ted_hrlr"),
    text_keys=("pt", "en"), label_key=None, label_type="none", num_classes=0, kind="seq2seq",
    splits=_SPLITS3, eval_split="validation", tokenizer="bpe:8000", max_length=128,
    target_length=128, num_train=51_785, num_eval=1_193))
