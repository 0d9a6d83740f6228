"""Encoder size presets (the BERT family's sizes, Turc et al. 2019 and Devlin et al. 2019).

A preset fixes depth and width; everything else (vocabulary, positions, kernel) comes from
the task and the config. Parameter counts are pinned in ``tests/models/test_presets.py``.
"""

from __future__ import annotations

from attnjax.registry import Registry

PRESETS: Registry[dict] = Registry("model preset")

for _name, _layers, _hidden, _heads in (
    ("tiny", 2, 128, 2),
    ("mini", 4, 256, 4),
    ("small", 4, 512, 8),
    ("medium", 8, 512, 8),
    ("base", 12, 768, 12),
    ("large", 24, 1024, 16),
):
  PRESETS.register(_name, dict(num_layers=_layers, hidden_size=_hidden, num_heads=_heads,
                               mlp_dim=4 * _hidden))


def get_preset(name: str) -> dict:
  """Returns a copy of the preset's fields: num_layers, hidden_size, num_heads, mlp_dim."""
  return dict(PRESETS.get(name))
