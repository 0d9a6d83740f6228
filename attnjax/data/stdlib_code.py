"""Code on every fresh machine: the installed Python standard library's source files.

Two TFDS configs of :class:`StdlibCode`, read from the same files as
``attnjax.data.stdlib_docstrings`` (sorted paths, test suites and ``site-packages`` skipped):

* ``files``: one record per source file ``{'text', 'path'}``, split **by file** with a seeded
  permutation (:data:`SEED`): 5% ``validation``, 5% ``test``, the rest ``train``. The
  ``code_lm`` dataset tokenizes them with a byte-level BPE trained on ``train`` and packs
  next-token rows (``attnjax.data.text``).
* ``functions``: code summarization. One record per function or method with a docstring and
  a body beyond it: ``{'source'}`` is its source (decorators included, dedented) with the
  docstring removed, ``{'summary'}`` the docstring's first sentence; split **by module**
  (10% of the modules ``validation``, 10% ``test``), so held-out functions come from unseen
  modules.

Nothing is imported or run: files are parsed with ``ast``. The text depends on the Python
version, recorded in the dataset description.
"""

from __future__ import annotations

import ast
import re
import sys
import textwrap
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds

from attnjax.data import datasets
from attnjax.data import stdlib_docstrings

SEED = 20251202
#: Shares of the files (``files``) or modules (``functions``) held out per split.
FILE_FRACTIONS = {"validation": 0.05, "test": 0.05}
MODULE_FRACTIONS = {"validation": 0.1, "test": 0.1}
#: A summary needs this many words (shorter first sentences, "Helper.", say little).
MIN_SUMMARY_WORDS = 3
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")


def split_of(names: list[str], fractions: dict[str, float], seed: int) -> dict[str, str]:
  """Assigns each name a split: a seeded permutation, the first shares held out in order.

  Each held-out split gets ``max(1, round(n * fraction))`` names when there are enough, so a
  tiny tree still has every split; the rest are ``train``.
  """
  order = np.random.default_rng(seed).permutation(len(names))
  out, start = {}, 0
  for split, fraction in fractions.items():
    k = max(1, int(round(len(names) * fraction))) if len(names) > len(fractions) else 0
    for i in order[start:start + k]:
      out[names[i]] = split
    start += k
  for i in order[start:]:
    out[names[i]] = "train"
  return out


def source_files(root=None) -> list[tuple[str, str]]:
  """``[(path relative to the root, text)]`` of every standard-library source file, sorted.

  Files that are not UTF-8 are skipped (a handful of encoding test fixtures).
  """
  root = root or stdlib_docstrings.stdlib_root()
  out = []
  for path in stdlib_docstrings._source_files(root):  # pylint: disable=protected-access
    try:
      text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
      continue
    if text.strip():
      out.append((str(path.relative_to(root)), text))
  return out


def first_sentence(doc: str) -> str:
  """The first sentence of a docstring's first paragraph, on one line."""
  paragraph = doc.strip().split("\n\n")[0]
  line = " ".join(paragraph.split())
  return _SENTENCE_END.split(line, maxsplit=1)[0].strip()


def _without_docstring(node: ast.AST, lines: list[str]) -> str | None:
  """The function's source with its docstring's lines removed, dedented; None when the
  docstring shares a line with other code or is the whole body."""
  doc = node.body[0]
  if len(node.body) < 2 or doc.lineno == node.lineno:
    return None
  first = min([node.lineno] + [d.lineno for d in node.decorator_list])
  last_doc_line = lines[doc.end_lineno - 1]
  if last_doc_line[doc.end_col_offset:].strip() or lines[doc.lineno - 1][:doc.col_offset].strip():
    return None
  kept = lines[first - 1:doc.lineno - 1] + lines[doc.end_lineno:node.end_lineno]
  return textwrap.dedent("\n".join(kept)).strip("\n")


def functions(files: list[tuple[str, str]]) -> list[dict[str, str]]:
  """Every distinct (source, summary) pair of the files' functions, in file order.

  Returns:
    ``[{'source', 'summary', 'module', 'qualname'}]``.
  """
  seen: set[str] = set()
  out = []
  for rel, text in files:
    try:
      tree = ast.parse(text)
    except (SyntaxError, ValueError):
      continue
    lines = text.splitlines()
    parts = rel[:-3].split("/")
    module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    def visit(node: ast.AST, prefix: str) -> None:
      for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
          name = f"{prefix}.{child.name}" if prefix else child.name
          if not isinstance(child, ast.ClassDef):
            add(child, name)
          visit(child, name)

    def add(node: ast.AST, qualname: str) -> None:
      doc = ast.get_docstring(node)
      if not doc:
        return
      summary = first_sentence(doc)
      source = _without_docstring(node, lines)
      if source is None or len(summary.split()) < MIN_SUMMARY_WORDS or source in seen:
        return
      seen.add(source)
      out.append({"source": source, "summary": summary, "module": module,
                  "qualname": qualname})

    visit(tree, "")
  return out


class StdlibCode(datasets.LocalBuilder):
  """The installed standard library's source: files (code LM) and functions (summarization)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name="files", description="source files, split by file"),
      tfds.core.BuilderConfig(name="functions", description=(
          "function source without its docstring -> the docstring's first sentence, split "
          "by module")),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    if self.builder_config.name == "files":
      features = {"text": tfds.features.Text(), "path": tfds.features.Text()}
    else:
      features = {k: tfds.features.Text() for k in ("source", "summary", "module", "qualname")}
    return tfds.core.DatasetInfo(
        builder=self,
        description=(f"Python {sys.version.split()[0]} standard library source "
                     f"({self.builder_config.description})"),
        features=tfds.features.FeaturesDict(features))

  def _split_generators(self, dl_manager) -> dict[str, Any]:
    del dl_manager
    files = source_files()
    if self.builder_config.name == "files":
      splits = split_of([rel for rel, _ in files], FILE_FRACTIONS, SEED)
      rows = [{"text": text, "path": rel} for rel, text in files]
      keys = [splits[r["path"]] for r in rows]
    else:
      rows = functions(files)
      modules = sorted({r["module"] for r in rows})
      splits = split_of(modules, MODULE_FRACTIONS, SEED)
      keys = [splits[r["module"]] for r in rows]
    return {name: self._generate_examples(rows, keys, name)
            for name in ("train", "validation", "test")}

  def _generate_examples(self, rows, keys, split) -> Iterator[tuple[int, dict[str, str]]]:
    for i, (row, key) in enumerate(zip(rows, keys)):
      if key == split:
        yield i, row
