"""Grain input pipelines: sharded, checkpointable train batches and exact eval batches.

Every batch is a dict of numpy arrays, the contract with the model and the
train loop: one ``[B, *shape]`` array per feature the dataset declares
(``DatasetInfo.features``), for classification

* ``inputs``: int32 [B, L] token ids (``[B, 2, L]`` for two-tower datasets,
  ``DatasetInfo.towers == 2``), ``pad_id`` (0) marks padding;
* ``label``:  int32 [B] class ids (float32 [B] for regression, ``label_type='float'``);

(causal LM and seq2seq keys: see ``DatasetInfo``), plus

* ``weight``: float32 [B], eval batches only: 1 for real examples, 0 for the
  rows that pad the final batches, so ``sum(w * metric) / sum(w)`` is exact.

B is the per-process batch, ``global_batch_size // process_count``.
"""

from __future__ import annotations

import json
import math
from typing import Any, Iterator, Mapping, Sequence

from absl import flags
import grain
import numpy as np

from attnjax.data import digits  # pylint: disable=unused-import  (registers "digits")
from attnjax.data.datasets import DatasetInfo
from attnjax.data.datasets import DatasetSpec
from attnjax.data.datasets import ToModelInputs
from attnjax.data.datasets import get_dataset_spec

Batch = dict[str, np.ndarray]


def get_dataset_info(data_config: Any) -> DatasetInfo:
  """Describes the task named by ``data_config.name``; prepares nothing.

  Args:
    data_config: ConfigDict (or mapping) with ``name``.

  Returns:
    The registered :class:`DatasetInfo`.

  Raises:
    ValueError: unknown name (the message lists the registered ones), or inputs the
      dataset needs from the user are missing (``DatasetSpec.check``).
  """
  spec = get_dataset_spec(data_config.get("name"))
  if spec.check is not None:
    spec.check(data_config)
  return spec.info


def _per_process_batch(global_batch_size: int, process_count: int) -> int:
  if global_batch_size <= 0 or process_count <= 0 or global_batch_size % process_count:
    raise ValueError(
        f"global_batch_size={global_batch_size} must be a positive multiple of "
        f"process_count={process_count}")
  return global_batch_size // process_count


def _loader_options(data_config: Any) -> dict[str, Any]:
  """DataLoader parallelism options from the config (defaults in brackets).

  ``worker_count`` [0]: Grain worker processes; 0 reads in this process.
  Workers change which examples land in which batch, so a run must resume
  with the worker_count it saved its iterator state with.
  ``worker_buffer_size`` [1]: batches each worker keeps ready.
  ``read_threads`` [16] / ``read_prefetch`` [500]: Grain's per-record read
  thread pool. For small, cheap records (digits) ``read_threads=0`` is about
  2x faster: the pool's per-record bookkeeping costs more than the read.
  """
  worker_count = data_config.get("worker_count", 0)
  if worker_count > 0 and not flags.FLAGS.is_parsed():
    # Grain's worker processes read --grain_* absl flags; unparsed, they die
    # with an UnparsedFlagAccessError deep inside a worker traceback.
    raise ValueError(
        f"worker_count={worker_count} needs absl flags parsed: run under "
        "absl.app.run (launch.py does) or call absl.flags.FLAGS.mark_as_parsed()")
  return dict(
      worker_count=worker_count,
      worker_buffer_size=data_config.get("worker_buffer_size", 1),
      read_options=grain.ReadOptions(
          num_threads=data_config.get("read_threads", 16),
          prefetch_buffer_size=data_config.get("read_prefetch", 500)),
  )


def _check_process(process_index: int, process_count: int) -> None:
  if not 0 <= process_index < process_count:
    raise ValueError(
        f"process_index={process_index} must be in [0, process_count={process_count})")


