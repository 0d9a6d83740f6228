"""The tokenizer of a Hugging Face BERT checkpoint, through the ``tokenizers`` library.

``tokenizer.json`` is used when present; otherwise ``vocab.txt`` is assembled into BERT's
WordPiece pipeline (BertNormalizer, BertPreTokenizer, ``[CLS] A [SEP] B [SEP]``), lower-casing
as ``tokenizer_config.json``'s ``do_lower_case`` says.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Callable, Sequence

import numpy as np

TOKENIZER_FILE = "tokenizer.json"
VOCAB_FILE = "vocab.txt"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"

Path = str | os.PathLike

_SPECIAL = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
            "cls_token": "[CLS]", "mask_token": "[MASK]"}


def has_tokenizer(path: Path) -> bool:
  """Whether ``path`` holds ``tokenizer.json`` or ``vocab.txt``."""
  directory = pathlib.Path(path)
  return (directory / TOKENIZER_FILE).is_file() or (directory / VOCAB_FILE).is_file()


def _read_json(file: pathlib.Path) -> dict:
  if not file.is_file():
    return {}
  try:
    value = json.loads(file.read_text())
  except ValueError as e:
    raise ValueError(f"{file}: not valid JSON: {e}") from e
  return value if isinstance(value, dict) else {}


def _wordpiece_from_vocab(vocab_file: pathlib.Path, *, lowercase: bool):
  """BERT's tokenizer pipeline around a ``vocab.txt`` (what BertTokenizerFast builds)."""
  # pylint: disable-next=import-outside-toplevel
  from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
  try:
    wordpiece = models.WordPiece.from_file(str(vocab_file), unk_token="[UNK]")
  except Exception as e:  # tokenizers raises a bare Exception on unreadable vocabularies
    raise ValueError(f"{vocab_file}: not a WordPiece vocabulary ({e})") from e
  tok = Tokenizer(wordpiece)
  tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                              strip_accents=None, lowercase=lowercase)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  missing = [t for t in ("[CLS]", "[SEP]", "[PAD]", "[UNK]") if tok.token_to_id(t) is None]
  if missing:
    raise ValueError(f"{vocab_file}: special tokens {missing} are not in the vocabulary")
  cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
  tok.post_processor = processors.TemplateProcessing(
      single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
      special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
  tok.decoder = decoders.WordPiece(prefix="##")
  return tok


def _default_max_length(directory: pathlib.Path) -> int | None:
  """sentence-transformers' max_seq_length, else the tokenizer's, else the model's."""
  st = _read_json(directory / "sentence_bert_config.json").get("max_seq_length")
  if st:
    return int(st)
  tk = _read_json(directory / TOKENIZER_CONFIG_FILE).get("model_max_length")
  # transformers writes a huge sentinel (1e30) when the length is unknown.
  if tk and tk < 1_000_000:
    return int(tk)
  positions = _read_json(directory / "config.json").get("max_position_embeddings")
  return int(positions) if positions else None


def load_tokenizer(path: Path, *, max_length: int | None = None,
                   check_vocab_size: bool = True):
  """Loads the tokenizer of a checkpoint directory, padding to the longest and truncating.

  Args:
    path: directory with ``tokenizer.json`` or ``vocab.txt`` (and usually ``config.json``).
    max_length: truncation length in tokens, special tokens included; by default
      sentence-transformers' ``max_seq_length``, else ``model_max_length`` of
      ``tokenizer_config.json``, else ``max_position_embeddings``.
    check_vocab_size: compare the vocabulary with ``config.json``'s ``vocab_size`` (the
      embedding table); a mismatch would map ids to the wrong rows or out of the table.

  Returns:
    A ``tokenizers.Tokenizer`` with padding (pad token from the vocabulary) and truncation
    enabled; see :func:`encode`.

  Raises:
    FileNotFoundError: neither tokenizer file exists.
    ValueError: a garbled tokenizer file, or a vocabulary size that differs from the
      embedding table's, naming both files.
  """
  from tokenizers import Tokenizer  # pylint: disable=import-outside-toplevel
  directory = pathlib.Path(path)
  tokenizer_file, vocab_file = directory / TOKENIZER_FILE, directory / VOCAB_FILE
  if tokenizer_file.is_file():
    source = tokenizer_file
    try:
      tok = Tokenizer.from_file(str(tokenizer_file))
    except Exception as e:  # tokenizers raises a bare Exception on bad JSON
      raise ValueError(f"{tokenizer_file}: not a tokenizers JSON file ({e})") from e
  elif vocab_file.is_file():
    source = vocab_file
    lowercase = _read_json(directory / TOKENIZER_CONFIG_FILE).get("do_lower_case", True)
    tok = _wordpiece_from_vocab(vocab_file, lowercase=bool(lowercase))
  else:
    raise FileNotFoundError(f"no {TOKENIZER_FILE} or {VOCAB_FILE} in {directory}")

  model_config = _read_json(directory / "config.json")
  if check_vocab_size and "vocab_size" in model_config:
    size = tok.get_vocab_size(with_added_tokens=True)
    if size != model_config["vocab_size"]:
      raise ValueError(f"{source}: the tokenizer has {size} tokens but "
                       f"{directory / 'config.json'} has vocab_size="
                       f"{model_config['vocab_size']} embedding rows; they must match "
                       "(check_vocab_size=False to accept it)")

  pad_token = _read_json(directory / TOKENIZER_CONFIG_FILE).get("pad_token", "[PAD]")
  if isinstance(pad_token, dict):  # transformers' AddedToken serialisation
    pad_token = pad_token.get("content", "[PAD]")
  pad_id = tok.token_to_id(pad_token)
  if pad_id is None:
    raise ValueError(f"{source}: pad token {pad_token!r} is not in the vocabulary")
  tok.enable_padding(pad_id=pad_id, pad_token=pad_token)  # pad to the longest in the batch
  max_length = max_length or _default_max_length(directory)
  if max_length:
    tok.enable_truncation(max_length)
  else:
    tok.no_truncation()
  return tok


def encode(tokenizer: Any, texts: Sequence[str], *,
           pairs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
  """Tokenizes a batch into padded int32 arrays.

  Args:
    tokenizer: a ``tokenizers.Tokenizer`` (from :func:`load_tokenizer`).
    texts: the sentences (first segments).
    pairs: optional second segments, one per text (token type 1).

  Returns:
    ``{'input_ids', 'attention_mask', 'token_type_ids'}``, each int32 ``[batch, seq]``.
  """
  if isinstance(texts, str):
    raise TypeError("texts must be a sequence of strings, not one string")
  if pairs is not None:
    if len(pairs) != len(texts):
      raise ValueError(f"{len(texts)} texts but {len(pairs)} pairs")
    batch = tokenizer.encode_batch(list(zip(texts, pairs)))
  else:
    batch = tokenizer.encode_batch(list(texts))
  return {
      "input_ids": np.asarray([e.ids for e in batch], np.int32),
      "attention_mask": np.asarray([e.attention_mask for e in batch], np.int32),
      "token_type_ids": np.asarray([e.type_ids for e in batch], np.int32),
  }


def tokenizer_files(tokenizer: Any, *, vocab_size: int,
                    max_length: int) -> dict[str, Callable[[str], None]]:
  """Writers of the tokenizer files of an exported checkpoint.

  Args:
    tokenizer: a ``tokenizers.Tokenizer`` or a directory holding one.
    vocab_size: rows of the embedding table; the vocabulary must have exactly this size.
    max_length: ``model_max_length`` for ``tokenizer_config.json``.

  Returns:
    ``{file name: function(path) that writes it}`` for ``tokenizer.json``,
    ``tokenizer_config.json`` and, for WordPiece, ``vocab.txt``.
  """
  if isinstance(tokenizer, (str, os.PathLike)):
    tokenizer = load_tokenizer(tokenizer, check_vocab_size=False)
  size = tokenizer.get_vocab_size(with_added_tokens=True)
  if size != vocab_size:
    raise ValueError(f"tokenizer has {size} tokens but the embedding table has vocab_size="
                     f"{vocab_size} rows; they must match")
  state = json.loads(tokenizer.to_str())
  # Padding/truncation are runtime settings; transformers' tokenizer_config carries its own.
  state["padding"] = None
  state["truncation"] = None
  normalizer = state.get("normalizer") or {}
  lowercase = bool(normalizer.get("lowercase", False))
  files: dict[str, Callable[[str], None]] = {
      TOKENIZER_FILE: lambda f: pathlib.Path(f).write_text(json.dumps(state, ensure_ascii=False)),
  }
  model = state.get("model") or {}
  if model.get("type") == "WordPiece":
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    ordered = [token for token, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    if [vocab[t] for t in ordered] != list(range(len(ordered))):
      raise ValueError("tokenizer ids are not contiguous from 0; cannot write vocab.txt")
    files[VOCAB_FILE] = lambda f: pathlib.Path(f).write_text(
        "".join(t + "\n" for t in ordered), encoding="utf-8")
    config = {"tokenizer_class": "BertTokenizer", "do_lower_case": lowercase,
              "model_max_length": max_length, **_SPECIAL}
  else:
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_length}
  files[TOKENIZER_CONFIG_FILE] = lambda f: pathlib.Path(f).write_text(
      json.dumps(config, indent=2) + "\n")
  return files
