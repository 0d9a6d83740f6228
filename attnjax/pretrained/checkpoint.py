"""Hugging Face encoder checkpoints (config.json + safetensors) <-> attnjax parameters.

No PyTorch: tensors are read and written with ``safetensors.numpy``. ``config.json``'s
``model_type`` picks the architecture's :class:`~attnjax.pretrained.formats.EncoderFormat`:
BERT (here), RoBERTa, DistilBERT and ModernBERT (their own modules). Every one loads into
attnjax's one :class:`~attnjax.layers.Encoder` (as a :class:`BertEncoder` or, with the
masked-LM head, a :class:`~attnjax.models.MaskedLanguageModel`) and writes back.

BERT's tensor names are transformers' BertModel names, optionally under ``bert.``
(BertForMaskedLM, BertForPreTraining, task heads); ``cls.predictions.*`` is BERT's
masked-LM head.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import tempfile
from typing import Any, Callable, Iterator

import jax
import numpy as np

from attnjax.layers import EncoderConfig
from attnjax.models.mlm import MaskedLanguageModel
from attnjax.pretrained import formats
from attnjax.pretrained import hf_config
from attnjax.pretrained import tokenizer as tokenizer_lib
from attnjax.pretrained.formats import Entry, dense, heads_in, heads_out, identity, norm
from attnjax.pretrained.modeling import BertEncoder

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"

# Buffers a checkpoint may carry that are no parameters.
_IGNORED_SUFFIXES = ("position_ids",)

Path = str | os.PathLike

#: BERT's masked-LM head: (transform dense, transform LayerNorm, output bias).
BERT_HEAD = ("cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm",
             "cls.predictions.bias")


def bert_entries(config: EncoderConfig, *, pooler: bool, mlm_head: bool,
                 head: tuple[str, str, str] = BERT_HEAD,
                 positions: tuple[Callable, Callable] = (identity, identity)) -> Iterator[Entry]:
  """Every tensor of a BERT encoder, as HF names it and where attnjax keeps it.

  Args:
    config: the encoder's configuration.
    pooler: include ``pooler.dense``.
    mlm_head: include the masked-LM head, named by ``head``.
    head: HF names of the head's transform dense, its LayerNorm and the output bias
      (RoBERTa: ``lm_head.*``).
    positions: ``(to_flax, to_hf)`` of the position table (RoBERTa's offset).
  """
  enc = ("encoder",)
  emb = enc + ("embeddings",)
  yield ("embeddings.word_embeddings.weight", emb + ("word_embeddings", "embedding"),
         identity, identity)
  yield ("embeddings.position_embeddings.weight", emb + ("position_embeddings",), *positions)
  if config.type_vocab_size:
    yield ("embeddings.token_type_embeddings.weight",
           emb + ("token_type_embeddings", "embedding"), identity, identity)
  yield from norm("embeddings.LayerNorm", emb + ("layer_norm",))
  for i in range(config.num_layers):
    hf, fx = f"encoder.layer.{i}", enc + (f"layer_{i}",)
    for proj in ("query", "key", "value"):
      yield from heads_in(f"{hf}.attention.self.{proj}", fx + ("attention", proj), config)
    yield from heads_out(f"{hf}.attention.output.dense", fx + ("attention", "out"), config)
    yield from norm(f"{hf}.attention.output.LayerNorm", fx + ("attention_norm",))
    yield from dense(f"{hf}.intermediate.dense", fx + ("mlp", "wi"))
    yield from dense(f"{hf}.output.dense", fx + ("mlp", "wo"))
    yield from norm(f"{hf}.output.LayerNorm", fx + ("mlp_norm",))
  if pooler:
    yield from dense("pooler.dense", ("pooler",))
  if mlm_head:
    yield from formats.mlm_head(*head)


def bert_describe(config: EncoderConfig) -> str:
  """The config.json fields of a BERT-like checkpoint that size its tensors."""
  return (f"hidden_size={config.hidden_size}, num_attention_heads={config.num_heads}, "
          f"intermediate_size={config.mlp_dim}, vocab_size={config.vocab_size}, "
          f"max_position_embeddings={config.max_length}, type_vocab_size="
          f"{config.type_vocab_size}, num_hidden_layers={config.num_layers}")


def _bert_split(tensors: dict[str, np.ndarray], config: EncoderConfig) -> dict[str, np.ndarray]:
  """TF-era checkpoints name LayerNorm parameters ``gamma``/``beta``."""
  del config
  return {name.replace("LayerNorm.gamma", "LayerNorm.weight").replace(
      "LayerNorm.beta", "LayerNorm.bias") if ".LayerNorm." in name else name: value
          for name, value in tensors.items()}


BERT = formats.register_format(formats.EncoderFormat(
    model_type="bert",
    config_from_hf=hf_config.bert_config_from_hf,
    config_to_hf=hf_config.bert_config_to_hf,
    entries=bert_entries,
    architectures=("BertModel", "BertForMaskedLM"),
    base_prefix="bert.",
    head_prefixes=("cls.",),
    head_marker="cls.predictions.bias",
    pooler_marker="pooler.dense.weight",
    encoder_prefixes=("embeddings.", "encoder."),
    describe=bert_describe,
    split=_bert_split,
))


# ----------------------------------------------------------------------------------------
# Reading.


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
  """Reads every tensor of a checkpoint directory's safetensors file(s) as numpy arrays.

  Handles a single ``model.safetensors`` and a sharded one
  (``model.safetensors.index.json`` + shards).

  Raises:
    FileNotFoundError: no safetensors weights in ``path`` (the message lists what is there).
    ValueError: a file that is not valid safetensors, naming it.
  """
  from safetensors import numpy as st_numpy  # pylint: disable=import-outside-toplevel
  directory = pathlib.Path(path)
  single, index = directory / WEIGHTS_FILE, directory / WEIGHTS_INDEX_FILE
  if single.is_file():
    files = [single]
  elif index.is_file():
    try:
      weight_map = json.loads(index.read_text())["weight_map"]
    except (ValueError, KeyError, TypeError) as e:
      raise ValueError(f"{index}: not a safetensors index (needs a 'weight_map'): {e}") from e
    files = [directory / name for name in sorted(set(weight_map.values()))]
  else:
    present = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    hint = (" (pytorch_model.bin is a PyTorch pickle, which attnjax does not read: convert it "
            "with transformers' save_pretrained(safe_serialization=True))"
            if "pytorch_model.bin" in present else "")
    raise FileNotFoundError(f"no {WEIGHTS_FILE} in {directory}; found {present}{hint}")
  tensors: dict[str, np.ndarray] = {}
  for file in files:
    if not file.is_file():
      raise FileNotFoundError(f"{file}: shard listed in {WEIGHTS_INDEX_FILE} is missing")
    try:
      tensors.update(st_numpy.load_file(str(file)))
    except Exception as e:  # safetensors raises its own SafetensorError and OSError/ValueError
      raise ValueError(f"{file}: not a readable safetensors file "
                       f"({type(e).__name__}: {e})") from e
  return tensors


def read_hf_config(path: Path) -> dict[str, Any]:
  """Parses ``config.json`` of a checkpoint directory, with errors naming the file."""
  file = pathlib.Path(path) / CONFIG_FILE
  if not file.is_file():
    raise FileNotFoundError(f"{file} not found: a Hugging Face checkpoint directory needs "
                            "config.json next to model.safetensors")
  try:
    config = json.loads(file.read_text())
  except ValueError as e:
    raise ValueError(f"{file}: not valid JSON: {e}") from e
  if not isinstance(config, dict):
    raise ValueError(f"{file}: expected a JSON object, got {type(config).__name__}")
  return config


def _strip_prefix(tensors: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
  """Drops the task model's ``prefix`` (``bert.``, ``roberta.``, ``model.``) from names."""
  return {name[len(prefix):] if name.startswith(prefix) else name: value
          for name, value in tensors.items()}


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _get(tree: dict, path: tuple[str, ...]) -> Any:
  for key in path:
    tree = tree[key]
  return tree


def _unscanned(config: EncoderConfig) -> EncoderConfig:
  """The same encoder with one ``layer_{i}`` subtree per block (the checkpoint's layout)."""
  if getattr(config, "scan_layers", False):
    return dataclasses.replace(config, scan_layers=False)
  return config


def _stack_layers(encoder: dict, num_layers: int) -> dict:
  """``layer_{i}`` subtrees -> ``layers/block`` with a leading layer axis (``scan_layers``)."""
  blocks = [encoder[f"layer_{i}"] for i in range(num_layers)]
  out = {k: v for k, v in encoder.items() if not k.startswith("layer_")}
  out["layers"] = {"block": jax.tree_util.tree_map(lambda *xs: np.stack(xs), *blocks)}
  return out


def _unstack_layers(encoder: dict) -> dict:
  """Inverse of :func:`_stack_layers`; params without ``layers`` are returned unchanged."""
  if "layers" not in encoder:
    return encoder
  block = encoder["layers"]["block"]
  num_layers = jax.tree_util.tree_leaves(block)[0].shape[0]
  out = {k: v for k, v in encoder.items() if k != "layers"}
  for i in range(num_layers):
    out[f"layer_{i}"] = jax.tree_util.tree_map(lambda x, i=i: np.asarray(x)[i], block)
  return out


def _expected_shapes(model: Any, config: EncoderConfig, *, pooler: bool) -> dict:
  model = model.clone(config=_unscanned(config))
  ids = np.zeros((1, 2), np.int32)
  method = BertEncoder.pooled_output if pooler else None
  kwargs = {"method": method} if method else {}
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), ids, **kwargs))
  return shapes["params"]


