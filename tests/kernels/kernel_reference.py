"""A float64 NumPy reference of exact attention with every option of the kernel contract.

Deliberately naive (explicit [batch, heads, T, S] arrays, loops where clearer) so that it
is easy to check by eye. Shared by the kernel tests.
"""

from __future__ import annotations

import numpy as np

from attnjax.kernels import positions


def reference_attention(q, k, v, bias=None, mask=None, *, scale=None, is_causal=False,
                        alignment="top_left", local_window_size=None, query_seq_lengths=None,
                        key_value_seq_lengths=None, q_segment_ids=None, kv_segment_ids=None,
                        logits_soft_cap=None, alibi_slopes=None, relative_bias_table=None,
                        relative_max_distance=128, relative_bidirectional=True):
  """Returns (out [batch..., T, H, Dv], lse [batch..., T, H], weights [batch..., H, T, S])."""
  q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
  batch = q.shape[:-3]
  t, h, d = q.shape[-3:]
  s, kh, _ = k.shape[-3:]
  g = h // kh
  # Repeat kv heads so that query head i uses kv head i // g (jax.nn's grouping).
  k = np.repeat(k, g, axis=-2)
  v = np.repeat(v, g, axis=-2)
  scale = 1.0 / np.sqrt(d) if scale is None else scale
  logits = np.einsum("...thd,...shd->...hts", q, k) * scale
  if logits_soft_cap is not None:
    logits = logits_soft_cap * np.tanh(logits / logits_soft_cap)
  full = batch + (h, t, s)
  allowed = np.ones(full, bool)
  offset = 0 if alignment == "top_left" else s - t
  qi = np.arange(t)[:, None]
  ki = np.arange(s)[None, :]
  rel = ki - qi - offset
  if bias is not None:
    logits = logits + np.asarray(bias, np.float64)
  if alibi_slopes is not None:
    sl = np.broadcast_to(np.asarray(alibi_slopes, np.float64), batch + (h,))
    logits = logits - sl[..., None, None] * np.abs(rel)
  if relative_bias_table is not None:
    table = np.asarray(relative_bias_table, np.float64)
    buckets = np.asarray(positions.relative_position_bucket(
        rel, num_buckets=table.shape[0], max_distance=relative_max_distance,
        bidirectional=relative_bidirectional))
    table = np.broadcast_to(table, (table.shape[0], h))
    logits = logits + np.moveaxis(table[buckets], -1, 0)  # [H, T, S]
  if mask is not None:
    allowed &= np.broadcast_to(np.asarray(mask, bool), full)
  if is_causal:
    allowed &= rel <= 0
  if local_window_size is not None:
    w = local_window_size
    left, right = (w, w) if np.isscalar(w) else w
    allowed &= (rel >= -left) & (rel <= right)
  if query_seq_lengths is not None:
    ql = np.broadcast_to(np.asarray(query_seq_lengths), batch)
    allowed &= (qi < ql[..., None, None])[..., None, :, :]
  if key_value_seq_lengths is not None:
    kl = np.broadcast_to(np.asarray(key_value_seq_lengths), batch)
    allowed &= (ki < kl[..., None, None])[..., None, :, :]
  if q_segment_ids is not None:
    qs = np.broadcast_to(np.asarray(q_segment_ids), batch + (t,))
    ks = qs if kv_segment_ids is None else np.broadcast_to(np.asarray(kv_segment_ids),
                                                           batch + (s,))
    allowed &= (qs[..., :, None] == ks[..., None, :])[..., None, :, :]
  logits = np.where(allowed, logits, -np.inf)
  weights = np.zeros(full)
  lse = np.full(batch + (h, t), -np.inf)
  live = allowed.any(-1)
  m = np.where(live, logits.max(-1, initial=-np.inf), 0.0)
  e = np.where(allowed, np.exp(logits - m[..., None]), 0.0)
  z = e.sum(-1)
  weights = np.where(live[..., None], e / np.where(live, z, 1.0)[..., None], 0.0)
  lse = np.where(live, np.log(np.where(live, z, 1.0)) + m, -np.inf)
  out = np.einsum("...hts,...shd->...thd", weights, v)
  return out, np.swapaxes(lse, -1, -2), weights


def random_inputs(rng, batch=(2,), t=7, s=9, h=4, kh=2, d=8, dv=None, dtype=np.float32):
  """Random q [batch..., t, h, d], k [batch..., s, kh, d], v [batch..., s, kh, dv]."""
  dv = d if dv is None else dv
  q = rng.normal(size=batch + (t, h, d)).astype(dtype)
  k = rng.normal(size=batch + (s, kh, d)).astype(dtype)
  v = rng.normal(size=batch + (s, kh, dv)).astype(dtype)
  return q, k, v


