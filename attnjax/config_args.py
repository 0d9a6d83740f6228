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


# Keyword arguments every kernel shares (the contract), set by the layer, not by configs.
_CONTRACT_ARGS = frozenset({
    "query", "key", "value", "bias", "mask", "scale", "is_causal", "dropout_rate",
    "dropout_rng", "deterministic", "broadcast_dropout", "dtype", "precision", "module",
    "params", "feature_rng", "implementation", "return_residual"})
# Options whose default is None but whose values are scalars a flag can carry.
_NONE_DEFAULT_TYPES = {"logits_soft_cap": float, "attention_dim": int, "block_q": int,
                       "block_kv": int, "temperature": float, "sigmoid_bias": float}


def attention_config(kernel: str):
  """``config.model.attention``: the kernel's name and every kernel option, unset.

  Each scalar keyword option of any registered kernel becomes a typed placeholder (None =
  the kernel's own default), so a locked config still takes
  ``--config.model.attention.kernel=performer --config.model.attention.num_features=256``.
  Unset options are not passed to the kernel; an option the chosen kernel does not know is
  refused by the kernel, by name.
  """
  import inspect  # pylint: disable=import-outside-toplevel
  import ml_collections  # pylint: disable=import-outside-toplevel
  from attnjax import kernels  # pylint: disable=import-outside-toplevel

  kernels.get_kernel(kernel)  # an unknown name lists the known ones
  types: dict[str, type] = {}
  for name in kernels.list_kernels():
    for p in inspect.signature(kernels.get_kernel(name)).parameters.values():
      if p.kind is not inspect.Parameter.KEYWORD_ONLY or p.name in _CONTRACT_ARGS:
        continue
      t = type(p.default) if isinstance(p.default, (bool, int, float, str)) else \
          _NONE_DEFAULT_TYPES.get(p.name)
      if t is not None:
        # int and float defaults of one name across kernels: the flag takes a float.
        types[p.name] = float if {t, types.get(p.name, t)} == {int, float} else t
  config = ml_collections.ConfigDict()
  config.kernel = kernel
  for name in sorted(types):
    config[name] = ml_collections.config_dict.placeholder(types[name])
  return config