def load_hf_encoder(
    path: Path,
    *,
    with_mlm_head: bool = False,
    mlm_head_rng: jax.Array | None = None,
    check_tokenizer: bool = True,
    **overrides: Any,
) -> tuple[BertEncoder | MaskedLanguageModel, dict]:
  """Loads a Hugging Face encoder checkpoint directory into attnjax.

  ``config.json``'s ``model_type`` picks the architecture: ``bert``, ``roberta``,
  ``distilbert`` or ``modernbert`` (:data:`~attnjax.pretrained.SUPPORTED_MODEL_TYPES`).
  ``model.apply({'params': params}, input_ids, attention_mask=..., token_type_ids=...,
  deterministic=True)`` then returns the last hidden states ``[batch, seq, hidden]``
  (transformers' ``AutoModel(...).last_hidden_state``), or MLM logits
  ``[batch, seq, vocab]`` with ``with_mlm_head``.

  Args:
    path: directory with ``config.json`` and ``model.safetensors`` (or a sharded index),
      optionally ``tokenizer.json`` / ``vocab.txt``.
    with_mlm_head: return a :class:`~attnjax.models.MaskedLanguageModel` with the
      checkpoint's masked-LM head (BERT's ``cls.predictions.*``, RoBERTa's ``lm_head.*``,
      DistilBERT's ``vocab_*``, ModernBERT's ``head.*`` and ``decoder.bias``).
    mlm_head_rng: with ``with_mlm_head``, initialise the head from this key when the
      checkpoint has none (e.g. all-MiniLM-L6-v2); without it a missing head is an error.
    check_tokenizer: when the directory holds a tokenizer, check that its vocabulary matches
      the embedding table (see :func:`attnjax.pretrained.load_tokenizer`).
    **overrides: EncoderConfig fields that do not change the architecture: ``kernel``,
      ``kernel_options``, ``dtype``, ``dropout_rate``, ``attention_dropout_rate``.

  Returns:
    ``(model, params)``: a :class:`BertEncoder` whose params are
    ``{'encoder': ..., 'pooler': ...}`` (pooler only if the checkpoint has one), or a
    MaskedLanguageModel with ``{'encoder': ..., 'mlm_head': ...}``. Arrays are float32 numpy.

  Raises:
    FileNotFoundError: missing config.json or weights, naming the file.
    ValueError: an architecture attnjax cannot represent (naming the config.json field), a
      garbled weights file, a missing tensor or one whose shape contradicts config.json.
  """
  directory = pathlib.Path(path)
  config_file = directory / CONFIG_FILE
  source = str(config_file)
  hf = read_hf_config(directory)
  fmt = formats.get_format(hf.get("model_type"), source)
  config = fmt.config_from_hf(hf, source=source, **overrides)
  tensors = fmt.split(_strip_prefix(read_safetensors(directory), fmt.base_prefix), config)
  weights_name = str(directory / WEIGHTS_FILE)

  has_pooler = (not with_mlm_head and fmt.pooler_marker is not None
                and fmt.pooler_marker in tensors)
  has_head = with_mlm_head and fmt.head_marker in tensors
  if with_mlm_head and not has_head and mlm_head_rng is None:
    raise ValueError(f"{weights_name}: no masked-LM head ({fmt.head_marker}); pass "
                     "mlm_head_rng to initialise a fresh one")
  if with_mlm_head and fmt.check_mlm_head is not None:
    fmt.check_mlm_head(hf, config, source)
  model = MaskedLanguageModel(config) if with_mlm_head else BertEncoder(config)
  expected = _expected_shapes(model, config, pooler=has_pooler)

  params: dict = {}
  used = set()
  for name, fx_path, to_flax, _ in fmt.entries(config, pooler=has_pooler, mlm_head=has_head):
    if name not in tensors:
      raise ValueError(f"{weights_name}: tensor {name!r} is missing (config.json: "
                       f"{fmt.describe(config)})")
    value = np.asarray(tensors[name])
    want = tuple(_get(expected, fx_path).shape)
    try:
      converted = to_flax(value)
    except ValueError:
      converted = None
    if converted is None or converted.shape != want:
      raise ValueError(f"{weights_name}: tensor {name!r} has shape {list(value.shape)}, which "
                       f"does not fit {config_file.name} ({fmt.describe(config)})")
    # float16/bfloat16 checkpoints become float32 parameters (the compute dtype is separate).
    _set(params, fx_path, np.ascontiguousarray(converted, dtype=np.float32))
    used.add(name)

  # A tensor of the encoder we did not place means an architecture we would silently drop.
  unused = sorted(n for n in tensors if n not in used and n.startswith(fmt.encoder_prefixes)
                  and not n.endswith(_IGNORED_SUFFIXES))
  if unused:
    raise ValueError(f"{weights_name}: tensors {unused[:5]} have no place in a "
                     f"{fmt.model_type} encoder (an architecture attnjax does not represent)")

  if getattr(config, "scan_layers", False):
    params["encoder"] = _stack_layers(params["encoder"], config.num_layers)
  if with_mlm_head and not has_head:
    ids = np.zeros((1, 2), np.int32)
    fresh = jax.jit(model.init)(mlm_head_rng, ids)["params"]["mlm_head"]
    params["mlm_head"] = jax.tree_util.tree_map(np.asarray, fresh)

  if check_tokenizer:
    if tokenizer_lib.has_tokenizer(directory):
      tokenizer_lib.load_tokenizer(directory)  # raises on a vocabulary mismatch
  return model, params


