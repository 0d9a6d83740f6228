"""Pathfinder-32 and Path-X: every label checked by an independent flood fill; balance;
determinism; Pathfinder-32's images pinned."""

from __future__ import annotations

import collections
import functools
import hashlib
from typing import Iterable

import numpy as np
import pytest

from attnjax import data as data_lib
from attnjax.data import pathfinder

TINY = pathfinder.PathfinderConfig(name="tiny_test", num_train=40, num_validation=8,
                                   num_test=8, seed=5)
TINY_PATHX = pathfinder.PathfinderConfig(name="tiny_test", num_train=4, num_validation=2,
                                         num_test=2, seed=5, **pathfinder.PATHX.image_kwargs())
# Image side -> (its standard config, examples per check): a Path-X image takes ~5 ms.
SIZES = {32: (pathfinder.STANDARD, 200), 128: (pathfinder.PATHX, 30)}

# sha256 over (image bytes, label byte) of Pathfinder-32 examples, computed with the
# generator as it was before the image size became a parameter (commit 016c328): prepared
# Pathfinder-32 data must stay valid, and published numbers reproducible.
PINNED_PATHFINDER32 = {
    (0, "train", 20): "3913a6cffa4628fc8d8e3850bc2d43ffd8fcb04aff464a9402ab8aba6873cf8d",
    (0, "validation", 10): "3ddacb5de3721c0b94c035c94fb0fea2b3934623aed11a0e5f45f0cd2061092e",
    (7, "test", 10): "6a767bdd3f7007825351f72399f80dcdeab4aa8e0a387e73eaf40ecf38b875da",
}


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


def _marker_distance(image: np.ndarray) -> float:
  """Euclidean distance between the centres of the two markers."""
  markers = _components(image == pathfinder.MARKER_VALUE)
  a, b = (np.argwhere(markers == k).mean(axis=0) for k in (1, 2))
  return float(np.linalg.norm(a - b))


def _flood_fill_label(image: np.ndarray) -> int:
  """1 iff every marker pixel lies in one connected component of non-background pixels."""
  markers = image == pathfinder.MARKER_VALUE
  assert markers.sum() == 18, "two 3x3 markers, not overlapping"
  assert len(np.unique(_components(markers))) - 1 == 2, "two separate markers"
  reach = _components(image > 0)
  return int(len(np.unique(reach[markers])) == 1)


@functools.lru_cache(maxsize=None)
def _examples(size: int, seed: int, split: str, count: int
              ) -> tuple[tuple[np.ndarray, int], ...]:
  """The first ``count`` examples of a split of the standard config of ``size``."""
  config = SIZES[size][0]
  return tuple(pathfinder.generate_split(seed, split, count, **config.image_kwargs()))


def _digest(pairs: Iterable[tuple[np.ndarray, int]]) -> str:
  digest = hashlib.sha256()
  for image, label in pairs:
    digest.update(image.tobytes())
    digest.update(bytes([label]))
  return digest.hexdigest()


def test_pathfinder32_images_are_unchanged():
  assert pathfinder.STANDARD.image_kwargs() == {
      "image_size": 32, "num_paths": 4, "path_length": 18, "turn_std": 0.15,
      "max_turn": 0.5, "min_end_distance": 4}
  for (seed, split, count), expected in PINNED_PATHFINDER32.items():
    # The defaults and the builder's options give the same, pinned, images.
    assert _digest(pathfinder.generate_split(seed, split, count)) == expected
    assert _digest(_examples(32, seed, split, count)) == expected
  image = _examples(32, 0, "train", 20)[0][0]
  assert np.flatnonzero(image)[:6].tolist() == [117, 150, 183, 216, 248, 280]
  assert int(image.sum()) == 12398


@pytest.mark.parametrize("size", SIZES)
def test_every_label_matches_an_independent_flood_fill(size):
  for i, (image, label) in enumerate(_examples(size, 0, "train", SIZES[size][1])):
    assert image.shape == (size, size) and image.dtype == np.uint8
    assert set(np.unique(image)) <= {0, pathfinder.PATH_VALUE, pathfinder.MARKER_VALUE}
    assert _flood_fill_label(image) == label, f"example {i}"
    # Positives and negatives draw the same number of separate paths.
    assert len(np.unique(_components(image > 0))) - 1 == 4


