r"""Throughput and MFU of every parallel strategy, one subprocess per point.

  python experiments/scaling/scaling.py            # writes results.json and README.md here

Each point trains the digits encoder (hidden 128, 4 layers, batch 64) for a few steps under
`launch.py` with N fake CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=N)
and reads the last train record of its metrics.jsonl (compilation excluded: the first
logging window is dropped). On a CPU the "devices" share the same cores, so the numbers
show the overhead of each strategy, not speed-ups; on accelerators run the same command
with real devices.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# (label, devices, config overrides)
POINTS = [
    ("jit", 1, ["--config.parallel.strategy=jit"]),
    ("pmap", 2, ["--config.parallel.strategy=pmap"]),
    ("pmap", 8, ["--config.parallel.strategy=pmap"]),
    ("mesh data=2", 2, ["--config.parallel.strategy=mesh"]),
    ("mesh data=8", 8, ["--config.parallel.strategy=mesh"]),
    ("mesh data=4 fsdp=2", 8, ["--config.parallel.strategy=mesh", "--config.parallel.mesh.data=4",
                               "--config.parallel.mesh.fsdp=2"]),
    ("mesh data=2 tensor=4", 8, ["--config.parallel.strategy=mesh", "--config.parallel.mesh.data=2",
                                 "--config.parallel.mesh.tensor=4"]),
]
MODEL = ["--config.model.hidden_size=128", "--config.model.num_layers=4",
         "--config.model.num_heads=4", "--config.model.mlp_dim=512",
         "--config.train.batch_size=64", "--config.train.num_steps=60",
         "--config.train.log_every=20", "--config.train.eval_every=60",
         "--config.train.checkpoint_every=60", "--config.optimizer.warmup_steps=10"]


def run_point(label: str, devices: int, overrides: list[str], tmp: str) -> dict:
  workdir = os.path.join(tmp, f"{label}-{devices}dev".replace(" ", "_").replace("=", ""))
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             JAX_PLATFORMS="cpu")
  cmd = [sys.executable, os.path.join(ROOT, "launch.py"), "--config", "configs/default.py",
         f"--config.data.data_dir={os.path.join(tmp, 'tfds')}", *MODEL, *overrides,
         "--workdir", workdir]
  r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  if r.returncode:
    return {"label": label, "devices": devices, "error": r.stderr.strip().splitlines()[-1]}
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    train = [json.loads(line) for line in f if '"train"' in line]
  last = train[-1]
  return {"label": label, "devices": devices, "examples_per_sec": last["examples_per_sec"],
          "tokens_per_sec": last["tokens_per_sec"], "step_time": last["step_time"],
          "mfu": last["mfu"], "loss": last["loss"]}


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown model"


def main() -> None:
  commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                          capture_output=True, text=True).stdout.strip()
  date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
  hardware = f"{os.cpu_count()}-core {platform.machine()} CPU ({_cpu_model()})"
  with tempfile.TemporaryDirectory() as tmp:
    rows = []
    for label, devices, overrides in POINTS:
      row = run_point(label, devices, overrides, tmp)
      print(row, flush=True)
      rows.append(row)
  result = {"commit": commit, "date": date, "hardware": hardware, "rows": rows}
  with open(os.path.join(HERE, "results.json"), "w") as f:
    json.dump(result, f, indent=2)
  write_readme(result)


def write_readme(result: dict) -> None:
  jit = next(r for r in result["rows"] if r["label"] == "jit" and "error" not in r)
  lines = [
      "| strategy | devices | examples/s | tokens/s | step time (ms) | MFU | vs jit |",
      "|---|---|---|---|---|---|---|",
  ]
  for r in result["rows"]:
    if "error" in r:
      lines.append(f"| {r['label']} | {r['devices']} | failed: {r['error']} | | | | |")
      continue
    lines.append(f"| {r['label']} | {r['devices']} | {r['examples_per_sec']:.0f} | "
                 f"{r['tokens_per_sec']:.0f} | {1000 * r['step_time']:.1f} | "
                 f"{100 * r['mfu']:.1f}% | {r['examples_per_sec'] / jit['examples_per_sec']:.2f}x |")
  table = "\n".join(lines)
  with open(os.path.join(HERE, "README.template.md")) as f:
    template = f.read()
  with open(os.path.join(HERE, "README.md"), "w") as f:
    f.write(template.format(table=table, **{k: result[k] for k in ("commit", "date", "hardware")}))


if __name__ == "__main__":
  main()
