"""The dataset registry: what a task is, where its data lives, how it is prepared.

A task plugs in by registering a :class:`DatasetSpec` under a name::

  DATASETS.register("listops", DatasetSpec(info=..., splits=..., source=...))

after which ``data_config.name = "listops"`` works everywhere (model shapes
via :func:`attnjax.data.get_dataset_info`, batches via the Grain pipeline).
Catalog TFDS datasets (``imdb_reviews``, ``glue/sst2``, ...) would plug in the
same way, with a ``source`` that calls ``tfds.data_source``.
"""

from __future__ import annotations

import dataclasses
import fcntl
import inspect
import os
import pathlib
from typing import Any, Callable, Mapping, Sequence

import grain
import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from attnjax.registry import Registry

#: Environment variable naming the data directory when the config leaves it empty.
DATA_DIR_ENV = "ATTNJAX_DATA_DIR"
#: Data directory used when neither the config nor $ATTNJAX_DATA_DIR names one.
#: Not ~/tensorflow_datasets on purpose: builders here are ours, and mixing them
#: with a user's catalog data would make `tfds.builder` lookups ambiguous.
DEFAULT_DATA_DIR = "~/.cache/attnjax/tfds"


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the model needs to know about a sequence-classification task.

  Attributes:
    name: registered dataset name, e.g. ``"digits"``.
    vocab_size: number of token ids, including ``pad_id``; every id in
      ``inputs`` is in ``[0, vocab_size)``.
    max_length: length L of every ``inputs`` row (shorter sequences are padded
      with ``pad_id`` at the end).
    num_classes: labels are in ``[0, num_classes)``.
    num_train: examples in the training split.
    num_eval: examples in the default evaluation split.
    pad_id: token id of padding; the model's mask is ``inputs != pad_id``.
    towers: sequences per example. 1: ``inputs`` is ``[L]``. 2 (two-tower pair
      classification, LRA Retrieval): ``inputs`` is ``[2, L]``, one row per document,
      each padded on its own and encoded separately by the same encoder. Not to be
      confused with ``TextDatasetInfo.pair``: two sentences joined in ONE sequence.
  """
  name: str
  vocab_size: int
  max_length: int
  num_classes: int
  num_train: int
  num_eval: int
  pad_id: int = 0
  towers: int = 1

  @property
  def input_shape(self) -> tuple[int, ...]:
    """Shape of one example's ``inputs``: ``(L,)``, or ``(towers, L)`` when towers > 1."""
    return (self.max_length,) if self.towers == 1 else (self.towers, self.max_length)


#: Reads one split: ``source(data_config, split)`` returns a random-access
#: sequence of raw records, preparing the data first if needed.
SourceFn = Callable[[Any, str], Sequence[Mapping[str, Any]]]


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """One registered task.

  Attributes:
    info: the task's :class:`DatasetInfo`.
    splits: names of the splits ``source`` accepts.
    source: ``source(data_config, split)`` -> random-access records.
    inputs_key: key of the token-id sequence in a raw record.
    label_key: key of the integer class label in a raw record.
    train_split: split that training iterates over.
    eval_split: split used when evaluation names none.
    check: ``check(data_config)`` raises ValueError when the inputs the user must
      provide (files, directories) are missing or wrong, without preparing anything;
      ``get_dataset_info`` runs it, so a run fails before its workdir is written.
  """
  info: DatasetInfo
  splits: tuple[str, ...]
  source: SourceFn
  inputs_key: str = "tokens"
  label_key: str = "label"
  train_split: str = "train"
  eval_split: str = "test"
  check: Callable[[Any], None] | None = None

  def check_split(self, split: str) -> None:
    """Raises ValueError naming ``split`` and the available ones if unknown."""
    if split not in self.splits:
      raise ValueError(
          f"unknown split {split!r} for dataset {self.info.name!r}; "
          f"available splits: {', '.join(self.splits)}")


DATASETS: Registry[DatasetSpec] = Registry("dataset")


class LocalBuilder(tfds.core.GeneratorBasedBuilder):
  """Base of the TFDS builders that live in this package and download nothing.

  Works around tensorflow-datasets 4.9.x on Python >= 3.9: the inherited ``code_path``
  reaches ``importlib_resources.abc.Traversable``, but tfds declares the
  ``importlib_resources`` backport only for Python < 3.9, so a builder in an installed
  package fails with ModuleNotFoundError. TFDS uses ``code_path`` only to find an optional
  ``checksums.tsv`` beside the builder, and its own fallback is ``inspect.getfile(cls)``,
  which is what this returns.
  """

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path | None:
    return epath.Path(inspect.getfile(cls))


def register_builder_task(info: DatasetInfo, builder_cls: type[tfds.core.DatasetBuilder], *,
                          config: str | None = None,
                          splits: tuple[str, ...] = ("train", "test")) -> DatasetSpec:
  """Registers the task ``info.name`` read from a local builder (one of its configs).

  The data is prepared into the configured data_dir on first use; records carry
  ``tokens`` and ``label``; training reads ``train`` and evaluation ``test``.
  """
  kwargs = {"config": config} if config else {}

  def source(data_config: Any, split: str) -> Sequence[Mapping[str, Any]]:
    builder = prepare_builder(builder_cls, resolve_data_dir(data_config), **kwargs)
    return builder.as_data_source(split)

  spec = DatasetSpec(info=info, splits=splits, source=source)
  DATASETS.register(info.name, spec)
  return spec


