r"""Code summarisation: an encoder-decoder writes a function's first docstring sentence.

Each standard-library function's source with its docstring removed -> the first sentence
of that docstring (``code_summarization``, split by module, so test modules are unseen). The
original Transformer's encoder-decoder (pre-LN here, shared embeddings) is trained with
teacher forcing; a ``decode`` evaluator generates summaries with beam search and scores
ROUGE-L, BLEU and exact match. Needs no input and no network.

Launch (CPU; see experiments/generation/README.md for the measured scores):

  python launch.py --config configs/code_summarization.py --workdir runs/code_sum
  python experiments/generation/summarization_baseline.py   # "the function's name in words"

Options (``key=value`` separated by commas): ``steps``, ``layers``, ``width``,
``max_length`` (source tokens: the signature and the start of the body), ``target_length``,
``vocab``, ``batch``, ``lr``, ``beams``, ``decode_examples`` (0 = the whole test split),
``smoke``.
"""

from __future__ import annotations

import ml_collections

from attnjax.config_args import parse_arg
from configs import default as default_config


def seq2seq_model(config: ml_collections.ConfigDict, *, layers: int, width: int) -> None:
  """Sets ``config.model`` to a pre-LN encoder-decoder (shared by the seq2seq configs)."""
  config.model.name = "encoder_decoder"      # attnjax.models.MODELS
  config.model.num_layers = layers           # encoder blocks
  config.model.decoder_layers = layers       # decoder blocks
  config.model.hidden_size = width
  config.model.num_heads = max(1, width // 64)
  config.model.mlp_dim = 4 * width
  config.model.pre_layer_norm = True
  config.model.position = "learned"
  config.model.add_cls_token = False
  config.model.share_embeddings = True       # one token table for source and target
  config.model.tie_embeddings = True         # and for the output projection
  config.model.dropout_rate = 0.1


def decode_evals(config: ml_collections.ConfigDict, *, every: int, beams: int,
                 num_examples: int) -> None:
  """The teacher-forced metrics evaluator and a beam-search ``decode`` evaluator."""
  config.evals = ml_collections.ConfigDict()
  config.evals.eval = dict(type="metrics", split=config.data.eval_split,
                           batch_size=config.train.eval_batch_size, every=every)
  config.evals.decode = dict(type="decode", split=config.data.eval_split, batch_size=64,
                             every=config.train.num_steps, method="beam" if beams > 1 else "greedy",
                             num_beams=max(beams, 1), length_penalty=1.0,
                             num_examples=num_examples)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the code summarisation experiment (see the module docstring for ``arg``)."""
  args = parse_arg(arg, steps=2500, layers=2, width=192, max_length=64, target_length=24,
                   vocab=4096, batch=32, lr=1e-3, beams=4, decode_examples=0, smoke=False)
  config = default_config.get_config()
  config.name = "code_summarization"

  config.data.name = "code_summarization"            # function (no docstring) -> first sentence
  config.data.tokenizer = f"bpe:{args['vocab']}"     # byte-level BPE, shared by both sides
  config.data.max_length = args["max_length"]        # source tokens (longer functions: cut)
  config.data.target_length = args["target_length"]  # summary tokens, EOS included
  config.data.eval_split = "test"                    # held-out modules

  config.task.name = "seq2seq"
  seq2seq_model(config, layers=args["layers"], width=args["width"])

  config.optimizer.learning_rate = args["lr"]
  config.optimizer.warmup_steps = max(1, args["steps"] // 20)
  config.optimizer.weight_decay = 0.05

  config.train.num_steps = args["steps"]
  config.train.batch_size = args["batch"]
  config.train.eval_batch_size = 128
  config.train.label_smoothing = 0.1
  config.train.log_every = max(1, min(50, args["steps"] // 30))
  config.train.eval_every = max(1, args["steps"] // 5)
  config.train.checkpoint_every = max(1, args["steps"] // 5)
  config.train.keep_best_by = "loss"
  config.train.best_mode = "min"

  if args["smoke"]:
    config.data.tokenizer = "bpe:512"
    config.data.max_length, config.data.target_length = 48, 12
    config.model.num_layers = config.model.decoder_layers = 1
    config.model.hidden_size, config.model.num_heads, config.model.mlp_dim = 32, 2, 64
    config.train.num_steps = 3
    config.train.batch_size = 4
    config.train.log_every = config.train.eval_every = config.train.checkpoint_every = 3
    config.optimizer.warmup_steps = 1
    args["decode_examples"], args["beams"] = 8, 2
  decode_evals(config, every=config.train.eval_every, beams=args["beams"],
               num_examples=args["decode_examples"])
  return config
