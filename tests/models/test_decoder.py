"""CausalLM and EncoderDecoder: pinned sizes, the model protocol, cached decoding exactness."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from attnjax import kernels
from attnjax.models import MODELS, CausalLM, EncoderDecoder, ParamGroup, shift_right


def _count(module, *args) -> int:
  shapes = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), *args))["params"]
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(shapes)))


# Pinned (jax.eval_shape, nothing allocated). gpt2_small/medium equal GPT-2's 124M/355M;
# bart_base is facebook/bart-base's 139,420,416 less the 2 unused offset rows of each
# position table; t5_small is t5-small's 60,506,624 plus one 32x8 bias table per layer
# instead of per stack (+2,560).
ARCHITECTURE_PRESETS = {
    ("causal_lm", "gpt2_small", 50257, 1024): 124_439_808,
    ("causal_lm", "gpt2_medium", 50257, 1024): 354_823_168,
    ("causal_lm", "tiny", 8192, 512): 1_510_912,
    ("causal_lm", "mini", 8192, 512): 5_387_776,
    ("encoder_decoder", "transformer_base", 37000, 256): 63_082_496,
    ("encoder_decoder", "transformer_big", 37000, 256): 214_245_376,
    ("encoder_decoder", "bart_base", 50265, 1024): 139_417_344,
    ("encoder_decoder", "t5_small", 32128, 512): 60_509_184,
}


@pytest.mark.parametrize("name,preset,vocab,length", sorted(ARCHITECTURE_PRESETS))
def test_preset_parameter_counts(name, preset, vocab, length):
  model = MODELS.get(name)(ml_collections.ConfigDict(dict(preset=preset)), vocab_size=vocab,
                           max_length=length)
  ids = jnp.zeros((1, 8), jnp.int32)
  args = (ids,) if name == "causal_lm" else (ids, ids)
  assert _count(model, *args) == ARCHITECTURE_PRESETS[(name, preset, vocab, length)]


def _lm(**fields) -> CausalLM:
  values = dict(num_layers=2, hidden_size=32, num_heads=4, mlp_dim=48, dropout_rate=0.0)
  values.update(fields)
  return MODELS.get("causal_lm")(ml_collections.ConfigDict(values), vocab_size=40,
                                 max_length=24, pad_id=0)


def random_params(model, *args, scale: float = 0.3, seed: int = 0):
  """Random float32 params of ``model`` from numpy (shapes by ``jax.eval_shape``: no
  init program is compiled). Weights larger than the init's make logits far from uniform;
  LayerNorm scales are near 1."""
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), *args)["params"]
  rng = np.random.default_rng(seed)

  def draw(path, s):
    noise = rng.normal(size=s.shape).astype(np.float32)
    if getattr(path[-1], "key", "") == "scale":
      return 1.0 + 0.1 * noise
    return scale * noise
  return jax.tree_util.tree_map_with_path(draw, shapes)


_params = random_params


@pytest.fixture(scope="module")
def lm():
  model = _lm()
  return model, _params(model, jnp.zeros((1, 4), jnp.int32))


def test_batch_dict_and_arrays_agree_and_packing_isolates_documents(lm):
  model, params = lm
  a, b = np.array([5, 6, 7, 8, 9]), np.array([11, 12, 13])
  packed = np.concatenate([a, b])[None]
  batch = {"inputs": packed, "targets": packed,
           "segment_ids": np.array([[1] * 5 + [2] * 3]),
           "positions": np.array([list(range(5)) + list(range(3))])}
  apply = jax.jit(model.apply)
  logits = apply({"params": params}, batch)
  assert logits.shape == (1, 8, 40) and logits.dtype == jnp.float32
  alone_a = apply({"params": params}, a[None])
  alone_b = apply({"params": params}, b[None])
  np.testing.assert_allclose(logits[0, :5], alone_a[0], atol=1e-5)
  np.testing.assert_allclose(logits[0, 5:], alone_b[0], atol=1e-5)


def test_untied_head_and_param_groups():
  model = _lm(tie_embeddings=False)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 3), jnp.int32))[
      "params"]
  assert params["lm_head"]["kernel"].shape == (32, 40)
  groups = model.param_groups(params)
  assert groups["lm_head"]["kernel"] == ParamGroup("head", None, 2)
  assert groups["decoder"]["layer_1"]["attention"]["query"]["kernel"] == ParamGroup(
      "attention", 1, 2, "query")
  assert groups["decoder"]["layer_0"]["mlp"]["wi"]["kernel"].kind == "mlp"
  assert groups["decoder"]["final_norm"]["scale"].kind == "norm"
  assert groups["decoder"]["embeddings"]["word_embeddings"]["embedding"].kind == "embeddings"


def _cached_logits(model, params, tokens, mask, prompt):
  """Prefill ``prompt`` tokens, then one token per call; logits of every position."""
  positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
  cache = model.init_cache(tokens.shape[0], tokens.shape[1])
  decode = jax.jit(lambda c, t, p, m: model.apply({"params": params, "cache": c}, t,
                                                  positions=p, mask=m, method=CausalLM.decode,
                                                  mutable=["cache"]))
  out, state = decode(cache, tokens[:, :prompt], positions[:, :prompt], mask[:, :prompt])
  steps = [out]
  for i in range(prompt, tokens.shape[1]):
    out, state = decode(state["cache"], tokens[:, i:i + 1], positions[:, i:i + 1],
                        mask[:, i:i + 1])
    steps.append(out)
  return np.concatenate(steps, axis=1), positions


CACHED = {
    # name: (causal_lm fields, kernel options)
    # Learned positions decode through the GPT-2 comparisons of tests/test_generate.py.
    "window_alibi_rope_t5": (dict(position="rotary", relative_buckets=8,
                                  relative_max_distance=10),
                             dict(local_window_size=(4, 0),
                                  alibi_slopes=tuple(np.asarray(kernels.alibi_slopes(4)).tolist()))),
    "chunked_everything": (dict(position="rotary", relative_buckets=8, relative_max_distance=10,
                                kernel="chunked"),
                           dict(local_window_size=(5, 0), block_q=4, block_kv=4,
                                alibi_slopes=(0.5, 0.25, 0.125, 0.0625))),
    "sliding_window_pattern": (dict(kernel="sliding_window", position="rotary"),
                               dict(window_size=3)),
}


@pytest.mark.parametrize("case", sorted(CACHED))
def test_cached_decoding_equals_full_recomputation(case):
  fields, options = CACHED[case]
  kernel = fields.pop("kernel", "dot_product")
  model = _lm(attention=ml_collections.ConfigDict(dict(kernel=kernel, **options)), **fields)
  params = _params(model, jnp.zeros((1, 4), jnp.int32))
  rng = np.random.default_rng(0)
  tokens = rng.integers(1, 40, (2, 11)).astype(np.int32)
  mask = np.ones_like(tokens, bool)
  mask[1, :3] = False  # row 1: a left-padded prompt
  cached, positions = _cached_logits(model, params, tokens, mask, prompt=5)
  full = np.asarray(jax.jit(model.apply)({"params": params}, tokens, attention_mask=mask,
                                         positions=positions))
  np.testing.assert_allclose(cached[mask], full[mask], atol=1e-5, rtol=1e-5)


def test_a_kernel_that_cannot_decode_is_refused_by_name():
  model = _lm(attention=ml_collections.ConfigDict(dict(kernel="performer")))
  with pytest.raises(ValueError, match="kernel 'performer' cannot decode"):
    model.init_cache(1, 6)  # traced only (eval_shape): refused before anything runs


@pytest.fixture(scope="module")
def seq2seq():
  config = ml_collections.ConfigDict(dict(
      num_layers=2, decoder_layers=1, hidden_size=32, num_heads=4, mlp_dim=48,
      dropout_rate=0.0, pre_layer_norm=True, position="none", relative_buckets=8,
      use_bias=False))
  model = MODELS.get("encoder_decoder")(config, vocab_size=40, max_length=12, pad_id=0,
                                        target_length=10, decoder_start_id=1)
  ids = jnp.ones((1, 3), jnp.int32)
  return model, _params(model, ids, ids)


def test_encoder_decoder_batch_dict_shifts_targets_and_decodes_exactly(seq2seq):
  model, params = seq2seq
  assert isinstance(model, EncoderDecoder) and model.decoder_config.num_layers == 1
  source = np.array([[5, 6, 7, 8, 2], [9, 10, 2, 0, 0]], np.int32)
  targets = np.array([[11, 12, 13, 2], [14, 2, 0, 0]], np.int32)
  apply = jax.jit(model.apply)
  logits = apply({"params": params}, {"inputs": source, "targets": targets})
  assert logits.shape == (2, 4, 40)
  decoder_inputs = shift_right(jnp.asarray(targets), 1)
  assert decoder_inputs[:, 0].tolist() == [1, 1]
  np.testing.assert_allclose(logits, apply({"params": params}, source, decoder_inputs),
                             atol=1e-6)
  # Cached, one decoder token at a time, equals teacher forcing.
  encoded, encoded_mask = jax.jit(lambda s: model.apply({"params": params}, s,
                                                        method=EncoderDecoder.encode))(source)
  step = jax.jit(lambda c, t: model.apply({"params": params, "cache": c}, t, encoded,
                                          encoded_mask, method=EncoderDecoder.decode,
                                          mutable=["cache"]))
  state = {"cache": model.init_cache(2, 4)}
  steps = []
  for i in range(4):
    out, state = step(state["cache"], decoder_inputs[:, i:i + 1])
    steps.append(out)
  np.testing.assert_allclose(np.concatenate(steps, 1), logits, atol=1e-5, rtol=1e-5)
  groups = model.param_groups(params)
  assert groups["decoder"]["layer_0"]["cross_attention"]["key"]["kernel"] == ParamGroup(
      "attention", 2, 3, "key")
  assert groups["shared"]["embedding"].kind == "embeddings"