class GlobalBatchSliceSampler:
  """Gives one process its rows of every *global* batch of a seeded shuffle.

  The global stream is one shuffled order of the split (reshuffled each epoch), cut into
  global batches of ``global_batch_size``; process ``p`` of ``P`` takes rows
  ``[p * B, (p + 1) * B)`` of each, ``B = global_batch_size // P``. So the examples of step
  ``n`` are the same whatever the number of processes: a run is reproducible across
  process counts, and resumes onto a different topology without skipping or repeating
  data. Each process reads only its own rows.

  Args:
    num_records: size of the split.
    seed: shuffle seed in ``[0, 2**32)``.
    global_batch_size: examples per step across processes.
    process_index: this process.
    process_count: number of processes.
  """

  def __init__(self, num_records: int, *, seed: int, global_batch_size: int,
               process_index: int, process_count: int):
    self._inner = grain.samplers.IndexSampler(
        num_records=num_records, shard_options=grain.sharding.NoSharding(), shuffle=True,
        num_epochs=None, seed=int(seed))
    self._global = global_batch_size
    self._local = global_batch_size // process_count
    self._offset = process_index * self._local
    self._args = (num_records, int(seed), global_batch_size, process_index, process_count)

  def __repr__(self) -> str:
    # Grain compares repr(sampler) when restoring an iterator state: keep it exact.
    n, seed, g, p, pc = self._args
    return (f"GlobalBatchSliceSampler(num_records={n}, seed={seed}, global_batch_size={g}, "
            f"process_index={p}, process_count={pc})")

  def __getitem__(self, index: int) -> grain.RecordMetadata:
    step, row = divmod(index, self._local)
    inner = self._inner[step * self._global + self._offset + row]
    return grain.RecordMetadata(index=index, record_key=inner.record_key,
                                       rng=inner.rng)


def make_train_iterator(data_config: Any, *, global_batch_size: int, seed: int,
                        process_index: int = 0,
                        process_count: int = 1) -> grain.DataLoaderIterator:
  """Infinite, shuffled training batches for this process.

  The batches of every step are slices of one global, seeded stream (see
  :class:`GlobalBatchSliceSampler`): shuffled by ``seed``, reshuffled every epoch, epochs
  concatenated and cut into full global batches, so no batch is ever short and the
  examples of a step do not depend on the number of processes.

  Args:
    data_config: ConfigDict with ``name``, optional ``data_dir`` (see
      :func:`attnjax.data.resolve_data_dir`) and optional loader options
      ``worker_count`` (default 0 = read in this process),
      ``worker_buffer_size``, ``read_threads``, ``read_prefetch``.
    global_batch_size: examples per step across all processes.
    seed: shuffle seed, an int in [0, 2**32); the same seed gives the same
      batches.
    process_index: this process, ``jax.process_index()``.
    process_count: number of processes, ``jax.process_count()``.

  Returns:
    A Grain ``DataLoaderIterator`` yielding ``{'inputs': int32 [B, L],
    'label': int32 [B]}`` with B = global_batch_size // process_count. Its
    ``get_state()`` / ``set_state()`` checkpoint and restore the position
    exactly.

  Raises:
    ValueError: unknown dataset, global_batch_size not divisible by
      process_count, bad process_index or seed.
  """
  spec = get_dataset_spec(data_config.get("name"))
  batch_size = _per_process_batch(global_batch_size, process_count)
  _check_process(process_index, process_count)
  if not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
    # Grain's index shuffle takes a non-negative 32-bit seed.
    raise ValueError(f"seed={seed!r} must be an int in [0, 2**32)")
  source = spec.source(data_config, spec.train_split)
  sampler = GlobalBatchSliceSampler(len(source), seed=int(seed),
                                    global_batch_size=global_batch_size,
                                    process_index=process_index, process_count=process_count)
  loader = grain.DataLoader(
      data_source=source,
      sampler=sampler,
      operations=[ToModelInputs.for_spec(spec),
                  grain.transforms.Batch(batch_size, drop_remainder=True)],
      **_loader_options(data_config),
      shard_options=grain.sharding.NoSharding(),
  )
  return iter(loader)


class _PaddedShard:
  """One process's slice of a split, padded to whole batches, with weights.

  Padding rows repeat a real example (the split's first) rather than being
  all ``pad_id``: an all-padding row has an empty attention mask, and a model
  that mean-pools over it divides 0 by 0; NaN * weight 0 is still NaN and
  would poison the weighted mean.
  """

  def __init__(self, source: Sequence[Mapping[str, Any]], indices: np.ndarray,
               length: int, to_model: ToModelInputs):
    self._source = source
    self._indices = indices
    self._length = length
    self._to_model = to_model

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, i: int) -> Batch:
    real = i < len(self._indices)
    example = self._to_model.map(self._source[int(self._indices[i]) if real else 0])
    example["weight"] = np.float32(1.0 if real else 0.0)
    return example

  def __repr__(self) -> str:
    return f"_PaddedShard(examples={len(self._indices)}, padded_to={self._length})"


