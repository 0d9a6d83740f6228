"""LRA "Retrieval": ACL Anthology Network citation pairs, byte level, two towers.

An example is two papers and a label: 1 if one cites the other, else 0. As in the Long
Range Arena, each document's UTF-8 bytes are its tokens (id = byte + 1, 0 = padding,
257 ids) truncated to 4,000, and the model encodes the two documents separately with the
same encoder (no cross attention), so ``inputs`` is ``[2, L]`` per example
(``DatasetInfo.towers == 2``).

The data are the user's files, the LRA release's ``lra_release/lra_release/tsv_data/``
(in https://storage.googleapis.com/long-range-arena/lra_release.gz)::

  new_aan_pairs.train.tsv   -> split "train"
  new_aan_pairs.eval.tsv    -> split "validation"
  new_aan_pairs.test.tsv    -> split "test"

tab-separated, no header: ``label, id1, id2, text1, text2`` (label 0/1, possibly written
``0.0``/``1.0``; the texts are read as raw bytes, with no quoting, as LRA's reader did).
The directory is ``config.data.aan_dir``, else ``$ATTNJAX_AAN_DIR``. The files are read
once into an ``array_record`` TFDS dataset ``aan_pairs`` in the data_dir, under a
configuration named after a fingerprint of the files (path, size, modification time), so
changed files are prepared again rather than read stale.

Registered tasks: ``aan_bytes_4k`` (LRA's 4,000 bytes per document) and ``aan_bytes_1k``
(the first 1,000 of the same tokens, for CPU-sized runs); both read one prepared dataset.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from attnjax.data import catalog
from attnjax.data import datasets
from attnjax.data import text_files

#: Environment variable naming the AAN directory when ``config.data.aan_dir`` is empty.
AAN_DIR_ENV = "ATTNJAX_AAN_DIR"
#: split -> file name in the AAN directory.
AAN_FILES = {"train": "new_aan_pairs.train.tsv", "validation": "new_aan_pairs.eval.tsv",
             "test": "new_aan_pairs.test.tsv"}
#: Bytes kept per document in the prepared records (LRA's max_length for Retrieval).
STORED_LENGTH = 4000
NUM_CLASSES = 2
_WHERE = ("the Long Range Arena release, lra_release/lra_release/tsv_data/ in "
          "https://storage.googleapis.com/long-range-arena/lra_release.gz")


def resolve_aan_dir(data_config: Any) -> str:
  """The directory holding the three AAN TSV files, checked.

  Args:
    data_config: a ConfigDict (or mapping) with an optional ``aan_dir``.

  Returns:
    ``data_config.aan_dir`` if set, else ``$ATTNJAX_AAN_DIR``; ``~`` expanded.

  Raises:
    ValueError: neither is set, or a file is missing; one line naming the path, the files
      expected and where they come from.
  """
  value = data_config.get("aan_dir", "") or ""
  origin = "config.data.aan_dir"
  if not value:
    value, origin = os.environ.get(AAN_DIR_ENV, ""), f"${AAN_DIR_ENV}"
  expected = (f"the LRA AAN files {', '.join(AAN_FILES.values())} (tab-separated label, "
              f"id1, id2, text1, text2) from {_WHERE}")
  if not value:
    raise ValueError(f"config.data.aan_dir is empty and ${AAN_DIR_ENV} is not set; set "
                     f"either to the directory holding {expected}")
  path = os.path.expanduser(str(value))
  for name in AAN_FILES.values():
    if not os.path.isfile(os.path.join(path, name)):
      raise ValueError(f"{origin}={value!r}: {os.path.join(path, name)} not found; expected "
                       f"{expected}")
  return path


def read_aan_tsv(path: str) -> Iterator[tuple[int, bytes, bytes, bytes, bytes]]:
  """Yields ``(label, id1, id2, text1, text2)`` per line of an AAN TSV file.

  Lines are split on tabs only (no quoting); texts stay raw bytes. Empty lines are skipped.

  Raises:
    ValueError: a line without exactly 5 fields or with a label other than 0/1, naming the
      file and the line.
  """
  with open(path, "rb") as f:
    for number, line in enumerate(f, start=1):
      line = line[:-1] if line.endswith(b"\n") else line
      line = line[:-1] if line.endswith(b"\r") else line
      if not line:
        continue
      fields = line.split(b"\t")
      if len(fields) != 5:
        raise ValueError(f"{path}, line {number}: {len(fields)} tab-separated fields; "
                         "expected 5 (label, id1, id2, text1, text2)")
      try:
        value = float(fields[0])
      except ValueError:
        value = -1.0
      if value not in (0.0, 1.0):
        raise ValueError(f"{path}, line {number}: label {fields[0].decode(errors='replace')!r}"
                         " is not 0 or 1")
      yield int(value), fields[1], fields[2], fields[3], fields[4]


def pair_tokens(text1: bytes, text2: bytes, max_length: int) -> np.ndarray:
  """int32 ``[2, max_length]``: each text's byte ids (byte + 1), truncated, 0-padded."""
  out = np.zeros((2, max_length), np.int32)
  for row, text in enumerate((text1, text2)):
    ids = catalog.bytes_to_tokens(text, max_length)
    out[row, :len(ids)] = ids
  return out


