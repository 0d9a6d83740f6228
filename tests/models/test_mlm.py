"""Masked-LM: BERT masking statistics, the tied MLM head, the loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax.layers import Encoder, EncoderConfig
from attnjax.models import MaskedLanguageModel, bert_masking, masked_lm_loss

_V, _PAD, _CLS, _SEP, _MASK = 1000, 0, 1, 2, 3
_SPECIAL = (_PAD, _CLS, _SEP)


def _batch(rows=512, length=128, seed=0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(4, _V, (rows, length))
  lengths = rng.integers(8, length + 1, rows)
  ids[:, 0] = _CLS
  ids[np.arange(rows), lengths - 1] = _SEP
  ids[np.arange(length)[None] >= lengths[:, None]] = _PAD
  return jnp.asarray(ids, jnp.int32)


def test_bert_masking_statistics_on_a_large_batch():
  ids = _batch(rows=1024, length=256)
  masked, targets, weights = jax.jit(
      lambda r, x: bert_masking(r, x, vocab_size=_V, mask_id=_MASK, special_ids=_SPECIAL))(
          jax.random.PRNGKey(0), ids)
  ids, masked, targets, weights = map(np.asarray, (ids, masked, targets, weights))
  selected = weights == 1.0
  candidates = ~np.isin(ids, _SPECIAL)
  n = selected.sum()
  assert masked.dtype == targets.dtype == np.int32 and weights.dtype == np.float32
  # Never a special token; 15% of the others. ~130k candidates, ~20k selected: the
  # tolerances below are about 5 standard deviations.
  assert not selected[~candidates].any()
  assert abs(n / candidates.sum() - 0.15) < 0.005
  # 80% [MASK], 10% random, 10% unchanged (a random token equals the original w.p. 1/996).
  is_mask = masked[selected] == _MASK
  unchanged = masked[selected] == ids[selected]
  replaced = ~is_mask & ~unchanged
  assert abs(is_mask.mean() - 0.8) < 0.015
  assert abs(replaced.mean() - 0.1) < 0.01
  assert abs(unchanged.mean() - 0.1) < 0.01
  # Random replacements are ordinary tokens, spread over the vocabulary.
  drawn = masked[selected][replaced]
  assert not np.isin(drawn, _SPECIAL + (_MASK,)).any()
  assert len(np.unique(drawn)) > 0.5 * min(len(drawn), _V)
  # Unselected positions are untouched; targets/weights mark exactly the selected ones.
  np.testing.assert_array_equal(masked[~selected], ids[~selected])
  np.testing.assert_array_equal(targets[selected], ids[selected])
  assert not targets[~selected].any()


def test_bert_masking_is_a_pure_function_of_the_key():
  ids = _batch(rows=4, length=32)
  kw = dict(vocab_size=_V, mask_id=_MASK, special_ids=_SPECIAL)
  a = bert_masking(jax.random.PRNGKey(1), ids, **kw)
  b = bert_masking(jax.random.PRNGKey(1), ids, **kw)
  c = bert_masking(jax.random.PRNGKey(2), ids, **kw)
  jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)
  assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("kw, match", [
    (dict(rate=0.0), "rate"),
    (dict(special_ids=(0, _V)), "special_ids"),
])
def test_bert_masking_refuses_bad_options(kw, match):
  args = dict(vocab_size=_V, mask_id=_MASK, special_ids=_SPECIAL)
  args.update(kw)
  with pytest.raises(ValueError, match=match):
    bert_masking(jax.random.PRNGKey(0), _batch(rows=2, length=16), **args)


def _config(**kw):
  values = dict(vocab_size=50, max_length=12, hidden_size=16, num_layers=1, num_heads=2,
                mlp_dim=32, pre_layer_norm=False, embedding_layer_norm=True, type_vocab_size=2,
                exact_gelu=True, dropout_rate=0.0)
  values.update(kw)
  return EncoderConfig(**values)


def test_mlm_output_projection_is_tied_to_the_word_embeddings():
  config = _config()
  ids = jnp.array([[1, 5, 6, 7, 2, 0]], jnp.int32)
  model = MaskedLanguageModel(config)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), ids)["params"]
  encoder_params = jax.eval_shape(Encoder(config).init, jax.random.PRNGKey(0), ids)["params"]
  head = params["mlm_head"]
  # The head adds only transform (D*D + D), its LayerNorm (2D) and the output bias (V).
  assert jax.tree_util.tree_map(jnp.shape, head) == {
      "transform": {"kernel": (16, 16), "bias": (16,)},
      "layer_norm": {"scale": (16,), "bias": (16,)}, "output_bias": (50,)}
  assert (jax.tree_util.tree_structure(params["encoder"])
          == jax.tree_util.tree_structure(encoder_params))
  apply = jax.jit(model.apply)
  logits = apply({"params": params}, ids)
  assert logits.shape == (1, 6, 50) and logits.dtype == jnp.float32

  # Scaling one embedding row changes its logit: the projection reads the table.
  table = params["encoder"]["embeddings"]["word_embeddings"]["embedding"]
  bumped = jax.tree_util.tree_map(lambda x: x, params)
  bumped["encoder"]["embeddings"]["word_embeddings"]["embedding"] = table.at[9].multiply(3.0)
  delta = apply({"params": bumped}, ids) - logits
  # Row 9 enters the output only as a logit column and as the input embedding of token 9
  # (absent from ids), so only column 9 moves.
  assert float(jnp.abs(delta[..., 9]).max()) > 1e-3
  assert float(jnp.abs(jnp.delete(delta, 9, axis=-1)).max()) == 0.0


def test_mlm_drops_the_cls_vector_so_logits_align_with_inputs():
  config = _config(add_cls_token=True)
  ids = jnp.ones((2, 7), jnp.int32)
  model = MaskedLanguageModel(config)
  shapes = jax.eval_shape(lambda: model.apply(model.init(jax.random.PRNGKey(0), ids), ids))
  assert shapes.shape == (2, 7, 50)


def test_masked_lm_loss_averages_over_selected_positions():
  logits = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 5))
  targets = jnp.array([[1, 0, 4], [2, 3, 0]])
  weights = jnp.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
  logp = jax.nn.log_softmax(logits)
  expected = -(logp[0, 0, 1] + logp[0, 2, 4] + logp[1, 1, 3]) / 3
  np.testing.assert_allclose(masked_lm_loss(logits, targets, weights), expected, rtol=1e-6)
  assert float(masked_lm_loss(logits, targets, jnp.zeros_like(weights))) == 0.0


def test_packed_rows_attend_within_each_sequence():
  """Two sequences packed in one row give each sequence's logits alone (segment ids and
  restarted positions through the encoder)."""
  cfg = EncoderConfig(vocab_size=30, max_length=8, hidden_size=16, num_layers=2,
                      num_heads=2, mlp_dim=32, dropout_rate=0.0, add_cls_token=False)
  model = MaskedLanguageModel(cfg)
  a, b = [5, 6, 7], [8, 9, 10, 11]
  row = {"inputs": jnp.array([a + b + [0]]),
         "segment_ids": jnp.array([[1, 1, 1, 2, 2, 2, 2, 0]]),
         "positions": jnp.array([[0, 1, 2, 0, 1, 2, 3, 0]])}
  params = model.init(jax.random.PRNGKey(0), row)["params"]
  packed = model.apply({"params": params}, row)
  alone_a = model.apply({"params": params}, jnp.array([a]))
  alone_b = model.apply({"params": params}, jnp.array([b]))
  np.testing.assert_allclose(packed[0, :3], alone_a[0], atol=1e-5)
  np.testing.assert_allclose(packed[0, 3:7], alone_b[0], atol=1e-5)
