"""How each Hugging Face encoder architecture's checkpoint maps onto attnjax's one Encoder.

An :class:`EncoderFormat`, registered under ``config.json``'s ``model_type`` in
:data:`ENCODER_FORMATS`, is what :func:`~attnjax.pretrained.load_hf_encoder` and
:func:`~attnjax.pretrained.save_hf_encoder` need to read and write one architecture: the
``config.json`` <-> :class:`~attnjax.layers.EncoderConfig` conversion and the list of
tensors (HF name, attnjax path, conversion each way). BERT's lives in
:mod:`attnjax.pretrained.checkpoint`; RoBERTa, DistilBERT and ModernBERT have their own
modules.

HF stores a dense layer as ``weight [out, in]``; flax as ``kernel [in, out]``, and attnjax's
attention projections keep heads as their own axis (``[D, H, hd]`` and ``[H, hd, D]``).
The helpers here build the entries every format shares.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from attnjax.layers import EncoderConfig
from attnjax.registry import Registry

#: (hf name, flax path, to_flax, to_hf). An entry converts one tensor both ways.
Entry = tuple[str, tuple[str, ...], Callable[[np.ndarray], np.ndarray],
              Callable[[np.ndarray], np.ndarray]]


def _identity(tensors: dict[str, np.ndarray], config: EncoderConfig) -> dict[str, np.ndarray]:
  del config
  return tensors


@dataclasses.dataclass(frozen=True)
class EncoderFormat:
  """One Hugging Face encoder architecture, as attnjax reads and writes it.

  Attributes:
    model_type: ``config.json``'s ``model_type``.
    config_from_hf: ``(hf: dict, *, source: str, **overrides) -> EncoderConfig``; a
      one-line ValueError naming the ``config.json`` field attnjax cannot represent.
    config_to_hf: ``(config, *, architecture: str) -> dict``, the ``config.json``; a
      ValueError naming the EncoderConfig field the architecture cannot express.
    entries: ``(config, *, pooler: bool, mlm_head: bool) -> Iterator[Entry]``, every
      tensor, named as in the bare encoder (no ``base_prefix``).
    architectures: ``(encoder class, masked-LM class)`` written to ``architectures``.
    base_prefix: prefix of the encoder's tensors in task models (``bert.``, ``model.``).
    head_prefixes: names of the masked-LM head's tensors start with one of these (they
      are written without ``base_prefix``).
    head_marker: tensor whose presence means the checkpoint has a masked-LM head.
    pooler_marker: tensor whose presence means a pooler; None if the architecture has none.
    encoder_prefixes: names (without ``base_prefix``) of the encoder's tensors start with
      one of these: such a tensor no entry reads means an architecture we would drop.
    describe: ``(config) -> str``, the ``config.json`` fields that size the tensors, for
      error messages.
    split: ``(tensors, config) -> tensors`` after reading (fused tensors such as
      ModernBERT's ``Wqkv`` into one per entry, defaults of absent optional ones).
    fuse: ``(tensors, config) -> tensors`` before writing, the inverse of ``split``.
    check_mlm_head: ``(hf, config, source) -> None`` raises when the checkpoint's head
      differs from attnjax's :class:`~attnjax.models.mlm.MlmHead` (its activation, biases).
  """

  model_type: str
  config_from_hf: Callable[..., EncoderConfig]
  config_to_hf: Callable[..., dict[str, Any]]
  entries: Callable[..., Iterator[Entry]]
  architectures: tuple[str, str]
  base_prefix: str
  head_prefixes: tuple[str, ...]
  head_marker: str
  pooler_marker: str | None
  encoder_prefixes: tuple[str, ...]
  describe: Callable[[EncoderConfig], str]
  split: Callable[[dict, EncoderConfig], dict] = _identity
  fuse: Callable[[dict, EncoderConfig], dict] = _identity
  check_mlm_head: Callable[[Mapping[str, Any], EncoderConfig, str], None] | None = None


ENCODER_FORMATS: Registry[EncoderFormat] = Registry("Hugging Face encoder model_type")


def register_format(fmt: EncoderFormat) -> EncoderFormat:
  """Registers ``fmt`` under its ``model_type``; duplicates are refused."""
  return ENCODER_FORMATS.register(fmt.model_type, fmt)


def get_format(model_type: Any, source: str) -> EncoderFormat:
  """The format of ``model_type``; an unknown one is a ValueError naming ``source``."""
  if model_type not in ENCODER_FORMATS:
    raise ValueError(f"{source}: model_type={model_type!r} is not supported; attnjax loads "
                     f"the encoders {tuple(ENCODER_FORMATS.names())}")
  return ENCODER_FORMATS.get(model_type)


# ----------------------------------------------------------------------------------------
# Entries every format shares.


def identity(x: np.ndarray) -> np.ndarray:
  return x


def transpose(x: np.ndarray) -> np.ndarray:
  return x.T


def dense(hf: str, path: tuple[str, ...], *, bias: bool = True) -> Iterator[Entry]:
  """A ``torch.nn.Linear`` ``hf`` as the flax ``nn.Dense`` at ``path``."""
  yield f"{hf}.weight", path + ("kernel",), transpose, transpose
  if bias:
    yield f"{hf}.bias", path + ("bias",), identity, identity


def norm(hf: str, path: tuple[str, ...], *, bias: bool = True) -> Iterator[Entry]:
  """A ``torch.nn.LayerNorm`` ``hf`` as the flax ``nn.LayerNorm`` at ``path``."""
  yield f"{hf}.weight", path + ("scale",), identity, identity
  if bias:
    yield f"{hf}.bias", path + ("bias",), identity, identity


def heads_in(hf: str, path: tuple[str, ...], config: EncoderConfig, *,
             bias: bool = True) -> Iterator[Entry]:
  """A query/key/value Linear ``[H*hd, D]`` as a DenseGeneral ``[D, H, hd]`` at ``path``."""
  d, h, hd = config.hidden_size, config.num_heads, config.head_dim
  # HF's output features are head-major, as DenseGeneral's.
  yield (f"{hf}.weight", path + ("kernel",), lambda w: w.T.reshape(d, h, hd),
         lambda k: k.reshape(d, h * hd).T)
  if bias:
    yield (f"{hf}.bias", path + ("bias",), lambda b: b.reshape(h, hd),
           lambda b: b.reshape(h * hd))


def heads_out(hf: str, path: tuple[str, ...], config: EncoderConfig, *,
              bias: bool = True) -> Iterator[Entry]:
  """The attention output Linear ``[D, H*hd]`` as a DenseGeneral ``[H, hd, D]`` at ``path``."""
  d, h, hd = config.hidden_size, config.num_heads, config.head_dim
  yield (f"{hf}.weight", path + ("kernel",), lambda w: w.T.reshape(h, hd, d),
         lambda k: k.reshape(h * hd, d).T)
  if bias:
    yield f"{hf}.bias", path + ("bias",), identity, identity


def mlm_head(transform: str, layer_norm: str, output_bias: str, *,
             bias: bool = True) -> Iterator[Entry]:
  """The masked-LM head (:class:`~attnjax.models.mlm.MlmHead`) under its HF names."""
  yield from dense(transform, ("mlm_head", "transform"), bias=bias)
  yield from norm(layer_norm, ("mlm_head", "layer_norm"), bias=bias)
  yield output_bias, ("mlm_head", "output_bias"), identity, identity


def refuse_override(values: Mapping[str, Any], overrides: Mapping[str, Any],
                    non_architecture: frozenset[str] = frozenset(
                        {"dropout_rate", "attention_dropout_rate", "pad_id"})) -> None:
  """Overrides may set numerics (kernel, dtype, dropout), never what a checkpoint fixes."""
  fixed = (set(values) - non_architecture) & set(overrides)
  if fixed:
    raise ValueError(f"cannot override architecture fields {sorted(fixed)} of a checkpoint")


def make_config(values: dict[str, Any], overrides: Mapping[str, Any],
                source: str) -> EncoderConfig:
  """``EncoderConfig(**values, **overrides)`` with errors naming ``source``."""
  refuse_override(values, overrides)
  try:
    return EncoderConfig(**{**values, **overrides})
  except ValueError as e:
    raise ValueError(f"{source}: {e}") from e
