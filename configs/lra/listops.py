r"""LRA ListOps: the value (0-9) of a nested MIN/MAX/MED/SM expression, read token by token.

  python launch.py --config configs/lra/listops.py --workdir runs/listops              # LRA size
  python launch.py --config configs/lra/listops.py:size=small --workdir runs/listops_s  # CPU
  python launch.py --config configs/lra/listops.py:kernel=chunked,size=smoke --workdir runs/lo
  python launch.py --config configs/lra/listops.py:size=small --sweep --workdir runs/listops_sweep

``size=base``: the LRA paper's model and budget (6 blocks, width 512, 8 heads, MLP 2048;
batch 32, 5,000 steps, 1,000 warmup; 500-2,000 tokens, 96k/2k/2k). ``size=small``: a
2-block width-32 model on ``listops_small`` (100-300 tokens, 4k/500/500), 400 steps of 16
(about 5 minutes per kernel on a busy 2-core CPU). ``size=smoke``: 3 steps. ``get_sweep()``: every registered kernel.
"""

from __future__ import annotations

import ml_collections

from configs.lra import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """``kernel=<name>``, ``size=base|small|smoke``."""
  args = common.parse(arg)
  if args["size"] == "base":
    return common.finish(args, common.make_config(
        name="lra_listops", dataset="listops", kernel=args["kernel"],
        num_layers=6, hidden_size=512, num_heads=8, mlp_dim=2048,
        dropout_rate=0.1, attention_dropout_rate=0.1, position="learned", pooling="cls",
        learning_rate=common.rsqrt_peak(0.05, 1000), warmup_steps=1000, weight_decay=0.1,
        grad_clip_norm=1.0, num_steps=5000, batch_size=32, eval_every=500))
  config = common.make_config(
      name="lra_listops_small", dataset="listops_small", kernel=args["kernel"],
      num_layers=2, hidden_size=32, num_heads=2, mlp_dim=64,
      dropout_rate=0.0, attention_dropout_rate=0.0, position="learned", pooling="cls",
      learning_rate=3e-3, warmup_steps=40, weight_decay=0.01,
      grad_clip_norm=1.0, num_steps=400, batch_size=16, eval_every=200)
  return common.finish(args, config)


def get_sweep(arg: str | None = None) -> list[dict]:
  """One point per kernel: ``kernels=a+b+c`` in ``arg``, else every registered one."""
  return common.kernel_sweep(arg)
