"""Fine-tuning: initial weights, layer-wise learning-rate decay, freezing, LoRA, parameter counts.

Everything here works on parameter pytrees by path, so the model code is unchanged:

* **Initialisation** (``config.init``): the encoder subtree of a Hugging Face BERT checkpoint
  (``hf_path``; ``'minilm'`` = the bundled all-MiniLM-L6-v2) or of the latest checkpoint of
  an attnjax run (``workdir``, e.g. a masked-LM pretraining) replaces the freshly
  initialised encoder; the head stays random. Position tables longer than the task's
  ``max_length`` are cut to their first rows.
* **Layer-wise LR decay** (``config.finetune.layer_decay`` = d < 1): the update of layer
  ``i`` of ``L`` is scaled by ``d**(L - i)``, the embeddings' by ``d**(L + 1)``, the head's
  by 1 (ELECTRA's scheme). With AdamW this is a per-layer learning rate (weight decay
  included).
* **Freezing** (``freeze_embeddings``, ``freeze_layers`` = the bottom N blocks): frozen
  leaves get ``stop_gradient`` in the step and no optimizer state (``optax.set_to_zero``).
* **LoRA** (``lora.rank`` > 0; Hu et al. 2021): the params become ``{'model': base,
  'lora': adapters}``; ``W' = W + (alpha / rank) A B`` is formed on the fly for each target
  kernel (``query``, ``key``, ``value``, ``out``; optionally ``wi``, ``wo`` of the MLP), the
  base is frozen, and only the adapters (and the task head, ``lora.train_head``) are in the
  optimizer. Adapters are saved in checkpoints with the rest of the state; :func:`merge_lora`
  folds them into plain model params for export.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from attnjax.run_files import read_config

#: LoRA targets: kernel name -> how many leading kernel dims are inputs.
LORA_TARGETS = {"query": 1, "key": 1, "value": 1, "out": 2, "wi": 1, "wo": 1}
_LORA_KIND = {"query": "attention", "key": "attention", "value": "attention",
              "out": "attention", "wi": "mlp", "wo": "mlp"}
#: ``groups_fn(model_params) -> pytree of ParamGroup``: the model's ``param_groups``.
GroupsFn = Callable[[Any], Any]


@dataclasses.dataclass(frozen=True)
class FineTuning:
  """The fine-tuning options of ``config.finetune`` (all off by default).

  Attributes:
    layer_decay: layer-wise learning-rate decay factor; 1 = off.
    freeze_embeddings: freeze the encoder's embeddings (and CLS vector).
    freeze_layers: freeze the bottom N encoder blocks.
    lora_rank: LoRA rank; 0 = off.
    lora_alpha: LoRA scale numerator (the update is ``alpha / rank * A B``).
    lora_targets: kernels that get adapters (names in :data:`LORA_TARGETS`).
    lora_train_head: with LoRA, train the task head (pooling, classifier, MLM head) fully.
  """

  layer_decay: float = 1.0
  freeze_embeddings: bool = False
  freeze_layers: int = 0
  lora_rank: int = 0
  lora_alpha: float = 16.0
  lora_targets: tuple[str, ...] = ("query", "key", "value", "out")
  lora_train_head: bool = True

  @property
  def lora(self) -> bool:
    return self.lora_rank > 0

  @property
  def lora_scale(self) -> float:
    return self.lora_alpha / self.lora_rank if self.lora_rank else 0.0

  @property
  def freezes(self) -> bool:
    return self.lora or self.freeze_embeddings or self.freeze_layers > 0


def finetuning(config: ml_collections.ConfigDict) -> FineTuning:
  """Reads ``config.finetune`` (absent = defaults), checking every value."""
  section = config.get("finetune")
  if section is None:
    return FineTuning()
  lora = section.get("lora") or {}
  targets = lora.get("targets", "query,key,value,out")
  if isinstance(targets, str):
    targets = tuple(t.strip() for t in targets.split(",") if t.strip())
  out = FineTuning(
      layer_decay=float(section.get("layer_decay", 1.0)),
      freeze_embeddings=bool(section.get("freeze_embeddings", False)),
      freeze_layers=int(section.get("freeze_layers", 0)),
      lora_rank=int(lora.get("rank", 0)),
      lora_alpha=float(lora.get("alpha", 16.0)),
      lora_targets=tuple(targets),
      lora_train_head=bool(lora.get("train_head", True)))
  if not 0.0 < out.layer_decay <= 1.0:
    raise ValueError(f"config.finetune.layer_decay={out.layer_decay} must be in (0, 1]")
  if out.freeze_layers < 0 or out.lora_rank < 0:
    raise ValueError("config.finetune.freeze_layers and config.finetune.lora.rank must be >= 0")
  unknown = [t for t in out.lora_targets if t not in LORA_TARGETS]
  if unknown or (out.lora and not out.lora_targets):
    raise ValueError(f"config.finetune.lora.targets={','.join(out.lora_targets)!r}: unknown "
                     f"{unknown}; choose from {sorted(LORA_TARGETS)}")
  return out


def path_str(path) -> str:
  """``'/'``-joined names of a pytree key path."""
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
                  for k in path)


def _flatten(tree: Any) -> dict[str, Any]:
  return {path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _model_path(path: str) -> tuple[str, bool]:
  """``(path inside the model's params, is_adapter)`` for plain or LoRA-wrapped params."""
  if path.startswith("model/"):
    return path[len("model/"):], False
  if path.startswith("lora/"):
    return path[len("lora/"):], True
  return path, False


# ---------------------------------------------------------------------------------------
# LoRA


def _groups_by_path(params: Any, groups_fn: GroupsFn) -> dict[str, Any]:
  """``{path inside the model's params: ParamGroup}`` for plain or LoRA-wrapped params."""
  if isinstance(params, dict) and set(params) == {"model", "lora"}:
    params = params["model"]
  groups = groups_fn(params)
  return {path_str(p): g for p, g in jax.tree_util.tree_flatten_with_path(
      groups, is_leaf=lambda x: hasattr(x, "kind"))[0]}


def init_lora(rng: jax.Array, params: dict, ft: FineTuning, groups_fn: GroupsFn) -> dict:
  """Adapters ``{'a': [in, r], 'b': [r, out]}`` for every target kernel of ``params``.

  ``a`` is uniform in ``±1/sqrt(in)`` (PEFT's default) and ``b`` is zero, so the wrapped
  model starts equal to the base model.

  Raises:
    ValueError: no kernel matches the targets, or stacked (``scan_layers``) kernels.
  """
  adapters: dict = {}
  flat = _flatten(params)
  groups = _groups_by_path(params, groups_fn)
  for i, (path, kernel) in enumerate(sorted(flat.items())):
    parts = path.split("/")
    group = groups[path]
    if (parts[-1] != "kernel" or group.projection not in ft.lora_targets
        or group.kind != _LORA_KIND[group.projection]):
      continue
    if group.stacked:
      raise ValueError("LoRA does not support config.model.scan_layers=True (stacked kernels)")
    n_in = LORA_TARGETS[parts[-2]]
    d_in = int(np.prod(kernel.shape[:n_in]))
    d_out = int(np.prod(kernel.shape[n_in:]))
    bound = 1.0 / math.sqrt(d_in)
    a = jax.random.uniform(jax.random.fold_in(rng, i), (d_in, ft.lora_rank), jnp.float32,
                           -bound, bound)
    node = adapters
    for key in parts[:-1]:
      node = node.setdefault(key, {})
    node["a"], node["b"] = a, jnp.zeros((ft.lora_rank, d_out), jnp.float32)
  if not adapters:
    raise ValueError(f"config.finetune.lora.targets={ft.lora_targets} match no kernel of the model")
  return adapters


def merge_lora(params: dict, scale: float) -> dict:
  """Plain model params with each adapter folded in: ``W + scale * (A @ B)``.

  ``params`` is ``{'model': ..., 'lora': ...}``; anything else is returned unchanged.
  """
  if not (isinstance(params, dict) and set(params) == {"model", "lora"}):
    return params

  def merge(base, lora):
    out = dict(base)
    for key, sub in lora.items():
      if set(sub) == {"a", "b"}:
        kernel = base[key]["kernel"]
        delta = (sub["a"] @ sub["b"]).reshape(kernel.shape) * scale
        out[key] = {**base[key], "kernel": kernel + delta.astype(kernel.dtype)}
      else:
        out[key] = merge(base[key], sub)
    return out

  return merge(params["model"], params["lora"])


def lora_apply(apply_fn: Callable, scale: float) -> Callable:
  """``apply_fn`` taking ``{'params': {'model', 'lora'}}`` (merged on the fly)."""
  def apply(variables, *args, **kwargs):
    return apply_fn({**variables, "params": merge_lora(variables["params"], scale)},
                    *args, **kwargs)
  return apply


# ---------------------------------------------------------------------------------------
# trainable mask, layer-wise decay, optimizer


def _depth(group: Any) -> int:
  """0 for embeddings, i + 1 for block i, num_layers + 1 for everything above."""
  if group.kind == "embeddings":
    return 0
  if group.layer is not None:
    return group.layer + 1
  return group.num_layers + 1


def is_trainable(group: Any, adapter: bool, ft: FineTuning) -> bool:
  """Whether a leaf (its model ParamGroup; ``adapter`` for LoRA's) is trained."""
  if ft.lora:
    return adapter or (ft.lora_train_head and group.kind == "head")
  depth = _depth(group)
  if ft.freeze_embeddings and depth == 0:
    return False
  if ft.freeze_layers and 1 <= depth <= ft.freeze_layers:
    return False
  return True


def _map_groups(fn: Callable[[Any, bool], Any], params: Any, groups_fn: GroupsFn) -> Any:
  """``fn(group, is_adapter)`` per leaf of plain or LoRA-wrapped ``params``."""
  groups = _groups_by_path(params, groups_fn)

  def leaf(path, _):
    inner, adapter = _model_path(path_str(path))
    if adapter:  # lora/<kernel path without 'kernel'>/a|b: the group of its kernel
      inner = inner.rsplit("/", 1)[0] + "/kernel"
    return fn(groups[inner], adapter)
  return jax.tree_util.tree_map_with_path(leaf, params)


def trainable_mask(params: Any, ft: FineTuning, groups_fn: GroupsFn) -> Any | None:
  """A bool per leaf of ``params`` (arrays or shapes); None when everything trains."""
  if not ft.freezes:
    return None
  return _map_groups(lambda g, adapter: is_trainable(g, adapter, ft), params, groups_fn)


def layer_scales(params: Any, ft: FineTuning, groups_fn: GroupsFn) -> Any:
  """The update scale of each leaf under layer-wise decay (see the module docstring)."""
  return _map_groups(lambda g, _: ft.layer_decay ** (g.num_layers + 1 - _depth(g)),
                     params, groups_fn)


def scale_by_tree(scales_fn: Callable[[Any], Any]) -> optax.GradientTransformation:
  """Multiplies each update by a per-leaf constant, ``scales_fn(params_or_updates)``."""
  def init(params):
    del params
    return optax.EmptyState()

  def update(updates, state, params=None):
    del params
    scales = scales_fn(updates)
    return jax.tree_util.tree_map(lambda u, s: u * jnp.asarray(s, u.dtype), updates,
                                  scales), state
  return optax.GradientTransformation(init, update)


def wrap_optimizer(tx: optax.GradientTransformation, ft: FineTuning,
                   groups_fn: GroupsFn) -> optax.GradientTransformation:
  """``tx`` restricted to trainable leaves (frozen ones: no state, zero update), then scaled
  per layer. Returns ``tx`` itself when nothing is frozen and there is no decay."""
  if ft.freezes:
    def labels(params):
      return _map_groups(lambda g, adapter: "train" if is_trainable(g, adapter, ft)
                         else "frozen", params, groups_fn)
    tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
  if ft.layer_decay != 1.0:
    tx = optax.chain(tx, scale_by_tree(lambda u: layer_scales(u, ft, groups_fn)))
  return tx


def parameter_counts(params: Any, mask: Any | None) -> dict[str, Any]:
  """``{'total', 'trainable', 'trainable_fraction'}`` of a params pytree (arrays or shapes)."""
  sizes = jax.tree_util.tree_map(lambda p: int(np.prod(p.shape)), params)
  total = int(sum(jax.tree_util.tree_leaves(sizes)))
  if mask is None:
    trainable = total
  else:
    trainable = int(sum(s for s, m in zip(jax.tree_util.tree_leaves(sizes),
                                          jax.tree_util.tree_leaves(mask)) if m))
  return {"total": total, "trainable": trainable,
          "trainable_fraction": trainable / total if total else 0.0}


# ---------------------------------------------------------------------------------------
# initial weights


def resolve_hf_path(hf_path: str) -> pathlib.Path:
  """``'minilm'`` -> the bundled all-MiniLM-L6-v2 directory; anything else is a directory."""
  if hf_path == "minilm":
    from attnjax.pretrained import minilm_path  # pylint: disable=import-outside-toplevel
    return minilm_path()
  return pathlib.Path(hf_path).expanduser()


def model_fields_from_hf(hf_path: str) -> dict[str, Any]:
  """``config.model`` fields describing a Hugging Face checkpoint's architecture.

  For configs that fine-tune it: the encoder built from them has the checkpoint's shapes.
  """
  from attnjax.pretrained import encoder_config_from_hf  # pylint: disable=import-outside-toplevel
  from attnjax.pretrained.checkpoint import read_hf_config  # pylint: disable=import-outside-toplevel
  directory = resolve_hf_path(hf_path)
  enc = encoder_config_from_hf(read_hf_config(directory),
                               source=str(directory / "config.json"))
  keys = ("num_layers", "hidden_size", "num_heads", "mlp_dim", "dropout_rate",
          "attention_dropout_rate", "pre_layer_norm", "position", "add_cls_token",
          "type_vocab_size", "embedding_layer_norm", "layer_norm_epsilon", "activation",
          "exact_gelu", "use_bias", "rotary_base", "local_rotary_base", "global_every",
          "local_window", "gated_mlp", "skip_first_attention_norm", "positions_from_mask")
  return {k: getattr(enc, k) for k in keys}


def read_workdir_params(workdir: str) -> dict:
  """The params of the latest checkpoint of an attnjax run directory, as numpy arrays.

  Raises:
    FileNotFoundError: no checkpoint in ``<workdir>/checkpoints``.
  """
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  steps = []
  if os.path.isdir(directory):
    steps = sorted((int(n) for n in os.listdir(directory) if n.isdigit()), reverse=True)
  if not steps:
    raise FileNotFoundError(f"config.init.workdir={workdir!r}: no checkpoint in {directory}")
  path = os.path.join(directory, str(steps[0]), "state")
  with ocp.PyTreeCheckpointer() as ckptr:
    metadata = ckptr.metadata(path)
    tree = metadata.item_metadata.tree if hasattr(metadata, "item_metadata") else metadata
    # Restore as host numpy arrays whatever sharding the run was saved with.
    restore_args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                                          tree)
    state = ckptr.restore(path, restore_args=restore_args)
  return state["params"]


