"""RoBERTa, DistilBERT and ModernBERT import/export against transformers (PyTorch CPU).

Randomly initialised tiny checkpoints written by transformers' ``save_pretrained``: attnjax
loads them through ``load_hf_encoder`` / ``load_hf_model`` and must give transformers' hidden states and
masked-LM logits on a padded batch; its export must load back into transformers (no missing
or unexpected tensors) with the same outputs. Needs the hf-test extra (torch, transformers).
"""

import json

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from attnjax.models import MaskedLanguageModel  # noqa: E402
from attnjax.pretrained import (BertEncoder, load_hf_encoder, load_hf_model,  # noqa: E402
                                save_hf_model)

TOL = 1e-4
VOCAB, SEQ, LENGTHS = 99, 13, (13, 8, 3, 5)


def _roberta():
  return transformers.RobertaForMaskedLM(transformers.RobertaConfig(
      vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
      intermediate_size=48, max_position_embeddings=SEQ + 2 + 3, type_vocab_size=1,
      pad_token_id=1, layer_norm_eps=1e-5))


def _distilbert():
  return transformers.DistilBertForMaskedLM(transformers.DistilBertConfig(
      vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=48,
      max_position_embeddings=SEQ + 3, pad_token_id=0))


def _modernbert():
  # Three layers: layer 0 global, layers 1-2 local over |i - j| <= 2 (local_attention=4), so
  # the 13-token rows cross the window; RoPE bases differ per kind (160,000 / 10,000).
  return transformers.ModernBertForMaskedLM(transformers.ModernBertConfig(
      vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
      intermediate_size=24, max_position_embeddings=64, local_attention=4,
      global_attn_every_n_layers=3, pad_token_id=0, bos_token_id=2, eos_token_id=3,
      cls_token_id=2, sep_token_id=3))


ARCHS = {
    # model_type: (builder, base model attribute, pad id)
    "roberta": (_roberta, "roberta", 1),
    "distilbert": (_distilbert, "distilbert", 0),
    "modernbert": (_modernbert, "model", 0),
}


@pytest.fixture(scope="module", params=sorted(ARCHS))
def checkpoint(request, tmp_path_factory):
  """(model_type, directory, torch masked-LM model, batch) for one architecture."""
  model_type = request.param
  build, _, pad = ARCHS[model_type]
  torch.manual_seed(0)
  model = build().eval()
  with torch.no_grad():  # move every parameter off its init (LayerNorm 1/0, zero biases)
    for p in model.parameters():
      p.add_(0.2 * torch.randn_like(p))
  directory = tmp_path_factory.mktemp(model_type)
  model.save_pretrained(str(directory))
  rng = np.random.default_rng(0)
  ids = rng.integers(4, VOCAB, (len(LENGTHS), SEQ)).astype(np.int32)
  mask = (np.arange(SEQ)[None] < np.array(LENGTHS)[:, None]).astype(np.int32)
  mask[-1] = mask[-1, ::-1]  # the last row is left-padded (RoBERTa numbers real tokens)
  ids = np.where(mask == 1, ids, pad).astype(np.int32)  # padding with the pad id
  return model_type, directory, model, {"input_ids": ids, "attention_mask": mask}


def _torch_run(model, batch, base=None):
  ids = torch.tensor(batch["input_ids"], dtype=torch.long)
  mask = torch.tensor(batch["attention_mask"], dtype=torch.long)
  with torch.no_grad():
    if base is not None:
      return getattr(model, base)(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
    return model(input_ids=ids, attention_mask=mask).logits.numpy()


def _max_diff_real(a, b, mask):
  real = mask.astype(bool)
  return float(np.max(np.abs(a[real] - b[real])))


def test_hidden_states_match_transformers(checkpoint):
  model_type, directory, ref, batch = checkpoint
  model, params = load_hf_encoder(directory)
  assert isinstance(model, BertEncoder) and "pooler" not in params
  want = _torch_run(ref, batch, base=ARCHS[model_type][1])
  got = np.asarray(model.apply({"params": params}, batch["input_ids"],
                               attention_mask=batch["attention_mask"]))
  assert got.shape == want.shape == (len(LENGTHS), SEQ, 32)
  diff = _max_diff_real(got, want, batch["attention_mask"])
  print(f"{model_type} hidden states, real tokens: max |diff| = {diff:.2e}")
  assert diff <= TOL


def test_masked_lm_logits_match_and_export_reloads_in_transformers(checkpoint, tmp_path):
  model_type, directory, ref, batch = checkpoint
  model, params = load_hf_encoder(directory, with_mlm_head=True)
  assert isinstance(model, MaskedLanguageModel)
  want = _torch_run(ref, batch)
  logits = np.asarray(model.apply({"params": params}, batch["input_ids"],
                                  attention_mask=batch["attention_mask"]))
  assert logits.shape == (len(LENGTHS), SEQ, VOCAB)
  diff = _max_diff_real(logits, want, batch["attention_mask"])
  print(f"{model_type} masked-LM logits, real tokens: max |diff| = {diff:.2e}")
  assert diff <= TOL

  # load_hf_model gives the same masked-LM model; save_hf_model finds its architecture.
  same, same_params = load_hf_model(directory)
  assert same.config == model.config
  jax.tree_util.tree_map(np.testing.assert_array_equal, same_params, params)
  out = save_hf_model(model, params, tmp_path / "export")
  hf = json.loads((out / "config.json").read_text())
  assert hf["model_type"] == model_type
  assert hf["architectures"] == [type(ref).__name__]
  reloaded, info = transformers.AutoModelForMaskedLM.from_pretrained(
      str(out), output_loading_info=True)
  assert type(reloaded) is type(ref)
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  again = _torch_run(reloaded.eval(), batch)
  assert _max_diff_real(again, want, batch["attention_mask"]) <= 1e-5
  # ... the bare encoder class loads the same file, and attnjax reads its export back.
  base = transformers.AutoModel.from_pretrained(str(out)).eval()
  np.testing.assert_allclose(
      _torch_run(base, batch, base="base_model") * batch["attention_mask"][..., None],
      _torch_run(ref, batch, base=ARCHS[model_type][1]) * batch["attention_mask"][..., None],
      atol=1e-5)
  _, loaded = load_hf_encoder(out, with_mlm_head=True)
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, params)