def get_dataset_spec(name: str) -> DatasetSpec:
  """Returns the spec registered as ``name``; an unknown name lists the known ones."""
  return DATASETS.get(name)


def list_datasets() -> list[str]:
  """Sorted names of the registered datasets."""
  return DATASETS.names()


def resolve_data_dir(data_config: Any) -> pathlib.Path:
  """The directory prepared datasets live in.

  Args:
    data_config: a ConfigDict (or mapping) with an optional ``data_dir``.

  Returns:
    ``data_config.data_dir`` if set and non-empty, else ``$ATTNJAX_DATA_DIR``
    if set, else ``~/.cache/attnjax/tfds``; ``~`` expanded.
  """
  data_dir = data_config.get("data_dir", "") or os.environ.get(DATA_DIR_ENV, "")
  return pathlib.Path(data_dir or DEFAULT_DATA_DIR).expanduser()


def _is_prepared(builder: tfds.core.DatasetBuilder) -> bool:
  # The existence check first keeps tfds from logging a "no dataset_info.json"
  # warning for the not-yet-created version directory on every first use.
  return builder.data_path.exists() and builder.is_prepared()


def prepare_builder(builder_cls: type[tfds.core.DatasetBuilder],
                    data_dir: str | os.PathLike[str],
                    **builder_kwargs: Any) -> tfds.core.DatasetBuilder:
  """Prepares ``builder_cls`` into ``data_dir`` once, safely across processes.

  TFDS writes into ``incomplete.<random>_<version>/`` and renames it at the
  end, so readers never see a half-written version directory. But two
  processes preparing at once both write, and the loser's rename onto the
  winner's non-empty directory raises ``OSError``; a builder constructed before
  the other process finished also holds a stale, split-less ``DatasetInfo``.
  An exclusive ``flock`` around construct-check-prepare avoids both (flock
  also works on Linux NFS clients).

  Args:
    builder_cls: a TFDS builder that needs no download (ours generate data).
    data_dir: TFDS data directory (the dataset goes under ``<name>/<version>``,
      or ``<name>/<config>/<version>``).
    **builder_kwargs: passed to ``builder_cls``, e.g. ``config="small"`` to pick
      one of its ``BUILDER_CONFIGS``.

  Returns:
    A builder whose data is prepared in ``array_record`` format, ready for
    ``as_data_source``.
  """
  data_dir = pathlib.Path(data_dir)
  builder = builder_cls(data_dir=os.fspath(data_dir), **builder_kwargs)
  if _is_prepared(builder):
    return builder
  data_dir.mkdir(parents=True, exist_ok=True)
  # One lock per builder config: preparing two configs at once is safe.
  config_name = builder.builder_config.name if builder.builder_config else ""
  lock_path = data_dir / f".{builder_cls.name}{'.' + config_name if config_name else ''}.prepare.lock"
  with open(lock_path, "a") as lock:
    fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
    try:
      # Re-create under the lock: another process may have finished meanwhile.
      builder = builder_cls(data_dir=os.fspath(data_dir), file_format="array_record",
                            **builder_kwargs)
      if not _is_prepared(builder):
        builder.download_and_prepare(
            # Never probe gs://tfds-data: these machines have no network and
            # our builders exist only here.
            download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    finally:
      fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
  return builder_cls(data_dir=os.fspath(data_dir), **builder_kwargs)


class ToModelInputs(grain.transforms.Map):
  """Maps a raw record to the model contract ``{'inputs', 'label'}``.

  ``inputs`` is int32 [max_length] (or [towers, max_length], each row padded on its
  own), right-padded with ``pad_id``; ``label`` is an int32 scalar. A sequence longer
  than ``max_length`` raises instead of being truncated silently.
  """

  def __init__(self, *, inputs_key: str, label_key: str, max_length: int, pad_id: int,
               towers: int = 1):
    self.inputs_key = inputs_key
    self.label_key = label_key
    self.max_length = max_length
    self.pad_id = pad_id
    self.towers = towers

  def map(self, element: Mapping[str, Any]) -> dict[str, np.ndarray]:
    tokens = np.asarray(element[self.inputs_key], dtype=np.int32)
    lead = () if self.towers == 1 else (self.towers,)
    if (tokens.ndim != len(lead) + 1 or tokens.shape[:-1] != lead
        or tokens.shape[-1] > self.max_length):
      expected = ("a 1-D sequence" if self.towers == 1 else
                  f"[towers={self.towers}, length] sequences")
      raise ValueError(
          f"{self.inputs_key!r} has shape {tokens.shape}; expected {expected} of "
          f"at most max_length={self.max_length} tokens")
    if tokens.shape[-1] < self.max_length:
      pad = [(0, 0)] * len(lead) + [(0, self.max_length - tokens.shape[-1])]
      tokens = np.pad(tokens, pad, constant_values=self.pad_id)
    return {"inputs": tokens, "label": np.asarray(element[self.label_key], dtype=np.int32)}

  @classmethod
  def for_spec(cls, spec: DatasetSpec) -> ToModelInputs:
    """The transform for one registered dataset."""
    return cls(inputs_key=spec.inputs_key, label_key=spec.label_key,
               max_length=spec.info.max_length, pad_id=spec.info.pad_id,
               towers=spec.info.towers)
