"""Parsing the ``arg`` of ``get_config(arg)``: ``"key=value,key=value"`` into typed values."""

from __future__ import annotations

from typing import Any


def parse_arg(arg: str | None, **defaults: Any) -> dict[str, Any]:
  """Parses ``"k=v,k2=v2"`` into ``defaults`` updated with typed values.

  Each value takes the type of its default (``bool`` accepts true/false/1/0/yes/no); a key
  without ``=`` sets a bool default to True (``"smoke"`` means ``smoke=True``). An unknown
  key or an unparseable value is a ValueError that names it and lists the known keys.

  Example:
    >>> parse_arg("kernel=chunked,smoke", kernel="dot_product", smoke=False)
    {'kernel': 'chunked', 'smoke': True}
  """
  out = dict(defaults)
  for item in filter(None, (s.strip() for s in (arg or "").split(","))):
    key, sep, raw = item.partition("=")
    key = key.strip()
    if key not in defaults:
      raise ValueError(f"unknown config argument {key!r} in {arg!r}; known: {sorted(defaults)}")
    default = defaults[key]
    if not sep:
      if not isinstance(default, bool):
        raise ValueError(f"config argument {key!r} needs a value ({key}=...)")
      out[key] = True
      continue
    raw = raw.strip()
    try:
      if isinstance(default, bool):
        lowered = raw.lower()
        if lowered not in ("true", "false", "1", "0", "yes", "no"):
          raise ValueError(raw)
        out[key] = lowered in ("true", "1", "yes")
      elif default is None or isinstance(default, str):
        out[key] = raw
      else:
        out[key] = type(default)(raw)
    except ValueError:
      raise ValueError(f"config argument {key}={raw!r} is not a valid "
                       f"{type(default).__name__}") from None
  return out