@pytest.mark.parametrize("size", SIZES)
def test_labels_are_balanced_and_pixels_do_not_give_them_away(size):
  count = SIZES[size][1] // 2 * 2
  images = _examples(size, 1, "test", count)
  labels = np.array([label for _, label in images])
  assert labels.sum() == count // 2
  lit = {c: np.mean([(im > 0).sum() for im, l in images if l == c]) for c in (0, 1)}
  # Same number of paths of the same length distribution: lit pixels barely differ.
  assert abs(lit[0] - lit[1]) < 0.1 * lit[0], lit


@pytest.mark.parametrize("size", SIZES)
def test_generation_is_deterministic(size):
  kwargs = SIZES[size][0].image_kwargs()
  a = [im for im, _ in pathfinder.generate_split(2, "train", 6, **kwargs)]
  b = [im for im, _ in pathfinder.generate_split(2, "train", 6, **kwargs)]
  c = [im for im, _ in pathfinder.generate_split(3, "train", 6, **kwargs)]
  assert all(np.array_equal(x, y) for x, y in zip(a, b))
  assert not all(np.array_equal(x, y) for x, y in zip(a, c))
  # Splits use different streams.
  v = [im for im, _ in pathfinder.generate_split(2, "validation", 6, **kwargs)]
  assert not any(np.array_equal(x, y) for x, y in zip(a, v))


def test_pathx_is_pathfinder32_scaled_by_four():
  # 4x longer paths at 4x the resolution; the same 4 paths (checked above by flood fill).
  path_pixels = {size: np.mean([(im == pathfinder.PATH_VALUE).sum()
                                for im, _ in _examples(size, 0, "train", SIZES[size][1])])
                 for size in SIZES}
  assert 3.6 < path_pixels[128] / path_pixels[32] < 4.4, path_pixels
  # The two ends of a marked path lie about as far apart, in image sides, at both sizes.
  ends = {size: np.mean([_marker_distance(im) / size
                         for im, label in _examples(size, 0, "train", SIZES[size][1]) if label])
          for size in SIZES}
  assert abs(ends[128] - ends[32]) < 0.2 * ends[32], ends


def test_bad_image_options_are_errors():
  rng = np.random.default_rng(0)
  with pytest.raises(ValueError, match="image_size"):
    pathfinder.generate_image(rng, 1, image_size=6)
  with pytest.raises(ValueError, match="max_turn"):
    pathfinder.generate_image(rng, 1, max_turn=0.0)
  with pytest.raises(ValueError, match="min_end_distance"):
    pathfinder.generate_image(rng, 1, min_end_distance=3)


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
  # The builder writes exactly the generator's examples.
  stored = sorted(np.asarray(r["tokens"]).tobytes() for r in builder.as_data_source("test"))
  drawn = sorted(pathfinder.to_tokens(im).tobytes()
                 for im, _ in pathfinder.generate_split(5, "test", 8))
  assert stored == drawn


def test_pathx_builder_and_registered_tasks(tmp_path):
  builder = data_lib.prepare_builder(pathfinder.PathX, tmp_path, config=TINY_PATHX)
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
      "train": 4, "validation": 2, "test": 2}
  labels = []
  for record in builder.as_data_source("train"):
    tokens = np.asarray(record["tokens"])
    assert tokens.shape == (16384,) and tokens.dtype == np.int32 and tokens.min() >= 1
    image = (tokens - 1).reshape(128, 128).astype(np.uint8)
    assert _flood_fill_label(image) == int(record["label"])
    labels.append(int(record["label"]))
  assert sorted(labels) == [0, 0, 1, 1]
  for task, num_train, num_test in (("pathx", 160_000, 20_000), ("pathx_small", 2_000, 250)):
    info = data_lib.get_dataset_spec(task).info
    assert (info.vocab_size, info.max_length, info.num_classes, info.num_train,
            info.num_eval) == (257, 16384, 2, num_train, num_test)
