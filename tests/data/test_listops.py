"""ListOps: labels checked by an independent evaluator, determinism, the builder and task."""

from __future__ import annotations

import random
import statistics

import numpy as np
import pytest

from attnjax import data as data_lib
from attnjax.data import listops

# A tiny variant so the builder test prepares in about a second.
TINY = listops.ListOpsConfig(name="tiny_test", min_length=20, max_length=80, num_train=60,
                             num_validation=10, num_test=10, seed=3)


def _evaluate(text: str) -> int:
  """Independent ListOps evaluator: a stack machine over the LRA text form.

  Written from the specification alone (MIN, MAX, MED = truncated median, SM = sum mod 10),
  sharing no code with the generator.
  """
  stack: list[list] = []
  result = None
  for token in text.split():
    if token.startswith("["):
      stack.append([token[1:]])
    elif token == "]":
      op, *args = stack.pop()
      if op == "MIN":
        value = min(args)
      elif op == "MAX":
        value = max(args)
      elif op == "MED":
        s = sorted(args)
        mid = len(s) // 2
        value = s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) // 2
      elif op == "SM":
        value = sum(args) % 10
      else:
        raise AssertionError(f"unknown operator {op}")
      if stack:
        stack[-1].append(value)
      else:
        result = value
    else:
      assert len(token) == 1 and token.isdigit(), token
      if stack:
        stack[-1].append(int(token))
      else:
        result = int(token)
  assert not stack and result is not None, text
  return result


def test_evaluator_on_the_lra_example():
  assert _evaluate("[MAX 4 3 [MIN 2 3 ] 1 0 ]") == 4
  assert _evaluate("[MED 1 2 3 4 ]") == 2  # int(np.median([1, 2, 3, 4])) = int(2.5)
  assert _evaluate("[SM 9 9 [MIN 5 7 ] ]") == 3


def test_every_label_matches_the_independent_evaluator():
  examples = list(listops.generate_examples(0, 600, min_length=50, max_length=300))
  depths = []
  for tokens, label in examples:
    text = " ".join(tokens)
    assert label == _evaluate(text), text
    assert 50 < len(tokens) < 300
    depth = max_depth = 0
    for t in tokens:
      depth += t.startswith("[")
      depth -= t == "]"
      max_depth = max(max_depth, depth)
    depths.append(max_depth)
    # At most 10 arguments per operator: checked through the tree's bracket structure.
  assert max(depths) <= 9  # operators nest to depth 9 at most; depth-10 nodes are digits
  assert len({tuple(t) for t, _ in examples}) == len(examples)  # all distinct
  assert set(label for _, label in examples) == set(range(10))


def test_operator_arity_is_two_to_ten():
  for tokens, _ in listops.generate_examples(1, 300, min_length=50, max_length=300):
    counts: list[int] = []
    for t in tokens:
      if t.startswith("["):
        if counts:
          counts[-1] += 1
        counts.append(0)
      elif t == "]":
        assert 2 <= counts.pop() <= 10
      elif counts:
        counts[-1] += 1


def test_generation_is_deterministic_per_seed():
  a = list(listops.generate_examples(7, 50, min_length=20, max_length=100))
  b = list(listops.generate_examples(7, 50, min_length=20, max_length=100))
  c = list(listops.generate_examples(8, 50, min_length=20, max_length=100))
  assert a == b
  assert a != c
  # Pinned: a change here changes every ListOps dataset and must bump VERSION.
  assert " ".join(a[0][0])[:40] == PINNED_FIRST_40 and a[0][1] == PINNED_FIRST_LABEL


PINNED_FIRST_40 = "[MAX 5 1 [MED 3 7 7 [MIN 3 9 5 ] 6 8 0 5"
PINNED_FIRST_LABEL = 5


def test_vocabulary_is_fixed_and_round_trips():
  assert listops.VOCAB[0] == "<pad>" and listops.PAD_ID == 0
  assert listops.VOCAB_SIZE == 16
  assert [listops.TOKEN_ID[str(d)] for d in range(10)] == list(range(1, 11))
  text = "[MAX 4 3 [MIN 2 3 ] 1 0 ]"
  assert listops.decode(listops.encode(text.split())) == text


def test_empty_length_range_is_an_error():
  with pytest.raises(ValueError, match="empty length range"):
    next(listops.generate_examples(0, 1, min_length=10, max_length=11))


def test_builder_splits_are_disjoint_and_labelled(tmp_path):
  builder = data_lib.prepare_builder(listops.ListOps, tmp_path, config=TINY)
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
      "train": 60, "validation": 10, "test": 10}
  assert builder.info.file_format.value == "array_record"
  seen = set()
  for split in ("train", "validation", "test"):
    for record in builder.as_data_source(split):
      tokens = np.asarray(record["tokens"])
      assert tokens.dtype == np.int32 and 20 < len(tokens) < 80
      assert tokens.min() >= 1 and tokens.max() < listops.VOCAB_SIZE
      assert int(record["label"]) == _evaluate(listops.decode(tokens))
      seen.add(tokens.tobytes())
  assert len(seen) == 80
  # The train split is the first 60 expressions of the seeded stream (TFDS reorders
  # records by key hash, deterministically).
  stream = listops.generate_examples(3, 60, min_length=20, max_length=80)
  assert {" ".join(t) for t, _ in stream} == {
      listops.decode(r["tokens"]) for r in builder.as_data_source("train")}


def test_registered_tasks():
  for name, length, n_train in (("listops", 2000, 96_000), ("listops_small", 300, 4_000)):
    info = data_lib.get_dataset_spec(name).info
    assert (info.vocab_size, info.max_length, info.num_classes, info.num_train) == (
        16, length, 10, n_train)
  assert listops.STANDARD.min_length == 500 and listops.STANDARD.num_test == 2_000