def num_eval_batches(num_examples: int, *, global_batch_size: int,
                     process_count: int = 1) -> int:
  """Eval batches every process yields for a split of ``num_examples``.

  Equal on all processes (the largest shard decides), so multi-host eval
  steps stay in lockstep.
  """
  batch_size = _per_process_batch(global_batch_size, process_count)
  return math.ceil(math.ceil(num_examples / process_count) / batch_size)


def make_eval_iterator(data_config: Any, *, split: str | None = None,
                       global_batch_size: int, process_index: int = 0,
                       process_count: int = 1) -> Iterator[Batch]:
  """Finite, unshuffled eval batches covering each example exactly once.

  Process p reads the p-th contiguous part of the split
  (``np.array_split``); every process yields the same number of full batches
  (:func:`num_eval_batches`), padding the end with weight-0 rows.

  Args:
    data_config: ConfigDict with ``name``, optional ``data_dir`` and loader
      options, as for :func:`make_train_iterator`.
    split: split name; ``None`` means the dataset's eval split (``'test'`` for
      digits).
    global_batch_size: examples per step across all processes.
    process_index: this process, ``jax.process_index()``.
    process_count: number of processes, ``jax.process_count()``.

  Returns:
    An iterator of ``{'inputs': int32 [B, L], 'label': int32 [B],
    'weight': float32 [B]}``, B = global_batch_size // process_count. Call
    again for another pass.

  Raises:
    ValueError: unknown dataset or split (the message lists the available
      ones), global_batch_size not divisible by process_count, bad
      process_index.
  """
  spec: DatasetSpec = get_dataset_spec(data_config.get("name"))
  split = spec.eval_split if split is None else split
  spec.check_split(split)
  batch_size = _per_process_batch(global_batch_size, process_count)
  _check_process(process_index, process_count)
  source = spec.source(data_config, split)
  indices = np.array_split(np.arange(len(source)), process_count)[process_index]
  steps = num_eval_batches(len(source), global_batch_size=global_batch_size,
                           process_count=process_count)
  shard = _PaddedShard(source, indices, steps * batch_size, ToModelInputs.for_spec(spec))
  loader = grain.DataLoader(
      data_source=shard,
      # Sharding is already done above (uneven shards padded to equal length),
      # so Grain sees one unsharded, ordered epoch.
      sampler=grain.samplers.IndexSampler(
          num_records=len(shard), shard_options=grain.sharding.NoSharding(),
          shuffle=False, num_epochs=1),
      operations=[grain.transforms.Batch(batch_size, drop_remainder=True)],
      **_loader_options(data_config),
  )
  return iter(loader)


def restore_train_position(iterator: grain.DataLoaderIterator, saved_state: bytes | None, *,
                           step: int, global_batch_size: int, process_count: int) -> str:
  """Puts a fresh train iterator where a run that finished ``step`` steps left it.

  The saved Grain state is used when it belongs to this very pipeline (same sampler,
  source and worker count). Otherwise (another process count, another process's state, a
  moved data_dir) the position is recomputed from ``step``: batches are slices of one
  global stream, so ``step`` alone fixes where every process is.

  Returns:
    ``'saved'`` or ``'step'``: which of the two was used.
  """
  current = json.loads(iterator.get_state())
  if saved_state is not None:
    saved = json.loads(saved_state)
    if all(saved.get(k) == current.get(k) for k in ("sampler", "data_source", "worker_count")):
      iterator.set_state(saved_state)
      return "saved"
  if current.get("worker_count", 0) != 0:
    raise ValueError("cannot reposition a train iterator with worker_count > 0 from the "
                     "step alone; resume with the worker_count, process count and data_dir "
                     "of the saved run")
  current["last_seen_indices"] = {"0": step * (global_batch_size // process_count) - 1}
  iterator.set_state(json.dumps(current).encode())
  return "step"
