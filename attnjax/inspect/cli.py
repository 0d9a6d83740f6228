r"""``python -m attnjax.inspect``: attention maps, rollout, flow and head statistics.

Text models (a Hugging Face BERT-family directory; the offline all-MiniLM-L6-v2 by default)::

  python -m attnjax.inspect --text "The cat sat on the mat" --token sat --out figs/
  python -m attnjax.inspect --checkpoint path/to/hf_model --text "..." --token word

Dataset examples of a trained attnjax workdir (digits maps are also drawn over the 8x8
image)::

  python -m attnjax.inspect --checkpoint runs/digits --example 3 [--token 0]

Writes PNGs and ``attention.json`` to ``--out`` (default ``./attention_maps`` for text,
``<workdir>/plots/attention/example_<i>`` for a workdir) and prints, for ``--token``, its
most-attended tokens per layer. Arguments are parsed here with argparse (not absl flags),
so importing this module defines no global flags (``launch.py`` owns those).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import sys
from typing import Any, Sequence

import numpy as np

from attnjax import run_files
from attnjax.inspect import analysis
from attnjax.inspect import figures

#: Flow costs seq**2 max-flow problems; skipped above this length (rollout is always drawn).
FLOW_MAX_LENGTH = 80


class InspectError(Exception):
  """A user error: the CLI prints the message and exits with status 2."""


@dataclasses.dataclass
class Inspection:
  """One example's attention, ready to plot and save.

  Attributes:
    tokens: labels of the ``seq`` positions the attention layers see (padding removed).
    weights: ``[layers, heads, seq, seq]``.
    layer_names: flax paths of the attention layers.
    sources: per layer, ``'sown'`` or ``'implied'``.
    kernels: per layer, the kernel name.
    meta: what to record in the JSON (checkpoint, text or example, prediction, ...).
    positions: ``[seq]`` or ``[seq, 2]`` positions for the mean attention distance.
    distance_tokens: positions included in the distance (e.g. pixels, not CLS).
    grid: ``(image [rows, cols], offset of the first pixel token)`` for pixel-grid figures.
    pooling: additive pooling weights ``[seq]`` when the model has them.
    importance: ``(values [layers, heads], what was measured)`` or None.
  """

  tokens: list[str]
  weights: np.ndarray
  layer_names: list[str]
  sources: list[str]
  kernels: list[str]
  meta: dict[str, Any]
  positions: np.ndarray | None = None
  distance_tokens: np.ndarray | None = None
  grid: tuple[np.ndarray, int] | None = None
  pooling: np.ndarray | None = None
  importance: tuple[np.ndarray, str] | None = None


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m attnjax.inspect",
      description="Attention maps per layer and head, rollout, flow and head statistics.")
  parser.add_argument("--checkpoint", default="minilm",
                      help="a Hugging Face model directory, an attnjax workdir, or 'minilm' "
                           "(default: the offline all-MiniLM-L6-v2)")
  source = parser.add_mutually_exclusive_group()
  source.add_argument("--text", help="a sentence (text models)")
  source.add_argument("--example", type=int, help="index of an example of the workdir's "
                      "evaluation split (attnjax workdirs)")
  parser.add_argument("--split", default=None,
                      help="dataset split for --example (default: config.data.eval_split)")
  parser.add_argument("--data_dir", default=None,
                      help="TFDS data dir for --example (default: the workdir's config)")
  parser.add_argument("--token", default=None,
                      help="a token of the input whose most-attended tokens are printed per "
                           "layer (a word for text; a position for --example)")
  parser.add_argument("--top_k", type=int, default=3, help="tokens listed per layer")
  parser.add_argument("--skip_special", action="store_true",
                      help="leave [CLS]/[SEP] out of the --token ranking")
  parser.add_argument("--out", default=None, help="output folder")
  parser.add_argument("--no_flow", action="store_true", help="skip attention flow")
  parser.add_argument("--no_importance", action="store_true",
                      help="skip head importance (one forward pass per head)")
  parser.add_argument("--importance_examples", type=int, default=256,
                      help="--example: eval examples for the head-importance loss")
  parser.add_argument("--implied_max_length", type=int, default=1024,
                      help="longest input for which a non-softmax kernel's implied "
                           "attention matrix is formed")
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the CLI; returns the exit status (0, or 2 on a user error)."""
  args = build_parser().parse_args(argv)
  try:
    return _run(args)
  except InspectError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2


