r"""LRA Path-X: Pathfinder at 128x128, 16,384 pixel tokens, 2 classes, generated offline
(attnjax/data/pathfinder.py: Pathfinder-32's scenes drawn at 4x the resolution).

  python launch.py --config configs/lra/pathx.py --workdir runs/pathx
  python launch.py --config configs/lra/pathx.py:kernel=linear,size=small --workdir runs/px_small
  python launch.py --config configs/lra/pathx.py:size=small,kernels=linear+performer --sweep \
      --workdir runs/px_sweep

``size=base``: LRA's Path-X model and budget (``lra_benchmarks/image/configs/pathfinder128``):
the Pathfinder-32 model of configs/lra/pathfinder.py (1 block, width 32, 2 heads, MLP 32,
dropout 0.1, mean pooling) but with learned positions (16,384 x 32) where Pathfinder-32 has
sinusoidal ones; batch 64 (Pathfinder-32: 512), learning rate 1e-3 cosine, 200 epochs of
160,000 examples = 500,000 steps, one epoch (2,500 steps) of warmup, gradient clipping at
norm 1 (Pathfinder-32: none), no weight decay, eval batch 64. Preparing its 200,000 images
takes ~15 minutes on one CPU core (~230 examples/s).

``size=small``: ``pathx_small`` (2,000/250/250 images, prepared in ~11 s on a 2-core CPU),
the same 1-block width-32 model (MLP 64) with sinusoidal positions (2,000 images cannot
train 16,384 learned ones), batch 8, 300 steps. At 16,384 tokens the kernel decides the
cost: on a CPU use a linear-complexity one (``kernel=linear``, ``performer``,
``linformer``, ``sliding_window``...). Measured on a busy 2-core CPU: ``kernel=linear``
trains at ~7 examples/s (300 steps in ~6 minutes, peak memory 2.2 GB); exact
``dot_product`` attention (chunked automatically at this length) at ~0.3 examples/s, 25
times slower. Path-X is the LRA task that most models leave at chance (50%); ``small``
checks that a kernel runs at this length, not that it solves the task. ``size=smoke``: 3
steps (with a linear-complexity kernel on a CPU). ``get_sweep()``: every registered kernel.
"""

from __future__ import annotations

import ml_collections

from configs.lra import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """``kernel=<name>``, ``size=base|small|smoke``."""
  args = common.parse(arg)
  if args["size"] == "base":
    config = common.make_config(
        name="lra_pathx", dataset="pathx", kernel=args["kernel"],
        num_layers=1, hidden_size=32, num_heads=2, mlp_dim=32,
        dropout_rate=0.1, attention_dropout_rate=0.1, position="learned", pooling="mean",
        learning_rate=1e-3, warmup_steps=2500, weight_decay=0.0,
        grad_clip_norm=1.0, num_steps=500_000, batch_size=64, eval_every=2500)
    config.train.eval_batch_size = 64  # as LRA's Path-X (its eval batch is its batch)
    return common.finish(args, config)
  config = common.make_config(
      name="lra_pathx_small", dataset="pathx_small", kernel=args["kernel"],
      num_layers=1, hidden_size=32, num_heads=2, mlp_dim=64,
      dropout_rate=0.1, attention_dropout_rate=0.0, position="sinusoidal", pooling="mean",
      learning_rate=1e-3, warmup_steps=30, weight_decay=0.05,
      grad_clip_norm=1.0, num_steps=300, batch_size=8, eval_every=100)
  config.train.eval_batch_size = 50  # 16,384-token rows: bounds eval activations on a CPU
  return common.finish(args, config)


def get_sweep(arg: str | None = None) -> list[dict]:
  """One point per kernel: ``kernels=a+b+c`` in ``arg``, else every registered one."""
  return common.kernel_sweep(arg)