# Option sets every exact kernel is checked on: name -> (input shapes, options builder).
# Builders take (rng, batch, t, s, h) and return kwargs for the kernel and the reference.
def _mask(rng, batch, t, s, h):
  m = rng.random(batch + (1, t, s)) < 0.7
  m[..., 0, :] = False  # one fully masked query row per batch element
  return {"mask": m}


OPTION_CASES = {
    "plain": ({}, lambda r, b, t, s, h: {}),
    "mask": ({}, _mask),
    "bias": ({}, lambda r, b, t, s, h: {"bias": r.normal(size=b + (h, t, s)).astype(np.float32)}),
    "bias_broadcast": ({}, lambda r, b, t, s, h: {
        "bias": r.normal(size=(1, t, s)).astype(np.float32)}),
    "causal": ({"t": 9, "s": 9}, lambda r, b, t, s, h: {"is_causal": True}),
    "causal_t_gt_s_top_left": ({"t": 11, "s": 6}, lambda r, b, t, s, h: {"is_causal": True}),
    "causal_bottom_right": ({"t": 5, "s": 12}, lambda r, b, t, s, h: {
        "is_causal": True, "alignment": "bottom_right"}),
    "causal_bottom_right_t_gt_s": ({"t": 12, "s": 5}, lambda r, b, t, s, h: {
        "is_causal": True, "alignment": "bottom_right"}),
    "window": ({"t": 13, "s": 13}, lambda r, b, t, s, h: {"local_window_size": (3, 1)}),
    "window_int_causal": ({"t": 13, "s": 15}, lambda r, b, t, s, h: {
        "local_window_size": 2, "is_causal": True}),
    "lengths": ({}, lambda r, b, t, s, h: {
        "query_seq_lengths": np.array([t - 2, 0][:b[0]]),
        "key_value_seq_lengths": np.array([s - 3, 4][:b[0]])}),
    "segments": ({"t": 10, "s": 10}, lambda r, b, t, s, h: {
        "q_segment_ids": np.sort(r.integers(0, 3, size=b + (t,)), axis=-1)}),
    "segments_cross": ({"t": 7, "s": 9}, lambda r, b, t, s, h: {
        "q_segment_ids": r.integers(0, 3, size=b + (t,)),
        "kv_segment_ids": r.integers(0, 3, size=b + (s,))}),
    "soft_cap": ({}, lambda r, b, t, s, h: {"logits_soft_cap": 1.5, "scale": 1.3}),
    "alibi": ({"t": 8, "s": 11}, lambda r, b, t, s, h: {
        "alibi_slopes": positions.alibi_slopes(h), "is_causal": True,
        "alignment": "bottom_right"}),
    "t5": ({"t": 9, "s": 12}, lambda r, b, t, s, h: {
        "relative_bias_table": r.normal(size=(8, h)).astype(np.float32),
        "relative_max_distance": 10}),
    "t5_unidirectional": ({}, lambda r, b, t, s, h: {
        "relative_bias_table": r.normal(size=(6, 1)).astype(np.float32),
        "relative_max_distance": 9, "relative_bidirectional": False}),
    "mqa": ({"h": 4, "kh": 1}, lambda r, b, t, s, h: {"is_causal": True}),
    "no_batch_dims": ({"batch": ()}, lambda r, b, t, s, h: {"mask": r.random((t, s)) < 0.8}),
    "two_batch_dims_vdim": ({"batch": (2, 3), "dv": 5}, lambda r, b, t, s, h: {
        "bias": r.normal(size=(3, 1, 1, s)).astype(np.float32)}),
    "everything": ({"t": 12, "s": 14}, lambda r, b, t, s, h: {
        **_mask(r, b, t, s, h), "bias": r.normal(size=b + (1, t, s)).astype(np.float32),
        "is_causal": True, "alignment": "bottom_right", "local_window_size": (5, 0),
        "key_value_seq_lengths": np.array([14, 11][:b[0]]),
        "q_segment_ids": np.sort(r.integers(0, 2, size=b + (t,)), axis=-1),
        "kv_segment_ids": np.sort(r.integers(0, 2, size=b + (s,)), axis=-1),
        "logits_soft_cap": 2.0, "alibi_slopes": positions.alibi_slopes(h),
        "relative_bias_table": r.normal(size=(4, h)).astype(np.float32),
        "relative_max_distance": 8}),
}


def make_case(name, seed=0, dtype=np.float32):
  """(q, k, v, options) for OPTION_CASES[name]."""
  shapes, build = OPTION_CASES[name]
  rng = np.random.default_rng(seed)
  kw = dict(batch=(2,), t=7, s=9, h=4, kh=2, d=8)
  kw.update(shapes)
  q, k, v = random_inputs(rng, dtype=dtype, **kw)
  return q, k, v, build(rng, kw["batch"], kw["t"], kw["s"], kw["h"])
