r"""LRA Text: byte-level IMDb sentiment (``imdb_reviews``, prepared by the user; see
attnjax/data/catalog.py for how), 2 classes.

  python launch.py --config configs/lra/text.py --workdir runs/text             # 4k bytes
  python launch.py --config configs/lra/text.py:length=1k --workdir runs/text1k
  python launch.py --config configs/lra/text.py --sweep --workdir runs/text_sweep

``size=base``: the LRA model and budget (4 blocks, width 256, 4 heads, MLP 1024; batch 32,
20,000 steps, 8,000 warmup). The paper reports Text at 4K bytes; the LRA repository's
config used 1,000 (``length=1k``). ``size=small``: 2 blocks of width 64 at 1k bytes.
"""

from __future__ import annotations

import ml_collections

from configs.lra import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """``kernel=<name>``, ``size=base|small|smoke``, ``length=4k|1k``."""
  args = common.parse(arg, length="4k")
  if args["length"] not in ("1k", "4k"):
    raise ValueError(f"length={args['length']!r}; expected 1k or 4k")
  if args["size"] == "base":
    return common.finish(args, common.make_config(
        name="lra_text", dataset=f"imdb_bytes_{args['length']}", kernel=args["kernel"],
        num_layers=4, hidden_size=256, num_heads=4, mlp_dim=1024,
        dropout_rate=0.1, attention_dropout_rate=0.1, position="learned", pooling="cls",
        learning_rate=common.rsqrt_peak(0.05, 8000), warmup_steps=8000, weight_decay=0.1,
        grad_clip_norm=1.0, num_steps=20000, batch_size=32, eval_every=2000))
  config = common.make_config(
      name="lra_text_small", dataset="imdb_bytes_1k", kernel=args["kernel"],
      num_layers=2, hidden_size=64, num_heads=4, mlp_dim=128,
      dropout_rate=0.1, attention_dropout_rate=0.0, position="learned", pooling="cls",
      learning_rate=1e-3, warmup_steps=200, weight_decay=0.05,
      grad_clip_norm=1.0, num_steps=2000, batch_size=32, eval_every=500)
  return common.finish(args, config)


def get_sweep(arg: str | None = None) -> list[dict]:
  """One point per kernel: ``kernels=a+b+c`` in ``arg``, else every registered one."""
  return common.kernel_sweep(arg)