def _run(args: argparse.Namespace) -> int:
  if args.top_k <= 0:
    raise InspectError(f"--top_k must be positive, got {args.top_k}")
  kind, directory = resolve_checkpoint(args.checkpoint)
  if kind == "hf":
    if args.example is not None:
      raise InspectError(f"--example needs an attnjax workdir; {directory} is a Hugging Face "
                         "model directory: use --text")
    if args.text is None:
      raise InspectError("give --text \"a sentence\" for a text model")
    inspection = inspect_text(directory, args.text, args)
    out = args.out or "attention_maps"
  else:
    if args.text is not None:
      raise InspectError(f"{directory} is an attnjax workdir whose inputs are dataset tokens, "
                         "not text: use --example <index>")
    if args.example is None:
      raise InspectError("give --example <index> for an attnjax workdir")
    inspection = inspect_example(directory, args.example, args)
    out = args.out or os.path.join(directory, "plots", "attention", f"example_{args.example}")
  token_index = find_token(inspection, args.token) if args.token is not None else None
  report = write_outputs(inspection, out, token_index=token_index, args=args)
  for line in report:
    print(line)
  print(f"wrote {out}")
  return 0


def resolve_checkpoint(checkpoint: str | None) -> tuple[str, str]:
  """``('hf' | 'workdir', directory)`` for ``--checkpoint``.

  Raises:
    InspectError: the directory does not exist, or is neither kind.
  """
  if checkpoint in (None, "", "minilm"):
    from attnjax.pretrained import minilm_path  # pylint: disable=import-outside-toplevel
    try:
      return "hf", str(minilm_path())
    except (ModuleNotFoundError, FileNotFoundError) as e:
      raise InspectError(str(e)) from e
  path = pathlib.Path(checkpoint)
  if not path.exists():
    raise InspectError(f"--checkpoint {checkpoint!r} does not exist")
  if not path.is_dir():
    raise InspectError(f"--checkpoint {checkpoint!r} is a file, not a directory")
  if (path / "config.json").is_file():
    try:
      saved = run_files.read_config(str(path))
    except ValueError as e:
      raise InspectError(str(e)) from e
    # An attnjax run's config has a train section; a Hugging Face config has none.
    return ("workdir" if "train" in saved else "hf"), str(path)
  raise InspectError(f"--checkpoint {checkpoint!r} is neither an attnjax workdir "
                     "(config.json + checkpoints/) nor a Hugging Face model directory "
                     "(config.json + model.safetensors)")


# --- Text models. ---------------------------------------------------------------------------

