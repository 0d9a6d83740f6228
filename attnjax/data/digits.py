"""scikit-learn's 8x8 handwritten digits as a TFDS sequence-classification task.

Each image becomes a sequence of 64 pixel tokens read row-major. Pixel
intensities are 0..16; token id = intensity + 1, so id 0 stays free for
padding and the vocabulary has 18 ids. The data ships inside scikit-learn
(``sklearn/datasets/data/digits.csv.gz``), so preparing needs no network.

The builder writes ``array_record`` files so Grain can read them by index
through ``tfds.data_source`` and works without TensorFlow installed.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds

from attnjax.data import datasets

#: Tokens per example: one per pixel of an 8x8 image.
SEQ_LEN = 64
#: Number of distinct token ids including padding id 0 (intensities 0..16 -> 1..17).
VOCAB_SIZE = 18
NUM_CLASSES = 10
PAD_ID = 0
#: Examples in the fixed test split (about 20% of 1,797, stratified by class).
NUM_TEST = 360
NUM_TRAIN = 1797 - NUM_TEST
#: Seed of the train/test split. Changing it changes the dataset: bump VERSION.
SPLIT_SEED = 20240611


def split_indices() -> tuple[np.ndarray, np.ndarray]:
  """Returns the (train, test) indices into ``load_digits()`` rows.

  Stratified by class and drawn with a private ``np.random.Generator`` (PCG64,
  whose stream numpy guarantees across platforms and versions), so the split
  is the same on every machine and does not depend on scikit-learn's
  splitter implementation.

  Returns:
    Two sorted int64 arrays of 1,437 and 360 row indices; disjoint, together
    covering ``range(1797)``.
  """
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top

  labels = np.asarray(load_digits().target)
  rng = np.random.default_rng(SPLIT_SEED)
  classes = np.arange(NUM_CLASSES)
  counts = np.array([(labels == c).sum() for c in classes])
  # Largest-remainder apportionment: each class gets its share of the test
  # split, rounded so the total is exactly NUM_TEST.
  exact = counts * NUM_TEST / len(labels)
  per_class = np.floor(exact).astype(int)
  short = NUM_TEST - per_class.sum()
  per_class[np.argsort(-(exact - per_class), kind="stable")[:short]] += 1
  test = []
  for c, k in zip(classes, per_class):
    members = np.flatnonzero(labels == c)
    test.append(rng.permutation(members)[:k])
  test_idx = np.sort(np.concatenate(test))
  train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)
  return train_idx, test_idx


class Digits(datasets.LocalBuilder):
  """scikit-learn digits: 64 pixel tokens per 8x8 image, 10 classes."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release: stratified 1,437/360 split, seed 20240611.",
  }

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            "The UCI ML handwritten digits (1,797 8x8 grey-scale images, "
            "intensities 0..16) shipped with scikit-learn, as a sequence "
            "classification task: 64 tokens per image in row-major order, "
            "token id = intensity + 1 (0 is padding, vocabulary 18), label "
            "0..9. Fixed stratified split: 1,437 train / 360 test."),
        features=tfds.features.FeaturesDict({
            "tokens": tfds.features.Tensor(shape=(SEQ_LEN,), dtype=np.int32),
            "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
        }),
        supervised_keys=("tokens", "label"),
        homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html",
        citation=(
            "@misc{uci_optdigits, author={Alpaydin, E. and Kaynak, C.}, "
            "title={Optical Recognition of Handwritten Digits}, year={1998}, "
            "howpublished={UCI Machine Learning Repository}}"),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
    del dl_manager  # The data ships with scikit-learn: nothing to download.
    train_idx, test_idx = split_indices()
    return {
        "train": self._generate_examples(train_idx),
        "test": self._generate_examples(test_idx),
    }

  def _generate_examples(self, indices: np.ndarray) -> Iterator[tuple[int, dict[str, Any]]]:
    from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top

    digits = load_digits()
    # load_digits returns float64 intensities that are exact integers 0..16.
    pixels = np.asarray(digits.data).astype(np.int32)
    labels = np.asarray(digits.target).astype(np.int64)
    for i in indices:
      # The row index into load_digits() is a stable, unique key.
      yield int(i), {"tokens": pixels[i] + 1, "label": int(labels[i])}


datasets.register_builder_task(
    datasets.DatasetInfo(name="digits", vocab_size=VOCAB_SIZE, max_length=SEQ_LEN,
                         num_classes=NUM_CLASSES, num_train=NUM_TRAIN, num_eval=NUM_TEST,
                         pad_id=PAD_ID),
    Digits)
