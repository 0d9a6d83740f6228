"""Pathfinder-32 and Path-X (after Linsley et al. 2018, as used by Long Range Arena), seeded.

A square grey image (32x32 for Pathfinder-32, 128x128 for Path-X) shows several
curved one-pixel paths and two markers (3x3 squares at path ends). Label 1: the
markers are the two ends of one path; label 0: they end two different paths.
Both cases draw the same number of paths, of the same length distribution, so
counting pixels or paths does not give the label away: the model has to follow
a path.

Construction guarantees that make the label a property of the image alone
(tests check every label with a flood fill that knows nothing of the
generator): pixels of different paths (markers included) are never
8-adjacent, so "markers in one 8-connected component of non-zero pixels" is
exactly label 1; the two markers never overlap (their centres are at least 4
pixels apart), so an image always has 18 marker pixels.

Intensities: background 0, path :data:`PATH_VALUE`, marker :data:`MARKER_VALUE`.
Tokens are the pixels in row-major order (1,024 at 32x32, 16,384 at 128x128)
with id = intensity + 1, the pixel vocabulary of the other LRA image tasks (257
ids, 0 = padding).

Path-X: LRA's Path-X (``pathfinder128_hard``) is the same "hard" Pathfinder as
its Pathfinder-32 (``pathfinder32_hard``), drawn at 128x128 instead of 32x32:
the same scenes, four times the resolution, 16 times the tokens. Here likewise
:data:`PATHX` is :data:`STANDARD` scaled by s = 4: the same 4 paths, each s
times longer (72 steps, ~65 pixels, about half the image side as 18 steps are
at 32), with the turn process slowed so the shape scales too (per-step turn
rate bound 0.5 / s, its per-step noise 0.15 / s**1.5: over s steps the noise
adds up to 0.15 / s, so heading changes per unit of image side stay the same),
and the ends of the marked path of a positive at least 4 * s pixels apart (1/8
of the side, as at 32). The ends of a path then lie ~0.24 image sides apart at
both sizes (~0.30 for a positive's marked path). Keeping 4
paths keeps the task itself unchanged, as in LRA; 16 paths would keep the
fraction of lit pixels (~6.5% at 32, ~1.6% at 128) but change the task, and
generate ~200 times slower (rejection sampling of crowded images). Without the
slowed turns, most 72-step curves curl into a loop and are rejected (~50
rejected per path placed, against ~2), and the survivors are atypically
straight.

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

#: Side of a Pathfinder-32 image (the default of every function here).
IMAGE_SIZE = 32
SEQ_LEN = IMAGE_SIZE * IMAGE_SIZE
#: Side of a Path-X image.
PATHX_IMAGE_SIZE = 128
PATHX_SEQ_LEN = PATHX_IMAGE_SIZE * PATHX_IMAGE_SIZE
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
# Two non-overlapping 3x3 markers (centres >= 4 apart) inside the margin need this much.
_MIN_IMAGE_SIZE = 8


def _neighbourhood(mask: np.ndarray) -> np.ndarray:
  """The 3x3 (8-neighbour) dilation of a boolean image."""
  padded = np.pad(mask, 1)
  out = np.zeros_like(mask)
  h, w = mask.shape
  for dy in range(3):
    for dx in range(3):
      out |= padded[dy:dy + h, dx:dx + w]
  return out


def _curve(rng: np.random.Generator, length: int, turn_std: float, max_turn: float,
           image_size: int) -> list[tuple[int, int]] | None:
  """A smooth random curve as a list of distinct, consecutive 8-neighbour pixels.

  The heading drifts by a bounded random turn each step (a random walk of the
  curvature), which gives Pathfinder's smooth, snake-like contours. Returns None
  if the curve leaves the image (less the margin) or crosses itself.
  """
  lo, hi = _MARGIN, image_size - 1 - _MARGIN
  y, x = rng.uniform(lo, hi, size=2)
  heading = rng.uniform(0.0, 2.0 * math.pi)
  turn = 0.0
  pixels = [(int(round(y)), int(round(x)))]
  seen = set(pixels)
  for dturn in rng.normal(0.0, turn_std, size=length):
    turn = float(np.clip(turn + dturn, -max_turn, max_turn))
    heading += turn
    y += _STEP * math.sin(heading)
    x += _STEP * math.cos(heading)
    p = (int(round(y)), int(round(x)))
    if not (lo <= p[0] <= hi and lo <= p[1] <= hi):
      return None
    if p != pixels[-1]:
      if p in seen:  # A loop would merge parts of one path and confuse the task.
        return None
      pixels.append(p)
      seen.add(p)
  return pixels


def _footprint(pixels: list[tuple[int, int]], image_size: int) -> np.ndarray:
  """Pixels a path may occupy: its body and a 3x3 square at each end (markers or not)."""
  mask = np.zeros((image_size, image_size), bool)
  ys, xs = zip(*pixels)
  mask[list(ys), list(xs)] = True
  for y, x in (pixels[0], pixels[-1]):
    mask[y - 1:y + 2, x - 1:x + 2] = True
  return mask


def generate_image(rng: np.random.Generator, label: int, *, image_size: int = IMAGE_SIZE,
                   num_paths: int = 4, path_length: int = 18, turn_std: float = 0.15,
                   max_turn: float = 0.5, min_end_distance: int = 4,
                   max_tries: int = 1000) -> np.ndarray:
  """Draws one Pathfinder image with the given label.

  The defaults are Pathfinder-32's; :data:`PATHX` holds Path-X's.

  Args:
    rng: the example's random stream.
    label: 1 = markers on one path, 0 = markers on two different paths.
    image_size: side S of the square image, in pixels (at least 8).
    num_paths: paths in the image, marked or not (at least 2).
    path_length: steps of ~0.9 pixel per path.
    turn_std: standard deviation of the per-step change of the turn rate (radians).
    max_turn: bound on the turn rate (radians per step); the smallest radius of
      curvature is about ``0.9 / max_turn`` pixels.
    min_end_distance: least Chebyshev distance, in pixels, between the ends of
      the path both markers sit on (label 1); at least 4, so the two 3x3 markers
      never overlap or touch.
    max_tries: attempts at placing one path before starting the image again.

  Returns:
    uint8 ``[S, S]`` image.
  """
  if label not in (0, 1):
    raise ValueError(f"label must be 0 or 1, got {label!r}")
  if image_size < _MIN_IMAGE_SIZE:
    raise ValueError(f"image_size must be at least {_MIN_IMAGE_SIZE}, got {image_size}")
  if num_paths < 2:
    raise ValueError(f"num_paths must be at least 2, got {num_paths}")
  if max_turn <= 0:
    raise ValueError(f"max_turn must be positive, got {max_turn}")
  if min_end_distance < 4:
    raise ValueError(f"min_end_distance must be at least 4, got {min_end_distance}")
  while True:
    taken = np.zeros((image_size, image_size), bool)
    near_taken = np.zeros_like(taken)  # 8-neighbourhood of ``taken``, kept up to date.
    paths: list[list[tuple[int, int]]] = []
    for _ in range(max_tries):
      pixels = _curve(rng, path_length, turn_std, max_turn, image_size)
      if pixels is None or len(pixels) < 4:
        continue
      # Ends of a marked path >= 4 apart (Chebyshev): two 3x3 markers never overlap.
      ends_apart = max(abs(pixels[0][0] - pixels[-1][0]),
                       abs(pixels[0][1] - pixels[-1][1])) >= min_end_distance
      if not paths and label == 1 and not ends_apart:
        continue
      footprint = _footprint(pixels, image_size)
      if (footprint & near_taken).any():
        continue  # Would touch (8-adjacency) another path: keep paths separable.
      taken |= footprint
      near_taken = _neighbourhood(taken)
      paths.append(pixels)
      if len(paths) == num_paths:
        break
    else:
      continue  # Crowded: start the image again.
    image = np.zeros((image_size, image_size), np.uint8)
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
  """Yields ``count`` ``(image uint8 [S, S], label)`` pairs; example i has label i % 2.

  ``image_kwargs`` go to :func:`generate_image` (``image_size``, ``num_paths``, ...);
  :meth:`PathfinderConfig.image_kwargs` gives a builder config's.
  """
  for i in range(count):
    label = i % 2
    yield generate_image(example_rng(seed, split, i), label, **image_kwargs), label


def to_tokens(image: np.ndarray) -> np.ndarray:
  """uint8 ``[S, S]`` image -> int32 ``[S * S]`` ids (intensity + 1, row-major)."""
  return image.reshape(-1).astype(np.int32) + 1


@dataclasses.dataclass
class PathfinderConfig(tfds.core.BuilderConfig):
  """Generation options of one Pathfinder variant (the defaults are Pathfinder-32's).

  Attributes:
    num_train, num_validation, num_test: examples per split (labels alternate).
    image_size: side of the square image; the sequence has ``image_size ** 2`` tokens.
    num_paths: paths per image, marked ones included.
    path_length: steps (~0.9 pixel each) per path; longer is harder.
    turn_std: curvature noise; larger gives curlier paths.
    max_turn: bound on the turn rate (radians per step).
    min_end_distance: least distance (pixels, Chebyshev) between the ends of the
      marked path of a positive.
    seed: base seed of every example's stream.
  """
  num_train: int = 160_000
  num_validation: int = 20_000
  num_test: int = 20_000
  image_size: int = IMAGE_SIZE
  num_paths: int = 4
  path_length: int = 18
  turn_std: float = 0.15
  max_turn: float = 0.5
  min_end_distance: int = 4
  seed: int = 0

  @property
  def seq_len(self) -> int:
    """Tokens per example: the pixels of one image."""
    return self.image_size * self.image_size

  def image_kwargs(self) -> dict[str, Any]:
    """The :func:`generate_image` options of this variant."""
    return {"image_size": self.image_size, "num_paths": self.num_paths,
            "path_length": self.path_length, "turn_std": self.turn_std,
            "max_turn": self.max_turn, "min_end_distance": self.min_end_distance}


STANDARD = PathfinderConfig(
    name="standard", description="LRA Pathfinder-32 sizes: 160k/20k/20k.")
SMALL = PathfinderConfig(
    name="small", description="Reduced for a CPU: 4k/500/500.",
    num_train=4_000, num_validation=500, num_test=500)

# Path-X: STANDARD's scenes scaled by 4 (see the module docstring): 4x longer
# paths, turn-rate bound / 4, turn noise / 4**1.5 = / 8, ends of a positive's
# marked path 4x as far apart at least.
_PATHX_SCALE = PATHX_IMAGE_SIZE // IMAGE_SIZE
_PATHX_GEOMETRY = {
    "image_size": PATHX_IMAGE_SIZE,
    "num_paths": STANDARD.num_paths,
    "path_length": STANDARD.path_length * _PATHX_SCALE,
    "turn_std": STANDARD.turn_std / _PATHX_SCALE**1.5,
    "max_turn": STANDARD.max_turn / _PATHX_SCALE,
    "min_end_distance": STANDARD.min_end_distance * _PATHX_SCALE,
}
PATHX = PathfinderConfig(
    name="standard", description="LRA Path-X (128x128) sizes: 160k/20k/20k.",
    **_PATHX_GEOMETRY)
# Sized so that preparing it takes well under a minute on a 2-core CPU.
PATHX_SMALL = PathfinderConfig(
    name="small", description="Path-X reduced for a CPU: 2,000/250/250.",
    num_train=2_000, num_validation=250, num_test=250, **_PATHX_GEOMETRY)


class Pathfinder32(datasets.LocalBuilder):
  """Seeded Pathfinder-32 (see the module docstring)."""

  name = "pathfinder32"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [STANDARD, SMALL]
  # Pathfinder-32 records stay raw int32, as prepared before Path-X existed.
  _TOKENS_ENCODING = tfds.features.Encoding.NONE

  def _info(self) -> tfds.core.DatasetInfo:
    c: PathfinderConfig = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            f"Pathfinder at {c.image_size}x{c.image_size}: are the two markers joined "
            f"by one curved path? Images as {c.seq_len:,} pixel tokens (intensity + 1), "
            "labels exactly balanced."),
        features=tfds.features.FeaturesDict({
            "tokens": tfds.features.Tensor(shape=(c.seq_len,), dtype=np.int32,
                                           encoding=self._TOKENS_ENCODING),
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
    for i, (image, label) in enumerate(generate_split(c.seed, split, count,
                                                      **c.image_kwargs())):
      yield i, {"tokens": to_tokens(image), "label": label}


class PathX(Pathfinder32):
  """Seeded Path-X: Pathfinder at 128x128, 16,384 tokens (see the module docstring).

  Records are zlib-compressed: an image is ~98% background, so a raw int32
  record (64 KiB) shrinks to ~0.7 KB, and the 200,000 examples of :data:`PATHX`
  take ~0.13 GB on disk instead of 13 GB. Preparing them takes ~15 minutes on
  one CPU core (~230 examples/s; :data:`PATHX_SMALL`'s 2,500 take ~11 s).
  """

  name = "pathx"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [PATHX, PATHX_SMALL]
  _TOKENS_ENCODING = tfds.features.Encoding.ZLIB


for _task, _builder, _config in (("pathfinder32", Pathfinder32, STANDARD),
                                 ("pathfinder32_small", Pathfinder32, SMALL),
                                 ("pathx", PathX, PATHX),
                                 ("pathx_small", PathX, PATHX_SMALL)):
  datasets.register_builder_task(
      datasets.DatasetInfo(name=_task, vocab_size=VOCAB_SIZE, max_length=_config.seq_len,
                           num_classes=NUM_CLASSES, num_train=_config.num_train,
                           num_eval=_config.num_test, pad_id=PAD_ID),
      _builder, config=_config.name, splits=("train", "validation", "test"))
