"""Looking inside trained models and runs: attention maps, rollout, flow, curves.

``python -m attnjax.inspect`` draws attention figures (see :mod:`attnjax.inspect.cli`);
``python -m attnjax.plot`` draws training curves. In code::

  from attnjax.inspect import extract_attention, attention_rollout
  maps = extract_attention(model, {'params': params}, input_ids, deterministic=True)
  rollout = attention_rollout(maps.stacked())        # [batch, seq, seq]

Submodules: ``extract`` (attention probabilities of every layer and head), ``analysis``
(rollout, flow, entropy, distance; numpy), ``importance`` (head masking), ``figures``
(matplotlib), ``plots`` (training curves and sweep comparisons). Only ``analysis`` is
imported here, so ``attnjax.inspect.plots`` stays cheap to import from the train loop.
"""

from attnjax.inspect.analysis import attention_entropy
from attnjax.inspect.analysis import attention_flow
from attnjax.inspect.analysis import attention_rollout
from attnjax.inspect.analysis import mean_attention_distance


def __getattr__(name: str):
  # Flax-dependent helpers load on first use (PEP 562) rather than on package import.
  lazy = {
      "AttentionMaps": "attnjax.inspect.extract",
      "extract_attention": "attnjax.inspect.extract",
      "implied_attention_matrix": "attnjax.inspect.extract",
      "head_importance": "attnjax.inspect.importance",
      "mask_head": "attnjax.inspect.importance",
      "attention_figure_for_tensorboard": "attnjax.inspect.figures",
  }
  if name in lazy:
    import importlib  # pylint: disable=import-outside-toplevel
    return getattr(importlib.import_module(lazy[name]), name)
  raise AttributeError(f"module 'attnjax.inspect' has no attribute {name!r}")


__all__ = [
    "AttentionMaps", "attention_entropy", "attention_figure_for_tensorboard", "attention_flow",
    "attention_rollout", "extract_attention", "head_importance", "implied_attention_matrix",
    "mask_head", "mean_attention_distance",
]