def inspect_text(directory: str, text: str, args: argparse.Namespace) -> Inspection:
  """Attention of a Hugging Face encoder on one sentence (truncated, with a warning)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from attnjax import pretrained  # pylint: disable=import-outside-toplevel
  from attnjax.inspect.extract import extract_attention  # pylint: disable=import-outside-toplevel
  from attnjax.inspect.importance import head_importance  # pylint: disable=import-outside-toplevel

  if not text.strip():
    raise InspectError("--text is empty")
  try:
    model, params = pretrained.load_hf_encoder(directory)
    tokenizer = pretrained.load_tokenizer(directory)
  except (FileNotFoundError, ValueError) as e:
    raise InspectError(f"cannot load {directory}: {e}") from e
  limit = model.config.max_length
  truncation = tokenizer.truncation
  if truncation and truncation.get("max_length"):
    limit = min(limit, int(truncation["max_length"]))
  tokenizer.no_truncation()
  full = tokenizer.encode(text)
  truncated = len(full.ids) > limit
  if truncated:
    message = (f"the text has {len(full.ids)} tokens (special tokens included) but "
               f"{directory} takes at most {limit}: TRUNCATING to the first {limit} tokens; "
               "the words after them are not shown")
    print(f"warning: {message}", file=sys.stderr)
  tokenizer.enable_truncation(limit)
  encoding = tokenizer.encode(text)
  batch = pretrained.encode(tokenizer, [text])
  maps = extract_attention(model, {"params": params}, jnp.asarray(batch["input_ids"]),
                           attention_mask=jnp.asarray(batch["attention_mask"]),
                           token_type_ids=jnp.asarray(batch["token_type_ids"]),
                           deterministic=True, implied_max_length=args.implied_max_length)
  weights = maps.stacked()[:, 0]
  importance = None
  if not args.no_importance:
    ids = jnp.asarray(batch["input_ids"])
    mask = jnp.asarray(batch["attention_mask"])
    base = pretrained.sentence_embedding(model, params, ids, mask)

    def loss_fn(p):
      # No task loss exists for a sentence encoder: measure how far masking a head moves
      # the sentence embedding (1 - cosine similarity to the unmasked embedding).
      return 1.0 - jnp.sum(pretrained.sentence_embedding(model, p, ids, mask) * base)

    values, _, _ = head_importance(loss_fn, jax.tree_util.tree_map(jnp.asarray, params))
    importance = (values, "1 - cos(sentence embedding with the head masked, unmasked)")
  meta = {"checkpoint": str(directory), "text": text, "num_tokens": len(full.ids),
          "max_tokens": limit, "truncated": truncated}
  return Inspection(tokens=list(encoding.tokens), weights=weights,
                    layer_names=maps.layer_names, sources=maps.sources, kernels=maps.kernels,
                    meta=meta, importance=importance)


def find_token(inspection: Inspection, token: str) -> int:
  """Position of ``token`` among the inspected tokens (first occurrence).

  Text: matched case-insensitively against the tokens, with WordPiece ``##`` removed; a
  word split into pieces matches its first piece. Dataset examples: a position.

  Raises:
    InspectError: not found (the message lists the tokens).
  """
  tokens = inspection.tokens
  if "example" in inspection.meta:
    try:
      index = int(token)
    except ValueError as e:
      raise InspectError(f"--token for --example is a position 0..{len(tokens) - 1}, "
                         f"got {token!r}") from e
    if not 0 <= index < len(tokens):
      raise InspectError(f"--token {index} is not a position of this example "
                         f"(0..{len(tokens) - 1})")
    return index
  wanted = token.strip().lower()
  plain = [t.lower().removeprefix("##") for t in tokens]
  if wanted in plain:
    return plain.index(wanted)
  # A word split into WordPiece pieces: join each piece run and match the word.
  for start, t in enumerate(tokens):
    if t.startswith("##"):
      continue
    word, end = plain[start], start + 1
    while end < len(tokens) and tokens[end].startswith("##"):
      word += plain[end]
      end += 1
    if word == wanted:
      return start
  raise InspectError(f"--token {token!r} is not in the text; its tokens are "
                     f"{' '.join(tokens)}")


# --- Workdir examples. ----------------------------------------------------------------------

def inspect_example(workdir: str, index: int, args: argparse.Namespace) -> Inspection:
  """Attention of a trained attnjax classifier on one evaluation example."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import ml_collections  # pylint: disable=import-outside-toplevel
  from attnjax import data as data_lib  # pylint: disable=import-outside-toplevel
  from attnjax.inspect.extract import extract_attention  # pylint: disable=import-outside-toplevel
  from attnjax.inspect.importance import head_importance  # pylint: disable=import-outside-toplevel
  # pylint: disable-next=import-outside-toplevel
  from attnjax.train import Checkpointer, create_model_and_state
  from attnjax.train import classification_loss  # pylint: disable=import-outside-toplevel

  try:
    config = ml_collections.ConfigDict(run_files.read_config(workdir))
  except ValueError as e:
    raise InspectError(str(e)) from e
  if args.data_dir:
    config.data.data_dir = args.data_dir
  info = data_lib.get_dataset_info(config.data)
  model, init_state, _ = create_model_and_state(config, info)
  abstract = jax.eval_shape(init_state, jax.random.PRNGKey(config.seed))
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    raise InspectError(f"--example needs a trained run; the attnjax workdir {workdir} has no "
                       "checkpoints/ yet (train it first with launch.py)")
  checkpointer = Checkpointer(workdir, async_save=False)
  try:
    state, _, step = checkpointer.restore(abstract)
  except FileNotFoundError as e:
    raise InspectError(f"{workdir}: {e}") from e
  finally:
    checkpointer.close()
  params = state.params
  split = args.split or config.data.get("eval_split", "test")
  if index < 0:
    raise InspectError(f"--example must be >= 0, got {index}")
  batch_size = 64
  example = None
  seen = 0
  loss_batches = []
  for batch in data_lib.make_eval_iterator(config.data, split=split,
                                           global_batch_size=batch_size):
    real = int(np.sum(batch["weight"] > 0))
    if example is None and index < seen + real:
      example = {k: np.asarray(v)[index - seen] for k, v in batch.items()}
    if seen < args.importance_examples:
      loss_batches.append(batch)
    seen += real
    if example is not None and seen >= args.importance_examples:
      break
  if example is None:
    raise InspectError(f"--example {index} is out of range: split {split!r} has {seen} "
                       "examples")
  ids = example["inputs"][None, :].astype(np.int32)
  maps = extract_attention(model, {"params": params}, jnp.asarray(ids), deterministic=True,
                           implied_max_length=args.implied_max_length)
  logits = np.asarray(maps.outputs)[0]
  full = maps.stacked()[:, 0]  # [layers, heads, seq', seq']
  extra = full.shape[-1] - ids.shape[1]  # a CLS vector prepended by the encoder
  real = ids[0] != info.pad_id
  keep = np.concatenate([np.ones(extra, bool), real])
  weights = full[..., keep, :][..., keep]
  if info.name == "digits":
    # Tokens are pixel + 1 in row-major order; "row,col" says where a pixel is.
    token_labels = [f"{i // 8},{i % 8}" for i in range(int(real.sum()))]
  else:
    token_labels = [str(int(t)) for t in ids[0][real]]
  tokens = ["[CLS]"] * extra + token_labels
  positions = distance_tokens = grid = None
  if info.name == "digits" and int(real.sum()) == 64 and real[:64].all():
    rows, cols = np.divmod(np.arange(64), 8)
    positions = np.zeros((extra + 64, 2))
    positions[extra:] = np.stack([rows, cols], axis=1)
    distance_tokens = np.arange(extra, extra + 64)
    grid = (ids[0][:64].reshape(8, 8) - 1, extra)
  pooling = None
  if maps.pooling is not None:
    pooling = np.asarray(maps.pooling)[0][keep]
  importance = None
  if not args.no_importance:
    inputs = jnp.asarray(np.concatenate([b["inputs"] for b in loss_batches]))
    labels = jnp.asarray(np.concatenate([b["label"] for b in loss_batches]))
    weight = jnp.asarray(np.concatenate([b["weight"] for b in loss_batches]), jnp.float32)

    def loss_fn(p):
      out = model.apply({"params": p}, inputs, deterministic=True)
      return jnp.sum(classification_loss(out, labels) * weight) / jnp.sum(weight)

    values, base, _ = head_importance(loss_fn, params)
    importance = (values, f"increase of the mean eval loss over {int(weight.sum())} "
                          f"{split} examples (base {base:.4f})")
  meta = {"checkpoint": workdir, "step": int(step), "dataset": info.name, "split": split,
          "example": index, "label": int(example["label"]),
          "predicted": int(np.argmax(logits)), "logits": [float(x) for x in logits]}
  return Inspection(tokens=tokens, weights=weights, layer_names=maps.layer_names,
                    sources=maps.sources, kernels=maps.kernels, meta=meta,
                    positions=positions, distance_tokens=distance_tokens, grid=grid,
                    pooling=pooling, importance=importance)


