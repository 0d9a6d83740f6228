"""Tasks: what the one train step and the one loop do differently per kind of problem.

A task turns ``(config, DatasetInfo)`` into a :class:`Task`: the model, the per-batch
training loss and metrics (handed to :func:`attnjax.train.steps.make_train_step`), the eval
step (weighted sums that add up exactly over a split, plus per-example outputs when a metric
needs every prediction) and the host-side function that turns the sums into final metrics.
``config.task.name`` selects one of :data:`TASKS`:

* ``classification``: cross-entropy; eval loss, accuracy, macro F1, Matthews correlation.
* ``regression``: one output, mean squared error; eval MSE, Pearson and Spearman computed
  exactly from the gathered predictions.
* ``masked_lm``: BERT masking inside the step (with the step's folded rng), cross-entropy and
  accuracy over the masked positions; eval loss, accuracy and perplexity over masked tokens,
  with a masking that depends only on each example (the same under every strategy).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from attnjax.data import DatasetInfo
from attnjax.layers import EncoderConfig
from attnjax.models import bert_masking, build_model
from attnjax.registry import Registry
from attnjax.train import metrics as metrics_lib
from attnjax.train.flops import train_flops_per_step
from attnjax.train.steps import Batch, LossFn
from attnjax.train.state import TrainState

Sums = dict[str, Any]
Outputs = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Task:
  """One kind of problem, as the train step, the loop, the evaluators and the sweep use it.

  Attributes:
    name: the registered task name.
    model: the flax module (``model.apply`` is the state's ``apply_fn`` before any wrapping);
      it takes the batch dict (see ``attnjax.models.registry``).
    encoder: the model's (encoder's or decoder's) EncoderConfig (FLOPs, export, layers).
    loss_fn: ``loss_fn(apply_fn, params, batch, rng) -> (mean loss, {metric: mean})``.
    eval_fn: ``eval_fn(state, batch)`` -> weighted sums ``{name: array}``, or
      ``(sums, outputs)`` with per-example ``outputs`` ``{name: [batch, ...]}`` when
      ``gathers_outputs``.
    finalize: ``finalize(sums, outputs)`` -> final metrics; ``sums`` summed over every
      batch (numpy), ``outputs`` concatenated over batches with padding rows removed (None
      unless ``gathers_outputs``).
    init_batch: the batch (numpy, batch size 1) the model is initialised from.
    flops_per_example: matmul FLOPs of forward + backward per training example (MFU).
    tokens_per_example: token positions per training example (tokens/s).
    metric: the eval metric that ranks runs (sweep tables, best checkpoint by default).
    metric_mode: ``max`` or ``min``: which way ``metric`` is better.
    gathers_outputs: whether ``eval_fn`` returns per-example outputs.
    train_metrics: the loss function's metrics, averaged over a logging window.
    summary: eval metrics printed at the end of a run.
    decoder: for tasks that generate (``causal_lm``, ``seq2seq``): whether decoding
      evaluators may run on it.
  """

  name: str
  model: nn.Module
  encoder: EncoderConfig
  loss_fn: LossFn
  eval_fn: Callable[[TrainState, Batch], Any]
  finalize: Callable[[Sums, Outputs | None], dict[str, float]]
  init_batch: Batch
  flops_per_example: float
  tokens_per_example: int
  metric: str = "loss"
  metric_mode: str = "min"
  gathers_outputs: bool = False
  train_metrics: tuple[str, ...] = ()
  summary: tuple[str, ...] = ("loss",)
  decoder: bool = False


TaskBuilder = Callable[[ml_collections.ConfigDict, DatasetInfo], Task]
TASKS: Registry[TaskBuilder] = Registry("task")


def task_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """``config.task``, or classification's defaults for configs written before tasks existed."""
  task = config.get("task")
  if task is None:
    return ml_collections.ConfigDict({"name": "classification"})
  return task


#: name -> (metric, mode) each registered task ranks runs by (``Task.metric``), readable
#: without building the task (the sweep reads it from a point's config).
TASK_METRICS: dict[str, tuple[str, str]] = {}


def register_task(name: str, *, metric: str, mode: str) -> Callable[[TaskBuilder], TaskBuilder]:
  """Registers a task builder under ``name`` with the eval metric that ranks its runs."""
  if mode not in ("max", "min"):
    raise ValueError(f"task {name!r}: metric mode {mode!r}; expected 'max' or 'min'")

  def add(builder: TaskBuilder) -> TaskBuilder:
    TASKS.register(name, builder)
    TASK_METRICS[name] = (metric, mode)
    return builder
  return add


def task_metric(config: ml_collections.ConfigDict) -> tuple[str, str]:
  """``(metric, 'max'|'min')`` that ranks runs of ``config``'s task."""
  name = task_config(config).get("name", "classification")
  TASKS.get(name)  # an unknown task lists the known ones
  return TASK_METRICS[name]


def _init_batch(info: DatasetInfo) -> Batch:
  """The dataset's dummy batch of one example, token ids set to a non-padding id."""
  batch = info.dummy_batch(1)
  for key in ("inputs", "targets"):
    if key in batch:
      batch[key] = np.full_like(batch[key], info.pad_id + 1)
  return batch


def build_task(config: ml_collections.ConfigDict, info: DatasetInfo) -> Task:
  """Builds the task named by ``config.task.name`` (default ``classification``) for ``info``.

  Raises:
    ValueError: an unknown task (the message lists the known ones) or a dataset that does
      not fit the task (e.g. masked_lm on data without a mask token).
  """
  return TASKS.get(task_config(config).get("name", "classification"))(config, info)


def self_pretrain_steps(config: ml_collections.ConfigDict) -> int:
  """``config.self_pretrain.num_steps`` (0 when the config predates self-pretraining)."""
  section = config.get("self_pretrain")
  return int(section.get("num_steps", 0)) if section is not None else 0


def model_vocab(config: ml_collections.ConfigDict, info: DatasetInfo) -> tuple[int, int]:
  """``(vocabulary size of the model, [MASK] id or -1)`` for ``info``'s data.

  A dataset with a mask token uses it. With self-pretraining on data without one (LRA
  bytes, pixels, ListOps), the id after the data's vocabulary is [MASK], and the models of
  both phases carry that extra row, so the pretrained encoder loads with unchanged shapes.
  """
  mask_id = getattr(info, "mask_id", -1)
  if mask_id is not None and mask_id >= 0:
    return info.vocab_size, int(mask_id)
  if self_pretrain_steps(config) > 0:
    return info.vocab_size + 1, info.vocab_size
  return info.vocab_size, -1


def _segment_ids(sep_id: int) -> Callable[[Batch], dict]:
  """``token_type_ids`` of ``[CLS] A [SEP] B [SEP]`` rows: 0 up to the first SEP, 1 after.

  The pipeline carries token ids only; BERT's segment ids follow from the first ``[SEP]``.
  """
  def kwargs(batch: Batch) -> dict:
    ids = batch["inputs"]
    is_sep = (ids == sep_id).astype(jnp.int32)
    seen = jnp.cumsum(is_sep, axis=-1) - is_sep  # SEPs strictly before each position
    return {"token_type_ids": jnp.minimum(seen, 1)}
  return kwargs


def _model_kwargs(info: DatasetInfo, encoder: EncoderConfig) -> Callable[[Batch], dict] | None:
  """Segment ids for sentence-pair datasets when the model has token-type embeddings."""
  if getattr(info, "pair", False) and encoder.type_vocab_size > 0:
    return _segment_ids(int(getattr(info, "sep_id")))
  return None


def _model_name(config: ml_collections.ConfigDict, default: str) -> str:
  """``config.model.name``, or the task's default model."""
  return config.model.get("name") or default


def _forward(state: TrainState, batch: Batch, kwargs_fn) -> jax.Array:
  extra = kwargs_fn(batch) if kwargs_fn is not None else {}
  return state.apply_fn({"params": state.params}, batch["inputs"], deterministic=True, **extra)


# ---------------------------------------------------------------------------------------
# classification


def classification_loss(logits: jax.Array, labels: jax.Array, *,
                        label_smoothing: float = 0.0) -> jax.Array:
  """Per-example softmax cross-entropy ``[batch]`` (float32) with optional label smoothing."""
  num_classes = logits.shape[-1]
  targets = jax.nn.one_hot(labels, num_classes)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def classification_loss_fn(*, label_smoothing: float = 0.0,
                           model_kwargs: Callable[[Batch], dict] | None = None) -> LossFn:
  """Softmax cross-entropy and accuracy of ``apply_fn(params, batch['inputs'])`` logits.

  Args:
    label_smoothing: as :func:`classification_loss`.
    model_kwargs: extra keyword arguments of the model computed from the batch (e.g.
      ``token_type_ids`` of sentence pairs); None passes none.
  """
  def loss_fn(apply_fn, params, batch, rng):
    extra = model_kwargs(batch) if model_kwargs is not None else {}
    logits = apply_fn({"params": params}, batch["inputs"], deterministic=False,
                      rngs={"dropout": rng}, **extra)
    loss = classification_loss(logits, batch["label"], label_smoothing=label_smoothing)
    correct = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    return loss.mean(), {"accuracy": correct}
  return loss_fn




def classification_eval_sums(logits: jax.Array, labels: jax.Array,
                             weight: jax.Array) -> dict[str, jax.Array]:
  """Weighted sums of one batch: ``loss_sum``, ``correct_sum``, ``weight_sum`` and the
  weighted ``confusion`` matrix ``[classes, classes]`` (row = label, column = prediction)."""
  num_classes = logits.shape[-1]
  weight = weight.astype(jnp.float32)
  loss = classification_loss(logits, labels)
  predictions = jnp.argmax(logits, -1)
  correct = (predictions == labels).astype(jnp.float32)
  confusion = jnp.einsum("bi,bj->ij", jax.nn.one_hot(labels, num_classes) * weight[:, None],
                         jax.nn.one_hot(predictions, num_classes))
  return {"loss_sum": jnp.sum(loss * weight), "correct_sum": jnp.sum(correct * weight),
          "weight_sum": jnp.sum(weight), "confusion": confusion}


def classification_eval_step(state: TrainState, batch: Batch) -> dict[str, jax.Array]:
  """Classification's weighted sums over one eval batch (see :func:`classification_eval_sums`).

  ``batch['weight']`` is 1 for real examples and 0 for padding, so summing over batches and
  dividing gives exact means over the split.
  """
  logits = state.apply_fn({"params": state.params}, batch["inputs"], deterministic=True)
  return classification_eval_sums(logits, batch["label"], batch["weight"])


def classification_metrics(sums: Sums, outputs: Outputs | None = None) -> dict[str, float]:
  """Loss, accuracy, macro F1 and Matthews correlation from summed eval sums."""
  del outputs
  n = float(sums["weight_sum"])
  out = {"loss": float(sums["loss_sum"]) / n, "accuracy": float(sums["correct_sum"]) / n,
         "num_examples": int(n)}
  if "confusion" in sums:
    confusion = np.asarray(sums["confusion"], np.float64)
    out["f1_macro"] = metrics_lib.f1_macro(confusion)
    out["matthews"] = metrics_lib.matthews_corrcoef(confusion)
  return out


def _tower_head_flops(model: nn.Module) -> float:
  """Forward + backward matmul FLOPs per example of a two-tower head (its MLP over
  ``[u, v, u*v, u-v]``) beyond the ``hidden x classes`` head that the loop counts with each
  tower's encoder pass; 0 for one tower."""
  if model.towers == 1:
    return 0.0
  d, m, c = model.encoder.hidden_size, model.encoder.mlp_dim, model.num_classes
  mlp = 2 * (4 * d * m + m * (m // 2) + (m // 2) * c)
  return 3.0 * (mlp - model.towers * 2 * d * c)


def _classifier_flops(config: ml_collections.ConfigDict, info: DatasetInfo,
                      model: nn.Module) -> float:
  """Forward + backward FLOPs per example: one encoder pass per tower, and the head."""
  batch = int(config.train.batch_size) * info.towers
  encoder = train_flops_per_step(model.encoder, model.num_classes, info.max_length, batch)
  return encoder * info.towers / batch + _tower_head_flops(model)


def _classifier(config: ml_collections.ConfigDict, info: DatasetInfo, num_classes: int):
  return build_model(_model_name(config, "classifier"), config.model,
                     vocab_size=model_vocab(config, info)[0], max_length=info.max_length,
                     num_classes=num_classes, pad_id=info.pad_id, towers=info.towers)


@register_task("classification", metric="accuracy", mode="max")
def classification_task(config: ml_collections.ConfigDict, info: DatasetInfo) -> Task:
  """Sequence, sentence-pair or two-tower classification into ``info.num_classes`` classes."""
  model = _classifier(config, info, info.num_classes)
  kwargs_fn = _model_kwargs(info, model.encoder)

  def eval_fn(state: TrainState, batch: Batch) -> Sums:
    return classification_eval_sums(_forward(state, batch, kwargs_fn), batch["label"],
                                    batch["weight"])

  return Task(
      name="classification", model=model, encoder=model.encoder,
      loss_fn=classification_loss_fn(label_smoothing=config.train.get("label_smoothing", 0.0),
                                      model_kwargs=kwargs_fn),
      eval_fn=eval_fn, finalize=classification_metrics, init_batch=_init_batch(info),
      flops_per_example=_classifier_flops(config, info, model),
      tokens_per_example=info.max_length * info.towers, metric="accuracy", metric_mode="max",
      train_metrics=("accuracy",), summary=("accuracy", "f1_macro", "matthews", "loss"))


# ---------------------------------------------------------------------------------------
# regression


def regression_targets(labels: jax.Array) -> jax.Array:
  """float32 targets from the batch's ``label``: float32 for ``label_type='float'`` data,
  integer class ids (used as numbers) otherwise."""
  return labels.astype(jnp.float32)


def regression_metrics(sums: Sums, outputs: Outputs | None) -> dict[str, float]:
  """MSE, and Pearson and Spearman correlations of the gathered predictions (float64)."""
  n = float(sums["weight_sum"])
  out = {"loss": float(sums["loss_sum"]) / n, "num_examples": int(n)}
  out["mse"] = out["loss"]
  if outputs is not None:
    out["pearson"] = metrics_lib.pearson(outputs["prediction"], outputs["target"])
    out["spearman"] = metrics_lib.spearman(outputs["prediction"], outputs["target"])
  return out


@register_task("regression", metric="pearson", mode="max")
def regression_task(config: ml_collections.ConfigDict, info: DatasetInfo) -> Task:
  """One real-valued output per sequence (e.g. STS-B similarity), mean squared error."""
  model = _classifier(config, info, 1)
  kwargs_fn = _model_kwargs(info, model.encoder)

  def loss_fn(apply_fn, params, batch, rng):
    extra = kwargs_fn(batch) if kwargs_fn is not None else {}
    pred = apply_fn({"params": params}, batch["inputs"], deterministic=False,
                    rngs={"dropout": rng}, **extra)[:, 0]
    return jnp.mean(jnp.square(pred - regression_targets(batch["label"]))), {}

  def eval_fn(state: TrainState, batch: Batch):
    pred = _forward(state, batch, kwargs_fn)[:, 0]
    target = regression_targets(batch["label"])
    weight = batch["weight"].astype(jnp.float32)
    sums = {"loss_sum": jnp.sum(jnp.square(pred - target) * weight), "weight_sum": jnp.sum(weight)}
    return sums, {"prediction": pred, "target": target, "weight": weight}

  return Task(name="regression", model=model, encoder=model.encoder, loss_fn=loss_fn,
              eval_fn=eval_fn, finalize=regression_metrics, init_batch=_init_batch(info),
              flops_per_example=_classifier_flops(config, info, model),
              tokens_per_example=info.max_length * info.towers, metric="pearson",
              metric_mode="max", gathers_outputs=True, summary=("pearson", "spearman", "mse"))


# ---------------------------------------------------------------------------------------
# masked language modelling


def _masking_options(config: ml_collections.ConfigDict, info: DatasetInfo) -> dict:
  vocab_size, mask_id = model_vocab(config, info)
  if mask_id < 0:
    raise ValueError(f"config.task.name='masked_lm' needs a dataset with a mask token; "
                     f"{info.name!r} has none (use a text dataset, e.g. 'stdlib_corpus', or "
                     "set config.self_pretrain.num_steps, which adds one)")
  special = tuple(getattr(info, "special_ids", ())) or (info.pad_id,)
  return dict(vocab_size=vocab_size, mask_id=mask_id,
              special_ids=tuple(sorted(set(special) | {info.pad_id})),
              rate=float(task_config(config).get("mask_rate", 0.15)))


def _row_keys(base: jax.Array, ids: jax.Array) -> jax.Array:
  """One PRNG key per row derived from the row's token ids (a position-weighted hash).

  Eval masking then depends only on each example, not on its batch or device.
  """
  weights = jnp.arange(1, ids.shape[-1] + 1, dtype=jnp.uint32) * jnp.uint32(2654435761)
  hashes = jnp.sum(ids.astype(jnp.uint32) * weights, axis=-1)  # wraps modulo 2**32
  return jax.vmap(lambda h: jax.random.fold_in(base, h))(hashes)


def sequence_metrics(sums: Sums, outputs: Outputs | None = None) -> dict[str, float]:
  """Token loss, accuracy and perplexity; bits per byte when the data counts bytes."""
  del outputs
  tokens = max(float(sums["token_sum"]), 1.0)
  loss = float(sums["loss_sum"]) / tokens
  out = {"loss": loss, "accuracy": float(sums["correct_sum"]) / tokens,
         "perplexity": float(np.exp(min(loss, 80.0))),
         "num_examples": int(float(sums["weight_sum"])), "num_tokens": int(tokens)}
  if float(sums.get("byte_sum", 0.0)) > 0:
    out["bits_per_byte"] = float(sums["loss_sum"]) / np.log(2.0) / float(sums["byte_sum"])
  return out


#: Masked-LM eval metrics over the masked tokens (the same token metrics).
masked_lm_metrics = sequence_metrics


@register_task("masked_lm", metric="accuracy", mode="max")
def masked_lm_task(config: ml_collections.ConfigDict, info: DatasetInfo) -> Task:
  """BERT masked-language-model pretraining (15% of tokens, 80/10/10) with a tied head.

  Two-tower data (``info.towers == 2``) is read as one row per document.
  """
  masking = _masking_options(config, info)
  towers = info.towers  # two-tower data: each document is a row of its own

  def rows(batch: Batch) -> tuple[jax.Array, jax.Array | None]:
    ids = batch["inputs"].reshape(-1, info.max_length)
    weight = batch.get("weight")
    return ids, None if weight is None else jnp.repeat(weight, towers)

  model = build_model(_model_name(config, "masked_lm"), config.model,
                      vocab_size=masking["vocab_size"], max_length=info.max_length,
                      pad_id=info.pad_id)
  enc = model.config
  eval_seed = int(task_config(config).get("eval_mask_seed", 0))

  def token_stats(logits, targets, weights):
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
    return nll * weights, correct * weights

  def packing(batch: Batch) -> Batch:
    """Packed rows' segment ids and positions (``config.data.pack``), for the encoder."""
    return {k: batch[k].reshape(-1, info.max_length) for k in ("segment_ids", "positions")
            if k in batch}

  def loss_fn(apply_fn, params, batch, rng):
    mask_rng, dropout_rng = jax.random.split(rng)
    inputs, targets, weights = bert_masking(mask_rng, rows(batch)[0], **masking)
    logits = apply_fn({"params": params}, {"inputs": inputs, **packing(batch)},
                      deterministic=False, rngs={"dropout": dropout_rng})
    nll, correct = token_stats(logits, targets, weights)
    count = jnp.maximum(jnp.sum(weights), 1.0)
    return jnp.sum(nll) / count, {"accuracy": jnp.sum(correct) / count}

  def eval_fn(state: TrainState, batch: Batch) -> Sums:
    ids, row_weight = rows(batch)
    keys = _row_keys(jax.random.PRNGKey(eval_seed), ids)
    inputs, targets, weights = jax.vmap(
        lambda k, row: bert_masking(k, row, **masking))(keys, ids)
    weights = weights * row_weight.astype(jnp.float32)[:, None]
    logits = state.apply_fn({"params": state.params}, {"inputs": inputs, **packing(batch)},
                            deterministic=True)
    nll, correct = token_stats(logits, targets, weights)
    return {"loss_sum": jnp.sum(nll), "correct_sum": jnp.sum(correct),
            "token_sum": jnp.sum(weights), "weight_sum": jnp.sum(batch["weight"])}

  d = enc.hidden_size
  # Transform (d x d) and tied output (d x vocab) at every position, forward + backward.
  head = 3.0 * towers * info.max_length * (2 * d * d + 2 * d * masking["vocab_size"])
  batch = int(config.train.batch_size) * towers
  encoder = train_flops_per_step(enc, 0, info.max_length, batch) * towers / batch
  return Task(name="masked_lm", model=model, encoder=enc, loss_fn=loss_fn, eval_fn=eval_fn,
              finalize=masked_lm_metrics, init_batch=_init_batch(info),
              flops_per_example=encoder + head, tokens_per_example=info.max_length * towers,
              metric="accuracy", metric_mode="max", train_metrics=("accuracy",),
              summary=("loss", "accuracy", "perplexity"))


# ---------------------------------------------------------------------------------------
# language modelling and sequence-to-sequence


def _require_features(info: DatasetInfo, task: str, names: tuple[str, ...]) -> None:
  missing = [n for n in names if n not in info.features]
  if missing:
    raise ValueError(f"config.task.name={task!r} needs dataset features {list(names)}; "
                     f"{info.name!r} has {sorted(info.features)} (missing {missing})")


def _token_stats(logits: jax.Array, targets: jax.Array, weights: jax.Array, *,
                 label_smoothing: float = 0.0) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per-token ``(loss, nll, correct)``, each times ``weights`` (float32 ``[batch, len]``).

  ``loss`` is the training loss (label-smoothed cross-entropy), ``nll`` the unsmoothed
  negative log-likelihood (perplexity, bits per byte).
  """
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
  loss = nll
  if label_smoothing:
    loss = (1.0 - label_smoothing) * nll - label_smoothing * jnp.mean(logp, axis=-1)
  correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
  return loss * weights, nll * weights, correct * weights


def _decoder_flops(enc: EncoderConfig, length: int, vocab: int, batch: int) -> float:
  """Forward + backward FLOPs per sequence of a decoder stack and its vocabulary head."""
  stack = train_flops_per_step(enc, 0, length, batch) / batch
  return stack + 3.0 * 2 * length * enc.hidden_size * vocab


def _target_weights(batch: Batch, pad_id: int) -> jax.Array:
  """float32 ``[batch, len]``: 1 for target tokens that count (not padding, and inside a
  packed segment when the batch has ``segment_ids``)."""
  weights = batch["targets"] != pad_id
  if "segment_ids" in batch:
    weights &= batch["segment_ids"] > 0
  return weights.astype(jnp.float32)


def _next_token_fns(pad_id: int, smoothing: float) -> tuple[LossFn, Callable]:
  """``(loss_fn, eval_fn)`` of token cross-entropy on ``batch['targets']`` of a model that
  maps the batch dict to logits ``[batch, len, vocab]`` (causal LM and seq2seq alike).

  Eval sums: ``loss_sum`` (unsmoothed NLL), ``correct_sum``, ``token_sum``,
  ``weight_sum`` (examples), and ``byte_sum`` when the batch counts ``num_bytes``.
  """
  def loss_fn(apply_fn, params, batch, rng):
    logits = apply_fn({"params": params}, batch, deterministic=False, rngs={"dropout": rng})
    weights = _target_weights(batch, pad_id)
    loss, _, correct = _token_stats(logits, batch["targets"], weights,
                                    label_smoothing=smoothing)
    count = jnp.maximum(jnp.sum(weights), 1.0)
    return jnp.sum(loss) / count, {"accuracy": jnp.sum(correct) / count}

  def eval_fn(state: TrainState, batch: Batch) -> Sums:
    logits = state.apply_fn({"params": state.params}, batch, deterministic=True)
    row = batch["weight"].astype(jnp.float32)
    weights = _target_weights(batch, pad_id) * row[:, None]
    _, nll, correct = _token_stats(logits, batch["targets"], weights)
    sums = {"loss_sum": jnp.sum(nll), "correct_sum": jnp.sum(correct),
            "token_sum": jnp.sum(weights), "weight_sum": jnp.sum(row)}
    if "num_bytes" in batch:
      sums["byte_sum"] = jnp.sum(batch["num_bytes"].astype(jnp.float32) * row)
    return sums
  return loss_fn, eval_fn


@register_task("causal_lm", metric="loss", mode="min")
def causal_lm_task(config: ml_collections.ConfigDict, info: DatasetInfo) -> Task:
  """Next-token prediction (GPT): cross-entropy over every target token.

  Batches carry ``inputs`` and ``targets`` (the next tokens, ``pad_id`` where there is
  none), optionally ``segment_ids`` and ``positions`` (packed rows: attention and positions
  stay within each document) and ``num_bytes`` (UTF-8 bytes of each row's targets, for
  bits per byte). Eval: loss (nats per token), token accuracy, perplexity, bits per byte.
  """
  _require_features(info, "causal_lm", ("inputs", "targets"))
  model = build_model(_model_name(config, "causal_lm"), config.model,
                      vocab_size=info.vocab_size, max_length=info.max_length,
                      pad_id=info.pad_id)
  loss_fn, eval_fn = _next_token_fns(info.pad_id,
                                     float(config.train.get("label_smoothing", 0.0)))

  enc = model.config
  return Task(
      name="causal_lm", model=model, encoder=enc, loss_fn=loss_fn, eval_fn=eval_fn,
      finalize=sequence_metrics, init_batch=_init_batch(info),
      flops_per_example=_decoder_flops(enc, info.max_length, info.vocab_size,
                                       int(config.train.batch_size)),
      tokens_per_example=info.max_length, metric="loss", metric_mode="min",
      train_metrics=("accuracy",), summary=("loss", "perplexity", "bits_per_byte", "accuracy"),
      decoder=True)


@register_task("seq2seq", metric="loss", mode="min")
def seq2seq_task(config: ml_collections.ConfigDict, info: DatasetInfo) -> Task:
  """Sequence-to-sequence (translation, summarisation): teacher-forced cross-entropy.

  Batches carry ``inputs`` (source ids) and ``targets`` (target ids ending in EOS,
  ``pad_id`` after); the model shifts ``targets`` right to form its decoder inputs. Eval:
  teacher-forced loss, token accuracy and perplexity; decoded metrics (exact match, BLEU,
  ROUGE-L) come from a ``decode`` evaluator (``config.evals``).
  """
  _require_features(info, "seq2seq", ("inputs", "targets"))
  target_length = info.features["targets"].shape[-1]
  model = build_model(_model_name(config, "encoder_decoder"), config.model,
                      vocab_size=info.vocab_size, max_length=info.max_length,
                      pad_id=info.pad_id, target_length=target_length,
                      decoder_start_id=info.bos_id if info.bos_id >= 0 else None)
  loss_fn, eval_fn = _next_token_fns(info.pad_id,
                                     float(config.train.get("label_smoothing", 0.0)))

  enc = model.config
  batch = int(config.train.batch_size)
  d, s, t = enc.hidden_size, info.max_length, target_length
  # Encoder and decoder stacks, the decoder's cross-attention (query/output projections
  # over the target, key/value over the source, scores and weighted sum), and the head.
  cross = 3.0 * model.decoder_config.num_layers * (2 * 2 * t * d * d + 2 * 2 * s * d * d
                                                  + 2 * 2 * t * s * d)
  flops = (train_flops_per_step(enc, 0, s, batch) / batch + cross
           + _decoder_flops(model.decoder_config, t, info.vocab_size, batch))
  return Task(
      name="seq2seq", model=model, encoder=enc, loss_fn=loss_fn, eval_fn=eval_fn,
      finalize=sequence_metrics, init_batch=_init_batch(info), flops_per_example=flops,
      tokens_per_example=s + t, metric="loss", metric_mode="min", train_metrics=("accuracy",),
      summary=("loss", "accuracy", "perplexity"), decoder=True)
