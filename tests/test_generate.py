"""attnjax.generate against transformers on randomly initialised GPT-2 and BART checkpoints.

The checkpoints are tiny (2 layers, width 32) and saved with ``save_pretrained``; their
weights are drawn with a large ``initializer_range`` so that logits are far from uniform
and argmax ties cannot decide a comparison.
"""

import json

import jax
import ml_collections
import numpy as np
import pytest

from attnjax import generate as generate_lib
from attnjax.generate import generate
from attnjax.models import MODELS
from attnjax.pretrained import load_hf_model, save_hf_model

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB, PAD = 64, 0
PROMPTS = [[1, 5, 9, 13, 2, 7], [1, 3], [1, 40, 41, 42]]
SOURCES = [[5, 6, 7, 8, 9, 2], [10, 11, 2]]


def _word_tokenizer(vocab_size: int):
  """A whitespace word-level tokenizer with ``vocab_size`` words ``w0 .. w{n-1}``."""
  from tokenizers import Tokenizer, models, pre_tokenizers  # pylint: disable=import-outside-toplevel
  tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(vocab_size)}, unk_token="w0"))
  tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  return tok


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
  """(directory, transformers model, attnjax model, params)."""
  torch.manual_seed(0)
  config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=VOCAB,
                                   n_positions=32, initializer_range=0.3, bos_token_id=1,
                                   eos_token_id=2, pad_token_id=PAD)
  hf = transformers.GPT2LMHeadModel(config).eval()
  path = tmp_path_factory.mktemp("gpt2")
  hf.save_pretrained(path)
  _word_tokenizer(VOCAB).save(str(path / "tokenizer.json"))
  model, params = load_hf_model(path)
  return path, hf, model, params


@pytest.fixture(scope="module")
def bart(tmp_path_factory):
  torch.manual_seed(0)
  config = transformers.BartConfig(
      vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2,
      encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=48,
      decoder_ffn_dim=48, max_position_embeddings=32, init_std=0.3, pad_token_id=PAD,
      bos_token_id=1, eos_token_id=2, decoder_start_token_id=1, forced_eos_token_id=None,
      forced_bos_token_id=None)
  hf = transformers.BartForConditionalGeneration(config).eval()
  path = tmp_path_factory.mktemp("bart")
  hf.save_pretrained(path)
  model, params = load_hf_model(path)
  return path, hf, model, params


def test_gpt2_logits_match_and_export_round_trips(gpt2, tmp_path):
  path, hf, model, params = gpt2
  ids = np.random.default_rng(0).integers(0, VOCAB, (2, 9))
  with torch.no_grad():
    want = hf(torch.tensor(ids)).logits.numpy()
  got = np.asarray(jax.jit(model.apply)({"params": params}, ids))
  np.testing.assert_allclose(got, want, atol=1e-4)
  out = save_hf_model(model, params, tmp_path / "export")
  assert json.loads((out / "config.json").read_text())["model_type"] == "gpt2"
  again = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
  with torch.no_grad():
    np.testing.assert_allclose(again(torch.tensor(ids)).logits.numpy(), want, atol=1e-5)


def test_bart_logits_match_and_export_round_trips(bart, tmp_path):
  path, hf, model, params = bart
  rng = np.random.default_rng(1)
  src, tgt = rng.integers(3, VOCAB, (2, 7)), rng.integers(3, VOCAB, (2, 5))
  with torch.no_grad():
    want = hf(input_ids=torch.tensor(src), decoder_input_ids=torch.tensor(tgt)).logits.numpy()
  got = np.asarray(jax.jit(model.apply)({"params": params}, src, tgt))
  np.testing.assert_allclose(got, want, atol=1e-4)
  out = save_hf_model(model, params, tmp_path / "export")
  again = transformers.BartForConditionalGeneration.from_pretrained(out).eval()
  with torch.no_grad():
    np.testing.assert_allclose(again(input_ids=torch.tensor(src),
                                     decoder_input_ids=torch.tensor(tgt)).logits.numpy(),
                               want, atol=1e-5)


