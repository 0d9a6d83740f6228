"""Figures are valid PNGs with the expected panels; curves and sweep comparisons."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from attnjax import plot as plot_cli
from attnjax.inspect import figures, plots

PNG = b"\x89PNG\r\n\x1a\n"
TOKENS = ["[CLS]", "the", "cat", "sat", "on", "the", "mat", "[SEP]"]


def _attention(*shape, seed=0):
  w = np.exp(np.random.default_rng(seed).normal(size=shape))
  return w / w.sum(-1, keepdims=True)


def _check_png(path, min_size=(100, 100)):
  with open(path, "rb") as f:
    assert f.read(8) == PNG
  with Image.open(path) as im:
    im.verify()
  with Image.open(path) as im:
    assert im.size[0] >= min_size[0] and im.size[1] >= min_size[1]


@pytest.mark.parametrize("make, panels", [
    (lambda: figures.plot_layer_heads(_attention(6, 8, 8), TOKENS, layer=0), 6),
    (lambda: figures.plot_layers_overview(_attention(3, 2, 8, 8), TOKENS), 3),
    (lambda: figures.plot_rollout({"rollout": np.eye(8), "flow": np.eye(8)}, TOKENS), 2),
    (lambda: figures.plot_token_attention({"layer 1": np.ones(8) / 8, "rollout": np.eye(8)[3]},
                                          TOKENS, 3), 1),
    (lambda: figures.plot_grid_maps(np.arange(64).reshape(8, 8),
                                    {"a": np.ones(64), "b": np.arange(64.0)}), 3),
    (lambda: figures.plot_head_summary({"entropy": np.ones((2, 3)), "x": np.zeros((2, 3))}), 2),
])
def test_figures_have_their_panels_and_save_as_png(tmp_path, make, panels):
  fig = make()
  assert len(figures.heatmap_panels(fig)) == panels
  assert len(fig.axes) > panels  # colour bars are extra axes
  _check_png(figures.save_figure(fig, str(tmp_path / "f.png")))


def test_layer_heads_figure_labels_every_token(tmp_path):
  fig = figures.plot_layer_heads(_attention(6, 8, 8), TOKENS, layer=2)  # 2 rows of 4 panels
  panels = figures.heatmap_panels(fig)
  assert [t.get_text() for t in panels[0].get_yticklabels()] == TOKENS
  assert [t.get_text() for t in panels[-1].get_xticklabels()] == TOKENS
  assert "layer 3" in fig._suptitle.get_text()  # pylint: disable=protected-access
  figures.save_figure(fig, str(tmp_path / "f.png"))


def test_tensorboard_image_is_uint8_rgb():
  import jax  # pylint: disable=import-outside-toplevel
  from attnjax.layers import EncoderConfig  # pylint: disable=import-outside-toplevel
  from attnjax.models import SequenceClassifier  # pylint: disable=import-outside-toplevel
  cfg = EncoderConfig(vocab_size=17, max_length=16, hidden_size=8, num_layers=2, num_heads=2,
                      mlp_dim=8, add_cls_token=True)
  model = SequenceClassifier(cfg, num_classes=3)
  ids = np.arange(1, 17, dtype=np.int32).reshape(1, 16)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), ids)["params"]
  image = figures.attention_figure_for_tensorboard(model, params, ids, grid=(4, 4))
  assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
  assert image.shape[0] > 100 and image.shape[1] > 300 and image.std() > 0


def _fake_run(workdir, lr, accuracies):
  os.makedirs(workdir)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump({"optimizer": {"learning_rate": lr}, "data": {"data_dir": str(workdir)}}, f)
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    for step, acc in enumerate(accuracies, 1):
      f.write(json.dumps({"step": step, "split": "train", "loss": 2.0 / step,
                          "accuracy": acc, "learning_rate": lr}) + "\n")
      f.write(json.dumps({"step": step, "split": "eval", "loss": 2.1 / step,
                          "accuracy": acc}) + "\n")


def test_plot_cli_draws_a_run_and_a_sweep(tmp_path, capsys):
  sweep = tmp_path / "sweep"
  _fake_run(str(sweep / "lr_0.001"), 1e-3, [0.1, 0.5, 0.7])
  _fake_run(str(sweep / "lr_0.01"), 1e-2, [0.2, 0.3, 0.4])
  (sweep / "results.csv").write_text("run,accuracy\n")
  assert plots.run_labels(plots.sweep_runs(str(sweep))) == ["learning_rate=0.001",
                                                            "learning_rate=0.01"]
  assert plot_cli.main([str(sweep)]) == 0
  for name in ("sweep_curves.png", "sweep_final.png"):
    _check_png(sweep / "plots" / name)
  _check_png(sweep / "lr_0.01" / "plots" / "curves.png")
  assert plot_cli.main([str(sweep / "lr_0.001"), "--out", str(tmp_path / "o")]) == 0
  _check_png(tmp_path / "o" / "curves.png")
  assert plot_cli.main([str(tmp_path / "o")]) == 2
  assert "neither a run nor a sweep" in capsys.readouterr().err
  assert plot_cli.main([str(tmp_path / "missing")]) == 2