# ----------------------------------------------------------------------------------------
# Writing.


def _split_params(params: dict) -> tuple[dict, dict | None, dict | None]:
  """(encoder, pooler, mlm_head) of BertEncoder, MaskedLanguageModel or bare Encoder params."""
  if "params" in params and len(params) == 1:
    params = params["params"]
  if "encoder" in params:
    return params["encoder"], params.get("pooler"), params.get("mlm_head")
  if "embeddings" in params:
    return params, None, None
  raise ValueError(f"params with top-level keys {sorted(params)} are not an encoder's: "
                   "expected 'encoder' (BertEncoder, MaskedLanguageModel, SequenceClassifier) "
                   "or 'embeddings' (Encoder)")


def _write_atomically(directory: pathlib.Path, files: dict[str, Callable[[str], None]]) -> None:
  """Writes every file to a temporary name first, then renames them all into place.

  A failure while writing leaves the directory as it was: no half-written file.
  """
  directory.mkdir(parents=True, exist_ok=True)
  staged: list[tuple[str, str]] = []
  try:
    for name, write in files.items():
      fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
      os.close(fd)
      staged.append((tmp, str(directory / name)))
      write(tmp)
  except BaseException:
    for tmp, _ in staged:
      if os.path.exists(tmp):
        os.remove(tmp)
    raise
  for tmp, final in staged:
    os.replace(tmp, final)


