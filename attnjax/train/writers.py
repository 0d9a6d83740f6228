"""Metric writers: ``<workdir>/metrics.jsonl`` and TensorBoard event files (no TensorFlow)."""

from __future__ import annotations

import json
import math
import os
from typing import Mapping

import numpy as np

from attnjax.run_files import METRICS_FILE, parse_metrics, read_metrics  # noqa: F401  (re-exported)


def _to_number(value) -> float | int:
  value = np.asarray(value).item()
  if isinstance(value, float) and not math.isfinite(value):
    return value  # json writes NaN/Infinity; a reader sees the blow-up rather than a gap.
  return value


class MetricWriter:
  """Appends ``{"step", "split", <metric>: number}`` lines and TensorBoard scalars.

  On resume, ``truncate_after(step)`` drops lines logged after the restored checkpoint so
  the log never shows two histories for the same steps.

  Args:
    workdir: the run directory.
    enabled: False on processes other than 0 (they write nothing).
  """

  def __init__(self, workdir: str, *, enabled: bool = True):
    self.path = os.path.join(workdir, METRICS_FILE)
    self.enabled = enabled
    self._tb = None
    if enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def truncate_after(self, step: int) -> None:
    """Removes records whose step is greater than ``step``, and a cut-off last line (a
    write a kill interrupted), atomically."""
    if not self.enabled or not os.path.exists(self.path):
      return
    with open(self.path, encoding="utf-8", errors="replace") as f:
      text = f.read()
    records = parse_metrics(text, self.path)
    kept = [r for r in records if r["step"] <= step]
    if len(kept) != len(records) or (text and not text.endswith("\n")):
      tmp = self.path + ".tmp"
      with open(tmp, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in kept)
      os.replace(tmp, self.path)

  def write(self, step: int, split: str, metrics: Mapping[str, object]) -> None:
    """Writes one record for ``split`` at ``step``."""
    if not self.enabled:
      return
    record = {"step": int(step), "split": split}
    record.update({k: _to_number(v) for k, v in metrics.items()})
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    for key, value in record.items():
      if key not in ("step", "split"):
        self._tb.add_scalar(f"{split}/{key}", value, int(step))

  def write_image(self, step: int, tag: str, image) -> None:
    """Writes an ``[H, W, 3]`` uint8 image to TensorBoard (no metrics.jsonl record)."""
    if self.enabled:
      self._tb.add_image(tag, image, int(step), dataformats="HWC")

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None
