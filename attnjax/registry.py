"""A tiny name -> object registry shared by kernels, datasets, models and optimizers.

Pure Python on purpose: ``attnjax.kernels`` uses it and must import nothing heavy.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
  """Maps names to objects of one kind; refuses duplicates and lists what exists.

  Example:
    >>> KERNELS = Registry("kernel")
    >>> @KERNELS.register("dense")
    ... def dense(q, k, v): ...
    >>> KERNELS.get("dense") is dense
    True
  """

  def __init__(self, kind: str):
    self.kind = kind
    self._items: dict[str, T] = {}

  def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
    """Registers ``obj`` under ``name``; usable as a decorator when ``obj`` is omitted."""
    if not isinstance(name, str) or not name:
      raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")

    def add(o: T) -> T:
      if name in self._items:
        raise ValueError(
            f"{self.kind} {name!r} is already registered (to {self._items[name]!r}); "
            "names must be unique")
      self._items[name] = o
      return o

    return add if obj is None else add(obj)

  def get(self, name: str) -> T:
    """Returns the object registered as ``name``; an unknown name lists the known ones."""
    try:
      return self._items[name]
    except KeyError:
      known = ", ".join(sorted(self._items)) or "(none)"
      raise ValueError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}") from None

  def names(self) -> list[str]:
    """Sorted names of everything registered."""
    return sorted(self._items)

  def __contains__(self, name: object) -> bool:
    return name in self._items

  def __iter__(self) -> Iterator[str]:
    return iter(self.names())

  def __len__(self) -> int:
    return len(self._items)
