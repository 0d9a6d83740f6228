"""Real text on every fresh machine: docstrings of the installed Python standard library.

Docstrings are read from the standard library's source files with ``ast`` (nothing is
imported, so no module runs), in sorted path order, skipping test suites, ``site-packages``
and exact duplicates. Two TFDS configs of :class:`StdlibDocstrings`:

* ``corpus``: every docstring as a document, for masked-LM pretraining; a seeded 5%
  held-out ``test`` split.
* ``packages``: the demo classification task "which standard-library package does this
  docstring come from": the :data:`NUM_PACKAGES` packages (directories) with the most
  docstrings, :data:`PER_PACKAGE` docstrings of each drawn with a seeded generator
  (balanced), split 80/20 per package.

The text depends on the Python version (docstrings change between releases) but not on
the machine; ``python_version`` in the dataset description records it.
"""

from __future__ import annotations

import ast
import collections
import os
import pathlib
import sys
import sysconfig
from typing import Any, Iterator

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from attnjax.data.text_files import _code_path, holdout_split

SEED = 20240917
NUM_PACKAGES = 8
PER_PACKAGE = 250
TEST_FRACTION = 0.2
CORPUS_TEST_FRACTION = 0.05
MIN_CHARS = 20
_SKIP_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages",
                        "__pycache__", "__phello__"})


def stdlib_root() -> pathlib.Path:
  """The directory of the standard library's Python sources."""
  return pathlib.Path(sysconfig.get_paths()["stdlib"])


def _source_files(root: pathlib.Path) -> Iterator[pathlib.Path]:
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
    for name in sorted(filenames):
      if name.endswith(".py"):
        yield pathlib.Path(dirpath) / name


def extract_docstrings(root: pathlib.Path | None = None) -> list[dict[str, str]]:
  """Every distinct docstring of the standard library, in a deterministic order.

  Returns:
    ``[{'text', 'package', 'module', 'qualname'}]``; ``package`` is the top-level directory
    (``asyncio``, ``email``, ...) or ``''`` for a single-file module.
  """
  root = root or stdlib_root()
  seen: set[str] = set()
  out = []
  for path in _source_files(root):
    rel = path.relative_to(root)
    try:
      tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError):  # e.g. lib2to3 grammar fixtures
      continue
    parts = list(rel.with_suffix("").parts)
    if parts[-1] == "__init__":
      parts = parts[:-1]
    module = ".".join(parts)
    package = rel.parts[0] if len(rel.parts) > 1 else ""

    def visit(node: ast.AST, prefix: str) -> None:
      for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
          name = f"{prefix}.{child.name}" if prefix else child.name
          add(ast.get_docstring(child), name)
          visit(child, name)

    def add(doc: str | None, qualname: str) -> None:
      if doc and len(doc.strip()) >= MIN_CHARS and doc not in seen:
        seen.add(doc)
        out.append({"text": doc.strip(), "package": package, "module": module,
                    "qualname": qualname})

    add(ast.get_docstring(tree), "")
    visit(tree, "")
  return out


def package_task(docs: list[dict[str, str]]) -> tuple[list[str], dict[str, list[dict]]]:
  """The balanced demo task: ``(package names, {'train': [...], 'test': [...]})``.

  Packages are ranked by docstring count (ties by name); each example is
  ``{'text', 'label', 'package', 'module', 'qualname'}``.
  """
  counts = collections.Counter(d["package"] for d in docs if d["package"])
  packages = sorted(sorted(counts), key=lambda p: -counts[p])[:NUM_PACKAGES]
  per = min(PER_PACKAGE, min(counts[p] for p in packages))
  rng = np.random.default_rng(SEED)
  splits: dict[str, list[dict]] = {"train": [], "test": []}
  for label, package in enumerate(sorted(packages)):
    members = [d for d in docs if d["package"] == package]
    chosen = rng.permutation(len(members))[:per]
    n_test = int(round(per * TEST_FRACTION))
    for rank, i in enumerate(chosen):
      splits["test" if rank < n_test else "train"].append({**members[i], "label": label})
  return sorted(packages), splits


class StdlibDocstrings(tfds.core.GeneratorBasedBuilder):
  """Docstrings of the installed Python standard library (a corpus and a 8-way task)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name="corpus", description="every docstring, 5% held out"),
      tfds.core.BuilderConfig(name="packages", description=(
          f"the {NUM_PACKAGES} packages with the most docstrings, {PER_PACKAGE} each")),
  ]

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path | None:
    return _code_path(cls)

  def _info(self) -> tfds.core.DatasetInfo:
    features: dict[str, Any] = {"text": tfds.features.Text(), "module": tfds.features.Text(),
                                "qualname": tfds.features.Text()}
    if self.builder_config.name == "packages":
      features["label"] = tfds.features.Scalar(np.int64)
      features["package"] = tfds.features.Text()
    return tfds.core.DatasetInfo(
        builder=self,
        description=(f"Docstrings of the Python {sys.version.split()[0]} standard library "
                     f"({self.builder_config.description})"),
        features=tfds.features.FeaturesDict(features))

  def _split_generators(self, dl_manager):
    del dl_manager
    docs = extract_docstrings()
    if self.builder_config.name == "corpus":
      test = holdout_split(len(docs), CORPUS_TEST_FRACTION, SEED)
      return {"train": self._generate_examples(docs, np.flatnonzero(~test)),
              "test": self._generate_examples(docs, np.flatnonzero(test))}
    _, splits = package_task(docs)
    return {name: self._generate_examples(rows, np.arange(len(rows)))
            for name, rows in splits.items()}

  def _generate_examples(self, rows, indices):
    keys = ("text", "module", "qualname")
    if self.builder_config.name == "packages":
      keys += ("label", "package")
    for i in indices:
      yield int(i), {k: rows[i][k] for k in keys}
