"""Encoder presets: the BERT family's sizes (Turc et al. 2019, Devlin et al. 2019), ModernBERT.

A BERT-size preset fixes depth and width; everything else (vocabulary, positions, kernel)
comes from the task and the config. ``modernbert_base`` also fixes ModernBERT's
architecture (Warner et al. 2024): bias-free pre-LN blocks with GeGLU feed-forward, RoPE,
and a global attention layer every third block, the others local over 128 tokens. Parameter
counts are pinned in ``tests/models/test_models.py``.
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

# ModernBERT-base (answerdotai/ModernBERT-base): 149,014,272 parameters with its 50,368-token
# vocabulary, as transformers' ModernBertModel.
PRESETS.register("modernbert_base", dict(
    num_layers=22, hidden_size=768, num_heads=12, mlp_dim=1152, gated_mlp=True,
    activation="gelu", exact_gelu=True, use_bias=False, pre_layer_norm=True,
    embedding_layer_norm=True, skip_first_attention_norm=True, layer_norm_epsilon=1e-5,
    position="rotary", rotary_base=160_000.0, local_rotary_base=10_000.0, global_every=3,
    local_window=128, type_vocab_size=0))


def get_preset(name: str) -> dict:
  """Returns a copy of the preset's EncoderConfig fields (num_layers, hidden_size, ...)."""
  return dict(PRESETS.get(name))
