r"""The "function's name in words" baseline of code summarisation, on the model's test set.

For every held-out function of ``configs/code_summarization.py`` (the same split, tokenizer
and lengths, read through the same pipeline), the prediction is the function's name split
into lower-case words (``_`` and camelCase boundaries: ``read_config_file`` -> "read config
file"); the reference is the first sentence of its docstring. Prints ROUGE-L, BLEU and
exact match, the metrics of the model's ``decode`` evaluator.

  python experiments/generation/summarization_baseline.py [--config_arg ...] [--data_dir ...]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from attnjax import data as data_lib  # noqa: E402
from attnjax.train import metrics as metrics_lib  # noqa: E402
from configs import code_summarization  # noqa: E402

_DEF = re.compile(r"\bdef\s+([A-Za-z_][A-Za-z0-9_]*)")


def name_words(source: str) -> str:
  """The first ``def``'s name as lower-case words; "" when the source has none."""
  match = _DEF.search(source)
  if not match:
    return ""
  name = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", match.group(1))
  return " ".join(w.lower() for w in re.split(r"[_\s]+", name) if w)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config_arg", default="", help="configs/code_summarization.py arg")
  parser.add_argument("--data_dir", default="", help="config.data.data_dir")
  parser.add_argument("--split", default="test")
  args = parser.parse_args(argv)
  config = code_summarization.get_config(args.config_arg or None)
  if args.data_dir:
    config.data.data_dir = args.data_dir
  data_config = data_lib.resolve_data_config(config.data)
  info = data_lib.get_dataset_info(data_config)
  tokenizer = data_lib.dataset_tokenizer(data_config)
  special = {info.pad_id, info.bos_id, info.eos_id}
  text = lambda ids: tokenizer.decode([int(i) for i in ids if int(i) not in special])  # noqa: E731
  predictions, references = [], []
  for batch in data_lib.make_eval_iterator(data_config, split=args.split, global_batch_size=256):
    real = np.asarray(batch["weight"]) > 0
    for source, target in zip(np.asarray(batch["inputs"])[real], np.asarray(batch["targets"])[real]):
      predictions.append(name_words(text(source)))
      references.append(text(target))
  result = {**metrics_lib.text_metrics(predictions, references), "num_examples": len(predictions),
            "split": args.split}
  print(json.dumps(result, indent=2))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
