"""Every accelerator path lowers for CUDA and TPU on this CPU host (``jax.export``).

Abstract shapes only (``jax.ShapeDtypeStruct``): nothing is allocated or compiled, so the
train steps of real sizes (BERT-base, LRA ListOps) are checked in seconds. The kernels
are lowered forward and backward with every implementation that applies on the platform
(``dispatch.target`` makes the choice for it); cuDNN only where jax's CUDA plugin is
installed (it refuses to lower without one).
"""

import jax
import jax.numpy as jnp
import pytest
from jax import export

from attnjax import kernels
from attnjax.data import DatasetInfo
from attnjax.kernels import backends
from attnjax.kernels import dispatch
from attnjax.train import aot

PLATFORMS = [("cuda", "gpu"), ("tpu", "tpu")]
# jax gives Triton custom calls no serialization-compatibility guarantee; lowering is what
# is checked here (Mosaic's tpu_custom_call is on the allowlist).
TRITON = [export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")]


def bert_base_config(strategy="mesh"):
  """BERT-base (12 x 768, 12 heads, MLP 3072) at seq 512 in bfloat16, batch 8."""
  from configs import default  # pylint: disable=import-outside-toplevel
  c = default.get_config()
  c.model.preset = "base"
  for key in ("num_layers", "hidden_size", "num_heads", "mlp_dim"):
    c.model[key] = None  # the preset's
  c.model.dtype = "bfloat16"
  c.model.pre_layer_norm = False
  c.train.batch_size = 8
  c.parallel.strategy = strategy
  c.parallel.mesh.data, c.parallel.mesh.fsdp, c.parallel.mesh.tensor = 2, 2, 2
  return c


# 511 tokens + the CLS vector = 512 positions.
BERT_BASE_INFO = DatasetInfo("bert_base_512", vocab_size=30522, max_length=511, num_classes=2,
                             num_train=1, num_eval=1)


def _configs():
  from configs import default  # pylint: disable=import-outside-toplevel
  from configs.lra import listops  # pylint: disable=import-outside-toplevel
  from attnjax import data as data_lib  # pylint: disable=import-outside-toplevel
  out = {}
  digits = data_lib.get_dataset_info(default.get_config().data)
  for strategy in ("jit", "mesh"):
    c = default.get_config()
    c.parallel.strategy = strategy
    c.parallel.mesh.data, c.parallel.mesh.fsdp, c.parallel.mesh.tensor = 4, 2, 1
    out[f"default-{strategy}"] = (c, digits)
  out["bert_base-mesh"] = (bert_base_config(), BERT_BASE_INFO)
  lra = listops.get_config()
  lra_info = data_lib.get_dataset_info(lra.data)
  for strategy in ("jit", "mesh"):
    c = listops.get_config()
    c.parallel.strategy = strategy
    c.parallel.mesh.data, c.parallel.mesh.tensor = 4, 2
    out[f"lra_listops-{strategy}"] = (c, lra_info)
  return out


CONFIGS = ["default-jit", "default-mesh", "bert_base-mesh", "lra_listops-jit",
           "lra_listops-mesh"]


@pytest.fixture(scope="module")
def steps():
  """name -> AbstractStep, built once (the construction the train loop uses)."""
  return {name: aot.abstract_train_step(c, info) for name, (c, info) in _configs().items()}


@pytest.mark.parametrize("name", CONFIGS)
def test_train_step_exports_for_cuda_and_tpu(steps, name):
  # One trace lowered for both platforms; attention takes the implementation chosen on
  # this host (XLA or chunked), which lowers everywhere. The fused paths are exported per
  # platform below.
  s = steps[name]
  exp = export.export(s.step, platforms=["cuda", "tpu"])(s.state, s.batch)
  assert exp.platforms == ("cuda", "tpu")
  assert exp.nr_devices == (8 if name.endswith("mesh") else 1)
  assert len(exp.out_avals) > len(jax.tree_util.tree_leaves(s.state))  # state + metrics
  assert "loss" in str(exp.out_tree)
  if name == "bert_base-mesh":
    assert 105e6 < s.num_params < 115e6  # BERT-base encoder + embeddings of 30522 tokens
  if name.endswith("mesh"):  # parameters sharded over fsdp/tensor, the batch over data x fsdp
    text = exp.mlir_module()
    assert '{"fsdp"}' in text or '{"tensor"}' in text


def _abstract(shape, dtype):
  return jax.ShapeDtypeStruct(shape, dtype)


Q = _abstract((2, 256, 4, 64), jnp.bfloat16)
KV = _abstract((2, 256, 2, 64), jnp.bfloat16)
SEG = _abstract((2, 256), jnp.int32)


def _fwd_bwd(fn):
  def loss(q, k, v, seg):
    return jnp.sum(fn(q, k, v, seg).astype(jnp.float32) ** 2)
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))


