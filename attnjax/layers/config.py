"""EncoderConfig: the one description of an encoder that every layer reads."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax.numpy as jnp

POSITIONS = ("learned", "sinusoidal", "rotary", "none")


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  """Hyper-parameters of the Transformer encoder.

  Attributes:
    vocab_size: number of token ids (ids are in ``[0, vocab_size)``).
    max_length: longest input sequence, CLS token excluded.
    hidden_size: width ``D`` of every token representation.
    num_layers: number of encoder blocks.
    num_heads: query heads per attention layer; ``hidden_size % num_heads == 0``.
    mlp_dim: hidden width of the feed-forward block.
    num_kv_heads: key/value heads (grouped-query attention); ``None`` means ``num_heads``.
    kernel: name of the attention kernel in ``attnjax.kernels`` (``list_kernels()``).
    kernel_options: extra keyword options passed to the kernel on every call.
    dropout_rate: dropout on embeddings and on the residual branches.
    attention_dropout_rate: dropout on the attention probabilities (inside the kernel).
    pre_layer_norm: pre-LN blocks (LayerNorm before each sub-layer, final LayerNorm at the
      end) when True; post-LN blocks as in the original Transformer and BERT when False.
    position: ``learned`` or ``sinusoidal`` absolute positions added to the embeddings,
      ``rotary`` (RoPE applied to queries and keys in every attention layer), or ``none``.
    add_cls_token: prepend a learned CLS vector to every sequence (for CLS pooling on data
      that has no CLS token of its own).
    type_vocab_size: number of token types (segment embeddings as in BERT); 0 for none.
    embedding_layer_norm: LayerNorm after summing the embeddings (BERT does this).
    layer_norm_epsilon: epsilon of every LayerNorm.
    activation: feed-forward activation, a name in ``jax.nn`` (``gelu``, ``relu``, ...).
    exact_gelu: use the erf GELU (as BERT) rather than the tanh approximation.
    use_bias: biases in the attention and feed-forward projections and the LayerNorms
      (False for bias-free models such as ModernBERT and T5).
    relative_buckets: T5's bucketed relative position bias: each self-attention layer
      learns a ``[relative_buckets, num_heads]`` table passed to the kernel as
      ``relative_bias_table`` (bidirectional buckets in bidirectional layers, one-sided in
      causal ones); 0 for none.
    relative_max_distance: T5 bucketing's largest distinguished distance.
    rotary_base: RoPE wavelength base (with ``position='rotary'``); of the global layers
      when ``local_window`` sets a schedule.
    local_rotary_base: RoPE base of the local layers (ModernBERT: 10,000 local, 160,000
      global); ``None`` means ``rotary_base``.
    global_every: with ``local_window``, layer ``i`` attends globally when
      ``i % global_every == 0`` and locally otherwise (ModernBERT: 3); 0 makes every layer
      local.
    local_window: attention span of the local layers, ModernBERT's ``local_attention``:
      query ``i`` sees keys ``j`` with ``|i - j| <= local_window // 2``. 0 (default): no
      schedule, every layer attends globally.
    positions_from_mask: without explicit ``positions``, token ``i``'s position is the
      number of real (unmasked) tokens before it, so a left-padded row starts at 0
      (RoBERTa's numbering); False: ``arange(seq)``. The same for right-padded rows.
    gated_mlp: the feed-forward block is a gated linear unit, ``act(x W_a) * (x W_g)``
      (GeGLU with ``gelu``, SwiGLU with ``silu``); see :class:`FeedForward`.
    skip_first_attention_norm: the first block applies attention to its input without a
      LayerNorm (pre-LN only; ModernBERT, whose embedding LayerNorm comes right before).
    pad_id: token id of padding; the padding mask is ``input_ids != pad_id`` unless an
      explicit ``attention_mask`` is given.
    dtype: computation dtype (parameters stay float32).
    remat: rematerialise each block in the backward pass (less activation memory, about a
      third more compute).
    scan_layers: run the blocks with ``nn.scan`` over stacked parameters (one block is
      compiled instead of ``num_layers``; parameters live under ``layers`` with a leading
      layer axis).
  """

  vocab_size: int
  max_length: int
  hidden_size: int = 128
  num_layers: int = 2
  num_heads: int = 4
  mlp_dim: int = 512
  num_kv_heads: int | None = None
  kernel: str = "dot_product"
  kernel_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.0
  pre_layer_norm: bool = True
  position: str = "learned"
  add_cls_token: bool = False
  type_vocab_size: int = 0
  embedding_layer_norm: bool = False
  layer_norm_epsilon: float = 1e-6
  activation: str = "gelu"
  exact_gelu: bool = False
  use_bias: bool = True
  rotary_base: float = 10000.0
  relative_buckets: int = 0
  relative_max_distance: int = 128
  local_rotary_base: float | None = None
  global_every: int = 0
  local_window: int = 0
  positions_from_mask: bool = False
  gated_mlp: bool = False
  skip_first_attention_norm: bool = False
  pad_id: int = 0
  dtype: Any = jnp.float32
  remat: bool = False
  scan_layers: bool = False

  def __post_init__(self):
    positive = ("vocab_size", "max_length", "hidden_size", "num_layers", "num_heads", "mlp_dim")
    for name in positive:
      value = getattr(self, name)
      if not isinstance(value, int) or value <= 0:
        raise ValueError(f"EncoderConfig.{name} must be a positive int, got {value!r}")
    if self.hidden_size % self.num_heads:
      raise ValueError(
          f"EncoderConfig.hidden_size={self.hidden_size} is not divisible by "
          f"num_heads={self.num_heads}")
    kv = self.num_kv_heads
    if kv is not None and (kv <= 0 or self.num_heads % kv):
      raise ValueError(
          f"EncoderConfig.num_kv_heads={kv} must be positive and divide num_heads={self.num_heads}")
    if self.position not in POSITIONS:
      raise ValueError(f"EncoderConfig.position={self.position!r}; expected one of {POSITIONS}")
    if self.relative_buckets < 0 or self.relative_buckets == 1 or self.relative_buckets % 2:
      raise ValueError(f"EncoderConfig.relative_buckets={self.relative_buckets}; expected 0 "
                       "(none) or an even number >= 2")
    for name in ("dropout_rate", "attention_dropout_rate"):
      if not 0.0 <= getattr(self, name) < 1.0:
        raise ValueError(f"EncoderConfig.{name} must be in [0, 1), got {getattr(self, name)}")
    for name in ("global_every", "local_window"):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 0:
        raise ValueError(f"EncoderConfig.{name} must be an int >= 0, got {value!r}")
    if self.global_every and not self.local_window:
      raise ValueError(f"EncoderConfig.global_every={self.global_every} needs local_window > 0 "
                       "(the span of the other, local layers)")
    if self.local_window and "local_window_size" in self.kernel_options:
      raise ValueError("EncoderConfig.local_window and kernel_options['local_window_size'] "
                       "both set a window; use one")
    if self.skip_first_attention_norm and not self.pre_layer_norm:
      raise ValueError("EncoderConfig.skip_first_attention_norm needs pre_layer_norm=True")
    if self.scan_layers and (self.local_window or self.skip_first_attention_norm):
      # nn.scan runs one block definition for every layer; these make layers differ.
      field = "local_window" if self.local_window else "skip_first_attention_norm"
      raise ValueError(f"EncoderConfig.scan_layers=True cannot run blocks that differ per "
                       f"layer ({field} is set); use scan_layers=False")
    # Freeze the options so the config stays hashable (flax module fields must be).
    object.__setattr__(self, "kernel_options", _FrozenOptions(self.kernel_options))

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  def is_local_layer(self, index: int) -> bool:
    """Whether block ``index`` (0-based) attends within ``local_window`` (the schedule)."""
    if not self.local_window:
      return False
    return not (self.global_every and index % self.global_every == 0)

  def layer_rotary_base(self, index: int) -> float:
    """RoPE base of block ``index``: ``local_rotary_base`` in local layers if set."""
    if self.is_local_layer(index) and self.local_rotary_base is not None:
      return self.local_rotary_base
    return self.rotary_base

  def layer_kernel_options(self, index: int) -> Mapping[str, Any]:
    """Kernel options of block ``index``'s self-attention: local layers add the window."""
    if not self.is_local_layer(index):
      return self.kernel_options
    half = self.local_window // 2
    return _FrozenOptions({**self.kernel_options, "local_window_size": (half, half)})

  @property
  def sequence_length(self) -> int:
    """Length of the sequence the blocks see (CLS token included)."""
    return self.max_length + int(self.add_cls_token)


class _FrozenOptions(dict):
  """A dict that is hashable and read-only, for kernel options inside a frozen config."""

  def __hash__(self):  # type: ignore[override]
    return hash(tuple(sorted(self.items())))

  def _refuse(self, *args, **kwargs):
    raise TypeError("EncoderConfig.kernel_options is read-only")

  __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = _refuse
