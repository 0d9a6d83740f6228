"""Compiles for a TPU v5e 2x2 topology on this CPU host (the ``tpu`` extra: libtpu).

Skipped where libtpu is absent. The train step of a small BERT-layout encoder is
compiled under meshes using data, FSDP and tensor axes, and its compiled memory analysis
must fit a v5e chip; the Pallas splash kernel is compiled inside ``shard_map`` under a
mesh (Mosaic kernels are not partitioned automatically). BERT-base's own numbers come from
``experiments/gpu/tpu_memory.py`` (minutes to compile here; see experiments/gpu/README.md).
"""

import importlib.util
import os

import pytest

pytestmark = [
    pytest.mark.tpu_compile,
    pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                       reason="needs libtpu (pip install -e '.[tpu]')"),
]

V5E_HBM_BYTES = 16 * 2**30


@pytest.fixture(scope="module")
def topology():
  # libtpu takes a machine-wide lock file by default; other jax processes may hold it.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
  return topologies.get_topology_desc("v5e:2x2", "tpu")


# One mesh keeps the CI cost at one compile; experiments/gpu/tpu_memory.py compiles
# BERT-base under (2, 2, 1) and (2, 1, 2).
@pytest.mark.parametrize("data,fsdp,tensor", [(1, 2, 2)])
def test_train_step_compiles_for_v5e_and_fits(topology, data, fsdp, tensor):
  from experiments.gpu import tpu_memory  # pylint: disable=import-outside-toplevel
  from attnjax.data import DatasetInfo  # pylint: disable=import-outside-toplevel
  c = tpu_memory.bert_base_config(data, fsdp, tensor)
  c.model.preset = "tiny"  # BERT's layout at 2 x 128: a compile of seconds, not minutes
  info = DatasetInfo("tiny_127", vocab_size=1000, max_length=127, num_classes=2,
                     num_train=1, num_eval=1)
  mem = tpu_memory.compile_memory(c, info)
  assert mem["device_kind"].startswith("TPU v5") and mem["num_devices"] == 4
  # Parameters + Adam moments (float32), sharded over fsdp x tensor, are the arguments.
  assert mem["argument"] >= 3 * 4 * mem["num_params"] / (fsdp * tensor)
  assert 0 < mem["temp"] and mem["total"] < V5E_HBM_BYTES


def test_pallas_splash_inside_shard_map_compiles_for_tpu(topology):
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=import-outside-toplevel
  from attnjax import kernels  # pylint: disable=import-outside-toplevel
  from attnjax.kernels import dispatch  # pylint: disable=import-outside-toplevel
  mesh = jax.make_mesh((2, 2), ("data", "tensor"), devices=topology.devices,
                       axis_types=(jax.sharding.AxisType.Explicit,) * 2)
  spec = P("data", None, "tensor", None)
  x = jax.ShapeDtypeStruct((4, 256, 4, 128), jnp.bfloat16, sharding=NamedSharding(mesh, spec))

  def loss(q, k, v):
    attend = jax.shard_map(
        lambda q, k, v: kernels.dot_product_attention(q, k, v, is_causal=True,
                                                      implementation="pallas"),
        # pallas_call outputs carry no varying-axes type; shard_map cannot check them.
        mesh=mesh, in_specs=(spec, spec, spec), out_specs=spec, check_vma=False)
    return jnp.sum(attend(q, k, v).astype(jnp.float32))

  with dispatch.target("tpu"):
    compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(x, x, x).compile()
  assert "tpu_custom_call" in compiled.as_text() or "custom-call" in compiled.as_text()
