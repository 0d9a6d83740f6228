r"""Code generation: a GPT-style decoder trained on the Python standard library's sources.

The installed interpreter's standard-library ``*.py`` files (``code_lm``: split by file with
a fixed seed, a byte-level BPE trained on the train files, documents packed into rows with
segment ids and per-document positions) train a causal language model; the test split's
bits per byte are reported. Needs no input and no network.

Launch (CPU; see experiments/generation/README.md for the measured time and curve):

  python launch.py --config configs/code_lm.py --workdir runs/code_lm
  python -m attnjax.generate --checkpoint runs/code_lm --prompt "def " --max_new_tokens 64

Options (``key=value`` separated by commas): ``steps``, ``layers``, ``width``,
``max_length`` (tokens per packed row), ``vocab`` (BPE size), ``batch``, ``lr``,
``kernel`` (any decodable attention kernel), ``position`` (learned | rotary), ``smoke``.
"""

from __future__ import annotations

import ml_collections

from attnjax.config_args import attention_config, parse_arg
from configs import default as default_config


def lm_model(config: ml_collections.ConfigDict, *, layers: int, width: int,
             position: str, kernel: str) -> None:
  """Sets ``config.model`` to a pre-LN GPT-style stack (shared by the LM configs)."""
  config.model.name = "causal_lm"            # attnjax.models.MODELS: the decoder-only LM
  config.model.num_layers = layers
  config.model.hidden_size = width
  config.model.num_heads = max(1, width // 64)
  config.model.mlp_dim = 4 * width
  config.model.pre_layer_norm = True         # GPT-2's layout
  config.model.position = position           # learned (GPT-2) | rotary
  config.model.add_cls_token = False         # a decoder has no CLS vector
  config.model.dropout_rate = 0.0            # one pass over a small corpus: no dropout
  config.model.tie_embeddings = True         # output projection = token table (GPT-2)
  config.model.attention = attention_config(kernel)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the code LM experiment (see the module docstring for ``arg``)."""
  args = parse_arg(arg, steps=1500, layers=3, width=192, max_length=128, vocab=4096,
                   batch=16, lr=1e-3, kernel="dot_product", position="learned", smoke=False)
  config = default_config.get_config()
  config.name = "code_lm"

  config.data.name = "code_lm"                       # stdlib sources, split by file
  config.data.tokenizer = f"bpe:{args['vocab']}"     # byte-level BPE trained on the train files
  config.data.max_length = args["max_length"]        # tokens per packed row
  config.data.eval_split = "test"                    # held-out files

  config.task.name = "causal_lm"                     # next-token loss, perplexity, bits per byte
  lm_model(config, layers=args["layers"], width=args["width"], position=args["position"],
           kernel=args["kernel"])

  config.optimizer.learning_rate = args["lr"]
  config.optimizer.warmup_steps = max(1, args["steps"] // 15)
  config.optimizer.weight_decay = 0.1

  config.train.num_steps = args["steps"]
  config.train.batch_size = args["batch"]
  config.train.eval_batch_size = 64
  config.train.log_every = max(1, min(50, args["steps"] // 30))
  config.train.eval_every = max(1, args["steps"] // 6)
  config.train.checkpoint_every = max(1, args["steps"] // 6)
  config.train.keep_best_by = "loss"                 # the task's metric: lower is better
  config.train.best_mode = "min"

  if args["smoke"]:
    config.data.tokenizer = "bpe:512"
    config.data.max_length = 32
    config.model.num_layers, config.model.hidden_size = 1, 32
    config.model.num_heads, config.model.mlp_dim = 2, 64
    config.train.num_steps = 3
    config.train.batch_size = 4
    config.train.eval_batch_size = 256
    config.train.log_every = config.train.eval_every = config.train.checkpoint_every = 3
    config.optimizer.warmup_steps = 1
  return config
