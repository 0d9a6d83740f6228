"""Rollout, flow, entropy and distance on hand-made matrices."""

import numpy as np
import pytest

from attnjax.inspect import analysis


def _random_attention(rng, *shape):
  logits = rng.normal(size=shape)
  w = np.exp(logits)
  return w / w.sum(-1, keepdims=True)


def test_rollout_of_self_attention_only_is_the_identity():
  w = np.broadcast_to(np.eye(5), (3, 2, 4, 5, 5))  # [layers, batch, heads, seq, seq]
  np.testing.assert_allclose(analysis.attention_rollout(w), np.broadcast_to(np.eye(5),
                                                                            (2, 5, 5)))


def test_rollout_is_the_product_of_residual_augmented_head_means():
  rng = np.random.default_rng(0)
  w = _random_attention(rng, 3, 2, 4, 4)  # [layers, heads, seq, seq]
  a = [0.5 * w[l].mean(0) + 0.5 * np.eye(4) for l in range(3)]
  expected = a[2] @ a[1] @ a[0]
  got = analysis.attention_rollout(w)
  np.testing.assert_allclose(got, expected, atol=1e-12)
  np.testing.assert_allclose(got.sum(-1), 1.0)
  plain = analysis.attention_rollout(w, residual=False)
  np.testing.assert_allclose(plain, w[2].mean(0) @ w[1].mean(0) @ w[0].mean(0), atol=1e-12)


def test_max_flow_on_a_textbook_network():
  # CLRS figure 26.1: maximum flow 23 from s=0 to t=5.
  c = np.zeros((6, 6))
  for u, v, cap in [(0, 1, 16), (0, 2, 13), (1, 3, 12), (2, 1, 4), (2, 4, 14), (3, 2, 9),
                    (3, 5, 20), (4, 3, 7), (4, 5, 4)]:
    c[u, v] = cap
  assert analysis.max_flow_value(c, 0, 5) == pytest.approx(23.0)


def test_flow_of_one_layer_is_its_residual_augmented_matrix():
  rng = np.random.default_rng(1)
  w = _random_attention(rng, 1, 3, 4, 4)
  expected = analysis.with_residual(w)[0]
  for use_scipy in (True, False):
    np.testing.assert_allclose(analysis.attention_flow(w, use_scipy=use_scipy), expected,
                               atol=1e-5)


def test_flow_is_the_identity_for_self_attention_and_rows_sum_to_one():
  np.testing.assert_allclose(analysis.attention_flow(np.broadcast_to(np.eye(4), (3, 2, 4, 4))),
                             np.eye(4), atol=1e-6)
  rng = np.random.default_rng(2)
  flow = analysis.attention_flow(_random_attention(rng, 3, 2, 5, 5))
  np.testing.assert_allclose(flow.sum(-1), 1.0, atol=1e-9)
  assert (flow >= 0).all()


def test_flow_solvers_agree_with_networkx():
  rng = np.random.default_rng(3)
  w = _random_attention(rng, 3, 2, 4, 4)
  ours = analysis.attention_flow(w, use_scipy=False)
  np.testing.assert_allclose(analysis.attention_flow(w, use_scipy=True), ours, atol=1e-5)
  nx = pytest.importorskip("networkx")
  layers = analysis.with_residual(w)
  g = nx.DiGraph()
  for l in range(3):
    for i in range(4):
      for j in range(4):
        g.add_edge((l + 1, i), (l, j), capacity=layers[l, i, j])
  ref = np.array([[nx.maximum_flow_value(g, (3, i), (0, j)) for j in range(4)]
                  for i in range(4)])
  np.testing.assert_allclose(ours, ref / ref.sum(-1, keepdims=True), atol=1e-9)


def test_entropy_on_hand_made_rows():
  uniform = np.full((4, 4), 0.25)
  one_hot = np.eye(4)
  assert analysis.attention_entropy(uniform) == pytest.approx(np.log(4))
  assert analysis.attention_entropy(one_hot) == pytest.approx(0.0)
  # A fully masked query row (zeros) is left out of the mean.
  half = np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
  assert analysis.attention_entropy(half) == pytest.approx(np.log(2) / 2)
  stacked = np.stack([uniform, one_hot])
  np.testing.assert_allclose(analysis.attention_entropy(stacked), [np.log(4), 0.0])


def test_mean_attention_distance_on_hand_made_rows():
  assert analysis.mean_attention_distance(np.eye(3)) == pytest.approx(0.0)
  uniform = np.full((3, 3), 1 / 3)
  # Rows at positions 0, 1, 2: (0+1+2)/3, (1+0+1)/3, (2+1+0)/3.
  assert analysis.mean_attention_distance(uniform) == pytest.approx((1 + 2 / 3 + 1) / 3)
  # Each query attends to the next one: distance 1 in 1-D, sqrt(2) on a diagonal in 2-D.
  shift = np.roll(np.eye(3), 1, axis=1)
  assert analysis.mean_attention_distance(shift, np.array([0, 1, 2])) == pytest.approx(
      (1 + 1 + 2) / 3)
  diag = np.array([[0, 1], [1, 0]], float)
  assert analysis.mean_attention_distance(diag, np.array([[0, 0], [1, 1]])) == pytest.approx(
      np.sqrt(2))
  # Rows are renormalised, so a sub-matrix (e.g. pixels without CLS) can be passed.
  assert analysis.mean_attention_distance(0.5 * diag) == pytest.approx(1.0)


def test_top_attended_orders_and_excludes():
  row = np.array([0.5, 0.1, 0.3, 0.1])
  tokens = ["[CLS]", "the", "cat", "[SEP]"]
  assert [t for t, _, _ in analysis.top_attended(row, tokens, 2)] == ["[CLS]", "cat"]
  assert [t for t, _, _ in analysis.top_attended(row, tokens, 2, exclude={0})] == ["cat", "the"]
