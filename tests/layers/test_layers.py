"""Tests of the flax building blocks: attention layer, blocks, embeddings, pooling."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax.layers import (AdditiveAttentionPooling, Encoder, EncoderBlock, EncoderConfig,
                            FeedForward, MeanPooling, MultiHeadAttention, TransformerBlock,
                            sinusoidal_positions)


def _cfg(**kw):
  base = dict(vocab_size=20, max_length=12, hidden_size=16, num_layers=2, num_heads=4,
              mlp_dim=32, dropout_rate=0.0)
  base.update(kw)
  return EncoderConfig(**base)


def test_attention_layer_equals_flax_multihead_attention():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 16))
  mask = jnp.arange(7)[None, None, None, :] < jnp.array([7, 4])[:, None, None, None]
  ours = MultiHeadAttention(num_heads=4, head_dim=4)
  params = ours.init(jax.random.PRNGKey(1), x)["params"]
  theirs = nn.MultiHeadDotProductAttention(num_heads=4, qkv_features=16)
  # Same parameter tree: query/key/value/out DenseGenerals with identical shapes.
  assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(
      theirs.init(jax.random.PRNGKey(1), x)["params"])
  got = ours.apply({"params": params}, x, mask=mask)
  want = theirs.apply({"params": params}, x, mask=mask)
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_grouped_query_attention_projects_fewer_kv_heads():
  x = jnp.ones((1, 5, 16))
  params = MultiHeadAttention(num_heads=4, head_dim=4, num_kv_heads=2).init(
      jax.random.PRNGKey(0), x)["params"]
  assert params["query"]["kernel"].shape == (16, 4, 4)
  assert params["key"]["kernel"].shape == (16, 2, 4)
  assert params["value"]["kernel"].shape == (16, 2, 4)


def test_attention_weights_are_sown_as_probabilities():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 16))
  mask = jnp.arange(6)[None, None, None, :] < jnp.array([6, 3])[:, None, None, None]
  layer = MultiHeadAttention(num_heads=4, head_dim=4)
  params = layer.init(jax.random.PRNGKey(1), x)["params"]
  _, inter = layer.apply({"params": params}, x, mask=mask, mutable=["intermediates"])
  (w,) = inter["intermediates"]["attention_weights"]
  assert w.shape == (2, 4, 6, 6)
  np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
  np.testing.assert_array_equal(w[1, :, :, 3:], 0.0)


def test_post_ln_block_output_is_layer_normalised():
  cfg = _cfg(pre_layer_norm=False)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 16)) * 3 + 1
  out = EncoderBlock(cfg).init_with_output(jax.random.PRNGKey(1), x)[0]
  np.testing.assert_allclose(out.mean(-1), 0.0, atol=1e-5)
  np.testing.assert_allclose(out.std(-1), 1.0, atol=1e-3)


@pytest.mark.parametrize("pre_ln", [True, False])
@pytest.mark.parametrize("position", ["learned", "sinusoidal", "rotary", "none"])
def test_padding_does_not_change_real_tokens(pre_ln, position):
  cfg = _cfg(pre_layer_norm=pre_ln, position=position)
  ids = jnp.array([[3, 4, 5, 6, 0, 0, 0, 0]])
  short = ids[:, :4]
  enc = Encoder(cfg)
  params = enc.init(jax.random.PRNGKey(0), ids)["params"]
  long_out, long_mask = enc.apply({"params": params}, ids)
  short_out, _ = enc.apply({"params": params}, short)
  np.testing.assert_array_equal(long_mask, ids != 0)
  np.testing.assert_allclose(long_out[:, :4], short_out, atol=1e-5)


def test_cls_token_is_prepended_and_unmasked():
  cfg = _cfg(add_cls_token=True)
  ids = jnp.array([[3, 4, 0]])
  out, mask = Encoder(cfg).init_with_output(jax.random.PRNGKey(0), ids)[0]
  assert out.shape == (1, 4, 16)
  np.testing.assert_array_equal(mask, [[True, True, True, False]])


def test_encoder_rejects_too_long_input_naming_shape():
  cfg = _cfg(max_length=4)
  with pytest.raises(ValueError, match=r"length 6 > max_length=4"):
    Encoder(cfg).init(jax.random.PRNGKey(0), jnp.ones((1, 6), jnp.int32))


def test_dropout_is_active_only_when_not_deterministic():
  cfg = _cfg(dropout_rate=0.5, attention_dropout_rate=0.5)
  ids = jnp.array([[3, 4, 5, 6]])
  enc = Encoder(cfg)
  params = enc.init(jax.random.PRNGKey(0), ids)["params"]
  a = enc.apply({"params": params}, ids)[0]
  b = enc.apply({"params": params}, ids)[0]
  np.testing.assert_array_equal(a, b)
  c = enc.apply({"params": params}, ids, deterministic=False,
                rngs={"dropout": jax.random.PRNGKey(1)})[0]
  assert not np.allclose(a, c)


def test_encoder_config_errors_name_the_field():
  with pytest.raises(ValueError, match="hidden_size=30 is not divisible by num_heads=4"):
    _cfg(hidden_size=30)
  with pytest.raises(ValueError, match="num_kv_heads=3"):
    _cfg(num_kv_heads=3)
  with pytest.raises(ValueError, match="position='rotary2'"):
    _cfg(position="rotary2")


def test_sinusoidal_positions_match_formula():
  table = sinusoidal_positions(10, 8)
  pos, i = 7, 1
  freq = 1e4 ** (-i / 4)
  np.testing.assert_allclose(table[pos, i], np.sin(pos * freq), rtol=1e-6)
  np.testing.assert_allclose(table[pos, 4 + i], np.cos(pos * freq), rtol=1e-6)


def test_additive_attention_pooling_matches_formula():
  h = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 6))
  mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
  pool = AdditiveAttentionPooling(hidden_dim=7)
  params = pool.init(jax.random.PRNGKey(1), h, mask)["params"]
  out, inter = pool.apply({"params": params}, h, mask, mutable=["intermediates"])
  w1, b1 = np.asarray(params["w1"]["kernel"], np.float64), np.asarray(params["w1"]["bias"])
  w2 = np.asarray(params["w2"]["kernel"], np.float64)[:, 0]
  hn = np.asarray(h, np.float64)
  scores = np.tanh(hn @ w1 + b1) @ w2
  scores = np.where(np.asarray(mask), scores, -np.inf)
  a = np.exp(scores - scores.max(-1, keepdims=True))
  a /= a.sum(-1, keepdims=True)
  np.testing.assert_allclose(inter["intermediates"]["pooling_weights"][0], a, atol=1e-5)
  np.testing.assert_allclose(out, np.einsum("bs,bsd->bd", a, hn), atol=1e-5)


def test_mean_pooling_ignores_padding():
  h = jnp.arange(2 * 3 * 2, dtype=jnp.float32).reshape(2, 3, 2)
  mask = jnp.array([[1, 1, 0], [1, 0, 0]], bool)
  out = MeanPooling().apply({}, h, mask)
  np.testing.assert_allclose(out, [[1.0, 2.0], [6.0, 7.0]])


def test_rotary_attention_depends_only_on_relative_positions():
  layer = MultiHeadAttention(num_heads=2, head_dim=8, rotary=True)
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 4, 16))
  params = layer.init(jax.random.PRNGKey(1), x)["params"]
  plain = MultiHeadAttention(num_heads=2, head_dim=8).apply({"params": params}, x)
  assert not np.allclose(plain, layer.apply({"params": params}, x))  # positions matter
  # The same three visible tokens shifted right by two positions (masked junk in front)
  # give the same outputs: only offsets between query and key count.
  y = jnp.concatenate([jnp.zeros((1, 2, 16)), x[:, :1] * 0 + 5.0, x[:, 1:]], 1)
  out_x = layer.apply({"params": params}, x, mask=jnp.arange(4)[None, None, None, :] >= 1)
  out_y = layer.apply({"params": params}, y, mask=jnp.arange(6)[None, None, None, :] >= 3)
  np.testing.assert_allclose(out_y[:, 3:], out_x[:, 1:], atol=1e-5)


# ModernBERT-style options: a per-layer schedule of local and global attention, per-kind
# RoPE bases, gated feed-forward, no LayerNorm before the first block's attention.


def _modern(**kw):
  return _cfg(**{**dict(num_layers=3, position="rotary", global_every=3, local_window=4,
                        rotary_base=1000.0, local_rotary_base=10.0), **kw})


@pytest.mark.parametrize("layer_index", [0, 1, 2])
def test_schedule_gives_local_layers_their_window_and_rope_base(layer_index):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 16))
  mask = jnp.arange(9)[None, None, None, :] < jnp.array([9, 6])[:, None, None, None]
  cfg = _modern()
  block = TransformerBlock(cfg, layer_index=layer_index)
  params = block.init(jax.random.PRNGKey(1), x, mask)
  local = layer_index in (1, 2)
  assert cfg.is_local_layer(layer_index) == local
  # The same block written without a schedule: the window as a kernel option, one base.
  plain = _cfg(num_layers=3, position="rotary", rotary_base=10.0 if local else 1000.0,
               kernel_options={"local_window_size": (2, 2)} if local else {})
  want = TransformerBlock(plain).apply(params, x, mask)
  np.testing.assert_allclose(block.apply(params, x, mask), want, atol=1e-6)
  # ... and the window matters: a global block differs on a 9-token sequence.
  if local:
    unwindowed = TransformerBlock(dataclasses.replace(plain, kernel_options={})).apply(
        params, x, mask)
    assert float(jnp.max(jnp.abs(unwindowed - want))) > 1e-3


def test_gated_feed_forward_is_act_of_first_half_times_second():
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 16))
  ffn = FeedForward(8, activation="silu", gated=True, use_bias=False)
  params = ffn.init(jax.random.PRNGKey(1), x)["params"]
  assert params["wi"]["kernel"].shape == (16, 16) and "bias" not in params["wi"]
  h = np.asarray(x, np.float64) @ np.asarray(params["wi"]["kernel"], np.float64)
  a, g = h[:, :8], h[:, 8:]
  want = (a / (1 + np.exp(-a)) * g) @ np.asarray(params["wo"]["kernel"], np.float64)
  np.testing.assert_allclose(ffn.apply({"params": params}, x), want, atol=1e-5)


def test_modern_encoder_parameters_are_bias_free_and_skip_the_first_attention_norm():
  cfg = _modern(use_bias=False, gated_mlp=True, embedding_layer_norm=True,
                skip_first_attention_norm=True)
  params = jax.eval_shape(lambda: Encoder(cfg).init(jax.random.PRNGKey(0),
                                                     jnp.ones((1, 5), jnp.int32)))["params"]
  assert "attention_norm" not in params["layer_0"] and "attention_norm" in params["layer_1"]
  assert set(params["embeddings"]["layer_norm"]) == {"scale"}
  assert params["layer_1"]["mlp"]["wi"]["kernel"].shape == (16, 64)
  assert not [p for p in jax.tree_util.tree_flatten_with_path(params)[0]
              if "bias" in jax.tree_util.keystr(p[0])]


@pytest.mark.parametrize("kw, match", [
    (dict(global_every=2), "global_every=2 needs local_window"),
    (dict(local_window=4, scan_layers=True), "scan_layers=True cannot run"),
    (dict(skip_first_attention_norm=True, scan_layers=True), "skip_first_attention_norm"),
    (dict(skip_first_attention_norm=True, pre_layer_norm=False), "needs pre_layer_norm"),
    (dict(local_window=4, kernel_options={"local_window_size": 2}), "both set a window"),
    (dict(local_window=-1), "local_window must be an int >= 0"),
])
def test_schedule_config_errors_name_the_field(kw, match):
  with pytest.raises(ValueError, match=match):
    _cfg(**kw)


def test_local_layers_refuse_a_kernel_without_a_window():
  cfg = _cfg(local_window=4, kernel="linear")
  with pytest.raises(ValueError, match="kernel 'linear' has none"):
    jax.eval_shape(lambda: Encoder(cfg).init(jax.random.PRNGKey(0), jnp.ones((1, 5), jnp.int32)))
