r"""Masked-LM pretraining of a small BERT on the offline standard-library docstring corpus.

BERT masking (15% of tokens, 80/10/10) inside the train step, output embeddings tied, a
WordPiece vocabulary trained on the corpus, documents packed into full rows. Needs no input:
the corpus is read from the installed Python's standard library (``stdlib_corpus``).

Launch (CPU):

  python launch.py --config configs/pretrain_mlm.py --workdir runs/mlm
  python launch.py --config configs/pretrain_mlm.py:size=tiny,steps=600 --workdir runs/mlm_tiny

then fine-tune from it (the fine-tuning config reads the run's model and tokenizer):

  python launch.py --config configs/finetune.py:init=workdir:runs/mlm --workdir runs/ft_mlm

Options (``key=value`` separated by commas): ``size`` (tiny | small), ``steps``,
``vocab`` (WordPiece vocabulary size), ``max_length``, ``corpus`` (a registered corpus, or a
comma-free path list is not supported: register files with ``config.data.files``), ``smoke``.
"""

from __future__ import annotations

import ml_collections

from attnjax.config_args import parse_arg
from configs import default as default_config

SIZES = {  # num_layers, hidden_size, num_heads, mlp_dim
    "tiny": (2, 128, 2, 512),
    "small": (4, 256, 4, 1024),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the MLM pretraining experiment (see the module docstring for ``arg``)."""
  args = parse_arg(arg, size="small", steps=3000, vocab=8000, max_length=128,
                   batch=32, lr=5e-4, smoke=False)
  if args["size"] not in SIZES:
    raise ValueError(f"size={args['size']!r}; expected one of {sorted(SIZES)}")
  config = default_config.get_config()
  config.name = "pretrain_mlm"

  config.data.name = "stdlib_corpus"                          # offline docstring corpus, packed
  config.data.tokenizer = f"wordpiece:{args['vocab']}"        # trained on the corpus's train split
  config.data.max_length = args["max_length"]                 # tokens per packed row
  config.data.eval_split = "test"                             # 5% of the docstrings, held out

  config.task.name = "masked_lm"
  config.task.mask_rate = 0.15                                # BERT: 15% selected, 80/10/10
  config.task.eval_mask_seed = 0                              # eval masking depends only on each row

  layers, hidden, heads, mlp = SIZES[args["size"]]
  config.model.num_layers = layers
  config.model.hidden_size = hidden
  config.model.num_heads = heads
  config.model.mlp_dim = mlp
  # BERT's layout, so the encoder exports to Hugging Face and fine-tunes like MiniLM.
  config.model.pre_layer_norm = False
  config.model.embedding_layer_norm = True
  config.model.type_vocab_size = 2
  config.model.add_cls_token = False                          # the tokenizer writes [CLS]
  config.model.layer_norm_epsilon = 1e-12
  config.model.exact_gelu = True
  config.model.pooling = "mean"                               # used by fine-tuning configs
  config.model.dropout_rate = 0.1

  config.optimizer.learning_rate = args["lr"]
  config.optimizer.warmup_steps = max(1, args["steps"] // 20)
  config.optimizer.weight_decay = 0.01

  config.train.num_steps = args["steps"]
  config.train.batch_size = args["batch"]
  config.train.eval_batch_size = 64
  config.train.log_every = max(1, min(50, args["steps"] // 20))
  config.train.eval_every = max(1, args["steps"] // 5)
  config.train.checkpoint_every = max(1, args["steps"] // 5)
  config.train.keep_best_by = ""                              # keep the latest (what fine-tuning reads)

  if args["smoke"]:
    config.data.tokenizer = "wordpiece:1000"
    config.data.max_length = 32
    config.model.num_layers, config.model.hidden_size = 1, 32
    config.model.num_heads, config.model.mlp_dim = 2, 64
    config.train.num_steps = 3
    config.train.batch_size = 8
    config.train.log_every = config.train.eval_every = config.train.checkpoint_every = 3
    config.optimizer.warmup_steps = 1
  return config
