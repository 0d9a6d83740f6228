r"""Compiles the BERT-base train step for a TPU v5e 2x2 topology on this host; memory table.

Needs the ``tpu`` extra (libtpu); no TPU. For each mesh (data, fsdp, tensor) over the 4
chips it compiles the train step of ``tests/test_export.py``'s BERT-base config (12 x 768,
seq 512, bfloat16, batch 8, ``scan_layers`` for a tractable compile) and prints the
compiled memory analysis per device against the chip's 16 GiB of HBM:

  JAX_PLATFORMS=cpu TPU_WORKER_HOSTNAMES=localhost ALLOW_MULTIPLE_LIBTPU_LOAD=1 \
      python experiments/gpu/tpu_memory.py \
      --meshes 2,2,1 2,1,2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

V5E_HBM_BYTES = 16 * 2**30


def bert_base_config(data: int, fsdp: int, tensor: int):
  """BERT-base at seq 512 (511 tokens + CLS), bfloat16, batch 8, under the mesh strategy."""
  from configs import default  # pylint: disable=import-outside-toplevel
  c = default.get_config()
  c.model.preset = "base"
  for key in ("num_layers", "hidden_size", "num_heads", "mlp_dim"):
    c.model[key] = None  # the preset's
  c.model.dtype = "bfloat16"
  c.model.pre_layer_norm = False
  c.model.scan_layers = True
  c.train.batch_size = 8
  c.parallel.strategy = "mesh"
  c.parallel.mesh.data, c.parallel.mesh.fsdp, c.parallel.mesh.tensor = data, fsdp, tensor
  return c


def bert_base_info():
  from attnjax.data import DatasetInfo  # pylint: disable=import-outside-toplevel
  return DatasetInfo("bert_base_512", vocab_size=30522, max_length=511, num_classes=2,
                     num_train=1, num_eval=1)


def compile_memory(config, info, topology: str = "v5e:2x2") -> dict:
  """Compiles the config's train step for ``topology``; its memory analysis in bytes."""
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
  from attnjax.kernels import dispatch  # pylint: disable=import-outside-toplevel
  from attnjax.train import aot  # pylint: disable=import-outside-toplevel
  topo = topologies.get_topology_desc(topology, "tpu")
  s = aot.abstract_train_step(config, info, devices=topo.devices)
  t0 = time.time()
  with dispatch.target("tpu"):
    compiled = s.step.lower(s.state, s.batch).compile()
  m = compiled.memory_analysis()
  total = (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
           + m.temp_size_in_bytes)
  return dict(argument=m.argument_size_in_bytes, output=m.output_size_in_bytes,
              alias=m.alias_size_in_bytes, temp=m.temp_size_in_bytes, total=total,
              num_params=s.num_params, compile_s=round(time.time() - t0, 1),
              device_kind=topo.devices[0].device_kind, num_devices=len(topo.devices))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--meshes", nargs="+", default=["2,2,1", "2,1,2"],
                      help="data,fsdp,tensor sizes (product 4)")
  parser.add_argument("--out", default="", help="also write the rows as JSON here")
  args = parser.parse_args()
  rows = []
  print("| mesh (data,fsdp,tensor) | params | arguments | temp | outputs - aliased | total / "
        "device | of 16 GiB | compile s |")
  print("|---|---|---|---|---|---|---|---|")
  for mesh in args.meshes:
    data, fsdp, tensor = (int(x) for x in mesh.split(","))
    r = compile_memory(bert_base_config(data, fsdp, tensor), bert_base_info())
    r["mesh"] = mesh
    rows.append(r)
    mib = lambda b: f"{b / 2**20:,.1f} MiB"  # noqa: E731
    print(f"| {mesh} | {r['num_params']:,} | {mib(r['argument'])} | {mib(r['temp'])} | "
          f"{mib(r['output'] - r['alias'])} | {mib(r['total'])} | "
          f"{100 * r['total'] / V5E_HBM_BYTES:.1f}% | {r['compile_s']} |", flush=True)
  if args.out:
    with open(args.out, "w") as f:
      json.dump(rows, f, indent=1)


if __name__ == "__main__":
  main()
