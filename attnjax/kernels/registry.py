"""The kernel registry: every attention kernel is reachable by name."""

from __future__ import annotations

from typing import Callable

from attnjax.registry import Registry

KERNELS: Registry[Callable] = Registry("kernel")


def register_kernel(name: str) -> Callable[[Callable], Callable]:
  """Decorator registering an attention kernel under ``name`` (duplicates are refused)."""
  return KERNELS.register(name)


def get_kernel(name: str) -> Callable:
  """Returns the kernel registered as ``name``; an unknown name lists the known ones."""
  return KERNELS.get(name)


def list_kernels() -> list[str]:
  """Sorted names of all registered kernels."""
  return KERNELS.names()
