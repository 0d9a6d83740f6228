"""Shared skeleton of the Long Range Arena configs (configs/lra/<task>.py).

Each task file states the LRA paper's model and budget for ``size=base`` (from the
LRA repository's ``lra_benchmarks/<task>/configs/base_*_config.py``), a CPU-sized
model on a reduced task for ``size=small``, and a seconds-long check for
``size=smoke``. The kernel only changes how attention weights are computed, never
the parameters, so every kernel gets the same parameter budget
(``tests/configs/test_lra_configs.py`` pins that).

LRA's ListOps and Text used ``constant * linear_warmup * rsqrt_decay`` with
constant 0.05: the rate peaks at ``0.05 / sqrt(warmup)`` at the end of warmup. This
codebase has no rsqrt schedule, so those configs take that peak with a cosine
decay (:func:`rsqrt_peak`).
"""

from __future__ import annotations

import math

import ml_collections

from attnjax import kernels

from attnjax.config_args import parse_arg
from configs import default as default_config

SIZES = ("base", "small", "smoke")


def parse(arg: str | None, **extra) -> dict:
  """``kernel=<name>,size=base|small|smoke`` plus task-specific keys; checks ``size``.

  ``kernels=a+b+c`` (used by ``get_sweep``) restricts a sweep to those kernels;
  ``self_pretrain=<steps>`` masked-LM pretrains on the task's own inputs first
  (:func:`finish`); ``self_pretrains=0+400`` sweeps that budget (:func:`kernel_sweep`).
  """
  args = parse_arg(arg, kernel="dot_product", size="base", kernels="", self_pretrain=0,
                   self_pretrains="", **extra)
  if args["self_pretrain"] < 0:
    raise ValueError(f"self_pretrain={args['self_pretrain']}; expected a number of steps >= 0")
  if args["size"] not in SIZES:
    raise ValueError(f"size={args['size']!r}; expected one of {SIZES}")
  return args


def rsqrt_peak(constant: float, warmup: int) -> float:
  """Peak of LRA's ``constant * linear_warmup * rsqrt_decay`` schedule."""
  return constant / math.sqrt(warmup)


def make_config(*, name: str, dataset: str, kernel: str, num_layers: int, hidden_size: int,
                num_heads: int, mlp_dim: int, dropout_rate: float,
                attention_dropout_rate: float, position: str, pooling: str,
                learning_rate: float, warmup_steps: int, weight_decay: float,
                grad_clip_norm: float, num_steps: int, batch_size: int,
                eval_every: int, eval_split: str = "test") -> ml_collections.ConfigDict:
  """One LRA experiment; the arguments are the fields that differ between tasks and sizes.

  Starts from ``configs/default.py`` so every field the train loop knows (parallelism,
  checkpointing, NaN policy, ...) keeps its documented default, then sets the LRA ones.
  """
  config = default_config.get_config(f"kernel={kernel}")
  config.name = name                          # run name, used for the default --workdir
  config.seed = 0                             # initialisation, dropout and data order

  config.data.name = dataset                  # a name registered in attnjax.data
  config.data.eval_split = eval_split         # split used for periodic and final evaluation

  config.model.preset = ""                    # sizes below, as in the LRA configs
  config.model.num_layers = num_layers        # encoder blocks
  config.model.hidden_size = hidden_size      # LRA emb_dim (= qkv_dim except Pathfinder)
  config.model.num_heads = num_heads          # attention heads
  config.model.mlp_dim = mlp_dim              # feed-forward hidden width
  config.model.dropout_rate = dropout_rate    # embeddings and residual branches
  config.model.attention_dropout_rate = attention_dropout_rate  # on attention weights
  if not getattr(kernels.get_kernel(kernel), "supports_dropout", True):
    # Linear, Performer, Nystromformer, Reformer, Sinkhorn: no probabilities to drop.
    config.model.attention_dropout_rate = 0.0
  config.model.pre_layer_norm = True          # pre-LN blocks, as LRA's encoder
  config.model.position = position            # learned | sinusoidal (LRA learn_pos_emb)
  config.model.add_cls_token = pooling == "cls"  # CLS vector in front, for CLS pooling
  config.model.pooling = pooling              # cls | mean, as LRA's classifier_pool

  config.optimizer.name = "adamw"             # LRA: Adam with decoupled weight decay
  config.optimizer.learning_rate = learning_rate  # peak learning rate
  config.optimizer.schedule = "cosine"        # after linear warmup
  config.optimizer.warmup_steps = warmup_steps  # linear warmup from 0
  config.optimizer.end_lr_factor = 0.0        # final learning rate / peak
  config.optimizer.weight_decay = weight_decay  # decoupled, matrices only
  config.optimizer.b1 = 0.9
  config.optimizer.b2 = 0.98                  # as LRA's train.py
  config.optimizer.eps = 1e-9                 # as LRA's train.py
  config.optimizer.grad_clip_norm = grad_clip_norm  # global-norm clipping; 0 disables

  config.train.num_steps = num_steps          # optimizer steps
  config.train.batch_size = batch_size        # global batch size
  config.train.eval_batch_size = 256          # global eval batch size
  config.train.log_every = max(1, min(50, eval_every))  # steps between train metric records
  config.train.eval_every = eval_every        # steps between evaluations (and at the end)
  config.train.checkpoint_every = eval_every  # steps between checkpoints (and at the end)
  return config


