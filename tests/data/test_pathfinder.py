"""Pathfinder-32: every label checked by an independent flood fill; balance; determinism."""

from __future__ import annotations

import collections

import numpy as np

from attnjax import data as data_lib
from attnjax.data import pathfinder

TINY = pathfinder.PathfinderConfig(name="tiny_test", num_train=40, num_validation=8,
                                   num_test=8, seed=5)


def _components(mask: np.ndarray) -> np.ndarray:
  """8-connected component labels of a boolean image (0 = background), by BFS."""
  labels = np.zeros(mask.shape, np.int32)
  h, w = mask.shape
  current = 0
  for y0, x0 in zip(*np.nonzero(mask)):
    if labels[y0, x0]:
      continue
    current += 1
    labels[y0, x0] = current
    queue = collections.deque([(y0, x0)])
    while queue:
      y, x = queue.popleft()
      for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
          ny, nx = y + dy, x + dx
          if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not labels[ny, nx]:
            labels[ny, nx] = current
            queue.append((ny, nx))
  return labels


def _flood_fill_label(image: np.ndarray) -> int:
  """1 iff every marker pixel lies in one connected component of non-background pixels."""
  markers = image == pathfinder.MARKER_VALUE
  assert markers.sum() == 18, "two 3x3 markers, not overlapping"
  assert len(np.unique(_components(markers))) - 1 == 2, "two separate markers"
  reach = _components(image > 0)
  return int(len(np.unique(reach[markers])) == 1)


def test_every_label_matches_an_independent_flood_fill():
  images = list(pathfinder.generate_split(0, "train", 200))
  for i, (image, label) in enumerate(images):
    assert image.shape == (32, 32) and image.dtype == np.uint8
    assert set(np.unique(image)) <= {0, pathfinder.PATH_VALUE, pathfinder.MARKER_VALUE}
    assert _flood_fill_label(image) == label, f"example {i}"
    # Positives and negatives draw the same number of separate paths.
    assert len(np.unique(_components(image > 0))) - 1 == 4


def test_labels_are_balanced_and_pixels_do_not_give_them_away():
  images = list(pathfinder.generate_split(1, "test", 100))
  labels = np.array([label for _, label in images])
  assert labels.sum() == 50
  lit = {c: np.mean([(im > 0).sum() for im, l in images if l == c]) for c in (0, 1)}
  # Same number of paths of the same length distribution: lit pixels barely differ.
  assert abs(lit[0] - lit[1]) < 0.1 * lit[0], lit


def test_generation_is_deterministic():
  a = [im for im, _ in pathfinder.generate_split(2, "train", 6)]
  b = [im for im, _ in pathfinder.generate_split(2, "train", 6)]
  c = [im for im, _ in pathfinder.generate_split(3, "train", 6)]
  assert all(np.array_equal(x, y) for x, y in zip(a, b))
  assert not all(np.array_equal(x, y) for x, y in zip(a, c))
  # Splits use different streams.
  v = [im for im, _ in pathfinder.generate_split(2, "validation", 6)]
  assert not any(np.array_equal(x, y) for x, y in zip(a, v))


def test_builder_and_registered_task(tmp_path):
  builder = data_lib.prepare_builder(pathfinder.Pathfinder32, tmp_path, config=TINY)
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
      "train": 40, "validation": 8, "test": 8}
  source = builder.as_data_source("train")
  labels = []
  for record in source:
    tokens = np.asarray(record["tokens"])
    assert tokens.shape == (1024,) and tokens.dtype == np.int32 and tokens.min() >= 1
    image = (tokens - 1).reshape(32, 32).astype(np.uint8)
    assert _flood_fill_label(image) == int(record["label"])
    labels.append(int(record["label"]))
  assert sum(labels) == 20
  info = data_lib.get_dataset_spec("pathfinder32_small").info
  assert (info.vocab_size, info.max_length, info.num_classes) == (257, 1024, 2)