def save_hf_encoder(
    params: dict,
    encoder_config: EncoderConfig,
    path: Path,
    tokenizer: Any = None,
    *,
    model_type: str = "bert",
) -> pathlib.Path:
  """Writes ``config.json`` + ``model.safetensors`` (+ tokenizer) for transformers.

  ``transformers.AutoModel.from_pretrained(path)`` loads the result (a ``BertModel`` for
  ``model_type='bert'``, ``RobertaModel``, ``DistilBertModel``, ``ModernBertModel``) and
  computes the same last hidden states; with an MLM head in ``params`` the checkpoint is the
  architecture's masked-LM model (BertForMaskedLM: tensors under ``bert.`` plus
  ``cls.predictions.*``), which the bare model also loads.

  Args:
    params: BertEncoder / MaskedLanguageModel / SequenceClassifier params (an ``encoder``
      subtree, optional ``pooler`` and ``mlm_head``), or bare Encoder params.
    encoder_config: the EncoderConfig the params belong to.
    path: output directory (created; files already there with the same names are replaced).
    tokenizer: optional ``tokenizers.Tokenizer`` or a directory holding one; written as
      ``tokenizer.json``, ``vocab.txt`` (WordPiece) and ``tokenizer_config.json``.
    model_type: the architecture to write, one of
      :data:`~attnjax.pretrained.SUPPORTED_MODEL_TYPES`.

  Returns:
    The output directory.

  Raises:
    ValueError: a config the architecture cannot express (naming the field), params that
      do not match the config, or a tokenizer whose vocabulary differs from the embedding
      table.
  """
  from safetensors import numpy as st_numpy  # pylint: disable=import-outside-toplevel
  fmt = formats.get_format(model_type, "save_hf_encoder(model_type=...)")
  encoder, pooler, mlm_head = _split_params(params)
  encoder = _unstack_layers(encoder)
  if pooler is not None and fmt.pooler_marker is None:
    raise ValueError(f"params have a 'pooler', which {model_type} has not; pass the params "
                     "without it")
  architecture = fmt.architectures[1 if mlm_head is not None else 0]
  hf = fmt.config_to_hf(encoder_config, architecture=architecture)
  try:
    word = np.shape(encoder["embeddings"]["word_embeddings"]["embedding"])
  except (KeyError, TypeError) as e:
    raise ValueError("params have no encoder/embeddings/word_embeddings/embedding; do they "
                     "belong to this EncoderConfig?") from e
  if word != (encoder_config.vocab_size, encoder_config.hidden_size):
    raise ValueError(f"word embeddings have shape {list(word)}; EncoderConfig says "
                     f"vocab_size={encoder_config.vocab_size}, "
                     f"hidden_size={encoder_config.hidden_size}")
  tree = {"encoder": encoder}
  if pooler is not None:
    tree["pooler"] = pooler
  if mlm_head is not None:
    tree["mlm_head"] = mlm_head
  tensors: dict[str, np.ndarray] = {}
  for name, fx_path, _, to_hf in fmt.entries(encoder_config, pooler=pooler is not None,
                                             mlm_head=mlm_head is not None):
    try:
      value = np.asarray(_get(tree, fx_path), dtype=np.float32)
    except KeyError as e:
      raise ValueError(f"params have no {'/'.join(fx_path)} (needed for {name}); do they "
                       "belong to this EncoderConfig?") from e
    try:
      tensors[name] = np.ascontiguousarray(to_hf(value))
    except ValueError as e:
      raise ValueError(f"params {'/'.join(fx_path)} has shape {list(value.shape)}, which does "
                       f"not fit the EncoderConfig: {e}") from e
  tensors = fmt.fuse(tensors, encoder_config)
  if mlm_head is not None:  # the masked-LM model keeps its encoder under base_prefix
    tensors = {name if name.startswith(fmt.head_prefixes) else fmt.base_prefix + name: value
               for name, value in tensors.items()}

  files: dict[str, Callable[[str], None]] = {
      CONFIG_FILE: lambda f: pathlib.Path(f).write_text(json.dumps(hf, indent=2) + "\n"),
      # "pt" metadata: transformers checks the format tag of the file it loads.
      WEIGHTS_FILE: lambda f: st_numpy.save_file(tensors, f, metadata={"format": "pt"}),
  }
  if tokenizer is not None:
    files.update(tokenizer_lib.tokenizer_files(
        tokenizer, vocab_size=encoder_config.vocab_size, max_length=encoder_config.max_length))
  directory = pathlib.Path(path)
  _write_atomically(directory, files)
  return directory