def _hf_generate(hf, ids, **kwargs):
  with torch.no_grad():
    return hf.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=int),
                       pad_token_id=PAD, do_sample=False, **kwargs)


def _eos_that_occurs(hf, prompt):
  """A token greedy decoding of ``prompt`` produces at its third step (so EOS matters)."""
  out = _hf_generate(hf, prompt, max_new_tokens=3, num_beams=1, eos_token_id=None)
  return int(out[0, len(prompt) + 2]) if hf.config.model_type == "gpt2" else int(out[0, 3])


def _until_eos(ids, eos):
  ids = [int(t) for t in ids]
  return ids[:ids.index(eos) + 1] if eos in ids else ids


def test_gpt2_greedy_is_token_identical_to_transformers(gpt2):
  _, hf, model, params = gpt2
  eos = _eos_that_occurs(hf, PROMPTS[0])
  out = generate(model, params, PROMPTS, max_new_tokens=8, eos_id=eos)
  for prompt, tokens, length in zip(PROMPTS, out.tokens, out.lengths):
    want = _hf_generate(hf, prompt, max_new_tokens=8, num_beams=1, eos_token_id=eos)
    want = _until_eos(want[0, len(prompt):].tolist(), eos)
    assert tokens[:length].tolist() == want
    assert (tokens[length:] == PAD).all()
  assert out.lengths[0] <= 3 and out.tokens[0, out.lengths[0] - 1] == eos  # stopped at EOS


def _log_prob(hf, prompt, continuation):
  with torch.no_grad():
    logits = hf(torch.tensor([prompt + continuation])).logits[0]
  logp = torch.log_softmax(logits, -1)
  return float(sum(logp[len(prompt) - 1 + i, t] for i, t in enumerate(continuation)))


def test_gpt2_beam_search_is_at_least_as_likely_as_transformers(gpt2):
  _, hf, model, params = gpt2
  eos = _eos_that_occurs(hf, PROMPTS[0])
  out = generate(model, params, PROMPTS, max_new_tokens=6, method="beam", num_beams=3,
                 length_penalty=1.0, eos_id=eos)
  for prompt, tokens, score, length in zip(PROMPTS, out.tokens, out.scores, out.lengths):
    ours = tokens[:length].tolist()
    # Our score is the hypothesis's log-probability (transformers' model) / length.
    np.testing.assert_allclose(score, _log_prob(hf, prompt, ours) / len(ours), atol=1e-4)
    with torch.no_grad():
      hf_out = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt),
                                                                             dtype=int),
                           max_new_tokens=6, num_beams=3, length_penalty=1.0,
                           eos_token_id=eos, pad_token_id=PAD, do_sample=False,
                           early_stopping=False, output_scores=True,
                           return_dict_in_generate=True)
    assert score >= float(hf_out.sequences_scores[0]) - 1e-4


def test_sampling_is_reproducible_and_respects_top_k(gpt2):
  _, hf, model, params = gpt2
  eos = _eos_that_occurs(hf, PROMPTS[0])
  kwargs = dict(max_new_tokens=8, eos_id=eos, method="sample", top_k=1, temperature=0.7,
                rng=jax.random.PRNGKey(3))
  # top_k=1 leaves only the argmax: sampling must equal greedy (compiled by the test above).
  np.testing.assert_array_equal(generate(model, params, PROMPTS, **kwargs).tokens,
                                generate(model, params, PROMPTS, max_new_tokens=8,
                                         eos_id=eos).tokens)
  nucleus = dict(max_new_tokens=5, method="sample", top_p=0.9, rng=jax.random.PRNGKey(3))
  a = generate(model, params, PROMPTS, **nucleus)
  np.testing.assert_array_equal(a.tokens, generate(model, params, PROMPTS, **nucleus).tokens)
  assert np.all(a.scores < 0)