# --- Outputs. --------------------------------------------------------------------------------

def _rounded(x: np.ndarray, digits: int = 5) -> Any:
  return np.round(np.asarray(x, np.float64), digits).tolist()


def write_outputs(inspection: Inspection, out: str, *, token_index: int | None,
                  args: argparse.Namespace) -> list[str]:
  """Writes the PNGs and ``attention.json`` to ``out``; returns the lines to print."""
  os.makedirs(out, exist_ok=True)
  w, tokens = inspection.weights, inspection.tokens
  layers = w.shape[0]
  lines: list[str] = []
  header = " ".join(f"{k}={v}" for k, v in inspection.meta.items()
                    if k in ("example", "label", "predicted", "step"))
  if header:
    lines.append(header)
  if "implied" in inspection.sources:
    lines.append(f"note: kernel(s) {sorted(set(inspection.kernels))} have no explicit "
                 "attention matrix; the maps are the implied ones (kernel applied to "
                 "identity values)")

  for l in range(layers):
    figures.save_figure(figures.plot_layer_heads(w[l], tokens, layer=l),
                        os.path.join(out, f"attention_layer_{l + 1}.png"))
  figures.save_figure(figures.plot_layers_overview(w, tokens),
                      os.path.join(out, "attention_layers.png"))

  rollout = analysis.attention_rollout(w)
  flow = None
  if not args.no_flow:
    if len(tokens) <= FLOW_MAX_LENGTH:
      flow = analysis.attention_flow(w)
    else:
      lines.append(f"note: attention flow skipped: {len(tokens)} tokens > {FLOW_MAX_LENGTH} "
                   "(it solves seq**2 max-flow problems)")
  rollout_maps = {"rollout": rollout}
  if flow is not None:
    rollout_maps["flow"] = flow
  figures.save_figure(figures.plot_rollout(rollout_maps, tokens),
                      os.path.join(out, "rollout.png"))

  entropy = analysis.attention_entropy(w)  # [layers, heads]
  if inspection.distance_tokens is not None:
    sub = inspection.distance_tokens
    distance = analysis.mean_attention_distance(w[..., sub[:, None], sub],
                                                inspection.positions[sub])
  else:
    distance = analysis.mean_attention_distance(w, inspection.positions)
  stats = {"entropy (nats)": entropy, "mean attention distance": distance}
  if inspection.importance is not None:
    stats["head importance"] = inspection.importance[0]
  figures.save_figure(figures.plot_head_summary(stats), os.path.join(out, "head_summary.png"))

  if inspection.grid is not None:
    image, offset = inspection.grid
    grid_maps = {}
    query = 0 if offset else None
    for l in range(layers):
      row = w[l].mean(axis=0)
      values = row[query] if query is not None else row.mean(axis=0)
      grid_maps[f"layer {l + 1}" + (" (CLS)" if query is not None else " (received)")] = (
          values[offset:offset + 64])
    roll = rollout[query] if query is not None else rollout.mean(axis=0)
    grid_maps["rollout" + (" (CLS)" if query is not None else "")] = roll[offset:offset + 64]
    if inspection.pooling is not None:
      grid_maps["pooling weights"] = inspection.pooling[offset:offset + 64]
    figures.save_figure(figures.plot_grid_maps(image, grid_maps), os.path.join(out, "grid.png"))

  record: dict[str, Any] = dict(inspection.meta)
  record.update(tokens=tokens, layers=inspection.layer_names, sources=inspection.sources,
                kernels=inspection.kernels,
                attention=_rounded(w), rollout=_rounded(rollout),
                flow=None if flow is None else _rounded(flow),
                entropy=_rounded(entropy), mean_attention_distance=_rounded(distance))
  if inspection.importance is not None:
    record["head_importance"] = {"values": _rounded(inspection.importance[0], 6),
                                 "measure": inspection.importance[1]}
  if inspection.pooling is not None:
    record["pooling_weights"] = _rounded(inspection.pooling)

  if token_index is not None:
    exclude = None
    if args.skip_special:
      exclude = {i for i, t in enumerate(tokens) if t in ("[CLS]", "[SEP]", "[PAD]")}
    name = tokens[token_index]
    repeated = {t for t in tokens if tokens.count(t) > 1}

    def show(t: str, j: int, v: float) -> str:
      # A token that occurs twice ("the" in the article's sentence) is told apart by position.
      return f"{t}@{j} {v:.2f}" if t in repeated else f"{t} {v:.2f}"

    lines.append(f"most-attended tokens of {name!r} (position {token_index}), mean over "
                 "heads:")
    per_layer = []
    rows: dict[str, np.ndarray] = {}
    for l in range(layers):
      row = w[l, :, token_index].mean(axis=0)
      rows[f"layer {l + 1}"] = row
      top = analysis.top_attended(row, tokens, args.top_k, exclude)
      per_layer.append([{"token": t, "position": j, "weight": round(v, 5)} for t, j, v in top])
      lines.append(f"  layer {l + 1}: " + ", ".join(show(*x) for x in top))
    rows["rollout"] = rollout[token_index]
    top = analysis.top_attended(rollout[token_index], tokens, args.top_k, exclude)
    lines.append("  rollout: " + ", ".join(show(*x) for x in top))
    record["token"] = {"token": name, "position": token_index, "per_layer": per_layer,
                       "rollout": [{"token": t, "position": j, "weight": round(v, 5)}
                                   for t, j, v in top]}
    if flow is not None:
      rows["flow"] = flow[token_index]
      top = analysis.top_attended(flow[token_index], tokens, args.top_k, exclude)
      lines.append("  flow: " + ", ".join(show(*x) for x in top))
      record["token"]["flow"] = [{"token": t, "position": j, "weight": round(v, 5)}
                                 for t, j, v in top]
    safe = "".join(c if c.isalnum() else "_" for c in name) or "token"
    figures.save_figure(figures.plot_token_attention(rows, tokens, token_index),
                        os.path.join(out, f"token_{token_index}_{safe}.png"))

  with open(os.path.join(out, "attention.json"), "w") as f:
    json.dump(record, f)
  return lines
