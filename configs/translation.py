r"""Machine translation with the encoder-decoder (the article's first application).

Data (``data=``):

* ``ted`` (default): TFDS ``ted_hrlr_translate/pt_to_en`` (Portuguese -> English), when the
  user has prepared it (``tfds build ted_hrlr_translate/pt_to_en`` on a machine with a
  network, then ``--config.data.data_dir``);
* ``wmt14``: TFDS ``wmt14_translate/de-en`` (German -> English), likewise;
* ``files``: the user's parallel files, ``files=train.tsv+test.tsv`` with columns
  ``source``/``target`` (``--config.data.source_column`` / ``target_column`` rename them);
* ``addition``: a generated task with an exact answer ("123+45" -> "168"), offline.

Launch:

  python launch.py --config configs/translation.py:data=ted --workdir runs/ted
  python launch.py --config configs/translation.py:data=addition --workdir runs/addition
  python launch.py --config configs/translation.py:smoke --workdir runs/mt_smoke   # offline

A ``decode`` evaluator reports BLEU (sacrebleu), ROUGE-L and exact match at the end.

Options (``key=value``): ``data``, ``files``, ``steps``, ``layers``, ``width``,
``max_length``, ``vocab``, ``batch``, ``lr``, ``beams``, ``smoke``.
"""

from __future__ import annotations

import ml_collections

from attnjax.config_args import parse_arg
from configs import default as default_config
from configs.code_summarization import decode_evals, seq2seq_model

_CATALOG = {"ted": "ted_hrlr_translate/pt_to_en", "wmt14": "wmt14_translate/de-en"}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the translation experiment (see the module docstring for ``arg``)."""
  args = parse_arg(arg, data="ted", files="", steps=20000, layers=6, width=512,
                   max_length=128, vocab=8000, batch=64, lr=5e-4, beams=4, smoke=False)
  if args["smoke"]:
    args["data"] = "addition"
  config = default_config.get_config()
  config.name = f"translation_{args['data']}"
  data = args["data"]
  if data in _CATALOG:
    config.data.name = _CATALOG[data]
    config.data.tokenizer = f"bpe:{args['vocab']}"
    config.data.max_length = config.data.target_length = args["max_length"]
    config.data.eval_split = "test"
  elif data == "files":
    if not args["files"]:
      raise ValueError("configs/translation.py: data=files needs files=<train>+<test>")
    train, _, test = args["files"].partition("+")
    config.data.name = "translation_files"
    config.data.files = {"train": train, **({"test": test} if test else {})}
    config.data.source_column, config.data.target_column = "source", "target"
    config.data.tokenizer = f"bpe:{args['vocab']}"
    config.data.max_length = config.data.target_length = args["max_length"]
    config.data.eval_split = "test" if test else "train"
  elif data == "addition":
    config.data.name = "addition"
    config.data.eval_split = "test"
  else:
    raise ValueError(f"configs/translation.py: data={data!r}; expected one of "
                     f"{sorted([*_CATALOG, 'files', 'addition'])}")

  config.task.name = "seq2seq"
  seq2seq_model(config, layers=args["layers"], width=args["width"])
  config.optimizer.learning_rate = args["lr"]
  config.optimizer.warmup_steps = max(1, min(4000, args["steps"] // 10))
  config.train.num_steps = args["steps"]
  config.train.batch_size = args["batch"]
  config.train.eval_batch_size = 128
  config.train.label_smoothing = 0.1
  config.train.log_every = max(1, min(100, args["steps"] // 30))
  config.train.eval_every = max(1, args["steps"] // 10)
  config.train.checkpoint_every = max(1, args["steps"] // 10)
  config.train.keep_best_by = "loss"
  config.train.best_mode = "min"
  if args["smoke"]:
    config.model.num_layers = config.model.decoder_layers = 1
    config.model.hidden_size, config.model.num_heads, config.model.mlp_dim = 32, 2, 64
    config.train.num_steps = 3
    config.train.batch_size = 8
    config.train.log_every = config.train.eval_every = config.train.checkpoint_every = 3
    config.optimizer.warmup_steps = 1
  decode_evals(config, every=config.train.eval_every, beams=args["beams"] if not args["smoke"] else 2,
               num_examples=16 if args["smoke"] else 1000)
  return config