def initial_encoder(config: ml_collections.ConfigDict) -> tuple[dict, str] | None:
  """``(encoder params, description)`` named by ``config.init``, or None.

  Raises:
    ValueError: both ``hf_path`` and ``workdir`` set, or a checkpoint without an encoder.
  """
  init = config.get("init")
  if init is None or not (init.get("hf_path") or init.get("workdir")):
    return None
  if init.get("hf_path") and init.get("workdir"):
    raise ValueError("set one of config.init.hf_path and config.init.workdir, not both")
  if init.get("hf_path"):
    from attnjax.pretrained import load_hf_encoder  # pylint: disable=import-outside-toplevel
    directory = resolve_hf_path(init.hf_path)
    _, params = load_hf_encoder(directory, check_tokenizer=False)
    return params["encoder"], f"Hugging Face checkpoint {directory}"
  params = read_workdir_params(init.workdir)
  if "model" in params and "lora" in params:
    params = merge_lora(params, _saved_lora_scale(init.workdir))
  if "encoder" not in params:
    raise ValueError(f"config.init.workdir={init.workdir!r}: its params have no 'encoder' "
                     f"(top-level keys {sorted(params)})")
  return params["encoder"], f"attnjax run {os.path.abspath(init.workdir)}"


def _saved_lora_scale(workdir: str) -> float:
  return finetuning(ml_collections.ConfigDict(read_config(workdir) or {})).lora_scale


