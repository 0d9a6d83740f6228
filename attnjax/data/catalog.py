"""Long Range Arena tasks read from TFDS catalog datasets the user has prepared.

* ``imdb_bytes_1k`` / ``imdb_bytes_4k``: LRA "Text", byte-level IMDb sentiment
  (``imdb_reviews``), each review's UTF-8 bytes truncated to 1,000 / 4,000
  tokens as LRA truncates; id = byte + 1 (0 = padding, 257 ids), 2 classes.
* ``cifar10_gray``: LRA "Image", CIFAR-10 (``cifar10``) in grey scale, 1,024
  pixel tokens row-major, id = intensity + 1 (257 ids), 10 classes. The grey
  value is ``round(0.2989 R + 0.5870 G + 0.1140 B)``, the weights of
  ``tf.image.rgb_to_grayscale`` that LRA used.

Nothing downloads here. The datasets must be prepared in ``array_record``
format (Grain reads by index), e.g. on a machine with a network::

  tfds build imdb_reviews --file_format=array_record
  tfds build cifar10 --file_format=array_record

into ``config.data.data_dir`` if set, else the TFDS default
(``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``); these are the user's catalog
data, so ``$ATTNJAX_DATA_DIR`` (for our generated datasets) is not consulted.

LRA "Retrieval" (AAN, two-tower) is read from the user's TSV files, not from the
catalog: see attnjax/data/aan.py.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from attnjax.data import datasets

BYTE_VOCAB_SIZE = 257  # bytes 0..255 -> ids 1..256; 0 = padding
PIXEL_VOCAB_SIZE = 257  # intensities 0..255 -> ids 1..256; 0 = padding
PAD_ID = 0
#: ITU-R 601 luma weights, as ``tf.image.rgb_to_grayscale``.
GRAY_WEIGHTS = np.array([0.2989, 0.5870, 0.1140])


class MappedSource(Sequence):
  """A random-access source whose records pass through ``fn`` when read."""

  def __init__(self, source: Sequence[Mapping[str, Any]],
               fn: Callable[[Mapping[str, Any]], dict[str, Any]]):
    self._source = source
    self._fn = fn

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
    return self._fn(self._source[index])

  def __repr__(self) -> str:
    return f"MappedSource({self._source!r}, {getattr(self._fn, '__name__', self._fn)})"


def catalog_source(name: str, data_config: Any, split: str) -> Sequence[Mapping[str, Any]]:
  """``tfds.data_source(name)`` without downloading; a clear error when not prepared.

  Raises:
    FileNotFoundError: the dataset is not prepared in array_record format; the
      message says how to prepare it.
  """
  data_dir = data_config.get("data_dir", "") or None
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception as e:  # TFDS raises assorted types (AssertionError, DatasetNotFoundError, ...).
    raise FileNotFoundError(
        f"catalog dataset {name!r} (split {split!r}) is not prepared in array_record format "
        f"under data_dir={data_dir or 'the TFDS default'}: {type(e).__name__}: {e}\n"
        f"Prepare it on a machine with a network: tfds build {name} "
        "--file_format=array_record [--data_dir=...]") from e


def bytes_to_tokens(text: bytes | str, max_length: int) -> np.ndarray:
  """UTF-8 bytes -> int32 ids (byte + 1), truncated to ``max_length`` as LRA does."""
  if isinstance(text, str):
    text = text.encode("utf-8")
  return np.frombuffer(bytes(text), dtype=np.uint8)[:max_length].astype(np.int32) + 1


def rgb_to_gray_tokens(image: np.ndarray) -> np.ndarray:
  """uint8 ``[H, W, 3]`` -> int32 ``[H * W]`` grey pixel ids (intensity + 1), row-major."""
  gray = np.rint(np.asarray(image, np.float64) @ GRAY_WEIGHTS)
  return np.clip(gray, 0, 255).astype(np.int32).reshape(-1) + 1


def _imdb_spec(task_name: str, max_length: int) -> datasets.DatasetSpec:
  def to_record(r: Mapping[str, Any]) -> dict[str, Any]:
    return {"tokens": bytes_to_tokens(r["text"], max_length), "label": int(r["label"])}

  def source(data_config: Any, split: str) -> Sequence[Mapping[str, Any]]:
    return MappedSource(catalog_source("imdb_reviews", data_config, split), to_record)

  return datasets.DatasetSpec(
      info=datasets.DatasetInfo(name=task_name, vocab_size=BYTE_VOCAB_SIZE,
                                max_length=max_length, num_classes=2, num_train=25_000,
                                num_eval=25_000, pad_id=PAD_ID),
      # "unsupervised" has no labels (-1): not a classification split.
      splits=("train", "test"), source=source)


def _cifar10_gray_source(data_config: Any, split: str) -> Sequence[Mapping[str, Any]]:
  def to_record(r: Mapping[str, Any]) -> dict[str, Any]:
    return {"tokens": rgb_to_gray_tokens(r["image"]), "label": int(r["label"])}

  return MappedSource(catalog_source("cifar10", data_config, split), to_record)


datasets.DATASETS.register("imdb_bytes_1k", _imdb_spec("imdb_bytes_1k", 1000))
datasets.DATASETS.register("imdb_bytes_4k", _imdb_spec("imdb_bytes_4k", 4000))
datasets.DATASETS.register("cifar10_gray", datasets.DatasetSpec(
    info=datasets.DatasetInfo(name="cifar10_gray", vocab_size=PIXEL_VOCAB_SIZE,
                              max_length=1024, num_classes=10, num_train=50_000,
                              num_eval=10_000, pad_id=PAD_ID),
    splits=("train", "test"), source=_cifar10_gray_source))
