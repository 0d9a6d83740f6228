r"""LRA Retrieval: do two ACL Anthology Network papers cite each other? Byte level, two towers.

Needs the user's LRA AAN files (``new_aan_pairs.{train,eval,test}.tsv`` from
``lra_release/lra_release/tsv_data/`` of the LRA release; see attnjax/data/aan.py) in
``--config.data.aan_dir`` or ``$ATTNJAX_AAN_DIR``; they are prepared once into the data dir.

  python launch.py --config configs/lra/retrieval.py --workdir runs/retrieval \
      --config.data.aan_dir=/data/lra_release/lra_release/tsv_data
  python launch.py --config configs/lra/retrieval.py:size=small --workdir runs/retrieval_s \
      --config.data.aan_dir=...
  python launch.py --config configs/lra/retrieval.py:size=small --sweep \
      --workdir runs/retrieval_sweep --config.data.aan_dir=...

Both documents go through the same encoder (shared weights, no cross attention), each
CLS-pooled; ``[u, v, u*v, u-v]`` goes through an MLP (``mlp_dim``, ``mlp_dim / 2``) to 2
classes (``attnjax.models.SequenceClassifier`` with ``towers=2``).

``size=base``: the LRA repository's ``matching/configs/base_match_config.py``: 4 blocks,
width 128 (= qkv_dim), 4 heads, MLP 512, 4,000 bytes per document, CLS pooling; batch 32,
5,000 steps, weight decay 0.1, LRA's ``0.05 * linear_warmup * rsqrt_decay`` with 8,000
warmup steps. A run of 5,000 steps never leaves that warmup, so the schedule is exactly a
linear ramp from 0 to ``0.05 / sqrt(8000) * 5000 / 8000`` (3.5e-4): here a 5,000-step
warmup to that rate (``constant`` schedule). ``size=small``: 2 blocks of width 64 on the
first 1,000 bytes of each document (``aan_bytes_1k``), 2,000 steps. ``size=smoke``: 3 steps
of a one-block width-16 model on ``aan_bytes_1k``. There is no generated stand-in for AAN:
every size reads the user's files.
"""

from __future__ import annotations

import ml_collections

from configs.lra import common

#: LRA's Retrieval budget and warmup (base_match_config.py).
_LRA_STEPS, _LRA_WARMUP = 5000, 8000


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """``kernel=<name>``, ``size=base|small|smoke``."""
  args = common.parse(arg)
  if args["size"] == "base":
    config = common.make_config(
        name="lra_retrieval", dataset="aan_bytes_4k", kernel=args["kernel"],
        num_layers=4, hidden_size=128, num_heads=4, mlp_dim=512,
        dropout_rate=0.1, attention_dropout_rate=0.1, position="learned", pooling="cls",
        # LRA's rate at the last step: the rsqrt peak reached 5,000/8,000 of the way.
        learning_rate=common.rsqrt_peak(0.05, _LRA_WARMUP) * _LRA_STEPS / _LRA_WARMUP,
        warmup_steps=_LRA_STEPS, weight_decay=0.1,
        grad_clip_norm=1.0, num_steps=_LRA_STEPS, batch_size=32, eval_every=1000)
    config.optimizer.schedule = "constant"  # the whole run is LRA's linear warmup
    config.train.eval_batch_size = 32       # 64 documents of 4,001 positions per batch
  else:
    config = common.make_config(
        name="lra_retrieval_small", dataset="aan_bytes_1k", kernel=args["kernel"],
        num_layers=2, hidden_size=64, num_heads=4, mlp_dim=128,
        dropout_rate=0.1, attention_dropout_rate=0.0, position="learned", pooling="cls",
        learning_rate=1e-3, warmup_steps=200, weight_decay=0.05,
        grad_clip_norm=1.0, num_steps=2000, batch_size=32, eval_every=500)
    config.train.eval_batch_size = 64       # 128 documents of 1,001 positions per batch
  config.data.aan_dir = ""                  # the LRA AAN TSV directory; "" = $ATTNJAX_AAN_DIR
  return common.finish(args, config)


def get_sweep(arg: str | None = None) -> list[dict]:
  """One point per kernel: ``kernels=a+b+c`` in ``arg``, else every registered one."""
  return common.kernel_sweep(arg)