def overlay_encoder(params: dict, encoder: dict, source: str) -> dict:
  """``params`` with its encoder subtree replaced by ``encoder`` (numpy), leaf by leaf.

  Each new leaf takes the placement (sharding) of the leaf it replaces. A position table
  longer than the model's is cut to its first rows.

  Raises:
    ValueError: the checkpoint's encoder and the model's differ in leaves or shapes
      (naming them), i.e. ``config.model`` does not describe the checkpoint.
  """
  wrapped = set(params) == {"model", "lora"}
  target = params["model"]["encoder"] if wrapped else params.get("encoder")
  if target is None:
    raise ValueError(f"the model has no 'encoder' to initialise from {source}")
  want, have = _flatten(target), _flatten(encoder)
  missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
  if missing or extra:
    raise ValueError(f"config.model does not match {source}: missing in the checkpoint "
                     f"{missing[:4]}, not in the model {extra[:4]}")
  new = {}
  for path, leaf in want.items():
    value = np.asarray(have[path])
    if path.endswith("position_embeddings") and value.shape[0] > leaf.shape[0] \
        and value.shape[1:] == leaf.shape[1:]:
      value = value[:leaf.shape[0]]
    if value.shape != tuple(leaf.shape):
      raise ValueError(f"config.model does not match {source}: encoder/{path} has shape "
                       f"{list(value.shape)} there but {list(leaf.shape)} in the model")
    sharding = getattr(leaf, "sharding", None)
    new[path] = jax.device_put(value.astype(leaf.dtype), sharding)
  treedef = jax.tree_util.tree_structure(target)
  leaves = [new[path_str(p)] for p, _ in jax.tree_util.tree_flatten_with_path(target)[0]]
  replaced = jax.tree_util.tree_unflatten(treedef, leaves)
  if wrapped:
    return {**params, "model": {**params["model"], "encoder": replaced}}
  return {**params, "encoder": replaced}


