"""Progress reporting: a bar on a terminal, plain periodic lines otherwise (CI, logs)."""

from __future__ import annotations

import sys
import time
from typing import Mapping


class Progress:
  """Shows step, loss, examples/s and ETA.

  Args:
    total_steps: the last step of the run.
    start_step: the step training resumes from.
    batch_size: global batch size, for examples/s.
    every: steps between plain log lines when not on a terminal.
    enabled: False on processes other than 0.
  """

  def __init__(self, total_steps: int, start_step: int, batch_size: int, *, every: int,
               enabled: bool = True, stream=None):
    self.total, self.start, self.batch_size = total_steps, start_step, batch_size
    self.every = max(1, every)
    self.stream = stream or sys.stderr
    self.enabled = enabled
    self._bar = None
    self._t0 = time.perf_counter()
    self._last_step, self._last_t = start_step, self._t0
    if enabled and self.stream.isatty():
      from tqdm import tqdm  # pylint: disable=import-outside-toplevel
      self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                       file=self.stream)

  def update(self, step: int, metrics: Mapping[str, float] | None = None) -> None:
    """Reports that ``step`` is done; ``metrics`` (loss, ...) are shown when given."""
    if not self.enabled:
      return
    now = time.perf_counter()
    if self._bar is not None:
      self._bar.update(step - self._bar.n)
      if metrics:
        rate = (step - self.start) * self.batch_size / max(now - self._t0, 1e-9)
        self._bar.set_postfix(loss=f"{metrics['loss']:.4f}", ex_s=f"{rate:.0f}", refresh=False)
      return
    if metrics is None or (step % self.every and step != self.total):
      return
    rate = (step - self._last_step) * self.batch_size / max(now - self._last_t, 1e-9)
    steps_per_s = (step - self.start) / max(now - self._t0, 1e-9)
    eta = (self.total - step) / max(steps_per_s, 1e-9)
    mfu = f"  MFU {100 * metrics['mfu']:.1f}%" if "mfu" in metrics else ""
    print(f"step {step}/{self.total}  loss {metrics['loss']:.4f}  {rate:.0f} examples/s{mfu}  "
          f"eta {_fmt_seconds(eta)}", file=self.stream, flush=True)
    self._last_step, self._last_t = step, now

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()


def _fmt_seconds(seconds: float) -> str:
  seconds = int(round(seconds))
  return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
