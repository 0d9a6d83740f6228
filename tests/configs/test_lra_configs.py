"""configs/lra: every task and size builds; LRA sizes; one parameter budget across kernels."""

from __future__ import annotations

import importlib

import jax
import numpy as np
import pytest

from attnjax import data as data_lib
from attnjax import kernels
from attnjax import sweep
from attnjax.train import create_model_and_state, parameter_count

TASKS = ("listops", "text", "image", "pathfinder", "retrieval", "pathx")


def _params(config) -> tuple[int, int]:
  """(encoder parameters without the kernel's own, the kernel's own parameters)."""
  info = data_lib.get_dataset_spec(config.data.name).info  # shapes only: no files needed
  _, init_state, _ = create_model_and_state(config, info)
  params = jax.eval_shape(init_state, jax.random.PRNGKey(0)).params
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  own = sum(int(np.prod(x.shape)) for path, x in flat
            if any(getattr(k, "key", None) == "kernel_params" for k in path))
  return parameter_count(params) - own, own


# Path-X is Pathfinder's model at 16,384 tokens; building the six sparse patterns at that
# length costs ~12 s and checks nothing the Pathfinder row does not.
@pytest.mark.parametrize("task", [t for t in TASKS if t != "pathx"])
def test_every_kernel_has_the_same_parameter_budget(task):
  # The encoder budget is the same for every kernel; a kernel's own parameters (Linformer's
  # projections, additive attention's W, ...) come on top and are reported by the sweep.
  module = importlib.import_module(f"configs.lra.{task}")
  counts = {k: _params(module.get_config(f"kernel={k},size=smoke"))[0]
            for k in kernels.list_kernels()}
  assert len(set(counts.values())) == 1, counts
  # The sweep is over exactly the registered kernels, and its overrides apply.
  points = module.get_sweep()
  assert [p["model.attention.kernel"] for p in points] == kernels.list_kernels()
  base = module.get_config("size=smoke")
  for p in points:
    assert sweep.apply_overrides(base, p).model.attention.kernel == p["model.attention.kernel"]


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("size", ("base", "small"))
def test_sizes_build_with_the_softmax_kernel(task, size):
  module = importlib.import_module(f"configs.lra.{task}")
  encoder, own = _params(module.get_config(f"size={size}"))
  assert encoder > 0 and own == 0


def test_kernels_without_probabilities_run_without_attention_dropout():
  from configs.lra import listops  # pylint: disable=import-outside-toplevel
  assert listops.get_config("kernel=performer").model.attention_dropout_rate == 0.0
  assert listops.get_config("kernel=dot_product").model.attention_dropout_rate == 0.1


def test_lra_base_sizes():
  from configs.lra import image, listops, pathfinder, text  # pylint: disable=import-outside-toplevel
  lo = listops.get_config()
  assert (lo.data.name, lo.model.num_layers, lo.model.hidden_size, lo.model.num_heads,
          lo.model.mlp_dim, lo.train.batch_size, lo.train.num_steps) == (
              "listops", 6, 512, 8, 2048, 32, 5000)
  tx = text.get_config()
  assert (tx.data.name, tx.model.num_layers, tx.model.hidden_size, tx.model.mlp_dim,
          tx.train.num_steps) == ("imdb_bytes_4k", 4, 256, 1024, 20000)
  assert text.get_config("length=1k").data.name == "imdb_bytes_1k"
  im = image.get_config()
  assert (im.data.name, im.model.num_layers, im.model.hidden_size, im.train.batch_size) == (
      "cifar10_gray", 1, 32, 256)
  assert image.get_config("offline").data.name == "digits"
  pf = pathfinder.get_config()
  assert (pf.data.name, pf.model.pooling, pf.model.position, pf.train.batch_size) == (
      "pathfinder32", "mean", "sinusoidal", 512)
  # Pinned parameter counts of the LRA-size models (vocabulary and length included).
  assert _params(lo) == (PINNED_LISTOPS_BASE, 0)


PINNED_LISTOPS_BASE = 19_953_162  # 6 x 3.15M blocks + 2,001 x 512 positions + embeddings


def test_pathx_base_is_lra_path_x():
  from configs.lra import pathx  # pylint: disable=import-outside-toplevel
  px = pathx.get_config()
  assert data_lib.get_dataset_spec(px.data.name).info.max_length == 16384
  assert (px.data.name, px.model.num_layers, px.model.hidden_size, px.model.num_heads,
          px.model.mlp_dim, px.model.position, px.model.pooling) == (
              "pathx", 1, 32, 2, 32, "learned", "mean")
  assert (px.train.batch_size, px.train.num_steps, px.optimizer.warmup_steps,
          px.optimizer.grad_clip_norm, px.optimizer.weight_decay) == (64, 500_000, 2500, 1.0, 0.0)
  assert _params(px) == (PINNED_PATHX_BASE, 0)
  assert pathx.get_config("size=small").data.name == "pathx_small"


# 16,384 x 32 learned positions + 257 x 32 embeddings + one 6,464-parameter block + head
PINNED_PATHX_BASE = 539_106


def test_bad_size_is_an_error():
  from configs.lra import listops  # pylint: disable=import-outside-toplevel
  with pytest.raises(ValueError, match="size='huge'"):
    listops.get_config("size=huge")


def test_sweep_can_name_its_kernels():
  from configs.lra import listops  # pylint: disable=import-outside-toplevel
  points = listops.get_sweep("size=small,kernels=dot_product+performer")
  assert points == [{"model.attention.kernel": "dot_product"},
                    {"model.attention.kernel": "performer"}]
  with pytest.raises(ValueError, match="unknown kernel 'foo'"):
    listops.get_sweep("kernels=foo")