def finish(args: dict, config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Applies what every task's arguments share: ``self_pretrain`` and ``size=smoke``.

  ``self_pretrain=N``: N steps of masked-LM on the task's own training inputs in
  ``<workdir>/self_pretrain``, then the task's training from that encoder (Amos, Berant
  and Gupta 2023, "Never Train from Scratch"; ``config.self_pretrain`` in configs/default.py).
  """
  config.self_pretrain.num_steps = args["self_pretrain"]
  if args["self_pretrain"]:
    config.name = f"{config.name}_sp{args['self_pretrain']}"
  return smoke(config) if args["size"] == "smoke" else config


def smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks a config to a few-second check: 3 steps, one tiny block."""
  config.train.num_steps = 3
  config.train.batch_size = 8
  config.train.eval_batch_size = 64
  config.train.log_every = 1
  config.train.eval_every = 3
  config.train.checkpoint_every = 3
  config.optimizer.warmup_steps = 1
  config.model.num_layers = 1
  config.model.hidden_size = 16
  config.model.num_heads = 2
  config.model.mlp_dim = 32
  return config


def kernel_sweep(arg: str | None = None) -> list[dict]:
  """One point per kernel: ``kernels=a+b+c`` in ``arg``, else every registered kernel.

  ``self_pretrains=0+400`` crosses the kernels with those self-pretraining budgets (steps
  of masked-LM before training; 0 = from scratch), e.g.
  ``listops.py:size=small,kernels=dot_product,self_pretrains=0+400``.
  """
  from attnjax import sweep  # pylint: disable=import-outside-toplevel
  # Only the sweep keys matter here; get_config checks the whole argument.
  items = dict(item.partition("=")[::2] for item in (arg or "").split(",") if item)
  chosen = [k for k in items.get("kernels", "").split("+") if k]
  for name in chosen:
    kernels.get_kernel(name)  # an unknown name lists the known ones
  points = sweep.axis("model.attention.kernel", chosen or kernels.list_kernels())
  budgets = [b for b in items.get("self_pretrains", "").split("+") if b]
  if budgets:
    if not all(b.isdigit() for b in budgets):
      raise ValueError(f"self_pretrains={items['self_pretrains']!r}; expected step counts "
                       "joined by '+', e.g. 0+400")
    points = sweep.product(points, sweep.axis("self_pretrain.num_steps",
                                              [int(b) for b in budgets]))
  return points
