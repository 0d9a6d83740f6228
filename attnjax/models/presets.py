"""Size presets: the BERT family's sizes (Turc et al. 2019, Devlin et al. 2019) for any
stack, and published decoder / encoder-decoder architectures.

A size preset fixes depth and width; everything else (vocabulary, positions, kernel) comes
from the task and the config. An architecture preset (``gpt2_*``, ``transformer_*``,
``bart_base``, ``t5_small``, ``modernbert_base``) also fixes the layout it is known by
(LayerNorm placement, positions, activation; ModernBERT: bias-free pre-LN GeGLU blocks,
RoPE, a global attention layer every third block, the others local over 128 tokens);
explicit ``config.model`` fields still override it. Parameter counts are pinned in
``tests/models/test_presets.py``, ``tests/models/test_models.py`` and
``tests/models/test_decoder.py``.
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


_GPT2 = dict(pre_layer_norm=True, position="learned", layer_norm_epsilon=1e-5,
             activation="gelu", exact_gelu=False)
# Vaswani et al. (2017): post-LN, sinusoidal positions, ReLU (tables 3: base and big).
_TRANSFORMER = dict(pre_layer_norm=False, position="sinusoidal", activation="relu",
                    layer_norm_epsilon=1e-6)
for _name, _layers, _hidden, _heads, _mlp, _layout in (
    ("gpt2_small", 12, 768, 12, 3072, _GPT2),      # 124M with GPT-2's vocabulary
    ("gpt2_medium", 24, 1024, 16, 4096, _GPT2),    # 355M
    ("transformer_base", 6, 512, 8, 2048, _TRANSFORMER),
    ("transformer_big", 6, 1024, 16, 4096, _TRANSFORMER),
    ("bart_base", 6, 768, 12, 3072, dict(pre_layer_norm=False, position="learned",
                                         embedding_layer_norm=True, layer_norm_epsilon=1e-5,
                                         activation="gelu", exact_gelu=True)),
    ("t5_small", 6, 512, 8, 2048, dict(pre_layer_norm=True, position="none",
                                       relative_buckets=32, relative_max_distance=128,
                                       use_bias=False, activation="relu",
                                       layer_norm_epsilon=1e-6)),
):
  PRESETS.register(_name, dict(num_layers=_layers, hidden_size=_hidden, num_heads=_heads,
                               mlp_dim=_mlp, **_layout))


def get_preset(name: str) -> dict:
  """Returns a copy of the preset's EncoderConfig fields (num_layers, hidden_size,
  num_heads, mlp_dim, and an architecture preset's layout)."""
  return dict(PRESETS.get(name))