# ---------------------------------------------------------------------------------------
# export


def export_hf(workdir: str, out_dir: str) -> pathlib.Path:
  """Writes the encoder of a run's latest checkpoint as a Hugging Face BERT directory.

  LoRA adapters are merged into the base weights first (:func:`merge_lora`), so the export
  is a plain BertModel; the run's tokenizer (``<workdir>/tokenizer.json``) goes with it.

  Raises:
    ValueError: a model BERT cannot express (see ``attnjax.pretrained.save_hf_encoder``).
  """
  # pylint: disable=import-outside-toplevel
  from attnjax import data as data_lib
  from attnjax.models import encoder_config
  from attnjax.pretrained import save_hf_encoder
  saved = read_config(workdir)
  if saved is None:
    raise FileNotFoundError(f"{workdir!r} has no config.json: not an attnjax run")
  config = ml_collections.ConfigDict(saved)
  info = data_lib.get_dataset_info(data_lib.resolve_data_config(config.data))
  from attnjax.train.tasks import model_vocab
  enc = encoder_config(config.model, vocab_size=model_vocab(config, info)[0],
                       max_length=info.max_length, pad_id=info.pad_id)
  params = merge_lora(read_workdir_params(workdir), finetuning(config).lora_scale)
  tokenizer = os.path.join(workdir, "tokenizer.json")
  tok = None
  if os.path.isfile(tokenizer):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(tokenizer)
  return save_hf_encoder({"encoder": params["encoder"]}, enc, out_dir, tokenizer=tok)
