r"""LRA Pathfinder-32: are the two markers joined by one path? 1,024 pixel tokens, 2 classes,
generated offline (attnjax/data/pathfinder.py).

  python launch.py --config configs/lra/pathfinder.py --workdir runs/pathfinder
  python launch.py --config configs/lra/pathfinder.py:size=small --workdir runs/pf_small
  python launch.py --config configs/lra/pathfinder.py:size=small --sweep --workdir runs/pf_sweep

``size=base``: the LRA model and budget (1 block, width 32, 2 heads, MLP 32 (LRA's
qkv_dim 16 * 2; here queries/keys/values keep the width 32), dropout 0.1, sinusoidal
positions, mean pooling; batch 512, learning rate 1e-3 cosine, 200 epochs of 160,000
examples = 62,500 steps, one epoch of warmup, no weight decay). ``size=small``: 4k
training images, a 2-block width-64 model.
"""

from __future__ import annotations

import ml_collections

from configs.lra import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """``kernel=<name>``, ``size=base|small|smoke``."""
  args = common.parse(arg)
  if args["size"] == "base":
    return common.finish(args, common.make_config(
        name="lra_pathfinder32", dataset="pathfinder32", kernel=args["kernel"],
        num_layers=1, hidden_size=32, num_heads=2, mlp_dim=32,
        dropout_rate=0.1, attention_dropout_rate=0.1, position="sinusoidal", pooling="mean",
        learning_rate=1e-3, warmup_steps=312, weight_decay=0.0,
        grad_clip_norm=0.0, num_steps=62500, batch_size=512, eval_every=3125))
  config = common.make_config(
      name="lra_pathfinder32_small", dataset="pathfinder32_small", kernel=args["kernel"],
      num_layers=2, hidden_size=64, num_heads=4, mlp_dim=128,
      dropout_rate=0.1, attention_dropout_rate=0.0, position="sinusoidal", pooling="mean",
      learning_rate=1e-3, warmup_steps=100, weight_decay=0.05,
      grad_clip_norm=1.0, num_steps=1500, batch_size=32, eval_every=500)
  return common.finish(args, config)


def get_sweep(arg: str | None = None) -> list[dict]:
  """One point per kernel: ``kernels=a+b+c`` in ``arg``, else every registered one."""
  return common.kernel_sweep(arg)
