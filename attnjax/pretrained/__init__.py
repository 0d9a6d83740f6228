"""Hugging Face checkpoints: import, export and tokenizers of encoders (BERT, RoBERTa,
DistilBERT, ModernBERT), GPT-2 and BART; MiniLM offline.

Reads and writes ``config.json`` + ``model.safetensors`` without PyTorch::

  model, params = load_hf_encoder(minilm_path())
  tok = load_tokenizer(minilm_path())
  batch = encode(tok, ["a sentence", "another one"])
  emb = sentence_embedding(model, params, batch["input_ids"], batch["attention_mask"])
  save_hf_encoder(params, model.config, "export/", tokenizer=tok)

Any registered architecture (``HF_ARCHITECTURES``, keyed by config.json's ``model_type``)::

  model, params = load_hf_model(path)                  # logits [batch, seq, vocab]
  save_hf_model(model, params, "export/")
"""

from attnjax.pretrained.checkpoint import load_hf_encoder, read_safetensors, save_hf_encoder
from attnjax.pretrained.hf_models import (HF_ARCHITECTURES, HFArchitecture, load_hf_model,
                                          register_hf_architecture, save_hf_model)
from attnjax.pretrained import hf_decoders  # registers gpt2 and bart  # noqa: F401
# Each registers its EncoderFormat (formats.ENCODER_FORMATS) on import.
from attnjax.pretrained import distilbert, modernbert, roberta  # noqa: F401  isort: skip
from attnjax.pretrained.hf_config import (SUPPORTED_MODEL_TYPES, encoder_config_from_hf,
                                          hf_config_from_encoder)
from attnjax.pretrained.minilm import MINILM_PACKAGE, minilm_path
from attnjax.pretrained.modeling import BertEncoder, l2_normalize, sentence_embedding
from attnjax.pretrained.tokenizer import encode, load_tokenizer

__all__ = [
    "BertEncoder", "HFArchitecture", "HF_ARCHITECTURES", "MINILM_PACKAGE",
    "SUPPORTED_MODEL_TYPES", "encode", "encoder_config_from_hf", "hf_config_from_encoder",
    "l2_normalize", "load_hf_encoder", "load_hf_model", "load_tokenizer", "minilm_path",
    "read_safetensors", "register_hf_architecture", "save_hf_encoder", "save_hf_model",
    "sentence_embedding",
]
