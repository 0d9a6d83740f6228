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


#: Token-id features: padded with ``DatasetInfo.pad_id`` (every other feature with 0).
TOKEN_FEATURES = ("inputs", "targets")
#: What ``DatasetInfo.label_type`` may be: int class ids, float targets, no label (a corpus).
LABEL_TYPES = ("class", "float", "none")


@dataclasses.dataclass(frozen=True)
class Feature:
  """Shape and dtype of one feature of ONE example (a batch adds a leading batch axis).

  Duck-types ``jax.ShapeDtypeStruct`` (``shape``, ``dtype``), so ``jax.eval_shape`` accepts
  it; kept NumPy-only so ``attnjax.data`` needs no JAX.

  Attributes:
    shape: e.g. ``(L,)`` for token ids, ``()`` for a scalar label.
    dtype: a NumPy dtype (``np.dtype('int32')``, ``np.dtype('float32')``).
  """
  shape: tuple[int, ...]
  dtype: np.dtype

  def __post_init__(self):
    object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
    object.__setattr__(self, "dtype", np.dtype(self.dtype))


class _DerivedFeatures(dict):
  """Features derived from the other fields (not declared): re-derived by
  ``dataclasses.replace``, so ``replace(info, towers=2)`` gets ``[2, L]`` inputs."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the model and the task need to know about a dataset.

  Attributes:
    name: registered dataset name, e.g. ``"digits"``.
    vocab_size: number of token ids, including ``pad_id``; every id in
      ``inputs`` is in ``[0, vocab_size)``.
    max_length: length L of every ``inputs`` row (shorter sequences are padded
      with ``pad_id`` at the end).
    num_classes: labels are in ``[0, num_classes)`` (1 for regression, 0 without labels).
    num_train: examples in the training split.
    num_eval: examples in the default evaluation split.
    pad_id: token id of padding; the model's mask is ``inputs != pad_id``.
    towers: sequences per example. 1: ``inputs`` is ``[L]``. 2 (two-tower pair
      classification, LRA Retrieval): ``inputs`` is ``[2, L]``, one row per document,
      each padded on its own and encoded separately by the same encoder. Not to be
      confused with ``TextDatasetInfo.pair``: two sentences joined in ONE sequence.
    label_type: ``class`` (int32 ``label``), ``float`` (float32 ``label``, regression) or
      ``none`` (no label of its own: a corpus, a language-model or seq2seq dataset).
    bos_id, eos_id: begin/end-of-sequence token ids, -1 where the data has none.
    features: name -> :class:`Feature` of what one example delivers to the model (the
      keys of every batch, plus ``weight`` in eval batches). ``None`` (the default) means
      sequence classification: ``inputs`` int32 ``input_shape`` and ``label`` int32 ``[]``
      (float32 for ``label_type='float'``). Key conventions: causal LM ``inputs``,
      ``targets`` (next token, ``pad_id`` where none), ``segment_ids`` (0 = padding,
      1..n per packed document), ``positions`` (from 0 per segment), all int32 ``[L]``;
      seq2seq ``inputs`` int32 ``[Ls]`` (source ids ending in EOS) and ``targets`` int32
      ``[Lt]`` (target ids ending in EOS, ``pad_id`` after; decoder inputs are the targets
      shifted right behind ``bos_id``); packed classification (``config.data.pack``)
      ``inputs``, ``segment_ids``, ``positions`` ``[L]`` and per packed sequence ``label``
      ``[max_segments]`` with ``label_weight`` float32 ``[max_segments]`` (1 = a real
      sequence; eval batches' row ``weight`` multiplies it); causal LM rows also carry
      ``num_bytes`` int32 ``[]``, the UTF-8 bytes of their targets (bits per byte).
  """
  name: str
  vocab_size: int
  max_length: int
  num_classes: int
  num_train: int
  num_eval: int
  pad_id: int = 0
  towers: int = 1
  label_type: str = "class"
  bos_id: int = -1
  eos_id: int = -1
  # Not hashed: a dict is unhashable, and the other fields identify the dataset already.
  features: Mapping[str, Feature] | None = dataclasses.field(default=None, hash=False)

  def __post_init__(self):
    if self.label_type not in LABEL_TYPES:
      raise ValueError(f"label_type={self.label_type!r}; expected one of {LABEL_TYPES}")
    if self.features is None or isinstance(self.features, _DerivedFeatures):
      inputs = (self.max_length,) if self.towers == 1 else (self.towers, self.max_length)
      features = _DerivedFeatures(inputs=Feature(inputs, np.int32))
      if self.label_type != "none":
        features["label"] = Feature((), np.float32 if self.label_type == "float" else np.int32)
    else:
      features = {k: v if isinstance(v, Feature) else Feature(v.shape, v.dtype)
                  for k, v in dict(self.features).items()}
    if "inputs" not in features:
      raise ValueError(f"dataset {self.name!r}: features {sorted(features)} lack 'inputs'")
    object.__setattr__(self, "features", features)

  @property
  def input_shape(self) -> tuple[int, ...]:
    """Shape of one example's ``inputs``: ``(L,)``, or ``(towers, L)`` when towers > 1."""
    return self.features["inputs"].shape

  def dummy_batch(self, batch_size: int = 1) -> dict[str, np.ndarray]:
    """Zeros of every feature with a leading batch axis: ``{name: [batch_size, *shape]}``.

    For shapes only (model init, ``jax.eval_shape``): all-zero token ids are all padding.
    """
    return {k: np.zeros((batch_size, *f.shape), f.dtype) for k, f in self.features.items()}


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
    variant: for a dataset with options in ``config.data`` (tokenizer, max_length, ...):
      ``variant(data_config)`` -> the spec of those options, its ``info.name`` a concrete
      name such as ``stdlib_docstrings[minilm,64]`` (:func:`resolve_data_config` registers
      it); ``None`` for a dataset without options.
    tokenizer: ``tokenizer(data_config)`` -> the dataset's ``tokenizers.Tokenizer`` (to
      decode ids into text, and saved with a run); ``None`` where ids are not text.
    tokenizer_file: ``tokenizer_file(data_config)`` -> the ``tokenizer.json`` a vocabulary
      trained for this dataset is cached in (None where the tokenizer is not a file).
    resolved_from: for a variant :func:`resolve_data_config` registered, the name it was
      resolved from ('' otherwise); such a name is final (resolving it again keeps it).
  """
  info: DatasetInfo
  splits: tuple[str, ...]
  source: SourceFn
  inputs_key: str = "tokens"
  label_key: str = "label"
  train_split: str = "train"
  eval_split: str = "test"
  check: Callable[[Any], None] | None = None
  variant: Callable[[Any], DatasetSpec] | None = None
  tokenizer: Callable[[Any], Any] | None = None
  tokenizer_file: Callable[[Any], pathlib.Path | None] | None = None
  resolved_from: str = ""

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


#: The dataset a config with ``config.data.files`` resolves through, whatever its name
#: (registered by ``attnjax.data.text``: the user's CSV/TSV/JSONL files).
FILES_DATASET = "text_files"


def _has_files(data_config: Any) -> bool:
  files = data_config.get("files")
  return bool(files) and any(dict(files).values())


def resolve_data_config(data_config: Any) -> Any:
  """The data config naming the registered dataset for the options it sets.

  A dataset without options (``DatasetSpec.variant is None``) or an unknown name is returned
  unchanged (the unknown name fails later, listing the known ones). For a dataset with
  options (text: ``tokenizer``, ``max_length``, ...; ``files`` for the user's files, see
  :data:`FILES_DATASET`), the variant is registered once under its concrete name and a copy
  of ``data_config`` naming it is returned. User files are read and checked here, so bad
  rows fail before a run writes anything.
  """
  name = data_config.get("name")
  if name in DATASETS and DATASETS.get(name).resolved_from:
    return data_config  # resolved already
  if _has_files(data_config):
    name = FILES_DATASET
  if name not in DATASETS:
    return data_config
  base = DATASETS.get(name)
  if base.variant is None:
    if data_config.get("pack", False):
      raise ValueError(f"config.data.pack=True: dataset {name!r} has fixed-length examples "
                       "and cannot be packed (packing is for the text datasets)")
    return data_config
  spec = base.variant(data_config)
  if spec.info.name == data_config.get("name"):
    return data_config
  if spec.info.name not in DATASETS:
    DATASETS.register(spec.info.name,
                      dataclasses.replace(spec, variant=None, resolved_from=name))
  # pylint: disable-next=import-outside-toplevel
  import ml_collections
  resolved = ml_collections.ConfigDict(
      data_config.to_dict() if hasattr(data_config, "to_dict") else dict(data_config))
  resolved.name = spec.info.name
  return resolved


def dataset_tokenizer(data_config: Any):
  """The ``tokenizers.Tokenizer`` of a (resolved) dataset, or None when its ids are not text."""
  name = data_config.get("name")
  if name not in DATASETS:
    return None
  spec = DATASETS.get(name)
  return None if spec.tokenizer is None else spec.tokenizer(data_config)


def dataset_tokenizer_file(data_config: Any) -> pathlib.Path | None:
  """The file a (resolved) dataset's trained tokenizer is cached in (copy it into a run as
  ``tokenizer.json``), or None when it has none (pretrained, character or no tokenizer)."""
  name = data_config.get("name")
  if name not in DATASETS:
    return None
  spec = DATASETS.get(name)
  return None if spec.tokenizer_file is None else spec.tokenizer_file(data_config)


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


class FlatMapSource(Sequence):
  """Random-access examples of a source in which one record yields zero or more examples.

  ``fn(record)`` returns a list of examples (e.g. a document cut into chunks, one text
  turned into several training pairs). Random access needs to know how many examples each
  record yields, so ``fn`` runs over every record once, on first use, and the examples are
  kept in memory (cheap for the token-id datasets here; they are what the pipeline reads).
  Example ``i`` of the result is example ``k`` of record ``r`` in record order.

  Args:
    source: random-access records.
    fn: ``fn(record) -> list of examples``.
    name: shown in ``repr`` (Grain compares it when restoring an iterator).
  """

  def __init__(self, source: Sequence[Mapping[str, Any]],
               fn: Callable[[Mapping[str, Any]], Sequence[Mapping[str, Any]]], name: str):
    self._source, self._fn, self._name = source, fn, name
    self._examples: list[Mapping[str, Any]] | None = None

  def _materialise(self) -> list[Mapping[str, Any]]:
    if self._examples is None:
      self._examples = [e for i in range(len(self._source)) for e in self._fn(self._source[i])]
    return self._examples

  def __len__(self) -> int:
    return len(self._materialise())

  def __getitem__(self, index: int) -> Mapping[str, Any]:  # type: ignore[override]
    return self._materialise()[index]

  def __repr__(self) -> str:
    return f"FlatMapSource({self._name})"


class ToModelInputs(grain.transforms.Map):
  """Maps a raw record to the dataset's features (``DatasetInfo.features``).

  Every feature is cast to its dtype and its last axis right-padded to its declared length:
  token ids (``inputs``, ``targets``) with ``pad_id``, everything else (``segment_ids``,
  ``positions``, a packed ``label``) with 0; leading axes must match (two-tower ``inputs``
  ``[towers, n]``: each row padded on its own). ``inputs`` is read from ``inputs_key`` and
  ``label`` from ``label_key``, the other features from keys of their own name. A sequence
  longer than its feature raises instead of being truncated silently.
  """

  def __init__(self, *, features: Mapping[str, Feature], pad_id: int,
               inputs_key: str = "inputs", label_key: str = "label"):
    self.features = dict(features)
    self.pad_id = pad_id
    self.keys = {name: inputs_key if name == "inputs" else label_key if name == "label" else name
                 for name in self.features}

  def map(self, element: Mapping[str, Any]) -> dict[str, np.ndarray]:
    out = {}
    for name, feature in self.features.items():
      key = self.keys[name]
      if key not in element:
        raise ValueError(f"record has no {key!r} for feature {name!r}; it has {sorted(element)}")
      value = np.asarray(element[key], dtype=feature.dtype)
      shape = feature.shape
      if not shape:
        if value.shape:
          raise ValueError(f"{key!r} has shape {value.shape}; feature {name!r} is a scalar")
        out[name] = value
        continue
      if value.ndim != len(shape) or value.shape[:-1] != shape[:-1] or value.shape[-1] > shape[-1]:
        if name == "inputs" and len(shape) == 1:
          expected = "a 1-D sequence"
        elif name == "inputs":
          expected = f"[towers={shape[0]}, length] sequences"
        else:
          expected = f"shape {shape[:-1] + ('n',)}"
        raise ValueError(
            f"{key!r} has shape {value.shape}; expected {expected} of at most "
            f"{'max_length' if name == 'inputs' else 'length'}={shape[-1]} tokens")
      if value.shape[-1] < shape[-1]:
        pad = [(0, 0)] * (value.ndim - 1) + [(0, shape[-1] - value.shape[-1])]
        fill = self.pad_id if name in TOKEN_FEATURES else 0
        value = np.pad(value, pad, constant_values=fill)
      out[name] = value
    return out

  @classmethod
  def for_spec(cls, spec: DatasetSpec) -> ToModelInputs:
    """The transform for one registered dataset."""
    return cls(features=spec.info.features, pad_id=spec.info.pad_id,
               inputs_key=spec.inputs_key, label_key=spec.label_key)