def test_filter_logits_keeps_the_nucleus():
  logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]], np.float32))
  kept = np.isfinite(generate_lib._filter_logits(logits, 1.0, 0, 0.8))  # pylint: disable=protected-access
  assert kept.tolist() == [[True, True, False, False]]
  kept = np.isfinite(generate_lib._filter_logits(logits, 1.0, 3, 1.0))  # pylint: disable=protected-access
  assert kept.tolist() == [[True, True, True, False]]


def test_bart_greedy_and_beam_match_transformers(bart):
  _, hf, model, params = bart
  eos = 2
  out = generate(model, params, SOURCES, max_new_tokens=6, eos_id=eos)
  beams = generate(model, params, SOURCES, max_new_tokens=6, method="beam", num_beams=2,
                   eos_id=eos)
  for source, tokens, length, b_score in zip(SOURCES, out.tokens, out.lengths, beams.scores):
    want = _hf_generate(hf, source, max_new_tokens=6, num_beams=1, eos_token_id=eos)
    assert tokens[:length].tolist() == _until_eos(want[0, 1:].tolist(), eos)
    with torch.no_grad():
      hf_beam = hf.generate(torch.tensor([source]), max_new_tokens=6, num_beams=2,
                            eos_token_id=eos, pad_token_id=PAD, do_sample=False,
                            early_stopping=False, output_scores=True,
                            return_dict_in_generate=True)
    assert b_score >= float(hf_beam.sequences_scores[0]) - 1e-4


@pytest.mark.parametrize("kwargs,match", [
    (dict(max_new_tokens=0), "max_new_tokens must be a positive int"),
    (dict(max_new_tokens=4, num_beams=0, method="beam"), "num_beams must be an int >= 1"),
    (dict(max_new_tokens=4, top_p=0.0, method="sample"), r"top_p must be in \(0, 1\]"),
    (dict(max_new_tokens=4, top_p=1.5, method="sample"), r"top_p must be in \(0, 1\]"),
    (dict(max_new_tokens=30), r"= 36 tokens exceed the model's max_length=32"),
    (dict(max_new_tokens=8, cache_length=10), r"= 14 tokens do not fit the cache of "
                                              "cache_length=10"),
    (dict(max_new_tokens=4, cache_length=40), "cache_length=40 exceeds the model's "
                                              "max_length=32"),
    (dict(max_new_tokens=4, method="nucleus"), "method='nucleus'"),
])
def test_bad_arguments_get_one_line_errors(gpt2, kwargs, match):
  _, _, model, params = gpt2
  with pytest.raises(ValueError, match=match) as e:
    generate(model, params, PROMPTS, **kwargs)
  assert "\n" not in str(e.value)


def test_a_classifier_cannot_generate():
  config = ml_collections.ConfigDict(dict(num_layers=1, hidden_size=16, num_heads=2,
                                          mlp_dim=16, add_cls_token=True))
  classifier = MODELS.get("classifier")(config, vocab_size=10, max_length=8, num_classes=2)
  with pytest.raises(ValueError, match="SequenceClassifier cannot generate"):
    generate(classifier, {}, [[1, 2]], max_new_tokens=3)


def test_cli_prints_the_continuation(gpt2, capsys):
  path, hf, _, _ = gpt2
  assert generate_lib.main(["--checkpoint", str(path), "--prompt", "w1 w5 w9",
                            "--max_new_tokens", "3"]) == 0
  printed = capsys.readouterr().out.strip()
  want = _hf_generate(hf, [1, 5, 9], max_new_tokens=3, num_beams=1, eos_token_id=2)[0, 3:]
  want = [int(t) for t in _until_eos(want.tolist(), 2) if int(t) != 2]
  assert printed == " ".join(f"w{t}" for t in [1, 5, 9] + want)


def test_cli_errors_are_one_line(gpt2, tmp_path, capsys):
  path = gpt2[0]
  assert generate_lib.main(["--checkpoint", str(path), "--prompt", "w1",
                            "--max_new_tokens", "0"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: max_new_tokens must be a positive int") and err.count("\n") == 1
  assert generate_lib.main(["--checkpoint", str(tmp_path / "nope"), "--prompt", "x"]) == 2
  assert "is not a directory" in capsys.readouterr().err
