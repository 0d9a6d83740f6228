"""GPT-2 and BART checkpoints <-> attnjax's CausalLM and EncoderDecoder.

Registered in :data:`~attnjax.pretrained.hf_models.HF_ARCHITECTURES` as ``gpt2`` and
``bart``; use :func:`~attnjax.pretrained.load_hf_model` / ``save_hf_model``.

* GPT-2 (``GPT2LMHeadModel``): pre-LN, learned positions, tanh GELU, LayerNorm epsilon
  ``layer_norm_epsilon``, output tied to ``wte``. Its ``Conv1D`` weights are ``[in, out]``
  (flax's layout); ``c_attn`` holds query, key and value side by side.
* BART (``BartForConditionalGeneration``): post-LN, learned positions offset by 2 (the
  first two rows of ``embed_positions`` are never used; they are dropped on import and
  written as zeros on export), LayerNorm after the embeddings, exact GELU, one ``shared``
  table for source, target and output; ``final_logits_bias`` must be zero (as transformers
  initialises it) because attnjax's output has no bias.

T5 is not converted: its RMSNorm, unscaled attention logits and per-stack bias table
differ from attnjax's T5-style options (see :mod:`attnjax.models.seq2seq`).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Callable, Mapping

import jax
import numpy as np

from attnjax.layers import EncoderConfig
from attnjax.models.decoder import CausalLM
from attnjax.models.seq2seq import EncoderDecoder
from attnjax.pretrained import checkpoint
from attnjax.pretrained import tokenizer as tokenizer_lib
from attnjax.pretrained.hf_config import _ACTIVATIONS, check_exportable
from attnjax.pretrained.hf_models import HFArchitecture, register_hf_architecture

Path = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class TensorMap:
  """One Hugging Face tensor and the attnjax parameter(s) it becomes.

  Attributes:
    hf: the tensor's name in the checkpoint.
    paths: flax parameter paths it fills (several for GPT-2's fused ``c_attn``).
    to_flax: tensor -> one array per path.
    to_hf: one array per path -> tensor.
  """

  hf: str
  paths: tuple[Path, ...]
  to_flax: Callable[[np.ndarray], tuple[np.ndarray, ...]]
  to_hf: Callable[..., np.ndarray]


def _one(hf: str, path: Path, to_flax=lambda x: x, to_hf=lambda x: x) -> TensorMap:
  return TensorMap(hf, (path,), lambda x: (to_flax(x),), to_hf)


def _get(tree: Mapping, path: Path) -> Any:
  for key in path:
    tree = tree[key]
  return tree


def _set(tree: dict, path: Path, value: Any) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def tensors_to_params(tensors: Mapping[str, np.ndarray], maps: list[TensorMap],
                      expected: Mapping, source: str) -> dict:
  """Converts checkpoint tensors into a params tree, checking every shape.

  Raises:
    ValueError: a missing tensor, or one whose shape does not fit ``expected`` (the
      model's shapes from ``jax.eval_shape``), naming it.
  """
  params: dict = {}
  for m in maps:
    if m.hf not in tensors:
      raise ValueError(f"{source}: tensor {m.hf!r} is missing")
    value = np.asarray(tensors[m.hf], dtype=np.float32)
    want = [tuple(_get(expected, p).shape) for p in m.paths]
    try:
      parts = m.to_flax(value)
      ok = [tuple(x.shape) for x in parts] == want
    except ValueError:
      ok = False
    if not ok:
      raise ValueError(f"{source}: tensor {m.hf!r} has shape {list(value.shape)}, which does "
                       f"not fit config.json (expected {want})")
    for p, x in zip(m.paths, parts):
      _set(params, p, np.ascontiguousarray(x, dtype=np.float32))
  return params


def params_to_tensors(params: Mapping, maps: list[TensorMap]) -> dict[str, np.ndarray]:
  """The checkpoint tensors of ``params`` (float32, contiguous)."""
  out = {}
  for m in maps:
    try:
      parts = [np.asarray(_get(params, p), np.float32) for p in m.paths]
    except KeyError as e:
      raise ValueError(f"params have no {'/'.join(m.paths[0])} (needed for {m.hf}); do they "
                       "belong to this model?") from e
    out[m.hf] = np.ascontiguousarray(m.to_hf(*parts))
  return out


def _expected(model, *args) -> dict:
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *args))["params"]


def _strip(tensors: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
  return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in tensors.items()}


def _refuse_unused(tensors: Mapping[str, Any], maps: list[TensorMap], ignored: Callable[[str], bool],
                   source: str, arch: str) -> None:
  used = {m.hf for m in maps}
  unused = sorted(n for n in tensors if n not in used and not ignored(n))
  if unused:
    raise ValueError(f"{source}: tensors {unused[:5]} have no place in attnjax's {arch} "
                     "(an architecture it does not represent)")


# EncoderConfig options no decoder architecture here has (ModernBERT's, RoBERTa's numbering).
_NO_ENCODER_OPTIONS = dict(gated_mlp=False, local_window=0, skip_first_attention_norm=False,
                           positions_from_mask=False)


def _hidden_act(config: EncoderConfig) -> str:
  reverse = {("gelu", True): "gelu", ("gelu", False): "gelu_new", ("relu", False): "relu",
             ("relu", True): "relu", ("silu", False): "silu", ("silu", True): "silu"}
  act = reverse.get((config.activation, config.exact_gelu))
  if act is None:
    raise ValueError(f"EncoderConfig.activation={config.activation!r} has no transformers "
                     "activation_function; use gelu, relu or silu")
  return act


def _activation(value: Any, source: str, field: str) -> tuple[str, bool]:
  if value not in _ACTIVATIONS:
    raise ValueError(f"{source}: {field}={value!r} cannot be represented; supported: "
                     f"{sorted(_ACTIVATIONS)}")
  return _ACTIVATIONS[value]


def _write(directory: pathlib.Path, hf: dict, tensors: dict, tokenizer: Any,
           vocab_size: int, max_length: int) -> None:
  from safetensors import numpy as st_numpy  # pylint: disable=import-outside-toplevel
  files = {
      checkpoint.CONFIG_FILE: lambda f: pathlib.Path(f).write_text(json.dumps(hf, indent=2)
                                                                   + "\n"),
      # "pt" metadata: transformers checks the format tag of the file it loads.
      checkpoint.WEIGHTS_FILE: lambda f: st_numpy.save_file(tensors, f,
                                                            metadata={"format": "pt"}),
  }
  if tokenizer is not None:
    files.update(tokenizer_lib.tokenizer_files(tokenizer, vocab_size=vocab_size,
                                               max_length=max_length))
  checkpoint._write_atomically(directory, files)  # pylint: disable=protected-access


def _check_overrides(overrides: Mapping[str, Any], source: str) -> None:
  allowed = {"kernel", "kernel_options", "dtype", "dropout_rate", "attention_dropout_rate",
             "remat"}
  bad = sorted(set(overrides) - allowed)
  if bad:
    raise ValueError(f"{source}: cannot override {bad}; only {sorted(allowed)} (fields that "
                     "do not change the architecture)")


# ----------------------------------------------------------------------------------------
# GPT-2.

_GPT2_DEFAULTS = dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                      n_inner=None, activation_function="gelu_new", resid_pdrop=0.1,
                      embd_pdrop=0.1, attn_pdrop=0.1, layer_norm_epsilon=1e-5,
                      scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False,
                      tie_word_embeddings=True, bos_token_id=50256, eos_token_id=50256)


def gpt2_config(hf: Mapping[str, Any], source: str = "config.json",
                **overrides: Any) -> tuple[EncoderConfig, bool]:
  """``(EncoderConfig, tie_embeddings)`` of a GPT-2 ``config.json``.

  Raises:
    ValueError: naming the field attnjax cannot represent.
  """
  _check_overrides(overrides, source)
  cfg = {**_GPT2_DEFAULTS, **{k: v for k, v in hf.items() if v is not None}}
  for field, ok in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                    ("add_cross_attention", False)):
    if bool(cfg.get(field, ok)) != ok:
      raise ValueError(f"{source}: {field}={cfg[field]!r} cannot be represented (attnjax "
                       f"needs {ok})")
  activation, exact = _activation(cfg["activation_function"], source, "activation_function")
  pad = hf.get("pad_token_id")
  if pad is None:
    pad = cfg.get("eos_token_id") if cfg.get("eos_token_id") is not None else 0
  values = dict(vocab_size=cfg["vocab_size"], max_length=cfg["n_positions"],
                hidden_size=cfg["n_embd"], num_layers=cfg["n_layer"], num_heads=cfg["n_head"],
                mlp_dim=cfg["n_inner"] or 4 * cfg["n_embd"],
                dropout_rate=float(cfg["resid_pdrop"]),
                attention_dropout_rate=float(cfg["attn_pdrop"]), pre_layer_norm=True,
                position="learned", layer_norm_epsilon=float(cfg["layer_norm_epsilon"]),
                activation=activation, exact_gelu=exact, pad_id=int(pad))
  values.update(overrides)
  try:
    return EncoderConfig(**values), bool(cfg["tie_word_embeddings"])
  except ValueError as e:
    raise ValueError(f"{source}: {e}") from e


def _gpt2_maps(config: EncoderConfig, tied: bool) -> list[TensorMap]:
  d, h, hd = config.hidden_size, config.num_heads, config.head_dim
  dec = ("decoder",)
  maps = [_one("wte.weight", dec + ("embeddings", "word_embeddings", "embedding")),
          _one("wpe.weight", dec + ("embeddings", "position_embeddings"))]

  def norm(hf, path):
    return [_one(f"{hf}.weight", path + ("scale",)), _one(f"{hf}.bias", path + ("bias",))]

  for i in range(config.num_layers):
    hf, fx = f"h.{i}", dec + (f"layer_{i}",)
    att = fx + ("attention",)
    qkv = tuple(att + (p, "kernel") for p in ("query", "key", "value"))
    qkv_b = tuple(att + (p, "bias") for p in ("query", "key", "value"))
    maps += norm(f"{hf}.ln_1", fx + ("attention_norm",))
    # c_attn: [D, 3D] = [query | key | value], each head-major (as DenseGeneral's [D, H, hd]).
    maps.append(TensorMap(f"{hf}.attn.c_attn.weight", qkv,
                          lambda w: tuple(x.reshape(d, h, hd) for x in np.split(w, 3, axis=1)),
                          lambda *ks: np.concatenate([k.reshape(d, h * hd) for k in ks], 1)))
    maps.append(TensorMap(f"{hf}.attn.c_attn.bias", qkv_b,
                          lambda b: tuple(x.reshape(h, hd) for x in np.split(b, 3)),
                          lambda *bs: np.concatenate([b.reshape(h * hd) for b in bs])))
    maps.append(_one(f"{hf}.attn.c_proj.weight", att + ("out", "kernel"),
                     lambda w: w.reshape(h, hd, d), lambda k: k.reshape(h * hd, d)))
    maps.append(_one(f"{hf}.attn.c_proj.bias", att + ("out", "bias")))
    maps += norm(f"{hf}.ln_2", fx + ("mlp_norm",))
    for hf_name, fx_name in (("c_fc", "wi"), ("c_proj", "wo")):
      maps.append(_one(f"{hf}.mlp.{hf_name}.weight", fx + ("mlp", fx_name, "kernel")))
      maps.append(_one(f"{hf}.mlp.{hf_name}.bias", fx + ("mlp", fx_name, "bias")))
  maps += norm("ln_f", dec + ("final_norm",))
  if not tied:
    maps.append(_one("lm_head.weight", ("lm_head", "kernel"), lambda w: w.T, lambda k: k.T))
  return maps


def _gpt2_ignored(name: str) -> bool:
  # Causal-mask buffers of old checkpoints; a tied head's copy of wte.
  return name.endswith((".attn.bias", ".attn.masked_bias")) or name == "lm_head.weight"


def load_gpt2(directory: pathlib.Path, hf: Mapping[str, Any],
              **overrides: Any) -> tuple[CausalLM, dict]:
  """A GPT-2 checkpoint as a :class:`~attnjax.models.CausalLM` and its params."""
  source = str(directory / checkpoint.CONFIG_FILE)
  config, tied = gpt2_config(hf, source, **overrides)
  model = CausalLM(config, tie_embeddings=tied)
  tensors = _strip(checkpoint.read_safetensors(directory), "transformer.")
  maps = _gpt2_maps(config, tied)
  weights = str(directory / checkpoint.WEIGHTS_FILE)
  _refuse_unused(tensors, maps, _gpt2_ignored, weights, "GPT-2")
  expected = _expected(model, np.zeros((1, 2), np.int32))
  return model, tensors_to_params(tensors, maps, expected, weights)


def _exports_gpt2(model: Any) -> bool:
  if not isinstance(model, CausalLM):
    return False
  try:
    gpt2_hf_config(model)
  except ValueError:
    return False
  return True


def gpt2_hf_config(model: CausalLM) -> dict[str, Any]:
  """The ``config.json`` of a transformers GPT2LMHeadModel equal to ``model``."""
  c = model.config
  check_exportable(c, "GPT-2", pre_layer_norm=True, position="learned", use_bias=True,
                   embedding_layer_norm=False, type_vocab_size=0, add_cls_token=False,
                   relative_buckets=0, scan_layers=False, **_NO_ENCODER_OPTIONS)
  return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
          "vocab_size": c.vocab_size, "n_positions": c.max_length, "n_embd": c.hidden_size,
          "n_layer": c.num_layers, "n_head": c.num_heads, "n_inner": c.mlp_dim,
          "activation_function": _hidden_act(c), "resid_pdrop": c.dropout_rate,
          "embd_pdrop": c.dropout_rate, "attn_pdrop": c.attention_dropout_rate,
          "layer_norm_epsilon": c.layer_norm_epsilon, "initializer_range": 0.02,
          "tie_word_embeddings": bool(model.tie_embeddings), "pad_token_id": c.pad_id,
          "torch_dtype": "float32"}


def save_gpt2(model: CausalLM, params: dict, directory: pathlib.Path, tokenizer: Any) -> None:
  """Writes ``model``/``params`` as a GPT2LMHeadModel checkpoint."""
  hf = gpt2_hf_config(model)
  tensors = params_to_tensors(params, _gpt2_maps(model.config, model.tie_embeddings))
  tensors = {f"transformer.{k}" if not k.startswith("lm_head") else k: v
             for k, v in tensors.items()}
  _write(directory, hf, tensors, tokenizer, model.config.vocab_size, model.config.max_length)


register_hf_architecture("gpt2", HFArchitecture(load=load_gpt2, save=save_gpt2,
                                                exports=_exports_gpt2))


# ----------------------------------------------------------------------------------------
# BART.

_BART_DEFAULTS = dict(vocab_size=50265, max_position_embeddings=1024, d_model=1024,
                      encoder_layers=12, decoder_layers=12, encoder_attention_heads=16,
                      decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096,
                      activation_function="gelu", dropout=0.1, attention_dropout=0.0,
                      scale_embedding=False, pad_token_id=1, decoder_start_token_id=2,
                      tie_word_embeddings=True)
_BART_OFFSET = 2  # BartLearnedPositionalEmbedding's offset


def bart_configs(hf: Mapping[str, Any], source: str = "config.json",
                 **overrides: Any) -> tuple[EncoderConfig, EncoderConfig, int]:
  """``(encoder config, decoder config, decoder_start_id)`` of a BART ``config.json``."""
  _check_overrides(overrides, source)
  cfg = {**_BART_DEFAULTS, **{k: v for k, v in hf.items() if v is not None}}

  def refuse(field, why):
    raise ValueError(f"{source}: {field}={cfg.get(field)!r} cannot be represented: {why}")

  if cfg["scale_embedding"]:
    refuse("scale_embedding", "attnjax does not scale embeddings by sqrt(d_model)")
  if not cfg["tie_word_embeddings"]:
    refuse("tie_word_embeddings", "attnjax's BART shares one table for input and output")
  if cfg["encoder_attention_heads"] != cfg["decoder_attention_heads"]:
    refuse("decoder_attention_heads", "must equal encoder_attention_heads")
  if cfg["encoder_ffn_dim"] != cfg["decoder_ffn_dim"]:
    refuse("decoder_ffn_dim", "must equal encoder_ffn_dim")
  for field in ("normalize_before", "add_final_layer_norm"):  # mBART-style layouts
    if cfg.get(field):
      refuse(field, "attnjax's BART is post-LN without final LayerNorms")
  activation, exact = _activation(cfg["activation_function"], source, "activation_function")
  values = dict(vocab_size=cfg["vocab_size"], max_length=cfg["max_position_embeddings"],
                hidden_size=cfg["d_model"], num_layers=cfg["encoder_layers"],
                num_heads=cfg["encoder_attention_heads"], mlp_dim=cfg["encoder_ffn_dim"],
                dropout_rate=float(cfg["dropout"]),
                attention_dropout_rate=float(cfg["attention_dropout"]), pre_layer_norm=False,
                position="learned", embedding_layer_norm=True, layer_norm_epsilon=1e-5,
                activation=activation, exact_gelu=exact, pad_id=int(cfg["pad_token_id"]))
  values.update(overrides)
  try:
    enc = EncoderConfig(**values)
  except ValueError as e:
    raise ValueError(f"{source}: {e}") from e
  dec = dataclasses.replace(enc, num_layers=cfg["decoder_layers"])
  return enc, dec, int(cfg["decoder_start_token_id"])


def _bart_maps(enc: EncoderConfig, dec: EncoderConfig) -> list[TensorMap]:
  d, h, hd = enc.hidden_size, enc.num_heads, enc.head_dim
  maps = [_one("shared.weight", ("shared", "embedding"))]

  def norm(hf, path):
    return [_one(f"{hf}.weight", path + ("scale",)), _one(f"{hf}.bias", path + ("bias",))]

  def attention(hf, path):
    out = []
    for hf_name, fx_name in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")):
      out.append(_one(f"{hf}.{hf_name}.weight", path + (fx_name, "kernel"),
                      lambda w: w.T.reshape(d, h, hd), lambda k: k.reshape(d, h * hd).T))
      out.append(_one(f"{hf}.{hf_name}.bias", path + (fx_name, "bias"),
                      lambda b: b.reshape(h, hd), lambda b: b.reshape(h * hd)))
    out.append(_one(f"{hf}.out_proj.weight", path + ("out", "kernel"),
                    lambda w: w.T.reshape(h, hd, d), lambda k: k.reshape(h * hd, d).T))
    out.append(_one(f"{hf}.out_proj.bias", path + ("out", "bias")))
    return out

  for stack, cfg in (("encoder", enc), ("decoder", dec)):
    emb = (stack, "embeddings")
    maps.append(_one(f"{stack}.embed_positions.weight", emb + ("position_embeddings",),
                     lambda w: w[_BART_OFFSET:],
                     lambda t: np.concatenate([np.zeros((_BART_OFFSET, t.shape[1]),
                                                        t.dtype), t])))
    maps += norm(f"{stack}.layernorm_embedding", emb + ("layer_norm",))
    for i in range(cfg.num_layers):
      hf, fx = f"{stack}.layers.{i}", (stack, f"layer_{i}")
      maps += attention(f"{hf}.self_attn", fx + ("attention",))
      maps += norm(f"{hf}.self_attn_layer_norm", fx + ("attention_norm",))
      if stack == "decoder":
        maps += attention(f"{hf}.encoder_attn", fx + ("cross_attention",))
        maps += norm(f"{hf}.encoder_attn_layer_norm", fx + ("cross_attention_norm",))
      for hf_name, fx_name in (("fc1", "wi"), ("fc2", "wo")):
        maps.append(_one(f"{hf}.{hf_name}.weight", fx + ("mlp", fx_name, "kernel"),
                         lambda w: w.T, lambda k: k.T))
        maps.append(_one(f"{hf}.{hf_name}.bias", fx + ("mlp", fx_name, "bias")))
      maps += norm(f"{hf}.final_layer_norm", fx + ("mlp_norm",))
  return maps


def _bart_ignored(name: str) -> bool:
  # Copies of the shared table (tied), and the zero output bias (checked separately).
  return name in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight",
                  "lm_head.weight", "final_logits_bias")


def load_bart(directory: pathlib.Path, hf: Mapping[str, Any],
              **overrides: Any) -> tuple[EncoderDecoder, dict]:
  """A BART checkpoint as an :class:`~attnjax.models.EncoderDecoder` and its params."""
  source = str(directory / checkpoint.CONFIG_FILE)
  enc, dec, start = bart_configs(hf, source, **overrides)
  model = EncoderDecoder(enc, dec, share_embeddings=True, tie_embeddings=True,
                         decoder_start_id=start)
  tensors = _strip(checkpoint.read_safetensors(directory), "model.")
  weights = str(directory / checkpoint.WEIGHTS_FILE)
  if "shared.weight" not in tensors and "encoder.embed_tokens.weight" in tensors:
    tensors["shared.weight"] = tensors["encoder.embed_tokens.weight"]
  bias = tensors.get("final_logits_bias")
  if bias is not None and np.any(np.asarray(bias) != 0):
    raise ValueError(f"{weights}: final_logits_bias is not zero; attnjax's BART output has "
                     "no bias")
  maps = _bart_maps(enc, dec)
  _refuse_unused(tensors, maps, _bart_ignored, weights, "BART")
  ids = np.zeros((1, 2), np.int32)
  params = tensors_to_params(tensors, maps, _expected(model, ids, ids), weights)
  return model, params


def bart_hf_config(model: EncoderDecoder) -> dict[str, Any]:
  """The ``config.json`` of a transformers BartForConditionalGeneration equal to ``model``."""
  enc, dec = model.config, model.decoder_config
  for c in (enc, dec):
    check_exportable(c, "BART", pre_layer_norm=False, position="learned", use_bias=True,
                     embedding_layer_norm=True, type_vocab_size=0, add_cls_token=False,
                     relative_buckets=0, scan_layers=False, **_NO_ENCODER_OPTIONS)
  if not (model.share_embeddings and model.tie_embeddings):
    raise ValueError("EncoderDecoder without share_embeddings and tie_embeddings cannot be "
                     "exported as BART (one shared table)")
  if enc.max_length != dec.max_length:
    raise ValueError(f"BART has one max_position_embeddings; encoder max_length="
                     f"{enc.max_length}, decoder {dec.max_length}")
  for field in ("hidden_size", "num_heads", "mlp_dim", "activation", "exact_gelu",
                "layer_norm_epsilon"):
    if getattr(enc, field) != getattr(dec, field):
      raise ValueError(f"BART needs the same {field} in encoder and decoder; got "
                       f"{getattr(enc, field)!r} and {getattr(dec, field)!r}")
  if enc.layer_norm_epsilon != 1e-5:
    raise ValueError(f"EncoderConfig.layer_norm_epsilon={enc.layer_norm_epsilon} cannot be "
                     "exported as BART (transformers' BART uses 1e-5)")
  return {"architectures": ["BartForConditionalGeneration"], "model_type": "bart",
          "vocab_size": enc.vocab_size, "max_position_embeddings": enc.max_length,
          "d_model": enc.hidden_size, "encoder_layers": enc.num_layers,
          "decoder_layers": dec.num_layers, "encoder_attention_heads": enc.num_heads,
          "decoder_attention_heads": dec.num_heads, "encoder_ffn_dim": enc.mlp_dim,
          "decoder_ffn_dim": dec.mlp_dim, "activation_function": _hidden_act(enc),
          "dropout": enc.dropout_rate, "attention_dropout": enc.attention_dropout_rate,
          "activation_dropout": 0.0, "scale_embedding": False, "pad_token_id": enc.pad_id,
          "decoder_start_token_id": model.decoder_start_id, "tie_word_embeddings": True,
          "init_std": 0.02, "torch_dtype": "float32"}


def save_bart(model: EncoderDecoder, params: dict, directory: pathlib.Path,
              tokenizer: Any) -> None:
  """Writes ``model``/``params`` as a BartForConditionalGeneration checkpoint."""
  hf = bart_hf_config(model)
  tensors = params_to_tensors(params, _bart_maps(model.config, model.decoder_config))
  tensors = {f"model.{k}": v for k, v in tensors.items()}
  tensors["final_logits_bias"] = np.zeros((1, model.config.vocab_size), np.float32)
  _write(directory, hf, tensors, tokenizer, model.config.vocab_size, model.config.max_length)


def _exports_bart(model: Any) -> bool:
  if not isinstance(model, EncoderDecoder):
    return False
  try:
    bart_hf_config(model)
  except ValueError:
    return False
  return True


register_hf_architecture("bart", HFArchitecture(load=load_bart, save=save_bart,
                                                exports=_exports_bart))
