"""Import hygiene: other JAX projects take only the kernels."""

import subprocess
import sys

HEAVY = ("flax", "optax", "orbax", "tensorflow", "tensorflow_datasets", "grain",
         "ml_collections", "matplotlib", "sklearn")


def _modules_after(statement: str) -> set[str]:
  code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  return set(out.stdout.split())


def test_kernels_import_only_jax_and_numpy():
  loaded = _modules_after("import attnjax.kernels")
  assert not {m for m in HEAVY if m in loaded}


def test_package_root_is_light():
  loaded = _modules_after("import attnjax")
  assert "jax" not in loaded and not {m for m in HEAVY if m in loaded}