def _implementations():
  cases = []
  for platform, target in PLATFORMS:
    impls = ["xla", "chunked", "pallas"] + (["cudnn"] if target == "gpu" else [])
    for impl in impls:
      cases.append((platform, target, impl))
  return cases


@pytest.mark.parametrize("platform,target,implementation", _implementations(),
                         ids=[f"{p}-{i}" for p, _, i in _implementations()])
def test_dot_product_exports_with_every_implementation(platform, target, implementation):
  if implementation == "cudnn" and not backends.cudnn_available():
    pytest.skip("cuDNN lowering needs jax's CUDA plugin")
  # Options each implementation honours: segment ids (Pallas), a key mask (cuDNN), causal.
  def attend(q, k, v, seg):
    kw = dict(is_causal=True, implementation=implementation)
    if implementation == "cudnn":
      kw["mask"] = (seg >= 0)[:, None, None, :]
    elif implementation != "pallas" or target == "tpu":
      kw["q_segment_ids"] = seg
      kw["local_window_size"] = (64, 0)
    else:
      kw["q_segment_ids"] = seg
    return kernels.dot_product_attention(q, k, v, **kw)

  with dispatch.target(target, compute_capability=(9, 0)):
    exp = export.export(_fwd_bwd(attend), platforms=[platform], disabled_checks=TRITON)(
        Q, KV, KV, SEG)
  text = exp.mlir_module()
  if implementation == "pallas":
    assert ("__gpu$xla.gpu.triton" in text or "triton" in text) if target == "gpu" else (
        "tpu_custom_call" in text)
  assert exp.out_avals[1].shape == Q.shape


@pytest.mark.parametrize("name", sorted(set(kernels.list_kernels()) - {"dot_product"}))
def test_every_registered_kernel_exports_for_cuda_and_tpu(name):
  kernel = kernels.get_kernel(name)
  q = _abstract((1, 128, 2, 16), jnp.float32)
  params = jax.eval_shape(lambda: kernels.init_params(
      kernel, jax.random.PRNGKey(0), num_heads=2, num_kv_heads=2, head_dim=16, q_len=128,
      kv_len=128))

  def loss(q, k, v, params):
    extra = {"params": params} if params else {}
    return jnp.sum(kernel(q, k, v, **extra) ** 2)

  exp = export.export(jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3))),
                      platforms=["cuda", "tpu"])(q, q, q, params)
  assert exp.platforms == ("cuda", "tpu")


def test_gpu_benchmark_dry_run_lowers_every_path_for_cuda(tmp_path, monkeypatch):
  """experiments/gpu/bench.py --dry_run --tiny: every path lowered or refused with a reason."""
  import json  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  from experiments.gpu import bench  # pylint: disable=import-outside-toplevel
  out = tmp_path / "results.json"
  monkeypatch.setattr(sys, "argv", ["bench.py", "--dry_run", "--tiny", "--out", str(out)])
  bench.main()
  rows = json.loads(out.read_text())["rows"]
  attention = [r for r in rows if r["bench"] == "attention"]
  assert len(attention) == 3 * len(bench.ATTENTION_PATHS) * 2
  for r in attention:
    assert r.get("lowered_for") == "cuda" or r.get("skipped"), r
  lowered = {r["path"] for r in attention if r.get("lowered_for")}
  assert {"attnjax auto", "attnjax pallas", "attnjax chunked"} <= lowered
  assert next(r for r in rows if r["bench"] == "bert_base_train")["lowered_for"] == "cuda"
  assert (tmp_path / "results.md").exists()
