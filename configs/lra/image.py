r"""LRA Image: CIFAR-10 in grey scale as 1,024 pixel tokens (``cifar10``, prepared by the user;
see attnjax/data/catalog.py), 10 classes. ``offline`` uses scikit-learn's digits instead
(64 pixel tokens; ships with scikit-learn), which needs no preparation.

  python launch.py --config configs/lra/image.py --workdir runs/image
  python launch.py --config configs/lra/image.py:size=small,offline --workdir runs/image_digits
  python launch.py --config configs/lra/image.py:offline --sweep --workdir runs/image_sweep

``size=base``: the LRA model and budget (1 block, width 32, 1 head, MLP 64, dropout 0.3,
attention dropout 0.2; batch 256, learning rate 5e-4 cosine, 200 epochs of 45,000
examples = 35,000 steps, one epoch of warmup, no weight decay).
"""

from __future__ import annotations

import ml_collections

from configs.lra import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """``kernel=<name>``, ``size=base|small|smoke``, ``offline`` (digits instead of CIFAR-10)."""
  args = common.parse(arg, offline=False)
  dataset = "digits" if args["offline"] else "cifar10_gray"
  if args["size"] == "base":
    return common.finish(args, common.make_config(
        name="lra_image", dataset=dataset, kernel=args["kernel"],
        num_layers=1, hidden_size=32, num_heads=1, mlp_dim=64,
        dropout_rate=0.3, attention_dropout_rate=0.2, position="learned", pooling="cls",
        learning_rate=5e-4, warmup_steps=175, weight_decay=0.0,
        grad_clip_norm=0.0, num_steps=35000, batch_size=256, eval_every=1750))
  config = common.make_config(
      name="lra_image_small", dataset=dataset, kernel=args["kernel"],
      num_layers=2, hidden_size=64, num_heads=4, mlp_dim=128,
      dropout_rate=0.1, attention_dropout_rate=0.0, position="learned", pooling="cls",
      learning_rate=1e-3, warmup_steps=100, weight_decay=0.05,
      grad_clip_norm=1.0, num_steps=1200, batch_size=64, eval_every=300)
  return common.finish(args, config)


def get_sweep(arg: str | None = None) -> list[dict]:
  """One point per kernel: ``kernels=a+b+c`` in ``arg``, else every registered one."""
  return common.kernel_sweep(arg)
