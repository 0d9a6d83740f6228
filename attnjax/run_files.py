"""Reading a run directory's JSON files: ``config.json`` and ``metrics.jsonl``.

One reader for the train loop, ``attnjax.inspect``, ``python -m attnjax.plot`` and the
sweep (standard library only, so ``attnjax.inspect`` reads runs without importing
``attnjax.train``). A bad file is a ValueError naming the file, line and column; the one
exception is a cut-off last line of ``metrics.jsonl`` (what a kill during a write leaves),
which is dropped with a warning.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"


def read_text(path: str) -> str:
  """The UTF-8 text of ``path``; a ValueError names the file when it cannot be read."""
  try:
    with open(path, encoding="utf-8") as f:
      return f.read()
  except UnicodeDecodeError as e:
    raise ValueError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from None
  except IsADirectoryError:
    raise ValueError(f"{path} is a directory, not a file") from None
  except OSError as e:
    raise ValueError(f"{path}: cannot read: {e.strerror or e}") from None


def read_json(path: str) -> Any:
  """The JSON value in ``path``.

  Raises:
    ValueError: the file is unreadable, empty or not JSON (names file, line and column).
  """
  text = read_text(path)
  if not text.strip():
    raise ValueError(f"{path} is empty (expected JSON); a crash while it was written "
                     "leaves this: restore it or use a new --workdir")
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}, line {e.lineno}, column {e.colno}: not valid JSON: {e.msg}"
                     ) from None


def read_config(workdir: str) -> dict | None:
  """``<workdir>/config.json`` as a dict, or None when the file does not exist.

  Raises:
    ValueError: the file is unreadable, not JSON, or not a JSON object.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.lexists(path):
    return None
  config = read_json(path)
  if not isinstance(config, dict):
    raise ValueError(f"{path}: expected a JSON object (the run's config), got "
                     f"{type(config).__name__}")
  return config


def parse_metrics(text: str, path: str, *, warn: bool = True) -> list[dict]:
  """The records of a ``metrics.jsonl`` text (``path`` names it in messages).

  A last line without its newline that is not JSON (a write cut short) is dropped, with a
  warning on stderr when ``warn``.

  Raises:
    ValueError: any other line is not a JSON object with an int ``step`` and a ``split``.
  """
  lines = text.split("\n")
  records = []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      if number == len(lines):  # no newline after it: the write was cut short
        if warn:
          print(f"warning: {path}, line {number}: dropped a cut-off last record "
                f"({line[:40]!r}...)", file=sys.stderr, flush=True)
        break
      raise ValueError(f"{path}, line {number}, column {e.colno}: not valid JSON: {e.msg}"
                       ) from None
    if not (isinstance(record, dict) and isinstance(record.get("step"), int)
            and isinstance(record.get("split"), str)):
      raise ValueError(f"{path}, line {number}: expected an object with an int 'step' and a "
                       f"'split', got {line[:80]!r}")
    records.append(record)
  return records


def read_metrics(workdir: str, *, warn: bool = True) -> list[dict]:
  """Every record of ``<workdir>/metrics.jsonl`` (see :func:`parse_metrics`).

  Raises:
    FileNotFoundError: the run has no ``metrics.jsonl``.
    ValueError: the file is unreadable or a line other than a cut-off last one is bad.
  """
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{workdir!r} has no {METRICS_FILE}")
  return parse_metrics(read_text(path), path, warn=warn)
