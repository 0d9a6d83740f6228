"""Pathfinder-32 (after Linsley et al. 2018, as used by Long Range Arena), seeded.

A 32x32 grey image shows several curved one-pixel paths and two markers (3x3
squares at path ends). Label 1: the markers are the two ends of one path;
label 0: they end two different paths. Both cases draw the same number of
paths, of the same length distribution, so counting pixels or paths does not
give the label away: the model has to follow a path.

Construction guarantees that make the label a property of the image alone
(tests check every label with a flood fill that knows nothing of the
generator): pixels of different paths (markers included) are never
8-adjacent, so "markers in one 8-connected component of non-zero pixels" is
exactly label 1; the two markers never overlap (their centres are at least 4
pixels apart), so an image always has 18 marker pixels.

Intensities: background 0, path :data:`PATH_VALUE`, marker :data:`MARKER_VALUE`.
Tokens are the 1,024 pixels in row-major order with id = intensity + 1, the
pixel vocabulary of the other LRA image tasks (257 ids, 0 = padding).

Differences from Linsley et al.: paths are solid rather than dashed, and
markers are squares rather than discs (at 32x32 a dashed path with gaps could
not be checked by flood fill, and discs of radius 1 are squares).

Labels are exactly balanced: example ``i`` of a split has label ``i % 2``.
Every example is drawn from its own ``numpy`` PCG64 stream seeded by
``(seed, split, i)``, so a split can be regenerated, or extended, piecewise.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds

from attnjax.data import datasets

IMAGE_SIZE = 32
SEQ_LEN = IMAGE_SIZE * IMAGE_SIZE
PATH_VALUE = 128
MARKER_VALUE = 255
#: Pixel tokens: intensity + 1, so id 0 stays padding.
VOCAB_SIZE = 257
PAD_ID = 0
NUM_CLASSES = 2
_SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}
# Pixels kept free at the border, so a 3x3 marker at a path end stays in the image.
_MARGIN = 1
_STEP = 0.9  # < 1: consecutive rounded points are 8-neighbours (or equal).


def _neighbourhood(mask: np.ndarray) -> np.ndarray:
  """The 3x3 (8-neighbour) dilation of a boolean image."""
  padded = np.pad(mask, 1)
  out = np.zeros_like(mask)
  h, w = mask.shape
  for dy in range(3):
    for dx in range(3):
      out |= padded[dy:dy + h, dx:dx + w]
  return out


def _curve(rng: np.random.Generator, length: int, turn_std: float
           ) -> list[tuple[int, int]] | None:
  """A smooth random curve as a list of distinct, consecutive 8-neighbour pixels.

  The heading drifts by a bounded random turn each step (a random walk of the
  curvature), which gives Pathfinder's smooth, snake-like contours.
  """
  lo, hi = _MARGIN, IMAGE_SIZE - 1 - _MARGIN
  y, x = rng.uniform(lo, hi, size=2)
  heading = rng.uniform(0.0, 2.0 * math.pi)
  turn = 0.0
  pixels = [(int(round(y)), int(round(x)))]
  for dturn in rng.normal(0.0, turn_std, size=length):
    turn = float(np.clip(turn + dturn, -0.5, 0.5))
    heading += turn
    y += _STEP * math.sin(heading)
    x += _STEP * math.cos(heading)
    p = (int(round(y)), int(round(x)))
    if not (lo <= p[0] <= hi and lo <= p[1] <= hi):
      return None
    if p != pixels[-1]:
      if p in pixels:  # A loop would merge parts of one path and confuse the task.
        return None
      pixels.append(p)
  return pixels


def _footprint(pixels: list[tuple[int, int]]) -> np.ndarray:
  """Pixels a path may occupy: its body and a 3x3 square at each end (markers or not)."""
  mask = np.zeros((IMAGE_SIZE, IMAGE_SIZE), bool)
  ys, xs = zip(*pixels)
  mask[list(ys), list(xs)] = True
  for y, x in (pixels[0], pixels[-1]):
    mask[y - 1:y + 2, x - 1:x + 2] = True
  return mask


def generate_image(rng: np.random.Generator, label: int, *, num_paths: int = 4,
                   path_length: int = 18, turn_std: float = 0.15,
                   max_tries: int = 1000) -> np.ndarray:
  """Draws one Pathfinder image with the given label.

  Args:
    rng: the example's random stream.
    label: 1 = markers on one path, 0 = markers on two different paths.
    num_paths: paths in the image, marked or not (at least 2).
    path_length: steps of ~0.9 pixel per path.
    turn_std: standard deviation of the per-step change of the turn rate (radians).
    max_tries: attempts at placing one path before starting the image again.

  Returns:
    uint8 ``[32, 32]`` image.
  """
  if label not in (0, 1):
    raise ValueError(f"label must be 0 or 1, got {label!r}")
  if num_paths < 2:
    raise ValueError(f"num_paths must be at least 2, got {num_paths}")
  while True:
    taken = np.zeros((IMAGE_SIZE, IMAGE_SIZE), bool)
    paths: list[list[tuple[int, int]]] = []
    for _ in range(max_tries):
      pixels = _curve(rng, path_length, turn_std)
      if pixels is None or len(pixels) < 4:
        continue
      # Ends of a marked path at least 4 apart (Chebyshev): two 3x3 markers never overlap.
      ends_apart = max(abs(pixels[0][0] - pixels[-1][0]), abs(pixels[0][1] - pixels[-1][1])) >= 4
      if not paths and label == 1 and not ends_apart:
        continue
      footprint = _footprint(pixels)
      if (footprint & _neighbourhood(taken)).any():
        continue  # Would touch (8-adjacency) another path: keep paths separable.
      taken |= footprint
      paths.append(pixels)
      if len(paths) == num_paths:
        break
    else:
      continue  # Crowded: start the image again.
    image = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    for pixels in paths:
      ys, xs = zip(*pixels)
      image[list(ys), list(xs)] = PATH_VALUE
    ends = [paths[0][0], paths[0][-1]] if label == 1 else [paths[0][0], paths[1][-1]]
    for y, x in ends:
      image[y - 1:y + 2, x - 1:x + 2] = MARKER_VALUE
    return image


def example_rng(seed: int, split: str, index: int) -> np.random.Generator:
  """The PCG64 stream of example ``index`` of ``split`` (numpy keeps it stable)."""
  return np.random.default_rng([seed, _SPLIT_IDS[split], index])


def generate_split(seed: int, split: str, count: int, **image_kwargs: Any
                   ) -> Iterator[tuple[np.ndarray, int]]:
  """Yields ``count`` ``(image uint8 [32, 32], label)`` pairs; example i has label i % 2."""
  for i in range(count):
    label = i % 2
    yield generate_image(example_rng(seed, split, i), label, **image_kwargs), label


def to_tokens(image: np.ndarray) -> np.ndarray:
  """uint8 ``[32, 32]`` image -> int32 ``[1024]`` ids (intensity + 1, row-major)."""
  return image.reshape(-1).astype(np.int32) + 1


@dataclasses.dataclass
class PathfinderConfig(tfds.core.BuilderConfig):
  """Generation options of one Pathfinder-32 variant.

  Attributes:
    num_train, num_validation, num_test: examples per split (labels alternate).
    num_paths: paths per image, marked ones included.
    path_length: steps (~0.9 pixel each) per path; longer is harder.
    turn_std: curvature noise; larger gives curlier paths.
    seed: base seed of every example's stream.
  """
  num_train: int = 160_000
  num_validation: int = 20_000
  num_test: int = 20_000
  num_paths: int = 4
  path_length: int = 18
  turn_std: float = 0.15
  seed: int = 0


STANDARD = PathfinderConfig(
    name="standard", description="LRA Pathfinder-32 sizes: 160k/20k/20k.")
SMALL = PathfinderConfig(
    name="small", description="Reduced for a CPU: 4k/500/500.",
    num_train=4_000, num_validation=500, num_test=500)


class Pathfinder32(datasets.LocalBuilder):
  """Seeded Pathfinder-32 (see the module docstring)."""

  name = "pathfinder32"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [STANDARD, SMALL]

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            "Pathfinder-32: are the two markers joined by one curved path? 32x32 "
            "images as 1,024 pixel tokens (intensity + 1), labels exactly balanced."),
        features=tfds.features.FeaturesDict({
            "tokens": tfds.features.Tensor(shape=(SEQ_LEN,), dtype=np.int32),
            "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
        }),
        supervised_keys=("tokens", "label"),
        homepage="https://arxiv.org/abs/1805.08315",
        citation=(
            "@inproceedings{linsley2018pathfinder, title={Learning long-range spatial "
            "dependencies with horizontal gated recurrent units}, author={Linsley, Drew "
            "and Kim, Junkyung and Veerabadran, Vijay and Windolf, Charles and Serre, "
            "Thomas}, booktitle={NeurIPS}, year={2018}}"),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
    del dl_manager  # Generated: nothing to download.
    c: PathfinderConfig = self.builder_config
    sizes = {"train": c.num_train, "validation": c.num_validation, "test": c.num_test}
    return {split: self._generate_examples(split, n) for split, n in sizes.items()}

  def _generate_examples(self, split: str, count: int) -> Iterator[tuple[int, dict[str, Any]]]:
    c: PathfinderConfig = self.builder_config
    pairs = generate_split(c.seed, split, count, num_paths=c.num_paths,
                           path_length=c.path_length, turn_std=c.turn_std)
    for i, (image, label) in enumerate(pairs):
      yield i, {"tokens": to_tokens(image), "label": label}


for _task, _config in (("pathfinder32", STANDARD), ("pathfinder32_small", SMALL)):
  datasets.register_builder_task(
      datasets.DatasetInfo(name=_task, vocab_size=VOCAB_SIZE, max_length=SEQ_LEN,
                           num_classes=NUM_CLASSES, num_train=_config.num_train,
                           num_eval=_config.num_test, pad_id=PAD_ID),
      Pathfinder32, config=_config.name, splits=("train", "validation", "test"))
