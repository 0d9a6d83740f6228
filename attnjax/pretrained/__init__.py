"""Hugging Face encoder checkpoints (BERT, RoBERTa, DistilBERT, ModernBERT): import, export,
tokenizers, MiniLM offline.

Reads and writes ``config.json`` + ``model.safetensors`` without PyTorch::

  model, params = load_hf_encoder(minilm_path())
  tok = load_tokenizer(minilm_path())
  batch = encode(tok, ["a sentence", "another one"])
  emb = sentence_embedding(model, params, batch["input_ids"], batch["attention_mask"])
  save_hf_encoder(params, model.config, "export/", tokenizer=tok)
"""

from attnjax.pretrained.checkpoint import load_hf_encoder, read_safetensors, save_hf_encoder
# Each registers its EncoderFormat (formats.ENCODER_FORMATS) on import.
from attnjax.pretrained import distilbert, modernbert, roberta  # noqa: F401  isort: skip
from attnjax.pretrained.hf_config import (SUPPORTED_MODEL_TYPES, encoder_config_from_hf,
                                          hf_config_from_encoder)
from attnjax.pretrained.minilm import MINILM_PACKAGE, minilm_path
from attnjax.pretrained.modeling import BertEncoder, l2_normalize, sentence_embedding
from attnjax.pretrained.tokenizer import encode, load_tokenizer

__all__ = [
    "BertEncoder", "MINILM_PACKAGE", "SUPPORTED_MODEL_TYPES", "encode", "encoder_config_from_hf",
    "hf_config_from_encoder", "l2_normalize", "load_hf_encoder", "load_tokenizer", "minilm_path",
    "read_safetensors", "save_hf_encoder", "sentence_embedding",
]
