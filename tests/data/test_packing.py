"""First-fit packing: rows, segment ids, positions, per-segment labels, the too-long error."""

from __future__ import annotations

import numpy as np
import pytest

from attnjax.data import packing, text


def test_first_fit_puts_each_example_in_the_first_row_with_room():
  rows = packing.first_fit([5, 3, 4, 2, 1, 6], 8)
  assert rows == [[0, 1], [2, 3, 4], [5]]
  assert packing.first_fit([1, 1, 1, 1, 1], 8, max_segments=2) == [[0, 1], [2, 3], [4]]
  rng = np.random.default_rng(0)
  lengths = rng.integers(1, 17, size=500)
  rows = packing.first_fit(lengths, 16)
  assert sorted(i for r in rows for i in r) == list(range(500))
  fill = [sum(lengths[i] for i in r) for r in rows]
  assert max(fill) <= 16
  # First fit: no example fits into an earlier row than the one it went to, when it came.
  for r, row in enumerate(rows):
    for i in row:
      before = [sum(lengths[j] for j in rows[q] if j < i) for q in range(r)]
      assert all(b + lengths[i] > 16 for b in before)


def test_too_long_is_a_one_line_error_naming_the_example():
  with pytest.raises(ValueError, match=r"^doc 1 has 9 tokens; packing needs 1..max_length=8"):
    packing.first_fit([3, 9], 8, names=["doc 0", "doc 1"])


def test_packed_classification_rows_carry_one_label_per_segment():
  examples = [{"tokens": np.arange(1, n + 1), "label": n} for n in (3, 2, 4, 1)]
  packed = packing.PackedSource(examples, max_length=6, segment_keys=("label",),
                                max_segments=3, shuffle=False)
  assert packed.rows == [[0, 1, 3], [2]]
  row = packed[0]
  assert row["tokens"].tolist() == [1, 2, 3, 1, 2, 1]
  assert row["segment_ids"].tolist() == [1, 1, 1, 2, 2, 3]
  assert row["positions"].tolist() == [0, 1, 2, 0, 1, 0]
  assert row["label"].tolist() == [3, 2, 1] and row["label_weight"].tolist() == [1, 1, 1]
  assert packed[1]["label"].tolist() == [4, 0, 0] and packed[1]["label_weight"].tolist() == \
      [1, 0, 0]


def test_causal_lm_chunks_predict_every_token_once_and_pack_with_byte_counts():
  byte_lengths = np.array([0, 0, 0] + [1, 2, 3, 1, 1, 1, 1], np.int32)
  chunks = text.causal_lm_chunks([3, 4, 5, 6, 7], max_length=4, bos_id=1, eos_id=2,
                                 byte_lengths=byte_lengths)
  assert [c["tokens"].tolist() for c in chunks] == [[1, 3, 4, 5], [6, 7]]
  assert [c["targets"].tolist() for c in chunks] == [[3, 4, 5, 6], [7, 2]]
  assert [c["num_bytes"] for c in chunks] == [1 + 2 + 3 + 1, 1]
  packed = packing.PackedSource(chunks + chunks, max_length=4, token_keys=("tokens", "targets"),
                                sum_keys=("num_bytes",), shuffle=False)
  assert packed.rows == [[0], [1, 3], [2]]
  assert packed[1]["targets"].tolist() == [7, 2, 7, 2] and int(packed[1]["num_bytes"]) == 2
  assert packed[1]["positions"].tolist() == [0, 1, 0, 1]


def test_char_tokenizer_round_trips_and_has_the_special_ids():
  tok = text.char_tokenizer("0123456789+")
  ids = tok.encode("12+7").ids
  assert ids == [5, 6, 14, 11] and tok.decode(ids) == "12+7"
  assert tok.decode([1] + ids + [2, 0]) == "12+7"  # special tokens are skipped
  assert [tok.token_to_id(t) for t in ("<pad>", "<bos>", "<eos>", "<unk>")] == [0, 1, 2, 3]