@dataclasses.dataclass(eq=False)
class AanConfig(tfds.core.BuilderConfig):
  """Where the TSV files are; the configuration's name carries their fingerprint."""
  aan_dir: str = ""


class AanPairs(datasets.LocalBuilder):
  """The user's LRA AAN TSV files as ``{'tokens': int32 [2, 4000], 'label', 'id1', 'id2'}``."""

  name = "aan_pairs"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            "LRA Retrieval: ACL Anthology Network paper pairs, label 1 if one cites the "
            f"other. Each document's bytes + 1, truncated or 0-padded to {STORED_LENGTH}, one "
            "row per document. Read from the user's files: "
            + os.path.join(self.builder_config.aan_dir, "new_aan_pairs.*.tsv")),
        features=tfds.features.FeaturesDict({
            # Mostly padding and zero high bytes: ZLIB keeps the records small.
            "tokens": tfds.features.Tensor(shape=(2, STORED_LENGTH), dtype=np.int32,
                                           encoding=tfds.features.Encoding.ZLIB),
            "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
            "id1": tfds.features.Text(),
            "id2": tfds.features.Text(),
        }),
        disable_shuffling=True,  # records in file order: line i of a split is index i
        homepage="https://github.com/google-research/long-range-arena",
        citation=(
            "@inproceedings{tay2021lra, title={Long Range Arena: A Benchmark for Efficient "
            "Transformers}, author={Tay, Yi and Dehghani, Mostafa and Abnar, Samira and "
            "others}, booktitle={ICLR}, year={2021}}"),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
    del dl_manager  # the user's files: nothing to download
    return {split: self._generate_examples(os.path.join(self.builder_config.aan_dir, name))
            for split, name in AAN_FILES.items()}

  def _generate_examples(self, path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for i, (label, id1, id2, text1, text2) in enumerate(read_aan_tsv(path)):
      yield i, {"tokens": pair_tokens(text1, text2, STORED_LENGTH), "label": label,
                "id1": id1, "id2": id2}


def aan_builder_config(data_config: Any) -> AanConfig:
  """The builder configuration for the files ``data_config`` names (checked)."""
  aan_dir = os.path.abspath(resolve_aan_dir(data_config))
  paths = [os.path.join(aan_dir, name) for name in AAN_FILES.values()]
  fingerprint = text_files.files_fingerprint(paths, STORED_LENGTH)
  return AanConfig(name=f"tsv-{fingerprint}", aan_dir=aan_dir,
                   description=f"AAN pairs from {aan_dir}")


def _spec(name: str, max_length: int) -> datasets.DatasetSpec:
  def first_bytes(record: Mapping[str, Any]) -> dict[str, Any]:
    return {"tokens": np.asarray(record["tokens"])[:, :max_length], "label": record["label"]}
  first_bytes.__name__ = f"first_{max_length}_bytes"  # a stable repr for Grain's state

  def source(data_config: Any, split: str) -> Sequence[Mapping[str, Any]]:
    builder = datasets.prepare_builder(AanPairs, datasets.resolve_data_dir(data_config),
                                       config=aan_builder_config(data_config))
    records = builder.as_data_source(split)
    return records if max_length == STORED_LENGTH else catalog.MappedSource(records,
                                                                             first_bytes)

  return datasets.DatasetSpec(
      # Split sizes of the LRA release (informational: nothing is sized by them).
      info=datasets.DatasetInfo(name=name, vocab_size=catalog.BYTE_VOCAB_SIZE,
                                max_length=max_length, num_classes=NUM_CLASSES,
                                num_train=147_086, num_eval=17_437, pad_id=catalog.PAD_ID,
                                towers=2),
      splits=tuple(AAN_FILES), source=source, check=resolve_aan_dir)


datasets.DATASETS.register("aan_bytes_4k", _spec("aan_bytes_4k", STORED_LENGTH))
datasets.DATASETS.register("aan_bytes_1k", _spec("aan_bytes_1k", 1000))
